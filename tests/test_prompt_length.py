"""Issue 10, item 1: a bundle compiled with --seq-len N takes prompts of 1..N tokens (the
chunks a prompt fills, the last one padded) and generates up to --max-seq, in the functional
simulator and in the estimate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models import greedy_tokens, make_checkpoint
from wsc.driver import CompileOptions, Pipeline
from wsc.errors import SimulationError
from wsc.golden import reference_logits
from wsc.numerics import compare
from wsc.runtime_sim.simulator import Simulator

SEQ, CHUNK, MAX_SEQ = 16, 4, 24


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_checkpoint("llama", tmp_path_factory.mktemp("ckpt") / "llama")


@pytest.fixture(scope="module")
def torch_model(ckpt):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(ckpt, attn_implementation="eager").eval()


@pytest.fixture(scope="module", params=["all", "last"])
def bundle(request, ckpt, tmp_path_factory) -> Path:
    """fp32, 16 tokens in chunks of 4: a 7-token prompt fills two chunks, the second one
    holding 3 tokens and a padding row, and a last-logits head must take row 3 of it."""
    out = tmp_path_factory.mktemp("b") / f"{request.param}.wsc"
    Pipeline(CompileOptions(checkpoint=ckpt, output=out, target="mesh:32x32", dtype="fp32",
                            seq_len=SEQ, prefill_chunk=CHUNK, max_seq=MAX_SEQ, place_time=1.0,
                            prefill_logits=request.param, report=False)).run()
    return out


@pytest.mark.parametrize("n", [1, 7, SEQ])
def test_a_prompt_of_any_length_matches_torch(bundle, ckpt, torch_model, n):
    sim = Simulator.open(bundle)
    ids = np.random.default_rng(1000 + n).integers(0, 256, n)  # fresh random prompt
    logits, _ = sim.prefill(ids)
    ref = reference_logits(ckpt, ids)
    if sim.manifest.prefill_logits == "last":
        ref = ref[-1:]
    assert logits.shape == ref.shape
    assert compare(logits, ref).rel_l2_err <= 1e-5
    steps = 6
    gen = sim.generate(ids, steps)
    assert gen.tokens == greedy_tokens(torch_model, ids, steps)


def test_generation_runs_to_the_kv_cache_end(bundle, torch_model):
    """One prompt token and MAX_SEQ generated fill the MAX_SEQ positions (the last token is
    never fed back); one more is refused."""
    sim = Simulator.open(bundle)
    ids = np.array([17])
    gen = sim.generate(ids, MAX_SEQ)
    assert gen.tokens == greedy_tokens(torch_model, ids, MAX_SEQ)
    with pytest.raises(SimulationError, match="exceed the KV cache"):
        sim.generate(ids, MAX_SEQ + 1)


def test_a_shorter_prompt_has_a_shorter_modeled_ttft(bundle):
    """The estimate runs only the chunks a prompt fills; a functional run of the same length
    is timed identically (the cycle model never looks at the data)."""
    est = Simulator.open(bundle, functional=False)
    fun = Simulator.open(bundle)
    cycles = {}
    for n in (1, CHUNK, CHUNK + 1, 7, SEQ):
        cycles[n] = est.estimate("prefill", prompt_len=n).cycles
        _, run = fun.prefill(np.arange(n) % 256)
        assert run.cycles == cycles[n], n
    assert cycles[1] == cycles[CHUNK] < cycles[CHUNK + 1] == cycles[7] < cycles[SEQ]


def test_a_prompt_longer_than_compiled_is_refused(bundle):
    sim = Simulator.open(bundle)
    with pytest.raises(SimulationError, match=f"takes 1 to {SEQ} prompt tokens, got {SEQ + 1}"):
        sim.prefill(np.zeros(SEQ + 1, dtype=np.int64))
    with pytest.raises(SimulationError, match="got 0"):
        Simulator.open(bundle, functional=False).estimate("prefill", prompt_len=0)
