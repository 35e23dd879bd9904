"""A standalone elementwise kernel: its inputs arrive, its epilogue runs, its outputs leave."""

from __future__ import annotations

from wsc.ir import tile as t
from wsc.ir.kernel import EltwiseKernel
from wsc.ir.layout import REPLICATED, Layout, split_cols, split_rows
from wsc.passes.kernels.common import LowerCtx, ladder, lower_epilogue
from wsc.passes.tile_builder import RegionBuilder


def layouts(k: EltwiseKernel, grid: tuple[int, int], ctx: LowerCtx, phase: str):
    S, F = ctx.tokens(phase), k.core_shape()[1]
    rows = split_rows(grid[0]) if phase == "prefill" else REPLICATED
    lay = Layout((S, F), grid, rows, split_cols(grid[1]))
    return lay, lay


def grids(k: EltwiseKernel, max_h: int, max_w: int) -> list[tuple[int, int]]:
    S, F = k.core_shape()
    return [(r, c) for r in ladder(min(S, max_h), 4, 1.5) for c in ladder(min(F, max_w), 4, 1.5)]


def lower(b: RegionBuilder, k: EltwiseKernel, ctx: LowerCtx, phase: str) -> None:
    lay, _ = layouts(k, b.grid, ctx, phase)
    x = b.buffer("x", lay.tile, ctx.dtype, layout=lay)
    b.recv(x, ("input", 0))
    core = b.buffer("core", lay.tile, "f32", layout=lay)
    b.op(t.UnaryOp, [x, core], fn="identity")
    for i, out in enumerate(lower_epilogue(b, k, ctx, core, lay)):
        b.send(out, i)
