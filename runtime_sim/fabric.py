"""Fabric ops: collectives inside a region and transfers between regions.

Inside a region, a collective along mesh axis 0 (rows) or 1 (cols) is an array operation along
that PE axis of the region's `[rows, cols, ...]` buffers: a ring shift is `numpy.roll`, an
all-reduce is a reduction with `keepdims` broadcast back. Between regions, `send` gathers the
global matrix a buffer holds (per its layout and rotation) and `recv` scatters a window of it
into the receiver's buffer per *its* layout: any layout change is the transfer's job, costed as
traffic like any other (DESIGN §4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from wsc.errors import SimulationError
from wsc.ir import tile as t
from wsc.ir.attrs import get_ints
from wsc.runtime_sim.frame import Frame, Instr
from wsc.runtime_sim.ops import _heads, _i, _merge_heads, compiles


@compiles(t.ShiftOp)
def compile_shift(op: t.ShiftOp) -> Instr:
    src, dst = op.src, op.dst
    axis, by, inter = _i(op.axis), _i(op.by), op.interleaved is not None

    def run(fr: Frame) -> None:
        s = fr.buf(src)
        d = fr.buf(dst) if dst is not None else s
        n = fr.grid[axis]
        moved = np.roll(s.view, by, axis=axis)
        rot = list(s.rot)
        rot[axis] = (rot[axis] + by) % n
        d.view[...] = moved
        d.rot = (rot[0], rot[1])

    def cycles(fr: Frame) -> float:
        return fr.cost.shift(fr.buf(src).nbytes, fr.grid[axis], interleaved=inter)

    kind = "async" if dst is not None else "fabric"
    writes = (dst,) if dst is not None else (src,)
    return Instr(op, kind, run, cycles, (src,), writes)


@compiles(t.AllReduceOp)
def compile_allreduce(op: t.AllReduceOp) -> Instr:
    buf, axis, fn, levels = op.buf, _i(op.axis), op.fn.data, _i(op.levels)

    def run(fr: Frame) -> None:
        b = fr.buf(buf)
        a = b.f32()
        b.store((a.sum if fn == "sum" else a.max)(axis=axis, keepdims=True))

    def cycles(fr: Frame) -> float:
        n = fr.grid[axis]
        if n <= 1:
            return 0
        elems = math.prod(fr.buf(buf).dims)
        # partial sums travel and are added in fp32, once per tree level
        adds = fr.cost.elementwise(elems, "f32", reads=2) * levels
        return fr.cost.allreduce(4 * elems, n, levels) + adds

    return Instr(op, "fabric", run, cycles, (buf,), (buf,))


@compiles(t.AttnMergeOp)
def compile_attn_merge(op: t.AttnMergeOp) -> Instr:
    m, l, acc = op.m, op.l, op.acc
    axis, heads, levels = _i(op.axis), _i(op.heads), _i(op.levels)

    def run(fr: Frame) -> None:
        M, L, A = fr.buf(m).f32(), fr.buf(l).f32(), fr.buf(acc).f32()
        top = M.max(axis=axis, keepdims=True)
        w = np.exp(M - top)  # [R, C, t, h]
        l_all = (L * w).sum(axis=axis, keepdims=True)
        Ah = _heads(A, heads)  # [R, C, h, t, d]
        wh = w.transpose(0, 1, 3, 2)[..., None]
        a_all = (Ah * wh).sum(axis=axis, keepdims=True)
        shape = M.shape
        fr.buf(m).store(np.broadcast_to(top, shape))
        fr.buf(l).store(np.broadcast_to(l_all, shape))
        fr.buf(acc).store(np.broadcast_to(_merge_heads(a_all), A.shape))

    def cycles(fr: Frame) -> float:
        n = fr.grid[axis]
        if n <= 1:
            return 0
        nbytes = sum(fr.buf(v).nbytes for v in (m, l, acc))
        # per level: rescale factors exp(m_i - max), then weighted sums of l and acc
        merge = fr.cost.elementwise(math.prod(fr.buf(m).dims), "f32", reads=2, transcendental=True)
        merge += fr.cost.elementwise(math.prod(fr.buf(acc).dims), "f32", reads=2)
        return fr.cost.allreduce(nbytes, n, levels) + merge * levels

    return Instr(op, "fabric", run, cycles, (m, l, acc), (m, l, acc))


# --- channels -------------------------------------------------------------------------


@dataclass
class Message:
    """What travels over a channel: the sender's global matrix (or only its size when
    estimating), and when its last wavelet arrives."""

    data: np.ndarray | None
    shape: tuple[int, int]
    arrival: float
    path: tuple[float, float, float] = (0.0, 0.0, 0.0)  # critical path to `arrival`


@compiles(t.SendOp)
def compile_send(op: t.SendOp) -> Instr:
    src = op.src

    def run(fr: Frame) -> None:  # the scheduler calls pack() instead
        raise AssertionError

    ins = Instr(op, "send", run, lambda fr: 0.0, (src,), (), channel=op.channel.data)
    return ins


def pack(fr: Frame, ins: Instr) -> np.ndarray | None:
    b = fr.buf(ins.reads[0])
    if b.layout is None:
        raise SimulationError(f"region {fr.region}: sent buffer {b.name} has no layout")
    if not fr.functional:
        return None
    return b.layout.gather(b.view, b.rot)


@compiles(t.RecvOp)
def compile_recv(op: t.RecvOp) -> Instr:
    dst = op.dst
    window = get_ints(op.window) if op.window is not None else None

    def run(fr: Frame) -> None:
        raise AssertionError

    ins = Instr(op, "recv", run, lambda fr: 0.0, (), (dst,), channel=op.channel.data)
    ins.label = "" if window is None else ",".join(map(str, window))
    return ins


def unpack(fr: Frame, ins: Instr, msg: Message) -> None:
    b = fr.buf(ins.writes[0])
    if b.layout is None:
        raise SimulationError(f"region {fr.region}: received buffer {b.name} has no layout")
    if not fr.functional:
        return
    g = msg.data
    if ins.label:
        r0, r1, c0, c1 = (int(x) for x in ins.label.split(","))
        g = g[r0:r1, c0:c1]
    if tuple(g.shape) != b.layout.shape:
        raise SimulationError(
            f"region {fr.region}: {ins.op.name} on channel {ins.channel} received "
            f"{tuple(g.shape)}, buffer {b.name} expects {b.layout.shape}"
        )
    b.view[...] = b.layout.scatter(g.astype(b.view.dtype))
    b.rot = (0, 0)
