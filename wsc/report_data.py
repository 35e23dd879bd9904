"""What the placement report shows, as plain JSON-able data (the page and the PNG draw it).

Everything comes from the bundle: the manifest (target, model), the tile IR (regions, buffers,
channels), placement.json (routes, stats; older or unrouted placements are tolerated), and the
simulator's data-independent cycle model (per-region stats and the event trace). Nothing here
reads the compiler's internals. The output is deterministic: no clocks, no dict-order
accidents, numbers rounded before they are serialised.

Sizes stay bounded for big models (a 32-layer model on wse3 is ~320 regions on a 755x1170
mesh): routes are kept as their corner points, link loads as maximal straight runs of equal
load, and each region's timeline as run-length encoded bins (`TIMELINE_BINS` per phase).
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

import numpy as np
from xdsl.dialects.builtin import ModuleOp

from wsc.ir.tile import ProgramOp, RegionOp, programs

PHASES = ("prefill", "decode")
KIND_COLORS = {  # colour-blind-safe hues (Okabe-Ito), one per kernel kind
    "linear": "#0072b2", "attention": "#d55e00", "norm": "#009e73", "embedding": "#cc79a7",
    "eltwise": "#e69f00",
}
OTHER_COLOR = "#8c8c8c"
KIND_LABELS = {"linear": "matmul / linear", "attention": "attention", "norm": "norm",
               "embedding": "embedding", "eltwise": "elementwise"}
# timeline categories: the simulator's event `cat`s, in drawing priority order
CATEGORIES = ("compute", "fabric", "send", "wait")
CATEGORY_CODES = {"compute": "c", "fabric": "f", "send": "s", "wait": "w"}
IDLE_CODE = "."
TIMELINE_BINS = 1200
# a transformer block's index in a module path: Llama/Qwen "model.layers.3.", GPT-2 and
# StarCoder "transformer.h.3.", others "blocks.3."
LAYER_PATH = re.compile(r"(?:^|\.)(?:layers|h|blocks)\.(\d+)(?:\.|$)")


# --- regions ------------------------------------------------------------------------------


def region_sram(regions: list[RegionOp]) -> int:
    """Per-PE SRAM high-water mark over every phase's program of one region (the simulator
    reserves exactly this much: buffers of all phases share the PE's memory)."""
    return max((b.offset_bytes + b.nbytes for r in regions for b in r.buffers()), default=0)


def _regions_by_name(progs: dict[str, ProgramOp]) -> tuple[list[str], dict[str, list[RegionOp]]]:
    """Region names in pipeline order (the prefill program's, then any others), and every
    phase's RegionOp of each."""
    order: list[str] = []
    ops: dict[str, list[RegionOp]] = defaultdict(list)
    for phase in sorted(progs, key=lambda p: (PHASES.index(p) if p in PHASES else 9, p)):
        for r in progs[phase].regions_():
            name = r.sym_name.data
            if name not in ops:
                order.append(name)
            ops[name].append(r)
    return order, ops


def kernels(module: ModuleOp, budget: int) -> list[dict[str, Any]]:
    """One entry per region: what it is, where it sits, what it holds."""
    order, ops = _regions_by_name(programs(module))
    rows = []
    for name in order:
        r = ops[name][0]
        x, y = (int(v) for v in r.origin.get_values())
        gr, gc = (int(v) for v in r.grid)
        sram = region_sram(ops[name])
        weights = sum(b.nbytes for b in r.buffers() if b.weight is not None)
        path = r.module.data if r.module is not None else ""
        persistent = max((b.offset_bytes + b.nbytes for op in ops[name] for b in op.buffers()
                          if b.persistent is not None and b.weight is None), default=0)
        rows.append({
            "name": name, "kind": r.kernel.data,
            "module": path, "layer": layer_of(path or name),
            "x": x, "y": y, "rows": gr, "cols": gc, "pes": gr * gc,
            "sram": sram, "sram_pct": round(100.0 * sram / budget, 2) if budget else 0.0,
            "weight_bytes": weights, "has_state": persistent > 0,
        })
    return rows


