"""Small conversions between xDSL attributes and Python values, shared by the dialects."""

from __future__ import annotations

from collections.abc import Sequence

from xdsl.dialects.builtin import (
    BFloat16Type,
    DenseArrayBase,
    Float16Type,
    Float32Type,
    FloatAttr,
    IntegerAttr,
    IntegerType,
    StringAttr,
    TensorType,
    bf16,
    f16,
    f32,
    f64,
    i1,
    i32,
    i64,
)
from xdsl.ir import Attribute

DTYPES: dict[str, Attribute] = {"f32": f32, "f16": f16, "bf16": bf16, "i32": i32, "i64": i64, "i1": i1}
DTYPE_BYTES = {"f32": 4, "f16": 2, "bf16": 2, "i32": 4, "i64": 8, "i1": 1}


def dtype_name(t: Attribute) -> str:
    """`f32`, `f16`, `bf16`, `i32`, `i64` or `i1` for a builtin element type."""
    if isinstance(t, Float32Type):
        return "f32"
    if isinstance(t, Float16Type):
        return "f16"
    if isinstance(t, BFloat16Type):
        return "bf16"
    if isinstance(t, IntegerType):
        return f"i{t.width.data}"
    raise ValueError(f"unsupported element type {t}")


def dtype_attr(name: str) -> Attribute:
    return DTYPES[name]


def ints(values: Sequence[int]) -> DenseArrayBase:
    return DenseArrayBase.from_list(i64, [int(v) for v in values])


def get_ints(attr: DenseArrayBase) -> tuple[int, ...]:
    return tuple(int(v) for v in attr.get_values())


def i64_attr(v: int) -> IntegerAttr:
    return IntegerAttr(int(v), i64)


def f64_attr(v: float) -> FloatAttr:
    return FloatAttr(float(v), f64)


def string(s: str) -> StringAttr:
    return StringAttr(s)


def tensor(shape: Sequence[int], dtype: str = "f32") -> TensorType:
    return TensorType(DTYPES[dtype], list(shape))


def shape_of(t: Attribute) -> tuple[int, ...]:
    assert isinstance(t, TensorType), t
    return tuple(t.get_shape())


def dtype_of(t: Attribute) -> str:
    assert isinstance(t, TensorType), t
    return dtype_name(t.element_type)
