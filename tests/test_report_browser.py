"""The report in a real browser: headless Chromium draws it offline, without script errors.

Skipped when Chromium is missing, unless WSC_REQUIRE_BROWSER is set (CI sets it after
installing Chromium, so a broken install fails instead of skipping silently).
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from test_report import tiny_bundle
from wsc.report import render_page, write_report_for_bundle
from wsc.report_data import (KIND_COLORS, KIND_LABELS, layer_groups, link_loads, link_runs, routes, summary,
                              timeline)
from wsc.runtime_sim.scheduler import Event, RegionStats, RunResult


def chromium_path() -> str | None:
    if Path("/usr/bin/chromium").is_file():
        return "/usr/bin/chromium"
    return shutil.which("chromium")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    exe = chromium_path()
    if exe is None:
        if os.environ.get("WSC_REQUIRE_BROWSER"):
            pytest.fail("WSC_REQUIRE_BROWSER is set but Chromium is not installed at /usr/bin/chromium")
        pytest.skip("Chromium is not installed (apt-get install chromium); set WSC_REQUIRE_BROWSER=1 to require it")
    profile = tmp_path_factory.mktemp("chromium-profile")

    def run(page: Path, *args: str) -> subprocess.CompletedProcess:
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", "--hide-scrollbars", "--host-resolver-rules=MAP * ~NOTFOUND",
               "--virtual-time-budget=10000", *args, page.resolve().as_uri()]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        return r

    return run


def status_of(dom: str) -> dict[str, str]:
    m = re.search(r'<div id="render-status"([^>]*)>', dom)
    assert m, "no render status in the DOM"
    return {k: html.unescape(v) for k, v in re.findall(r'data-([\w-]+)="([^"]*)"', m[1])}


def script_errors(dom: str) -> str:
    m = re.search(r'<pre id="script-errors"[^>]*>(.*?)</pre>', dom, re.S)
    return html.unescape(m[1]) if m else "<no error element>"


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, list[str]]:
    d = tmp_path_factory.mktemp("browser")
    out = write_report_for_bundle(tiny_bundle(d), d / "report.html")
    names = re.findall(r'<td class="name">([^<]*)</td>', out.read_text())
    return out, [html.unescape(n) for n in names]


def test_report_renders_without_errors(browser, report):
    page, names = report
    dom = browser(page, "--window-size=1280,1600", "--dump-dom").stdout
    st = status_of(dom)
    assert st["errors"] == "0", script_errors(dom)
    assert script_errors(dom) == ""
    assert st["mesh"] == "ok" and st["timeline"] == "ok"
    assert int(st["labels"]) >= 1
    sample = st["label-sample"]
    assert sample and any(sample == n or n.endswith(sample.split(" ")[-1]) or sample in n for n in names), sample
    assert int(st["timeline-rows"]) == len(names)
    assert 'id="tab-prefill"' in dom and 'id="tab-decode"' in dom  # built by the script


def test_screenshot_is_not_blank(browser, report, tmp_path):
    from PIL import Image

    page, _ = report
    shot = tmp_path / "shot.png"
    browser(page, "--window-size=1200,1400", f"--screenshot={shot}")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(shot).convert("RGB")
    assert img.size == (1200, 1400)
    colors = img.getcolors(maxcolors=1 << 20)
    assert colors is not None and len(colors) > 50  # text, cards, kernels, routes, not one flat fill
    kinds = {tuple(int(KIND_COLORS[k][i:i + 2], 16) for i in (1, 3, 5)) for k in ("linear", "norm")}
    assert len({c for _, c in colors} & kinds) or len(colors) > 200


INTERACT = """<script>
(function () {
  var tip = document.getElementById('tooltip'), seen = [];
  function ev(el, type, x, y, extra) {
    var o = { clientX: x, clientY: y, bubbles: true, cancelable: true, pointerId: 1, deltaY: -120 };
    for (var k in (extra || {})) o[k] = extra[k];
    el.dispatchEvent(type === 'wheel' ? new WheelEvent(type, o) : new PointerEvent(type, o));
  }
  var mesh = document.getElementById('mesh'), r = mesh.getBoundingClientRect();
  for (var i = 1; i < 12; i++) for (var j = 1; j < 12; j++) {
    ev(mesh, 'pointermove', r.left + r.width * i / 12, r.top + r.height * j / 12);
    if (!tip.hidden) seen.push(tip.textContent);
  }
  ev(mesh, 'pointerdown', r.left + r.width / 2, r.top + r.height / 2);   // click: select
  ev(mesh, 'pointerup', r.left + r.width / 2, r.top + r.height / 2);
  ev(mesh, 'wheel', r.left + r.width / 2, r.top + r.height / 2);          // zoom in
  ev(mesh, 'pointerdown', r.left + 50, r.top + 50);                       // drag: pan
  ev(mesh, 'pointermove', r.left + 150, r.top + 120);
  ev(mesh, 'pointerup', r.left + 150, r.top + 120);
  ['layer-sram', 'layer-routes', 'layer-labels', 'zoom-fit', 'tab-decode'].forEach(function (id) {
    document.getElementById(id).click();
  });
  var tl = document.getElementById('timeline'), t = tl.getBoundingClientRect();
  ev(tl, 'pointermove', t.left + t.width * 0.6, t.top + 5);
  if (!tip.hidden) seen.push(tip.textContent);
  ev(tl, 'wheel', t.left + t.width * 0.6, t.top + 5, { ctrlKey: true });
  document.querySelector('#kernels th[data-col="5"]').click();            // sort by SRAM
  document.querySelector('#kernels tbody tr[data-i]').click();            // find it on the mesh
  document.body.setAttribute('data-hover', JSON.stringify(seen));
  document.body.setAttribute('data-first-row', document.querySelector('#kernels tbody tr[data-i] td').textContent);
})();
</script>"""


def test_hover_select_zoom_and_sort(browser, report, tmp_path):
    import json

    page, names = report
    text = page.read_text().replace("</body>", INTERACT + "</body>")
    probe = tmp_path / "probe.html"
    probe.write_text(text)
    dom = browser(probe, "--window-size=1280,1600", "--dump-dom").stdout
    st = status_of(dom)
    assert st["errors"] == "0", script_errors(dom)
    seen = json.loads(html.unescape(re.search(r'data-hover="([^"]*)"', dom)[1]))
    kernel_tips = [t for t in seen if "SRAM:" in t and "prefill:" in t]
    assert kernel_tips and any(n in t for t in kernel_tips for n in names)
    assert any("per run on the" in t for t in seen)  # a link of the heat map
    assert any(("at " in t and "cycle" in t) for t in seen)  # the timeline
    first = html.unescape(re.search(r'data-first-row="([^"]*)"', dom)[1])
    assert first in names and 'class="sel"' in dom


def synthetic_big_report(directory: Path) -> Path:
    """A page the size of a 32-layer model on wse3: 320 kernels on 755x1170, a route between
    consecutive kernels, and 200 timeline events per kernel and phase."""
    W, H, cols = 755, 1170, 16
    kernels, kinds = [], ["norm", "linear", "linear", "attention", "linear", "eltwise", "linear", "linear", "norm", "linear"]
    for i in range(320):
        x, y = (i % cols) * 47, (i // cols) * 58
        sram = 4096 + (i * 977) % 36000
        kernels.append({"name": f"model.layers.{i // 10}.k{i % 10}", "kind": kinds[i % 10],
                        "module": f"model.layers.{i // 10}.k{i % 10}", "layer": i // 10, "x": x, "y": y, "rows": 55,
                        "cols": 45, "pes": 55 * 45, "sram": sram, "sram_pct": round(100 * sram / 40960, 2),
                        "weight_bytes": sram // 2, "has_state": i % 10 == 3})
    edges = []
    for i in range(319):
        a, b = kernels[i], kernels[i + 1]
        src, dst = (a["x"] + 44, a["y"] + 27), (b["x"], b["y"] + 27)
        turn = (dst[0], src[1])
        edges.append({"src": a["name"], "dst": b["name"], "bytes": 4096 * (1 + i % 7), "group": i,
                      "hops": abs(dst[0] - src[0]) + abs(dst[1] - src[1]), "order": "xy", "color": 4 + i % 20,
                      "path": [list(src), list(turn), list(dst)], "max_link_load_bytes": 4096})
    placement = {"edges": edges, "stats": {"objective": 123456789, "bound": 100000000, "gap": 0.19}}
    names = [k["name"] for k in kernels]
    runs = {}
    for phase, span in (("prefill", 5_000_000.0), ("decode", 400_000.0)):
        events, stats = [], {}
        for i, n in enumerate(names):
            t0 = span * i / 400
            for j in range(200):
                cat = ("compute", "fabric", "send", "wait")[j % 4]
                events.append(Event(n, "op", cat, t0 + j * span / 2000, span / 4000))
            stats[n] = RegionStats(t0 + span / 10, span / 40, span / 80, t0)
        runs[phase] = RunResult({}, span, stats, {"compute": span * 0.6, "fabric": span * 0.4, "waiting": 0.0}, events)
    for k in kernels:
        for phase, res in runs.items():
            st = res.regions[k["name"]]
            k[phase] = {"cycles": int(st.compute + st.fabric), "compute": int(st.compute), "fabric": int(st.fabric),
                        "waiting": int(st.waiting), "end": int(st.end), "compute_share": 0.67, "bound": "compute"}
    route_list = routes(placement, kernels)
    loads = link_loads(route_list)
    target = {"name": "wse3", "usable_width": W, "usable_height": H, "sram_bytes": 49152,
              "sram_reserve_bytes": 8192, "clock_hz": 1.1e9, "colors": 24}
    manifest = {"target": target, "seq_len": 2048, "max_seq": 2048, "pes_used": 320 * 55 * 45}
    data = {
        "meta": {"target": "wse3", "width": W, "height": H, "clock_hz": 1.1e9, "sram_budget": 40960,
                 "dtype": "f16", "seq_len": 2048, "max_seq": 2048, "arch": "llama", "layers": 32,
                 "hidden": 4096, "vocab_size": 128256, "weights": False, "colors": 24, "wsc_version": "test",
                 "placement_format": ""},
        "kinds": [{"kind": k, "label": KIND_LABELS[k], "color": c} for k, c in KIND_COLORS.items()],
        "kernels": kernels, "layers": layer_groups(kernels), "routes": route_list, "links": link_runs(loads),
        "timeline": {p: timeline(r, names) for p, r in runs.items()},
        "summary": summary(manifest, placement, kernels, runs, None, loads),
    }
    data["summary"]["decode"]["position"] = 2048
    out = directory / "big.html"
    out.write_text(render_page(data))
    return out


def test_big_report_stays_light(browser, tmp_path):
    page = synthetic_big_report(tmp_path)
    assert page.stat().st_size < 3_000_000
    dom = browser(page, "--window-size=1280,1400", "--dump-dom").stdout
    st = status_of(dom)
    assert st["errors"] == "0", script_errors(dom)
    assert st["mesh"] == "ok" and int(st["labels"]) >= 20 and int(st["timeline-rows"]) == 320
    assert float(st["mesh-ms"]) < 2000  # one frame of the mesh view
    assert len(re.findall(r"<(div|span|td)\b", dom)) < 20 * 320  # the table, not an element per PE or event


def run_probe(browser, page: Path, tmp_path: Path, script: str, *args: str) -> tuple[str, dict]:
    """The page with `script` appended, in Chromium; its DOM and what the script recorded as
    JSON in the body's data-probe attribute."""
    import json

    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", f"<script>{script}</script></body>"))
    dom = browser(probe, *args, "--dump-dom").stdout
    assert status_of(dom)["errors"] == "0", script_errors(dom)
    m = re.search(r'data-probe="([^"]*)"', dom)
    assert m, "the probe recorded nothing"
    return dom, json.loads(html.unescape(m[1]))


