"""Linear layers: Cannon GEMM for prefill, GEMV with a tree all-reduce for decode.

The weight `W[K, N]` lives on a `P x P` grid, pre-skewed for Cannon: PE `(r, c)` holds block
`((r + c) mod P, c)` (WaferLLM's MeshGEMM, DESIGN §4).

Prefill, `X[S, K] @ W`: PE `(r, c)` starts with `X` block `(r, (r + c) mod P)`; each of the `P`
steps multiplies the two blocks it holds into its `C(r, c)` accumulator, then shifts `X` one PE
left along its row and `W` one PE up along its column, on interleaved rings (every shift is at
most two physical hops). After `P` steps every PE has summed over all of K and both operands are
back where they started. When SRAM allows, the shifts go into a second buffer and overlap the
next multiply (double buffering); the weights double-buffer only when `P` is even, so that they
end each run in their home buffer. `LowerCtx.double_buffer` says how much to double-buffer
(2: activations and weights, 1: activations, 0: nothing); the planner lowers with the most
that fits the SRAM budget.

Decode, `x[1, K] @ W`: the same skewed weights serve a GEMV: PE `(r, c)` receives `x` block
`(r + c) mod P`, multiplies it by its weight block, and a two-level tree all-reduce down each
column sums the partial products — no weight moves.
"""

from __future__ import annotations

from wsc.ir import tile as t
from wsc.ir.kernel import LinearKernel
from wsc.ir.layout import REPLICATED, Layout, skewed, split_cols, split_rows
from wsc.passes.kernels.common import LowerCtx, ladder, lower_epilogue, row_vector
from wsc.passes.tile_builder import RegionBuilder


def layouts(k: LinearKernel, grid: tuple[int, int], ctx: LowerCtx, phase: str):
    """(input layout, output layout, weight layout) of a linear kernel on `grid`."""
    P = grid[0]
    K, N = k.k.value.data, k.n.value.data
    S = ctx.tokens(phase)
    w = Layout((K, N), grid, skewed(P), split_cols(P))
    if phase == "prefill":
        x = Layout((S, K), grid, split_rows(P), skewed(P))
        y = Layout((S, N), grid, split_rows(P), split_cols(P))
    else:
        x = Layout((1, K), grid, REPLICATED, skewed(P))
        y = Layout((1, N), grid, REPLICATED, split_cols(P))
    return x, y, w


def grids(k: LinearKernel, max_h: int, max_w: int) -> list[tuple[int, int]]:
    """Candidate grids: square (Cannon), no wider than the weight or the mesh."""
    K, N = k.k.value.data, k.n.value.data
    return [(p, p) for p in ladder(min(K, N, max_h, max_w))]


def lower(b: RegionBuilder, k: LinearKernel, ctx: LowerCtx, phase: str) -> None:
    P = b.grid[0]
    x_lay, y_lay, w_lay = layouts(k, b.grid, ctx, phase)
    dt = ctx.dtype
    w = b.weight("w", w_lay, dt, ctx.matrix(k.weight.data, k.transpose_weight is not None))
    bias = None
    if k.bias is not None:
        bias = b.weight("b", row_vector(y_lay, y_lay.shape[1]), dt, ctx.matrix(k.bias.data))
    x = b.buffer("x", x_lay.tile, dt, layout=x_lay)
    acc = b.buffer("acc", y_lay.tile, ctx.accumulate, layout=y_lay)
    b.recv(x, ("input", 0))
    if phase == "prefill":
        _cannon(b, k, ctx, P, x, w, acc, x_lay, w_lay)
    else:
        b.op(t.MatmulOp, [x, w, acc])
        b.allreduce(acc, axis=0)
    if bias is not None:
        b.op(t.BinaryOp, [acc, bias, acc], fn="add")
    for i, out in enumerate(lower_epilogue(b, k, ctx, acc, y_lay)):
        b.send(out, i)


def _cannon(b: RegionBuilder, k, ctx: LowerCtx, P: int, x, w, acc, x_lay: Layout, w_lay: Layout) -> None:
    b.op(t.FillOp, [acc], value=0.0)
    db_x = ctx.double_buffer >= 1 and P > 1
    db_w = ctx.double_buffer >= 2 and P > 1 and P % 2 == 0
    x2 = b.buffer("x_next", x_lay.tile, ctx.dtype, layout=x_lay) if db_x else None
    w2 = b.buffer("w_next", w_lay.tile, ctx.dtype, layout=w_lay) if db_w else None
    with b.loop(P):
        if db_x:
            b.shift(x, axis=1, dst=x2)
        if db_w:
            b.shift(w, axis=0, dst=w2)
        b.op(t.MatmulOp, [x, w, acc], accumulate=True)
        if db_x:
            b.op(t.SwapOp, [x, x2])
        elif P > 1:
            b.shift(x, axis=1)
        if db_w:
            b.op(t.SwapOp, [w, w2])
        elif P > 1:
            b.shift(w, axis=0)
