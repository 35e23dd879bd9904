"""How a 2-D tensor is spread over the PEs of a region.

A layout maps a global matrix `[M, N]` onto a region of `R x C` PEs. Each matrix dimension
is cut into `parts` blocks of `tile = ceil(size / parts)` elements (the last block is padded
with zeros), and the block a PE holds is an affine function of its coordinates:

    block_d(r, c) = (a_d * r + b_d * c) mod parts_d

This one form covers everything the kernels need: a dimension split along mesh rows
(`a=1, b=0`) or columns (`a=0, b=1`), replication (`parts=1`: every PE holds the whole
dimension, or a PE pattern that maps several PEs to one block), and Cannon's skews
(`a=1, b=1`). A dimension is either *blocked* (local element `i` of block `k` is global
element `k * tile + i`) or *cyclic* (global element `i * parts + k`), which is how tokens are
striped over rows so that causal attention and the KV cache stay balanced.

Fabric shifts rotate a buffer's contents around the region; `rot=(dr, dc)` below means the
data now at PE `(r, c)` was placed by the layout at PE `(r - dr, c - dc)` (mod the grid),
the same convention as `numpy.roll`.

This module is plain Python and numpy: the compiler uses it to shard weights and the
simulator uses it to move data, so both sides agree by construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np


@dataclass(frozen=True)
class DimMap:
    """How one matrix dimension is cut and which block each PE holds."""

    parts: int = 1
    r: int = 0  # coefficient of the PE's row in the block index
    c: int = 0  # coefficient of the PE's column in the block index
    cyclic: bool = False

    def __post_init__(self) -> None:
        if self.parts < 1:
            raise ValueError(f"parts must be >= 1, got {self.parts}")
        if self.parts > 1 and self.r == 0 and self.c == 0:
            raise ValueError("a dimension split into several parts needs a PE coefficient")

    def block(self, r: np.ndarray, c: np.ndarray) -> np.ndarray:
        return (self.r * r + self.c * c) % self.parts

    def __str__(self) -> str:
        if self.parts == 1:
            return "*"
        terms = [
            (f"{k}*{v}" if k != 1 else v) for k, v in ((self.r, "r"), (self.c, "c")) if k != 0
        ]
        s = f"{' + '.join(terms)} mod {self.parts}"
        return s + " cyclic" if self.cyclic else s


REPLICATED = DimMap()


def split_rows(parts: int, *, cyclic: bool = False) -> DimMap:
    """A dimension split along the region's rows (mesh axis 0)."""
    return DimMap(parts, 1, 0, cyclic) if parts > 1 else REPLICATED


def split_cols(parts: int, *, cyclic: bool = False) -> DimMap:
    """A dimension split along the region's columns (mesh axis 1)."""
    return DimMap(parts, 0, 1, cyclic) if parts > 1 else REPLICATED


