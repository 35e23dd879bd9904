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


@pytest.mark.parametrize("p", [3, 4, 10, 11])  # odd: activations double-buffered only; even:
@pytest.mark.parametrize("double_buffer", [2, 0])  # weights too; 10, 11: periods skipped
def test_a_cannon_loop_computed_in_bulk_equals_its_steps(monkeypatch, p, double_buffer):
    """The simulator adds a Cannon loop's product once (runtime_sim/cannon.py) and the timing
    of the loop's remaining periods in one step once it has seen two equal ones; run step by
    step, the same program gives the same numbers up to fp32 summation order, and the same
    timing."""
    from wsc.runtime_sim import cannon, scheduler

    used, skipped = [], []
    real, advance = cannon.product, scheduler._advance_periods
    monkeypatch.setattr(cannon, "product", lambda fr, loop: used.append(1) or real(fr, loop))
    monkeypatch.setattr(scheduler, "_advance_periods",
                        lambda fr, per, n: skipped.append(n) or advance(fr, per, n))

    def run(bulk: bool):
        if not bulk:
            monkeypatch.setattr(cannon, "applies", lambda *a: False)
        graph, weights = gpt2_block_graph(SEQ)
        sim = simulator(graph, weights, seq=SEQ, max_seq=SEQ + 1, grids={"h.0.mlp.c_fc": (p, p)},
                        double_buffer=double_buffer)
        logits, r = sim.prefill(np.random.default_rng(5).integers(0, 256, SEQ))
        return logits, _timing(r)

    bulk = run(True)
    assert used, "the loop was not recognised"
    assert bool(skipped) == (p >= 10)
    steps = run(False)
    np.testing.assert_allclose(bulk[0], steps[0], rtol=1e-5, atol=1e-5)
    assert bulk[1] == steps[1]


def _timing(run) -> tuple:
    return run.cycles, run.critical, {n: vars(s) for n, s in run.regions.items()}


@pytest.mark.parametrize("build,grid,chunk", [
    ("gpt2", (2, 1), 0), ("gpt2", (3, 2), 0), ("gpt2", (13, 1), 0),  # 13 rows: periods skipped
    ("gpt2", (3, 2), 8), ("llama", (4, 1), 0), ("llama", (12, 2), 6),  # GQA, chunks
    ("window", (5, 1), 0), ("window", (11, 1), 8)])
