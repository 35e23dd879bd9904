"""LayerNorm and RMSNorm: row statistics reduced across the PEs of each row.

Tokens are split over the region's rows and features over its columns. Each PE sums its part
of every row (padding masked by the layout), a two-level tree all-reduce along the row of PEs
completes the sums, and every PE normalises its own tile. Decode runs the single token on
every row of PEs (the grid is shared with prefill; rows beyond the first recompute it).
"""

from __future__ import annotations

from wsc.ir import tile as t
from wsc.ir.kernel import NormKernel
from wsc.passes.kernels.common import (
    REDUCE_LEVELS, LowerCtx, lower_epilogue, row_vector, rowwise_grids, rowwise_layout,
)
from wsc.passes.tile_builder import RegionBuilder


def layouts(k: NormKernel, grid: tuple[int, int], ctx: LowerCtx, phase: str):
    lay = rowwise_layout(ctx.tokens(phase), k.core_shape()[1], grid, phase)
    return lay, lay


def grids(k: NormKernel, max_h: int, max_w: int) -> list[tuple[int, int]]:
    return rowwise_grids(*k.core_shape(), max_h, max_w)


def lower(b: RegionBuilder, k: NormKernel, ctx: LowerCtx, phase: str) -> None:
    lay, _ = layouts(k, b.grid, ctx, phase)
    D = lay.shape[1]
    vec = row_vector(lay, D)
    gamma = b.weight("gamma", vec, ctx.dtype, ctx.matrix(k.gamma.data))
    beta = b.weight("beta", vec, ctx.dtype, ctx.matrix(k.beta.data)) if k.beta is not None else None
    x = b.buffer("x", lay.tile, ctx.dtype, layout=lay)
    b.recv(x, ("input", 0))
    rows = lay.tile[0]
    stat = b.buffer("stat", (rows, 1), "f32")
    y = b.buffer("y", lay.tile, "f32", layout=lay)
    eps = k.eps.value.data

    def row_mean(src) -> None:  # stat = mean over the full row of src
        b.op(t.ReduceOp, [src, stat], fn="sum", dim=1)
        b.op(t.AllReduceOp, [stat], axis=1, fn="sum", levels=REDUCE_LEVELS)
        b.op(t.ScalarOp, [stat, stat], fn="mul", value=1.0 / D)

    if k.norm.data == "layer":
        row_mean(x)
        b.op(t.BinaryOp, [x, stat, y], fn="sub")  # y = x - mean
        sq = b.buffer("sq", lay.tile, "f32", layout=lay)
        b.op(t.BinaryOp, [y, y, sq], fn="mul")
        row_mean(sq)
        b.release(sq)
    else:
        b.op(t.BinaryOp, [x, x, y], fn="mul")
        row_mean(y)
        b.op(t.UnaryOp, [x, y], fn="identity")
    b.op(t.ScalarOp, [stat, stat], fn="add", value=eps)
    b.op(t.UnaryOp, [stat, stat], fn="rsqrt")
    b.op(t.BinaryOp, [y, stat, y], fn="mul")
    b.op(t.BinaryOp, [y, gamma, y], fn="mul")
    if beta is not None:
        b.op(t.BinaryOp, [y, beta, y], fn="add")
    for i, out in enumerate(lower_epilogue(b, k, ctx, y, lay)):
        b.send(out, i)
