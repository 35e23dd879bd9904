"""Per-PE SRAM, modelled as bytes.

Each region owns one `uint8` array `[rows, cols, bytes]`: row `(r, c)` is PE `(r, c)`'s SRAM.
A buffer is a typed view at its declared offset, so buffers that overlap really do clobber
each other, persistent buffers (weights, the KV cache) keep their bytes from one program run
to the next, and nothing can be stored past the budget: a buffer that ends beyond it is an
error before anything runs.
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


@dataclass
class Buffer:
    """Run-time state of one buffer handle of a region."""

    name: str
    dims: tuple[int, ...]
    dtype: str
    layout: Layout | None
    persistent: bool
    home: int  # offset of the storage this handle was declared with
    offset: int  # offset of the storage it refers to now (differs after a swap)
    view: np.ndarray | None  # [rows, cols, *dims] in `dtype`; None when estimating only
    raw: np.ndarray | None  # [rows, cols, nbytes] uint8 over the same memory
    rot: tuple[int, int] = (0, 0)  # how far shifts have rotated the contents
    ready: float = 0.0  # cycle at which an asynchronous transfer into it completes

    @classmethod
    def declared(cls, op: BufferOp, view: np.ndarray | None = None,
                 raw: np.ndarray | None = None) -> Buffer:
        """The handle a `wsc.tile.buffer` declares (without memory when only estimating)."""
        return cls(
            name=op.sym.data, dims=op.dims, dtype=op.dtype_str,
            layout=op.layout.data if op.layout is not None else None,
            persistent=op.persistent is not None, home=op.offset_bytes, offset=op.offset_bytes,
            view=view, raw=raw,
        )

    @property
    def nbytes(self) -> int:
        """Bytes per PE."""
        n = NP_DTYPES[self.dtype].itemsize
        for d in self.dims:
            n *= d
        return n

    def f32(self) -> np.ndarray:
        return self.view.astype(np.float32)

    def store(self, values: np.ndarray) -> None:
        """Write (with rounding to the storage dtype, as the hardware would)."""
        self.view[...] = values

    def swap_storage(self, other: Buffer) -> None:
        for f in ("offset", "view", "raw", "rot", "ready"):
            a, b = getattr(self, f), getattr(other, f)
            setattr(self, f, b)
            setattr(other, f, a)


@dataclass
class RegionMemory:
    """The SRAM of every PE of one region."""

    name: str
    grid: tuple[int, int]
    budget: int
    sram: np.ndarray = field(init=False)

    @staticmethod
    def high_water(regions: list[RegionOp]) -> int:
        end = 0
        for region in regions:
            for b in region.buffers():
                end = max(end, b.offset_bytes + b.nbytes)
        return end

    def reserve(self, nbytes: int) -> None:
        if nbytes > self.budget:
            raise SimulationError(
                f"SRAM overflow in region {self.name}: its buffers need {nbytes} bytes per PE, "
                f"a PE has {self.budget} bytes for buffers"
            )
        r, c = self.grid
        self.sram = np.zeros((r, c, -(-nbytes // 8) * 8 or 8), dtype=np.uint8)

    def bind(self, op: BufferOp) -> Buffer:
        off, n = op.offset_bytes, op.nbytes
        if off + n > self.budget:
            raise SimulationError(
                f"SRAM overflow in region {self.name}: buffer {op.sym.data} occupies bytes "
                f"[{off}, {off + n}) of a PE with {self.budget} bytes for buffers"
            )
        raw = self.sram[:, :, off : off + n]
        view = raw.view(NP_DTYPES[op.dtype_str])
        view.shape = (*self.grid, *op.dims)  # never copies: raises if it would have to
        return Buffer.declared(op, view, raw)
