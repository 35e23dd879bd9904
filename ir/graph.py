"""`wsc.graph`: tensor operations as traced from PyTorch (DESIGN §5, first level).

One op is one tensor operation with its source location: `fx` is the FX node it came from and
`module` the `nn.Module` path (`transformer.h.0.attn.c_attn`). Weights are referenced by name
(`wsc.graph.weight "transformer.wte.weight"`), never inline. The frontend imports ATen ops
faithfully; the graph passes then recognise the structure the kernels need (attention, rotary
embeddings, RMSNorm) and remove pure data-movement views. Verifiers check that shapes and
dtypes agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

from xdsl.dialects.builtin import (
    DenseArrayBase,
    FloatAttr,
    IntegerAttr,
    StringAttr,
    TensorType,
    UnitAttr,
)
from xdsl.ir import Dialect, Operation, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    ParsePropInAttrDict,
    VarConstraint,
    base,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    traits_def,
    var_operand_def,
)
from xdsl.traits import Pure
from xdsl.utils.exceptions import VerifyException

from wsc.ir.attrs import dtype_of, get_ints, shape_of


def broadcast_shapes(*shapes: Sequence[int]) -> tuple[int, ...]:
    """numpy broadcasting of shapes; raises `VerifyException` when they do not agree."""
    rank = max(len(s) for s in shapes)
    out = []
    for i in range(rank):
        dims = {s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0}
        dims.discard(1)
        if len(dims) > 1:
            raise VerifyException(f"shapes {[tuple(s) for s in shapes]} do not broadcast")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


class GraphOp(IRDLOperation):
    """Base of every `wsc.graph` op: carries the source location."""

    fx = opt_prop_def(StringAttr)
    module = opt_prop_def(StringAttr)
    irdl_options = (ParsePropInAttrDict(),)

    @property
    def source(self) -> tuple[str, str]:
        """(FX node, module path) this op came from; empty strings when unknown. (Not xDSL's
        `location`, which is a LocationAttr the printer may use.)"""
        fx = self.fx.data if self.fx is not None else ""
        module = self.module.data if self.module is not None else ""
        return fx, module

    def set_location(self, fx: str, module: str) -> None:
        self.properties["fx"] = StringAttr(fx)
        self.properties["module"] = StringAttr(module)

    def copy_location(self, other: Operation) -> None:
        for key in ("fx", "module"):
            if key in other.properties:
                self.properties[key] = other.properties[key]

    def _expect(self, value: SSAValue, shape: Sequence[int], what: str = "result") -> None:
        got = shape_of(value.type)
        if got != tuple(shape):
            raise VerifyException(f"{self.name}: {what} shape {got}, expected {tuple(shape)}")


def _fmt(operands: str) -> str:
    return f"{operands} attr-dict `:` functional-type(operands, results)"


# --- sources --------------------------------------------------------------------------


@irdl_op_definition
class WeightOp(GraphOp):
    """A named tensor of the weight store; `transpose` reads it as its 2-D transpose.

    `causal_mask` marks a folded constant the frontend proved to be exactly a causal attention
    mask (boolean lower triangle, or additive 0 / -inf): attention recognition relies on it,
    since passes do not see weight values. `window` on such a mask makes it a sliding-window
    causal mask: query q sees keys q - window < k <= q (transformers' `sliding_window`)."""

    name = "wsc.graph.weight"
    weight_name = prop_def(StringAttr, prop_name="name")
    transpose = opt_prop_def(UnitAttr)
    causal_mask = opt_prop_def(UnitAttr)
    window = opt_prop_def(IntegerAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "$name attr-dict `:` type($result)"

    @property
    def ref(self) -> str:
        return self.weight_name.data

    def verify_(self) -> None:
        if self.window is not None and (self.causal_mask is None or self.window.value.data < 1):
            raise VerifyException("a weight's window (>= 1) is only meaningful on a causal mask")


@irdl_op_definition
class RopeTableOp(GraphOp):
    """cos or sin of `position * inv_freq` (halves repeated) times `scaling`, at the program's
    positions: the folded rotary tables, kept symbolic so that decode can evaluate them at
    any position."""

    name = "wsc.graph.rope_table"
    kind = prop_def(StringAttr)  # "cos" | "sin"
    inv_freq = prop_def(StringAttr)
    scaling = prop_def(FloatAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "attr-dict `:` type($result)"

    def verify_(self) -> None:
        if self.kind.data not in ("cos", "sin"):
            raise VerifyException(f"rope_table kind must be cos or sin, got {self.kind.data}")


# --- embeddings and matrix products ---------------------------------------------------


@irdl_op_definition
class EmbeddingOp(GraphOp):
    name = "wsc.graph.embedding"
    table = operand_def(TensorType)
    ids = operand_def(TensorType)
    result = result_def(TensorType)
    assembly_format = _fmt("$table `,` $ids")

    def verify_(self) -> None:
        v, d = shape_of(self.table.type)
        self._expect(self.result, shape_of(self.ids.type) + (d,))


@irdl_op_definition
class PositionEmbeddingOp(GraphOp):
    """Rows of `table` at the program's positions (0..S-1 in prefill, p in decode)."""

    name = "wsc.graph.position_embedding"
    table = operand_def(TensorType)
    result = result_def(TensorType)
    assembly_format = _fmt("$table")

    def verify_(self) -> None:
        rows, d = shape_of(self.table.type)
        shape = shape_of(self.result.type)
        if shape[-1] != d or math.prod(shape[:-1]) > rows:
            raise VerifyException(f"position_embedding of {shape} from a table of {rows}x{d}")


@irdl_op_definition
class LinearOp(GraphOp):
    """`x @ w + b` with `w` of shape [K, N]."""

    name = "wsc.graph.linear"
    x = operand_def(TensorType)
    w = operand_def(TensorType)
    b = opt_operand_def(TensorType)
    result = result_def(TensorType)
    assembly_format = _fmt("$x `,` $w (`,` $b^)?")

    def verify_(self) -> None:
        xs, ws = shape_of(self.x.type), shape_of(self.w.type)
        if len(ws) != 2 or xs[-1] != ws[0]:
            raise VerifyException(f"linear of {xs} by weight {ws}")
        if self.b is not None and shape_of(self.b.type) != (ws[1],):
            raise VerifyException(f"linear bias {shape_of(self.b.type)} for {ws[1]} outputs")
        self._expect(self.result, xs[:-1] + (ws[1],))


@irdl_op_definition
class MatmulOp(GraphOp):
    """Batched matrix product of two activations (`torch.bmm` / `matmul`)."""

    name = "wsc.graph.matmul"
    a = operand_def(TensorType)
    b = operand_def(TensorType)
    result = result_def(TensorType)
    assembly_format = _fmt("$a `,` $b")

    def verify_(self) -> None:
        a, b = shape_of(self.a.type), shape_of(self.b.type)
        if len(a) < 2 or len(b) < 2 or a[-1] != b[-2]:
            raise VerifyException(f"matmul of {a} by {b}")
        batch = broadcast_shapes(a[:-2], b[:-2])
        self._expect(self.result, batch + (a[-2], b[-1]))


# --- normalizations and reductions ----------------------------------------------------


@irdl_op_definition
class LayerNormOp(GraphOp):
    name = "wsc.graph.layer_norm"
    x = operand_def(TensorType)
    gamma = operand_def(TensorType)
    beta = operand_def(TensorType)
    eps = prop_def(FloatAttr)
    result = result_def(TensorType)
    assembly_format = _fmt("$x `,` $gamma `,` $beta")

    def verify_(self) -> None:
        xs = shape_of(self.x.type)
        for w in (self.gamma, self.beta):
            if shape_of(w.type) != xs[-1:]:
                raise VerifyException(f"layer_norm weight {shape_of(w.type)} for rows of {xs[-1]}")
        self._expect(self.result, xs)


@irdl_op_definition
class RmsNormOp(GraphOp):
    """`x * rsqrt(mean(x**2) + eps) * (gamma + gamma_offset)` over each row, or, with
    `head_dim`, over each group of `head_dim` consecutive features (per-head q/k norms,
    Qwen3), `gamma` then being one head's [head_dim]. Gemma's `(1 + weight)` gain is
    `gamma_offset = 1`."""

    name = "wsc.graph.rms_norm"
    x = operand_def(TensorType)
    gamma = operand_def(TensorType)
    eps = prop_def(FloatAttr)
    head_dim = opt_prop_def(IntegerAttr)
    gamma_offset = opt_prop_def(FloatAttr)
    result = result_def(TensorType)
    assembly_format = _fmt("$x `,` $gamma")

    @property
    def group(self) -> int:
        """Features normalised together: `head_dim`, or the whole row."""
        return self.head_dim.value.data if self.head_dim is not None else shape_of(self.x.type)[-1]

    @property
    def offset(self) -> float:
        return self.gamma_offset.value.data if self.gamma_offset is not None else 0.0

    def verify_(self) -> None:
        xs = shape_of(self.x.type)
        if shape_of(self.gamma.type) != (self.group,) or xs[-1] % self.group:
            raise VerifyException(f"rms_norm weight {shape_of(self.gamma.type)} for {xs} "
                                  f"in groups of {self.group}")
        self._expect(self.result, xs)


@irdl_op_definition
class SoftmaxOp(GraphOp):
    name = "wsc.graph.softmax"
    x = operand_def(TensorType)
    dim = prop_def(IntegerAttr)
    result = result_def(TensorType)
    assembly_format = _fmt("$x")

    def verify_(self) -> None:
        self._expect(self.result, shape_of(self.x.type))


@irdl_op_definition
class MeanOp(GraphOp):
    name = "wsc.graph.mean"
    x = operand_def(TensorType)
    dims = prop_def(DenseArrayBase)
    keepdim = opt_prop_def(UnitAttr)
    result = result_def(TensorType)
    assembly_format = _fmt("$x")

    def verify_(self) -> None:
        xs = shape_of(self.x.type)
        dims = {d % len(xs) for d in get_ints(self.dims)}
        if self.keepdim is not None:
            want = tuple(1 if i in dims else n for i, n in enumerate(xs))
        else:
            want = tuple(n for i, n in enumerate(xs) if i not in dims)
        self._expect(self.result, want)


# --- attention ------------------------------------------------------------------------


@irdl_op_definition
class SdpaOp(GraphOp):
    """`scaled_dot_product_attention` as traced, on [B, H, S, D] head views."""

    name = "wsc.graph.sdpa"
    q = operand_def(TensorType)
    k = operand_def(TensorType)
    v = operand_def(TensorType)
    mask = opt_operand_def(TensorType)
    scale = opt_prop_def(FloatAttr)
    causal = opt_prop_def(UnitAttr)
    window = opt_prop_def(IntegerAttr)  # a sliding window on `is_causal` (see AttentionOp)
    result = result_def(TensorType)
    assembly_format = _fmt("$q `,` $k `,` $v (`,` $mask^)?")


@irdl_op_definition
class AttentionOp(GraphOp):
    """Multi-head attention on token-major matrices.

    q is [S, heads*head_dim], k and v are [S, kv_heads*head_dim] (any leading unit dims);
    query head h reads kv head h // (heads / kv_heads), so grouped- and multi-query attention
    share K/V instead of copying it. A `window` limits causal attention to the last `window`
    positions, the query's own included (Mistral's, Qwen2's and StarCoder2's sliding window).
    """

    name = "wsc.graph.attention"
    q = operand_def(TensorType)
    k = operand_def(TensorType)
    v = operand_def(TensorType)
    heads = prop_def(IntegerAttr)
    kv_heads = prop_def(IntegerAttr)
    head_dim = prop_def(IntegerAttr)
    scale = prop_def(FloatAttr)
    causal = opt_prop_def(UnitAttr)
    window = opt_prop_def(IntegerAttr)  # sliding window: query q sees keys q - window < k <= q
    result = result_def(TensorType)
    assembly_format = _fmt("$q `,` $k `,` $v")

    def verify_(self) -> None:
        if self.window is not None and (self.causal is None or self.window.value.data < 1):
            raise VerifyException("attention: a sliding window (>= 1) needs causal attention")
        h, kvh, d = self.heads.value.data, self.kv_heads.value.data, self.head_dim.value.data
        if h % kvh:
            raise VerifyException(f"attention: {h} heads are not a multiple of {kvh} kv heads")
        q, k, v = (shape_of(x.type) for x in (self.q, self.k, self.v))
        if q[-1] != h * d or k[-1] != kvh * d or v[-1] != kvh * d:
            raise VerifyException(f"attention operands {q}, {k}, {v} for {h}/{kvh} heads of {d}")
        if not (math.prod(q[:-1]) == math.prod(k[:-1]) == math.prod(v[:-1])):
            raise VerifyException(f"attention operands disagree on tokens: {q}, {k}, {v}")
        self._expect(self.result, q)


@irdl_op_definition
class RopeOp(GraphOp):
    """Rotary position embedding (rotate-half form) of each head of a token-major matrix."""

    name = "wsc.graph.rope"
    x = operand_def(TensorType)
    heads = prop_def(IntegerAttr)
    head_dim = prop_def(IntegerAttr)
    inv_freq = prop_def(StringAttr)
    scaling = prop_def(FloatAttr)
    result = result_def(TensorType)
    assembly_format = _fmt("$x")

    def verify_(self) -> None:
        xs = shape_of(self.x.type)
        if xs[-1] != self.heads.value.data * self.head_dim.value.data:
            raise VerifyException(f"rope of {xs} with {self.heads.value.data} heads")
        if self.head_dim.value.data % 2:
            raise VerifyException("rope needs an even head_dim")
        self._expect(self.result, xs)


# --- elementwise ----------------------------------------------------------------------


class UnaryOp(GraphOp):
    T: ClassVar = VarConstraint("T", base(TensorType))
    x = operand_def(T)
    result = result_def(T)
    traits = traits_def(Pure())
    assembly_format = "$x attr-dict `:` type($x)"

    def verify_(self) -> None:
        if self.x.type != self.result.type:
            raise VerifyException(f"{self.name}: {self.x.type} -> {self.result.type}")

    @classmethod
    def build(cls, x: SSAValue | None = None, **kwargs) -> UnaryOp:
        """`cls.build(x)` makes the op on x; keyword calls are IRDL's (the parser uses them)."""
        if x is None:
            return super().build(**kwargs)
        return cls.create(operands=[x], result_types=[x.type])


def _unary(op_name: str, doc: str) -> type[UnaryOp]:
    cls = type(op_name.split(".")[-1].title().replace("_", "") + "Op", (UnaryOp,),
               {"name": op_name, "__doc__": doc})
    return irdl_op_definition(cls)


NegOp = _unary("wsc.graph.neg", "-x")
ExpOp = _unary("wsc.graph.exp", "e**x")
TanhOp = _unary("wsc.graph.tanh", "tanh(x)")
SigmoidOp = _unary("wsc.graph.sigmoid", "1 / (1 + e**-x)")
RsqrtOp = _unary("wsc.graph.rsqrt", "1 / sqrt(x)")
SqrtOp = _unary("wsc.graph.sqrt", "sqrt(x)")
ReluOp = _unary("wsc.graph.relu", "max(x, 0)")
SiluOp = _unary("wsc.graph.silu", "x * sigmoid(x)")
ErfOp = _unary("wsc.graph.erf", "erf(x)")
CosOp = _unary("wsc.graph.cos", "cos(x)")
SinOp = _unary("wsc.graph.sin", "sin(x)")
ReciprocalOp = _unary("wsc.graph.reciprocal", "1 / x")


@irdl_op_definition
class GeluOp(UnaryOp):
    """GELU, exact (`erf`) or with the `tanh` approximation."""

    name = "wsc.graph.gelu"
    approximate = opt_prop_def(StringAttr)  # "tanh"

    @property
    def tanh_approx(self) -> bool:
        return self.approximate is not None and self.approximate.data == "tanh"


UNARY_OPS: dict[str, type[UnaryOp]] = {
    c.name.split(".")[-1]: c
    for c in (NegOp, ExpOp, TanhOp, SigmoidOp, RsqrtOp, SqrtOp, ReluOp, SiluOp, ErfOp, CosOp,
              SinOp, ReciprocalOp, GeluOp)
}


class BinaryOp(GraphOp):
    """`lhs fn rhs` with numpy broadcasting; `rhs` may be a scalar property instead, and
    `reverse` swaps the sides (`scalar fn lhs`)."""

    lhs = operand_def(TensorType)
    rhs = opt_operand_def(TensorType)
    scalar = opt_prop_def(FloatAttr)
    reverse = opt_prop_def(UnitAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = _fmt("$lhs (`,` $rhs^)?")

    def verify_(self) -> None:
        if (self.rhs is None) == (self.scalar is None):
            raise VerifyException(f"{self.name}: give exactly one of a tensor rhs or a scalar")
        shapes = [shape_of(self.lhs.type)]
        if self.rhs is not None:
            shapes.append(shape_of(self.rhs.type))
        self._expect(self.result, broadcast_shapes(*shapes))

    @property
    def scalar_value(self) -> float | None:
        return None if self.scalar is None else self.scalar.value.data


def _binary(op_name: str, doc: str) -> type[BinaryOp]:
    cls = type(op_name.split(".")[-1].title() + "Op", (BinaryOp,), {"name": op_name, "__doc__": doc})
    return irdl_op_definition(cls)


AddOp = _binary("wsc.graph.add", "lhs + rhs")
SubOp = _binary("wsc.graph.sub", "lhs - rhs")
MulOp = _binary("wsc.graph.mul", "lhs * rhs")
DivOp = _binary("wsc.graph.div", "lhs / rhs")
PowOp = _binary("wsc.graph.pow", "lhs ** rhs")
MaximumOp = _binary("wsc.graph.maximum", "max(lhs, rhs)")
MinimumOp = _binary("wsc.graph.minimum", "min(lhs, rhs)")

BINARY_OPS: dict[str, type[BinaryOp]] = {
    c.name.split(".")[-1]: c for c in (AddOp, SubOp, MulOp, DivOp, PowOp, MaximumOp, MinimumOp)
}


@irdl_op_definition
class WhereOp(GraphOp):
    name = "wsc.graph.where"
    cond = operand_def(TensorType)
    x = operand_def(TensorType)
    y = operand_def(TensorType)
    result = result_def(TensorType)
    assembly_format = _fmt("$cond `,` $x `,` $y")

    def verify_(self) -> None:
        shapes = [shape_of(v.type) for v in (self.cond, self.x, self.y)]
        self._expect(self.result, broadcast_shapes(*shapes))


@irdl_op_definition
class CastOp(GraphOp):
    name = "wsc.graph.cast"
    x = operand_def(TensorType)
    result = result_def(TensorType)
    assembly_format = _fmt("$x")

    def verify_(self) -> None:
        self._expect(self.result, shape_of(self.x.type))


# --- views: pure data movement --------------------------------------------------------


@irdl_op_definition
class ReshapeOp(GraphOp):
    name = "wsc.graph.reshape"
    x = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = _fmt("$x")

    def verify_(self) -> None:
        a, b = shape_of(self.x.type), shape_of(self.result.type)
        if math.prod(a) != math.prod(b) or dtype_of(self.x.type) != dtype_of(self.result.type):
            raise VerifyException(f"reshape of {a} to {b}")


@irdl_op_definition
class TransposeOp(GraphOp):
    name = "wsc.graph.transpose"
    x = operand_def(TensorType)
    perm = prop_def(DenseArrayBase)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = _fmt("$x")

    def verify_(self) -> None:
        xs, perm = shape_of(self.x.type), get_ints(self.perm)
        if sorted(perm) != list(range(len(xs))):
            raise VerifyException(f"transpose of rank {len(xs)} by {perm}")
        self._expect(self.result, tuple(xs[p] for p in perm))


@irdl_op_definition
class ExpandOp(GraphOp):
    name = "wsc.graph.expand"
    x = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = _fmt("$x")

    def verify_(self) -> None:
        xs, rs = shape_of(self.x.type), shape_of(self.result.type)
        if broadcast_shapes(xs, rs) != rs:
            raise VerifyException(f"expand of {xs} to {rs}")


@irdl_op_definition
class SliceOp(GraphOp):
    name = "wsc.graph.slice"
    x = operand_def(TensorType)
    dim = prop_def(IntegerAttr)
    start = prop_def(IntegerAttr)
    end = prop_def(IntegerAttr)
    step = prop_def(IntegerAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = _fmt("$x")

    def bounds(self) -> tuple[int, int, int, int]:
        """(dim, start, end, step) normalised to the operand's shape."""
        xs = shape_of(self.x.type)
        dim = self.dim.value.data % len(xs)
        start, end, _ = slice(self.start.value.data, self.end.value.data).indices(xs[dim])
        return dim, start, end, self.step.value.data

    def verify_(self) -> None:
        xs = list(shape_of(self.x.type))
        dim, start, end, step = self.bounds()
        xs[dim] = len(range(start, end, step))
        self._expect(self.result, xs)


@irdl_op_definition
class ConcatOp(GraphOp):
    name = "wsc.graph.concat"
    inputs = var_operand_def(TensorType)
    dim = prop_def(IntegerAttr)
    result = result_def(TensorType)
    assembly_format = _fmt("$inputs")

    def verify_(self) -> None:
        shapes = [list(shape_of(v.type)) for v in self.inputs]
        dim = self.dim.value.data % len(shapes[0])
        total = sum(s[dim] for s in shapes)
        for s in shapes:
            s[dim] = total
            if s != shapes[0]:
                raise VerifyException(f"concat of {[shape_of(v.type) for v in self.inputs]}")
        self._expect(self.result, shapes[0])


VIEW_OPS = (ReshapeOp, TransposeOp, ExpandOp, SliceOp)

GRAPH_OPS = [
    WeightOp, RopeTableOp, EmbeddingOp, PositionEmbeddingOp, LinearOp, MatmulOp, LayerNormOp,
    RmsNormOp, SoftmaxOp, MeanOp, SdpaOp, AttentionOp, RopeOp, *UNARY_OPS.values(),
    *BINARY_OPS.values(), WhereOp, CastOp, ReshapeOp, TransposeOp, ExpandOp, SliceOp, ConcatOp,
]

WscGraph = Dialect("wsc.graph", GRAPH_OPS, [])


def make(cls: type[GraphOp], operands: Sequence[SSAValue], result_type, **props) -> GraphOp:
    """Create a `wsc.graph` op of class `cls`; properties given as `None` are left out."""
    properties = {k: v for k, v in props.items() if v is not None}
    return cls.create(operands=list(operands), result_types=[result_type], properties=properties)
