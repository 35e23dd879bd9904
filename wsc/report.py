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
- a sortable table of kernels.

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


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


# --- the page -------------------------------------------------------------------------------


def _card(label: str, value: str, detail: str = "", cls: str = "") -> str:
    d = f'<div class="detail">{detail}</div>' if detail else ""
    return (f'<div class="card {cls}"><div class="label">{_e(label)}</div>'
            f'<div class="value">{value}</div>{d}</div>')


def _critical_bar(crit: dict[str, int]) -> str:
    total = sum(crit.values()) or 1
    parts = []
    for key, cls in (("compute", "compute"), ("fabric", "fabric"), ("waiting", "wait")):
        v = crit.get(key, 0)
        parts.append(f'<span class="seg cat-{cls}" style="width:{100.0 * v / total:.2f}%" '
                     f'title="{key}: {v:,} cycles"></span>')
    legend = ", ".join(f"{k} {100.0 * crit.get(k, 0) / total:.0f}% ({crit.get(k, 0):,} cycles)"
                       for k in ("compute", "fabric", "waiting"))
    return f'<div class="critbar">{"".join(parts)}</div><div class="detail">{legend}</div>'


def _summary(d: dict) -> str:
    s, m = d["summary"], d["meta"]
    cards = [
        _card("PEs used", f"{fmt_int(s['pes_used'])} <small>of {fmt_int(s['pes_available'])}</small>",
              f"{fmt_pct(s['pes_pct'])} of the {m['width']}x{m['height']} usable mesh; "
              f"{s['kernels']} kernels"),
        _card("SRAM peak per PE", f"{fmt_bytes(s['sram_peak'])}",
              f"{fmt_pct(s['sram_peak_pct'])} of the {fmt_bytes(s['sram_budget'])} buffer budget, "
              f"in {_e(s['sram_peak_kernel'])}; {fmt_bytes(s['sram_total'])} on the wafer"),
    ]
    if "ttft_s" in s:
        p = s["prefill"]
        cards.append(_card("Time to first token (modeled)", fmt_seconds(s["ttft_s"]),
                           f"prefill of {m['seq_len']} tokens: {fmt_int(p['cycles'])} cycles at "
                           f"{m['clock_hz'] / 1e9:g} GHz", "accent"))
    if "tokens_per_s" in s:
        dd = s["decode"]
        cards.append(_card("Decode (modeled)", f"{fmt_rate(s['tokens_per_s'])} <small>tokens/s</small>",
                           f"{fmt_seconds(dd['seconds'])} per token "
                           f"({fmt_int(dd['cycles'])} cycles at KV position {dd['position']})", "accent"))
    gap = s.get("gap")
    cards += [
        _card("Placement objective", f"{fmt_int(s.get('objective'))} <small>byte·hops</small>",
              f"lower bound {fmt_int(s.get('bound'))}; gap "
              f"{'—' if gap is None else f'{100.0 * gap:.1f}%'}; "
              f"{_e(s.get('method') or '?')}, {_e(s.get('solver_status') or '?')}"),
        _card("Baselines", f"{fmt_int(s.get('rowmajor_objective'))} <small>/</small> "
              f"{fmt_int(s.get('snake_objective'))}",
              "row-major / snake objective (byte·hops; — when the layout did not fit)"),
        _card("Routes", f"{fmt_int(s.get('total_hops'))} <small>hops</small>",
              f"{fmt_int(s['routes'])} routes over {fmt_int(s.get('links_used'))} links; busiest "
              f"link {fmt_bytes(s.get('max_link_load_bytes'))} per run"),
        _card("Colors", f"{fmt_int(s.get('colors_used'))} <small>used</small>",
              f"at most {fmt_int(s.get('max_colors_per_router'))} on one router, of "
              f"{fmt_int(m.get('colors'))}"),
    ]
    crit = ""
    for phase in ("prefill", "decode"):
        if phase in s:
            crit += (f'<div class="crit"><div class="label">Critical path, {phase}</div>'
                     f'{_critical_bar(s[phase]["critical"])}</div>')
    sim = s.get("simulation")
    num = ""
    if sim:
        ok = sim.get("passed")
        verdict = ("" if ok is None else
                   f'<span class="{"pass" if ok else "fail"}">{"PASS" if ok else "FAIL"}</span>')
        rows = []
        for key, label, f in (("rel_l2_err", "relative L2 error", "{:.3e}"),
                              ("max_abs_err", "max abs error", "{:.3e}"),
                              ("top1_agree", "top-1 agreement", "{:.4f}"),
                              ("tokens_match", "generated tokens match transformers", "{}"),
                              ("ttft_s", "time to first token (simulated run)", None),
                              ("tokens_per_s", "tokens/s (simulated run)", "rate")):
            if key in sim:
                v = sim[key]
                text = (fmt_seconds(v) if f is None else fmt_rate(v) if f == "rate"
                        else f.format(v))
                rows.append(f"<tr><th>{label}</th><td>{_e(text)}</td></tr>")
        num = (f'<div class="numerics"><div class="label">Numerics vs PyTorch {verdict}</div>'
               f'<table class="kv">{"".join(rows)}</table></div>')
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


