"""Placement benchmark: CP-SAT placement vs the rowmajor and snake baselines on a WSE-3 mesh.

    python benchmarks/placement_bench.py                                   # both real graphs
    python benchmarks/placement_bench.py --graph benchmarks/graphs/gpt2-small-wse3.json
    python benchmarks/placement_bench.py --graph G.json --block 1          # one block on its own
    python benchmarks/placement_bench.py --model llama3-8b                 # hand-built graph

The real graphs are the placement problems `wsc compile` builds for a config (regenerate
with `python benchmarks/kernel_graph.py CONFIG.json wse3 2048 0.7 OUT.json`): JSON
{"target", "width", "height", "kernels": [{"name", "kind", "shapes": [[rows, cols], ...],
"block", "role"}], "edges": [{"src", "dst", "bytes", "tensor"}]}, placed on the mesh they
name. The hand-built ones come from `wsc.placement.synthetic`. Prints, per graph: method,
objective, bound and gap, both baselines and the objective's ratio to each, wall time; with
--out (one graph), writes the placement.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from wsc.placement import EdgeSpec, KernelSpec, place
from wsc.placement.synthetic import gpt2_graph, llama_graph
from wsc.machine.target import load_target

GRAPHS = Path(__file__).resolve().parent / "graphs"
REAL = [GRAPHS / "gpt2-small-wse3.json", GRAPHS / "llama3-8b-wse3.json"]


def load_graph(path: str):
    doc = json.loads(Path(path).read_text())
    kernels = [KernelSpec(k["name"], k["kind"], tuple(tuple(s) for s in k["shapes"]), k.get("block"),
                          k.get("role", "")) for k in doc["kernels"]]
    edges = [EdgeSpec(e["src"], e["dst"], int(e["bytes"]), e.get("tensor", "")) for e in doc["edges"]]
    return kernels, edges, doc.get("width"), doc.get("height"), doc.get("target")


def one_block(kernels, edges, block: int):
    keep = [k for k in kernels if k.block == block]
    names = {k.name for k in keep}
    return keep, [e for e in edges if e.src in names and e.dst in names]


def run(name: str, kernels, edges, width: int, height: int, args) -> dict:
    t0 = time.monotonic()
    p = place(kernels, edges, width=width, height=height, time_limit=args.time_limit, seed=args.seed,
              workers=args.workers, colors=args.colors)
    wall = time.monotonic() - t0
    s = p.stats

    def ratio(base):
        return f"{s['objective'] / base:.3f}" if base else "n/a"

    def sci(v):
        return "none (did not pack)" if v is None else f"{v:.4e}"

    need = sum(k.shape[0] * k.shape[1] for k in p.kernels.values())
    print(f"model      {name}: {len(kernels)} kernels, {len(edges)} edges, "
          f"{need} PEs of {width}x{height} ({need / (width * height):.0%})")
    print(f"method     {s['method']} ({s['solver_status']}), limit {args.time_limit:g}s, wall {wall:.1f}s"
          + (" [wall-clock cap fired: not reproducible]" if s["time_capped"] else ""))
    print(f"objective  {s['objective']:.4e} byte-hops   total hops {s['total_hops']}")
    print(f"bound      {s['bound']:.4e}   gap {s['gap']:.1%}   "
          f"({s['bound_proven_components']}/{s['bound_components']} cycle components proven)")
    print(f"rowmajor   {sci(s['rowmajor_objective'])}   objective/rowmajor {ratio(s['rowmajor_objective'])}")
    print(f"snake      {sci(s['snake_objective'])}   objective/snake    {ratio(s['snake_objective'])}")
    if "tiling" in s:
        t = s["tiling"]
        print(f"tiling     {t['blocks_per_band']} blocks per band along {t['axis']}, slot {t['slot'][0]}x{t['slot'][1]} "
              f"(rows x cols) at {tuple(t['origin'])}, template {t['template_objective']:.4e} "
              f"(bound {t['template_bound']:.4e})")
    print(f"routing    max link load {s['max_link_load_bytes']:.4e} B, {s['colors_used']} colors, "
          f"max {s['max_colors_per_router']} per router")
    print()
    if args.out:
        Path(args.out).write_text(p.dumps())
    return {"graph": name, "wall_s": round(wall, 1), **{k: s[k] for k in (
        "method", "objective", "bound", "gap", "rowmajor_objective", "snake_objective")}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--graph", action="append", help="kernel graph JSON (repeatable; default: both real graphs)")
    ap.add_argument("--model", choices=["gpt2-small", "llama3-8b"], help="a hand-built graph instead")
    ap.add_argument("--block", type=int, help="place only this block of each graph, on the same mesh")
    ap.add_argument("--target", default="wse3", help="mesh for --model (a --graph names its own)")
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--time-limit", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", help="write placement.json here (one graph only)")
    ap.add_argument("--json", help="write the rows as JSON here")
    args = ap.parse_args(argv)

    target = load_target(args.target)
    args.colors = target.colors
    problems = []
    if args.model:
        kernels, edges = (gpt2_graph(layers=12, seq=args.seq) if args.model == "gpt2-small"
                          else llama_graph(layers=32, seq=args.seq))
        problems.append((f"{args.model} (hand-built)", kernels, edges, target.usable_width, target.usable_height))
    for path in args.graph or ([] if args.model else REAL):
        kernels, edges, width, height, tname = load_graph(str(path))
        if width is None:
            width, height = target.usable_width, target.usable_height
        if tname:
            args.colors = load_target(tname).colors
        problems.append((str(path), kernels, edges, width, height))
    if args.out and len(problems) != 1:
        ap.error("--out needs exactly one graph")
    rows = []
    for name, kernels, edges, width, height in problems:
        if args.block is not None:
            kernels, edges = one_block(kernels, edges, args.block)
            name += f" (block {args.block} alone)"
        rows.append(run(name, kernels, edges, width, height, args))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
