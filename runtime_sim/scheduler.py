"""Runs one program: every region concurrently, as dataflow over channels.

Each region is a generator that executes its instructions in order and suspends at a `recv`
whose message has not been sent yet. The scheduler resumes regions whenever the message they
wait for arrives; when no region can make progress while some still wait, that is a deadlock,
reported with the region, the op and the channel.

Time is tracked per region (DESIGN §8): an instruction starts when the region is free and its
operands are ready, compute and blocking fabric ops advance the region's clock, asynchronous
shifts (into a second buffer) only mark their destination ready later so that they overlap
the compute that follows, and a message arrives at its send time plus the stream latency of
its route. Regions therefore overlap whenever the data lets them, and a program's latency is
when its last result reaches the host.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from xdsl.ir import SSAValue

from wsc.errors import SimulationError
from wsc.ir import tile as t
from wsc.runtime_sim.fabric import Message, pack, unpack
from wsc.runtime_sim.frame import Frame, Instr
from wsc.runtime_sim.memory import Buffer, RegionMemory
from wsc.runtime_sim.ops import COMPILERS
from wsc.machine.cost import CostModel


def compile_ops(ops) -> list[Instr]:
    out: list[Instr] = []
    for op in ops:
        if isinstance(op, t.BufferOp):
            continue
        if isinstance(op, t.LoopOp):
            body = compile_ops(op.body.block.ops)
            out.append(Instr(op, "loop", lambda fr: None, lambda fr: 0.0, body=body,
                             count=op.count.value.data))
            continue
        compiler = COMPILERS.get(type(op))
        if compiler is None:
            raise SimulationError(f"the simulator has no implementation of {op.name}")
        out.append(compiler(op))
    return out


@dataclass
class LoadedRegion:
    op: t.RegionOp
    name: str
    grid: tuple[int, int]
    buffers: list[t.BufferOp]
    instrs: list[Instr]


@dataclass
class LoadedProgram:
    name: str
    tokens: int
    regions: list[LoadedRegion]
    channels: dict[str, t.ChannelOp]

    @classmethod
    def load(cls, prog: t.ProgramOp) -> LoadedProgram:
        regions = [
            LoadedRegion(r, r.sym_name.data, r.grid, r.buffers(), compile_ops(r.body.block.ops))
            for r in prog.regions_()
        ]
        channels = {c.sym_name.data: c for c in prog.channels()}
        return cls(prog.sym_name.data, prog.tokens.value.data, regions, channels)


@dataclass
class Event:
    region: str
    name: str
    cat: str
    start: float
    dur: float


@dataclass
class RegionStats:
    end: float = 0.0
    compute: float = 0.0
    fabric: float = 0.0
    waiting: float = 0.0


@dataclass
class RunResult:
    outputs: dict[str, np.ndarray]
    cycles: float
    regions: dict[str, RegionStats]
    critical: dict[str, float]  # the latency, split along its critical path
    events: list[Event] = field(default_factory=list)


class ProgramRun:
    def __init__(self, program: LoadedProgram, memory: dict[str, RegionMemory], cost: CostModel,
                 *, pos0: int, inputs: dict[str, list[np.ndarray] | None], functional: bool = True,
                 trace: bool = False, check_finite: bool = True):
        """`inputs` maps each host channel to the messages the host sends on it, in order
        (one per prefill chunk); None means "as many as asked for" when only estimating."""
        self.program = program
        self.memory = memory
        self.cost = cost
        self.pos0 = pos0
        self.functional = functional
        self.trace = trace
        self.check_finite = check_finite and functional
        self.mail: dict[str, deque[Message]] = {n: deque() for n in program.channels}
        self.waiting_on: dict[str, str] = {}
        self.runnable: deque[str] = deque()
        self.outputs: dict[str, list[np.ndarray]] = {}
        self.sources: dict[str, deque[np.ndarray] | None] = {}
        self.output_time = 0.0
        self.output_path = (0.0, 0.0, 0.0)
        self.events: list[Event] = []
        for name, ch in program.channels.items():
            if ch.src.data == t.HOST:
                if name not in inputs:
                    raise SimulationError(f"program {program.name} needs input channel {name}")
                msgs = inputs[name]
                self.sources[name] = None if msgs is None else deque(np.asarray(m) for m in msgs)

    def _available(self, channel: str) -> bool:
        if self.mail[channel]:
            return True
        if channel in self.sources:  # the host sends its next message when asked
            src = self.sources[channel]
            if src is None:
                self.mail[channel].append(Message(None, (0, 0), 0.0))
                return True
            if src:
                data = src.popleft()
                self.mail[channel].append(Message(data, tuple(data.shape), 0.0))
                return True
        return False

    # --- one region -----------------------------------------------------------------------

    def _frame(self, region: LoadedRegion) -> Frame:
        bufs: dict[SSAValue, Buffer] = {}
        mem = self.memory.get(region.name)
        for b in region.buffers:
            bufs[b.result] = mem.bind(b) if self.functional else Buffer.declared(b)
        return Frame(region.name, region.op.kernel.data, region.grid, bufs, self.cost, self.pos0,
                     self.functional)

    def _event(self, fr: Frame, ins: Instr, cat: str, start: float, end: float) -> None:
        if self.trace and end > start:
            self.events.append(Event(fr.region, ins.op.name.removeprefix("wsc.tile."), cat,
                                     start, end - start))

    def _exec(self, fr: Frame, instrs: list[Instr]) -> Iterator[Instr]:
        for ins in instrs:
            if ins.kind == "loop":
                yield from self._loop(fr, ins)
            elif ins.kind == "recv":
                while not self._available(ins.channel):
                    yield ins
                msg = self.mail[ins.channel].popleft()
                start = fr.clock
                if msg.arrival > fr.clock:
                    fr.waiting += msg.arrival - fr.clock
                    fr.clock, fr.path = msg.arrival, msg.path
                self._event(fr, ins, "wait", start, fr.clock)
                unpack(fr, ins, msg)
                fr.buf(ins.writes[0]).ready = fr.clock
            elif ins.kind == "send":
                self._send(fr, ins)
            elif ins.kind in ("advance", "swap"):  # bookkeeping: also when only estimating
                ins.run(fr)
            else:
                self._step(fr, ins)

    STEADY = 4  # iterations after which a data-free loop is in steady state

    def _loop(self, fr: Frame, ins: Instr) -> Iterator[Instr]:
        """Run a loop. When only estimating, and the body moves no messages, iterations after
        the first few repeat the same timing, so the rest are added in one step. The step
        spans two iterations (a double-buffered body alternates between two buffers) and an
        even number of iterations is skipped, so buffer swaps end where they would."""
        count = ins.count
        shortcut = (not fr.functional and count > self.STEADY + 2
                    and all(i.kind not in ("recv", "send", "loop") for i in ins.body))
        if not shortcut:
            for _ in range(count):
                yield from self._exec(fr, ins.body)
            return
        run = self.STEADY + (count - self.STEADY) % 2
        for _ in range(run - 2):
            yield from self._exec(fr, ins.body)
        before = (fr.clock, fr.path, fr.compute, fr.fabric, fr.waiting)
        for _ in range(2):
            yield from self._exec(fr, ins.body)
        n = (count - run) // 2  # skipped periods of two iterations
        d_clock = fr.clock - before[0]
        fr.path = tuple(p + n * (p - q) for p, q in zip(fr.path, before[1]))  # type: ignore[assignment]
        fr.compute += n * (fr.compute - before[2])
        fr.fabric += n * (fr.fabric - before[3])
        fr.waiting += n * (fr.waiting - before[4])
        for b in fr.bufs.values():
            if b.ready > before[0]:
                b.ready += n * d_clock
        fr.clock += n * d_clock

    def _ready(self, fr: Frame, ins: Instr) -> float:
        ready = fr.clock
        for v in ins.reads + ins.writes:
            ready = max(ready, fr.bufs[v].ready)
        return ready

    def _step(self, fr: Frame, ins: Instr) -> None:
        start = self._ready(fr, ins)
        fr.advance(start - fr.clock, 2)  # an asynchronous transfer was not hidden
        if fr.functional:
            with np.errstate(all="ignore"):  # padding lanes may divide by zero; see _finite
                ins.run(fr)
        cycles = ins.cycles(fr)
        if ins.kind == "async":
            # the transfer runs beside the compute that follows; its target is ready later
            issue = self.cost.target.instruction_overhead_cycles
            for w in ins.writes:
                fr.buf(w).ready = start + cycles
            fr.advance(issue, 1)
            self._event(fr, ins, "fabric", start, start + cycles)
        else:
            fr.advance(cycles, 1 if ins.kind == "fabric" else 0)
            self._event(fr, ins, ins.kind, start, fr.clock)
        if self.check_finite:
            for w in ins.writes:
                self._finite(fr, ins, fr.buf(w))

    @staticmethod
    def _finite(fr: Frame, ins: Instr, b: Buffer) -> None:
        """NaN/Inf in a buffer's real elements is an error; padding lanes are don't-care."""
        if b.dtype not in ("f32", "f16", "bf16"):
            return
        v = b.view.astype(np.float32)
        if b.layout is not None and len(b.dims) == 2:
            rows = b.layout.valid(0, b.rot)[:, :, :, None]
            cols = b.layout.valid(1, b.rot)[:, :, None, :]
            v = np.where(rows & cols, v, 0.0)
        if not np.isfinite(v).all():
            raise SimulationError(
                f"NaN/Inf first produced by {ins.op.name} in region {fr.region} "
                f"(kernel {fr.kernel}), in buffer {b.name}"
            )

    def _send(self, fr: Frame, ins: Instr) -> None:
        ch = self.program.channels[ins.channel]
        start = self._ready(fr, ins)
        fr.advance(start - fr.clock, 2)
        data = pack(fr, ins)
        b = fr.buf(ins.reads[0])
        shape = b.layout.shape if b.layout is not None else (0, 0)
        nbytes = ch.nbytes.value.data
        if ch.dst.data == t.HOST:
            # results stream off the region, one lane per row of PEs, to the wafer's edge I/O
            self.outputs.setdefault(ins.channel, []).append(data)
            fr.advance(self.cost.stream(nbytes, 0, lanes=fr.grid[0]), 1)
            self._event(fr, ins, "send", start, fr.clock)
            if fr.clock >= self.output_time:
                self.output_time, self.output_path = fr.clock, fr.path
            return
        hops = ch.hops.value.data if ch.hops is not None else 0
        lanes = ch.lanes.value.data if ch.lanes is not None else 1
        load = ch.load.value.data if ch.load is not None else nbytes
        contention = max(1.0, load / max(1, nbytes))
        body = self.cost.stream(nbytes, 0, lanes=lanes, contention=contention) - 2 * \
            self.cost.target.ramp_latency_cycles
        total = self.cost.stream(nbytes, hops, lanes=lanes, contention=contention)
        path = (fr.path[0], fr.path[1] + total, fr.path[2])
        fr.advance(body, 1)  # the sender streams the data out
        self._event(fr, ins, "send", start, fr.clock)
        self.mail[ins.channel].append(Message(data, shape, start + total, path))
        waiter = self.waiting_on.pop(ins.channel, None)
        if waiter is not None:
            self.runnable.append(waiter)

    # --- all regions ----------------------------------------------------------------------

    def run(self) -> RunResult:
        frames = {r.name: self._frame(r) for r in self.program.regions}
        gens = {r.name: self._exec(frames[r.name], r.instrs) for r in self.program.regions}
        blocked: dict[str, Instr] = {}
        self.runnable.extend(gens)
        while self.runnable:
            name = self.runnable.popleft()
            blocked.pop(name, None)
            try:
                ins = next(gens[name])
            except StopIteration:
                continue
            if self._available(ins.channel):  # it arrived while we were deciding
                self.runnable.append(name)
                continue
            blocked[name] = ins
            self.waiting_on[ins.channel] = name
        if blocked:
            raise SimulationError(self._deadlock(blocked))
        self._check_persistent(frames)
        stats = {
            n: RegionStats(f.clock, f.compute, f.fabric, f.waiting) for n, f in frames.items()
        }
        last = max(frames.values(), key=lambda f: f.clock)
        if self.output_time >= last.clock:
            end, path = self.output_time, self.output_path
        else:
            end, path = last.clock, last.path
        critical = {"compute": path[0], "fabric": path[1], "waiting": path[2]}
        outputs = {c: (np.concatenate(ms, axis=0) if self.functional else None)
                   for c, ms in self.outputs.items()}
        return RunResult(outputs, end, stats, critical, self.events)

    def _deadlock(self, blocked: dict[str, Instr]) -> str:
        regions = {r.name: r for r in self.program.regions}
        lines = []
        for name, ins in sorted(blocked.items()):
            ch = self.program.channels.get(ins.channel)
            src = ch.src.data if ch is not None else "?"
            if src in blocked:
                why = f"which is itself waiting for channel {blocked[src].channel}"
            elif src == t.HOST:
                why = "which the host did not provide"
            else:
                why = "which finished without sending it"
            op = regions[name].op
            module = op.module.data if op.module is not None else "?"
            lines.append(f"  region {name} ({op.kernel.data} at {module}) waits in {ins.op.name} "
                         f"for channel {ins.channel} from {src}, {why}")
        return (f"deadlock in program {self.program.name}: receives that no send can match\n"
                + "\n".join(lines))

    def _check_persistent(self, frames: dict[str, Frame]) -> None:
        for fr in frames.values():
            for b in fr.bufs.values():
                if b.persistent and (b.rot != (0, 0) or b.offset != b.home):
                    raise SimulationError(
                        f"region {fr.region}: persistent buffer {b.name} ends the program "
                        f"{'rotated by ' + str(b.rot) if b.rot != (0, 0) else 'swapped out of its home'}"
                        ": the next run would see scrambled data"
                    )


def estimate_region(region: t.RegionOp, cost: CostModel, pos0: int = 0) -> RunResult:
    """Modeled time of one region on its own: its inputs are ready at cycle 0 and its results
    stream to the host. The planner uses this to compare grids."""
    from xdsl.dialects.builtin import IntegerAttr, StringAttr, i64
    from xdsl.ir import Block, Region

    name = region.sym_name.data
    chans = []
    for op in region.walk():
        if isinstance(op, (t.RecvOp, t.SendOp)):
            src, dst = (t.HOST, name) if isinstance(op, t.RecvOp) else (name, t.HOST)
            nbytes = buffer_nbytes(op.dst if isinstance(op, t.RecvOp) else op.src)
            chans.append(t.ChannelOp.create(properties={
                "sym_name": StringAttr(op.channel.data), "src": StringAttr(src),
                "dst": StringAttr(dst), "bytes": IntegerAttr(nbytes, i64)}))
    prog = t.ProgramOp.create(
        properties={"sym_name": StringAttr("estimate"), "phase": StringAttr("estimate"),
                    "tokens": IntegerAttr(0, i64)},
        regions=[Region(Block([region, *chans]))],
    )
    loaded = LoadedProgram.load(prog)
    inputs: dict = {c: None for c, ch in loaded.channels.items() if ch.src.data == t.HOST}
    return ProgramRun(loaded, {}, cost, pos0=pos0, inputs=inputs, functional=False).run()


def buffer_nbytes(v: SSAValue) -> int:
    """Bytes of the global matrix a buffer holds (its layout's shape), or of one PE's tile."""
    b = t.buffer_of(v)
    per = b.nbytes // max(1, math.prod(b.dims))
    if b.layout is not None:
        return math.prod(b.layout.data.shape) * per
    return b.nbytes
