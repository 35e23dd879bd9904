"""The placement report: one self-contained HTML page that shows a spatial mapping.

    render_report(manifest, placement, module)       # the page, as a string (deterministic)
    write_report_for_bundle(bundle, out, sim=..., png=...)

The page works offline: its CSS and JavaScript are inlined from `wsc/report_assets/`, its data
is one JSON block, and nothing is fetched. It shows:

- a summary (PEs, SRAM, placement objective against its bound and baselines, modeled time to
  first token and tokens/s, the critical path, numerics when a `wsc simulate --json` result is
  given);
- the mesh drawn to scale on a canvas (pan and zoom), every kernel a rectangle coloured by kind
  and labelled, with layers for the routes' link-load heat map and per-PE SRAM utilisation;
- the simulator's timeline, a Gantt row per region for prefill and decode;
- a sortable table of kernels, grouped by transformer layer;
- one search box (module path, layer, or any part of a name) that filters all three.

The summary and the table are plain HTML, readable without JavaScript; the canvases are drawn
by the script from the data block, which stays small for big models (see report_data.py).
The same bundle always gives the same bytes: no timestamps, sorted keys.
"""

from __future__ import annotations

import html
import json
import time
from importlib import resources
from pathlib import Path
from typing import Any

from xdsl.dialects.builtin import ModuleOp

from wsc.errors import UsageError
from wsc.report_data import KIND_COLORS, OTHER_COLOR, build


def _asset(name: str) -> str:
    return resources.files("wsc").joinpath("report_assets", name).read_text(encoding="utf-8")


# --- formatting -----------------------------------------------------------------------------


def fmt_int(v: Any) -> str:
    """Thousands separated, or an em dash when unknown."""
    if v is None:
        return "—"
    if isinstance(v, float) and not v.is_integer():
        return f"{v:,.2f}"
    return f"{int(v):,}"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "—"
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "—"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if abs(s) >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def fmt_rate(r: float) -> str:
    """A rate: whole numbers from 100 up, three significant digits below."""
    return f"{r:,.0f}" if r >= 100 else f"{r:.3g}"


def fmt_pct(p: float | None) -> str:
    return "—" if p is None else f"{p:.1f}%"


SI_PREFIXES = ("", " k", " M", " G", " T", " P", " E")


def fmt_si(v: float | None) -> str:
    """Three significant digits and an SI prefix, whole below 1000: 3.25e10 -> "32.5 G"."""
    if v is None:
        return "—"
    x, i = float(v), 0
    while abs(x) >= 999.5 and i < len(SI_PREFIXES) - 1:  # from 999.5 on, "%.3g" says "1e+03"
        x, i = x / 1000, i + 1
    return (f"{x:.3g}" if i else f"{x:.0f}") + SI_PREFIXES[i]


def fmt_ratio(v: float | None, of: float | None) -> str:
    """v as a multiple of `of` ("2.76×"), or an em dash when either is unknown."""
    return "—" if v is None or not of else f"{v / of:.3g}×"


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _n(text: Any, exact: str | None = None) -> str:
    """A number with its unit, kept on one line; `exact` shows on hover."""
    title = f' title="{_e(exact)}"' if exact else ""
    return f'<span class="num"{title}>{_e(text)}</span>'


# --- the page -------------------------------------------------------------------------------


def _card(label: str, value: str, detail: str = "", cls: str = "") -> str:
    d = f'<div class="detail">{detail}</div>' if detail else ""
    return (f'<div class="card {cls}"><div class="label">{_e(label)}</div>'
            f'<div class="value">{value}</div>{d}</div>')


def _critical_bar(crit: dict[str, int]) -> str:
    total = sum(crit.values()) or 1
    parts, legend = [], []
    for key, cls in (("compute", "compute"), ("fabric", "fabric"), ("waiting", "wait")):
        v = crit.get(key, 0)
        parts.append(f'<span class="seg cat-{cls}" style="width:{100.0 * v / total:.2f}%" '
                     f'title="{key}: {v:,} cycles"></span>')
        legend.append(f"{key} {_n(f'{100.0 * v / total:.0f}%')} ({_n(f'{v:,} cycles')})")
    return f'<div class="critbar">{"".join(parts)}</div><div class="detail">{", ".join(legend)}</div>'