MESH_CLICK = """
(function () {
  var mesh = document.getElementById('mesh'), tip = document.getElementById('tooltip');
  function ev(type, x, y) {
    mesh.dispatchEvent(new PointerEvent(type, { clientX: x, clientY: y, bubbles: true, pointerId: 1 }));
  }
  // the mesh at the top of the window, the table far below it
  window.scrollTo(0, mesh.getBoundingClientRect().top + window.scrollY - 80);
  var before = window.scrollY, r = mesh.getBoundingClientRect(), at = null;
  for (var i = 1; i < 20 && !at; i++) for (var j = 1; j < 20 && !at; j++) {
    var x = r.left + r.width * i / 20, y = r.top + r.height * j / 20;
    ev('pointermove', x, y);
    if (!tip.hidden && tip.textContent.indexOf('SRAM:') >= 0) at = [x, y];
  }
  ev('pointerdown', at[0], at[1]); ev('pointerup', at[0], at[1]);
  var sel = document.querySelector('#kernels tr.sel'), wrap = document.querySelector('.table-wrap');
  var now = window.scrollY;
  setTimeout(function () {
    var w = wrap.getBoundingClientRect(), s = sel.getBoundingClientRect();
    document.body.setAttribute('data-probe', JSON.stringify({
      before: before, now: now, later: window.scrollY, selected: sel && sel.cells[0].textContent,
      inWrap: s.top >= w.top && s.bottom <= w.bottom + 1 }));
  }, 500);
})();
"""


