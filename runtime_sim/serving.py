"""Many requests in flight: continuous batching through the pipeline of regions (issue 10).

A decode step of one request visits every region once, and a region works on one step at a
time. With R requests in flight, the host hands the wafer their steps round-robin (request 0,
1, ..., R-1, then 0 again), every region executes them in that order, and while region i works
on request r's token, region i+1 can already work on request r-1's: different requests'
tokens occupy different stages at once. Request r's next step needs the token its previous
step produced, so the host sends it only once that step's logits have reached it (closed loop).

`InterleavedRun` executes exactly that on the simulator's scheduler: one `ProgramRun` in which
every region runs its decode program once per step, in the common order, over the compiled
channels and their FIFOs (back-pressure included), the host feeding each request's tokens
back as their logits arrive. Nothing is assumed about overlap: the per-request period is
measured from the schedule, as the time between consecutive tokens of one request in steady
state. The bound it is compared against, from one step's schedule alone, is

    T(R) >= max(L, R * B)      per-request period; aggregate tokens/s = R / T(R)

where L is one step's latency (the critical path from the token leaving the host to its logits
arriving back: a request can go no faster than alone) and B = max_i b_i the busiest region's
busy time per step (compute + fabric: every region must serve all R requests each round). With
deep enough FIFOs a deterministic pipeline like this one reaches the bound; the compiled
decode FIFOs hold one message, so a residual edge that skips k kernels lets its producer run
at most one step ahead of the consumer, which the simulated period shows where it binds.

Time to first token under load: a new prompt arrives while R-1 requests decode. The host
admits it before the next round's tokens (prefill first): every region runs its prefill
program (all the prompt's chunks) after the decode steps it already holds and before the next
round's, so the prompt streams through the pipeline behind the in-flight tokens and the
decoders wait behind it; TTFT is from its arrival (when the host hands over the last token of
the round before) to its logits at the host. This mixed run is timing only.

What is functional and what is not: with data (`serve`), every request is prefilled on its
own, its KV cache saved, and the decode steps then run interleaved as above, each region
swapping in the KV cache of the request whose step it executes. The swap is bookkeeping of
the simulator and costs no cycles: on the wafer each request's cache would sit in SRAM of its
own, which the compiled plan must have room for — `kv_capacity` says how many requests' caches
the attention regions' free SRAM holds, and results beyond it are marked as needing a replan.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from xdsl.dialects.builtin import StringAttr

from wsc.errors import SimulationError
from wsc.ir import tile as t
from wsc.runtime_sim.channels import Channel, endpoints
from wsc.runtime_sim.frame import Frame, Instr
from wsc.runtime_sim.memory import Buffer, RegionMemory
from wsc.runtime_sim.scheduler import Blocked, LoadedRegion, ProgramRun, RunResult

PREFILL = "prefill:"  # prefix of the prefill program's channels in a mixed run


@dataclass(frozen=True)
class Step:
    """One program run of one request: a decode step feeding the token at KV position `pos`,
    or (phase "prefill") its whole prompt."""

    request: int
    pos: int
    phase: str = "decode"


class InterleavedRun(ProgramRun):
    """The decode program run once per step of `steps`, every region in the same order (see
    the module docstring); optionally one prefill among them (timing only)."""

    def __init__(self, sim, steps: list[Step], *, first_tokens: dict[int, int] | None = None,
                 state: dict | None = None, loaded: dict[str, int] | None = None,
                 prompt_len: int | None = None, arrival_after: int | None = None):
        functional = sim.functional
        self.steps = steps
        self.decode_steps = [s for s in steps if s.phase == "decode"]
        prog = sim.programs["decode"]
        ids_spec = sim.io("decode")[0]["ids"]
        self.ids_channel = ids_spec.channel
        self.logits_channel = sim.io("decode")[1]["logits"].channel
        chunks = last_rows = None
        self.prefill = any(s.phase == "prefill" for s in steps)
        if self.prefill:
            if functional:
                raise SimulationError("a prefill among interleaved decode steps is timing only")
            chunks, last_rows = sim.prompt_chunks(prompt_len or sim.manifest.seq_len)
        super().__init__(prog, sim.memory, sim.cost, pos0=0, inputs={self.ids_channel: []},
                         functional=functional, check_finite=sim.check_finite,
                         chunks=chunks, last_rows=last_rows)
        self.first_tokens = first_tokens or {}
        self.state = state if state is not None else {}
        self.loaded = dict(loaded or {})
        # decode step n's token comes from the output of the same request's previous step
        last: dict[int, int] = {}
        self.prev: list[int | None] = []
        for n, s in enumerate(self.decode_steps):
            self.prev.append(last.get(s.request))
            last[s.request] = n
        self.out_time: list[float] = []
        self.out_logits: list[np.ndarray] = []
        self.host_sent: dict[tuple[str, int], float] = {}
        self._queued = 0  # decode messages handed to the host channel so far
        self.arrival_after = arrival_after  # the prompt arrives with this decode message
        self.arrival = 0.0
        self.prefill_out: float | None = None
        self.instrs: dict[tuple[str, str], list[Instr]] = {
            ("decode", r.name): r.instrs for r in prog.regions}
        self.state_bufs: dict[str, list] = {
            r.name: [b.result for b in r.buffers if b.persistent is not None and b.weight is None]
            for r in prog.regions}
        self.extra: dict[str, LoadedRegion] = {}
        if self.prefill:
            self._add_prefill(sim.programs["prefill"], sim.io("prefill")[0]["ids"].channel, chunks)
        self._queue()

    # --- a prefill among the decode steps ---------------------------------------------

    def _add_prefill(self, prog, ids_channel: str, chunks: int) -> None:
        """The prefill program's regions run on the same frames (their buffers added), over
        channels of their own (renamed), fed by a host channel of their own."""
        ends = endpoints(prog.regions, prog.channels)
        for name, op in prog.channels.items():
            clone = op.clone()
            clone.properties["sym_name"] = StringAttr(PREFILL + name)
            ch = Channel(clone, ends.get(name) if op.dst.data != t.HOST else None)
            if ch.from_host:
                ch.host_messages = None
                ch.host_open = True
            self.channels[PREFILL + name] = ch
        self.prefill_ids = PREFILL + ids_channel
        for r in prog.regions:
            self.instrs[("prefill", r.name)] = _renamed(r.instrs)
            self.extra[r.name] = r

    def _frame(self, region: LoadedRegion) -> Frame:
        fr = super()._frame(region)
        other = self.extra.get(region.name)
        if other is not None:
            for b in other.buffers:
                fr.bufs[b.result] = Buffer.declared(b)
        return fr

    # --- the host ---------------------------------------------------------------------------

    def _queue(self) -> None:
        """Hand the host every decode token that is known: a request's first, or one whose
        previous step's logits have arrived."""
        ch = self.channels[self.ids_channel]
        queued = False
        while self._queued < len(self.decode_steps):
            n = self._queued
            p = self.prev[n]
            if p is not None and p >= len(self.out_time):
                break
            if not self.functional:
                token = None
            elif p is None:
                token = np.array([[self.first_tokens[self.decode_steps[n].request]]], np.int32)
            else:
                token = np.array([[int(np.argmax(self.out_logits[p][-1]))]], np.int32)
            ch.host_messages.append(token)  # type: ignore[union-attr]
            self._queued += 1
            queued = True
        if queued:
            self._wake("recv", self.ids_channel)

    def _host_ready(self, ch: Channel, n: int) -> float:
        if ch.name == self.ids_channel:
            p = self.prev[n]
            return self.out_time[p] if p is not None else 0.0
        if self.prefill and ch.name == self.prefill_ids:
            return self.arrival
        return 0.0

    def _host_sends(self, ch: Channel) -> bool:
        n = ch.sent
        sent = super()._host_sends(ch)
        if sent:
            landed = ch.arrivals[-1][0]
            self.host_sent[(ch.name, n)] = landed
            if ch.name == self.ids_channel and n == self.arrival_after:
                self.arrival = landed  # the prompt arrives as the round before it is on the wafer
        return sent

    def _output(self, ch: Channel, fr: Frame) -> None:
        if ch.name == self.logits_channel:
            self.out_time.append(fr.clock)
            if self.functional:
                self.out_logits.append(np.asarray(self.outputs[ch.name][-1], dtype=np.float32))
            self._queue()
        elif ch.name.startswith(PREFILL):
            self.prefill_out = fr.clock

    # --- the regions ------------------------------------------------------------------------

    def _region(self, fr: Frame, region: LoadedRegion) -> Iterator[Blocked]:
        for s in self.steps:
            instrs = self.instrs.get((s.phase, region.name))
            if instrs is None:
                continue
            fr.pos0 = s.pos if s.phase == "decode" else 0
            if self.functional:
                self._swap(fr, region.name, s.request)
            yield from self._exec(fr, instrs)
        if self.functional:
            self._swap(fr, region.name, None)

    def _swap(self, fr: Frame, region: str, request: int | None) -> None:
        """Put `request`'s KV cache into the region's SRAM (None: just save the current one)."""
        state = self.state_bufs.get(region)
        cur = self.loaded.get(region)
        if not state or cur == request:
            return
        for v in state:
            b = fr.buf(v)
            fr.claim(b)
            if cur is not None:
                self.state[(cur, region, b.name)] = b.view.copy()
            if request is not None:
                b.view[...] = self.state[(request, region, b.name)]
                b.home.version += 1
        if request is not None:
            self.loaded[region] = request