def _byte_hops(v: float | None) -> str:
    return _n(f"{fmt_si(v)} byte·hops", None if v is None else f"{fmt_int(v)} byte·hops")


def _placement_cards(s: dict) -> list[str]:
    """The objective, and each baseline layout's objective as a multiple of it: the factor
    placement saves over laying kernels out in order (— when a baseline did not fit)."""
    obj, gap = s.get("objective"), s.get("gap")
    objective = _card(
        "Placement objective", _byte_hops(obj),
        f"lower bound {_byte_hops(s.get('bound'))}; gap "
        f"{_n('—' if gap is None else f'{100.0 * gap:.1f}%')}; "
        f"{_e(s.get('method') or '?')}, {_e(s.get('solver_status') or '?')}")
    rows = []
    for key, label in (("rowmajor_objective", "row-major"), ("snake_objective", "snake")):
        v = s.get(key)
        exact = "did not fit the mesh" if v is None else f"{fmt_int(v)} byte·hops"
        rows.append(f"<tr><th>{label}</th><td>{_n(fmt_si(v), exact)}</td><td>{_n(fmt_ratio(v, obj))}</td></tr>")
    baselines = _card("Baselines", f'<table class="kv">{"".join(rows)}</table>',
                      "byte·hops of kernels in pipeline order, and × this placement's")
    return [objective, baselines]


def _numerics(sim: dict) -> str:
    ok = sim.get("passed")
    verdict = ("" if ok is None else
               f'<span class="{"pass" if ok else "fail"}">{"PASS" if ok else "FAIL"}</span>')
    rows = []
    for key, label, f in (("rel_l2_err", "relative L2 error", "{:.3e}"),
                          ("max_abs_err", "max abs error", "{:.3e}"),
                          ("top1_agree", "top-1 agreement", "{:.4f}"),
                          ("tokens_match", "generated tokens match transformers", "{}"),
                          ("layers_compared", "kernels compared with torch (--compare-layers)", "{}"),
                          ("ttft_s", "time to first token (simulated run)", None),
                          ("tokens_per_s", "tokens/s (simulated run)", "rate")):
        if key in sim:
            v = sim[key]
            text = fmt_seconds(v) if f is None else fmt_rate(v) if f == "rate" else f.format(v)
            rows.append(f"<tr><th>{label}</th><td>{_n(text)}</td></tr>")
    if "layers_compared" in sim:
        bad = sim.get("first_bad_kernel")
        text = (f"none (rel L2 ≤ {sim.get('layer_tolerance', 0):g})" if bad is None else bad)
        rows.append(f'<tr><th>first kernel over tolerance</th><td class="{"pass" if bad is None else "fail"}">'
                    f'{_e(text)}</td></tr>')
    return (f'<div class="numerics"><div class="label">Numerics vs PyTorch {verdict}</div>'
            f'<table class="kv">{"".join(rows)}</table></div>')


