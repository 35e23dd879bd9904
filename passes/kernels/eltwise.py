"""A standalone elementwise kernel: its inputs arrive, its epilogue runs, its outputs leave."""

from __future__ import annotations

from wsc.ir import tile as t
from wsc.ir.kernel import EltwiseKernel
from wsc.passes.kernels.common import LowerCtx, lower_epilogue, rowwise_grids, rowwise_layout
from wsc.passes.tile_builder import RegionBuilder


def layouts(k: EltwiseKernel, grid: tuple[int, int], ctx: LowerCtx, phase: str):
    lay = rowwise_layout(ctx.tokens(phase), k.core_shape()[1], grid, phase)
    return lay, lay


def grids(k: EltwiseKernel, max_h: int, max_w: int) -> list[tuple[int, int]]:
    return rowwise_grids(*k.core_shape(), max_h, max_w)


def lower(b: RegionBuilder, k: EltwiseKernel, ctx: LowerCtx, phase: str) -> None:
    lay, _ = layouts(k, b.grid, ctx, phase)
    x = b.buffer("x", lay.tile, ctx.dtype, layout=lay)
    b.recv(x, ("input", 0))
    core = b.buffer("core", lay.tile, "f32", layout=lay)
    b.op(t.UnaryOp, [x, core], fn="identity")
    for i, out in enumerate(lower_epilogue(b, k, ctx, core, lay)):
        b.send(out, i)