def _renamed(instrs: list[Instr]) -> list[Instr]:
    """Instructions with their channels prefixed (loops that move messages, recursively)."""
    out = []
    for ins in instrs:
        if ins.kind in ("recv", "send"):
            ins = dataclasses.replace(ins, channel=PREFILL + ins.channel)
        elif ins.kind == "loop" and _moves(ins.body):
            ins = dataclasses.replace(ins, body=_renamed(ins.body))
        out.append(ins)
    return out


def _moves(body: list[Instr]) -> bool:
    return any(i.kind in ("recv", "send") or (i.kind == "loop" and _moves(i.body)) for i in body)


# --- what callers use -----------------------------------------------------------------------


@dataclass
class Served:
    """Decode steps of R requests run interleaved."""

    requests: int
    tokens: dict[int, list[int]] = field(default_factory=dict)  # per request, with data
    times: dict[int, list[float]] = field(default_factory=dict)  # cycle each token reached the host
    run: RunResult | None = None

    def period(self) -> float:
        """Steady-state cycles between two tokens of one request: the mean over requests of
        their token spacing, leaving out the first round (the pipeline filling)."""
        gaps = []
        for ts in self.times.values():
            if len(ts) >= 3:
                gaps.append((ts[-1] - ts[1]) / (len(ts) - 2))
            elif len(ts) == 2:
                gaps.append(ts[1] - ts[0])
        return float(np.mean(gaps)) if gaps else 0.0


