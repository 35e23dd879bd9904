"""Per-PE SRAM, modelled as bytes.

Each region owns one `uint8` array `[rows, cols, bytes]`: row `(r, c)` is PE `(r, c)`'s SRAM.
A buffer is a typed view at its declared offset (a `Storage`), so buffers that overlap really
do clobber each other, persistent buffers (weights, the KV cache) keep their bytes from one
program run to the next, and nothing can be stored past the budget: a buffer that ends beyond
it is an error before anything runs.

Moving data is lazy where that changes nothing an op can observe. A ring shift only records
how far a buffer's contents have rotated around the region (`perm`: the contents of PE
`(r, c)` are the storage's row `(r - pr, c - pc)`), and a shift into a second buffer makes it
read the first one's storage (`src`) instead of copying it. Every op but the few written for it
(shift, swap, matmul) sees its operands materialized — rotated into their own storage — first,
and a write to a storage first gives every buffer still reading it a copy of its own, so the
contents of every buffer are exactly what the program put there. A Cannon GEMM then rotates
its small operands into the frame of its resident weights instead of moving the weights around
the region every step.

What the simulator computes from a storage's bytes — its fp32 conversion, a weight's gathered
global matrix (cannon.py) — is kept with the storage's version and recomputed after a write.
A write bumps the version of the storage written and of every storage of the region whose
bytes overlap it, so a cached value never outlives the bytes it was computed from, whichever
buffer handle clobbered them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import ml_dtypes
import numpy as np

from wsc.errors import SimulationError
from wsc.ir.layout import Layout
from wsc.ir.tile import BufferOp, RegionOp

NP_DTYPES = {
    "f32": np.dtype(np.float32),
    "f16": np.dtype(np.float16),
    "bf16": np.dtype(ml_dtypes.bfloat16),
    "i32": np.dtype(np.int32),
    "i64": np.dtype(np.int64),
}


class Storage:
    """The bytes at one offset of every PE: a typed view `[rows, cols, *dims]` into SRAM."""

    __slots__ = ("offset", "nbytes", "view", "raw", "version", "aliases", "_derived")

    def __init__(self, offset: int, view: np.ndarray | None, raw: np.ndarray | None,
                 nbytes: int = 0):
        self.offset = offset
        self.nbytes = nbytes
        self.view = view
        self.raw = raw
        self.version = 0  # bumped on every write, to it or to bytes it shares
        self.aliases: list[Storage] = []  # the other storages of its region whose bytes overlap
        # values computed from the bytes (the fp32 conversion, a gathered weight), each kept
        # with the version it was computed at: key -> (version, array)
        self._derived: dict = {}

    def touch(self) -> None:
        """Its bytes were written: everything computed from them, or from bytes they overlap
        (another buffer declared over the same SRAM), is stale."""
        self.version += 1
        for a in self.aliases:
            a.version += 1

    def derived(self, key, compute) -> np.ndarray:
        """`compute()`, kept until the bytes change (read only)."""
        got = self._derived.get(key)
        if got is None or got[0] != self.version:
            arr = compute()
            arr.setflags(write=False)
            self._derived[key] = got = (self.version, arr)
        return got[1]

    def f32(self) -> np.ndarray:
        """The stored values as fp32; a narrow dtype's conversion is kept until the next write."""
        if self.view.dtype == np.float32:
            return self.view
        return self.derived("f32", lambda: self.view.astype(np.float32))


# the largest bit pattern, sign masked off, of a finite 16-bit float (the exponent's bits all
# set mean Inf or NaN): a 16-bit buffer is checked with one integer max, not `isfinite`
_FINITE16_BELOW = {np.dtype(np.float16): 0x7C00, np.dtype(ml_dtypes.bfloat16): 0x7F80}


def all_finite(a: np.ndarray) -> bool:
    """Whether every element of a float array is finite (the same answer as
    `np.isfinite(a).all()`, several times faster for fp16 and bf16)."""
    below = _FINITE16_BELOW.get(a.dtype)
    if below is None:
        return bool(np.isfinite(a).all())
    if a.size == 0:
        return True
    return int(np.bitwise_and(a.view(np.uint16), 0x7FFF).max()) < below


def roll2(a: np.ndarray, perm: tuple[int, int]) -> np.ndarray:
    """`a` rotated over its two PE axes (a copy), or `a` itself when `perm` is zero."""
    if perm == (0, 0):
        return a
    return np.roll(a, perm, axis=(0, 1))


@dataclass(frozen=True)
class Decl:
    """What a `wsc.tile.buffer` op declares, read out of the IR once (at load, not per run)."""

    name: str
    dims: tuple[int, ...]
    dtype: str
    layout: Layout | None
    persistent: bool
    offset: int
    nbytes: int

    @classmethod
    def of(cls, op: BufferOp | Decl) -> Decl:
        if isinstance(op, Decl):
            return op
        return cls(op.sym.data, op.dims, op.dtype_str,
                   op.layout.data if op.layout is not None else None,
                   op.persistent is not None, op.offset_bytes, op.nbytes)


