"""Dump the placement problem (kernels with allowed shapes, edges with bytes) that `wsc compile`
hands to `wsc.placement.place` for a config, as JSON: a reproducible input for placement work
(`benchmarks/placement_bench.py` reads it).

    python benchmarks/kernel_graph.py CONFIG.json TARGET SEQ_LEN MESH_FRACTION OUT.json

The kernels are planned as a plan-only fp16 compile plans them (prefill chunk = the largest
divisor of SEQ_LEN up to 128, full-logit prefill head).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from xdsl.dialects.builtin import IntegerAttr, i64

from wsc.driver import default_prefill_chunk
from wsc.frontend import load_config_only
from wsc.frontend.importer import import_model
from wsc.ir.kernel import SRAM_BUDGET_ATTR
from wsc.passes.graph_pipeline import run_graph_passes
from wsc.passes.kernels import LowerCtx
from wsc.passes.lower_tile import HOST, KernelGraph, edge_bytes
from wsc.passes.partition import partition
from wsc.passes.plan import plan
from wsc.runtime_sim.scheduler import estimate_region
from wsc.machine.target import load_target

# `transformer.h.3.attn.c_attn` -> block 3, role `attn.c_attn`
_BLOCK = re.compile(r"\.(?:h|layers|blocks)\.(\d+)\.")


def kernel_graph(config: Path, target_name: str, seq: int, fraction: float) -> dict:
    target = load_target(target_name)
    imported = import_model(load_config_only(config), seq)
    run_graph_passes(imported.module)
    km = partition(imported.module)
    km.attributes[SRAM_BUDGET_ATTR] = IntegerAttr(target.buffer_budget, i64)
    ctx = LowerCtx("f16", seq, seq, imported.weights, default_prefill_chunk(seq))
    planned = plan(km, ctx, target, estimate_region, capacity_fraction=fraction)
    kg = KernelGraph.of(km)

    kernels = []
    for k in kg.kernels:
        m = _BLOCK.search(k.source[1] + ".")
        kernels.append({
            "name": k.kernel_name,
            "kind": k.KIND,
            "shapes": [list(s) for s in planned[k.kernel_name].shapes],
            "block": int(m[1]) if m else None,
            "role": f"{k.source[1][m.end():]}:{k.KIND}" if m else "",
        })
    edges: dict[tuple, int] = {}
    for e in kg.edges:
        if e.src != HOST:  # weights and tokens come from the host, not over placed edges
            key = (e.src, e.dst, e.output)
            edges[key] = edges.get(key, 0) + edge_bytes(e, kg, seq, "f16")
    return {
        "target": target_name, "width": target.usable_width, "height": target.usable_height,
        "kernels": kernels,
        "edges": [{"src": s, "dst": d, "bytes": b, "tensor": str(o)}
                  for (s, d, o), b in edges.items()],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("target")
    ap.add_argument("seq_len", type=int)
    ap.add_argument("mesh_fraction", type=float)
    ap.add_argument("out", type=Path)
    args = ap.parse_args()
    graph = kernel_graph(args.config, args.target, args.seq_len, args.mesh_fraction)
    args.out.write_text(json.dumps(graph, indent=0))
    pes = sum(k["shapes"][0][0] * k["shapes"][0][1] for k in graph["kernels"])
    print(f"{len(graph['kernels'])} kernels, {len(graph['edges'])} edges, {pes:,} PEs "
          f"-> {args.out}")


if __name__ == "__main__":
    main()