def test_an_attention_ring_computed_in_bulk_equals_its_steps(monkeypatch, build, grid, chunk):
    """The simulator computes a prefill attention ring in one pass (runtime_sim/ring.py) and
    adds the timing of the loop's remaining periods in one step once it has seen two equal
    ones; run step by step, the same programs give the same logits up to fp32 summation
    order, the same timing, and the same decode steps after them."""
    from wsc.runtime_sim import ring, scheduler

    used, skipped = [], []
    real, advance = ring.compute, scheduler._advance_periods
    monkeypatch.setattr(ring, "compute", lambda *a: used.append(1) or real(*a))
    monkeypatch.setattr(scheduler, "_advance_periods",
                        lambda fr, p, n: skipped.append(n) or advance(fr, p, n))
    graphs = {"gpt2": (gpt2_block_graph, "h.0.attn"),
              "llama": (llama_block_graph, "layers.0.self_attn"),
              "window": (lambda s: llama_block_graph(s, window=5), "layers.0.self_attn")}
    make, kernel = graphs[build]
    seq = 24

    def run(bulk: bool):
        if not bulk:
            monkeypatch.setattr(ring, "applies", lambda *a: False)
        graph, weights = make(seq)
        sim = simulator(graph, weights, seq=seq, max_seq=seq + 2, grids={kernel: grid},
                        chunk=chunk)
        ids = np.random.default_rng(3).integers(0, 256, seq)
        logits, r = sim.prefill(ids)
        step, d = sim.decode(int(np.argmax(logits[-1])), seq)
        return logits, _timing(r), step, _timing(d)

    bulk = run(True)
    assert used, "the ring was not recognised"
    assert bool(skipped) == (grid[0] >= 10), skipped  # Cannon loops here have < 10 steps
    steps = run(False)
    np.testing.assert_allclose(bulk[0], steps[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bulk[2], steps[2], rtol=1e-5, atol=1e-5)
    assert bulk[1] == steps[1] and bulk[3] == steps[3]


@pytest.mark.parametrize("bulk", [True, False])
def test_nan_in_an_attention_ring_names_the_attend_op_in_bulk_as_in_steps(monkeypatch, bulk):
    """Scores that overflow to +inf make the running max inf and the sums NaN: the bulk ring
    reports it as the steps do, naming the attend op and the first buffer the steps check."""
    from wsc.errors import SimulationError
    from wsc.runtime_sim import ring

    if not bulk:
        monkeypatch.setattr(ring, "applies", lambda *a: False)
    used = []
    real = ring.compute
    monkeypatch.setattr(ring, "compute", lambda *a: used.append(1) or real(*a))
    graph, weights = gpt2_block_graph(SEQ)
    w = next(n for n in weights if "c_attn" in n and weights[n].ndim == 2)
    weights = dict(weights)
    weights[w] = weights[w] * np.float32(1e19)  # q, k ~ 1e19: finite, their dot products not
    sim = simulator(graph, weights, seq=SEQ, max_seq=SEQ + 1, grids={"h.0.attn": (3, 1)})
    with pytest.raises(SimulationError,
                       match="NaN/Inf first produced by wsc.tile.attend in region h.0.attn.* "
                             "in buffer m"):
        sim.prefill(np.random.default_rng(5).integers(0, 256, SEQ))
    assert bool(used) == bulk


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


@pytest.mark.parametrize("p", [2, 3, 5])
def test_a_decode_gemv_computed_in_bulk_equals_its_steps(monkeypatch, p):
    """Decode's matmul + all-reduce pairs are one product with the weights' global matrix
    (runtime_sim/gemv.py); run step by step, the same decode steps give the same logits up to
    fp32 summation order, and the same timing."""
    from wsc.runtime_sim import gemv

    used = []
    real = gemv.compute
    monkeypatch.setattr(gemv, "compute", lambda *a: used.append(1) or real(*a))

    def run(bulk: bool):
        if not bulk:
            monkeypatch.setattr(gemv, "applies", lambda *a: False)
        graph, weights = gpt2_block_graph(SEQ)
        sim = simulator(graph, weights, seq=SEQ, max_seq=SEQ + 3,
                        grids={"h.0.mlp.c_fc": (p, p), "lm_head": (p, p)})
        gen = sim.generate(np.random.default_rng(5).integers(0, 256, SEQ), 3)
        return gen.step_logits, gen.decode_s, gen.tokens

    bulk = run(True)
    assert used, "no GEMV was recognised"
    steps = run(False)
    np.testing.assert_allclose(np.array(bulk[0]), np.array(steps[0]), rtol=1e-5, atol=1e-5)
    assert bulk[1:] == steps[1:]


@pytest.mark.parametrize("scale,op", [(3e38, "matmul"), (1e38, "allreduce")])
def test_nan_in_a_decode_gemv_is_reported_by_the_op_the_steps_name(monkeypatch, scale, op):
    """A GEMV whose result overflows is run step by step, so the error names the op that made
    the Inf (the matmul's partials or the all-reduce's sums), as without the bulk path."""
    from wsc.errors import SimulationError
    from wsc.runtime_sim import gemv

    def message(bulk: bool) -> str:
        if not bulk:
            monkeypatch.setattr(gemv, "applies", lambda *a: False)
        graph, weights = gpt2_block_graph(SEQ)
        weights = dict(weights)
        w = next(n for n in weights if "c_fc" in n and weights[n].ndim == 2)
        weights[w] = weights[w] * np.float32(scale)
        sim = simulator(graph, weights, seq=SEQ, max_seq=SEQ + 1, grids={"h.0.mlp.c_fc": (4, 4)})
        sim.check_finite = False  # the prefill's Cannon loop overflows first: look past it
        sim.prefill(np.random.default_rng(5).integers(0, 256, SEQ))
        sim.check_finite = True
        with pytest.raises(SimulationError, match="NaN/Inf first produced by") as e:
            sim.decode(3, SEQ)
        return str(e.value)

    bulk = message(True)
    assert f"wsc.tile.{op} in region h.0.mlp.c_fc" in bulk
    assert bulk == message(False)