def test_mesh_click_does_not_scroll_the_page(browser, report, tmp_path):
    page, names = report
    _, got = run_probe(browser, page, tmp_path, MESH_CLICK, "--window-size=1280,900")
    assert got["before"] > 0 and got["selected"] in names  # a kernel was clicked
    assert got["now"] == got["before"] and got["later"] == got["before"], got
    assert got["inWrap"]  # its table row was brought into view inside the table's own box


SEARCH = """
(function () {
  var box = document.getElementById('search'), st = document.getElementById('render-status');
  var queries = QUERIES, out = [];
  function record(q) {
    var rows = Array.prototype.filter.call(document.querySelectorAll('#kernels tbody tr[data-i]'),
      function (tr) { return !tr.hidden; }).map(function (tr) { return tr.cells[0].textContent; });
    var groups = Array.prototype.filter.call(document.querySelectorAll('#kernels tr.group'),
      function (tr) { return !tr.hidden; }).length;
    out.push({ q: q, rows: rows, groups: groups, matches: st.getAttribute('data-search-matches'),
               mesh: +st.getAttribute('data-mesh-highlighted'), labels: +st.getAttribute('data-labels'),
               timeline: +st.getAttribute('data-timeline-rows'),
               count: document.getElementById('search-count').textContent,
               nomatch: box.classList.contains('nomatch') });
  }
  function step(i) {
    if (i === queries.length) { document.body.setAttribute('data-probe', JSON.stringify(out)); return; }
    box.value = queries[i];
    box.dispatchEvent(new Event('input', { bubbles: true }));
    setTimeout(function () { record(queries[i]); step(i + 1); }, 200);  // the mesh draws on the next frame
  }
  step(0);
})();
"""


