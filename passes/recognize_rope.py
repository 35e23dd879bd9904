"""recognize-rope: rotate-half rotary embeddings as traced -> `wsc.graph.rope`.

    x * cos + cat(-x[..., d/2:], x[..., :d/2]) * sin

where x is a per-head view ([1, heads, S, d]) of columns [c0, c0 + heads*d) of a token-major
matrix X, and cos / sin are `rope_table`s of one `inv_freq` and `scaling`, applied row s to
token s of every head. It becomes `rope` of those columns of X; the 4-D result is replaced by
the same head view of the rope, which canonicalization then folds into whatever reads it.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import PatternRewriter, RewritePattern, op_type_rewrite_pattern

from wsc.ir import graph as g
from wsc.ir.attrs import i64_attr, shape_of
from wsc.passes import views
from wsc.passes.graph_rewrite import apply_patterns


def _table(value: SSAValue, kind: str, target: tuple[int, ...]) -> g.RopeTableOp | None:
    """The `kind` rope_table that `value` broadcasts row by row over `target` [..., S, d]."""
    base, sig = views.chain_of(value)
    table = base.owner
    if not isinstance(table, g.RopeTableOp) or table.kind.data != kind:
        return None
    return table if views.is_row_table(sig, target) else None


def _half(value: SSAValue, x: SSAValue, lower: bool) -> bool:
    """`value` is x[..., :d/2] (lower) or x[..., d/2:] of the last dim."""
    op = value.owner
    if not isinstance(op, g.SliceOp) or op.x != x:
        return False
    dim, start, end, step = op.bounds()
    d = shape_of(x.type)[-1]
    want = (0, d // 2) if lower else (d // 2, d)
    return dim == len(shape_of(x.type)) - 1 and step == 1 and (start, end) == want


def _rotated(value: SSAValue) -> SSAValue | None:
    """x when `value` is cat(-x[..., d/2:], x[..., :d/2]) on the last dim."""
    cat = value.owner
    if not isinstance(cat, g.ConcatOp) or len(cat.inputs) != 2:
        return None
    neg, low = cat.inputs
    if not isinstance(neg.owner, g.NegOp) or not isinstance(low.owner, g.SliceOp):
        return None
    x = low.owner.x
    rank = len(shape_of(x.type))
    if cat.dim.value.data % rank != rank - 1:
        return None
    return x if _half(low, x, True) and _half(neg.owner.x, x, False) else None


def _products(value: SSAValue):
    """Both operand orders of a tensor-by-tensor multiplication."""
    op = value.owner
    if isinstance(op, g.MulOp) and op.rhs is not None:
        yield op.lhs, op.rhs
        yield op.rhs, op.lhs


def match_rope(cos_term: SSAValue, sin_term: SSAValue):
    """(x, cos table, sin table) when the terms are x * cos and rotate_half(x) * sin."""
    for rot, sin in _products(sin_term):
        x = _rotated(rot)
        if x is None:
            continue
        for x2, cos in _products(cos_term):
            if x2 != x:
                continue
            target = shape_of(x.type)
            c, s = _table(cos, "cos", target), _table(sin, "sin", target)
            if c is not None and s is not None:
                return x, c, s
    return None


class RopePattern(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: g.AddOp, rewriter: PatternRewriter) -> None:
        if op.rhs is None:
            return
        for cos_term, sin_term in ((op.lhs, op.rhs), (op.rhs, op.lhs)):
            found = match_rope(cos_term, sin_term)
            if found is None:
                continue
            x, cos, sin = found
            if cos.inv_freq != sin.inv_freq or cos.scaling != sin.scaling:
                continue
            base, sig = views.chain_of(x)
            hv = views.head_view(sig)
            if hv is None or hv.transposed or hv.repeats != 1 or hv.head_dim % 2:
                continue
            cols = views.columns(rewriter, op, base, hv.col0, hv.width)
            rope = g.make(g.RopeOp, [cols], cols.type, heads=i64_attr(hv.heads),
                          head_dim=i64_attr(hv.head_dim), inv_freq=cos.inv_freq,
                          scaling=cos.scaling)
            rope.copy_location(op)
            rope.results[0].name_hint = "rope"
            rewriter.insert(rope)
            local = views.HeadView(0, hv.heads, hv.kv_heads, hv.head_dim)
            out = views.head_view_of(rewriter, op, rope.result, local, shape_of(op.result.type))
            rewriter.replace_all_uses_with(op.result, out)
            rewriter.erase(op)
            return


@dataclass(frozen=True)
class RecognizeRope(ModulePass):
    """Replace traced rotate-half rotary embeddings by `rope` on token-major columns."""

    name = "recognize-rope"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        apply_patterns(op, RopePattern())
