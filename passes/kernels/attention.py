"""Causal attention, flash-style across PEs, with the KV cache resident in SRAM.

The region's columns split the KV heads (each column holds whole KV-head groups together with
every query head that reads them, so grouped- and multi-query attention share K/V instead of
copying it); its rows stripe the tokens cyclically — token `p` lives on row `p mod rows` — which
balances causal work across rows and is exactly the KV cache's layout.

Prefill (one chunk of the prompt at a time): each PE applies the per-head RMSNorms (Qwen3's
q/k norms; a PE holds whole heads, so their statistics are local) and the rotary embedding to
its q and k rows (if the model has them) and writes its k/v rows into the cache — a local
copy, since the chunk is striped like the cache. The K/V then never move: for `rows` flash steps every PE folds
the cache entries it holds into the online-softmax state `(m, l, acc)` of the queries it holds
(masking keys after each query's position), then passes the queries and their state to the
next row of the ring. No PE ever holds more than one block of scores, and each chunk sees
every earlier chunk's keys.

A sliding window (Mistral, StarCoder2, Qwen2's windowed layers) masks keys `window` or more
positions before each query, in prefill and decode alike; the cache still holds every position.

Decode: the new token's q, k, v reach every row; k/v are appended to the cache by shifting the
entry neighbour to neighbour to the row whose turn it is; every PE attends over its share of
the cache and a two-level tree all-reduce with the log-sum-exp merge combines the rows.
"""

from __future__ import annotations

from wsc.ir import tile as t
from wsc.ir.kernel import AttentionKernel
from wsc.ir.layout import REPLICATED, Layout, split_cols, split_rows
from wsc.passes.kernels.common import (
    M_INIT, LowerCtx, ladder, lower_result,
)
from wsc.passes.tile_builder import RegionBuilder


def dims(k: AttentionKernel) -> tuple[int, int, int]:
    return k.heads.value.data, k.kv_heads.value.data, k.head_dim.value.data


def layouts(k: AttentionKernel, grid: tuple[int, int], ctx: LowerCtx, phase: str):
    """(q layout, k/v layout, output layout, cache layout)."""
    H, KV, hd = dims(k)
    R, C = grid
    S = ctx.tokens(phase)
    rows = split_rows(R, cyclic=True) if phase == "prefill" else REPLICATED
    q = Layout((S, H * hd), grid, rows, split_cols(C))
    kv = Layout((S, KV * hd), grid, rows, split_cols(C))
    cache = Layout((ctx.max_seq, KV * hd), grid, split_rows(R, cyclic=True), split_cols(C))
    return q, kv, q, cache


def grids(k: AttentionKernel, max_h: int, max_w: int) -> list[tuple[int, int]]:
    """Columns divide the KV heads (K/V is never copied); rows stripe the tokens."""
    _, KV, _ = dims(k)
    cols = [c for c in range(1, min(KV, max_w) + 1) if KV % c == 0]
    return [(r, c) for c in cols for r in ladder(min(max_h, 4096))]


def allows(k: AttentionKernel, grid: tuple[int, int]) -> bool:
    return dims(k)[1] % grid[1] == 0


def head_norm_gains(b: RegionBuilder, k: AttentionKernel, ctx: LowerCtx, hq: int, hk: int):
    """The q and k per-head norm gains (or None), one head's gain repeated for every head a
    PE holds, with the gain offset (a `1 + weight` gain) added."""
    hd = dims(k)[2]
    offset = k.qk_norm_offset.value.data if k.qk_norm_offset is not None else 0.0
    gains = []
    for sym, ref, heads in (("q_norm", k.q_norm, hq), ("k_norm", k.k_norm, hk)):
        if ref is None:
            gains.append(None)
            continue
        lay = Layout((1, heads * hd), b.grid, REPLICATED, REPLICATED)
        gain = ctx.matrix(ref.data, offset=offset, repeat=heads)
        gains.append(b.weight(sym, lay, ctx.dtype, gain))
    return gains


