"""`wsc simulate`: run a bundle, optionally check it against PyTorch, summarise as JSON."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsc.bundle_format import Manifest
from wsc.errors import CheckpointError, UsageError
from wsc.numerics import compare
from wsc.runtime_sim.scheduler import RunResult
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

    def validate(self) -> None:
        if self.seed < 0:
            raise UsageError(f"--seed must be >= 0, got {self.seed}")
        if self.generate < 0:
            raise UsageError(f"--generate must be >= 0, got {self.generate}")


def breakdown(r: RunResult, clock_hz: float) -> dict[str, float]:
    """The latency split along its critical path, in seconds: compute, fabric (collectives,
    shifts, transfers between regions) and waiting (transfers compute did not hide)."""
    return {k: v / clock_hz for k, v in r.critical.items()}


def simulate(o: SimulateOptions) -> dict:
    t0 = time.perf_counter()
    o.validate()
    if o.estimate_only:
        return _estimate(o, t0)
    sim = Simulator.open(o.bundle)
    m = sim.manifest
    check_kv_capacity(m, o.generate)
    ids = prompt(o, m)
    ckpt = o.checkpoint or Path(m.checkpoint.path)
    if o.check:
        check_checkpoint(m, ckpt)  # before the run: a check that cannot be made fails at once
    res: dict = {"bundle": str(o.bundle), "prompt": [int(i) for i in ids]}
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
        write_trace(o.trace, prefill, sim.cost.target.clock_hz)
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
        res["passed"] = passed
    return res


def prompt(o: SimulateOptions, m: Manifest) -> np.ndarray:
    """The prompt's token ids: `--tokens`, checked against the bundle, or random ones."""
    seq, vocab = m.seq_len, m.model.vocab_size
    if o.tokens is None:
        return np.random.default_rng(o.seed).integers(0, vocab, size=seq)
    if len(o.tokens) != seq:
        raise UsageError(f"this bundle's prefill takes {seq} tokens, --tokens gave {len(o.tokens)}",
                         hint=f"recompile with --seq-len {len(o.tokens)}, or pass {seq} ids")
    bad = [t for t in o.tokens if not 0 <= t < vocab]
    if bad:
        raise UsageError(f"--tokens: id {bad[0]} is not in this model's vocabulary [0, {vocab})")
    return np.asarray(o.tokens, dtype=np.int64)


def check_kv_capacity(m: Manifest, generate: int) -> None:
    """The prompt and all but the last generated token go through the KV cache (the last
    one is returned, never fed back): P + K - 1 positions."""
    need = m.seq_len + generate - 1
    if generate and need > m.max_seq:
        raise UsageError(
            f"{m.seq_len} prompt tokens + {generate} generated need {need} KV cache positions, "
            f"this bundle has {m.max_seq}",
            hint=f"use --generate {m.max_seq - m.seq_len + 1} at most, or recompile with "
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


def _estimate(o: SimulateOptions, t0: float) -> dict:
    sim = Simulator.open(o.bundle, functional=False)
    m = sim.manifest
    check_kv_capacity(m, o.generate)
    pre = sim.estimate("prefill")
    ctx = m.seq_len + max(o.generate, 1) - 1
    dec = sim.estimate("decode", pos0=min(ctx, m.max_seq - 1))
    dec_s = sim.cost.seconds(dec.cycles)
    return {
        "bundle": str(o.bundle), "estimate_only": True,
        "cycles": pre.cycles, "latency_s": sim.cost.seconds(pre.cycles),
        "ttft_s": sim.cost.seconds(pre.cycles),
        "decode_cycles": dec.cycles, "decode_latency_s": dec_s,
        "tokens_per_s": 1.0 / dec_s if dec_s > 0 else 0.0,
        "breakdown": breakdown(pre, sim.target.clock_hz),
        "decode_breakdown": breakdown(dec, sim.target.clock_hz),
        "sim_wall_s": time.perf_counter() - t0,
    }


def write_trace(path: Path, r: RunResult, clock_hz: float) -> None:
    """Chrome/Perfetto trace JSON: one track per region, times in microseconds."""
    tids = {name: i for i, name in enumerate(r.regions)}
    us = 1e6 / clock_hz
    events: list[dict] = [
        {"name": "thread_name", "ph": "M", "pid": 0, "tid": tid, "args": {"name": name}}
        for name, tid in tids.items()
    ]
    for e in r.events:
        events.append({"name": e.name, "cat": e.cat, "ph": "X", "pid": 0, "tid": tids[e.region],
                       "ts": e.start * us, "dur": e.dur * us})
    path.write_text(json.dumps({"traceEvents": events, "displayTimeUnit": "ns"}) + "\n")
