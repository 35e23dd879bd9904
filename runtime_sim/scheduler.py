"""Runs one program: every region concurrently, as dataflow over channels.

Each region is a generator that executes its instructions in order and suspends at a `recv`
whose message has not been sent yet, or at a `send` whose receiver's FIFO is full (channels.py).
The scheduler resumes regions whenever what they wait for happens; when no region can make
progress while some still wait, that is a deadlock, reported with the region, the op and the
channel.

Time is tracked per region (DESIGN §8): an instruction starts when the region is free and its
operands are ready, compute and blocking fabric ops advance the region's clock, asynchronous
shifts (into a second buffer) only mark their destination ready later so that they overlap
the compute that follows, and a message arrives at its send time plus its transfer time. A
send into a full FIFO starts when the receiver frees a slot. Regions therefore overlap
whenever the data and the FIFOs let them, and a program's latency is when its last result
reaches the host.

Regions of one stack (folded layers, passes/plan.py) share their PEs: an instruction of one
member starts only once the stack's previous instruction has ended (`Frame.turn`/`hold`), so
their programs are time-multiplexed and the sequencing is charged as waiting.

Three shapes of work are computed in bulk, each recognised exactly and checked at run time,
with the steps still run for their timing and (lazy) moves, and each guarded by a test that
compares it with its steps: a Cannon loop's product (cannon.py), a prefill attention ring
(ring.py) and a decode GEMV, a matmul with the all-reduce after it (gemv.py). NaN/Inf is checked
after every op that computes, on the buffer as stored (a bulk path checks what its steps would
have and names the same op).
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
from wsc.runtime_sim.channels import (
    Channel, Endpoint, deliver, endpoints, gather, take, transfer_cycles,
)
from wsc.runtime_sim.frame import Frame, Instr, Stack
from wsc.runtime_sim.memory import Buffer, Decl, RegionMemory, all_finite
from wsc.runtime_sim import cannon, fabric, gemv, ring  # fabric: registers the fabric ops
from wsc.runtime_sim.ops import COMPILERS
from wsc.machine.cost import CostModel


def compile_ops(ops) -> list[Instr]:
    out: list[Instr] = []
    for op in ops:
        if isinstance(op, t.BufferOp):
            continue
        if isinstance(op, t.LoopOp):
            body = compile_ops(op.body.block.ops)
            count = op.count.value.data
            out.append(Instr(op, "loop", lambda fr: None, lambda fr: 0.0, body=body,
                             count=count, cannon=cannon.recognize(body, count),
                             ring=ring.recognize(body, count),
                             label="chunks" if op.chunks is not None else ""))
            continue
        compiler = COMPILERS.get(type(op))
        if compiler is None:
            raise SimulationError(f"the simulator has no implementation of {op.name}")
        out.append(compiler(op))
    for a, b in zip(out, out[1:]):
        a.gemv = gemv.recognize(a, b)
    return out


@dataclass
class LoadedRegion:
    op: t.RegionOp
    name: str
    grid: tuple[int, int]
    buffers: list[t.BufferOp]
    instrs: list[Instr]
    decls: list[Decl] = field(default_factory=list)  # the buffers' declarations, read once

    def __post_init__(self) -> None:
        if not self.decls:
            self.decls = [Decl.of(b) for b in self.buffers]


@dataclass
class LoadedProgram:
    name: str
    tokens: int
    regions: list[LoadedRegion]
    channels: dict[str, t.ChannelOp]
    _endpoints: dict[str, Endpoint] | None = None

    def endpoints(self) -> dict[str, Endpoint]:
        """The receiving end of every channel (read from the IR once, not in every run)."""
        if self._endpoints is None:
            self._endpoints = endpoints(self.regions, self.channels)
        return self._endpoints

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


@dataclass(frozen=True)
class Blocked:
    """Why a region cannot go on: it waits for a message, or for room in a FIFO."""

    kind: str  # "recv" | "send"
    channel: str
    op: Instr


class ProgramRun:
    def __init__(self, program: LoadedProgram, memory: dict[str, RegionMemory], cost: CostModel,
                 *, pos0: int, inputs: dict[str, list[np.ndarray] | None], functional: bool = True,
                 trace: bool = False, check_finite: bool = True, chunks: int | None = None,
                 last_rows: int | None = None):
        """`inputs` maps each host channel to the messages the host sends on it, in order
        (one per prefill chunk); None means "as many as asked for" when only estimating.
        A prompt shorter than the compiled one runs `chunks` chunks (the loops marked
        `chunks`), of which the last holds `last_rows` prompt tokens (the rest is padding,
        which causal masking keeps out of every real token's result)."""
        self.program = program
        self.chunks = chunks
        self.last_rows = last_rows
        # functional: every message sent, per (region, channel), in order (--compare-layers)
        self.record: dict[tuple[str, str], list[np.ndarray]] | None = None
        self.memory = memory
        self.cost = cost
        self.pos0 = pos0
        self.functional = functional
        self.trace = trace
        self.check_finite = check_finite and functional
        ends = program.endpoints()
        self.channels: dict[str, Channel] = {}
        for name, op in program.channels.items():
            dst = ends.get(name) if op.dst.data != t.HOST else None
            if op.dst.data != t.HOST and dst is None:
                raise SimulationError(f"channel {name}: region {op.dst.data} never receives it")
            ch = Channel(op, dst)
            if ch.from_host:
                if name not in inputs:
                    raise SimulationError(f"program {program.name} needs input channel {name}")
                msgs = inputs[name]
                ch.host_open = msgs is None
                ch.host_messages = None if msgs is None else deque(np.asarray(m) for m in msgs)
            self.channels[name] = ch
        self.frames: dict[str, Frame] = {}
        self.stacks: dict[str, Stack] = {}  # regions time-multiplexed on shared PEs
        self.waiting: dict[tuple[str, str], str] = {}  # (kind, channel) -> blocked region
        self.runnable: deque[str] = deque()
        self.outputs: dict[str, list[np.ndarray]] = {}
        self.output_time = 0.0
        self.output_path = (0.0, 0.0, 0.0)
        self.events: list[Event] = []

    # --- one region -----------------------------------------------------------------------

    def _frame(self, region: LoadedRegion) -> Frame:
        bufs: dict[SSAValue, Buffer] = {}
        mem = self.memory.get(region.name)
        for b, d in zip(region.buffers, region.decls):
            bufs[b.result] = mem.bind(d) if self.functional else Buffer.declared(d)
        stack = None
        if region.op.stack is not None:
            stack = self.stacks.setdefault(region.op.stack.data, Stack(region.op.stack.data))
        return Frame(region.name, region.op.kernel.data, region.grid, bufs, self.cost, self.pos0,
                     self.functional, stack=stack)

    def _event(self, fr: Frame, ins: Instr, cat: str, start: float, end: float) -> None:
        if self.trace and end > start:
            self.events.append(Event(fr.region, ins.op.name.removeprefix("wsc.tile."), cat,
                                     start, end - start))

    def _exec(self, fr: Frame, instrs: list[Instr]) -> Iterator[Blocked]:
        it = iter(instrs)
        for ins in it:
            if ins.gemv is not None and fr.functional and gemv.applies(fr, ins.gemv):
                with np.errstate(all="ignore"):
                    y = gemv.compute(fr, ins.gemv)
                if y is not None:  # both ops run for their timing, the product is done
                    self._step(fr, ins, data=False)
                    self._step(fr, next(it), data=False)
                    gemv.finish(fr, ins.gemv, y)
                    continue
            if ins.kind == "loop":
                yield from self._loop(fr, ins)
            elif ins.kind == "recv":
                yield from self._recv(fr, ins)
            elif ins.kind == "send":
                yield from self._send(fr, ins)
            elif ins.kind in ("advance", "swap"):  # bookkeeping: also when only estimating
                ins.run(fr)
            else:
                self._step(fr, ins)

    STEADY = 4  # iterations after which a data-free loop is in steady state

    def _loop(self, fr: Frame, ins: Instr) -> Iterator[Blocked]:
        """Run a loop. When only estimating, and the body moves no messages, iterations after
        the first few repeat the same timing, so the rest are added in one step. The step
        spans two iterations (a double-buffered body alternates between two buffers) and an
        even number of iterations is skipped, so buffer swaps end where they would."""
        count = self.chunks if ins.label == "chunks" and self.chunks is not None else ins.count
        shortcut = (not fr.functional and count > self.STEADY + 2
                    and all(i.kind not in ("recv", "send", "loop") for i in ins.body))
        if fr.functional and ins.cannon is not None and cannon.applies(fr, ins.cannon, count):
            with np.errstate(all="ignore"):  # NaN/Inf is checked, not warned
                y = cannon.product(fr, ins.cannon)  # the steps still run, for time and moves
            fr.deferred = ins.cannon.matmul
            yield from self._bookkeeping_steps(fr, ins, count)
            fr.deferred = None
            cannon.add_into(fr, ins.cannon, y)
            if self.check_finite:
                self._finite(fr, ins.cannon.matmul, fr.buf(ins.cannon.acc))
            return
        if fr.functional and ins.ring is not None and ring.applies(fr, ins.ring):
            with np.errstate(all="ignore"):  # as in _step: NaN/Inf is checked, not warned
                state = ring.compute(fr, ins.ring, count, self.check_finite)
            fr.deferred = ins.ring.attend  # the steps still run, for time and moves
            yield from self._bookkeeping_steps(fr, ins, count)
            fr.deferred = None
            ring.finish(fr, ins.ring, count, state)
            return
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
        fr.hold()

    def _bookkeeping_steps(self, fr: Frame, ins: Instr, count: int) -> Iterator[Blocked]:
        """The steps of a loop whose data is computed in bulk (cannon.py, ring.py): what is
        left of them is timing and lazy moves (shifts add to a buffer's rotation, swaps trade
        storages), the same every period of two iterations once the loop is in steady state.
        That is checked, not assumed: after the first few iterations two periods run, and if
        they changed the clocks, every buffer's rotation and ready time by exactly the same
        amounts and left every buffer on the same storage, every remaining period would do
        the same again (each op's effect is a fixed shift of a value another op left), so
        the rest is added in one step. Otherwise, or with a trace, every step runs."""
        body = ins.body
        done = 0
        if (not self.trace and count >= self.STEADY + 6
                and all(i.kind not in ("recv", "send", "loop", "advance") for i in body)):
            warm = self.STEADY + (count - self.STEADY) % 2  # leaves an even number of steps
            for _ in range(warm):
                yield from self._exec(fr, body)
            snaps = [_snapshot(fr)]
            for _ in range(2):
                for _ in range(2):
                    yield from self._exec(fr, body)
                snaps.append(_snapshot(fr))
            done = warm + 4
            period = _period(snaps[0], snaps[1], fr.grid)
            if period is not None and period == _period(snaps[1], snaps[2], fr.grid):
                n = (count - done) // 2
                _advance_periods(fr, period, n)
                fr.hold()
                done += 2 * n
        for _ in range(count - done):
            yield from self._exec(fr, body)

    def _ready(self, fr: Frame, ins: Instr) -> float:
        ready = fr.clock
        for v in ins.reads + ins.writes:
            ready = max(ready, fr.bufs[v].ready)
        return ready

    def _step(self, fr: Frame, ins: Instr, data: bool = True) -> None:
        """Run one instruction: its data (unless computed in bulk: `data` False, or the
        frame's deferred op), its NaN/Inf check, and its time."""
        data = data and fr.functional and ins is not fr.deferred
        start = fr.turn(self._ready(fr, ins))
        fr.advance(start - fr.clock, 2)  # an asynchronous transfer was not hidden, or a stack
        if data:
            if not ins.lazy:
                fr.prepare(ins)
            with np.errstate(all="ignore"):  # padding lanes may divide by zero; see _finite
                ins.run(fr)
            if not ins.lazy:
                fr.wrote(ins)
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
        fr.hold()
        if self.check_finite and ins.computes and data:
            for w in ins.writes:
                self._finite(fr, ins, fr.buf(w))

    @staticmethod
    def _finite(fr: Frame, ins: Instr, b: Buffer) -> None:
        """NaN/Inf in a buffer's real elements is an error; padding lanes are don't-care. One
        pass over the buffer as it is stored; the padding is looked at only if that fails."""
        if b.dtype not in ("f32", "f16", "bf16") or all_finite(b.src.view):
            return
        bad = ~np.isfinite(b.contents())
        if b.layout is not None and len(b.dims) == 2:
            bad &= b.layout.valid_mask(b.rot)
        if bad.any():
            raise SimulationError(
                f"NaN/Inf first produced by {ins.op.name} in region {fr.region} "
                f"(kernel {fr.kernel}), in buffer {b.name}"
            )

    # --- channels -------------------------------------------------------------------------

    def _wake(self, kind: str, channel: str) -> None:
        waiter = self.waiting.pop((kind, channel), None)
        if waiter is not None:
            self.runnable.append(waiter)

    def _host_sends(self, ch: Channel) -> bool:
        """The host puts its next message into the FIFO once its slot is free."""
        n = ch.sent
        free = ch.slot_free_at(n)
        if free is None:
            return False
        if ch.host_open:
            data = None
        elif ch.host_messages:
            data = ch.host_messages.popleft()
        else:
            return False
        dst = ch.dst
        total, _ = transfer_cycles(self.cost, ch.op, dst, (dst.grid[0], 1))  # type: ignore[arg-type]
        if data is not None:
            deliver(ch, self.frames[dst.region].bufs[dst.fifo.result], data, n)  # type: ignore[union-attr]
        start = max(free, self._host_ready(ch, n))
        ch.arrivals.append((start + total, (0.0, float(start + total), 0.0)))
        ch.sent += 1
        return True

    def _host_ready(self, ch: Channel, n: int) -> float:
        """When the host has message `n` of `ch` (serving.py: a token that depends on an
        earlier output). A single program's inputs are all there from the start."""
        return 0.0

    def _output(self, ch: Channel, fr: Frame) -> None:
        """A message reached the host (serving.py feeds tokens back from here)."""

    def _recv(self, fr: Frame, ins: Instr) -> Iterator[Blocked]:
        ch = self.channels[ins.channel]
        while not ch.has_message() and not (ch.from_host and self._host_sends(ch)):
            yield Blocked("recv", ch.name, ins)
        n = ch.taken
        arrival, path = ch.arrivals.popleft()
        start = fr.clock
        if arrival > fr.clock:
            fr.waiting += arrival - fr.clock
            fr.clock, fr.path = arrival, path
        self._event(fr, ins, "wait", start, fr.clock)
        if fr.functional:
            fr.claim(fr.buf(ins.writes[0]))
            take(fr, ins, n, ch.dst.depth)  # type: ignore[union-attr]
            fr.wrote(ins)
        fr.advance(fr.turn(fr.clock) - fr.clock, 2)
        copy_start = fr.clock
        dst = fr.buf(ins.writes[0])
        fr.advance(self.cost.elementwise(math.prod(dst.dims), dst.dtype, reads=1,
                                         out_dtype=dst.dtype), 1)
        fr.hold()
        self._event(fr, ins, "fabric", copy_start, fr.clock)
        ch.taken += 1
        ch.freed[n] = fr.clock
        dst.ready = fr.clock
        self._wake("send", ch.name)

    def _send(self, fr: Frame, ins: Instr) -> Iterator[Blocked]:
        ch = self.channels[ins.channel]
        b = fr.buf(ins.reads[0])
        if ch.dst is None:  # to the host: one lane per row of PEs, to the wafer's edge I/O
            start = fr.turn(self._ready(fr, ins))
            fr.advance(start - fr.clock, 2)
            if fr.functional:
                self.outputs.setdefault(ch.name, []).append(self._sent(fr, ins, gather(fr, b)))
            fr.advance(self.cost.stream(ch.op.nbytes.value.data, 0, lanes=fr.grid[0]), 1)
            fr.hold()
            self._event(fr, ins, "send", start, fr.clock)
            if fr.clock >= self.output_time:
                self.output_time, self.output_path = fr.clock, fr.path
            self._output(ch, fr)
            return
        n = ch.sent
        while ch.slot_free_at(n) is None:  # back-pressure: every FIFO slot is full
            yield Blocked("send", ch.name, ins)
        start = fr.turn(max(self._ready(fr, ins), ch.slot_free_at(n)))  # type: ignore[type-var]
        fr.advance(start - fr.clock, 2)
        if fr.functional:
            dst = ch.dst
            final = self.last_rows is not None and n == (self.chunks or 1) - 1
            deliver(ch, self.frames[dst.region].bufs[dst.fifo.result],
                    self._sent(fr, ins, gather(fr, b)), n, self.last_rows if final else None)
        total, body = transfer_cycles(self.cost, ch.op, ch.dst, fr.grid)
        path = (fr.path[0], fr.path[1] + total, fr.path[2])
        fr.advance(body, 1)  # the sender streams the data out
        fr.hold()
        self._event(fr, ins, "send", start, fr.clock)
        ch.arrivals.append((start + total, path))
        ch.sent += 1
        self._wake("recv", ch.name)

    def _sent(self, fr: Frame, ins: Instr, g: np.ndarray) -> np.ndarray:
        if self.record is not None:
            self.record.setdefault((fr.region, ins.channel), []).append(g)
        return g

    # --- all regions ----------------------------------------------------------------------

    def run(self) -> RunResult:
        self.frames = frames = {r.name: self._frame(r) for r in self.program.regions}
        gens = {r.name: self._region(frames[r.name], r) for r in self.program.regions}
        blocked: dict[str, Blocked] = {}
        self.runnable.extend(gens)
        while self.runnable:
            name = self.runnable.popleft()
            blocked.pop(name, None)
            try:
                why = next(gens[name])
            except StopIteration:
                continue
            blocked[name] = why
            self.waiting[(why.kind, why.channel)] = name
            if self._unblocked(why):  # it changed while we were deciding
                self._wake(why.kind, why.channel)
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

    def _region(self, fr: Frame, region: LoadedRegion) -> Iterator[Blocked]:
        """What one region executes: its program once (serving.py: once per request step)."""
        return self._exec(fr, region.instrs)

    def _unblocked(self, why: Blocked) -> bool:
        ch = self.channels[why.channel]
        if why.kind == "recv":
            return ch.has_message() or (ch.from_host and ch.slot_free_at(ch.sent) is not None
                                        and (ch.host_open or bool(ch.host_messages)))
        return ch.slot_free_at(ch.sent) is not None

    def _deadlock(self, blocked: dict[str, Blocked]) -> str:
        regions = {r.name: r for r in self.program.regions}
        lines = []
        for name, why in sorted(blocked.items()):
            op = self.program.channels.get(why.channel)
            module = regions[name].op.module
            where = f"region {name} ({regions[name].op.kernel.data} at {module.data if module else '?'})"
            if why.kind == "send":
                dst = op.dst.data if op is not None else "?"
                state = (f"which is itself waiting for channel {blocked[dst].channel}"
                         if dst in blocked else "which finished without taking it")
                lines.append(f"  {where} waits in {why.op.op.name} for room in the FIFO of "
                             f"channel {why.channel} to {dst}, {state}")
                continue
            src = op.src.data if op is not None else "?"
            if src in blocked:
                state = f"which is itself waiting for channel {blocked[src].channel}"
            elif src == t.HOST:
                state = "which the host did not provide"
            else:
                state = "which finished without sending it"
            lines.append(f"  {where} waits in {why.op.op.name} for channel {why.channel} "
                         f"from {src}, {state}")
        return (f"deadlock in program {self.program.name}: receives that no send can match\n"
                + "\n".join(lines))

    def _check_persistent(self, frames: dict[str, Frame]) -> None:
        for fr in frames.values():
            for b in fr.bufs.values():
                if b.persistent and self.functional and b.lazy:  # the next run reads its SRAM
                    fr.claim(b)
                if b.persistent and (b.rot != (0, 0) or b.offset != b.declared_offset):
                    raise SimulationError(
                        f"region {fr.region}: persistent buffer {b.name} ends the program "
                        f"{'rotated by ' + str(b.rot) if b.rot != (0, 0) else 'swapped out of its home'}"
                        ": the next run would see scrambled data"
                    )


def _snapshot(fr: Frame):
    return (fr.clock, fr.path, fr.compute, fr.fabric, fr.waiting,
            [(b.home, b.src, b.perm, b.rot, b.ready) for b in fr.bufs.values()])


def _period(a, b, grid: tuple[int, int]):
    """What happened between two snapshots, or None if some buffer changed storage."""
    R, C = grid
    moves = []
    for x, y in zip(a[5], b[5]):
        if x[0] is not y[0] or x[1] is not y[1]:
            return None
        moves.append(((y[2][0] - x[2][0]) % R, (y[2][1] - x[2][1]) % C,
                      (y[3][0] - x[3][0]) % R, (y[3][1] - x[3][1]) % C, y[4] - x[4]))
    return (b[0] - a[0], tuple(p - q for p, q in zip(b[1], a[1])), b[2] - a[2], b[3] - a[3],
            b[4] - a[4], tuple(moves))


def _advance_periods(fr: Frame, period, n: int) -> None:
    """Apply `n` more periods of what `_period` measured."""
    d_clock, d_path, d_compute, d_fabric, d_waiting, moves = period
    R, C = fr.grid
    fr.clock += n * d_clock
    fr.path = tuple(p + n * d for p, d in zip(fr.path, d_path))  # type: ignore[assignment]
    fr.compute += n * d_compute
    fr.fabric += n * d_fabric
    fr.waiting += n * d_waiting
    for b, (p0, p1, r0, r1, d_ready) in zip(fr.bufs.values(), moves):
        b.perm = ((b.perm[0] + n * p0) % R, (b.perm[1] + n * p1) % C)
        b.rot = ((b.rot[0] + n * r0) % R, (b.rot[1] + n * r1) % C)
        b.ready += n * d_ready


def estimate_region(region: t.RegionOp, cost: CostModel, pos0: int = 0, *,
                    trace: bool = False) -> RunResult:
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
    return ProgramRun(loaded, {}, cost, pos0=pos0, inputs=inputs, functional=False,
                      trace=trace).run()


def buffer_nbytes(v: SSAValue) -> int:
    """Bytes of the global matrix a buffer holds (its layout's shape), or of one PE's tile."""
    b = t.buffer_of(v)
    per = b.nbytes // max(1, math.prod(b.dims))
    if b.layout is not None:
        return math.prod(b.layout.data.shape) * per
    return b.nbytes
