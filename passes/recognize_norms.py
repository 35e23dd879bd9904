"""recognize-norms: Llama / Qwen2 RMSNorm as traced -> `wsc.graph.rms_norm`.

    gamma * (x * rsqrt(mean(x ** 2, [-1], keepdim) + eps))

with the multiplications in either order, `x * x` for the square, and `gamma` a 1-D weight
(possibly reshaped to leading unit dims). The row reduction then runs as one kernel.
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
from wsc.ir.attrs import f64_attr, get_ints, shape_of
from wsc.passes import views
from wsc.passes.graph_rewrite import apply_patterns


def _pair(op: g.BinaryOp) -> tuple[SSAValue, SSAValue] | None:
    return None if op.rhs is None else (op.lhs, op.rhs)


def _gamma(value: SSAValue, width: int) -> SSAValue | None:
    """The 1-D weight `value` is (or reshapes to leading unit dims), of `width` elements."""
    base, ops = views.view_chain(value)
    if not isinstance(base.owner, g.WeightOp) or shape_of(base.type) != (width,):
        return None
    if any(not isinstance(op, g.ReshapeOp) for op in ops):
        return None
    return base


def _squares(value: SSAValue, x: SSAValue) -> bool:
    """`value` is x ** 2 or x * x."""
    op = value.owner
    if isinstance(op, g.PowOp):
        return op.lhs == x and op.rhs is None and op.reverse is None and op.scalar_value == 2.0
    return isinstance(op, g.MulOp) and op.lhs == x and op.rhs == x


def _inverse_rms(value: SSAValue, x: SSAValue) -> float | None:
    """eps when `value` is rsqrt(mean(x**2, last dim, keepdim) + eps)."""
    rsqrt = value.owner
    if not isinstance(rsqrt, g.RsqrtOp) or not isinstance(add := rsqrt.x.owner, g.AddOp):
        return None
    if add.rhs is not None or add.reverse is not None or not isinstance(mean := add.lhs.owner, g.MeanOp):
        return None
    rank = len(shape_of(mean.x.type))
    if mean.keepdim is None or [d % rank for d in get_ints(mean.dims)] != [rank - 1]:
        return None
    return add.scalar_value if _squares(mean.x, x) else None


class RmsNormPattern(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: g.MulOp, rewriter: PatternRewriter) -> None:
        pair = _pair(op)
        if pair is None:
            return
        for weight, normed in (pair, pair[::-1]):
            if not isinstance(inner := normed.owner, g.MulOp) or (inner_pair := _pair(inner)) is None:
                continue
            for x, scale in (inner_pair, inner_pair[::-1]):
                eps = _inverse_rms(scale, x)
                xs = shape_of(x.type)
                gamma = _gamma(weight, xs[-1]) if eps is not None else None
                if gamma is None or shape_of(op.result.type) != xs or math.prod(xs) == 0:
                    continue
                norm = g.make(g.RmsNormOp, [x, gamma], x.type, eps=f64_attr(eps))
                norm.copy_location(op)
                norm.results[0].name_hint = "rms_norm"
                rewriter.replace(op, norm)
                return


@dataclass(frozen=True)
class RecognizeNorms(ModulePass):
    """Replace traced RMSNorm arithmetic by `rms_norm`."""

    name = "recognize-norms"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        apply_patterns(op, RmsNormPattern())
