"""View chains: what a stack of pure view ops does to the elements of its base value.

A value made by reshape / transpose / expand / slice ops is a view of the first value below
them (its *base*). Which base element each of its elements reads is found by running the chain
on an iota of the base shape with numpy: the *index map*. Predicates over index maps answer the
questions the recognisers ask -- "is this the identity view of X", "is this a per-head view of
columns [c0, c0 + heads*head_dim) of the token-major matrix X, each kv head repeated n times".
Results are memoised by the chain's signature (shapes and view parameters), so the thousands
of identical chains of a deep model are analysed once, even at S=2048 and hidden size 4096.

Also here: the builders that make such views (`columns`, `head_view`), used by recognisers to
replace a 4-D result by a view of the new token-major value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from xdsl.ir import Operation, SSAValue
from xdsl.pattern_rewriter import PatternRewriter

from wsc.ir import graph as g
from wsc.ir.attrs import dtype_of, i64_attr, ints, shape_of, tensor

VIEW_TYPES = (g.ReshapeOp, g.TransposeOp, g.ExpandOp, g.SliceOp)

Signature = tuple  # (base shape, (kind, params..., result shape)...)


def view_chain(value: SSAValue) -> tuple[SSAValue, tuple[Operation, ...]]:
    """(base, view ops from the base outward) of a value; no ops if it is not a view."""
    ops: list[Operation] = []
    while isinstance(value.owner, VIEW_TYPES):
        ops.append(value.owner)
        value = value.owner.x
    return value, tuple(reversed(ops))


def signature(base: SSAValue, ops: Sequence[Operation]) -> Signature:
    """Hashable description of a chain: everything its index map depends on."""
    steps: list[tuple] = [shape_of(base.type)]
    for op in ops:
        out = shape_of(op.results[0].type)
        if isinstance(op, g.TransposeOp):
            steps.append(("transpose", tuple(op.perm.get_values()), out))
        elif isinstance(op, g.SliceOp):
            steps.append(("slice", *op.bounds(), out))
        else:
            steps.append(("reshape" if isinstance(op, g.ReshapeOp) else "expand", out))
    return tuple(steps)


def chain_of(value: SSAValue) -> tuple[SSAValue, Signature]:
    base, ops = view_chain(value)
    return base, signature(base, ops)


def index_map(sig: Signature) -> np.ndarray:
    """For every element of the view, the flat index of the base element it reads."""
    base_shape = sig[0]
    size = math.prod(base_shape)
    arr = np.arange(size, dtype=np.int32 if size < 2**31 else np.int64).reshape(base_shape)
    for kind, *params in sig[1:]:
        out = params[-1]
        if kind == "reshape":
            arr = arr.reshape(out)
        elif kind == "expand":
            arr = np.broadcast_to(arr, out)
        elif kind == "transpose":
            arr = np.transpose(arr, params[0])
        else:
            dim, start, end, step = params[:4]
            index = [slice(None)] * arr.ndim
            index[dim] = slice(start, end, step)
            arr = arr[tuple(index)]
    return arr


@lru_cache(maxsize=4096)
def is_identity(sig: Signature) -> bool:
    """The view reads every base element once, in row-major order (a reshape at most)."""
    if all(step[0] == "reshape" for step in sig[1:]):
        return True
    out = sig[-1][-1]
    if math.prod(out) != math.prod(sig[0]):
        return False
    return bool(np.array_equal(index_map(sig).reshape(-1), np.arange(math.prod(out))))


def is_leading_reshape(src: Sequence[int], dst: Sequence[int]) -> bool:
    """A reshape that keeps the matrix view [prod(leading dims), last dim] unchanged."""
    return (len(src) > 0 and len(dst) > 0 and src[-1] == dst[-1]
            and math.prod(src[:-1]) == math.prod(dst[:-1]))


@dataclass(frozen=True)
class HeadView:
    """A per-head view of a token-major matrix X [tokens, C] (leading dims merged):
    view[..., h, t, d] = X[t, col0 + (h // (heads // kv_heads)) * head_dim + d], the head dims
    merged into the view's leading dims; `transposed` views are [..., h, d, t] (kᵀ)."""

    col0: int
    heads: int
    kv_heads: int
    head_dim: int
    transposed: bool = False

    @property
    def width(self) -> int:
        """Columns of X the view reads."""
        return self.kv_heads * self.head_dim

    @property
    def repeats(self) -> int:
        return self.heads // self.kv_heads


@lru_cache(maxsize=4096)
def head_view(sig: Signature) -> HeadView | None:
    """The `HeadView` a chain is, if it is one (a value that is no view is none)."""
    if len(sig) < 2:
        return None
    base_shape, view = sig[0], sig[-1][-1]
    if len(view) < 3 or len(base_shape) < 1:
        return None
    cols, tokens = base_shape[-1], math.prod(base_shape[:-1])
    heads = math.prod(view[:-2])
    for transposed in (False, True):
        seq, dim = (view[-1], view[-2]) if transposed else (view[-2], view[-1])
        if seq != tokens:
            continue
        idx = index_map(sig).reshape(heads, view[-2], view[-1])
        if transposed:
            idx = idx.transpose(0, 2, 1)
        found = _head_layout(idx, cols, heads, seq, dim)
        if found is not None:
            col0, kv_heads = found
            return HeadView(col0, heads, kv_heads, dim, transposed)
    return None


def _head_layout(idx: np.ndarray, cols: int, heads: int, seq: int, dim: int):
    """(col0, kv_heads) when idx[h, t, d] = t*cols + col0 + kv(h)*dim + d, kv(h) = h // rep."""
    rows, col = np.divmod(idx, cols)
    if not np.array_equal(rows, np.broadcast_to(np.arange(seq)[None, :, None], idx.shape)):
        return None
    starts = col[:, 0, 0].astype(np.int64)
    expected = starts[:, None, None] + np.arange(dim)[None, None, :]
    if not np.array_equal(col, np.broadcast_to(expected, idx.shape)):
        return None
    col0 = int(starts[0])
    offsets = starts - col0
    if np.any(offsets % dim) or np.any(offsets < 0):
        return None
    kv = offsets // dim
    kv_heads = int(kv.max()) + 1
    if heads % kv_heads or not np.array_equal(kv, np.arange(heads) // (heads // kv_heads)):
        return None
    return col0, kv_heads


@lru_cache(maxsize=4096)
def is_row_table(sig: Signature, target: tuple[int, ...]) -> bool:
    """The view, broadcast to `target` [..., S, D], reads element [s, d] of a table holding
    S*D values in row-major order, whatever the leading (head) index: how rotary cos/sin
    tables are applied to every head."""
    if math.prod(sig[0]) != target[-1] * target[-2]:
        return False
    try:
        idx = np.broadcast_to(index_map(sig), target)
    except ValueError:
        return False
    seq, dim = target[-2:]
    want = np.arange(seq)[:, None] * dim + np.arange(dim)[None, :]
    per_head = idx.reshape(-1, seq, dim)
    return bool(np.array_equal(per_head, np.broadcast_to(want, per_head.shape)))


# --- builders ---------------------------------------------------------------------------


def _emit(rewriter: PatternRewriter, anchor: Operation, op: g.GraphOp) -> SSAValue:
    op.copy_location(anchor)
    rewriter.insert(op)
    return op.results[0]


def reshape(rewriter: PatternRewriter, anchor: Operation, x: SSAValue,
            shape: Sequence[int]) -> SSAValue:
    if shape_of(x.type) == tuple(shape):
        return x
    return _emit(rewriter, anchor, g.make(g.ReshapeOp, [x], tensor(shape, dtype_of(x.type))))


def transpose(rewriter: PatternRewriter, anchor: Operation, x: SSAValue,
              perm: Sequence[int]) -> SSAValue:
    shape = shape_of(x.type)
    out = [shape[p] for p in perm]
    return _emit(rewriter, anchor, g.make(g.TransposeOp, [x], tensor(out, dtype_of(x.type)),
                                          perm=ints(perm)))


def columns(rewriter: PatternRewriter, anchor: Operation, x: SSAValue, start: int,
            width: int) -> SSAValue:
    """Columns [start, start + width) of x (a slice of its last dim, or x itself)."""
    shape = shape_of(x.type)
    if start == 0 and width == shape[-1]:
        return x
    out = (*shape[:-1], width)
    last = len(shape) - 1
    return _emit(rewriter, anchor, g.make(
        g.SliceOp, [x], tensor(out, dtype_of(x.type)), dim=i64_attr(last),
        start=i64_attr(start), end=i64_attr(start + width), step=i64_attr(1)))


def head_view_of(rewriter: PatternRewriter, anchor: Operation, x: SSAValue, view: HeadView,
                 shape: Sequence[int]) -> SSAValue:
    """A view of `shape` that reads token-major `x` [..., tokens, kv_heads*head_dim] the way
    `view` reads its matrix (with col0 = 0): the inverse of recognising a head view."""
    xs = shape_of(x.type)
    tokens, kvh, d = math.prod(xs[:-1]), view.kv_heads, view.head_dim
    v = reshape(rewriter, anchor, x, (tokens, kvh, d))
    v = transpose(rewriter, anchor, v, (1, 0, 2))
    if view.repeats > 1:
        v = reshape(rewriter, anchor, v, (kvh, 1, tokens, d))
        v = _emit(rewriter, anchor, g.make(g.ExpandOp, [v], tensor(
            (kvh, view.repeats, tokens, d), dtype_of(x.type))))
        v = reshape(rewriter, anchor, v, (view.heads, tokens, d))
    if view.transposed:
        v = transpose(rewriter, anchor, v, (0, 2, 1))
    return reshape(rewriter, anchor, v, shape)