def _summary(d: dict) -> str:
    s, m = d["summary"], d["meta"]
    mesh, ghz = f"{m['width']}x{m['height']}", f"{m['clock_hz'] / 1e9:g} GHz"
    cards = [
        _card("PEs used", f"{_n(fmt_int(s['pes_used']))} <small>of {_n(fmt_int(s['pes_available']))}</small>",
              f"{_n(fmt_pct(s['pes_pct']))} of the {_n(mesh)} usable mesh; {_n(s['kernels'])} kernels"),
        _card("SRAM peak per PE", _n(fmt_bytes(s["sram_peak"])),
              f"{_n(fmt_pct(s['sram_peak_pct']))} of the {_n(fmt_bytes(s['sram_budget']))} buffer "
              f"budget, in {_e(s['sram_peak_kernel'])}; {_n(fmt_bytes(s['sram_total']))} on the wafer"),
    ]
    if "ttft_s" in s:
        cycles = fmt_int(s["prefill"]["cycles"]) + " cycles"
        cards.append(_card("Time to first token (modeled)", _n(fmt_seconds(s["ttft_s"])),
                           f"prefill of {_n(m['seq_len'])} tokens: {_n(cycles)} at {_n(ghz)}", "accent"))
    if "tokens_per_s" in s:
        dd = s["decode"]
        cycles = fmt_int(dd["cycles"]) + " cycles"
        cards.append(_card("Decode (modeled)", f"{_n(fmt_rate(s['tokens_per_s']))} <small>tokens/s</small>",
                           f"{_n(fmt_seconds(dd['seconds']))} per token ({_n(cycles)} at KV position "
                           f"{_n(dd['position'])})", "accent"))
    cards += _placement_cards(s)
    cards += [
        _card("Routes", f"{_n(fmt_int(s.get('total_hops')))} <small>hops</small>",
              f"{_n(fmt_int(s['routes']))} routes over {_n(fmt_int(s.get('links_used')))} links; busiest "
              f"link {_n(fmt_bytes(s.get('max_link_load_bytes')))} per run"),
        _card("Colors", f"{_n(fmt_int(s.get('colors_used')))} <small>used</small>",
              f"at most {_n(fmt_int(s.get('max_colors_per_router')))} on one router, of "
              f"{_n(fmt_int(m.get('colors')))}"),
    ]
    crit = "".join(f'<div class="crit"><div class="label">Critical path, {phase}</div>'
                   f'{_critical_bar(s[phase]["critical"])}</div>' for phase in ("prefill", "decode") if phase in s)
    num = _numerics(s["simulation"]) if s.get("simulation") else ""
    return (f'<section id="summary"><h2>Summary</h2><div class="cards">{"".join(cards)}</div>'
            f'<div class="crits">{crit}{num}</div></section>')


def _legend(d: dict) -> str:
    kinds = "".join(f'<span class="kind"><i style="background:{k["color"]}"></i>{_e(k["label"])}</span>'
                    for k in d["kinds"])
    return (f'<div class="legend"><span class="group">{kinds}</span>'
            f'<span class="group" id="legend-links"><span class="ramp ramp-links"></span>'
            f'<span id="legend-links-text">link load</span></span>'
            f'<span class="group" id="legend-sram"><span class="ramp ramp-sram"></span>'
            f'<span id="legend-sram-text">SRAM 0–100% of budget</span></span></div>')


def _mesh(d: dict) -> str:
    m = d["meta"]
    return f"""<section id="mesh-section"><h2>Mesh <small>{m['width']} x {m['height']} PEs, \
to scale</small></h2>
<div class="toolbar">
<label><input type="checkbox" id="layer-kernels" checked> kernels</label>
<label><input type="checkbox" id="layer-labels" checked> labels</label>
<label><input type="checkbox" id="layer-routes" checked> routes (link load)</label>
<label><input type="checkbox" id="layer-sram"> SRAM per PE</label>
<span class="sep"></span>
<button type="button" id="zoom-in" title="zoom in">+</button>
<button type="button" id="zoom-out" title="zoom out">−</button>
<button type="button" id="zoom-fit" title="fit the mesh">fit</button>
<span class="hint">wheel: zoom, drag: pan, click: select a kernel</span>
</div>
{_legend(d)}
<div id="mesh-wrap"><canvas id="mesh" role="img" aria-label="kernels placed on the mesh"></canvas></div>
</section>"""


def _timeline() -> str:
    return """<section id="timeline-section"><h2>Timeline <small>modeled by the simulator's \
cycle model</small></h2>
<div class="toolbar"><span id="timeline-tabs"></span><span class="sep"></span>
<span class="legend inline"><span class="kind"><i class="cat-compute"></i>compute</span>
<span class="kind"><i class="cat-fabric"></i>fabric (collectives, shifts)</span>
<span class="kind"><i class="cat-send"></i>send to next kernel</span>
<span class="kind"><i class="cat-wait"></i>waiting for input</span></span>
<span class="hint">ctrl/shift + wheel: zoom time, drag: pan, double-click: reset</span></div>
<canvas id="timeline-axis"></canvas>
<div id="timeline-scroll"><canvas id="timeline" role="img" aria-label="Gantt chart per kernel"></canvas></div>
</section>"""


