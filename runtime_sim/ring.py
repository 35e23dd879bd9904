"""The flash-attention ring of a prefill, computed in one pass.

Prefill attention (passes/kernels/attention.py) is a loop of `rows` steps on a region whose rows
stripe the tokens: every step, each PE folds the cache entries it holds into the online-softmax
state `(m, l, acc)` of the queries it holds, then the queries and their state shift one row
around the ring. Simulated step by step that is `rows` small batched products, each over every
PE, plus the materialisation of four shifted buffers per step; but which keys a block of queries
meets at step `j` is known in advance (those of the row it has reached), so the simulator
computes every block of queries against every row's keys in one product per column of PEs,
then runs the online-softmax recurrence over the steps on whole arrays, in each query block's
own frame (the state travels with its queries). The loop's steps still run for their timing and
their shifts; their `attend` is skipped, and the final state is stored where the steps would
have left it.

The recurrence is the step's own (`ops.online_softmax_step`, same masking, same order of the
steps), so the only difference from the steps is the order of the fp32 additions inside a dot
product. (Batching the recurrence over the steps as well was tried and is slower: its arrays,
a copy of the values per step, are large enough that allocating them costs more than the
per-step calls it saves.) NaN/Inf is checked after every step of the recurrence, in the order the steps would
check it, and reported as the steps would report it.

This is done only for the loop the attention lowering emits: `attend` first, then in-place
shifts of the queries and of the three state buffers along the rows, all by the same amount,
with fp32 state buffers whose storage overlaps none of the operands. Anything else runs step by
step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wsc.errors import SimulationError
from wsc.ir import tile as t
from wsc.runtime_sim.frame import Frame, Instr
from wsc.runtime_sim.memory import Buffer, all_finite
from wsc.runtime_sim.ops import (
    _heads, _merge_heads, head_scores, key_mask, live_keys, online_softmax_step,
)

# the score blocks of one chunk of PE columns, at most (elements): bounds the memory
MAX_SCORES = 1 << 23


@dataclass(frozen=True)
class RingAttention:
    attend: Instr
    by: int  # how far the queries and their state shift along the rows every step


def recognize(body: list[Instr], count: int) -> RingAttention | None:
    """The attention ring this loop body is, or None."""
    if count < 2 or not body or not isinstance(body[0].op, t.AttendOp):
        return None
    att = body[0].op
    shifts = [i.op for i in body[1:]]
    if not all(isinstance(o, t.ShiftOp) and o.dst is None and o.axis.value.data == 0
               for o in shifts):
        return None
    moved = [o.src for o in shifts]
    if len(moved) != 4 or set(moved) != {att.q, att.m, att.l, att.acc}:
        return None
    bys = {o.by.value.data for o in shifts}
    if len(bys) != 1:
        return None
    return RingAttention(body[0], bys.pop())


def _storages(b: Buffer) -> set[int]:
    """Ids of the storages whose bytes `b`'s contents live in (its own and where it reads)."""
    out: set[int] = set()
    for s in (b.home, b.src):
        out.add(id(s))
        out.update(id(a) for a in s.aliases)
    return out


def applies(fr: Frame, ring: RingAttention) -> bool:
    """The run-time half of the check: layouts, dtypes, and no buffer sharing bytes with another."""
    op = ring.attend.op
    q, k, v, m, l, acc = (fr.buf(x) for x in (op.q, op.k, op.v, op.m, op.l, op.acc))
    if any(b.dtype != "f32" for b in (m, l, acc)) or None in (q.layout, k.layout):
        return False
    # what the steps write must not share bytes with anything the steps read or write
    written = [m, l, acc]
    for i, w in enumerate(written):
        others = [q, k, v] + written[:i] + written[i + 1:]
        mine: set[int] = {id(w.home), *(id(a) for a in w.home.aliases)}
        if any(mine & _storages(o) for o in others):
            return False
    return True


