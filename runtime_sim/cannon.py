"""The product of a Cannon loop, computed once.

A Cannon GEMM on a `P x P` region is a loop of `P` steps, each multiplying the blocks a PE holds
into its accumulator and then shifting the activations one PE left and the weights one PE up.
Its data movement is cheap to simulate (memory.py moves it lazily), but its `P` steps of tiny
per-PE products are not: numpy multiplies a batch of 3x7 by 7x27 blocks at a fraction of a
percent of its speed on one large product. Over the whole loop every PE `(r, c)` sums
`X[r, j] @ W[j, c]` over all `j` — block `(r, c)` of `X @ W` — so the simulator computes that
product once and adds it into the accumulator after the loop, while the loop's steps still run
for their timing and their shifts and swaps (the scheduler adds the steady-state periods of those
in one step once two of them agree). `W` enters the product as its global fp32 matrix, gathered
from the PEs' blocks and converted once — when the bundle is loaded (`warm`) — and kept on the
weights' storage until it is written; decode's GEMVs (gemv.py) multiply by the same matrix.

This is done only for a loop whose shape guarantees it: exactly the steps passes/kernels/linear.py
emits (shifts by -1 of the activations along the rows of PEs and of the weights along the
columns, double-buffered or in place, `P` iterations on a square region), operands laid out as
Cannon's pre-skew (`X` block `(r, (r + c) mod P)`, `W` block `((r + c) mod P, c)`, unrotated
when the loop starts), and an fp32 accumulator (a narrower one rounds after every step, and is
run step by step). Anything else runs step by step. The one difference from the steps is the
order of the fp32 additions inside a PE.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.ir import SSAValue

from wsc.ir import tile as t
from wsc.ir.layout import Layout, skewed, split_cols, split_rows
from wsc.runtime_sim.frame import Frame, Instr
from wsc.runtime_sim.memory import Buffer, roll2


@dataclass(frozen=True)
class CannonLoop:
    matmul: Instr
    x: SSAValue  # the activations' buffer at the loop's start
    w: SSAValue  # the weights'
    acc: SSAValue


def recognize(body: list[Instr], count: int) -> CannonLoop | None:
    """The Cannon loop this body is, or None."""
    ops = [i.op for i in body]
    mms = [i for i in body if isinstance(i.op, t.MatmulOp)]
    if len(mms) != 1 or count < 2:
        return None
    mm = mms[0]
    op = mm.op
    if op.accumulate is None or op.transpose_b is not None:
        return None
    x, w, acc = op.a, op.b, op.c
    moved = {x: _moves(ops, x, axis=1), w: _moves(ops, w, axis=0)}
    if not all(moved.values()):
        return None
    allowed = (t.MatmulOp, t.ShiftOp, t.SwapOp)
    if not all(isinstance(o, allowed) for o in ops):
        return None
    return CannonLoop(mm, x, w, acc)


def _moves(ops, v: SSAValue, axis: int) -> bool:
    """`v` shifts by -1 along `axis` once per step: in place, or into a partner it swaps with."""
    for o in ops:
        if isinstance(o, t.ShiftOp) and o.src == v and o.axis.value.data == axis:
            if o.by.value.data != -1:
                return False
            if o.dst is None:
                return True
            return any(isinstance(s, t.SwapOp) and {s.a, s.b} == {v, o.dst} for s in ops)
    return False


def applies(fr: Frame, loop: CannonLoop, count: int) -> bool:
    """The run-time half of the check: grid, layouts, rotations and dtypes."""
    R, C = fr.grid
    if R != C or count != R:
        return False
    x, w, acc = fr.buf(loop.x), fr.buf(loop.w), fr.buf(loop.acc)
    if acc.dtype != "f32" or x.rot != (0, 0) or w.rot != (0, 0) or acc.rot != (0, 0):
        return False
    if None in (x.layout, w.layout, acc.layout):
        return False
    (S, K), N = x.layout.shape, w.layout.shape[1]
    P = R
    return (x.layout == Layout((S, K), (P, P), split_rows(P), skewed(P))
            and w.layout == Layout((K, N), (P, P), skewed(P), split_cols(P))
            and acc.layout == Layout((S, N), (P, P), split_rows(P), split_cols(P)))


def product(fr: Frame, loop: CannonLoop) -> np.ndarray:
    """`X @ W` `[S, N]` in fp32: what the loop adds into the accumulator's blocks."""
    x, w = fr.buf(loop.x), fr.buf(loop.w)
    return x.layout.gather(x.contents(), x.rot, np.float32) @ global_f32(w)


def global_f32(w: Buffer) -> np.ndarray:
    """The global matrix `w` holds, as fp32 (read only). The weights' is gathered and converted
    once and kept until their storage is written (memory.py), not again in every run."""
    lay, rot, perm = w.layout, w.rot, w.perm

    def compute() -> np.ndarray:
        # converted as it is gathered; padding (if any) stays out of view, rows keep it as
        # their stride, which a matrix product takes as it is
        return lay.gather(roll2(w.src.view, perm), rot, np.float32)

    return w.src.derived(("global", lay, rot, perm), compute)


def add_into(fr: Frame, loop: CannonLoop, y: np.ndarray) -> None:
    """Add `y = X @ W` into the accumulator: PE `(r, c)` holds its block `(r, c)` (`applies`
    checked the layout), so the blocks are a reshaped view of `y` (zero padded if its shape
    does not divide), added in place: `acc.layout.scatter(y)` without the copies."""
    acc = fr.buf(loop.acc)
    fr.claim(acc)
    P = fr.grid[0]
    s, n = acc.dims
    if y.shape != (P * s, P * n):
        padded = np.zeros((P * s, P * n), np.float32)
        padded[: y.shape[0], : y.shape[1]] = y
        y = padded
    np.add(acc.view, y.reshape(P, s, P, n).transpose(0, 2, 1, 3), out=acc.view)
    acc.home.touch()


def warm(programs, memory) -> None:
    """At load: gather and convert the weights that recognised Cannon loops multiply (what
    their first run would otherwise do; `global_f32` keeps them until they are written)."""
    for prog in programs.values():
        for region in prog.regions:
            decls = {b.result: b for b in region.buffers}
            for loop in _loops(region.instrs):
                op = decls.get(loop.cannon.w)
                if op is None or op.weight is None or op.layout is None:
                    continue
                lay, (R, C) = op.layout.data, region.grid
                if R == C and lay == Layout(lay.shape, (R, R), skewed(R), split_cols(R)):
                    global_f32(memory[region.name].bind(op))


def _loops(instrs: list[Instr]):
    for ins in instrs:
        if ins.kind == "loop":
            if ins.cannon is not None:
                yield ins
            yield from _loops(ins.body)
