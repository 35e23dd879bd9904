"""Placement benchmark: CP-SAT placement vs the rowmajor and snake baselines on a WSE-3 mesh.

    python benchmarks/placement_bench.py                       # GPT-2 small, hand-built graph
    python benchmarks/placement_bench.py --model llama3-8b     # 32 Llama-3-8B-shaped blocks
    python benchmarks/placement_bench.py --graph kernels.json  # the compiler's kernel graph

The hand-built graphs come from `wsc.placement.synthetic` (GPT-2 small: 12 blocks of ln_1,
attn.c_attn, attn.attn, attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj, plus wte, ln_f, lm_head; byte
weights S × features × 2 for S = 2048). A `--graph` file is JSON: {"kernels": [{"name", "kind",
"shapes": [[rows, cols], ...], "block", "role"}], "edges": [{"src", "dst", "bytes"}]}.
Prints one table row per run and, with --out, writes the placement.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from wsc.placement import EdgeSpec, KernelSpec, place
from wsc.placement.synthetic import gpt2_graph, llama_graph
from wsc.target import load_target


def load_graph(path: str):
    doc = json.loads(open(path).read())
    kernels = [KernelSpec(k["name"], k["kind"], tuple(tuple(s) for s in k["shapes"]), k.get("block"),
                          k.get("role", "")) for k in doc["kernels"]]
    edges = [EdgeSpec(e["src"], e["dst"], int(e["bytes"]), e.get("tensor", "")) for e in doc["edges"]]
    return kernels, edges


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["gpt2-small", "llama3-8b"], default="gpt2-small")
    ap.add_argument("--graph", help="kernel graph JSON instead of a hand-built model")
    ap.add_argument("--target", default="wse3")
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--time-limit", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", help="write placement.json here")
    args = ap.parse_args(argv)

    target = load_target(args.target)
    if args.graph:
        kernels, edges = load_graph(args.graph)
        name = args.graph
    elif args.model == "gpt2-small":
        kernels, edges = gpt2_graph(layers=12, seq=args.seq)
        name = "gpt2-small (hand-built)"
    else:
        kernels, edges = llama_graph(layers=32, seq=args.seq)
        name = "llama3-8b-shaped (hand-built)"

    t0 = time.monotonic()
    p = place(kernels, edges, width=target.usable_width, height=target.usable_height,
              time_limit=args.time_limit, seed=args.seed, workers=args.workers, colors=target.colors)
    wall = time.monotonic() - t0
    s = p.stats

    def ratio(base):
        return f"{s['objective'] / base:.3f}" if base else "n/a"

    need = sum(k.shape[0] * k.shape[1] for k in p.kernels.values())
    print(f"model      {name}: {len(kernels)} kernels, {len(edges)} edges, "
          f"{need} PEs of {target.usable_width}x{target.usable_height} ({need / (p.width * p.height):.0%})")
    print(f"method     {s['method']} ({s['solver_status']}), limit {args.time_limit:g}s, wall {wall:.1f}s"
          + (" [wall-clock cap fired: not reproducible]" if s["time_capped"] else ""))
    print(f"objective  {s['objective']:.4e} byte-hops   total hops {s['total_hops']}")
    print(f"rowmajor   {s['rowmajor_objective'] or float('nan'):.4e}   objective/rowmajor {ratio(s['rowmajor_objective'])}")
    print(f"snake      {s['snake_objective'] or float('nan'):.4e}   objective/snake    {ratio(s['snake_objective'])}")
    print(f"bound      {s['bound']:.4e}   gap {s['gap']:.1%}   "
          f"({s['bound_proven_components']}/{s['bound_components']} cycle components proven)")
    if "tiling" in s:
        t = s["tiling"]
        print(f"tiling     {t['blocks_per_band']} blocks per band along {t['axis']}, slot {t['slot'][0]}x{t['slot'][1]} "
              f"(rows x cols), template {t['template_objective']:.4e} (bound {t['template_bound']:.4e})")
    print(f"routing    max link load {s['max_link_load_bytes']:.4e} B, {s['colors_used']} colors, "
          f"max {s['max_colors_per_router']} per router")
    if args.out:
        with open(args.out, "w") as f:
            f.write(p.dumps())
    return 0


if __name__ == "__main__":
    sys.exit(main())
