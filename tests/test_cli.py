"""The command line: errors are one clear message and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from models import make_checkpoint

WSC = [sys.executable, "-m", "wsc.cli"]


def wsc(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([*WSC, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


def assert_clean_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode != 0
    assert "Traceback" not in r.stderr + r.stdout
    text = " ".join((r.stderr + r.stdout).split())
    for n in needles:
        assert n in text, f"{n!r} not in: {text}"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_checkpoint("gpt2", tmp_path_factory.mktemp("c") / "gpt2")


@pytest.fixture(scope="module")
def bundle(ckpt, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("b") / "m.wsc"
    r = wsc("compile", ckpt, "-o", out, "--target", "mesh:32x32", "--seq-len", "16",
            "--dtype", "fp32", "--place-time", "2")
    assert r.returncode == 0, r.stderr
    return out


def test_compile_shows_progress_per_stage(bundle):
    assert (bundle / "manifest.json").is_file() and (bundle / "report.html").is_file()


def test_simulate_check_json(bundle, tmp_path):
    out = tmp_path / "r.json"
    r = wsc("simulate", bundle, "--check", "--generate", "4", "--json", out)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    for key in ("max_abs_err", "rel_l2_err", "top1_agree", "cycles", "latency_s", "sim_wall_s",
                "tokens", "reference_tokens", "tokens_match", "ttft_s", "tokens_per_s"):
        assert key in res, key
    assert res["rel_l2_err"] <= 1e-5 and res["tokens_match"]


def test_simulate_estimate_only(bundle):
    r = wsc("simulate", bundle, "--estimate-only")
    assert r.returncode == 0 and "tokens/s" in r.stdout


def test_explicit_tokens_of_the_wrong_length(bundle):
    assert_clean_error(wsc("simulate", bundle, "--tokens", "1,2,3"), "takes 16 tokens")


def test_unsupported_op_names_op_and_module(tmp_path):
    ck = make_checkpoint("llama", tmp_path / "relu6", hidden_act="relu6")
    r = wsc("compile", ck, "-o", tmp_path / "x.mlir", "--compile-to", "graph", "--seq-len", "8")
    assert_clean_error(r, "unsupported operation", "aten.hardtanh", "model.layers.0.mlp.act_fn")


def test_corrupt_weights(ckpt, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(ckpt, bad)
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert_clean_error(wsc("compile", bad, "-o", tmp_path / "o.wsc"), "model.safetensors")


def test_missing_config(ckpt, tmp_path):
    bad = tmp_path / "noconf"
    shutil.copytree(ckpt, bad)
    (bad / "config.json").unlink()
    assert_clean_error(wsc("compile", bad, "-o", tmp_path / "o.wsc"), "config.json")


def test_missing_checkpoint(tmp_path):
    assert_clean_error(wsc("compile", tmp_path / "nope", "-o", tmp_path / "o.wsc"), "does not exist")


def test_tampered_bundle_is_refused(bundle, tmp_path):
    copy = tmp_path / "t.wsc"
    shutil.copytree(bundle, copy)
    p = copy / "program.mlir"
    p.write_text(p.read_text().replace("count = ", "count =  ", 1))
    assert_clean_error(wsc("simulate", copy), "program.mlir has been modified")


def test_missing_bundle(tmp_path):
    assert_clean_error(wsc("simulate", tmp_path / "none.wsc"), "no bundle at")


def test_unknown_target(ckpt, tmp_path):
    assert_clean_error(wsc("compile", ckpt, "-o", tmp_path / "o.wsc", "--target", "wse9"),
                       "unknown target 'wse9'")


@pytest.mark.parametrize("args,needle", [
    (["--dtype", "fp8"], "unknown --dtype"),
    (["--seq-len", "0"], "--seq-len must be positive"),
    (["--compile-to", "asm"], "unknown --compile-to"),
    (["--seq-len", "12", "--prefill-chunk", "5"], "must divide --seq-len"),
])
def test_bad_options(ckpt, tmp_path, args, needle):
    assert_clean_error(wsc("compile", ckpt, "-o", tmp_path / "o.wsc", *args), needle)


def test_max_seq_beyond_a_learned_position_table(ckpt, tmp_path):
    """GPT-2 embeds positions from a table of n_positions (128) rows: decode cannot go past
    it, so a longer KV cache is refused while compiling, not when decode gets there."""
    r = wsc("compile", ckpt, "-o", tmp_path / "o.wsc", "--target", "mesh:32x32", "--seq-len",
            "16", "--max-seq", "200", "--compile-to", "kernel")
    assert_clean_error(r, "--max-seq 200 is beyond the 128 positions", "transformer.wpe.weight",
                       "--max-seq 128 or less")
    assert r.returncode == 2  # a usage error
    assert not (tmp_path / "o.wsc").exists()


def test_bad_cli_usage_is_not_a_traceback():
    r = wsc("compile")
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_model_too_big_for_the_target_gives_numbers(tmp_path):
    ck = make_checkpoint("gpt2", tmp_path / "wide", n_embd=512, n_head=8)
    r = wsc("compile", ck, "-o", tmp_path / "o.wsc", "--target", "mesh:4x4", "--seq-len", "8")
    assert_clean_error(r, "PEs")


def test_opt_runs_passes_on_a_file(ckpt, tmp_path):
    g = tmp_path / "g.mlir"
    assert wsc("compile", ckpt, "-o", g, "--compile-to", "graph", "--seq-len", "8").returncode == 0
    r = wsc("opt", g, "-p", "partition")
    assert r.returncode == 0 and "wsc.kernel.linear" in r.stdout
    assert_clean_error(wsc("opt", g, "-p", "no-such-pass"), "no-such-pass")


def test_interrupted_compile_leaves_no_bundle(ckpt, tmp_path, monkeypatch):
    from wsc.codegen import bundle as cg

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cg, "save_file", boom)
    from wsc.driver import CompileOptions, Pipeline

    out = tmp_path / "i.wsc"
    with pytest.raises(KeyboardInterrupt):
        Pipeline(CompileOptions(checkpoint=ckpt, output=out, target="mesh:32x32", seq_len=8,
                                place_time=1.0)).run()
    assert not out.exists() and not list(tmp_path.glob(".i.wsc*"))


@pytest.mark.parametrize("stage,needle", [("graph", "wsc.graph.attention"),
                                          ("kernel", "wsc.kernel.attention"),
                                          ("placed", "origin = array<i64:"),
                                          ("tile", "wsc.tile.region")])
def test_compile_to_each_stage_writes_its_ir(ckpt, tmp_path, stage, needle):
    out = tmp_path / f"{stage}.mlir"
    r = wsc("compile", ckpt, "-o", out, "--compile-to", stage, "--seq-len", "8",
            "--target", "mesh:32x32", "--place-time", "1")
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert needle in text
    from wsc.ir import parse_module

    parse_module(text, str(out))  # what a stage writes, `wsc opt` can read back


def test_ir_after_every_pass(ckpt, tmp_path):
    d = tmp_path / "dumps"
    r = wsc("compile", ckpt, "-o", tmp_path / "k.mlir", "--compile-to", "kernel", "--seq-len", "8",
            "--target", "mesh:32x32", "--dump-ir-to", d, "--print-ir-after-all")
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in d.iterdir())
    assert names[0].startswith("00-import") and any("recognize-attention" in n for n in names)
    assert any("partition" in n for n in names)
    assert "IR after recognize-attention" in r.stdout


def test_a_kernel_that_fits_no_grid_is_named_with_its_bytes(ckpt, tmp_path):
    small = tmp_path / "tiny.toml"
    text = (Path(__file__).parents[1] / "wsc/targets/wse3.toml").read_text()
    text = text.replace("width = 762 ", "width = 4 ").replace("height = 1172", "height = 4")
    text = text.replace("usable_width = 755 ", "usable_width = 4 ").replace("usable_height = 1170", "usable_height = 4")
    text = text.replace("sram_bytes = 49152", "sram_bytes = 9216")
    small.write_text(text)
    r = wsc("compile", ckpt, "-o", tmp_path / "o.wsc", "--target", small, "--seq-len", "8")
    assert_clean_error(r, "does not fit", "bytes of SRAM per PE", "the budget is 1024")


def test_demo_runs_end_to_end(tmp_path):
    """What `make demo` runs: build, compile, simulate with the check, report."""
    r = wsc("demo", "--out", tmp_path / "demo")
    assert r.returncode == 0, r.stderr
    for stage in ("1/4", "2/4", "3/4", "4/4"):
        assert stage in r.stderr
    assert "same as transformers' generate: True" in r.stdout
    sim = json.loads((tmp_path / "demo" / "simulate.json").read_text())
    assert sim["passed"] and sim["tokens_match"] and sim["rel_l2_err"] <= 1e-2
    assert (tmp_path / "demo" / "report.html").stat().st_size > 10_000
    assert json.loads((tmp_path / "demo" / "trace.json").read_text())["traceEvents"]
