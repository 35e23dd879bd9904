"""recognize-activations: activations that core ATen decomposes, put back together.

- SiLU: `x * sigmoid(x)` -> `silu(x)` (Llama / Qwen2 MLPs);
- GELU, tanh approximation (GPT-2's NewGELU):
  `0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x**3)))` -> `gelu(x) {approximate = "tanh"}`.

One op per activation keeps kernel epilogues short and lets the tile lowering use one
instruction sequence instead of six elementwise ops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import PatternRewriter, RewritePattern, op_type_rewrite_pattern

from wsc.ir import graph as g
from wsc.ir.attrs import string
from wsc.passes.graph_rewrite import apply_patterns

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _close(a: float | None, b: float) -> bool:
    return a is not None and math.isclose(a, b, rel_tol=1e-6)


def _scalar_op(value: SSAValue, cls: type[g.BinaryOp], scalar: float) -> SSAValue | None:
    """x when `value` is `x <cls> scalar` (or `scalar <cls> x` for commutative ops)."""
    op = value.owner
    if not isinstance(op, cls) or op.rhs is not None or not _close(op.scalar_value, scalar):
        return None
    if op.reverse is not None and cls not in (g.AddOp, g.MulOp):
        return None
    return op.lhs


def _tensor_pairs(value: SSAValue, cls: type[g.BinaryOp]):
    op = value.owner
    if isinstance(op, cls) and op.rhs is not None:
        yield op.lhs, op.rhs
        yield op.rhs, op.lhs


def _gelu_tanh_input(half_x: SSAValue, one_plus_tanh: SSAValue) -> SSAValue | None:
    """x when the two factors are 0.5*x and 1 + tanh(sqrt(2/pi) * (x + 0.044715*x**3))."""
    x = _scalar_op(half_x, g.MulOp, 0.5)
    tanh_v = _scalar_op(one_plus_tanh, g.AddOp, 1.0)
    if x is None or tanh_v is None or not isinstance(tanh := tanh_v.owner, g.TanhOp):
        return None
    inner = _scalar_op(tanh.x, g.MulOp, _SQRT_2_OVER_PI)
    if inner is None:
        return None
    for a, b in _tensor_pairs(inner, g.AddOp):
        cube = _scalar_op(b, g.MulOp, 0.044715)
        if a == x and cube is not None and _scalar_op(cube, g.PowOp, 3.0) == x:
            return x
    return None


class SiluPattern(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: g.MulOp, rewriter: PatternRewriter) -> None:
        for x, s in _tensor_pairs(op.result, g.MulOp):
            if isinstance(s.owner, g.SigmoidOp) and s.owner.x == x and x.type == op.result.type:
                silu = g.make(g.SiluOp, [x], x.type)
                silu.copy_location(op)
                silu.results[0].name_hint = "silu"
                rewriter.replace(op, silu)
                return


class GeluTanhPattern(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: g.MulOp, rewriter: PatternRewriter) -> None:
        for a, b in _tensor_pairs(op.result, g.MulOp):
            x = _gelu_tanh_input(a, b)
            if x is not None and x.type == op.result.type:
                gelu = g.make(g.GeluOp, [x], x.type, approximate=string("tanh"))
                gelu.copy_location(op)
                gelu.results[0].name_hint = "gelu"
                rewriter.replace(op, gelu)
                return


@dataclass(frozen=True)
class RecognizeActivations(ModulePass):
    """Replace decomposed SiLU and tanh-GELU arithmetic by `silu` / `gelu`."""

    name = "recognize-activations"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        apply_patterns(op, SiluPattern(), GeluTanhPattern())
