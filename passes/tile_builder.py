"""Building one region's tile program.

`RegionBuilder` collects a region's buffers and ops for one phase, wires its receives and
sends to channel names chosen by the caller, and lays buffers out in SRAM: persistent buffers
(weights, KV cache) first, in declaration order — every phase declares the same ones in the
same order, so they land at the same offsets — then scratch buffers. Scratch buffers that are
released are reused by later allocations of the same size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from xdsl.dialects.builtin import (
    DenseArrayBase, FloatAttr, IntegerAttr, StringAttr, UnitAttr, f64, i32, i64,
)
from xdsl.ir import Block, Operation, Region, SSAValue

from wsc.ir import tile as t
from wsc.ir.attrs import DTYPE_BYTES, dtype_attr, ints
from wsc.ir.layout import Layout
from wsc.machine.cost import CostModel

Slot = tuple[str, int]  # ("input", i) | ("extra", i)


@dataclass(frozen=True)
class Inbound:
    """Where one operand of a region comes from: its channel, the window of the sent matrix it
    takes, and how many messages its FIFO holds before the sender must wait."""

    channel: str
    window: tuple[int, int, int, int] | None = None
    depth: int = 1
    last_valid: bool = False  # the window is the last valid row of each message


@dataclass
class WeightShard:
    """A persistent buffer initialised from the weight store: the global matrix comes from
    `source()` (so plan-only compiles never materialise it) and is cut by `layout`."""

    key: str
    layout: Layout
    dtype: str
    source: Callable[[], np.ndarray]


@dataclass
class _Buf:
    op: t.BufferOp
    persistent: bool
    free: bool = False


def _i(v: int) -> IntegerAttr:
    return IntegerAttr(int(v), i64)


def _f(v: float) -> FloatAttr:
    return FloatAttr(float(v), f64)


@dataclass
class RegionBuilder:
    name: str
    kernel: str
    grid: tuple[int, int]
    module_path: str = ""
    inputs: dict[Slot, Inbound] = field(default_factory=dict)
    outputs: dict[int, list[str]] = field(default_factory=dict)
    cost: CostModel | None = None  # chooses collective tree depths; two levels without it
    bufs: list[_Buf] = field(default_factory=list)
    shards: list[WeightShard] = field(default_factory=list)
    recv_repeat: int = 1  # receive every message this many times, keeping the last
    result_module: str = ""  # module path of the op that makes the first result (RegionOp)
    _blocks: list[Block] = field(default_factory=list)
    _scratch: dict[tuple, SSAValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._blocks = [Block()]

    # --- buffers --------------------------------------------------------------------------

    def buffer(self, sym: str, shape, dtype: str, *, layout: Layout | None = None,
               persistent: bool = False, weight: str | None = None,
               fifo: str | None = None) -> SSAValue:
        shape = tuple(int(s) for s in shape)
        if layout is not None:
            assert tuple(layout.tile) == shape[-2:], (sym, layout, shape)
        if not persistent and fifo is None:
            for b in self.bufs:
                if (b.free and b.op.dims == shape and b.op.dtype_str == dtype
                        and (b.op.layout.data if b.op.layout else None) == layout):
                    b.free = False
                    return b.op.result
        props: dict = {
            "sym": StringAttr(sym), "shape": ints(shape), "dtype": dtype_attr(dtype),
            "offset": _i(0),
        }
        if layout is not None:
            props["layout"] = t.LayoutAttr(layout)
        if persistent:
            props["persistent"] = UnitAttr()
        if weight is not None:
            props["weight"] = StringAttr(weight)
        if fifo is not None:
            props["fifo"] = StringAttr(fifo)
        op = t.BufferOp.create(properties=props, result_types=[t.BUF])
        self.bufs.append(_Buf(op, persistent))
        return op.result

    def weight(self, sym: str, layout: Layout, dtype: str, source: Callable[[], np.ndarray]) -> SSAValue:
        key = f"{self.name}/{sym}"
        self.shards.append(WeightShard(key, layout, dtype, source))
        return self.buffer(sym, layout.tile, dtype, layout=layout, persistent=True, weight=key)

    def scratch(self, dims, dtype: str = "f32") -> SSAValue:
        """Working memory of an op (a partner's partial, a staging copy, a score block). Ops
        run one at a time on a PE, so every op needing this shape and dtype shares one."""
        key = (tuple(int(d) for d in dims), dtype)
        if key not in self._scratch:
            self._scratch[key] = self.buffer(f"scratch{len(self._scratch)}", key[0], dtype)
        return self._scratch[key]

    def release(self, *values: SSAValue) -> None:
        for b in self.bufs:
            if b.op.result in values and not b.persistent:
                b.free = True

    # --- ops ------------------------------------------------------------------------------

    def emit(self, op: Operation) -> Operation:
        self._blocks[-1].add_op(op)
        return op

    def op(self, cls, operands, **props) -> Operation:
        p = {}
        for k, v in props.items():
            if v is None or v is False:
                continue
            if v is True:
                p[k] = UnitAttr()
            elif isinstance(v, bool):
                continue
            elif isinstance(v, int):
                p[k] = _i(v)
            elif isinstance(v, float):
                p[k] = _f(v)
            elif isinstance(v, str):
                p[k] = StringAttr(v)
            else:
                p[k] = v
        return self.emit(cls.create(operands=list(operands), properties=p))

    @contextmanager
    def loop(self, count: int, *, chunks: bool = False) -> Iterator[None]:
        """Repeat what the body emits `count` times; `chunks`: once per prompt chunk, so a
        shorter prompt runs fewer iterations (LoopOp)."""
        if count <= 1:
            yield
            return
        self._blocks.append(Block())
        yield
        body = self._blocks.pop()
        props: dict = {"count": _i(count)}
        if chunks:
            props["chunks"] = UnitAttr()
        self.emit(t.LoopOp.create(properties=props, regions=[Region(body)]))

    def recv(self, buf: SSAValue, slot: Slot) -> None:
        """Receive `buf` from the operand `slot`, through a FIFO of its own."""
        src = self.inputs.get(slot, Inbound(f"{self.name}.{slot[0]}{slot[1]}"))
        b = t.buffer_of(buf)
        lay = b.layout.data if b.layout is not None else None
        fifo = self.buffer(f"fifo_{slot[0]}{slot[1]}", (src.depth, *b.dims), b.dtype_str,
                           layout=lay, fifo=src.channel)
        with self.loop(self.recv_repeat, chunks=True):  # one message per prompt chunk
            self.op(t.RecvOp, [fifo, buf], channel=src.channel,
                    slice=ints(src.window) if src.window is not None else None,
                    last_valid=src.last_valid)

    # --- collectives ------------------------------------------------------------------------

    def levels(self, nbytes: int, n: int) -> int:
        return self.cost.tree_levels(nbytes, n) if self.cost is not None else 2

    def shift(self, src: SSAValue, axis: int, by: int = -1, *, dst: SSAValue | None = None) -> None:
        """Rotate `src` around an interleaved ring: into `dst`, or in place through staging."""
        if dst is not None:
            self.op(t.ShiftOp, [src, dst], axis=axis, by=by, interleaved=True,
                    operandSegmentSizes=_segments(1, 1, 0))
            return
        b = t.buffer_of(src)
        staging = self.scratch((t.staging_elems(b),), b.dtype_str)
        self.op(t.ShiftOp, [src, staging], axis=axis, by=by, interleaved=True,
                operandSegmentSizes=_segments(1, 0, 1))

    def allreduce(self, buf: SSAValue, axis: int, fn: str = "sum") -> None:
        """Reduce `buf` over the region's lines along `axis`, leaving the result on every PE."""
        b = t.buffer_of(buf)
        n = self.grid[axis]
        self.op(t.AllReduceOp, [buf, self.scratch(b.dims, b.dtype_str)], axis=axis, fn=fn,
                levels=self.levels(b.nbytes, n))

    def attn_merge(self, m: SSAValue, l: SSAValue, acc: SSAValue, *, axis: int, heads: int,  # noqa: E741
                   head_dim: int) -> None:
        """All-reduce online-softmax states with the log-sum-exp merge."""
        elems = sum(math.prod(t.buffer_of(v).dims) for v in (m, l, acc))
        self.op(t.AttnMergeOp, [m, l, acc, self.scratch((elems,))], axis=axis, heads=heads,
                head_dim=head_dim, levels=self.levels(4 * elems, self.grid[axis]))

    def send(self, buf: SSAValue, output: int = 0) -> None:
        for channel in self.outputs.get(output, []):
            self.op(t.SendOp, [buf], channel=channel)

    # --- layout in SRAM -------------------------------------------------------------------

    @property
    def high_water(self) -> int:
        end = 0
        for b in self.bufs:
            end = max(end, b.op.offset_bytes + b.op.nbytes)
        return end

    def allocate(self, base: int = 0) -> int:
        """Assign offsets from `base` (where the region's share of a stack's SRAM starts);
        returns the bytes per PE the region needs."""
        off = 0
        for persistent in (True, False):
            for b in self.bufs:
                if b.persistent != persistent:
                    continue
                b.op.properties["offset"] = _i(base + off)
                off += -(-b.op.nbytes // t.ALIGN) * t.ALIGN
        return off

    def finish(self, origin: tuple[int, int], fx: str = "", *, base: int = 0,
               stack: str | None = None) -> t.RegionOp:
        self.allocate(base)
        body = Block()
        for b in self.bufs:
            body.add_op(b.op)
        for op in list(self._blocks[0].ops):
            op.detach()
            body.add_op(op)
        props = {
            "sym_name": StringAttr(self.name), "origin": ints(origin), "shape": ints(self.grid),
            "kernel": StringAttr(self.kernel),
        }
        if self.module_path:
            props["module"] = StringAttr(self.module_path)
        if stack is not None:
            props["stack"] = StringAttr(stack)
        if self.result_module and self.result_module != self.module_path:
            props["result_module"] = StringAttr(self.result_module)
        return t.RegionOp.create(properties=props, regions=[Region(body)])


def _segments(*sizes: int) -> DenseArrayBase:
    return DenseArrayBase.from_list(i32, list(sizes))


def tile_bytes(shape, dtype: str) -> int:
    return math.prod(shape) * DTYPE_BYTES[dtype]