def _share(ph: dict | None) -> tuple[str, str]:
    if not ph:
        return "—", ""
    share = ph["compute_share"] if ph["bound"] == "compute" else 1 - ph["compute_share"]
    short = "compute" if ph["bound"] == "compute" else "comm"
    return f"{short} ({100 * share:.0f}%)", ph["bound"]


TABLE_HEAD = ("kernel", "kind", "grid", "PEs", "origin (x, y)", "SRAM/PE (B)", "% budget",
              "prefill cycles", "decode cycles", "prefill bound", "decode bound")


def _cycles(ph: dict | None) -> str:
    return f'<td data-v="{ph["cycles"] if ph else -1}">{fmt_int(ph["cycles"] if ph else None)}</td>'


ERROR_HEAD = "rel L2 vs torch"


def _error_cell(k: dict) -> str:
    """A kernel's output error against torch (`--compare-layers`), red when over tolerance."""
    e = k.get("error")
    if not e or e.get("rel_l2_err") is None:
        note = (e or {}).get("note", "not compared")
        return f'<td data-v="-1" title="{_e(note)}">—</td>'
    cls = "pass" if e.get("passed") else "fail"
    title = f"against the {e.get('reference', '')}; max abs {e.get('max_abs_err', 0):.3e}"
    return f'<td data-v="{e["rel_l2_err"]:.6e}" class="{cls}" title="{_e(title)}">{e["rel_l2_err"]:.2e}</td>'


def _kernel_row(i: int, k: dict, group: int, errors: bool = False) -> str:
    pre, dec = k.get("prefill"), k.get("decode")
    pb, pbc = _share(pre)
    db, dbc = _share(dec)
    color = KIND_COLORS.get(k["kind"], OTHER_COLOR)
    # the name is the module path (plus a suffix when one module gives several kernels), so
    # the module is not a column of its own; the mesh's tooltip still names it
    cells = [
        f'<td class="name">{_e(k["name"])}</td>',
        f'<td><i class="sw" style="background:{color}"></i>{_e(k["kind"])}</td>',
        f'<td data-v="{k["pes"]}">{k["rows"]}x{k["cols"]}</td>',
        f'<td data-v="{k["pes"]}">{k["pes"]:,}</td>',
        f'<td data-v="{k["y"] * 100000 + k["x"]}">({k["x"]}, {k["y"]})</td>',
        f'<td data-v="{k["sram"]}">{k["sram"]:,}</td>',
        f'<td data-v="{k["sram_pct"]}">{k["sram_pct"]:.1f}</td>',
        _cycles(pre), _cycles(dec),
        f'<td class="b-{pbc}">{pb}</td>', f'<td class="b-{dbc}">{db}</td>',
    ]
    if errors:
        cells.append(_error_cell(k))
    return f'<tr data-i="{i}" data-g="{group}">{"".join(cells)}</tr>'


def _group_row(n: int, g: dict, errors: bool = False) -> str:
    """A layer's header row: its kernels' PEs and busy cycles summed, SRAM at its peak."""
    label = "not in a layer" if g["layer"] is None else f'layer {g["layer"]}'
    count = f'{g["count"]} kernel{"s" if g["count"] != 1 else ""}'
    cells = [f'<td class="name"><span class="caret"></span>{label} <small>{count}</small></td>', "<td></td>",
             "<td></td>", f'<td>{g["pes"]:,}</td>', "<td></td>", f'<td>{g["sram"]:,}</td>',
             f'<td>{g["sram_pct"]:.1f}</td>', f'<td>{fmt_int(g["prefill"])}</td>',
             f'<td>{fmt_int(g["decode"])}</td>', "<td></td>", "<td></td>"] + (["<td></td>"] if errors else [])
    return f'<tr class="group" data-g="{n}" title="click to fold or unfold">{"".join(cells)}</tr>'