def test_search_filters_mesh_table_and_timeline(browser, report, tmp_path):
    import json

    from wsc.report_data import layer_of

    page, names = report
    queries = ["transformer.h.1.", "layer 0", "L1 MLP", "ln_", "no-such-kernel", ""]
    _, got = run_probe(browser, page, tmp_path, SEARCH.replace("QUERIES", json.dumps(queries)),
                       "--window-size=1280,1600")
    want = {
        "transformer.h.1.": [n for n in names if n.startswith("transformer.h.1.")],
        "layer 0": [n for n in names if layer_of(n) == 0],
        "L1 MLP": [n for n in names if layer_of(n) == 1 and ".mlp." in n],
        "ln_": [n for n in names if "ln_" in n],
        "no-such-kernel": [],
        "": names,
    }
    for res in got:
        rows = want[res["q"]]
        assert res["rows"] == rows, res["q"]  # the table, in pipeline order
        assert res["timeline"] == len(rows), res["q"]  # a timeline row per match
        if res["q"]:
            assert 0 < len(rows) < len(names) or res["q"] == "no-such-kernel"
            assert res["matches"] == str(len(rows)) and res["mesh"] == len(rows), res  # outlined
            assert res["labels"] <= len(rows) and res["count"] == f"{len(rows)} of {len(names)} kernels"
        else:
            assert res["matches"] == "all" and res["mesh"] == 0 and res["labels"] >= 1
    by_q = {r["q"]: r for r in got}
    assert by_q["layer 0"]["groups"] == 1 and by_q[""]["groups"] == 4  # only groups with a match show
    assert by_q["no-such-kernel"]["nomatch"] and by_q["no-such-kernel"]["labels"] == 0


