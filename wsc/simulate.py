"""`wsc simulate`: run a bundle, optionally check it against PyTorch, summarise as JSON."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsc.errors import CheckpointError, UsageError
from wsc.numerics import compare
from wsc.bundle_format import MANIFEST, Manifest, sha256_file
from wsc.runtime_sim.scheduler import Event, RunResult
from wsc.runtime_sim.simulator import Simulator

# acceptance thresholds of the numerics check, by storage dtype (DESIGN §9)
TOLERANCE = {"f32": (1e-5, 1.0), "f16": (1e-2, 0.95), "bf16": (3e-2, 0.9)}


@dataclass
class SimulateOptions:
    bundle: Path
    tokens: list[int] | None = None
    seed: int = 0
    check: bool = False
    generate: int = 0
    estimate_only: bool = False
    checkpoint: Path | None = None
    trace: Path | None = None
    prompt_len: int | None = None  # random prompt length (and what --estimate-only models)
    compare_layers: bool = False  # with check: every kernel's output against torch
    requests: int | None = None  # model up to this many requests in flight (wsc/requests.py)

    def validate(self) -> None:
        if self.seed < 0:
            raise UsageError(f"--seed must be >= 0, got {self.seed}")
        if self.generate < 0:
            raise UsageError(f"--generate must be >= 0, got {self.generate}")
        if self.compare_layers and not self.check:
            raise UsageError("--compare-layers compares with PyTorch: it needs --check")
        if self.compare_layers and self.estimate_only:
            raise UsageError("--compare-layers needs the data a functional run moves; "
                             "--estimate-only moves none", hint="drop --estimate-only")
        if self.requests is not None and self.requests < 1:
            raise UsageError(f"--requests must be >= 1, got {self.requests}")
        if self.requests and self.requests > 1 and self.tokens is not None and not self.estimate_only:
            raise UsageError("--requests gives every request a random prompt of its own; "
                             "--tokens would be one of them", hint="use --prompt-len and --seed")
        if self.requests and self.check and not self.estimate_only and self.generate < 1:
            raise UsageError("--requests with --check compares every request's generated "
                             "tokens with torch's", hint="add --generate K")
        if self.prompt_len is not None and self.prompt_len < 1:
            raise UsageError(f"--prompt-len must be >= 1, got {self.prompt_len}")
        if self.prompt_len is not None and self.tokens is not None and len(self.tokens) != self.prompt_len:
            raise UsageError(f"--prompt-len {self.prompt_len} but --tokens gave {len(self.tokens)} ids",
                             hint="give one of them")

    def prompt_tokens(self, m: Manifest) -> int:
        """How many prompt tokens this run has: --tokens, --prompt-len, or the compiled length."""
        if self.tokens is not None:
            return len(self.tokens)
        return self.prompt_len if self.prompt_len is not None else m.seq_len


def breakdown(r: RunResult, clock_hz: float) -> dict[str, float]:
    """The latency split along its critical path, in seconds: compute, fabric (collectives,
    shifts, transfers between regions) and waiting (transfers compute did not hide)."""
    return {k: v / clock_hz for k, v in r.critical.items()}


def bundle_digest(bundle: Path) -> str:
    """What identifies a bundle: the sha256 of its manifest, which holds the sha256 of every
    other file, so a result can name the exact bundle it came from."""
    return "sha256:" + sha256_file(Path(bundle) / MANIFEST)


def decode_position(manifest: Manifest, generate: int, prompt: int | None = None) -> int:
    """The KV position of the decode step that is modeled: the last of `generate` steps (the
    slowest, its attention reads the longest cache), or the first when none is asked for,
    after a prompt of `prompt` tokens (default: the compiled length)."""
    p = manifest.seq_len if prompt is None else prompt
    return min(p + max(generate, 1) - 1, manifest.max_seq - 1)


def simulate(o: SimulateOptions) -> dict:
    t0 = time.perf_counter()
    o.validate()
    res = _estimate(o, t0) if o.estimate_only else _run(o, t0)
    if o.requests:
        from wsc.requests import requests_table

        n = res["prompt_len"]
        res["requests"] = requests_table(Simulator.open(o.bundle, functional=False), o.requests, n)
        res["sim_wall_s"] = time.perf_counter() - t0
    res["bundle_digest"] = bundle_digest(o.bundle)  # the bundle was verified as it was opened
    return res


def _run(o: SimulateOptions, t0: float) -> dict:
    sim = Simulator.open(o.bundle)
    m = sim.manifest
    check_prompt(m, o.prompt_tokens(m))
    check_kv_capacity(m, o.generate, o.prompt_tokens(m))
    ids = prompt(o, m)
    ckpt = o.checkpoint or Path(m.checkpoint.path)
    if o.check:
        check_checkpoint(m, ckpt)  # before the run: a check that cannot be made fails at once
    res: dict = {"bundle": str(o.bundle), "prompt": [int(i) for i in ids], "prompt_len": len(ids)}
    if o.generate:
        gen = sim.generate(ids, o.generate, trace=o.trace is not None)
        logits, prefill = gen.prefill_logits, gen.prefill
        res.update(tokens=gen.tokens, ttft_s=gen.ttft_s, tokens_per_s=gen.tokens_per_s)
    else:
        logits, prefill = sim.prefill(ids, trace=o.trace is not None)
    res.update(cycles=prefill.cycles, latency_s=sim.cost.seconds(prefill.cycles),
               breakdown=breakdown(prefill, sim.target.clock_hz))
    res["sim_wall_s"] = time.perf_counter() - t0
    if o.trace is not None:
        write_trace(o.trace, {"prefill": prefill, **_decode_trace(o, m)}, sim.target.clock_hz)
    if o.check:
        from wsc.golden import reference_generate, reference_logits

        ref = reference_logits(ckpt, ids)
        if m.prefill_logits == "last":
            ref = ref[-1:]
        agree = compare(logits, ref)
        rel_tol, top1_tol = TOLERANCE[m.dtype]
        res.update(agree.as_dict())
        res["tolerance"] = {"rel_l2_err": rel_tol, "top1_agree": top1_tol}
        passed = agree.rel_l2_err <= rel_tol and agree.top1_agree >= top1_tol
        if o.generate:
            want = reference_generate(ckpt, ids, o.generate)
            res["reference_tokens"] = want
            res["tokens_match"] = want == res["tokens"]
            passed = passed and (res["tokens_match"] or m.dtype != "f32")
        if o.requests:
            from wsc.requests import check_requests

            rng_prompts = [ids] + [np.random.default_rng(o.seed + r).integers(
                0, m.model.vocab_size, size=len(ids)) for r in range(1, o.requests)]
            fun = check_requests(sim, ckpt, rng_prompts, o.generate)
            res["requests_check"] = fun
            passed = passed and (all(fun["tokens_match"]) or m.dtype != "f32")
        if o.compare_layers:
            from wsc.layers import compare_layers

            res.update(compare_layers(sim, ckpt, ids, rel_tol))
            passed = passed and res["first_bad_kernel"] is None
        res["passed"] = passed
    return res


def prompt(o: SimulateOptions, m: Manifest) -> np.ndarray:
    """The prompt's token ids: `--tokens`, checked against the bundle, or random ones."""
    vocab = m.model.vocab_size
    check_prompt(m, o.prompt_tokens(m))
    if o.tokens is None:
        return np.random.default_rng(o.seed).integers(0, vocab, size=o.prompt_tokens(m))
    bad = [t for t in o.tokens if not 0 <= t < vocab]
    if bad:
        raise UsageError(f"--tokens: id {bad[0]} is not in this model's vocabulary [0, {vocab})")
    return np.asarray(o.tokens, dtype=np.int64)


