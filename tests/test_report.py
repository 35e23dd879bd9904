"""The placement report: self-contained, complete, deterministic, and read from the bundle only."""

from __future__ import annotations

import html
import json
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from models import make_checkpoint
from wsc.errors import BundleError, UsageError
from wsc.ir import parse_module
from wsc.ir.tile import programs
from wsc.report import (fmt_int, fmt_rate, fmt_ratio, fmt_seconds, fmt_si, render_report,
                        write_report_for_bundle)
from wsc.report_data import TIMELINE_BINS, _rle, layer_of, link_runs, timeline
from wsc.report_png import PAD, pixels_per_pe
from wsc.bundle_format import PLACEMENT, REPORT, Manifest, json_digest, open_bundle
from wsc.runtime_sim.scheduler import Event, RunResult

SIM_RESULT = {"max_abs_err": 1.25e-06, "rel_l2_err": 3.5e-07, "top1_agree": 1.0, "passed": True,
              "tokens": [1, 2, 3], "tokens_match": True, "ttft_s": 3.2e-05, "tokens_per_s": 81234.5}


def sim_result(bundle: Path) -> dict:
    """SIM_RESULT as `wsc simulate --json` would have written it for `bundle`."""
    from wsc.simulate import bundle_digest

    return {**SIM_RESULT, "bundle": str(bundle), "bundle_digest": bundle_digest(bundle)}


