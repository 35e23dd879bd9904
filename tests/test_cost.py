"""The cycle model (wsc/machine/cost.py) against its documented formulas, worked by hand from
the WSE-3 target's fields: 4 mixed-precision FMACs per cycle, 8 fp16 / 1 fp32 elements per
vector cycle, 3 cycles of issue overhead, 12 per transcendental, 16 B read / 8 B write per
cycle, 1-cycle hops, 2-cycle ramps, 4-byte wavelets, one per link per cycle."""

from __future__ import annotations

import numpy as np
import pytest

from wsc.ir import tile as t
from wsc.ir.layout import REPLICATED, Layout, split_cols
from wsc.passes.tile_builder import Inbound, RegionBuilder
from wsc.machine.cost import CostModel
from wsc.machine.target import load_target

WSE3 = load_target("wse3")
COST = CostModel(WSE3)


def test_the_target_fields_the_hand_derivations_use():
    assert (WSE3.fmacs_per_cycle("f16"), WSE3.fmacs_per_cycle("f32")) == (4, 1)
    assert (WSE3.simd_width("f16"), WSE3.simd_width("f32")) == (8, 1)
    assert (WSE3.instruction_overhead_cycles, WSE3.transcendental_cycles) == (3, 12)
    assert (WSE3.hop_latency_cycles, WSE3.ramp_latency_cycles, WSE3.wavelet_bytes) == (1, 2, 4)


def test_matmul_takes_the_cheaper_loop_order():
    # a 16x16 tile with k = 64: 64 rank-1 updates of 256/4 FMACs, each issued once
    assert COST.matmul(16, 64, 16, "f16") == 64 * (3 + 64)
    # one query row against 15 keys of 128: 15 dot products of 128/4, not 128 updates of 15
    assert COST.matmul(1, 128, 15, "f16") == 15 * (3 + 32)
    assert COST.matmul(1, 128, 15, "f32") == 15 * (3 + 128)


def test_elementwise_is_bound_by_the_slowest_of_simd_and_memory_ports():
    # 1024 fp16 elements, two operands in, fp32 out: SIMD 128, reads 4096 B / 16 = 256,
    # writes 4096 B / 8 = 512 cycles: the write port binds
    assert COST.elementwise(1024, "f16", reads=2) == 3 + 512
    # fp32 runs one element per cycle
    assert COST.elementwise(1024, "f32", reads=1) == 3 + 1024
    # a transcendental adds its per-element software cost
    assert COST.elementwise(4, "f32", reads=1, transcendental=True) == 3 + 4 + 4 * 12


def test_fabric_streams_pay_the_ramps_and_hops_once():
    assert COST.stream(400, 10) == 2 * 2 + 10 + 100
    assert COST.stream(400, 10, lanes=4) == 2 * 2 + 10 + 25
    assert COST.stream(400, 10, contention=3.0) == 2 * 2 + 10 + 300


def test_an_interleaved_ring_shift_is_at_most_two_hops():
    assert COST.shift(400, 7, interleaved=True) == COST.stream(400, 2)
    assert COST.shift(400, 7, interleaved=False) == COST.stream(400, 6)  # the wrap-around
    assert COST.shift(400, 2, interleaved=True) == COST.stream(400, 1)
    assert COST.shift(400, 1, interleaved=True) == 0


def test_tree_reduce_is_sublinear_in_the_line_length():
    nbytes = 64
    flat = [COST.tree_reduce(nbytes, n, 1) for n in (16, 64, 256)]
    tree = [COST.tree_reduce(nbytes, n, 2) for n in (16, 64, 256)]
    assert flat == sorted(flat) and tree == sorted(tree)
    assert tree[2] < flat[2]  # two levels beat a chain on a long line
    assert tree[2] / tree[0] < 256 / 16
    # five PEs streaming into the middle one: max(C, E/N + L) + (2ρ + 1) * D with w = 16
    # wavelets, L = D = 2 (both halves run at once), plus one task activation
    act = WSE3.task_activation_cycles
    assert COST.chain_to_centre(nbytes, 5) == max(16, 16 + 2) + 5 * 2 + act
    # groups spaced 9 hops apart pay the spacing on the longest path, not on the depth
    assert COST.chain_to_centre(nbytes, 5, stride=9) == 16 + 18 + 5 * 2 + act
    # and the middle multicasts back: 2ρ + ceil((n - 1) / 2) hops + w
    assert COST.broadcast(nbytes, 5) == 4 + 2 + 16 + act


def test_a_sum_of_squares_is_a_dot_product_at_the_operands_fmac_rate():
    from tests.test_runtime_sim import io_region, run

    grid = (1, 2)
    lay = Layout((3, 1366), grid, REPLICATED, split_cols(2))  # 683 columns per PE
    b, x = io_region(grid, lay, "f16")
    s = b.buffer("s", (3, 1), "f32")
    b.op(t.ReduceOp, [x, s], fn="sumsq", dim=1)
    b.send(x)
    g = np.random.default_rng(1).standard_normal((3, 1366)).astype(np.float32)
    res = run([b], {"in": g})
    # three dot products of 683 fp16 elements at 4 FMACs per cycle (mixed precision)
    assert res.regions["r"].compute == 3 * (3 + 171)


def _attn_finish_cycles(rows: int, heads: int, head_dim: int) -> float:
    """Run one attn_finish on a 1x2 region and return its cycles."""
    from tests.test_runtime_sim import run

    grid = (1, 2)
    lay = Layout((rows, heads * head_dim), grid, REPLICATED, split_cols(2))
    b = RegionBuilder("r", "test", grid, inputs={("input", 0): Inbound("in")},
                      outputs={0: ["out"]})
    acc = b.buffer("acc", lay.tile, "f32", layout=lay)
    b.recv(acc, ("input", 0))
    l = b.buffer("l", (rows, heads // 2), "f32")
    b.op(t.FillOp, [l], value=2.0)
    o = b.buffer("o", lay.tile, "f32", layout=lay)
    b.op(t.AttnFinishOp, [acc, l, o], heads=heads // 2, head_dim=head_dim)
    b.send(o, 0)
    x = np.random.default_rng(0).standard_normal((rows, heads * head_dim)).astype(np.float32)
    res = run([b], {"in": x})
    np.testing.assert_allclose(res.outputs["out"], x / 2, rtol=1e-6)
    return res.regions["r"].compute


@pytest.mark.parametrize("rows", [1, 4])
def test_attention_finish_divides_once_per_head_not_per_element(rows):
    heads, hd = 8, 64  # 4 heads of 64 on each PE
    per_pe = rows * heads // 2 * hd
    one_reciprocal_per_head = (COST.elementwise(rows * heads // 2, "f32", reads=1, transcendental=True)
                               + COST.elementwise(per_pe, "f32", reads=2))
    fill = COST.fill(rows * heads // 2 * 4)
    assert _attn_finish_cycles(rows, heads, hd) == fill + one_reciprocal_per_head
