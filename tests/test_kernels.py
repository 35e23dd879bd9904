"""Each kernel's distributed algorithm, on many grids (odd, even, 1xN, Nx1, non-dividing),
run by the simulator and compared with the numpy graph reference on random inputs."""

from __future__ import annotations

import numpy as np
import pytest

from graphs import gpt2_block_graph, llama_block_graph
from backend import simulator
from wsc.ir.graph_eval import evaluate
from wsc.numerics import compare

SEQ = 13  # divides no grid side: every layout pads


def check(build, grids, *, dtype="f32", seq=SEQ, steps=2, tol=2e-6, chunk=0):
    graph, weights = build(seq)
    sim = simulator(graph, weights, dtype=dtype, seq=seq, max_seq=seq + steps, grids=grids,
                    chunk=chunk)
    ids = np.random.default_rng(7).integers(0, 256, seq)
    logits, _ = sim.prefill(ids)
    ref = evaluate(graph, weights, ids[None]).reshape(seq, -1)
    assert compare(logits, ref).rel_l2_err < tol
    for step in range(steps):
        tok = int(np.argmax(logits[-1]))
        ids = np.append(ids, tok)
        logits, _ = sim.decode(tok, len(ids) - 1)
        g2, _ = build(len(ids))
        ref = evaluate(g2, weights, ids[None]).reshape(len(ids), -1)[-1:]
        assert compare(logits, ref).rel_l2_err < tol, f"decode step {step}"


@pytest.mark.parametrize("p", [3, 4, 5])  # c_proj on 2, 3, 4; c_fc no longer fits 2x2 with its FIFO
def test_linear_cannon_and_gemv(p):
    check(gpt2_block_graph, {"h.0.attn.c_attn": (p, p), "h.0.mlp.c_fc": (p, p), "lm_head": (p, p),
                             "h.0.attn.c_proj": (p - 1, p - 1)})


@pytest.mark.parametrize("grid", [(1, 1), (2, 1), (3, 2), (5, 4), (13, 1)])
def test_attention_ring_and_kv_cache(grid):
    check(gpt2_block_graph, {"h.0.attn": grid})


@pytest.mark.parametrize("grid", [(1, 1), (1, 2), (2, 2), (4, 1)])
def test_grouped_query_attention_with_rope(grid):
    check(llama_block_graph, {"layers.0.self_attn": grid})


@pytest.mark.parametrize("grid", [(1, 1), (2, 3), (3, 1), (1, 5), (4, 7)])
def test_norms(grid):
    check(gpt2_block_graph, {"h.0.ln_1": grid, "ln_f": grid})
    check(llama_block_graph, {"layers.0.input_layernorm": grid, "norm": grid})


@pytest.mark.parametrize("grid", [(3, 1), (3, 2), (2, 5), (7, 1)])
def test_embedding_ring_sum(grid):
    check(gpt2_block_graph, {"wte": grid})


@pytest.mark.parametrize("dtype,tol", [("f16", 1e-2), ("bf16", 5e-2)])
def test_low_precision_storage(dtype, tol):
    check(llama_block_graph, {}, dtype=dtype, tol=tol)


@pytest.mark.parametrize("chunk,grid", [(8, (2, 1)), (8, (3, 2)), (6, (4, 1))])
def test_chunked_prefill_pipelines_through_the_kv_cache(chunk, grid):
    check(gpt2_block_graph, {"h.0.attn": grid}, seq=24, chunk=chunk)
    check(llama_block_graph, {"layers.0.self_attn": (grid[0], 1)}, seq=24, chunk=chunk)


@pytest.mark.parametrize("p", [3, 4])  # odd: activations double-buffered only; even: weights too
@pytest.mark.parametrize("double_buffer", [2, 0])
def test_a_cannon_loop_computed_in_bulk_equals_its_steps(monkeypatch, p, double_buffer):
    """The simulator adds a Cannon loop's product once (runtime_sim/cannon.py); run step by
    step, the same program gives the same numbers up to fp32 summation order."""
    from wsc.runtime_sim import cannon

    used = []
    real = cannon.product
    monkeypatch.setattr(cannon, "product", lambda fr, loop: used.append(1) or real(fr, loop))

    def run(bulk: bool):
        if not bulk:
            monkeypatch.setattr(cannon, "applies", lambda *a: False)
        graph, weights = gpt2_block_graph(SEQ)
        sim = simulator(graph, weights, seq=SEQ, max_seq=SEQ + 1, grids={"h.0.mlp.c_fc": (p, p)},
                        double_buffer=double_buffer)
        return sim.prefill(np.random.default_rng(5).integers(0, 256, SEQ))[0]

    bulk = run(True)
    assert used, "the loop was not recognised"
    steps = run(False)
    np.testing.assert_allclose(bulk, steps, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("grid,chunk", [((2, 1), 0), ((3, 2), 0), ((4, 1), 6), ((2, 2), 8)])
def test_sliding_window_attention_in_prefill_and_decode(grid, chunk):
    """A window of 5: prefill (24 tokens, striped over rows, in chunks or not) and every
    decode step see only the last 5 positions."""
    check(lambda s: llama_block_graph(s, window=5), {"layers.0.self_attn": grid}, seq=24,
          chunk=chunk, steps=3)


@pytest.mark.parametrize("grid", [(1, 1), (2, 2), (3, 1)])
def test_per_head_qk_norms_inside_attention(grid):
    """Qwen3's q/k RMSNorms run on the attention PEs, per head, before rope."""
    check(lambda s: llama_block_graph(s, qk_norm=True), {"layers.0.self_attn": grid})
