"""recognize-attention: traced attention -> `wsc.graph.attention` on token-major matrices.

Two traced forms, both on per-head views ([1, heads, S, d]) of columns of token-major
matrices (the q/k/v projections, or their ropes):

- `sdpa(q, k, v, mask?)`, causal through `is_causal` or a causal-mask constant;
- the eager chain `matmul(q, kᵀ) -> * scale | / scale -> + additive mask -> softmax(-1)
  -> matmul(p, v)`, with identity views (reshapes) anywhere in between.

k and v may be views with fewer distinct heads, each repeated for consecutive query heads
(Llama / Qwen2 `repeat_kv`, GPTBigCode multi-query): that becomes `kv_heads`, and the attention
reads the kv columns once instead of a copy per query head. A mask that is a constant but not
exactly causal (or causal within the sliding `window` the frontend marked on it) is refused:
wafer attention generates its mask from positions.

The 4-D result is replaced by the same head view of the attention output, so the transpose
and reshape that follow collapse into a reshape in canonicalization.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, UnitAttr
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import PatternRewriter, RewritePattern, op_type_rewrite_pattern

from wsc.errors import UnsupportedOpError
from wsc.ir import graph as g
from wsc.ir.attrs import f64_attr, i64_attr, shape_of
from wsc.passes import views
from wsc.passes.graph_rewrite import apply_patterns


def _not_causal(op: Operation) -> UnsupportedOpError:
    return UnsupportedOpError(
        op.name, op.source[1] if isinstance(op, g.GraphOp) else "",
        "its attention mask is a constant that is not exactly causal",
        hint="wsc compiles causal prefill attention, optionally within a sliding window, "
             "without padding (batch 1); custom masks are not supported")


@dataclass(frozen=True)
class CausalMask:
    """A causal-mask constant, seen through its views: its sliding window, if any."""

    window: int | None


def _causal_mask(value: SSAValue, anchor: Operation, scores: tuple[int, ...]) -> CausalMask | None:
    """The causal mask `value` is a view of, broadcast over `scores` [.., S, S]; a folded
    constant that is not one is an error."""
    base, sig = views.chain_of(value)
    weight = base.owner
    if not isinstance(weight, g.WeightOp) or not weight.ref.startswith("folded."):
        return None
    if weight.causal_mask is None or not views.is_row_table(sig, scores):
        raise _not_causal(anchor)
    return CausalMask(None if weight.window is None else weight.window.value.data)


@dataclass(frozen=True)
class Scores:
    """What the eager chain does before softmax: q kᵀ, then a scale and a causal mask."""

    qk: g.MatmulOp
    scale: float
    mask: CausalMask | None


def parse_scores(value: SSAValue, anchor: Operation) -> Scores | None:
    """Walk from the softmax input up to `matmul(q, kᵀ)` through scalings, masks and views."""
    scale, mask = 1.0, None
    while True:
        op = value.owner
        if isinstance(op, g.MatmulOp):
            return Scores(op, scale, mask)
        if isinstance(op, g.AddOp) and op.rhs is None and op.scalar_value == 0.0:
            value = op.lhs  # a one-element mask folds to + 0 (S = 1)
        elif isinstance(op, g.AddOp) and op.rhs is not None:
            shape = shape_of(op.result.type)
            if (found := _causal_mask(op.rhs, anchor, shape)) is not None:
                value, mask = op.lhs, found
            elif (found := _causal_mask(op.lhs, anchor, shape)) is not None:
                value, mask = op.rhs, found
            else:
                return None
        elif isinstance(op, (g.MulOp, g.DivOp)) and op.rhs is None and op.reverse is None:
            s = op.scalar_value
            scale = scale * s if isinstance(op, g.MulOp) else scale / s
            value = op.lhs
        elif isinstance(op, views.VIEW_TYPES):
            base, sig = views.chain_of(value)
            if not views.is_identity(sig):
                return None
            value = base
        else:
            return None


def _head(value: SSAValue, transposed: bool) -> tuple[SSAValue, views.HeadView] | None:
    base, sig = views.chain_of(value)
    hv = views.head_view(sig)
    return None if hv is None or hv.transposed != transposed else (base, hv)


def build_attention(rewriter: PatternRewriter, anchor: Operation, q: SSAValue, k: SSAValue,
                    v: SSAValue, *, k_transposed: bool, scale: float | None,
                    causal: bool, window: int | None = None) -> bool:
    """Replace `anchor` by attention of the matrices q, k, v are head views of; False (and
    nothing changed) when they are not such views."""
    found = [_head(q, False), _head(k, k_transposed), _head(v, False)]
    if any(f is None for f in found):
        return False
    (qb, hq), (kb, hk), (vb, hv) = found  # type: ignore[misc]
    heads, kv_heads, d = hq.heads, hk.kv_heads, hq.head_dim
    if hq.repeats != 1 or hk.head_dim != d or hv.head_dim != d or hv.kv_heads != kv_heads \
            or heads % kv_heads or hk.heads not in (heads, kv_heads) \
            or hv.heads not in (heads, kv_heads):
        return False
    cols = [views.columns(rewriter, anchor, b, h.col0, h.width)
            for b, h in ((qb, hq), (kb, hk), (vb, hv))]
    causal = causal or math.prod(shape_of(cols[0].type)[:-1]) == 1  # one token: trivially
    att = g.make(g.AttentionOp, cols, cols[0].type, heads=i64_attr(heads),
                 kv_heads=i64_attr(kv_heads), head_dim=i64_attr(d),
                 scale=f64_attr(1.0 / math.sqrt(d) if scale is None else scale),
                 causal=UnitAttr() if causal else None,
                 window=i64_attr(window) if causal and window is not None else None)
    att.copy_location(anchor)
    att.results[0].name_hint = "attention"
    rewriter.insert(att)
    result = anchor.results[0]
    local = views.HeadView(0, heads, heads, d)
    out = views.head_view_of(rewriter, anchor, att.result, local, shape_of(result.type))
    rewriter.replace_all_uses_with(result, out)
    rewriter.erase(anchor)
    return True


class SdpaPattern(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: g.SdpaOp, rewriter: PatternRewriter) -> None:
        causal = op.causal is not None
        window = op.window.value.data if op.window is not None else None
        if op.mask is not None:
            q, k = shape_of(op.q.type), shape_of(op.k.type)
            mask = _causal_mask(op.mask, op, (*q[:-1], k[-2]))
            if mask is None:
                raise _not_causal(op)
            causal, window = True, mask.window
        scale = None if op.scale is None else op.scale.value.data
        build_attention(rewriter, op, op.q, op.k, op.v, k_transposed=False, scale=scale,
                        causal=causal, window=window)


class EagerAttentionPattern(RewritePattern):
    """Anchored at `matmul(softmax(scores), v)`."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: g.MatmulOp, rewriter: PatternRewriter) -> None:
        base, sig = views.chain_of(op.a)
        softmax = base.owner
        if not isinstance(softmax, g.SoftmaxOp) or not views.is_identity(sig):
            return
        rank = len(shape_of(softmax.x.type))
        if softmax.dim.value.data % rank != rank - 1:
            return
        scores = parse_scores(softmax.x, op)
        if scores is None:
            return
        mask = scores.mask
        build_attention(rewriter, op, scores.qk.a, scores.qk.b, op.b, k_transposed=True,
                        scale=scores.scale, causal=mask is not None,
                        window=mask.window if mask is not None else None)


@dataclass(frozen=True)
class RecognizeAttention(ModulePass):
    """Replace traced attention (SDPA or the eager chain) by `attention`."""

    name = "recognize-attention"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        apply_patterns(op, SdpaPattern(), EagerAttentionPattern())