def check_prompt(m: Manifest, n: int) -> None:
    """A bundle compiled with --seq-len N takes prompts of 1..N tokens."""
    if n > m.seq_len:
        raise UsageError(f"the prompt has {n} tokens, this bundle's prefill takes at most "
                         f"{m.seq_len}", hint=f"pass at most {m.seq_len} ids, or recompile with "
                                              f"--seq-len {n}")


def check_kv_capacity(m: Manifest, generate: int, prompt: int | None = None) -> None:
    """The prompt and all but the last generated token go through the KV cache (the last
    one is returned, never fed back): P + K - 1 positions."""
    p = m.seq_len if prompt is None else prompt
    need = p + generate - 1
    if generate and need > m.max_seq:
        raise UsageError(
            f"{p} prompt tokens + {generate} generated need {need} KV cache positions, "
            f"this bundle has {m.max_seq}",
            hint=f"use --generate {m.max_seq - p + 1} at most, or recompile with "
                 f"--max-seq {need}")


def check_checkpoint(m: Manifest, ckpt: Path) -> None:
    """`--check` compares with the checkpoint the bundle was compiled from, unchanged."""
    from wsc.golden import checkpoint_digest

    if not m.weights:
        raise UsageError("--check needs a bundle with weights; this one was compiled with "
                         "--no-weights", hint="use --estimate-only, or recompile with weights")
    if not Path(ckpt).exists():
        raise UsageError(f"--check needs the source checkpoint; {ckpt} does not exist",
                         hint="pass --checkpoint DIR")
    if checkpoint_digest(ckpt) != m.checkpoint.digest:
        raise CheckpointError(
            f"checkpoint {ckpt} is not what the bundle was compiled from: its digest differs "
            "from the manifest's (the checkpoint changed since, or it is another one), so the "
            "check would compare against other weights",
            hint="recompile the bundle, or pass --checkpoint with the checkpoint it was compiled from")


def _decode_phase(pos: int) -> str:
    return f"decode step at KV position {pos}"