def head_rms_norm(b: RegionBuilder, x, rows: int, gain, heads: int, hd: int,
                  eps: float) -> None:
    """RMSNorm of every head of x's `rows`, in place. Like the norm kernel (and Llama's
    norms) x * rsqrt(mean square + eps) is rounded to the storage dtype before the gain."""
    ms = b.buffer("head_ms", (rows, heads), "f32")
    b.op(t.ReduceOp, [x, ms], fn="sumsq", dim=1, groups=heads)
    b.op(t.ScalarOp, [ms, ms], fn="mul", value=1.0 / hd)
    b.op(t.ScalarOp, [ms, ms], fn="add", value=eps)
    b.op(t.UnaryOp, [ms, ms], fn="rsqrt")
    b.op(t.BinaryOp, [x, ms, x], fn="mul", groups=heads)
    b.op(t.BinaryOp, [x, gain, x], fn="mul")
    b.release(ms)


def lower(b: RegionBuilder, k: AttentionKernel, ctx: LowerCtx, phase: str) -> None:
    H, KV, hd = dims(k)
    R, C = b.grid
    hq, hk = H // C, KV // C
    q_lay, kv_lay, o_lay, c_lay = layouts(k, b.grid, ctx, phase)
    dt = ctx.dtype
    # persistent state, declared identically by both phases
    kc = b.buffer("k_cache", c_lay.tile, dt, layout=c_lay, persistent=True)
    vc = b.buffer("v_cache", c_lay.tile, dt, layout=c_lay, persistent=True)
    inv = None
    if k.rope_inv_freq is not None:
        lay = Layout((1, hd // 2), b.grid, REPLICATED, REPLICATED)
        inv = b.weight("inv_freq", lay, "f32", ctx.matrix(k.rope_inv_freq.data))
    gains = head_norm_gains(b, k, ctx, hq, hk)

    q = b.buffer("q", q_lay.tile, dt, layout=q_lay)
    kk = b.buffer("k", kv_lay.tile, dt, layout=kv_lay)
    v = b.buffer("v", kv_lay.tile, dt, layout=kv_lay)
    for i, buf in enumerate((q, kk, v)):
        b.recv(buf, ("input", i))
    for buf, gain, heads in ((q, gains[0], hq), (kk, gains[1], hk)):
        if gain is not None:
            head_rms_norm(b, buf, q_lay.tile[0], gain, heads, hd, k.qk_norm_eps.value.data)
    if inv is not None:
        scaling = k.rope_scaling.value.data if k.rope_scaling is not None else 1.0
        # q and k rows are laid out alike: one set of angles serves both
        cs = b.buffer("rope_cs", (q_lay.tile[0], hd), "f32")
        b.op(t.RopeAnglesOp, [q, inv, cs], scaling=scaling)
        b.op(t.RopeOp, [q, cs], heads=hq, head_dim=hd)
        b.op(t.RopeOp, [kk, cs], heads=hk, head_dim=hd)
        b.release(cs)

    rows = q_lay.tile[0]
    m = b.buffer("m", (rows, hq), "f32")
    l = b.buffer("l", (rows, hq), "f32")  # noqa: E741
    acc = b.buffer("acc", (rows, hq * hd), "f32", layout=o_lay)
    b.op(t.FillOp, [m], value=M_INIT)
    b.op(t.FillOp, [l], value=0.0)
    b.op(t.FillOp, [acc], value=0.0)
    attend = dict(heads=hq, kv_heads=hk, head_dim=hd, scale=k.scale.value.data,
                  causal=k.causal is not None,
                  window=k.window.value.data if k.window is not None else None)
    b.op(t.KvWriteOp, [kk, kc])
    b.op(t.KvWriteOp, [v, vc])
    scores = b.scratch((rows, c_lay.tile[0]))  # one head's block of scores at a time
    if phase == "prefill":
        # K/V stay in the cache; the queries and their softmax state visit every row
        with b.loop(R):
            b.op(t.AttendOp, [q, kc, vc, m, l, acc, scores], **attend)
            if R > 1:
                for buf in (q, m, l, acc):
                    b.shift(buf, axis=0)
    else:
        b.op(t.AttendOp, [q, kc, vc, m, l, acc, scores], **attend)
        b.attn_merge(m, l, acc, axis=0, heads=hq, head_dim=hd)

    def finish(dst) -> None:
        b.op(t.AttnFinishOp, [acc, l, dst], heads=hq, head_dim=hd)

    for i, res in enumerate(lower_result(b, k, ctx, o_lay, finish, core_name="o")):
        b.send(res, i)
