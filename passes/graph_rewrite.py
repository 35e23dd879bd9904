"""Plumbing shared by the graph-level passes: applying patterns, removing dead ops."""

from __future__ import annotations

from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation
from xdsl.pattern_rewriter import (
    GreedyRewritePatternApplier,
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
)

from wsc.errors import WscError
from wsc.ir.graph import GraphOp


class RemoveDeadGraphOps(RewritePattern):
    """Every `wsc.graph` op is free of side effects: erase it once its results are unused."""

    def match_and_rewrite(self, op: Operation, rewriter: PatternRewriter, /) -> None:
        if isinstance(op, GraphOp) and all(not r.uses for r in op.results):
            rewriter.erase(op)


def apply_patterns(module: ModuleOp, *patterns: RewritePattern) -> None:
    """Rewrite `module` with `patterns` (and dead-op removal) to a fixed point."""
    walker = PatternRewriteWalker(
        GreedyRewritePatternApplier([RemoveDeadGraphOps(), *patterns]), apply_recursively=True)
    try:
        walker.rewrite_module(module)
    except WscError as e:
        # xDSL attaches a print of the whole module to errors raised inside patterns;
        # the error itself already names the op and its module path.
        if hasattr(e, "__notes__"):
            del e.__notes__
        raise