def _table(d: dict) -> str:
    errors = any("error" in k for k in d["kernels"])  # a --compare-layers result was given
    head = TABLE_HEAD + ((ERROR_HEAD,) if errors else ())
    ths = "".join(f'<th data-col="{i}">{h}</th>' for i, h in enumerate(head))
    body = []
    for n, g in enumerate(d["layers"]):
        body.append(_group_row(n, g, errors))
        body += [_kernel_row(i, d["kernels"][i], n, errors) for i in range(g["first"], g["first"] + g["count"])]
    return (f'<section id="kernels-section"><h2>Kernels <small>grouped by layer (sums of PEs and '
            f'busy cycles, peak SRAM); click a header to sort, a row to find it on the mesh</small></h2>'
            f'<div class="toolbar"><label><input type="checkbox" id="group-layers" checked> group by '
            f'layer</label></div><div class="table-wrap"><table id="kernels">'
            f'<thead><tr>{ths}</tr></thead><tbody>\n' + "\n".join(body) + "\n</tbody></table></div></section>")


# --- requests in flight (wsc simulate --requests) -------------------------------------------

PLOT_W, PLOT_H, PLOT_PAD = 420, 250, (52, 16, 30, 40)  # left, right, top, bottom


def _log_ticks(lo: float, hi: float) -> list[float]:
    import math

    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    return [10.0 ** e for e in range(a, b + 1)]