def _decode_trace(o: SimulateOptions, manifest: Manifest) -> dict[str, RunResult]:
    """The traced decode step of a functional run: its timing does not depend on the data, so
    it is the cycle model's data-free run at the modeled position (no decode program: none)."""
    sim = Simulator.open(o.bundle, functional=False)
    if "decode" not in sim.programs:
        return {}
    pos = decode_position(manifest, o.generate, o.prompt_tokens(manifest))
    return {_decode_phase(pos): sim.run("decode", None, pos, trace=True)}


def _estimate(o: SimulateOptions, t0: float) -> dict:
    sim = Simulator.open(o.bundle, functional=False)
    m = sim.manifest
    n = o.prompt_len if o.prompt_len is not None else m.seq_len  # --tokens is not run
    check_prompt(m, n)
    check_kv_capacity(m, o.generate, n)
    trace = o.trace is not None
    pos = decode_position(m, o.generate, n)
    pre = sim.run("prefill", None, 0, trace=trace, prompt_len=n)
    dec = sim.run("decode", None, pos, trace=trace)
    if trace:
        write_trace(o.trace, {"prefill": pre, _decode_phase(pos): dec}, sim.target.clock_hz)
    dec_s = sim.cost.seconds(dec.cycles)
    return {
        "bundle": str(o.bundle), "estimate_only": True, "prompt_len": n,
        "cycles": pre.cycles, "latency_s": sim.cost.seconds(pre.cycles),
        "ttft_s": sim.cost.seconds(pre.cycles),
        "decode_cycles": dec.cycles, "decode_latency_s": dec_s,
        "tokens_per_s": 1.0 / dec_s if dec_s > 0 else 0.0,
        "breakdown": breakdown(pre, sim.target.clock_hz),
        "decode_breakdown": breakdown(dec, sim.target.clock_hz),
        "sim_wall_s": time.perf_counter() - t0,
    }


# Perfetto rounds a slice's `ts` and `dur` (microseconds) to whole nanoseconds; times are
# quantised to nanoseconds first, so slices that touch in cycles still touch, never overlap.
NS_PER_US = 1000


def write_trace(path: Path, runs: dict[str, RunResult], clock_hz: float) -> None:
    """Chrome/Perfetto trace JSON of one or more phases, each a process, laid end to end in
    the order given (decode starts where prefill ends).

    Every region has a track for what its PEs execute in order (compute, blocking fabric ops,
    sends, waits for input) and a track for its asynchronous fabric transfers, which run beside
    that compute; transfers that overlap each other get further tracks ("fabric 2", ...), so
    no two slices on one track overlap and Perfetto shows every one at depth 0.
    """
    ns_per_cycle = 1e9 / clock_hz
    events: list[dict] = []
    tid, offset = 0, 0.0
    for pid, (phase, r) in enumerate(runs.items()):
        events.append(_meta("process_name", pid, 0, f"{phase} ({r.cycles:,.0f} cycles)"))
        events.append(_meta("process_sort_index", pid, 0, pid, key="sort_index"))
        by_track: dict[tuple[str, str], list[Event]] = {}
        for e in r.events:
            by_track.setdefault((e.region, _track(e)), []).append(e)
        for region in r.regions:
            for kind in ("pe", "fabric"):
                lanes = _lanes(by_track.get((region, kind), []), offset, ns_per_cycle)
                for n, lane in enumerate(lanes):
                    tid += 1
                    name = f"{region} · {'compute' if kind == 'pe' else 'fabric'}"
                    events.append(_meta("thread_name", pid, tid, name + (f" {n + 1}" if n else "")))
                    events.append(_meta("thread_sort_index", pid, tid, tid, key="sort_index"))
                    events += [{"name": e.name, "cat": e.cat, "ph": "X", "pid": pid, "tid": tid,
                                "ts": ts / NS_PER_US, "dur": (end - ts) / NS_PER_US}
                               for ts, end, e in lane]
        offset += r.cycles
    path.write_text(json.dumps({"traceEvents": events, "displayTimeUnit": "ns"}) + "\n")


def _track(e: Event) -> str:
    """Fabric work goes on the fabric track; everything else runs on the PEs' own clock."""
    return "fabric" if e.cat == "fabric" else "pe"


def _lanes(events: list[Event], offset: float, ns_per_cycle: float) -> list[list[tuple]]:
    """Events as (start ns, end ns, event), packed greedily into the fewest lanes in which no
    two overlap. Events shorter than a nanosecond are dropped: Perfetto would draw them as
    zero-length slices nested inside their neighbours."""
    lanes: list[list[tuple]] = []
    spans = sorted((round((offset + e.start) * ns_per_cycle),
                    round((offset + e.start + e.dur) * ns_per_cycle), i) for i, e in enumerate(events))
    for ts, end, i in spans:
        if end <= ts:
            continue
        lane = next((ln for ln in lanes if ln[-1][1] <= ts), None)
        if lane is None:
            lane = []
            lanes.append(lane)
        lane.append((ts, end, events[i]))
    return lanes


def _meta(name: str, pid: int, tid: int, value, key: str = "name") -> dict:
    return {"name": name, "ph": "M", "pid": pid, "tid": tid, "args": {key: value}}
