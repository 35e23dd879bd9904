"""The command line: errors are one clear message and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import os
import re
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
            "--dtype", "fp32", "--place-time", "2", "--max-seq", "64")
    assert r.returncode == 0, r.stderr
    return out


def test_compile_shows_progress_per_stage(bundle):
    assert (bundle / "manifest.json").is_file() and (bundle / "report.html").is_file()


def test_simulate_check_json(bundle, tmp_path):
    """16 prompt tokens + 49 generated fill the 64 KV positions exactly: the last token
    generated is never fed back."""
    out = tmp_path / "r.json"
    r = wsc("simulate", bundle, "--check", "--generate", "49", "--json", out)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    for key in ("max_abs_err", "rel_l2_err", "top1_agree", "cycles", "latency_s", "sim_wall_s",
                "tokens", "reference_tokens", "tokens_match", "ttft_s", "tokens_per_s"):
        assert key in res, key
    assert res["rel_l2_err"] <= 1e-5 and res["tokens_match"] and len(res["tokens"]) == 49


@pytest.mark.parametrize("args", [["--generate", "50"], ["--generate", "50", "--estimate-only"]])
def test_one_token_more_than_the_kv_cache_holds_is_refused(bundle, args):
    assert_clean_error(wsc("simulate", bundle, *args),
                       "16 prompt tokens + 50 generated need 65 KV cache positions, this bundle has 64",
                       "--generate 49 at most")


def test_simulate_estimate_only(bundle):
    r = wsc("simulate", bundle, "--estimate-only")
    assert r.returncode == 0 and "tokens/s" in r.stdout


def test_a_prompt_longer_than_compiled_is_refused(bundle):
    assert_clean_error(wsc("simulate", bundle, "--tokens", ",".join(["1"] * 17)),
                       "the prompt has 17 tokens, this bundle's prefill takes at most 16",
                       "recompile with --seq-len 17")
    assert_clean_error(wsc("simulate", bundle, "--estimate-only", "--prompt-len", "17"),
                       "takes at most 16")


def test_a_shorter_prompt_runs(bundle, tmp_path):
    out = tmp_path / "r.json"
    r = wsc("simulate", bundle, "--tokens", "1,2,3", "--check", "--generate", "4", "--json", out)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["prompt_len"] == 3 and res["passed"] and res["tokens_match"]
    assert "prefill of 3 tokens" in r.stdout


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
    # 700x700 PEs of 8 bytes hold the weights (the check right after loading passes), but no
    # kernel's per-PE buffers fit in 8 bytes
    small = tmp_path / "tiny.toml"
    text = (Path(__file__).parents[1] / "wsc/targets/wse3.toml").read_text()
    text = text.replace("width = 762 ", "width = 700 ").replace("height = 1172", "height = 700")
    text = text.replace("usable_width = 755 ", "usable_width = 700 ").replace("usable_height = 1170", "usable_height = 700")
    text = text.replace("sram_bytes = 49152", "sram_bytes = 8200")
    small.write_text(text)
    r = wsc("compile", ckpt, "-o", tmp_path / "o.wsc", "--target", small, "--seq-len", "8")
    assert_clean_error(r, "does not fit", "bytes of SRAM per PE", "the budget is 8")


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


# --- issue 11: nothing crashes, nothing silently wrong -----------------------------------

SIXTEEN = ",".join(str(i) for i in range(16))


@pytest.mark.parametrize("args,needle", [
    (["--tokens", ""], "--tokens takes token ids separated by commas, got ''"),
    (["--tokens", "1 2 3"], "got '1 2 3'"),  # once read as the single id 123
    (["--tokens", "1,,2"], "got '1,,2'"),
    (["--tokens", "-1," + SIXTEEN[2:]], "got '-1,"),
    (["--tokens", SIXTEEN[:-2] + "99999999999999999999"],
     "id 99999999999999999999 is not in this model's vocabulary [0, 256)"),
    (["--seed", "-1"], "--seed must be >= 0, got -1"),
    (["--generate", "-2"], "--generate must be >= 0, got -2"),
    (["--prompt-len", "0"], "--prompt-len must be >= 1, got 0"),
    (["--compare-layers"], "--compare-layers compares with PyTorch: it needs --check"),
    (["--prompt-len", "2", "--tokens", "1,2,3"], "--prompt-len 2 but --tokens gave 3 ids"),
])
def test_simulate_arguments_are_checked(bundle, args, needle):
    r = wsc("simulate", bundle, *args)
    assert r.returncode == 2
    assert_clean_error(r, needle)


def test_spaces_after_commas_are_fine(bundle, tmp_path):
    r = wsc("simulate", bundle, "--tokens", SIXTEEN.replace(",", ", "), "--json", tmp_path / "r.json")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "r.json").read_text())["prompt"] == list(range(16))


def test_estimate_only_says_what_it_ignores(bundle):
    r = wsc("simulate", bundle, "--estimate-only", "--check", "--tokens", SIXTEEN)
    assert r.returncode == 0, r.stderr
    assert "ignores --check and --tokens" in " ".join(r.stderr.split())


def test_check_refuses_a_checkpoint_that_changed(bundle, tmp_path):
    other = make_checkpoint("gpt2", tmp_path / "retrained", seed=1)
    r = wsc("simulate", bundle, "--check", "--checkpoint", other)
    assert_clean_error(r, f"checkpoint {other} is not what the bundle was compiled from",
                       "the checkpoint changed since")
    assert "numerics vs torch" not in r.stdout  # refused before running, not reported as FAIL


LLAMA_70B = {"model_type": "llama", "hidden_size": 8192, "intermediate_size": 28672,
             "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8,
             "vocab_size": 128256, "max_position_embeddings": 8192, "rms_norm_eps": 1e-5,
             "rope_theta": 500000.0, "tie_word_embeddings": False}


def test_a_70b_model_on_wse3_is_refused_with_bytes_before_tracing(tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(LLAMA_70B))
    r = wsc("compile", "--config", cfg, "--no-weights", "--target", "wse3", "-o", tmp_path / "o.wsc")
    assert_clean_error(r, "70.55B parameters take 141.1 GB (141,107,412,992 bytes) as f16 weights",
                       "wse3 has 36.2 GB (36,182,016,000 bytes) of SRAM",
                       "755x1170 PEs x 40960 bytes), 3.9x too little")
    assert "trace" not in r.stderr and "hint" not in r.stderr  # no hint that cannot help


def test_fp32_weights_that_would_fit_as_fp16_say_so(ckpt, tmp_path):
    r = wsc("compile", ckpt, "-o", tmp_path / "o.wsc", "--target", "mesh:3x3", "--dtype", "fp32")
    assert_clean_error(r, "as f32 weights alone", "hint: 16-bit weights (--dtype fp16 or bf16)")


def _no_stage_ran(r) -> bool:
    return not re.search(r"\ds load", r.stderr)


def test_compile_outputs_are_checked_before_the_compile_starts(ckpt, tmp_path):
    file, folder = tmp_path / "f.wsc", tmp_path / "notes"
    file.write_text("mine")
    folder.mkdir()
    (folder / "todo.txt").write_text("mine")
    cases = [(file, "a file of that name exists"),
             (folder, "the directory exists and is not a wsc bundle"),
             (file / "sub" / "o.wsc", f"{file} is not a directory")]
    for out, needle in cases:
        r = wsc("compile", ckpt, "-o", out)
        assert_clean_error(r, needle)
        assert _no_stage_ran(r), r.stderr
    assert file.read_text() == "mine" and (folder / "todo.txt").read_text() == "mine"
    r = wsc("compile", ckpt, "-o", folder, "--compile-to", "graph")
    assert_clean_error(r, f"-o {folder} is a directory")


def test_a_read_only_directory_is_refused_up_front(ckpt, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    if os.access(ro, os.W_OK):  # root writes anywhere; /sys is read-only even for root
        ro = Path("/sys")
    r = wsc("compile", ckpt, "-o", ro / "sub" / "o.wsc")
    assert_clean_error(r, f"cannot write in {ro}")
    assert _no_stage_ran(r)


def test_simulate_and_report_outputs_are_checked(bundle, tmp_path):
    file = tmp_path / "f"
    file.write_text("mine")
    assert_clean_error(wsc("simulate", bundle, "--json", tmp_path), f"--json {tmp_path} is a directory")
    assert_clean_error(wsc("simulate", bundle, "--trace", file / "t.json"), f"{file} is not a directory")
    assert_clean_error(wsc("report", bundle, "-o", file / "r.html"), f"{file} is not a directory")
    r = wsc("simulate", bundle, "--estimate-only", "--json", tmp_path / "new" / "r.json")
    assert r.returncode == 0 and (tmp_path / "new" / "r.json").is_file()  # directories are made


def test_messages_print_literally(tmp_path):
    odd = tmp_path / "x[" / "]y"  # the path .../x[/]y, which rich took for a closing tag
    r = wsc("compile", odd, "-o", tmp_path / "o.wsc")
    assert_clean_error(r, f"checkpoint `{odd}` does not exist")
    bad = tmp_path / "t.toml"
    bad.write_text('name = "t"\n[pe]\nclock_hz = 1e9\n')
    assert_clean_error(wsc("compile", odd, "-o", tmp_path / "o.wsc", "--target", bad),
                       f"{bad}: missing [fabric] table")


def test_a_target_with_a_string_for_a_number_is_a_clear_error(ckpt, tmp_path):
    text = (Path(__file__).parents[1] / "wsc/targets/wse3.toml").read_text()
    bad = tmp_path / "t.toml"
    bad.write_text(text.replace("width = 762 ", 'width = "762" '))
    r = wsc("compile", ckpt, "-o", tmp_path / "o.wsc", "--target", bad)
    assert r.returncode == 1
    assert_clean_error(r, f"{bad}: width must be an integer, got '762'")


def test_a_mesh_beyond_any_wafer_is_warned_about(tmp_path):
    r = wsc("compile", tmp_path / "nope", "-o", tmp_path / "o.wsc", "--target", "mesh:2000x2000")
    assert_clean_error(r, "warning: target mesh:2000x2000: a 2000x2000 mesh has 4,000,000 PEs, "
                          "more than the largest wafer built (wse3: 762x1172, 893,064 PEs)")