def skewed(parts: int) -> DimMap:
    """Block `(r + c) mod parts`: Cannon's pre-skewed operand distribution."""
    return DimMap(parts, 1, 1) if parts > 1 else REPLICATED


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class Layout:
    shape: tuple[int, int]
    grid: tuple[int, int]
    rows: DimMap = REPLICATED
    cols: DimMap = REPLICATED

    def __post_init__(self) -> None:
        if len(self.shape) != 2 or len(self.grid) != 2:
            raise ValueError("layouts describe 2-D tensors on 2-D regions")
        if min(self.shape) < 1 or min(self.grid) < 1:
            raise ValueError(f"empty layout {self.shape} on {self.grid}")

    # --- shapes -------------------------------------------------------------------------

    @property
    def dims(self) -> tuple[DimMap, DimMap]:
        return (self.rows, self.cols)

    @cached_property
    def tile(self) -> tuple[int, int]:
        """The per-PE buffer shape."""
        return tuple(_ceil_div(n, d.parts) for n, d in zip(self.shape, self.dims))  # type: ignore[return-value]

    def __str__(self) -> str:
        m, n = self.shape
        r, c = self.grid
        return f"[{m}, {n}] on [{r}, {c}], rows = {self.rows}, cols = {self.cols}"

    # --- index maps ---------------------------------------------------------------------

    def _coords(self, rot: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Coordinates, per PE, of the PE whose layout-assigned data it now holds."""
        R, C = self.grid
        r = (np.arange(R)[:, None] - rot[0]) % R
        c = (np.arange(C)[None, :] - rot[1]) % C
        return np.broadcast_to(r, (R, C)), np.broadcast_to(c, (R, C))

    def blocks(self, rot: tuple[int, int] = (0, 0)) -> tuple[np.ndarray, np.ndarray]:
        """Block indices `[R, C]` of each dimension held by every PE (read only: computed
        once per layout and rotation)."""
        return _blocks(self, (int(rot[0]), int(rot[1])))

    def global_index(self, dim: int, rot: tuple[int, int] = (0, 0)) -> np.ndarray:
        """`[R, C, tile[dim]]`: the global index of every local element along `dim` (read
        only: computed once per layout and rotation). Indices `>= shape[dim]` are padding."""
        return _global_index(self, dim, tuple(rot))

    def valid(self, dim: int, rot: tuple[int, int] = (0, 0)) -> np.ndarray:
        """`[R, C, tile[dim]]`: which local elements are real (not padding)."""
        return _valid(self, dim, tuple(rot))

    def valid_mask(self, rot: tuple[int, int] = (0, 0)) -> np.ndarray:
        """`[R, C, t0, t1]`: which elements of every PE's tile are real."""
        return _valid_mask(self, tuple(rot))

    @property
    def replicated(self) -> bool:
        """Whether some block is held by more than one PE."""
        return self.rows.parts * self.cols.parts < self.grid[0] * self.grid[1]

    @property
    def _holders(self) -> tuple[np.ndarray, np.ndarray]:
        """For each block pair, the first PE (row-major) that holds it."""
        return _holders(self)

    def block_sizes(self, dim: int) -> np.ndarray:
        """`[parts]`: how many real (not padding) elements each block of `dim` has."""
        d, t, n = self.dims[dim], self.tile[dim], self.shape[dim]
        k = np.arange(d.parts)
        if d.cyclic:  # local i of block k is global i * parts + k
            return np.maximum(0, -(-(n - k) // d.parts)).clip(max=t)
        return np.clip(n - k * t, 0, t)

    @property
    def busiest_row(self) -> int:
        """Real elements of the PE row that holds the most distinct data: what a transfer into
        this layout must deliver along one row of PEs, however much of it is replicated."""
        return _busiest_row(self)

    def check_complete(self) -> None:
        """Raise `ValueError` unless every block of the tensor is held by some PE."""
        self._holders  # noqa: B018  (computing it is the check)

    # --- moving data --------------------------------------------------------------------

    def _to_blocks(self, g: np.ndarray) -> np.ndarray:
        """Global `[M, N]` → `[p0, p1, t0, t1]`, zero padded."""
        (m, n), (t0, t1) = self.shape, self.tile
        p0, p1 = self.rows.parts, self.cols.parts
        padded = np.zeros((p0 * t0, p1 * t1), dtype=g.dtype)
        padded[:m, :n] = g
        # split each dim into (block, local) or (local, block), then bring blocks first
        shape4 = ((t0, p0) if self.rows.cyclic else (p0, t0)) + ((t1, p1) if self.cols.cyclic else (p1, t1))
        x = padded.reshape(shape4)
        order = (1 if self.rows.cyclic else 0, 3 if self.cols.cyclic else 2,
                 0 if self.rows.cyclic else 1, 2 if self.cols.cyclic else 3)
        return x.transpose(order)

    def _from_blocks(self, blocks: np.ndarray, dtype=None) -> np.ndarray:
        """`[p0, p1, t0, t1]` → global `[M, N]` (converted to `dtype` in the same pass)."""
        (m, n), (t0, t1) = self.shape, self.tile
        p0, p1 = self.rows.parts, self.cols.parts
        # axes of `blocks`: 0=p0, 1=p1, 2=t0, 3=t1
        row_axes = (2, 0) if self.rows.cyclic else (0, 2)
        col_axes = (3, 1) if self.cols.cyclic else (1, 3)
        axes = row_axes + col_axes
        if dtype is None or np.dtype(dtype) == blocks.dtype:
            x = blocks.transpose(axes).reshape(p0 * t0, p1 * t1)
        else:
            x = np.empty((p0 * t0, p1 * t1), dtype)
            x.reshape([blocks.shape[a] for a in axes])[...] = blocks.transpose(axes)
        return x[:m, :n]

    def scatter(self, g: np.ndarray, rot: tuple[int, int] = (0, 0)) -> np.ndarray:
        """Distribute a global matrix: returns per-PE tiles `[R, C, t0, t1]`."""
        if tuple(g.shape) != self.shape:
            raise ValueError(f"scatter of {g.shape} into layout of {self.shape}")
        blocks = self._to_blocks(g)
        b0, b1 = self.blocks(rot)
        return np.ascontiguousarray(blocks[b0, b1])

    def gather(self, local: np.ndarray, rot: tuple[int, int] = (0, 0), dtype=None) -> np.ndarray:
        """Collect the global matrix from per-PE tiles, reading each block from its first
        holder; with `dtype`, converted as it is collected (one copy, not two)."""
        if rot != (0, 0):
            local = np.roll(local, (-rot[0], -rot[1]), axis=(0, 1))
        hr, hc = self._holders
        return self._from_blocks(local[hr, hc], dtype)


# Index maps depend only on the layout and the rotation, and programs reuse a handful of
# each: compute them once.
@lru_cache(maxsize=4096)
def _blocks(lay: Layout, rot: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    r, c = lay._coords(rot)
    out = (lay.rows.block(r, c), lay.cols.block(r, c))
    for a in out:
        a.setflags(write=False)
    return out


@lru_cache(maxsize=4096)
def _global_index(lay: Layout, dim: int, rot: tuple[int, int]) -> np.ndarray:
    d = lay.dims[dim]
    t = lay.tile[dim]
    b = lay.blocks(rot)[dim][:, :, None]
    i = np.arange(t)[None, None, :]
    out = i * d.parts + b if d.cyclic else b * t + i
    out.setflags(write=False)
    return out


@lru_cache(maxsize=4096)
def _valid(lay: Layout, dim: int, rot: tuple[int, int]) -> np.ndarray:
    out = _global_index(lay, dim, rot) < lay.shape[dim]
    out.setflags(write=False)
    return out


@lru_cache(maxsize=1024)
def _valid_mask(lay: Layout, rot: tuple[int, int]) -> np.ndarray:
    out = _valid(lay, 0, rot)[:, :, :, None] & _valid(lay, 1, rot)[:, :, None, :]
    out.setflags(write=False)
    return out


@lru_cache(maxsize=4096)
def _busiest_row(lay: Layout) -> int:
    b0, b1 = lay.blocks()
    p1 = lay.cols.parts
    pairs = np.sort(b0 * p1 + b1, axis=1)  # [R, C]: the blocks each PE of a row holds
    first = np.ones(pairs.shape, bool)
    first[:, 1:] = pairs[:, 1:] != pairs[:, :-1]  # count each distinct block of a row once
    sizes = lay.block_sizes(0)[pairs // p1] * lay.block_sizes(1)[pairs % p1]
    return int(np.where(first, sizes, 0).sum(axis=1).max())


@lru_cache(maxsize=4096)
def _holders(lay: Layout) -> tuple[np.ndarray, np.ndarray]:
    p0, p1 = lay.rows.parts, lay.cols.parts
    b0, b1 = lay.blocks()
    pairs = (b0 * p1 + b1).reshape(-1)
    found, first = np.unique(pairs, return_index=True)  # first PE, row-major, per block
    if found.size != p0 * p1:
        missing = np.setdiff1d(np.arange(p0 * p1), found)[0]
        raise ValueError(f"layout {lay} leaves block {(int(missing // p1), int(missing % p1))} on no PE")
    C = lay.grid[1]
    return (first // C).reshape(p0, p1), (first % C).reshape(p0, p1)