def layer_of(path: str) -> int | None:
    """The transformer layer a module path belongs to, or None (embedding, final norm, head)."""
    m = LAYER_PATH.search(path)
    return int(m[1]) if m else None


def layer_groups(rows: list[dict]) -> list[dict[str, Any]]:
    """Consecutive kernels of one layer, in pipeline order, with their totals: what the table
    shows as one group. Kernels outside the layers form groups of their own (layer None)."""
    groups: list[dict[str, Any]] = []
    for i, r in enumerate(rows):
        if not groups or groups[-1]["layer"] != r["layer"]:
            groups.append({"layer": r["layer"], "first": i, "count": 0, "pes": 0, "sram": 0,
                           "sram_pct": 0.0, "prefill": 0, "decode": 0})
        g = groups[-1]
        g["count"] += 1
        g["pes"] += r["pes"]
        g["sram"], g["sram_pct"] = max(g["sram"], r["sram"]), max(g["sram_pct"], r["sram_pct"])
        for phase in PHASES:
            g[phase] += r[phase]["cycles"] if phase in r else 0
    return groups


# --- timing -------------------------------------------------------------------------------


def decode_position(manifest: dict) -> int:
    """The KV cache position of the modeled decode step: the token right after the prompt."""
    seq = int(manifest["seq_len"])
    return min(seq, int(manifest.get("max_seq") or seq + 1) - 1)


def simulate(module: ModuleOp, manifest: dict, placement: dict) -> dict[str, Any]:
    """The cycle model's run of every phase with its event trace (no data moves)."""
    from wsc.bundle_format import Manifest
    from wsc.runtime_sim.simulator import Simulator

    sim = Simulator(module, Manifest.from_json(manifest), placement, functional=False)
    runs = {}
    for phase in PHASES:
        if phase in sim.programs:
            pos0 = 0 if phase == "prefill" else decode_position(manifest)
            runs[phase] = sim.run(phase, None, pos0, trace=True)
    return runs


def attach_cycles(rows: list[dict], runs: dict) -> None:
    """Per region and phase: busy cycles (compute + fabric), the split, and which dominates."""
    for row in rows:
        for phase, res in runs.items():
            st = res.regions.get(row["name"])
            if st is None:
                continue
            busy = st.compute + st.fabric
            row[phase] = {
                "cycles": int(round(busy)), "compute": int(round(st.compute)),
                "fabric": int(round(st.fabric)), "waiting": int(round(st.waiting)),
                "end": int(round(st.end)),
                "compute_share": round(st.compute / busy, 4) if busy else 0.0,
                "bound": "compute" if st.compute >= st.fabric else "communication",
            }


def attach_errors(rows: list[dict], sim_result: dict | None) -> None:
    """Per kernel, its output's error against torch from a `--compare-layers` result."""
    layers = {r.get("kernel"): r for r in (sim_result or {}).get("layers") or [] if isinstance(r, dict)}
    for row in rows:
        r = layers.get(row["name"])
        if r is None:
            continue
        row["error"] = {"rel_l2_err": r.get("rel_l2_err"), "max_abs_err": r.get("max_abs_err"),
                        "passed": r.get("passed"), "reference": r.get("reference", ""),
                        "note": r.get("note", "")}