def _table(d: dict) -> str:
    head = ("kernel", "kind", "module", "grid", "PEs", "origin", "SRAM/PE (B)", "% budget",
            "prefill cycles", "decode cycles", "prefill bound", "decode bound")
    ths = "".join(f'<th data-col="{i}">{h}</th>' for i, h in enumerate(head))
    body = []
    for i, k in enumerate(d["kernels"]):
        pre, dec = k.get("prefill"), k.get("decode")
        pb, pbc = _share(pre)
        db, dbc = _share(dec)
        color = KIND_COLORS.get(k["kind"], OTHER_COLOR)
        cells = [
            f'<td class="name">{_e(k["name"])}</td>',
            f'<td><i class="sw" style="background:{color}"></i>{_e(k["kind"])}</td>',
            f'<td class="mod">{_e(k["module"])}</td>',
            f'<td data-v="{k["pes"]}">{k["rows"]}x{k["cols"]}</td>',
            f'<td data-v="{k["pes"]}">{k["pes"]:,}</td>',
            f'<td data-v="{k["y"] * 100000 + k["x"]}">{k["x"]},{k["y"]}</td>',
            f'<td data-v="{k["sram"]}">{k["sram"]:,}</td>',
            f'<td data-v="{k["sram_pct"]}">{k["sram_pct"]:.1f}</td>',
            f'<td data-v="{pre["cycles"] if pre else -1}">{fmt_int(pre["cycles"] if pre else None)}</td>',
            f'<td data-v="{dec["cycles"] if dec else -1}">{fmt_int(dec["cycles"] if dec else None)}</td>',
            f'<td class="b-{pbc}">{pb}</td>', f'<td class="b-{dbc}">{db}</td>',
        ]
        body.append(f'<tr data-i="{i}">{"".join(cells)}</tr>')
    return (f'<section id="kernels-section"><h2>Kernels <small>click a header to sort, a row to '
            f'find it on the mesh</small></h2><div class="table-wrap"><table id="kernels">'
            f'<thead><tr>{ths}</tr></thead><tbody>\n' + "\n".join(body) + "\n</tbody></table></div></section>")


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
    from wsc.runtime_sim.bundle import PLACEMENT, PROGRAM, open_bundle

    b = open_bundle(bundle)
    module = parse_module(b.program_text(), str(b.file(PROGRAM)))
    placement = b.read_json(PLACEMENT) if (b.path / PLACEMENT).is_file() else {}
    from_file = isinstance(sim, (str, Path))
    sim_result = load_sim_result(sim) if from_file else sim
    if sim_result is not None:
        check_sim_result(sim_result, b.path, str(sim) if from_file else "the simulation result")
    data = build(b.manifest, placement, module, sim_result)
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
