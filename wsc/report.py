"""The placement report: one self-contained HTML page (no scripts or styles from the network).

It shows the mesh with every kernel's rectangle, labelled, and a table of kernels: grid, SRAM
per PE, modeled cycles per phase. Everything comes from the bundle.
"""

from __future__ import annotations

import html
from pathlib import Path

from xdsl.dialects.builtin import ModuleOp

from wsc.ir.tile import programs

KIND_COLORS = {
    "embedding": "#8e6c8a", "norm": "#6a9f58", "linear": "#4e79a7", "attention": "#e15759",
    "eltwise": "#f28e2b",
}


def kernel_rows(module: ModuleOp, manifest: dict, placement: dict) -> list[dict]:
    """One row per region: placement, footprint and the modeled cycles of each phase."""
    from wsc.runtime_sim.simulator import Simulator

    sim = Simulator(module, manifest, placement, functional=False)
    cycles = {ph: sim.estimate(ph, pos0=manifest["seq_len"] if ph == "decode" else 0)
              for ph in sim.programs}
    rows = []
    prefill = programs(module)["prefill"]
    for r in prefill.regions_():
        name = r.sym_name.data
        sram = max(b.offset_bytes + b.nbytes for b in r.buffers()) if r.buffers() else 0
        row = {
            "name": name, "kind": r.kernel.data,
            "module": r.module.data if r.module is not None else "",
            "origin": list(r.origin.get_values()), "grid": list(r.grid), "sram_bytes": sram,
        }
        for ph, res in cycles.items():
            st = res.regions[name]
            row[f"{ph}_cycles"] = int(st.compute + st.fabric)
        rows.append(row)
    return rows


def render_report(manifest: dict, placement: dict, module: ModuleOp) -> str:
    rows = kernel_rows(module, manifest, placement)
    t = manifest["target"]
    W, H = t["usable_width"], t["usable_height"]
    scale = 900.0 / max(W, H)
    rects = []
    for r in rows:
        x, y = r["origin"]
        gr, gc = r["grid"]
        color = KIND_COLORS.get(r["kind"], "#999")
        title = html.escape(f"{r['name']} ({r['kind']}) {gr}x{gc} PEs, {r['sram_bytes']} B/PE")
        rects.append(
            f'<g><title>{title}</title><rect x="{x * scale:.2f}" y="{y * scale:.2f}" '
            f'width="{max(gc * scale, 0.5):.2f}" height="{max(gr * scale, 0.5):.2f}" '
            f'fill="{color}" fill-opacity="0.8" stroke="#222" stroke-width="0.3"/>'
            f'<text class="label" x="{(x + gc / 2) * scale:.2f}" y="{(y + gr / 2) * scale:.2f}">'
            f"{html.escape(r['name'])}</text></g>"
        )
    table = "\n".join(
        f"<tr><td>{html.escape(r['name'])}</td><td>{r['kind']}</td><td>{r['grid'][0]}x{r['grid'][1]}</td>"
        f"<td>{r['origin'][0]},{r['origin'][1]}</td><td>{r['sram_bytes']}</td>"
        f"<td>{r.get('prefill_cycles', '')}</td><td>{r.get('decode_cycles', '')}</td></tr>"
        for r in rows
    )
    model = manifest.get("model", {})
    title = html.escape(f"wsc report: {model.get('arch', 'model')} ({model.get('layers', '?')} layers) on {t['name']}")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
svg {{ background: #f4f4f4; border: 1px solid #ccc; }}
.label {{ font-size: 7px; text-anchor: middle; dominant-baseline: middle; fill: #111; }}
table {{ border-collapse: collapse; font-size: 13px; margin-top: 1em; }}
td, th {{ border: 1px solid #ccc; padding: 2px 8px; text-align: right; }}
td:first-child {{ text-align: left; }}
</style></head><body>
<h1>{title}</h1>
<p>{W}x{H} PEs; {manifest.get('pes_used', '?')} used by {len(rows)} kernels; dtype {manifest['dtype']}.</p>
<svg id="mesh" width="{W * scale:.0f}" height="{H * scale:.0f}" viewBox="0 0 {W * scale:.2f} {H * scale:.2f}">
{''.join(rects)}
</svg>
<table id="kernels"><thead><tr><th>kernel</th><th>kind</th><th>grid</th><th>origin</th>
<th>SRAM B/PE</th><th>prefill cycles</th><th>decode cycles</th></tr></thead>
<tbody>
{table}
</tbody></table>
</body></html>
"""


def write_report_for_bundle(bundle: Path, out: Path | None = None) -> Path:
    from wsc.ir import parse_module
    from wsc.runtime_sim.bundle import PLACEMENT, open_bundle

    b = open_bundle(bundle)
    module = parse_module(b.program_text(), str(b.path))
    text = render_report(b.manifest, b.read_json(PLACEMENT), module)
    out = out or Path(bundle).with_suffix(".html")
    out.write_text(text)
    return out