def timeline(res, names: list[str], bins: int = TIMELINE_BINS) -> dict[str, Any]:
    """A phase's Gantt chart: per region, the dominant event category in each of `bins` equal
    slices of the run, run-length encoded as `<code><length>` ("c12w30s2"; "." is idle).

    A slice shows work (compute, fabric or send, whichever covers most of it) when any work
    overlaps it, else waiting when the region waits, else idle: short bursts of work stay
    visible at full width even in a long run that is mostly waiting.
    """
    total = float(res.cycles) or 1.0
    index = {n: i for i, n in enumerate(names)}
    ncat = len(CATEGORIES)
    events = [e for e in res.events if e.region in index and e.cat in CATEGORY_CODES and e.dur > 0]
    cover = np.zeros((len(names), ncat, bins + 1))
    if events:
        row = np.array([index[e.region] for e in events])
        cat = np.array([CATEGORIES.index(e.cat) for e in events])
        lo = np.clip(np.array([e.start for e in events]) / total * bins, 0, bins)
        hi = np.clip(np.array([e.start + e.dur for e in events]) / total * bins, 0, bins)
        i0 = np.minimum(np.floor(lo).astype(int), bins - 1)
        i1 = np.minimum(np.floor(hi).astype(int), bins - 1)
        flat = (row * ncat + cat) * (bins + 1)
        cover_f = cover.reshape(-1)
        same = i0 == i1
        np.add.at(cover_f, flat[same] + i0[same], hi[same] - lo[same])
        d = ~same
        np.add.at(cover_f, flat[d] + i0[d], i0[d] + 1 - lo[d])
        np.add.at(cover_f, flat[d] + i1[d], hi[d] - i1[d])
        # bins strictly between the ends are fully covered: a difference array, summed below
        diff = np.zeros_like(cover_f)
        np.add.at(diff, flat[d] + i0[d] + 1, 1.0)
        np.add.at(diff, flat[d] + i1[d], -1.0)
        cover += np.cumsum(diff.reshape(cover.shape), axis=2)
    cover = cover[:, :, :bins]
    busy = cover.sum(axis=1) > 1e-9
    work = cover[:, :-1]  # compute, fabric, send: any of them outranks waiting in a slice
    dominant = np.where(work.sum(axis=1) > 1e-9, np.argmax(work, axis=1), len(CATEGORIES) - 1)
    codes = np.array([CATEGORY_CODES[c] for c in CATEGORIES])
    rows = []
    for r in range(len(names)):
        symbols = np.where(busy[r], codes[dominant[r]], IDLE_CODE)
        rows.append(_rle(symbols))
    return {"cycles": int(round(res.cycles)), "bins": bins, "rows": rows,
            "critical": {k: int(round(v)) for k, v in res.critical.items()}}


def _rle(symbols: np.ndarray) -> str:
    if symbols.size == 0:
        return ""
    change = np.flatnonzero(symbols[1:] != symbols[:-1]) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change, [symbols.size]))
    return "".join(f"{symbols[s]}{e - s}" for s, e in zip(starts, ends))


# --- routes and link loads ----------------------------------------------------------------


def _corners(src, dst, order: str) -> list[list[int]]:
    (sx, sy), (dx, dy) = src, dst
    turn = (dx, sy) if order != "yx" else (sx, dy)
    pts = [list(src)]
    for p in (turn, dst):
        if list(p) != pts[-1]:
            pts.append(list(p))
    return pts


def _links(path: list[list[int]]):
    """Directed links (x, y, dx, dy) along an axis-parallel polyline."""
    for (ax, ay), (bx, by) in zip(path, path[1:]):
        sx, sy = (bx > ax) - (bx < ax), (by > ay) - (by < ay)
        x, y = ax, ay
        while (x, y) != (bx, by):
            yield (x, y, sx, sy)
            x, y = x + sx, y + sy