def tiny_bundle(directory: Path) -> Path:
    """A 2-layer GPT-2 compiled for a 32x32 mesh, with the report the compiler writes."""
    from wsc.driver import CompileOptions, Pipeline

    ckpt = make_checkpoint("gpt2", directory / "gpt2")
    out = directory / "m.wsc"
    Pipeline(CompileOptions(checkpoint=ckpt, output=out, target="mesh:32x32", seq_len=16,
                            place_time=1.0)).run()
    return out


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return tiny_bundle(tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def loaded(bundle):
    b = open_bundle(bundle)
    return b.manifest.to_json(), b.read_json(PLACEMENT), parse_module(b.program_text())


@pytest.fixture(scope="module")
def page(bundle, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("page") / "r.html"
    write_report_for_bundle(bundle, out)
    return out.read_text()


def data_block(text: str) -> dict:
    m = re.search(r'<script type="application/json" id="wsc-data">(.*?)</script>', text, re.S)
    assert m, "the page has no data block"
    return json.loads(m[1])


def region_names(module) -> list[str]:
    return [r.sym_name.data for r in programs(module)["prefill"].regions_()]


def test_page_is_self_contained(page):
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert not re.search(r"<script[^>]*\bsrc\s*=", page, re.I), "external script"
    assert not re.search(r"<link\b", page, re.I), "external stylesheet or font"
    assert not re.search(r"@import|url\(\s*['\"]?(https?:)?//", page, re.I)
    assert "fetch(" not in page and "XMLHttpRequest" not in page
    assert page.count("<script") == 3  # the error trap, the data block, the drawing code


def test_every_kernel_is_on_the_page(page, loaded):
    _, _, module = loaded
    names = region_names(module)
    assert len(names) > 10
    data = data_block(page)
    assert [k["name"] for k in data["kernels"]] == names
    rows = re.findall(r'<td class="name">([^<]*)</td>', page)
    assert rows == names  # the table, one row each
    for k in data["kernels"]:
        assert k["kind"] in ("embedding", "norm", "linear", "attention", "eltwise")
        assert 0 < k["sram"] <= data["meta"]["sram_budget"]
        assert k["prefill"]["cycles"] > 0 and k["decode"]["cycles"] > 0
        assert k["prefill"]["bound"] in ("compute", "communication")


def test_summary_numbers(page, loaded):
    manifest, placement, module = loaded
    from wsc.runtime_sim.simulator import Simulator

    stats = placement["stats"]
    for key in ("objective", "bound", "total_hops"):
        assert fmt_int(stats[key]) in page, key
    assert f"{100 * stats['gap']:.1f}%" in page
    t = manifest["target"]
    assert f"{manifest['pes_used']:,}" in page and f"{t['usable_width'] * t['usable_height']:,}" in page
    sim = Simulator(module, Manifest.from_json(manifest), placement, functional=False)
    pre = sim.estimate("prefill").cycles
    dec = sim.estimate("decode", pos0=manifest["seq_len"]).cycles
    assert fmt_seconds(pre / t["clock_hz"]) in page  # time to first token
    assert fmt_rate(t["clock_hz"] / dec) in page  # tokens/s
    assert "Critical path, prefill" in page and "Critical path, decode" in page
    assert "Numerics vs PyTorch" not in page  # only with --sim


def test_compact_units():
    assert fmt_si(3.25e10) == "32.5 G" and fmt_si(1_053_696) == "1.05 M" and fmt_si(417_792) == "418 k"
    assert fmt_si(999) == "999" and fmt_si(999.6) == "1 k" and fmt_si(999_600) == "1 M"
    assert fmt_si(0) == "0" and fmt_si(None) == "—" and fmt_si(2.5e21) == "2.5e+03 E"
    assert fmt_ratio(2_906_112, 1_053_696) == "2.76×" and fmt_ratio(None, 5) == fmt_ratio(5, 0) == "—"


def test_objective_in_compact_units_with_baseline_ratios(page, loaded):
    _, placement, _ = loaded
    st = placement["stats"]
    obj = st["objective"]
    assert f'title="{obj:,} byte·hops">{fmt_si(obj)} byte·hops</span>' in page  # exact on hover
    for key in ("rowmajor_objective", "snake_objective"):
        assert st[key] and f">{fmt_si(st[key])}</span>" in page
        assert f">{st[key] / obj:.3g}×</span>" in page


def summary_html(page: str) -> str:
    return re.search(r'<section id="summary">.*?</section>', page, re.S)[0]


def test_numbers_are_kept_whole(page):
    """In the summary every number sits in a no-wrap span with its unit (the browser test
    checks that these spans never break)."""
    text = re.sub(r'<span class="num"[^>]*>[^<]*</span>', "#", summary_html(page))
    text = re.sub(r"<[^>]+>", " ", text)
    loose = re.findall(r"\d[\d,.]*%?\s*(?:cycles|[KMG]iB|B|[µmn]?s|GHz|byte·hops|tokens|kernels|links)\b", text)
    assert not loose, loose
    assert re.search(r"\.num \{[^}]*white-space: nowrap", page)


def test_table_has_one_module_column_and_origins_as_points(page):
    head = re.search(r"<thead>(.*?)</thead>", page, re.S)[1]
    assert "module" not in head and "origin (x, y)" in head
    data = data_block(page)
    for k in data["kernels"]:
        assert page.count(f">{html.escape(k['name'])}</td>") == 1  # not again as a module column
        assert f"<td data-v=\"{k['y'] * 100000 + k['x']}\">({k['x']}, {k['y']})</td>" in page


def test_kernels_are_grouped_by_layer(page):
    data = data_block(page)
    assert [k["layer"] for k in data["kernels"]] == [layer_of(k["module"]) for k in data["kernels"]]
    groups = data["layers"]
    assert [g["layer"] for g in groups] == [None, 0, 1, None]  # embedding, 2 blocks, norm and head
    assert sum(g["count"] for g in groups) == len(data["kernels"])
    for n, g in enumerate(groups):
        members = data["kernels"][g["first"]:g["first"] + g["count"]]
        assert {k["layer"] for k in members} == {g["layer"]}
        assert g["pes"] == sum(k["pes"] for k in members)
        assert g["prefill"] == sum(k["prefill"]["cycles"] for k in members)
        label = "not in a layer" if g["layer"] is None else f"layer {g['layer']}"
        row = re.search(rf'<tr class="group" data-g="{n}"[^>]*>(.*?)</tr>', page)[1]
        assert label in row and f"{g['pes']:,}" in row
        assert len(re.findall(rf'<tr data-i="\d+" data-g="{n}">', page)) == g["count"]


def test_layer_of_module_paths():
    assert layer_of("model.layers.3.mlp.gate_proj") == 3 and layer_of("transformer.h.12.attn") == 12
    assert layer_of("model.layers.30") == 30 and layer_of("blocks.0.attn") == 0
    assert layer_of("lm_head") is None and layer_of("model.embed_tokens") is None
    assert layer_of("transformer.hidden.3.x") is None  # "h" is a whole path component


def test_timeline_is_aggregated_per_region(page, loaded):
    _, _, module = loaded
    data = data_block(page)
    names = region_names(module)
    for phase in ("prefill", "decode"):
        tl = data["timeline"][phase]
        assert tl["cycles"] > 0 and len(tl["rows"]) == len(names)
        for row in tl["rows"]:
            runs = re.findall(r"([.cfsw])(\d+)", row)
            assert sum(int(n) for _, n in runs) == tl["bins"]
            assert any(code == "c" for code, _ in runs)  # every region computes
        assert data["summary"][phase]["cycles"] == tl["cycles"]
    # drawn on a canvas from the data: no DOM element per event
    assert len(re.findall(r"<(div|span|rect|g)\b", page)) < 200


def test_timeline_binning():
    ev = [Event("a", "matmul", "compute", 0.0, 50.0), Event("a", "send", "send", 50.0, 0.5),
          Event("b", "recv", "wait", 0.0, 99.0), Event("b", "shift", "fabric", 99.0, 1.0)]
    res = RunResult({}, 100.0, {}, {"compute": 50.0, "fabric": 1.0, "waiting": 0.0}, ev)
    tl = timeline(res, ["a", "b"], bins=10)
    assert tl["rows"] == ["c5s1.4", "w9f1"]  # a half-bin send still shows, then idle
    many = [Event("a", "x", "compute" if i % 2 else "wait", float(i), 1.0) for i in range(200_000)]
    big = timeline(RunResult({}, 200_000.0, {}, {}, many), ["a"], bins=TIMELINE_BINS)
    assert len(big["rows"][0]) < 8 * TIMELINE_BINS  # bounded by the bins, not the events
    assert _rle(__import__("numpy").array(list("aab"))) == "a2b1"


def test_link_runs_merge_straight_equal_loads():
    load = {(0, 0, 1, 0): 5, (1, 0, 1, 0): 5, (2, 0, 1, 0): 7,  # east along row 0
            (3, 0, -1, 0): 5, (2, 0, -1, 0): 5,  # west along row 0
            (4, 4, 0, 1): 2, (4, 5, 0, 1): 2}  # south along column 4
    runs = link_runs(load)
    got = sorted(tuple(runs[i:i + 5]) for i in range(0, len(runs), 5))
    assert got == sorted([(0, 0, 2, 0, 5), (2, 0, 3, 0, 7), (3, 0, 1, 0, 5), (4, 4, 4, 6, 2)])


def test_render_is_deterministic_and_matches_the_compiled_report(bundle, loaded, page):
    manifest, placement, module = loaded
    a = render_report(manifest, placement, module)
    b = render_report(manifest, placement, module)
    assert a == b
    assert a == page  # `wsc report` and the compiler agree
    assert (bundle / REPORT).read_text() == page  # the report written by `wsc compile`


def test_sim_result_adds_numerics(bundle, tmp_path):
    sim = tmp_path / "sim.json"
    sim.write_text(json.dumps(sim_result(bundle)))
    text = write_report_for_bundle(bundle, tmp_path / "r.html", sim=sim).read_text()
    assert "Numerics vs PyTorch" in text and "PASS" in text
    assert "3.500e-07" in text and "1.250e-06" in text and "1.0000" in text
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2")
    with pytest.raises(UsageError, match="not a simulation result"):
        write_report_for_bundle(bundle, tmp_path / "r2.html", sim=bad)


def read_png(path: Path) -> tuple[int, int, bytes]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, size = 8, b"", None
    while pos < len(data):
        n, tag = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        assert zlib.crc32(tag + body) == struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0]
        if tag == b"IHDR":
            size = struct.unpack(">II", body[:8])
            assert body[8:10] == b"\x08\x02"  # 8-bit RGB
        elif tag == b"IDAT":
            idat += body
        pos += 12 + n
    w, h = size
    return w, h, zlib.decompress(idat)


def test_png_of_the_mesh(bundle, tmp_path, loaded):
    manifest, _, _ = loaded
    png = tmp_path / "mesh.png"
    write_report_for_bundle(bundle, tmp_path / "r.html", png=png)
    w, h, raw = read_png(png)
    t = manifest["target"]
    p = pixels_per_pe(t["usable_width"], t["usable_height"])
    assert p == 32 and w == t["usable_width"] * p + 2 * PAD and h > t["usable_height"] * p
    assert len(raw) == h * (1 + 3 * w)
    rows = [raw[i * (1 + 3 * w) + 1:(i + 1) * (1 + 3 * w)] for i in range(0, h, 7)]
    colors = {r[j:j + 3] for r in rows for j in range(0, len(r), 21)}
    assert len(colors) >= 6  # kinds, outlines, heat, empty mesh


def drawn(fig, text: str, color) -> tuple[int, int, int]:
    """Where `text` was drawn on the figure (x, y, scale), checking its pixels are there."""
    import numpy as np

    from wsc.report_png import text_mask

    hits = [(x, y, s) for t, x, y, s in fig.texts if t == text]
    assert hits, f"{text!r} is not on the figure"
    x, y, s = hits[0]
    mask = text_mask(text, s)
    assert (fig.img[y:y + mask.shape[0], x:x + mask.shape[1]][mask] == np.array(color)).all(), text
    return x, y, s


def test_png_has_a_title_labels_and_a_legend(page):
    from wsc.report_png import INK, label_candidates, render_figure, render_mesh

    data = data_block(page)
    fig = render_figure(data)
    title = drawn(fig, f"wsc report: gpt2 (2 layers) on {data['meta']['target']}", INK)
    assert title[2] == 2 and title[1] < 40  # large, at the top
    caption = " ".join(t for t, _, y, s in fig.texts if s == 1 and y < 120)
    s = data["summary"]
    assert f"{fmt_si(s['objective'])} byte·hops" in caption
    assert fmt_ratio(s["rowmajor_objective"], s["objective"]) in caption and "(0, 0) top left" in caption
    mesh = render_mesh(data)
    mh, mw = mesh.shape[:2]
    oy = next(y for y in range(fig.img.shape[0]) if (fig.img[y, PAD:PAD + mw] == mesh[0]).all())
    p = mw // data["meta"]["width"]
    labelled = 0
    for k in data["kernels"]:
        texts = [(t, x, y) for t, x, y, _ in fig.texts if t in label_candidates(k["name"])]
        if texts:  # drawn inside its own rectangle
            t, x, y = texts[0]
            drawn(fig, t, INK)
            assert PAD + k["x"] * p <= x and x + 6 * len(t) <= PAD + (k["x"] + k["cols"]) * p, t
            assert oy + k["y"] * p <= y and y + 13 <= oy + (k["y"] + k["rows"]) * p, t
            labelled += 1
    assert labelled >= 0.75 * len(data["kernels"])  # all but the slivers
    for kind in data["kinds"]:  # the legend, below the mesh: a swatch left of each label
        x, y, _ = drawn(fig, kind["label"], INK)
        assert y > oy + mh
        swatch = tuple(int(kind["color"][i:i + 2], 16) for i in (1, 3, 5))
        assert tuple(fig.img[y + 5, x - 10]) == swatch, kind["label"]
    assert any(t.startswith("link load ") and "per run" in t for t, *_ in fig.texts)


def test_png_labels_shorten_block_names():
    from wsc.report_png import label_candidates

    assert label_candidates("model.layers.12.mlp.up_proj") == [
        "model.layers.12.mlp.up_proj", "12.mlp.up_proj", "L12 up_proj", "L12 up", "L12 up"]
    assert label_candidates("lm_head")[:2] == ["lm_head", "lm_head"]


def test_tampered_bundle_is_refused(bundle, tmp_path):
    bad = tmp_path / "bad.wsc"
    shutil.copytree(bundle, bad)
    doc = json.loads((bad / PLACEMENT).read_text())
    doc["stats"]["objective"] = 1
    (bad / PLACEMENT).write_text(json.dumps(doc))
    with pytest.raises(BundleError, match="placement.json has been modified"):
        write_report_for_bundle(bad, tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()
    r = subprocess.run([sys.executable, "-m", "wsc.cli", "report", str(bad), "-o", str(tmp_path / "r.html")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "Traceback" not in r.stderr + r.stdout
    assert "has been modified" in " ".join(r.stderr.split())


def test_sim_result_of_another_bundle_is_refused(bundle, tmp_path):
    from wsc.simulate import SimulateOptions, simulate

    other = tmp_path / "other.wsc"  # the same program, compiled with other options
    shutil.copytree(bundle, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["seed"] = 1
    manifest["digest"] = json_digest({k: v for k, v in manifest.items() if k != "digest"})
    (other / "manifest.json").write_text(json.dumps(manifest))
    sim = tmp_path / "other.json"
    sim.write_text(json.dumps(simulate(SimulateOptions(other, estimate_only=True))))
    with pytest.raises(UsageError, match=r"other.json came from another bundle \(.*other.wsc, sha256:"):
        write_report_for_bundle(bundle, tmp_path / "r.html", sim=sim)
    old = tmp_path / "old.json"  # from before results named their bundle
    old.write_text(json.dumps(SIM_RESULT))
    with pytest.raises(UsageError, match="does not say which bundle it came from"):
        write_report_for_bundle(bundle, tmp_path / "r.html", sim=old)
    assert not (tmp_path / "r.html").exists()
    r = subprocess.run([sys.executable, "-m", "wsc.cli", "report", str(bundle), "-o", str(tmp_path / "r.html"),
                        "--sim", str(sim)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr + r.stdout
    assert "came from another bundle" in " ".join(r.stderr.split())


def test_cli_report_with_sim_and_png(bundle, tmp_path):
    sim = tmp_path / "sim.json"
    sim.write_text(json.dumps(sim_result(bundle)))
    out, png = tmp_path / "out" / "r.html", tmp_path / "m.png"
    r = subprocess.run([sys.executable, "-m", "wsc.cli", "report", str(bundle), "-o", str(out),
                        "--sim", str(sim), "--png", str(png)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Numerics vs PyTorch" in out.read_text() and png.read_bytes()[:4] == b"\x89PNG"


def test_placement_without_routes_or_stats(loaded):
    """Older bundles: edges without paths, no stats. The page still draws, marking the routes
    it had to guess."""
    manifest, placement, module = loaded
    old = {"kernels": {}, "edges": [{"src": e["src"], "dst": e["dst"], "bytes": e["bytes"]}
                                    for e in placement["edges"]]}
    text = render_report(manifest, old, module)
    data = data_block(text)
    assert data["routes"] and all(r["approx"] for r in data["routes"])
    assert data["summary"]["objective"] is None and "—" in text
    bare = render_report(manifest, {}, module)
    assert data_block(bare)["routes"] == [] and data_block(bare)["links"] == []
