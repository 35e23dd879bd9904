"""Compiler passes: graph canonicalisation, partitioning, lowering to tile programs."""

from __future__ import annotations


def all_passes() -> dict:
    """Every pass `wsc opt -p` (and xdsl-opt) can run, by name."""
    from wsc.passes.graph_pipeline import GRAPH_PASSES
    from wsc.passes.partition import PartitionPass

    return {**GRAPH_PASSES, PartitionPass.name: PartitionPass}