def routes(placement: dict, rows: list[dict]) -> list[dict[str, Any]]:
    """Every edge with a drawable path. Without a routed path (placement from before routing)
    the route is drawn dimension-ordered between the kernels' ports, or centres, and marked
    approximate."""
    rect = {r["name"]: r for r in rows}
    pk = placement.get("kernels", {}) if isinstance(placement.get("kernels"), dict) else {}
    out = []
    for i, e in enumerate(placement.get("edges") or []):
        src, dst = e.get("src"), e.get("dst")
        path = e.get("path")
        approx = False
        if not path or len(path) < 1:
            if src not in rect or dst not in rect:
                continue
            a = pk.get(src, {}).get("out_port") or _centre(rect[src])
            b = pk.get(dst, {}).get("in_port") or _centre(rect[dst])
            path, approx = _corners(a, b, e.get("order", "xy")), True
        path = [[int(p[0]), int(p[1])] for p in path]
        route = {
            "src": src, "dst": dst, "bytes": int(e.get("bytes", 0)), "hops": e.get("hops"),
            "order": e.get("order", ""), "color": e.get("color"), "tensor": str(e.get("tensor", "")),
            "group": e.get("group", f"e{i}"), "load": e.get("max_link_load_bytes"), "path": path,
        }
        if approx:
            route["approx"] = True
        out.append(route)
    return out


