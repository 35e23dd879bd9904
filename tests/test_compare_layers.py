"""Issue 10, item 3: `wsc simulate --check --compare-layers` compares every kernel's output with
torch's activation at its module path and names the first one over tolerance."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from models import make_checkpoint
from wsc.bundle_format import MANIFEST, WEIGHTS, open_bundle, sha256_file
from wsc.driver import CompileOptions, Pipeline

WSC = [sys.executable, "-m", "wsc.cli"]
CORRUPT = "model.layers.1.mlp.up_proj"


def wsc(*args) -> subprocess.CompletedProcess:
    return subprocess.run([*WSC, *map(str, args)], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("layers")
    ckpt = make_checkpoint("llama", root / "llama")
    out = root / "m.wsc"
    Pipeline(CompileOptions(checkpoint=ckpt, output=out, target="mesh:32x32", dtype="fp32",
                            seq_len=16, prefill_chunk=4, max_seq=24, place_time=1.0)).run()
    return out


def corrupted_copy(bundle: Path, dst: Path, region: str) -> Path:
    """The bundle with one weight shard of `region` changed, and the manifest's hashes
    recomputed so that the integrity check passes: only the numerics can tell."""
    shutil.copytree(bundle, dst)
    weights = load_file(str(dst / WEIGHTS))
    key = next(k for k in sorted(weights) if k.startswith(region + "/"))
    w = weights[key].astype(np.float32)
    weights[key] = (w + 0.5 * np.abs(w).max() * np.random.default_rng(0).standard_normal(w.shape)).astype(weights[key].dtype)
    save_file(weights, str(dst / WEIGHTS))
    m = open_bundle(dst, verify=False).manifest
    m = m.with_files({**m.files, WEIGHTS: sha256_file(dst / WEIGHTS)})
    (dst / MANIFEST).write_text(m.text())
    open_bundle(dst)  # verifies
    return dst


def test_a_correct_bundle_passes_every_kernel(bundle, tmp_path):
    out = tmp_path / "r.json"
    r = wsc("simulate", bundle, "--check", "--compare-layers", "--prompt-len", "7", "--json", out)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["passed"] and res["first_bad_kernel"] is None
    rows = res["layers"]
    assert len(rows) == 23 and res["layers_compared"] == len(rows)  # every kernel has a reference
    assert all(row["rel_l2_err"] <= 1e-5 for row in rows)
    by = {row["kernel"]: row["reference"] for row in rows}
    # fused epilogues are compared where their value exists in torch
    assert by["model.layers.0.mlp.gate_proj"] == "output of model.layers.0.mlp.act_fn"
    assert by["model.layers.0.self_attn.o_proj"] == "input of model.layers.0.post_attention_layernorm"
    assert by["model.layers.0.self_attn"] == "input of model.layers.0.self_attn.o_proj"
    assert by["lm_head"] == "output of lm_head"
    assert "all within rel L2 1e-05" in r.stdout


def test_a_corrupted_weight_is_named_as_the_first_bad_kernel(bundle, tmp_path):
    bad = corrupted_copy(bundle, tmp_path / "bad.wsc", CORRUPT)
    out = tmp_path / "r.json"
    r = wsc("simulate", bad, "--check", "--compare-layers", "--json", out)
    assert r.returncode == 3, r.stderr  # the check failed
    assert "Traceback" not in r.stderr
    res = json.loads(out.read_text())
    assert res["first_bad_kernel"] == CORRUPT and not res["passed"]
    names = [row["kernel"] for row in res["layers"]]
    i = names.index(CORRUPT)
    assert all(row["passed"] for row in res["layers"][:i])  # everything before it is right
    assert res["layers"][i]["rel_l2_err"] > 1e-2
    assert f"first over rel L2 1e-05: {CORRUPT}" in " ".join(r.stdout.split())

    # the report shows the per-kernel error as a column of the kernel table
    page = tmp_path / "r.html"
    r = wsc("report", bad, "-o", page, "--sim", out)
    assert r.returncode == 0, r.stderr
    text = page.read_text()
    assert "rel L2 vs torch" in text and "first kernel over tolerance" in text
    row = text[text.index(f'<td class="name">{CORRUPT}</td>'):]
    row = row[:row.index("</tr>")]
    assert 'class="fail"' in row


def test_the_report_has_no_error_column_without_compare_layers(bundle, tmp_path):
    page = tmp_path / "r.html"
    assert wsc("report", bundle, "-o", page).returncode == 0
    assert "rel L2 vs torch" not in page.read_text()
