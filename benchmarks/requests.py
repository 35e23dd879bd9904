"""The requests curve: how many concurrent code-completion users one wafer serves.

A plan-only compile of the Llama-3-8B-shaped config on WSE-3 (`wsc compile --config ...
--no-weights`, the models benchmark's options), then `wsc simulate --requests` on it: for each
number of requests in flight, per-request and aggregate decode tokens/s (the requests' decode
steps interleaved round-robin on the simulator's scheduler), time to first token of a prompt
that arrives while the others decode, and whether the plan's SRAM holds their KV caches.
Re-run it after the mapping changes; `--bundle` reuses a compile.

    python benchmarks/requests.py [--counts 1,2,4,8,16,24,32 | --counts all] [--prompt-len 1024]
                                  [--bundle DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "configs" / "llama3-8b.json"
DEFAULT_COUNTS = "1,2,3,4,6,8,12,16,24,32"


def compile_plan(out: Path, target: str, seq: int, place_time: float) -> float:
    cmd = [sys.executable, "-m", "wsc.cli", "compile", "--config", str(CONFIG), "--no-weights",
           "-o", str(out), "--target", target, "--seq-len", str(seq), "--place-time", str(place_time),
           "--no-report", "--prefill-logits", "last"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"compile failed: {' '.join(cmd)}\n{r.stderr}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", default=DEFAULT_COUNTS, help="requests in flight, or 'all' for 1..32")
    ap.add_argument("--prompt-len", type=int, default=1024)
    ap.add_argument("--target", default="wse3")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--place-time", type=float, default=60.0)
    ap.add_argument("--bundle", type=Path, help="an existing plan-only bundle (skips the compile)")
    ap.add_argument("--json")
    args = ap.parse_args()
    counts = list(range(1, 33)) if args.counts == "all" else [int(c) for c in args.counts.split(",")]

    from wsc.requests import requests_table
    from wsc.runtime_sim.simulator import Simulator

    with tempfile.TemporaryDirectory() as tmp:
        bundle = args.bundle
        compile_s = None
        if bundle is None:
            bundle = Path(tmp) / "llama3-8b.wsc"
            compile_s = compile_plan(bundle, args.target, args.seq_len, args.place_time)
        t0 = time.perf_counter()
        sim = Simulator.open(bundle, functional=False)
        q = requests_table(sim, max(counts), args.prompt_len, counts,
                           progress=lambda row: print(json.dumps(row), flush=True))
        q["simulate_wall_s"] = time.perf_counter() - t0
        q["compile_wall_s"] = compile_s
        q["pes_used"] = sim.manifest.pes_used
    print(f"\nLlama-3-8B-shaped, plan-only, {args.target}: {q['pes_used']:,} PEs, prompt "
          f"{q['prompt_len']} tokens, decode from KV position {q['decode_position']}; one step "
          f"L = {q['step_latency_s'] * 1e3:.3f} ms, busiest region {q['busiest_region']} "
          f"B = {q['busiest_region_s'] * 1e6:.1f} µs; the plan holds the KV caches of "
          f"{q['kv_capacity']} requests")
    print("\n| requests | tok/s per request | aggregate tok/s | TTFT | decoders stall | "
          "bound per request max(L, R·B) | KV caches fit |")
    print("|---|---|---|---|---|---|---|")
    for r in q["rows"]:
        print(f"| {r['requests']} | {r['per_request_tokens_per_s']:,.0f} | "
              f"{r['aggregate_tokens_per_s']:,.0f} | {r['ttft_s'] * 1e3:.1f} ms | "
              f"{r['decode_stall_s'] * 1e3:.1f} ms | {1 / r['bound_period_s']:,.0f} | "
              f"{'yes' if r['kv_fits'] else 'no'} |")
    t = q["targets"]
    print(f"\nusers served at >= {t['per_request_tokens_per_s']:,.0f} tok/s each and < "
          f"{t['ttft_s'] * 1e3:.0f} ms TTFT: {q['users_served']} "
          f"({q['users_served_if_kv_fit']} if the plan held their KV caches); "
          f"simulated in {q['simulate_wall_s']:.0f} s"
          + (f", compiled in {compile_s:.0f} s" if compile_s else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(q, indent=1))


if __name__ == "__main__":
    main()
