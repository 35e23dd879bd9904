"""LayerNorm and RMSNorm: row statistics reduced across the PEs of each row.

Tokens are split over the region's rows and features over its columns. Each PE sums its part
of every row (padding masked by the layout), a two-level tree all-reduce along the row of PEs
completes the sums, and every PE normalises its own tile. Decode runs the single token on
every row of PEs (the grid is shared with prefill; rows beyond the first recompute it).

Statistics accumulate in fp32; a mean square is the row dotted with itself, at the storage
dtype's FMAC rate. RMSNorm rounds `x * rsqrt(mean square + eps)` back to the storage dtype
before the gain, as Hugging Face's Llama and Qwen2 do; LayerNorm normalises in fp32. A gain
offset (Gemma's `1 + weight`) is added to the stored gain when the weights are laid out.
Without a fused epilogue the last op writes the output directly, rounding as it writes.
"""

from __future__ import annotations

from wsc.ir import tile as t
from wsc.ir.kernel import NormKernel
from wsc.passes.kernels.common import (
    LowerCtx, lower_result, row_vector, rowwise_grids, rowwise_layout,
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
    offset = k.gamma_offset.value.data if k.gamma_offset is not None else 0.0
    gamma = b.weight("gamma", vec, ctx.dtype, ctx.matrix(k.gamma.data, offset=offset))
    beta = b.weight("beta", vec, ctx.dtype, ctx.matrix(k.beta.data)) if k.beta is not None else None
    x = b.buffer("x", lay.tile, ctx.dtype, layout=lay)
    b.recv(x, ("input", 0))
    rows = lay.tile[0]
    stat = b.buffer("stat", (rows, 1), "f32")
    eps = k.eps.value.data

    def row_mean(src, fn: str = "sum") -> None:  # stat = mean over the full row of fn(src)
        b.op(t.ReduceOp, [src, stat], fn=fn, dim=1)
        b.allreduce(stat, axis=1)
        b.op(t.ScalarOp, [stat, stat], fn="mul", value=1.0 / D)

    if k.norm.data == "layer":
        row_mean(x)
        y = b.buffer("y", lay.tile, "f32", layout=lay)
        b.op(t.BinaryOp, [x, stat, y], fn="sub")  # y = x - mean
        row_mean(y, "sumsq")
        centred = y
    else:
        # As Llama's RMSNorm: the fp32 mean square (a dot product of the stored row with
        # itself), then x * rsqrt rounded back to the storage dtype before the gain.
        row_mean(x, "sumsq")
        centred = x
    b.op(t.ScalarOp, [stat, stat], fn="add", value=eps)
    b.op(t.UnaryOp, [stat, stat], fn="rsqrt")
    b.op(t.BinaryOp, [centred, stat, centred], fn="mul")
    if beta is None:
        last, fn = (centred, gamma), "mul"
    else:
        b.op(t.BinaryOp, [centred, gamma, centred], fn="mul")
        last, fn = (centred, beta), "add"
    outs = lower_result(b, k, ctx, lay, lambda dst: b.op(t.BinaryOp, [*last, dst], fn=fn),
                        core=centred if k.norm.data == "layer" else None, core_name="y")
    for i, out in enumerate(outs):
        b.send(out, i)
