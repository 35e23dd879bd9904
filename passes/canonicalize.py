"""graph-canonicalize: remove pure data movement that does not move data.

Views whose index map is the row-major identity of their base (`views.is_identity`) are a
reshape at most: a chain of them collapses into one `reshape` of the base, or into the base
itself when the shapes agree. This is what turns `attention result -> head view -> transpose
-> reshape` back into the token-major matrix once attention has been recognised. Unused ops
are removed.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import PatternRewriter, RewritePattern

from wsc.ir import graph as g
from wsc.ir.attrs import shape_of
from wsc.passes import views
from wsc.passes.graph_rewrite import apply_patterns


class CollapseIdentityViews(RewritePattern):
    """A view chain that reads its base in order is `reshape(base)`, or `base`."""

    def match_and_rewrite(self, op: Operation, rewriter: PatternRewriter, /) -> None:
        if not isinstance(op, views.VIEW_TYPES):
            return
        base, ops = views.view_chain(op.results[0])
        if not views.is_identity(views.signature(base, ops)):
            return
        if shape_of(base.type) == shape_of(op.results[0].type):
            rewriter.replace_all_uses_with(op.results[0], base)
            rewriter.erase(op)
        elif len(ops) > 1 or not isinstance(op, g.ReshapeOp):
            new = views.reshape(rewriter, op, base, shape_of(op.results[0].type))
            rewriter.replace_all_uses_with(op.results[0], new)
            rewriter.erase(op)


@dataclass(frozen=True)
class GraphCanonicalize(ModulePass):
    """Collapse identity view chains into reshapes and remove unused ops."""

    name = "graph-canonicalize"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        apply_patterns(op, CollapseIdentityViews())