@dataclass
class Buffer:
    """Run-time state of one buffer handle of a region."""

    name: str
    dims: tuple[int, ...]
    dtype: str
    layout: Layout | None
    persistent: bool
    declared_offset: int  # where this handle's storage was declared
    home: Storage  # the storage this handle owns now (another after a swap)
    rot: tuple[int, int] = (0, 0)  # how far shifts have rotated the contents (the layout's view)
    ready: float = 0.0  # cycle at which an asynchronous transfer into it completes
    # lazy data movement (see the module docstring): contents = src rotated by perm
    src: Storage = field(default=None)  # type: ignore[assignment]
    perm: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        if self.src is None:
            self.src = self.home

    @classmethod
    def declared(cls, op: BufferOp | Decl, storage: Storage | None = None) -> Buffer:
        """The handle a `wsc.tile.buffer` declares (its storage is empty when only estimating)."""
        d = Decl.of(op)
        return cls(
            name=d.name, dims=d.dims, dtype=d.dtype, layout=d.layout, persistent=d.persistent,
            declared_offset=d.offset, home=storage or Storage(d.offset, None, None),
        )

    @property
    def nbytes(self) -> int:
        """Bytes per PE."""
        n = NP_DTYPES[self.dtype].itemsize
        for d in self.dims:
            n *= d
        return n

    @property
    def offset(self) -> int:
        return self.home.offset

    @property
    def view(self) -> np.ndarray:
        """The buffer's own memory, `[rows, cols, *dims]` (materialize first to read it)."""
        return self.home.view

    @property
    def raw(self) -> np.ndarray:
        return self.home.raw

    @property
    def lazy(self) -> bool:
        return self.perm != (0, 0) or self.src is not self.home

    def contents(self) -> np.ndarray:
        """What the PEs hold, as an array (read only; a copy only while it is lazy)."""
        return roll2(self.src.view, self.perm)

    def materialize(self) -> None:
        """Put the contents into the buffer's own storage."""
        if self.lazy:
            self.home.view[...] = roll2(self.src.view, self.perm)
            self.home.touch()
            self.src, self.perm = self.home, (0, 0)

    def f32(self) -> np.ndarray:
        """The contents as fp32 (read only: it may be the storage itself, or a cached copy)."""
        return roll2(self.src.f32(), self.perm)

    def f32_rows(self, n: int) -> np.ndarray:
        """The first `n` local rows of the contents (`[R, C, :n, ...]`) as fp32, read only:
        only those are converted (and kept until the next write)."""
        src = self.src
        if n >= self.dims[0]:
            return self.f32()
        if src.view.dtype == np.float32:
            return roll2(src.view[:, :, :n], self.perm)
        return roll2(src.derived(("f32", n), lambda: src.view[:, :, :n].astype(np.float32)),
                     self.perm)

    def store(self, values: np.ndarray) -> None:
        """Write (with rounding to the storage dtype, as the hardware would)."""
        self.view[...] = values

    def swap_storage(self, other: Buffer) -> None:
        for f in ("home", "src", "perm", "rot", "ready"):
            a, b = getattr(self, f), getattr(other, f)
            setattr(self, f, b)
            setattr(other, f, a)


@dataclass
class RegionMemory:
    """The SRAM of every PE of one region (or of every region stacked on the same PEs)."""

    name: str
    grid: tuple[int, int]
    budget: int
    sram: np.ndarray = field(init=False)
    storages: dict[tuple, Storage] = field(default_factory=dict)

    @staticmethod
    def high_water(regions: list[RegionOp]) -> int:
        end = 0
        for region in regions:
            for b in region.buffers():
                end = max(end, b.offset_bytes + b.nbytes)
        return end

    @staticmethod
    def check(name: str, nbytes: int, budget: int) -> None:
        if nbytes > budget:
            raise SimulationError(
                f"SRAM overflow in region {name}: its buffers need {nbytes} bytes per PE, "
                f"a PE has {budget} bytes for buffers"
            )

    def reserve(self, nbytes: int) -> None:
        self.check(self.name, nbytes, self.budget)
        r, c = self.grid
        self.sram = np.zeros((r, c, -(-nbytes // 8) * 8 or 8), dtype=np.uint8)

    def bind(self, op: BufferOp | Decl) -> Buffer:
        """A handle on the buffer's bytes; the same bytes keep the same storage across runs,
        so that a weight's cached fp32 conversion outlives one decode step."""
        d = Decl.of(op)
        off, n = d.offset, d.nbytes
        if off < 0 or off + n > self.budget:
            raise SimulationError(
                f"SRAM overflow in region {self.name}: buffer {d.name} occupies bytes "
                f"[{off}, {off + n}) of a PE with {self.budget} bytes for buffers"
            )
        key = (off, d.dtype, d.dims)
        if key not in self.storages:
            raw = self.sram[:, :, off : off + n]
            view = raw.view(NP_DTYPES[d.dtype])
            view.shape = (*self.grid, *d.dims)  # never copies: raises if it would have to
            new = Storage(off, view, raw, n)
            for other in self.storages.values():
                if other.offset < off + n and off < other.offset + other.nbytes:
                    other.aliases.append(new)
                    new.aliases.append(other)
            self.storages[key] = new
        return Buffer.declared(d, self.storages[key])
