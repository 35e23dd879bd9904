"""Channels between regions: bounded FIFOs in the receiver's SRAM, with back-pressure.

Every channel's receiver declares its FIFO, a buffer `[depth, *tile]` (`fifo = channel`). A
send gathers the global matrix its buffer holds (per layout and rotation; a block replicated
on several PEs must be equal on all of them, or the send fails: a collective that left some
holders behind is caught where its result leaves the region), cuts the receiver's window out
of it and writes it, laid out as the receiver's tile, into the next free slot of that FIFO: the
bytes are in the receiver's SRAM from then on. A send whose message finds every slot full waits
until the receiver takes one out (back-pressure). A receive copies the oldest slot into its
destination buffer.

Timing: message `n` can start when the sender is ready and slot `n mod depth` has been freed
(the receive of message `n - depth`); it arrives `CostModel.transfer` cycles later, costed from
the route placement recorded (hops, lanes, contention) and the receiver's layout (the row of
PEs that must see the most distinct bytes); the sender is busy streaming it out meanwhile. The
host is a sender with every slot's message ready, and a receiver that is always ready.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from wsc.errors import SimulationError
from wsc.ir import tile as t
from wsc.ir.attrs import DTYPE_BYTES, get_ints
from wsc.ir.layout import Layout
from wsc.machine.cost import CostModel
from wsc.runtime_sim.frame import Frame, Instr
from wsc.runtime_sim.memory import Buffer

Path = tuple[float, float, float]  # the critical path to a time: compute, fabric, waiting


@dataclass
class Endpoint:
    """What the receiving side of a channel is: its region, its FIFO and its window."""

    region: str
    fifo: t.BufferOp
    layout: Layout
    window: tuple[int, int, int, int] | None
    grid: tuple[int, int]
    last_valid: bool = False  # the window's row is the message's last valid row (RecvOp)

    @property
    def depth(self) -> int:
        return self.fifo.dims[0]


@dataclass
class Channel:
    """One channel during one program run."""

    op: t.ChannelOp
    dst: Endpoint | None  # None: the host receives
    sent: int = 0
    taken: int = 0
    arrivals: deque[tuple[float, Path]] = field(default_factory=deque)  # in-flight messages
    freed: dict[int, float] = field(default_factory=dict)  # message index -> time its slot freed
    host_messages: deque[np.ndarray] | None = None  # what the host sends, when it is the source
    host_open: bool = False  # estimating: the host sends as many messages as are asked for

    @property
    def name(self) -> str:
        return self.op.sym_name.data

    @property
    def from_host(self) -> bool:
        return self.op.src.data == t.HOST

    def slot_free_at(self, n: int) -> float | None:
        """When message `n` may be written, or None if its slot is still taken."""
        if self.dst is None or n < self.dst.depth:
            return 0.0
        return self.freed.get(n - self.dst.depth)

    def has_message(self) -> bool:
        return self.sent > self.taken


def endpoints(regions, channels: dict[str, t.ChannelOp]) -> dict[str, Endpoint]:
    """The receiving end of every channel a region receives on, from its recv and FIFO."""
    out: dict[str, Endpoint] = {}
    for r in regions:
        for op in r.op.walk():
            if isinstance(op, t.RecvOp):
                fifo, dst = t.buffer_of(op.fifo), t.buffer_of(op.dst)
                if dst.layout is None:
                    raise SimulationError(f"region {r.name}: received buffer {dst.sym.data} has no layout")
                window = get_ints(op.window) if op.window is not None else None
                out[op.channel.data] = Endpoint(r.name, fifo, dst.layout.data, window, r.grid,  # type: ignore[arg-type]
                                                op.last_valid is not None)
    return out


def transfer_cycles(cost: CostModel, ch: t.ChannelOp, dst: Endpoint,
                    src_grid: tuple[int, int]) -> tuple[int, int]:
    """(cycles from the first wavelet leaving the sender to the last landing in the FIFO, the
    part of them the sender spends streaming the data out)."""
    per = DTYPE_BYTES[dst.fifo.dtype_str]
    lane = dst.layout.busiest_row * per
    distinct = int(np.prod(dst.layout.shape)) * per
    hops = ch.hops.value.data if ch.hops is not None else 0
    lanes = ch.lanes.value.data if ch.lanes is not None else src_grid[0]
    nbytes = ch.nbytes.value.data
    load = ch.load.value.data if ch.load is not None else nbytes
    traverse = (src_grid[1] - 1) + (dst.grid[1] - 1)
    total = cost.transfer(lane, distinct, lanes, hops, traverse=traverse,
                          contention=max(1.0, load / max(1, nbytes)))
    return total, total - cost.transfer(0, 0, 1, hops, traverse=traverse)


# --- data --------------------------------------------------------------------------------


def gather(fr: Frame, b: Buffer) -> np.ndarray:
    """The global matrix a buffer holds, checking that replicated blocks agree."""
    if b.layout is None:
        raise SimulationError(f"region {fr.region}: sent buffer {b.name} has no layout")
    held = b.contents()
    g = b.layout.gather(held, b.rot)
    if b.layout.replicated:
        again = b.layout.scatter(g, b.rot)
        if (again == held).all():  # the usual case, decided in one pass
            return g
        valid = b.layout.valid_mask(b.rot)
        same = (again == held) | ~valid | (np.isnan(again) & np.isnan(held))
        if not same.all():
            r, c = (int(i) for i in np.argwhere(~same.reshape(*fr.grid, -1).all(-1))[0])
            raise SimulationError(
                f"region {fr.region} (kernel {fr.kernel}) sends {b.name}, which its layout "
                f"replicates, but PE ({r}, {c}) holds different values than the first holder "
                "of the same block: a collective left it behind")
    return g


def deliver(ch: Channel, fifo: Buffer, g: np.ndarray, n: int, valid_rows: int | None = None) -> None:
    """Write message `n` (a global matrix) into its FIFO slot, as the receiver's tile.
    `valid_rows`: how many of its rows hold prompt tokens (a short prompt's final chunk), where
    a `last_valid` window takes the last of them."""
    dst = ch.dst
    if dst.window is not None:  # type: ignore[union-attr]
        r0, r1, c0, c1 = dst.window  # type: ignore[union-attr]
        if dst.last_valid and valid_rows is not None:  # type: ignore[union-attr]
            r0, r1 = valid_rows - 1, valid_rows
        g = g[r0:r1, c0:c1]
    if tuple(g.shape) != dst.layout.shape:  # type: ignore[union-attr]
        raise SimulationError(
            f"channel {ch.name} carries {tuple(g.shape)}, region {dst.region} expects "  # type: ignore[union-attr]
            f"{dst.layout.shape}")  # type: ignore[union-attr]
    fifo.view[:, :, n % dst.depth] = dst.layout.scatter(g.astype(fifo.view.dtype))  # type: ignore[union-attr]
    fifo.home.touch()


def take(fr: Frame, ins: Instr, n: int, depth: int) -> None:
    """Copy message `n` out of its FIFO slot into the receive's destination."""
    fifo, dst = fr.buf(ins.reads[0]), fr.buf(ins.writes[0])
    dst.view[...] = fifo.view[:, :, n % depth]
    dst.rot = (0, 0)