def _plot(title: str, xs: list[int], series: list[tuple[str, str, list[float]]],
          target: tuple[str, float] | None, unit) -> str:
    """An inline SVG line chart: requests on x (one slot per measured count), a log y axis."""
    import math

    left, right, top, bottom = PLOT_PAD
    w, h = PLOT_W - left - right, PLOT_H - top - bottom
    vals = [v for _, _, ys in series for v in ys if v > 0] + ([target[1]] if target else [])
    ticks = _log_ticks(min(vals), max(vals))
    lo, hi = math.log10(ticks[0]), math.log10(ticks[-1])
    hi = hi if hi > lo else lo + 1

    def X(i: int) -> float:
        return left + (w * i / (len(xs) - 1) if len(xs) > 1 else w / 2)

    def Y(v: float) -> float:
        return top + h - h * (math.log10(max(v, ticks[0])) - lo) / (hi - lo)

    parts = [f'<svg class="plot" width="{PLOT_W}" height="{PLOT_H}" viewBox="0 0 {PLOT_W} {PLOT_H}" '
             f'role="img" aria-label="{_e(title)}"><title>{_e(title)}</title>',
             f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="none" stroke="#ccc"/>']
    for tv in ticks:
        y = Y(tv)
        parts.append(f'<line x1="{left}" x2="{left + w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
                     f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="10">{_e(unit(tv))}</text>')
    for i, x in enumerate(xs):
        parts.append(f'<text x="{X(i):.1f}" y="{top + h + 14}" text-anchor="middle" font-size="10">{x}</text>')
    parts.append(f'<text x="{left + w / 2}" y="{PLOT_H - 6}" text-anchor="middle" font-size="11">'
                 'requests in flight</text>')
    if target:
        y = Y(target[1])
        parts.append(f'<line x1="{left}" x2="{left + w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#cf222e" '
                     f'stroke-dasharray="4 3"/><text x="{left + w - 2}" y="{y - 4:.1f}" '
                     f'text-anchor="end" font-size="10" fill="#cf222e">{_e(target[0])}</text>')
    for k, (name, color, ys) in enumerate(series):
        pts = " ".join(f"{X(i):.1f},{Y(v):.1f}" for i, v in enumerate(ys))
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>')
        parts += [f'<circle cx="{X(i):.1f}" cy="{Y(v):.1f}" r="2.5" fill="{color}"/>' for i, v in enumerate(ys)]
        parts.append(f'<text x="{left + 110 * k}" y="{top - 10}" font-size="11" fill="{color}">● {_e(name)}</text>')
    return "".join(parts) + "</svg>"


def _requests_section(d: dict) -> str:
    """The requests curve of a `wsc simulate --requests` result: tokens/s and TTFT as the
    number of requests in flight grows, as plots and a table."""
    q = ((d["summary"].get("simulation") or {}).get("requests"))
    if not q or not q.get("rows"):
        return ""
    rows = q["rows"]
    xs = [r["requests"] for r in rows]
    t = q["targets"]
    rate = _plot("tokens/s against requests in flight", xs,
                 [("per request", "#0072b2", [r["per_request_tokens_per_s"] for r in rows]),
                  ("aggregate", "#d55e00", [r["aggregate_tokens_per_s"] for r in rows])],
                 (f"{fmt_rate(t['per_request_tokens_per_s'])} tok/s per request", t["per_request_tokens_per_s"]),
                 lambda v: fmt_si(v))
    ttft = _plot("time to first token against requests in flight", xs,
                 [("TTFT", "#009e73", [r["ttft_s"] for r in rows]),
                  ("decode stall", "#cc79a7", [r["decode_stall_s"] for r in rows])],
                 (f"{fmt_seconds(t['ttft_s'])}", t["ttft_s"]), fmt_seconds)
    head = ("requests", "tok/s per request", "aggregate tok/s", "time to first token",
            "decoders stall", "bound per request max(L, R·B)", "KV caches fit")
    body = "".join(
        f"<tr><td>{r['requests']}</td><td>{fmt_rate(r['per_request_tokens_per_s'])}</td>"
        f"<td>{fmt_rate(r['aggregate_tokens_per_s'])}</td><td>{fmt_seconds(r['ttft_s'])}</td>"
        f"<td>{fmt_seconds(r['decode_stall_s'])}</td><td>{fmt_rate(1 / r['bound_period_s'])}</td>"
        f'<td class="{"pass" if r["kv_fits"] else "fail"}">{"yes" if r["kv_fits"] else "no: replan"}</td></tr>'
        for r in rows)
    cap = q.get("kv_capacity")
    note = (f"Prompt of {_n(q['prompt_len'])} tokens, decode steps from KV position "
            f"{_n(q['decode_position'])}. Users served at ≥ {_n(fmt_rate(t['per_request_tokens_per_s']))} "
            f"tok/s each and &lt; {_n(fmt_seconds(t['ttft_s']))} to first token: "
            f"<b>{_n(q['users_served'])}</b>"
            + (f" ({_n(q['users_served_if_kv_fit'])} if the plan held their KV caches)"
               if q["users_served_if_kv_fit"] != q["users_served"] else "")
            + f". The plan's SRAM holds the KV caches of {_n('any number of' if cap is None else cap)} "
            f"requests. One step: L = {_n(fmt_seconds(q['step_latency_s']))}, busiest region "
            f"{_e(q['busiest_region'])} B = {_n(fmt_seconds(q['busiest_region_s']))} per step.")
    return (f'<section id="requests-section"><h2>Requests in flight <small>continuous batching, '
            f'modeled by the simulator\'s scheduler</small></h2><p class="detail">{note}</p>'
            f'<div class="plots">{rate}{ttft}</div><div class="table-wrap"><table id="requests">'
            f'<thead><tr>{"".join(f"<th>{h}</th>" for h in head)}</tr></thead><tbody>{body}'
            f'</tbody></table></div></section>')


def _filter_bar(d: dict) -> str:
    return ('<div id="filter-bar"><label for="search">Find</label>'
            '<input type="search" id="search" autocomplete="off" spellcheck="false" '
            'placeholder="module path or layer: model.layers.3.  ·  layer 3  ·  L2-4  ·  mlp" '
            f'aria-label="filter the mesh, the timeline and the table"><span id="search-count">'
            f'{len(d["kernels"])} kernels</span><span class="hint">filters the mesh, the timeline and '
            'the table; Enter zooms the mesh to the matches</span></div>')


ERROR_TRAP = """<script>
window.__wscErrors = [];
window.addEventListener('error', function (e) {
  window.__wscErrors.push(String(e.message || e.type) + (e.lineno ? ' (line ' + e.lineno + ')' : ''));
  var p = document.getElementById('script-errors');
  if (p) { p.textContent = window.__wscErrors.join('\\n'); p.hidden = false; }
  var s = document.getElementById('render-status');
  if (s) { s.setAttribute('data-errors', String(window.__wscErrors.length)); }
});
</script>"""


def render_page(d: dict) -> str:
    """The HTML of a report from its data (report_data.build)."""
    m = d["meta"]
    title = (f"wsc report: {m['arch']} ({m['layers'] if m['layers'] is not None else '?'} layers) "
             f"on {m['target']}")
    sub = (f"{m['dtype']}, prompt {m['seq_len']} tokens, KV cache {m['max_seq']} positions, "
           f"hidden {m['hidden']}, vocab {m['vocab_size']}"
           + ("" if m.get("weights", True) else "; plan only (compiled without weights)")
           + f"; wsc {m['wsc_version']}")
    data = json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    data = data.replace("</", "<\\/")  # the block must not close its own <script>
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title>
{ERROR_TRAP}
<style>
{_asset("report.css")}</style></head>
<body>
<header><h1>{_e(title)}</h1><p class="sub">{_e(sub)}</p></header>
<pre id="script-errors" hidden></pre>
<div id="render-status" hidden data-mesh="pending" data-labels="0" data-timeline="pending" data-errors="0"></div>
<noscript><p class="note">The mesh and the timeline are drawn by JavaScript; the summary and the
kernel table below are complete without it.</p></noscript>
{_summary(d)}
{_requests_section(d)}
{_filter_bar(d)}
{_mesh(d)}
{_timeline()}
{_table(d)}
<div id="tooltip" hidden></div>
<script type="application/json" id="wsc-data">{data}</script>
<script>
{_asset("report.js")}</script>
</body></html>
"""


def render_report(manifest: dict, placement: dict, module: ModuleOp, sim: dict | None = None) -> str:
    """The report page of a compiled model; `sim` is an optional `wsc simulate --json` result."""
    return render_page(build(manifest, placement, module, sim))


def load_sim_result(path: Path) -> dict:
    try:
        res = json.loads(Path(path).read_text())
    except OSError as e:
        raise UsageError(f"cannot read the simulation result {path}: {e.strerror}",
                         hint="write one with `wsc simulate BUNDLE --check --json FILE`") from None
    except json.JSONDecodeError as e:
        raise UsageError(f"{path} is not a simulation result: invalid JSON ({e})") from None
    if not isinstance(res, dict):
        raise UsageError(f"{path} is not a simulation result (expected a JSON object)")
    return res


def check_sim_result(res: dict, bundle: Path, source: str) -> None:
    """Refuse a simulation result of another bundle: its numbers would describe a different
    program than the page draws. The digest is the one `wsc simulate --json` records."""
    from wsc.simulate import bundle_digest

    want, got = bundle_digest(bundle), res.get("bundle_digest")
    again = f"run `wsc simulate {bundle} --check --json FILE` and pass that file"
    if got is None:
        raise UsageError(f"{source} does not say which bundle it came from (no bundle_digest; "
                         "written by an older wsc?)", hint=again)
    if got != want:
        raise UsageError(f"{source} came from another bundle ({res.get('bundle', '?')}, "
                         f"{str(got)[:19]}...), not {bundle} ({want[:19]}...)", hint=again)


def write_report_for_bundle(bundle: Path, out: Path | None = None, *, sim: Path | dict | None = None,
                            png: Path | None = None) -> Path:
    """Read a bundle (refusing tampered files), write its report; optionally a PNG of the mesh.
    `sim` is a `wsc simulate --json` result of this very bundle, or its path."""
    from wsc.ir import parse_module
    from wsc.bundle_format import PLACEMENT, PROGRAM, open_bundle

    b = open_bundle(bundle)
    module = parse_module(b.program_text(), str(b.file(PROGRAM)))
    placement = b.read_json(PLACEMENT) if (b.path / PLACEMENT).is_file() else {}
    from_file = isinstance(sim, (str, Path))
    sim_result = load_sim_result(sim) if from_file else sim
    if sim_result is not None:
        check_sim_result(sim_result, b.path, str(sim) if from_file else "the simulation result")
    data = build(b.manifest.to_json(), placement, module, sim_result)
    out = Path(out) if out is not None else Path(bundle).with_suffix(".html")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_page(data), encoding="utf-8")
    if png is not None:
        from wsc.report_png import write_png

        write_png(data, Path(png))
    return out


def timed_report(bundle: Path, out: Path | None = None, **kw) -> tuple[Path, float]:
    """`write_report_for_bundle` and how long it took (for the CLI)."""
    t0 = time.perf_counter()
    path = write_report_for_bundle(bundle, out, **kw)
    return path, time.perf_counter() - t0
