"""Local compute ops: one small implementation per `wsc.tile` op, with its cost.

Each `compile_*` turns an op into an `Instr` once, when the bundle is loaded: attribute
values are read out of the IR up front so that executing the program touches only numpy.
Every implementation runs on a whole region at once: a buffer's view is `[rows, cols, *dims]`
and numpy broadcasts over the PE axes (DESIGN §8, "region-vectorized"). Arithmetic is fp32;
stores round to the buffer's dtype, as the PE's fp16/bf16 storage would.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np
from xdsl.ir import Operation

from wsc.errors import SimulationError
from wsc.ir import tile as t
from wsc.runtime_sim.frame import Frame, Instr
from wsc.runtime_sim.memory import NP_DTYPES, roll2

COMPILERS: dict[type[Operation], Callable[[Operation], Instr]] = {}


def compiles(op_type: type[Operation]):
    def register(fn):
        COMPILERS[op_type] = fn
        return fn

    return register


def _f(attr) -> float:
    return float(attr.value.data)


def _i(attr) -> int:
    return int(attr.value.data)


def _n(frame: Frame, v) -> int:
    return math.prod(frame.buf(v).dims)


# --- elementwise functions (fp32) -----------------------------------------------------

_erf = np.frompyfunc(math.erf, 1, 1)


def _erf32(x: np.ndarray) -> np.ndarray:
    return _erf(x.astype(np.float64)).astype(np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


_SQRT_2_OVER_PI = np.float32(math.sqrt(2.0 / math.pi))

UNARY = {
    "neg": np.negative,
    "exp": np.exp,
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
    "rsqrt": lambda x: (1.0 / np.sqrt(x)).astype(np.float32),
    "sqrt": np.sqrt,
    "relu": lambda x: np.maximum(x, np.float32(0)),
    "silu": lambda x: x * _sigmoid(x),
    "erf": _erf32,
    "cos": np.cos,
    "sin": np.sin,
    "reciprocal": lambda x: (1.0 / x).astype(np.float32),
    "gelu": lambda x: (0.5 * x * (1.0 + _erf32(x / np.float32(math.sqrt(2.0))))).astype(np.float32),
    "gelu_tanh": lambda x: (
        0.5 * x * (1.0 + np.tanh(_SQRT_2_OVER_PI * (x + np.float32(0.044715) * x * x * x)))
    ).astype(np.float32),
    "identity": lambda x: x,
}

BINARY = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": np.divide,
    "pow": np.power,
    "maximum": np.maximum,
    "minimum": np.minimum,
}


def _elementwise_cost(frame: Frame, out, fn: str, reads: int, src) -> float:
    n = _n(frame, out)
    return frame.cost.elementwise(
        n, frame.buf(src).dtype, reads=reads, transcendental=fn in t.TRANSCENDENTAL_FNS,
        out_dtype=frame.buf(out).dtype,
    )


@compiles(t.UnaryOp)
def compile_unary(op: t.UnaryOp) -> Instr:
    fn, x, y = op.fn.data, op.x, op.y
    f = UNARY[fn]

    def run(fr: Frame) -> None:
        fr.buf(y).store(f(fr.buf(x).f32()))

    return Instr(op, "compute", run, lambda fr: _elementwise_cost(fr, y, fn, 1, x), (x,), (y,))


@compiles(t.BinaryOp)
def compile_binary(op: t.BinaryOp) -> Instr:
    fn, x, y, z = op.fn.data, op.x, op.y, op.z
    f = BINARY[fn]
    groups = _i(op.groups) if op.groups is not None else 0

    def run(fr: Frame) -> None:
        a, b = fr.buf(x).f32(), fr.buf(y).f32()
        if groups:  # y holds one column per group of x's columns
            a = a.reshape(*a.shape[:-1], groups, -1)
            fr.buf(z).store(f(a, b[..., None]).reshape(*a.shape[:-2], -1))
        else:
            fr.buf(z).store(f(a, b))

    return Instr(op, "compute", run, lambda fr: _elementwise_cost(fr, z, fn, 2, x), (x, y), (z,))


@compiles(t.ScalarOp)
def compile_scalar(op: t.ScalarOp) -> Instr:
    fn, x, y = op.fn.data, op.x, op.y
    f, value, reverse = BINARY[fn], np.float32(_f(op.value)), op.reverse is not None

    def run(fr: Frame) -> None:
        a = fr.buf(x).f32()
        fr.buf(y).store(f(value, a) if reverse else f(a, value))

    return Instr(op, "compute", run, lambda fr: _elementwise_cost(fr, y, fn, 1, x), (x,), (y,))


@compiles(t.FillOp)
def compile_fill(op: t.FillOp) -> Instr:
    dst, value = op.dst, _f(op.value)

    def run(fr: Frame) -> None:
        fr.buf(dst).view[...] = value

    # every element is `value` in the buffer's dtype: whether that is finite is known now
    stored = np.asarray(value).astype(NP_DTYPES[t.buffer_of(dst).dtype_str])
    return Instr(op, "compute", run, lambda fr: fr.cost.fill(fr.buf(dst).nbytes), (), (dst,),
                 computes=not bool(np.isfinite(stored)))


@compiles(t.CopyOp)
def compile_copy(op: t.CopyOp) -> Instr:
    src, dst = op.src, op.dst
    off = _i(op.row_offset) if op.row_offset is not None else 0

    def run(fr: Frame) -> None:
        s, d = fr.buf(src), fr.buf(dst)
        rows = s.dims[0]
        if off + rows > d.dims[0]:
            raise SimulationError(
                f"copy of {rows} rows at row {off} into {d.name} of {d.dims[0]} rows"
            )
        d.view[:, :, off : off + rows] = s.view.astype(d.view.dtype)

    return Instr(op, "compute", run,
                 lambda fr: fr.cost.elementwise(_n(fr, src), fr.buf(src).dtype, reads=1,
                                                out_dtype=fr.buf(dst).dtype),
                 (src,), (dst,))


@compiles(t.SwapOp)
def compile_swap(op: t.SwapOp) -> Instr:
    a, b = op.a, op.b

    def run(fr: Frame) -> None:
        fr.buf(a).swap_storage(fr.buf(b))

    return Instr(op, "swap", run, lambda fr: 0)


# --- matrix products ------------------------------------------------------------------


@compiles(t.MatmulOp)
def compile_matmul(op: t.MatmulOp) -> Instr:
    a, b, c = op.a, op.b, op.c
    acc, tb = op.accumulate is not None, op.transpose_b is not None

    def run(fr: Frame) -> None:
        # In the frame of the resident operand `b` (memory.py): its storage is used as it lies,
        # the small `a` and `c` rotate to meet it, and `c` keeps that frame.
        bb, cb = fr.buf(b), fr.buf(c)
        frame = bb.perm
        A = _in_frame(fr, fr.buf(a), frame)
        B = bb.src.f32()
        B = np.swapaxes(B, -1, -2) if tb else B
        fr.release(cb)
        if cb.dtype == "f32":
            prod = np.matmul(A, B)
            out = _in_frame(fr, cb, frame) + prod if acc else prod
        else:
            # a narrow accumulator rounds after every multiply-add, one rank-1 update at a
            # time (the product of two fp16 values is exact in fp32: the FMA's one rounding)
            out = _in_frame(fr, cb, frame) if acc else np.zeros(cb.view.shape, np.float32)
            for i in range(A.shape[-1]):
                out = (out + A[..., :, i:i + 1] * B[..., i:i + 1, :]).astype(cb.view.dtype).astype(np.float32)
        cb.view[...] = out
        cb.src, cb.perm = cb.home, frame
        cb.home.touch()

    def cycles(fr: Frame) -> float:
        m, k = fr.buf(a).dims[-2:]
        n = fr.buf(b).dims[-2] if tb else fr.buf(b).dims[-1]
        return fr.cost.matmul(m, k, n, fr.buf(a).dtype, fr.buf(c).dtype)

    return Instr(op, "compute", run, cycles, (a, b, c), (c,), lazy=True)


def _in_frame(fr: Frame, x, frame: tuple[int, int]) -> np.ndarray:
    """`x`'s contents as fp32, laid out in the frame of a buffer rotated by `frame`."""
    R, C = fr.grid
    d = ((x.perm[0] - frame[0]) % R, (x.perm[1] - frame[1]) % C)
    return roll2(x.src.f32(), d)