def round_robin(requests: int, rounds: int, start: dict[int, int]) -> list[Step]:
    return [Step(r, start[r] + k) for k in range(rounds) for r in range(requests)]


def _collect(run: InterleavedRun, steps: list[Step], requests: int) -> Served:
    out = Served(requests)
    for n, s in enumerate(run.decode_steps):
        out.times.setdefault(s.request, []).append(run.out_time[n])
        if run.functional:
            out.tokens.setdefault(s.request, []).append(int(np.argmax(run.out_logits[n][-1])))
    return out


def serve(sim, prompts: list[np.ndarray], generate: int) -> Served:
    """Greedy generation of `generate` tokens for each prompt, the requests' decode steps
    interleaved (functional): see the module docstring for what is swapped."""
    if generate < 1:
        raise SimulationError("serving needs at least one generated token per request")
    state: dict = {}
    first: dict[int, int] = {}
    persist = _state_ops(sim)
    for r, ids in enumerate(prompts):
        logits, _ = sim.prefill(ids)
        first[r] = int(np.argmax(logits[-1]))
        for region, ops in persist.items():
            mem = sim.memory[region]
            for op in ops:
                state[(r, region, op.sym.data)] = mem.bind(op).view.copy()
    loaded = {region: len(prompts) - 1 for region in persist}
    start = {r: len(ids) for r, ids in enumerate(prompts)}
    steps = round_robin(len(prompts), generate - 1, start)
    for s in steps:
        if s.pos >= sim.manifest.max_seq:
            raise SimulationError(
                f"request {s.request}: {len(prompts[s.request])} prompt tokens + {generate} "
                f"generated exceed the KV cache of {sim.manifest.max_seq} positions",
                hint="recompile with a larger --max-seq")
    served = Served(len(prompts))
    if steps:
        run = InterleavedRun(sim, steps, first_tokens=first, state=state, loaded=loaded)
        res = run.run()
        served = _collect(run, steps, len(prompts))
        served.run = res
    for r in range(len(prompts)):
        served.tokens[r] = [first[r]] + served.tokens.get(r, [])
    return served