GROUPS = """
(function () {
  var groups = document.querySelectorAll('#kernels tr.group'), shown = function () {
    return Array.prototype.filter.call(document.querySelectorAll('#kernels tbody tr[data-i]'),
      function (tr) { return !tr.hidden; }).map(function (tr) { return tr.cells[0].textContent; });
  }, out = {};
  groups[1].click();  // fold layer 0
  out.folded = shown();
  document.querySelector('#kernels th[data-col="3"]').click();  // sort by PEs: one flat list
  out.sorted = shown();
  out.groupsAfterSort = Array.prototype.filter.call(groups, function (g) { return !g.hidden; }).length;
  out.groupedAfterSort = document.getElementById('group-layers').checked;
  var box = document.getElementById('group-layers');
  box.checked = true; box.dispatchEvent(new Event('change'));
  out.regrouped = shown();
  document.body.setAttribute('data-probe', JSON.stringify(out));
})();
"""


def test_layer_groups_fold_and_give_way_to_sorting(browser, report, tmp_path):
    from wsc.report_data import layer_of

    page, names = report
    _, got = run_probe(browser, page, tmp_path, GROUPS, "--window-size=1280,1600")
    assert got["folded"] == [n for n in names if layer_of(n) != 0]
    assert sorted(got["sorted"]) == sorted(names) and got["sorted"] != names  # all, by PEs
    assert got["groupsAfterSort"] == 0 and not got["groupedAfterSort"]
    assert got["regrouped"] == got["folded"]  # pipeline order again, layer 0 still folded


NO_WRAP = """
(function () {
  // a number in a no-wrap span is one box; a table cell's text is one line high
  var broken = [], nums = document.querySelectorAll('.num');
  Array.prototype.forEach.call(nums, function (el) {
    if (el.getClientRects().length > 1) broken.push(el.textContent);
  });
  Array.prototype.forEach.call(document.querySelectorAll('table.kv td, #kernels td'), function (td) {
    var range = document.createRange(), line = parseFloat(getComputedStyle(td).lineHeight);
    range.selectNodeContents(td);
    if (range.getBoundingClientRect().height > 1.5 * line) broken.push(td.textContent);
  });
  document.body.setAttribute('data-probe', JSON.stringify({ broken: broken, nums: nums.length }));
})();
"""


def test_numbers_never_wrap_in_a_narrow_window(browser, report, tmp_path):
    page, _ = report
    _, got = run_probe(browser, page, tmp_path, NO_WRAP, "--window-size=520,1200")
    assert got["nums"] > 30 and got["broken"] == []