# --- reductions -----------------------------------------------------------------------


def _valid_mask(fr: Frame, v, shape) -> np.ndarray | None:
    """`[R, C, m, n]` mask of real (non-padding) elements of `v`, from its layout."""
    b = fr.buf(v)
    if b.layout is None:
        return None
    rows = b.layout.valid(0, b.rot)[:, :, :, None]
    cols = b.layout.valid(1, b.rot)[:, :, None, :]
    return np.broadcast_to(rows & cols, shape)


@compiles(t.ReduceOp)
def compile_reduce(op: t.ReduceOp) -> Instr:
    x, y, fn, dim = op.x, op.y, op.fn.data, _i(op.dim)
    groups = _i(op.groups) if op.groups is not None else 1

    def run(fr: Frame) -> None:
        a = fr.buf(x).f32()
        mask = _valid_mask(fr, x, a.shape)
        if fn == "max":
            a, reduce = (a if mask is None else np.where(mask, a, -np.inf)), np.max
        else:
            a = a * a if fn == "sumsq" else a
            a, reduce = (a if mask is None else np.where(mask, a, 0)), np.sum
        if groups > 1:  # one result per group of columns: [R, C, rows, groups]
            out = reduce(a.reshape(*a.shape[:-1], groups, -1), axis=-1)
        else:
            out = reduce(a, axis=2 + dim, keepdims=True)
        fr.buf(y).store(out)

    def cycles(fr: Frame) -> float:
        b = fr.buf(x)
        if fn == "sumsq":  # each line dotted with itself: FMACs at the operands' dtype rate
            k = b.dims[dim] // groups
            return fr.cost.matmul(_n(fr, x) // max(k, 1), k, 1, b.dtype)
        return fr.cost.elementwise(_n(fr, x), b.dtype, reads=1)

    return Instr(op, "compute", run, cycles, (x,), (y,))


# --- embeddings and positions ---------------------------------------------------------


@compiles(t.GatherOp)
def compile_gather(op: t.GatherOp) -> Instr:
    table, ids, out = op.table, op.ids, op.out
    acc = op.accumulate is not None

    def run(fr: Frame) -> None:
        tb, ib, ob = fr.buf(table), fr.buf(ids), fr.buf(out)
        lay = fr.layout(table)
        rows = lay.global_index(0, tb.rot)  # [R, C, tv] global vocab row of each local row
        first, tv = rows[:, :, :1], rows.shape[-1]  # blocked: contiguous from `first`
        idx = ib.view[..., 0].astype(np.int64)  # [R, C, tq]
        local = idx - first
        hit = (local >= 0) & (local < tv) & (idx < lay.shape[0])
        # the rows read, as stored, then converted (not the whole table: it is the largest
        # buffer of the model)
        got = np.take_along_axis(tb.contents(), np.clip(local, 0, tv - 1)[..., None], axis=2)
        got = np.where(hit[..., None], got.astype(np.float32), np.float32(0))
        ob.store(ob.f32() + got if acc else got)

    def cycles(fr: Frame) -> float:
        tq, d = fr.buf(out).dims
        # one row copy (a vector instruction over d elements) per token
        return tq * fr.cost.elementwise(d, fr.buf(table).dtype, reads=1)

    return Instr(op, "compute", run, cycles, (table, ids, out), (out,))


@compiles(t.PositionsOp)
def compile_positions(op: t.PositionsOp) -> Instr:
    dst = op.dst

    def run(fr: Frame) -> None:
        b = fr.buf(dst)
        pos = fr.pos0 + fr.layout(dst).global_index(0, b.rot)  # [R, C, t]
        b.view[...] = pos[..., None]

    return Instr(op, "compute", run, lambda fr: fr.cost.fill(4 * _n(fr, dst)), (), (dst,))


# --- rotary embedding -----------------------------------------------------------------


@compiles(t.RopeAnglesOp)
def compile_rope_angles(op: t.RopeAnglesOp) -> Instr:
    x, inv, cs = op.x, op.inv_freq, op.cs
    scaling = np.float32(_f(op.scaling))

    def run(fr: Frame) -> None:
        b = fr.buf(x)
        pos = (fr.pos0 + fr.layout(x).global_index(0, b.rot)).astype(np.float32)  # [R, C, t]
        freqs = pos[..., None] * fr.buf(inv).f32()[:, :, 0, None, :]  # [R, C, t, d/2]
        fr.buf(cs).store(np.concatenate([np.cos(freqs) * scaling, np.sin(freqs) * scaling], -1))

    def cycles(fr: Frame) -> float:  # a cos and a sin per angle
        return fr.cost.elementwise(_n(fr, cs), "f32", reads=1, transcendental=True)

    return Instr(op, "compute", run, cycles, (x, inv), (cs,))


@compiles(t.RopeOp)
def compile_rope(op: t.RopeOp) -> Instr:
    x, cs = op.x, op.cs
    heads, hd = _i(op.heads), _i(op.head_dim)

    def run(fr: Frame) -> None:
        b = fr.buf(x)
        c, s = np.split(fr.buf(cs).f32(), 2, axis=-1)  # [R, C, t, d/2] each
        cos = np.concatenate([c, c], axis=-1)[:, :, :, None, :]
        sin = np.concatenate([s, s], axis=-1)[:, :, :, None, :]
        v = b.f32().reshape(*b.view.shape[:3], heads, hd)
        rot = np.concatenate([-v[..., hd // 2:], v[..., : hd // 2]], axis=-1)
        b.store((v * cos + rot * sin).reshape(b.view.shape))

    def cycles(fr: Frame) -> float:  # x * cos, rotate-half * sin, their sum
        b = fr.buf(x)
        return 3 * fr.cost.elementwise(_n(fr, x), b.dtype, reads=2)

    return Instr(op, "compute", run, cycles, (x, cs), (x,))


# --- attention ------------------------------------------------------------------------


def _heads(a: np.ndarray, h: int) -> np.ndarray:
    """`[R, C, t, h*d]` -> `[R, C, h, t, d]`."""
    r, c, n, f = a.shape
    return a.reshape(r, c, n, h, f // h).transpose(0, 1, 3, 2, 4)


def _merge_heads(a: np.ndarray) -> np.ndarray:
    r, c, h, n, d = a.shape
    return a.transpose(0, 1, 3, 2, 4).reshape(r, c, n, h * d)


def live_keys(fr: Frame, qb, kb, causal: bool) -> int:
    """How many of the local key slots (`kb`'s rows) any query can read: keys past the last
    query position are never read (causal attention over a KV cache), nor padding slots
    past the cache, so they are left out as the cost model leaves them out (they would
    only be masked to exactly zero weight). Slots hold increasing positions (a blocked or
    cyclic layout), so the live ones are a prefix."""
    klay = kb.layout
    limit = klay.shape[0]
    if causal:
        limit = min(limit, fr.pos0 + qb.layout.shape[0])
    return _live(klay, kb.rot, limit)


@lru_cache(maxsize=4096)
def _live(klay, rot: tuple[int, int], limit: int) -> int:
    return max(1, int((klay.global_index(0, rot) < limit).sum(axis=-1).max()))


def key_mask(qpos: np.ndarray, kpos: np.ndarray, kv_len: int, causal: bool,
             window: int) -> np.ndarray:
    """`[..., R, C, 1, tq, tk]`: which keys (positions `kpos` `[..., R, C, tk]`) each query
    (positions `qpos` `[R, C, tq]`) reads: real keys, not after it (causal), inside its
    window."""
    ok = (kpos < kv_len)[..., None, None, :]
    if causal:
        ok = ok & (kpos[..., None, None, :] <= qpos[..., None, :, None])
    if window:
        ok = ok & (kpos[..., None, None, :] > qpos[..., None, :, None] - window)
    return ok


def head_scores(Q: np.ndarray, K: np.ndarray) -> np.ndarray:
    """`Q [..., h, tq, d]` against `K [..., kvh, tk, d]` -> `[..., h, tq, tk]`; query head
    `i` reads kv head `i // (h // kvh)` (grouped-query attention, without copying K)."""
    *lead, h, tq, d = Q.shape
    kvh, tk = K.shape[-3], K.shape[-2]
    s = Q.reshape(*lead, kvh, (h // kvh) * tq, d) @ np.swapaxes(K, -1, -2)
    return s.reshape(*lead, h, tq, tk)


def online_softmax_step(s: np.ndarray, V: np.ndarray, M: np.ndarray, L: np.ndarray,
                        A: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fold one block of (masked, scaled) scores `s [..., h, tq, tk]` with values
    `V [..., kvh, tk, d]` into the online-softmax state `M, L [..., h, tq]`,
    `A [..., h, tq, d]`."""
    m_new = np.maximum(M, s.max(axis=-1))
    p = np.exp(s - m_new[..., None])  # masked scores give exactly 0
    alpha = np.exp(M - m_new)
    return m_new, alpha * L + p.sum(axis=-1), alpha[..., None] * A + weighted_values(p, V)


def weighted_values(p: np.ndarray, V: np.ndarray) -> np.ndarray:
    """`p [..., h, tq, tk] @ V [..., kvh, tk, d]` per head (query head `i` reads kv head
    `i // (h // kvh)`) -> `[..., h, tq, d]`."""
    *lead, h, tq, tk = p.shape
    kvh = V.shape[-3]
    pv = p.reshape(*lead, kvh, (h // kvh) * tq, tk) @ V
    return pv.reshape(*lead, h, tq, V.shape[-1])


@compiles(t.AttendOp)
def compile_attend(op: t.AttendOp) -> Instr:
    q, k, v, m, l, acc, scores = op.q, op.k, op.v, op.m, op.l, op.acc, op.scores
    heads, kvh, hd = _i(op.heads), _i(op.kv_heads), _i(op.head_dim)
    scale, causal = np.float32(_f(op.scale)), op.causal is not None
    window = _i(op.window) if op.window is not None else 0

    def run(fr: Frame) -> None:
        qb, kb, vb = fr.buf(q), fr.buf(k), fr.buf(v)
        klay = fr.layout(k)
        fr.layout(q)
        tk = live_keys(fr, qb, kb, causal)
        Q = _heads(qb.f32(), heads)  # [R, C, h, tq, d]
        K = _heads(kb.f32_rows(tk), kvh)  # [R, C, kvh, tk, d]
        V = _heads(vb.f32_rows(tk), kvh)
        s = head_scores(Q, K) * scale
        qpos = fr.pos0 + qb.layout.global_index(0, qb.rot)  # [R, C, tq]
        kpos = klay.global_index(0, kb.rot)[:, :, :tk]  # [R, C, tk]
        s = np.where(key_mask(qpos, kpos, klay.shape[0], causal, window), s, -np.inf)
        M, L, A = fr.buf(m).f32(), fr.buf(l).f32(), fr.buf(acc).f32()
        m_new, l_new, a_new = online_softmax_step(
            s, V, M.transpose(0, 1, 3, 2), L.transpose(0, 1, 3, 2), _heads(A, heads))
        fr.buf(m).store(m_new.transpose(0, 1, 3, 2))
        fr.buf(l).store(l_new.transpose(0, 1, 3, 2))
        fr.buf(acc).store(_merge_heads(a_new))

    def cycles(fr: Frame) -> float:
        tq = fr.buf(q).dims[0]
        tk = fr.buf(k).dims[0]
        ql, kl = fr.buf(q).layout, fr.buf(k).layout
        if ql is not None and kl is not None:
            # keys past the last query position are never read (decode over a KV cache)
            live = min(kl.shape[0], fr.pos0 + ql.shape[0])
            tk = min(tk, -(-live // kl.rows.parts))
        dt = fr.buf(q).dtype
        per_head = (
            fr.cost.matmul(tq, hd, tk, dt)  # scores
            + fr.cost.elementwise(tq * tk, "f32", reads=1, transcendental=True)  # exp
            + fr.cost.matmul(tq, tk, hd, dt)  # p @ v
            + 2 * fr.cost.elementwise(tq * hd, "f32", reads=2)  # rescale acc, update l
        )
        return heads * per_head

    return Instr(op, "compute", run, cycles, (q, k, v, m, l, acc, scores), (m, l, acc, scores))


@compiles(t.AttnFinishOp)
def compile_attn_finish(op: t.AttnFinishOp) -> Instr:
    acc, l, out = op.acc, op.l, op.out
    heads = _i(op.heads)

    # One reciprocal per (row, head), then a vector multiply: the division is not per element.
    def run(fr: Frame) -> None:
        A = _heads(fr.buf(acc).f32(), heads)
        L = fr.buf(l).f32().transpose(0, 1, 3, 2)[..., None]
        inv = np.float32(1) / np.where(L > 0, L, np.float32(1))
        fr.buf(out).store(_merge_heads(np.where(L > 0, A * inv, np.float32(0))))

    def cycles(fr: Frame) -> float:
        return (fr.cost.elementwise(_n(fr, l), "f32", reads=1, transcendental=True)
                + fr.cost.elementwise(_n(fr, acc), "f32", reads=2))

    return Instr(op, "compute", run, cycles, (acc, l), (out,))


@compiles(t.KvWriteOp)
def compile_kv_write(op: t.KvWriteOp) -> Instr:
    src, cache = op.src, op.cache

    def run(fr: Frame) -> None:
        sb, cb = fr.buf(src), fr.buf(cache)
        slay, clay = fr.layout(src), fr.layout(cache)
        rows = fr.grid[0]
        g = slay.gather(sb.view, sb.rot)  # [n, F]: the rows to write, at pos0 + i
        last = fr.pos0 + g.shape[0] - 1
        if last >= clay.shape[0] or last // rows >= cb.dims[0]:
            raise SimulationError(
                f"KV cache of region {fr.region} is full: position {last} >= max_seq "
                f"{clay.shape[0]}", hint="recompile with a larger --max-seq")
        parts, tc = clay.cols.parts, clay.tile[1]
        padded = np.zeros((g.shape[0], parts * tc), dtype=cb.view.dtype)
        padded[:, : g.shape[1]] = g
        blocks = padded.reshape(g.shape[0], parts, tc)  # column block b goes to PE column b
        cols = clay.blocks()[1][0]  # [C]: the column block each PE column holds
        for i in range(g.shape[0]):
            p = fr.pos0 + i
            cb.view[p % rows, :, p // rows] = blocks[i, cols]

    def cycles(fr: Frame) -> float:
        sb, cb = fr.buf(src), fr.buf(cache)
        rows = fr.grid[0]
        slay = sb.layout
        aligned = (slay is not None and slay.rows.cyclic and slay.rows.parts == rows
                   and fr.pos0 % rows == 0)
        if aligned or rows == 1:  # every row is already on its PE: a local copy
            return fr.cost.elementwise(math.prod(sb.dims), sb.dtype, reads=1, out_dtype=cb.dtype)
        # entries enter at row 0 and are shifted down to their row, pipelined
        n = slay.shape[0] if slay is not None else 1
        row_bytes = cb.nbytes // cb.dims[0]
        hops = min(rows - 1, (fr.pos0 + n - 1) % rows if n == 1 else rows - 1)
        return fr.cost.stream(row_bytes * n, hops)

    return Instr(op, "fabric", run, cycles, (src, cache), (cache,))


@compiles(t.AdvanceOp)
def compile_advance(op: t.AdvanceOp) -> Instr:
    n = _i(op.tokens)

    def run(fr: Frame) -> None:
        fr.pos0 += n

    ins = Instr(op, "advance", run, lambda fr: 0.0)
    return ins
