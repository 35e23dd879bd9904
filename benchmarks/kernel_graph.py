"""Dump the placement problem (kernels with allowed shapes, edges with bytes) that `wsc compile`
hands to `wsc.placement.place` for a config, as JSON: a reproducible input for placement work.

    python benchmarks/kernel_graph.py CONFIG.json TARGET SEQ_LEN MESH_FRACTION OUT.json
"""
import json, sys, re
from wsc.frontend import load_config_only
from wsc.frontend.importer import import_model
from wsc.passes.graph_pipeline import run_graph_passes
from wsc.passes.partition import partition
from wsc.passes.plan import plan
from wsc.passes.kernels import LowerCtx
from wsc.passes.lower_tile import KernelGraph, HOST, edge_bytes
from wsc.ir.kernel import SRAM_BUDGET_ATTR
from wsc.target import load_target
from xdsl.dialects.builtin import IntegerAttr, i64
cfg, target, seq, frac, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]  # noqa: E501
t = load_target(target)
L = load_config_only(cfg); im = import_model(L, seq); run_graph_passes(im.module)
km = partition(im.module); km.attributes[SRAM_BUDGET_ATTR] = IntegerAttr(t.buffer_budget, i64)
chunk = max(d for d in range(1, min(seq, 128) + 1) if seq % d == 0)
ctx = LowerCtx("f16", seq, seq, im.weights, chunk)
planned = plan(km, ctx, t, capacity_fraction=frac)
kg = KernelGraph.of(km)
_B = re.compile(r"\.(?:h|layers|blocks)\.(\d+)\.")
ks = []
for k in kg.kernels:
    m = _B.search(k.source[1] + "."); role = (k.source[1][m.end():] + ":" + k.KIND) if m else ""
    ks.append({"name": k.kernel_name, "kind": k.KIND, "shapes": [list(s) for s in planned[k.kernel_name].shapes], "block": int(m[1]) if m else None, "role": role})
merged = {}
for e in kg.edges:
    if e.src == HOST: continue
    key = (e.src, e.dst, e.output); merged[key] = merged.get(key, 0) + edge_bytes(e, kg, seq, "f16")
es = [{"src": s, "dst": d, "bytes": b, "tensor": str(o)} for (s, d, o), b in merged.items()]
json.dump({"target": target, "width": t.usable_width, "height": t.usable_height, "kernels": ks, "edges": es}, open(out, "w"), indent=0)
print(len(ks), len(es), sum(s["shapes"][0][0]*s["shapes"][0][1] for s in ks))
