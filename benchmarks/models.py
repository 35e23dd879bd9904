"""Model benchmarks: plan-only compiles of a GPT-2-small-shaped (124M) and a Llama-3-8B-shaped
config on wse2 and wse3, estimated by the simulator's cycle model.

For each: decode tokens/s (one token after a 2048-token prompt), time to first token for a
2048-token prompt, PEs used, the fraction of peak FLOP/s reached by the largest GEMM (prefill)
and GEMV (decode) kernel, the latency split along the critical path, and the same compile with
the min-PEs planner as the baseline, measured side by side. Also the wall time and peak memory
of the compile itself.

    python benchmarks/models.py [--models gpt2-small,llama3-8b] [--targets wse2,wse3] [--json out]
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
CONFIGS = {"gpt2-small": HERE / "configs" / "gpt2-small.json",
           "llama3-8b": HERE / "configs" / "llama3-8b.json"}


def compile_plan(config: Path, target: str, out: Path, plan: str, seq: int, place_time: float) -> dict:
    """Compile in a child process so that its wall time and peak memory are its own."""
    cmd = ["/usr/bin/time", "-f", "MAXRSS_KB=%M",
           sys.executable, "-m", "wsc.cli", "compile", "--config", str(config), "--no-weights",
           "-o", str(out), "--target", target, "--seq-len", str(seq), "--plan", plan,
           "--place-time", str(place_time), "--no-report", "--prefill-logits", "last"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"compile failed: {' '.join(cmd)}\n{r.stderr}")
    peak_kb = int(r.stderr.rsplit("MAXRSS_KB=", 1)[1].split()[0])
    return {"compile_wall_s": wall, "compile_peak_rss_mb": peak_kb / 1024}


def kernel_efficiency(sim, run, phase: str, tokens: int) -> dict:
    """FLOP/s of the largest linear kernel as a fraction of its PEs' peak, while it computes
    (compute and fabric time; not the time it idles waiting for the next chunk).

    In prefill, a head that computes only the last position's logits is not a GEMM: the
    largest kernel that multiplies every prompt token is taken."""
    best = None
    for prog_region in sim.programs[phase].regions:
        op = prog_region.op
        if op.kernel.data != "linear":
            continue
        x = next(b for b in prog_region.buffers if b.sym.data == "x")
        if phase == "prefill" and x.layout.data.shape[0] < sim.manifest.prefill_chunk:
            continue  # takes one row per prompt: the last-logits head
        w = next(b for b in prog_region.buffers if b.sym.data == "w")
        K, N = w.layout.data.shape
        if best is None or K * N > best[1] * best[2]:
            best = (prog_region, K, N)
    region, K, N = best
    st = run.regions[region.name]
    busy = st.compute + st.fabric
    rows, cols = region.grid
    peak = rows * cols * sim.target.fmacs_per_cycle(sim.manifest.dtype)
    chunks = 1 if phase == "decode" else sim.manifest.seq_len // sim.manifest.prefill_chunk
    fmacs = tokens * K * N if phase == "decode" else sim.manifest.seq_len * K * N
    return {"kernel": region.name, "K": K, "N": N, "grid": [rows, cols],
            "busy_cycles": busy, "fraction_of_peak": fmacs / (busy * peak), "chunks": chunks}


def idle_fraction(sim, run, phase: str) -> float:
    """The share of the used PEs' cycles, over the whole run, that they spend neither computing
    nor on the fabric: waiting for their inputs (pipeline fill and drain, a slower neighbour).
    The critical path has no such time by construction, so this is where waiting shows."""
    total = busy = 0.0
    for region in sim.programs[phase].regions:
        pes = region.grid[0] * region.grid[1]
        st = run.regions[region.name]
        total += pes * run.cycles
        busy += pes * (st.compute + st.fabric)
    return 1.0 - busy / total


def estimate(bundle: Path) -> dict:
    from wsc.runtime_sim.simulator import Simulator

    sim = Simulator.open(bundle, functional=False)
    m = sim.manifest
    pre = sim.run("prefill", None, 0)
    dec = sim.run("decode", None, m.seq_len)
    hz = sim.target.clock_hz
    return {
        "pes_used": m.pes_used, "pes_available": sim.target.pe_count,
        "ttft_ms": pre.cycles / hz * 1e3,
        "decode_tokens_per_s": hz / dec.cycles,
        "prefill_breakdown_ms": {k: v / hz * 1e3 for k, v in pre.critical.items()},
        "decode_breakdown_us": {k: v / hz * 1e6 for k, v in dec.critical.items()},
        "prefill_pe_idle": idle_fraction(sim, pre, "prefill"),
        "decode_pe_idle": idle_fraction(sim, dec, "decode"),
        "largest_gemm": kernel_efficiency(sim, pre, "prefill", m.seq_len),
        "largest_gemv": kernel_efficiency(sim, dec, "decode", 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="gpt2-small,llama3-8b")
    ap.add_argument("--targets", default="wse2,wse3")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--place-time", type=float, default=60.0)
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            for target in args.targets.split(","):
                row = {"model": model, "target": target}
                for plan in ("latency", "min-pes"):
                    out = Path(tmp) / f"{model}-{target}-{plan}.wsc"
                    info = compile_plan(CONFIGS[model], target, out, plan, args.seq_len, args.place_time)
                    row[plan] = {**info, **estimate(out)}
                    print(json.dumps({"model": model, "target": target, "plan": plan, **row[plan]},
                                     default=str), flush=True)
                lat, base = row["latency"], row["min-pes"]
                row["speedup_decode"] = lat["decode_tokens_per_s"] / base["decode_tokens_per_s"]
                row["speedup_ttft"] = base["ttft_ms"] / lat["ttft_ms"]
                rows.append(row)
    print("\n| model | target | PEs used | TTFT (2048 tok) | decode tok/s | largest GEMM / GEMV "
          "of peak | prefill compute/fabric/wait (ms) | PEs idle (prefill, decode) "
          "| vs min-PEs planner (decode, TTFT) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        x = r["latency"]
        b = x["prefill_breakdown_ms"]
        print(f"| {r['model']} | {r['target']} | {x['pes_used']:,} / {x['pes_available']:,} | "
              f"{x['ttft_ms']:.1f} ms | {x['decode_tokens_per_s']:,.0f} | "
              f"{x['largest_gemm']['fraction_of_peak']:.0%} / {x['largest_gemv']['fraction_of_peak']:.1%} | "
              f"{b['compute']:.1f} / {b['fabric']:.1f} / {b['waiting']:.1f} | "
              f"{x['prefill_pe_idle']:.0%}, {x['decode_pe_idle']:.0%} | "
              f"{r['speedup_decode']:.2f}x, {r['speedup_ttft']:.2f}x |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
