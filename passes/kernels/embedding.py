"""Embedding lookups with the table resident in SRAM.

The table `[V, D]` is cut into vocabulary blocks over the region's rows and feature blocks
over its columns. A lookup is a sum over vocabulary blocks of "my block's row if the id falls
in it, else zero" — a GEMM against a one-hot matrix, without the matrix.

Prefill: token ids (and their positions) are split over the rows with an fp32 accumulator
per token block; the accumulators and ids circulate down each column of PEs, `rows` steps
around a ring, each PE adding the rows it holds; after a full turn every block is home and
complete, and no PE ever holds more than its block of tokens. Decode: the one id is given to
every PE, each contributes its hit (or zero) and a tree all-reduce down the columns sums them.
Learned position embeddings (GPT-2's `wpe`) are a second table gathered by position.
"""

from __future__ import annotations

from wsc.errors import UsageError
from wsc.ir import tile as t
from wsc.ir.kernel import EmbeddingKernel
from wsc.ir.layout import REPLICATED, Layout, split_cols, split_rows
from wsc.passes.kernels.common import LowerCtx, ladder, lower_epilogue
from wsc.passes.tile_builder import RegionBuilder


def layouts(k: EmbeddingKernel, grid: tuple[int, int], ctx: LowerCtx, phase: str):
    S, D = ctx.tokens(phase), k.dim.value.data
    R, C = grid
    if phase == "prefill":
        ids = Layout((S, 1), grid, split_rows(R), REPLICATED)
        out = Layout((S, D), grid, split_rows(R), split_cols(C))
    else:
        ids = Layout((1, 1), grid, REPLICATED, REPLICATED)
        out = Layout((1, D), grid, REPLICATED, split_cols(C))
    return ids, out


def table_layout(rows: int, d: int, grid: tuple[int, int]) -> Layout:
    return Layout((rows, d), grid, split_rows(grid[0]), split_cols(grid[1]))


def grids(k: EmbeddingKernel, max_h: int, max_w: int) -> list[tuple[int, int]]:
    D = k.dim.value.data
    return [(r, c) for r in ladder(max_h, 4, 1.5) for c in ladder(min(D, max_w), 4, 1.5)]


def check_positions(table: str, rows: int, max_seq: int) -> None:
    """A learned position table has a row per position: decode cannot go past it."""
    if max_seq > rows:
        raise UsageError(
            f"--max-seq {max_seq} is beyond the {rows} positions of the learned position "
            f"table `{table}`",
            hint=f"use --max-seq {rows} or less: decode would have no embedding for positions "
                 f"{rows}..{max_seq - 1}")


def lower(b: RegionBuilder, k: EmbeddingKernel, ctx: LowerCtx, phase: str) -> None:
    ids_lay, out_lay = layouts(k, b.grid, ctx, phase)
    D = out_lay.shape[1]
    tables = []
    for sym, ref in (("table", k.table.data),
                     ("pos_table", k.position_table.data if k.position_table else None)):
        if ref is None:
            continue
        rows = ctx.weights[ref].shape[0]
        if sym == "pos_table":
            check_positions(ref, rows, ctx.max_seq)
        tables.append(b.weight(sym, table_layout(rows, D, b.grid), ctx.dtype, ctx.matrix(ref)))
    ids = b.buffer("ids", ids_lay.tile, "i32", layout=ids_lay)
    b.recv(ids, ("input", 0))
    pos = None
    if len(tables) == 2:
        pos = b.buffer("pos", ids_lay.tile, "i32", layout=ids_lay)
        b.op(t.PositionsOp, [pos])
    acc = b.buffer("acc", out_lay.tile, "f32", layout=out_lay)
    keys = [ids] + ([pos] if pos is not None else [])
    R = b.grid[0]
    if phase == "prefill":
        b.op(t.FillOp, [acc], value=0.0)
        with b.loop(R):
            for table, key in zip(tables, keys):
                b.op(t.GatherOp, [table, key, acc], accumulate=True)
            if R > 1:
                for buf in (acc, *keys):
                    b.shift(buf, axis=0)
    else:
        for i, (table, key) in enumerate(zip(tables, keys)):
            b.op(t.GatherOp, [table, key, acc], accumulate=i > 0)
        b.allreduce(acc, axis=0)
    for i, out in enumerate(lower_epilogue(b, k, ctx, acc, out_lay)):
        b.send(out, i)