def _centre(r: dict) -> list[int]:
    return [r["x"] + r["cols"] // 2, r["y"] + r["rows"] // 2]


def link_loads(route_list: list[dict]) -> dict[tuple[int, int, int, int], int]:
    """Bytes per directed link per program run. A multicast tree (edges of one producer
    tensor, one `group`) counts once per link with its largest edge's bytes, as routing does."""
    trees: dict[Any, dict] = defaultdict(dict)
    for r in route_list:
        tree = trees[(r["src"], r["group"])]
        for ln in _links(r["path"]):
            if tree.get(ln, 0) < r["bytes"]:
                tree[ln] = r["bytes"]
    load: dict[tuple[int, int, int, int], int] = defaultdict(int)
    for key in sorted(trees, key=str):
        for ln, b in trees[key].items():
            load[ln] += b
    return dict(load)


def link_runs(load: dict[tuple[int, int, int, int], int]) -> list[int]:
    """Maximal straight runs of consecutive links with the same direction and load, flattened
    as [x0, y0, x1, y1, bytes, ...] (from the first link's source PE to the last one's
    destination)."""
    lines: dict[tuple, list[tuple[int, int]]] = defaultdict(list)
    for (x, y, dx, dy), b in load.items():
        if dy == 0:  # horizontal: keyed by row and direction, ordered along the direction
            lines[(0, y, dx)].append((x * dx, b))
        else:
            lines[(1, x, dy)].append((y * dy, b))
    out: list[int] = []
    for (axis, fixed, d) in sorted(lines):
        pts = sorted(lines[(axis, fixed, d)])
        i = 0
        while i < len(pts):
            j = i
            while j + 1 < len(pts) and pts[j + 1][0] == pts[j][0] + 1 and pts[j + 1][1] == pts[i][1]:
                j += 1
            a, b = pts[i][0] * d, (pts[j][0] + 1) * d
            out += [a, fixed, b, fixed] if axis == 0 else [fixed, a, fixed, b]
            out.append(pts[i][1])
            i = j + 1
    return out


# --- summary ------------------------------------------------------------------------------


def summary(manifest: dict, placement: dict, rows: list[dict], runs: dict,
            sim_result: dict | None, loads: dict) -> dict[str, Any]:
    t = manifest["target"]
    W, H = int(t["usable_width"]), int(t["usable_height"])
    budget = int(t["sram_bytes"]) - int(t.get("sram_reserve_bytes", 0))
    stats = placement.get("stats") or {}
    pes = int(manifest.get("pes_used") or sum(r["pes"] for r in rows))
    peak = max(rows, key=lambda r: (r["sram"], r["name"])) if rows else None
    clock = float(t["clock_hz"])
    s: dict[str, Any] = {
        "kernels": len(rows), "pes_used": pes, "pes_available": W * H,
        "pes_pct": round(100.0 * pes / (W * H), 2) if W * H else 0.0,
        "sram_budget": budget, "sram_per_pe": int(t["sram_bytes"]),
        "sram_peak": peak["sram"] if peak else 0, "sram_peak_kernel": peak["name"] if peak else "",
        "sram_peak_pct": peak["sram_pct"] if peak else 0.0,
        "sram_total": sum(r["sram"] * r["pes"] for r in rows),
        "clock_hz": clock,
        "routes": len(placement.get("edges") or []),
        "links_used": stats.get("links_used", len(loads)),
        "max_link_load_bytes": stats.get("max_link_load_bytes", max(loads.values(), default=0)),
    }
    for key in ("objective", "bound", "gap", "rowmajor_objective", "snake_objective", "total_hops",
                "colors_used", "max_colors_per_router", "method", "solver_status"):
        s[key] = stats.get(key)
    if s["total_hops"] is None and placement.get("edges"):
        hops = [e.get("hops") for e in placement["edges"]]
        s["total_hops"] = sum(hops) if all(isinstance(h, int) for h in hops) else None
    for phase, res in runs.items():
        s[phase] = {"cycles": int(round(res.cycles)), "seconds": res.cycles / clock,
                    "critical": {k: int(round(v)) for k, v in res.critical.items()}}
    if "prefill" in runs:
        s["ttft_s"] = runs["prefill"].cycles / clock
    if "decode" in runs and runs["decode"].cycles > 0:
        s["tokens_per_s"] = clock / runs["decode"].cycles
        s["decode"]["position"] = decode_position(manifest)
    if sim_result:
        keep = ("max_abs_err", "rel_l2_err", "top1_agree", "passed", "tokens_match", "tokens",
                "reference_tokens", "ttft_s", "tokens_per_s", "tolerance", "cycles",
                "first_bad_kernel", "layer_tolerance", "layers_compared", "requests")
        s["simulation"] = {k: sim_result[k] for k in keep if k in sim_result}
    return s


# --- everything ---------------------------------------------------------------------------


def build(manifest: dict, placement: dict | None, module: ModuleOp,
          sim_result: dict | None = None) -> dict[str, Any]:
    """The report's data: meta, kinds, kernels, routes, link runs, timelines, summary."""
    placement = placement or {}
    t = manifest["target"]
    budget = int(t["sram_bytes"]) - int(t.get("sram_reserve_bytes", 0))
    rows = kernels(module, budget)
    runs = simulate(module, manifest, placement)
    attach_cycles(rows, runs)
    attach_errors(rows, sim_result)
    names = [r["name"] for r in rows]
    route_list = routes(placement, rows)
    loads = link_loads(route_list)
    model = manifest.get("model", {})
    kinds = sorted({r["kind"] for r in rows} | set(KIND_COLORS),
                   key=lambda k: (list(KIND_COLORS).index(k) if k in KIND_COLORS else 99, k))
    return {
        "meta": {
            "target": t.get("name", "?"), "width": int(t["usable_width"]),
            "height": int(t["usable_height"]), "clock_hz": float(t["clock_hz"]),
            "sram_budget": budget, "dtype": manifest.get("dtype", "?"),
            "seq_len": manifest.get("seq_len"), "max_seq": manifest.get("max_seq"),
            "arch": model.get("arch", "model"), "layers": model.get("layers"),
            "hidden": model.get("hidden"), "vocab_size": model.get("vocab_size"),
            "weights": manifest.get("weights", True),
            "colors": t.get("colors"), "wsc_version": manifest.get("wsc_version", ""),
            "placement_format": placement.get("format", ""),
        },
        "kinds": [{"kind": k, "label": KIND_LABELS.get(k, k), "color": KIND_COLORS.get(k, OTHER_COLOR)}
                  for k in kinds],
        "kernels": rows,
        "layers": layer_groups(rows),
        "routes": route_list,
        "links": link_runs(loads),
        "timeline": {phase: timeline(res, names) for phase, res in runs.items()},
        "summary": summary(manifest, placement, rows, runs, sim_result, loads),
    }
