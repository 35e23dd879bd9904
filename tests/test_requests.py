"""Issue 10, item 2: many requests in flight. Their decode steps run interleaved through the
pipeline on the simulator's scheduler; each request keeps its own KV cache and generates
torch's greedy tokens; the timing obeys the bound max(L, R*B) and grows with R."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models import greedy_tokens, make_checkpoint
from wsc.driver import CompileOptions, Pipeline
from wsc.runtime_sim import serving
from wsc.runtime_sim.simulator import Simulator

WSC = [sys.executable, "-m", "wsc.cli"]
SEQ, MAX_SEQ = 16, 40


def wsc(*args) -> subprocess.CompletedProcess:
    return subprocess.run([*WSC, *map(str, args)], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_checkpoint("llama", tmp_path_factory.mktemp("ckpt") / "llama")


@pytest.fixture(scope="module")
def bundle(ckpt, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("b") / "m.wsc"
    Pipeline(CompileOptions(checkpoint=ckpt, output=out, target="mesh:32x32", dtype="fp32",
                            seq_len=SEQ, prefill_chunk=4, max_seq=MAX_SEQ, place_time=1.0,
                            report=False)).run()
    return out


def test_interleaved_requests_generate_their_own_greedy_tokens(bundle, ckpt):
    """Three requests with distinct prompts of different lengths: every region runs their
    decode steps round-robin with the request's own KV cache swapped in, and each request's
    tokens are its own torch greedy generation."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(ckpt, attn_implementation="eager").eval()
    sim = Simulator.open(bundle)
    prompts = [np.random.default_rng(50 + r).integers(0, 256, n) for r, n in enumerate((5, SEQ, 1))]
    steps = 8
    served = serving.serve(sim, prompts, steps)
    for r, ids in enumerate(prompts):
        assert served.tokens[r] == greedy_tokens(model, ids, steps), r
    # the steps really were interleaved: request 1's k-th token comes out between request 0's
    # k-th and (k+1)-th, and one request's tokens come faster than three requests' in turn
    t0, t1 = served.times[0], served.times[1]
    assert all(a < b < c for a, b, c in zip(t0, t1, t0[1:]))
    alone = Simulator.open(bundle, functional=False).run("decode", None, SEQ).cycles
    assert served.period() < 1.5 * alone < 3 * alone


def test_the_timing_obeys_the_bound_and_saturates_at_the_busiest_region(bundle):
    sim = Simulator.open(bundle, functional=False)
    one = sim.run("decode", None, SEQ)
    L, B, _ = serving.one_step_bound(one)
    periods = {}
    for r in (1, 2, 4, 16, 32):
        periods[r] = serving.decode_timing(sim, r, SEQ).period()
        assert periods[r] >= max(L, r * B) * (1 - 1e-9), r  # nothing beats the bound
        assert periods[r] <= 1.5 * max(L, r * B), r  # and the schedule comes close to it
    aggregate = {r: r / p for r, p in periods.items()}
    assert aggregate[4] > 3 * aggregate[1]  # below saturation, requests come almost for free
    assert 32 * B > L and aggregate[32] <= 1 / B  # past it, the busiest region sets the pace
    # a prompt that arrives while others decode waits behind their tokens, never less than alone
    alone, stall = serving.ttft_under_load(sim, 1, SEQ, 7)
    assert alone == sim.run("prefill", None, 0, prompt_len=7).cycles and stall == 0
    loaded, stall = serving.ttft_under_load(sim, 8, SEQ, 7)
    assert loaded >= alone and stall > periods[1]


def test_cli_requests_table_and_check(bundle, tmp_path):
    out = tmp_path / "r.json"
    r = wsc("simulate", bundle, "--requests", "5", "--check", "--generate", "5", "--prompt-len", "7",
            "--json", out)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["passed"] and res["requests_check"]["tokens_match"] == [True] * 5
    assert len({tuple(t) for t in res["requests_check"]["tokens"]}) == 5  # distinct prompts
    q = res["requests"]
    assert [row["requests"] for row in q["rows"]] == [1, 2, 4, 5]
    for row in q["rows"]:
        assert row["aggregate_tokens_per_s"] == pytest.approx(row["requests"] * row["per_request_tokens_per_s"])
        assert row["ttft_s"] > 0 and row["kv_fits"]
    assert q["users_served"] == 5 and q["prompt_len"] == 7
    text = " ".join(r.stdout.split())
    assert "5 requests, decode steps interleaved: 5 of them generate torch's greedy tokens" in text
    assert "users served at >= 1,000 tok/s each and < 200 ms to first token: 5" in text

    # the report plots the curve and tabulates it
    page = tmp_path / "r.html"
    assert wsc("report", bundle, "-o", page, "--sim", out).returncode == 0
    html = page.read_text()
    assert '<section id="requests-section">' in html and html.count('<svg class="plot"') == 2
    assert "tokens/s against requests in flight" in html


@pytest.mark.parametrize("args,needle", [
    (["--requests", "0"], "--requests must be >= 1, got 0"),
    (["--requests", "2", "--check"], "--requests with --check compares every request's generated tokens"),
    (["--requests", "2", "--tokens", "1,2"], "--requests gives every request a random prompt of its own"),
])
def test_bad_requests_options_are_one_line_errors(bundle, args, needle):
    r = wsc("simulate", bundle, *args)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert needle in " ".join(r.stderr.split())