def compute(fr: Frame, ring: RingAttention, count: int, check: bool):
    """The state `(m, l, acc)` after the loop, in head form `[R, C, h, tq(, d)]`, each query
    block in its own frame (the PE row it started on)."""
    op = ring.attend.op
    heads, kvh = op.heads.value.data, op.kv_heads.value.data
    scale = np.float32(op.scale.value.data)
    causal, window = op.causal is not None, (op.window.value.data if op.window is not None else 0)
    qb, kb, vb = fr.buf(op.q), fr.buf(op.k), fr.buf(op.v)
    R, C = fr.grid
    tk = live_keys(fr, qb, kb, causal)
    Q = _heads(qb.f32(), heads)  # [R, C, h, tq, d], at the loop's start
    K = _heads(kb.f32_rows(tk), kvh)  # [R, C, kvh, tk, d]; the keys never move
    V = _heads(vb.f32_rows(tk), kvh)
    qpos = fr.pos0 + qb.layout.global_index(0, qb.rot)  # [R, C, tq]: travels with the queries
    kpos = kb.layout.global_index(0, kb.rot)[:, :, :tk]
    kv_len = kb.layout.shape[0]
    M = fr.buf(op.m).f32().transpose(0, 1, 3, 2)  # [R, C, h, tq]
    L = fr.buf(op.l).f32().transpose(0, 1, 3, 2)
    A = _heads(fr.buf(op.acc).f32(), heads)
    mask = None
    if check:
        acc = fr.buf(op.acc)
        valid = acc.layout.valid_mask(acc.rot) if acc.layout is not None else None
        mask = None if valid is None else _heads(valid, heads)
    tq, d = Q.shape[-2], Q.shape[-1]
    per_col = heads * (R * tq) * (R * tk)
    cols = max(1, min(C, MAX_SCORES // max(1, per_col)))
    out = [np.empty_like(M), np.empty_like(L), np.empty_like(A)]
    rows = np.arange(R)
    first_bad: tuple[int, int] | None = None  # (step, buffer: 0 m, 1 l, 2 acc, 3 scores)
    if check and not _finite(fr.buf(op.scores)):  # nothing writes it, the steps check it
        first_bad = (0, 3)
    for c0 in range(0, C, cols):
        cs = slice(c0, min(C, c0 + cols))
        n = cs.stop - cs.start
        # every query block a against every row b's keys: [n, kvh, g*R*tq] @ [n, kvh, d, R*tk]
        Qm = Q[:, cs].reshape(R, n, kvh, heads // kvh, tq, d).transpose(1, 2, 3, 0, 4, 5)
        Km = K[:, cs].transpose(1, 2, 0, 3, 4).reshape(n, kvh, R * tk, d)
        S = Qm.reshape(n, kvh, -1, d) @ np.swapaxes(Km, -1, -2)
        S = S.reshape(n, kvh, heads // kvh, R, tq, R, tk)
        Vc, kposc, qposc = V[:, cs], kpos[:, cs], qpos[:, cs]
        cmask = None if mask is None else mask[:, cs]
        m, l, a = M[:, cs], L[:, cs], A[:, cs]
        for j in range(count):
            if first_bad is not None and j > first_bad[0]:
                break  # an earlier step already failed: nothing after it is looked at
            b = (rows + j * ring.by) % R  # the row block a has reached at step j
            # s[a] = S[.., a, :, b[a], :] -> [R, n, kvh, g, tq, tk]
            s = S[:, :, :, rows, :, b, :].reshape(R, n, heads, tq, tk) * scale
            s = np.where(key_mask(qposc, kposc[b], kv_len, causal, window), s, -np.inf)
            m, l, a = online_softmax_step(s, Vc[b], m, l, a)
            if check:
                bad = _bad((m, l, a), cmask)
                if bad is not None:
                    if first_bad is None or (j, bad) < first_bad:
                        first_bad = (j, bad)
                    break
        out[0][:, cs], out[1][:, cs], out[2][:, cs] = m, l, a
    if first_bad is not None:
        b = fr.buf((op.m, op.l, op.acc, op.scores)[first_bad[1]])
        raise SimulationError(
            f"NaN/Inf first produced by {op.name} in region {fr.region} "
            f"(kernel {fr.kernel}), in buffer {b.name}")
    return tuple(out)


def _finite(b: Buffer) -> bool:
    return b.dtype not in ("f32", "f16", "bf16") or all_finite(b.src.view)


def _bad(state, acc_mask) -> int | None:
    """Which state buffer the steps' check would refuse first (m and l have no layout: every
    element counts; acc's padding lanes are don't-care), or None."""
    m, l, a = state
    if np.isfinite(m).all() and np.isfinite(l).all() and np.isfinite(a).all():
        return None
    for i, x in enumerate((m, l)):
        if not np.isfinite(x).all():
            return i
    bad = ~np.isfinite(a)
    if acc_mask is not None:
        bad &= acc_mask
    return 2 if bad.any() else None


def finish(fr: Frame, ring: RingAttention, count: int, state) -> None:
    """Store the final state where the steps would have left it: after `count` shifts the
    block that started on row `a` is on row `a + count * by`."""
    op = ring.attend.op
    R = fr.grid[0]
    m, l, a = state
    moved = (count * ring.by) % R
    for v, values in ((op.m, m.transpose(0, 1, 3, 2)), (op.l, l.transpose(0, 1, 3, 2)),
                      (op.acc, _merge_heads(a))):
        b = fr.buf(v)
        fr.claim(b)
        b.view[...] = np.roll(values, moved, axis=0) if moved else values
        b.home.touch()
    fr.claim(fr.buf(op.scores))  # as the steps' writes would
    fr.buf(op.scores).home.touch()

