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
from xdsl.dialects.builtin import FloatAttr, IntegerAttr, StringAttr, UnitAttr, f64, i64
from xdsl.ir import Block, Operation, Region, SSAValue

from wsc.ir import tile as t
from wsc.ir.attrs import DTYPE_BYTES, dtype_attr, ints
from wsc.ir.layout import Layout

Slot = tuple[str, int]  # ("input", i) | ("extra", i)


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
    inputs: dict[Slot, tuple[str, tuple[int, int, int, int] | None]] = field(default_factory=dict)
    outputs: dict[int, list[str]] = field(default_factory=dict)
    bufs: list[_Buf] = field(default_factory=list)
    shards: list[WeightShard] = field(default_factory=list)
    recv_repeat: int = 1  # receive every message this many times, keeping the last
    _blocks: list[Block] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._blocks = [Block()]

    # --- buffers --------------------------------------------------------------------------

    def buffer(self, sym: str, shape, dtype: str, *, layout: Layout | None = None,
               persistent: bool = False, weight: str | None = None) -> SSAValue:
        shape = tuple(int(s) for s in shape)
        if layout is not None:
            assert tuple(layout.tile) == shape[-2:], (sym, layout, shape)
        if not persistent:
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
        op = t.BufferOp.create(properties=props, result_types=[t.BUF])
        self.bufs.append(_Buf(op, persistent))
        return op.result

    def weight(self, sym: str, layout: Layout, dtype: str, source: Callable[[], np.ndarray]) -> SSAValue:
        key = f"{self.name}/{sym}"
        self.shards.append(WeightShard(key, layout, dtype, source))
        return self.buffer(sym, layout.tile, dtype, layout=layout, persistent=True, weight=key)

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
    def loop(self, count: int) -> Iterator[None]:
        if count <= 1:
            yield
            return
        self._blocks.append(Block())
        yield
        body = self._blocks.pop()
        self.emit(t.LoopOp.create(properties={"count": _i(count)}, regions=[Region(body)]))

    def recv(self, buf: SSAValue, slot: Slot) -> None:
        channel, window = self.inputs.get(slot, (f"{self.name}.{slot[0]}{slot[1]}", None))
        with self.loop(self.recv_repeat):
            self.op(t.RecvOp, [buf], channel=channel,
                    slice=ints(window) if window is not None else None)

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

    def allocate(self) -> int:
        """Assign offsets; returns the bytes per PE the region needs."""
        off = 0
        for persistent in (True, False):
            for b in self.bufs:
                if b.persistent != persistent:
                    continue
                b.op.properties["offset"] = _i(off)
                off += -(-b.op.nbytes // t.ALIGN) * t.ALIGN
        return off

    def finish(self, origin: tuple[int, int], fx: str = "") -> t.RegionOp:
        self.allocate()
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
        return t.RegionOp.create(properties=props, regions=[Region(body)])


def tile_bytes(shape, dtype: str) -> int:
    return math.prod(shape) * DTYPE_BYTES[dtype]
