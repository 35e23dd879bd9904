"""recognize-norms: RMSNorm as traced -> `wsc.graph.rms_norm`.

    gamma * (x * rsqrt(mean(x ** 2, [-1], keepdim) + eps))

with the multiplications in either order, `x * x` for the square, and `gamma` a 1-D weight
(possibly reshaped to leading unit dims) or `weight + c` (Gemma's `1 + weight`, kept as the
norm's `gamma_offset`). The row reduction then runs as one kernel.

When x is a view that splits the features of a token-major matrix X into heads
([..., S, heads, head_dim], Qwen3's per-head q/k norms) the norm becomes
`rms_norm {head_dim}` of X itself, viewed back: the head split is left to attention, which
reads it through the view as it reads rope.
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
from wsc.ir.attrs import f64_attr, get_ints, i64_attr, shape_of
from wsc.passes import views
from wsc.passes.graph_rewrite import apply_patterns


def _pair(op: g.BinaryOp) -> tuple[SSAValue, SSAValue] | None:
    return None if op.rhs is None else (op.lhs, op.rhs)


def _gamma(value: SSAValue, width: int) -> tuple[SSAValue, float] | None:
    """(w, c) when `value` is w + c, or w (c = 0), for w a 1-D weight of `width` elements,
    either side possibly reshaped to leading unit dims."""
    base, ops = views.view_chain(value)
    offset = 0.0
    add = base.owner
    if isinstance(add, g.AddOp) and add.rhs is None:
        offset = add.scalar_value
        base, inner = views.view_chain(add.lhs)
        ops = inner + ops
    if not isinstance(base.owner, g.WeightOp) or shape_of(base.type) != (width,):
        return None
    if any(not isinstance(op, g.ReshapeOp) for op in ops):
        return None
    return base, offset


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


def _head_split(x: SSAValue) -> SSAValue | None:
    """The token-major matrix X [..., heads * d] when `x` is X viewed as [..., heads, d]."""
    base, sig = views.chain_of(x)
    xs, bs = shape_of(x.type), shape_of(base.type)
    if not views.is_identity(sig) or len(xs) < 2 or not bs or bs[-1] == xs[-1] \
            or bs[-1] % xs[-1] or math.prod(bs[:-1]) * (bs[-1] // xs[-1]) != math.prod(xs[:-1]):
        return None
    return base


def _rms_norm(rewriter: PatternRewriter, anchor: g.MulOp, x: SSAValue, gamma: SSAValue,
              eps: float, offset: float) -> SSAValue:
    """rms_norm of `x` in place of `anchor`, per head of the matrix `x` views if it is one."""
    d = shape_of(x.type)[-1]
    props = dict(eps=f64_attr(eps), gamma_offset=f64_attr(offset) if offset else None)
    matrix = _head_split(x)
    if matrix is not None:
        x, props["head_dim"] = matrix, i64_attr(d)
    norm = g.make(g.RmsNormOp, [x, gamma], x.type, **props)
    norm.copy_location(anchor)
    norm.results[0].name_hint = "rms_norm"
    rewriter.insert(norm)
    return views.reshape(rewriter, anchor, norm.results[0], shape_of(anchor.result.type))


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
                out = _rms_norm(rewriter, op, x, gamma[0], eps, gamma[1])
                rewriter.replace_all_uses_with(op.result, out)
                rewriter.erase(op)
                return


@dataclass(frozen=True)
class RecognizeNorms(ModulePass):
    """Replace traced RMSNorm arithmetic (per row, or per head) by `rms_norm`."""

    name = "recognize-norms"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        apply_patterns(op, RmsNormPattern())
