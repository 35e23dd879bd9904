"""`wsc simulate`: run a bundle, optionally check it against PyTorch, summarise as JSON."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsc.errors import UsageError
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


def breakdown(r: RunResult, clock_hz: float) -> dict[str, float]:
    """The latency split along its critical path, in seconds: compute, fabric (collectives,
    shifts, transfers between regions) and waiting (transfers compute did not hide)."""
    return {k: v / clock_hz for k, v in r.critical.items()}


def simulate(o: SimulateOptions) -> dict:
    t0 = time.perf_counter()
    if o.estimate_only:
        return _estimate(o, t0)
    sim = Simulator.open(o.bundle)
    m = sim.manifest
    seq, vocab = m.seq_len, m.model.vocab_size
    if o.tokens is not None:
        ids = np.asarray(o.tokens, dtype=np.int64)
        if ids.size != seq:
            raise UsageError(f"this bundle's prefill takes {seq} tokens, --tokens gave {ids.size}",
                             hint=f"recompile with --seq-len {ids.size}, or pass {seq} ids")
    else:
        ids = np.random.default_rng(o.seed).integers(0, vocab, size=seq)
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

        ckpt = o.checkpoint or Path(m.checkpoint.path)
        if not m.weights or not Path(ckpt).exists():
            raise UsageError(f"--check needs the source checkpoint; {ckpt} does not exist",
                             hint="pass --checkpoint DIR")
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


def _estimate(o: SimulateOptions, t0: float) -> dict:
    sim = Simulator.open(o.bundle, functional=False)
    m = sim.manifest
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
