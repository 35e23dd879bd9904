"""A decode GEMV (a matmul then a sum all-reduce down the columns), computed as one product.

Decode linear layers (passes/kernels/linear.py) multiply, on every PE `(r, c)` of a `P x P`
region, the block `(r + c) mod P` of the token's activations `x[1, K]` (replicated down the rows)
by the resident weight block `((r + c) mod P, c)`, then sum the partial products down each column
with a tree all-reduce. Over a column the blocks `(r + c) mod P` are every block of `K` once, so
the all-reduced result is block `c` of `x @ W`, on every row. Step by step that is a batch of
`P * P` tiny products and a tree of additions over every PE; the simulator instead multiplies the
global `x` by the weights' global fp32 matrix, which the Cannon loop of the prefill program has
already gathered (cannon.py), and stores the result where the all-reduce would have left it. Both
ops still run for their timing.

This is done only for exactly that pair: a matmul without accumulation into an fp32 buffer,
immediately followed by the sum all-reduce of that buffer along the rows, with the layouts the
lowering gives them, and activations whose copies down the rows agree (else the steps run, and
compute with each PE's own copy). The result is checked before it is stored: if any real element
is not finite, the two ops run step by step instead, so that a NaN/Inf is reported by the op that
made it (the matmul's partials or the all-reduce). The one difference from the steps is the order
of the fp32 additions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wsc.ir import tile as t
from wsc.ir.layout import REPLICATED, Layout, skewed, split_cols
from wsc.runtime_sim.cannon import global_f32
from wsc.runtime_sim.frame import Frame, Instr


@dataclass(frozen=True)
class Gemv:
    matmul: Instr
    allreduce: Instr


def recognize(mm: Instr, nxt: Instr) -> Gemv | None:
    """The GEMV that the matmul `mm` and the instruction after it are, or None."""
    op, red = mm.op, nxt.op
    if not isinstance(op, t.MatmulOp) or not isinstance(red, t.AllReduceOp):
        return None
    if op.accumulate is not None or op.transpose_b is not None:
        return None
    if red.buf != op.c or red.axis.value.data != 0 or red.fn.data != "sum":
        return None
    if op.c in (op.a, op.b):
        return None
    return Gemv(mm, nxt)


def applies(fr: Frame, g: Gemv) -> bool:
    """The run-time half of the check: grid, layouts, rotations and dtypes."""
    op = g.matmul.op
    R, C = fr.grid
    x, w, acc = fr.buf(op.a), fr.buf(op.b), fr.buf(op.c)
    if R != C or acc.dtype != "f32" or None in (x.layout, w.layout, acc.layout):
        return False
    if x.rot != (0, 0) or w.rot != (0, 0) or acc.rot != (0, 0):
        return False
    (S, K), N, P = x.layout.shape, w.layout.shape[1], R
    return (x.layout == Layout((S, K), (P, P), REPLICATED, skewed(P))
            and w.layout == Layout((K, N), (P, P), skewed(P), split_cols(P))
            and acc.layout == Layout((S, N), (P, P), REPLICATED, split_cols(P)))


def compute(fr: Frame, g: Gemv) -> np.ndarray | None:
    """The all-reduced result `x @ W` `[S, N]`, or None if the steps must run instead."""
    op = g.matmul.op
    x, w, acc = fr.buf(op.a), fr.buf(op.b), fr.buf(op.c)
    held = x.contents()
    X = x.layout.gather(held, x.rot)
    if not (x.layout.scatter(X, x.rot) == held).all():
        return None  # the copies down the rows differ: each PE computes with its own
    Y = X.astype(np.float32) @ global_f32(w)
    if not np.isfinite(Y).all():
        return None  # let the steps find which op made it
    return Y


def finish(fr: Frame, g: Gemv, y: np.ndarray) -> None:
    """Store the result where the all-reduce leaves it (`acc.layout.scatter(y)`: PE `(r, c)`
    holds block `c` of every row, zero padded), and account the writes of both ops."""
    red = g.allreduce.op
    acc = fr.buf(red.buf)
    fr.claim(acc)
    P = fr.grid[1]
    s, n = acc.dims
    if y.shape != (s, P * n):
        padded = np.zeros((s, P * n), np.float32)
        padded[:, : y.shape[1]] = y
        y = padded
    acc.view[...] = y.reshape(s, P, n).transpose(1, 0, 2)[None]
    acc.home.touch()
    partner = fr.buf(red.partner)
    fr.claim(partner)
    partner.home.touch()
