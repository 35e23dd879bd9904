"""Fabric ops inside a region: ring shifts and tree collectives along a mesh axis.

A region's buffers are `[rows, cols, ...]` arrays, so a collective along mesh axis 0 (rows) or
1 (cols) is an array operation along that PE axis. A shift is a rotation (`numpy.roll`), into a
second buffer or, in place, through the staging buffer the op declares. An all-reduce runs as
the partial sums its tree describes (`tree_phases`, centre-rooted, as the cost model charges
it): each group's partials flow from both ends into the PE in its middle, combined in fp32 one
neighbour at a time in that order, the next level does the same over the group roots, and the
last root's result is broadcast back to every PE of the line. `attn_merge` is the same tree with
the log-sum-exp merge of online-softmax states. Transfers between regions are channels.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from wsc.ir import tile as t
from wsc.machine.cost import tree_phases
from wsc.runtime_sim.frame import Frame, Instr
from wsc.runtime_sim.ops import _i, compiles

State = tuple[np.ndarray, ...]
Combine = Callable[[State, State], State]


@compiles(t.ShiftOp)
def compile_shift(op: t.ShiftOp) -> Instr:
    src, dst, staging = op.src, op.dst, op.staging
    axis, by, inter = _i(op.axis), _i(op.by), op.interleaved is not None

    def run(fr: Frame) -> None:  # lazily (memory.py): the contents rotate, no bytes are copied
        s = fr.buf(src)
        d = fr.buf(dst) if dst is not None else s  # in place, staging holds bytes in flight
        rot, perm = list(s.rot), list(s.perm)
        rot[axis] = (rot[axis] + by) % fr.grid[axis]
        perm[axis] = (perm[axis] + by) % fr.grid[axis]
        d.src, d.perm, d.rot = s.src, (perm[0], perm[1]), (rot[0], rot[1])

    def cycles(fr: Frame) -> float:
        # in place or not, the buffer streams at the link rate; an in-place shift writes each
        # byte twice (into staging, then home), which the 8-byte write port absorbs at 4 bytes
        # of link per cycle
        return fr.cost.shift(fr.buf(src).nbytes, fr.grid[axis], interleaved=inter)

    kind = "async" if dst is not None else "fabric"
    reads = (src,) if dst is not None else (src, staging)
    writes = (dst,) if dst is not None else (src, staging)
    return Instr(op, kind, run, cycles, reads, writes, lazy=True, computes=False)


def tree_allreduce(state: State, axis: int, levels: int, combine: Combine,
                   identity: State) -> State:
    """Reduce `state` (arrays `[R, C, ...]`) along PE axis `axis` over the tree's levels and
    return the root's result, broadcast back over the axis."""
    n = state[0].shape[axis]
    line = [np.moveaxis(a, axis, 0) for a in state]  # [n, ...]
    for group, _stride in tree_phases(n, levels):
        m = -(-line[0].shape[0] // group)
        pad = m * group - line[0].shape[0]
        grouped = []
        for a, e in zip(line, identity):
            if pad:
                a = np.concatenate([a, np.broadcast_to(np.asarray(e, a.dtype), (pad, *a.shape[1:]))])
            grouped.append(a.reshape(m, group, *a.shape[1:]))
        c = group // 2  # the root in the middle of each group
        left = tuple(a[:, 0] for a in grouped) if c > 0 else None
        for i in range(1, c):
            left = combine(left, tuple(a[:, i] for a in grouped))  # type: ignore[arg-type]
        right = tuple(a[:, group - 1] for a in grouped) if group - 1 > c else None
        for i in range(group - 2, c, -1):
            right = combine(right, tuple(a[:, i] for a in grouped))  # type: ignore[arg-type]
        root = tuple(a[:, c] for a in grouped)
        if right is not None:
            root = combine(right, root)
        if left is not None:
            root = combine(left, root)
        line = list(root)
    out = []
    for a, ref in zip(line, state):
        out.append(np.broadcast_to(np.moveaxis(a, 0, axis), ref.shape))
    return tuple(out)


def _summer(dtype: np.dtype) -> Combine:
    """Add two partials, rounding to the buffer's dtype (an fp16 partial travels as fp16)."""
    if dtype == np.float32:
        return lambda a, b: (a[0] + b[0],)
    return lambda a, b: ((a[0] + b[0]).astype(dtype).astype(np.float32),)


def _max(a: State, b: State) -> State:
    return (np.maximum(a[0], b[0]),)


@compiles(t.AllReduceOp)
def compile_allreduce(op: t.AllReduceOp) -> Instr:
    buf, partner, axis, fn, levels = op.buf, op.partner, _i(op.axis), op.fn.data, _i(op.levels)

    def run(fr: Frame) -> None:
        b = fr.buf(buf)
        combine, identity = (_summer(b.view.dtype), 0.0) if fn == "sum" else (_max, -np.inf)
        (out,) = tree_allreduce((b.f32(),), axis, levels, combine, (identity,))
        b.store(out)

    def cycles(fr: Frame) -> float:
        # partials travel in the buffer's dtype and are added as they stream through each PE
        return fr.cost.allreduce(fr.buf(buf).nbytes, fr.grid[axis], levels)

    return Instr(op, "fabric", run, cycles, (buf, partner), (buf, partner))


def _lse_merge(heads: int) -> Combine:
    """Combine two online-softmax states (running max, sum, accumulator), per head."""
    def merge(a: State, b: State) -> State:
        (m1, l1, a1), (m2, l2, a2) = a, b
        m = np.maximum(m1, m2)
        # a state equal to the maximum weighs 1 (also when both are empty padding, -inf)
        w1 = np.where(m1 == m, np.float32(1), np.exp(m1 - m))
        w2 = np.where(m2 == m, np.float32(1), np.exp(m2 - m))
        shape = a1.shape
        acc = (a1.reshape(*shape[:-1], heads, -1) * w1[..., None]
               + a2.reshape(*shape[:-1], heads, -1) * w2[..., None])
        return (m, l1 * w1 + l2 * w2, acc.reshape(shape))

    return merge


@compiles(t.AttnMergeOp)
def compile_attn_merge(op: t.AttnMergeOp) -> Instr:
    m, l, acc, partner = op.m, op.l, op.acc, op.partner
    axis, heads, levels = _i(op.axis), _i(op.heads), _i(op.levels)
    merge = _lse_merge(heads)

    def run(fr: Frame) -> None:
        state = tuple(fr.buf(v).f32() for v in (m, l, acc))
        for v, out in zip((m, l, acc), tree_allreduce(state, axis, levels, merge,
                                                       (-np.inf, 0.0, 0.0))):
            fr.buf(v).store(out)

    def cycles(fr: Frame) -> float:
        nbytes = sum(fr.buf(v).nbytes for v in (m, l, acc))
        # each PE rescales by exp(m_i - max) before it can pass the merged state on
        step = fr.cost.elementwise(math.prod(fr.buf(m).dims), "f32", reads=2, transcendental=True)
        return fr.cost.allreduce(nbytes, fr.grid[axis], levels, step)

    return Instr(op, "fabric", run, cycles, (m, l, acc, partner), (m, l, acc, partner))


# --- channel endpoints (the scheduler runs them: channels.py) -----------------------------


@compiles(t.SendOp)
def compile_send(op: t.SendOp) -> Instr:
    def run(fr: Frame) -> None:  # the scheduler sends
        raise AssertionError

    return Instr(op, "send", run, lambda fr: 0.0, (op.src,), (), channel=op.channel.data)


@compiles(t.RecvOp)
def compile_recv(op: t.RecvOp) -> Instr:
    def run(fr: Frame) -> None:  # the scheduler receives
        raise AssertionError

    return Instr(op, "recv", run, lambda fr: 0.0, (op.fifo,), (op.dst,), channel=op.channel.data)