def _state_ops(sim) -> dict[str, list[t.BufferOp]]:
    """Per region, its per-request state: the persistent buffers that are not weights."""
    out: dict[str, list[t.BufferOp]] = {}
    for r in sim.programs["decode"].regions:
        ops = [b for b in r.buffers if b.persistent is not None and b.weight is None]
        if ops:
            out[r.name] = ops
    return out


def decode_timing(sim, requests: int, pos: int, rounds: int = 4) -> Served:
    """Timing of `rounds` interleaved decode steps of `requests` requests at KV positions
    `pos`, `pos + 1`, ... (no data moves)."""
    steps = round_robin(requests, rounds, {r: pos for r in range(requests)})
    run = InterleavedRun(sim, steps)
    res = run.run()
    served = _collect(run, steps, requests)
    served.run = res
    return served


def ttft_under_load(sim, requests: int, pos: int, prompt_len: int, rounds: int = 3) -> tuple[float, float]:
    """(cycles from a new prompt's arrival to its logits, the longest gap between two tokens
    of a decoding request) with `requests - 1` others decoding; see the module docstring."""
    decoders = requests - 1
    if decoders == 0:
        r = sim.run("prefill", None, 0, prompt_len=prompt_len)
        return r.cycles, 0.0
    before = round_robin(decoders, rounds, {r: pos for r in range(decoders)})
    after = [Step(s.request, s.pos + rounds) for s in round_robin(decoders, rounds, {r: pos for r in range(decoders)})]
    steps = before + [Step(decoders, 0, "prefill")] + after
    run = InterleavedRun(sim, steps, prompt_len=prompt_len, arrival_after=len(before) - 1)
    run.run()
    if run.prefill_out is None:
        raise SimulationError("the prompt's logits never reached the host")
    gaps = []
    times = _collect(run, steps, decoders).times
    for ts in times.values():
        gaps += [b - a for a, b in zip(ts, ts[1:])]
    return run.prefill_out - run.arrival, max(gaps, default=0.0)


def kv_capacity(sim) -> int | None:
    """How many requests' KV caches the compiled plan holds: per region with per-request
    state, its free SRAM (budget minus everything it declares) over one request's state
    bytes, plus the one it has; the smallest over regions (None: no state)."""
    budget = sim.target.buffer_budget
    fits = []
    for name, (_, ops) in sim._regions().items():
        per = sum(b.nbytes for b in ops[0].buffers() if b.persistent is not None and b.weight is None)
        if per:
            fits.append(1 + (budget - RegionMemory.high_water(ops)) // per)
    return min(fits) if fits else None


def one_step_bound(run: RunResult) -> tuple[float, float, str]:
    """(L, B, the busiest region) of one decode step's schedule, for T(R) >= max(L, R * B)."""
    name, st = max(run.regions.items(), key=lambda kv: (kv[1].compute + kv[1].fabric, kv[0]))
    return run.cycles, st.compute + st.fabric, name
