"""The simulator's ops and collectives against numpy on random data, and its checks."""

from __future__ import annotations

import numpy as np
import pytest
from xdsl.dialects.builtin import IntegerAttr, ModuleOp, StringAttr, i64
from xdsl.ir import Block, Region

from wsc.errors import SimulationError
from wsc.ir import tile as t
from wsc.ir.layout import REPLICATED, Layout, split_cols, split_rows
from wsc.passes.tile_builder import Inbound, RegionBuilder
from wsc.runtime_sim.memory import RegionMemory
from wsc.runtime_sim.scheduler import LoadedProgram, ProgramRun
from wsc.machine.cost import CostModel
from wsc.machine.target import load_target

TARGET = load_target("mesh:16x16")
GRIDS = [(1, 1), (1, 5), (5, 1), (2, 2), (3, 4), (4, 3)]
rng = np.random.default_rng(0)


def run(builders: list[RegionBuilder], inputs: dict, *, pos0: int = 0, extra_channels=(),
        trace: bool = False, functional: bool = True):
    """Run one program made of the given regions; host channels are inferred from names. An
    input is one message, or a list of them."""
    regions = [b.finish((0, 0)) for b in builders]
    chans = []
    names = {r.sym_name.data for r in regions}
    for r in regions:
        for op in r.walk():
            if isinstance(op, t.RecvOp) and op.channel.data in inputs:
                chans.append((op.channel.data, "host", r.sym_name.data))
            elif isinstance(op, t.SendOp) and op.channel.data.startswith("out"):
                chans.append((op.channel.data, r.sym_name.data, "host"))
    chans += list(extra_channels)
    ops = [t.ChannelOp.create(properties={"sym_name": StringAttr(n), "src": StringAttr(s),
                                          "dst": StringAttr(d), "bytes": IntegerAttr(64, i64)})
           for n, s, d in chans]
    prog = t.ProgramOp.create(properties={"sym_name": StringAttr("p"), "phase": StringAttr("prefill"),
                                          "tokens": IntegerAttr(1, i64)},
                              regions=[Region(Block([*regions, *ops]))])
    module = ModuleOp([prog])
    module.attributes[t.SRAM_BUDGET_ATTR] = IntegerAttr(TARGET.buffer_budget, i64)
    module.verify()
    loaded = LoadedProgram.load(prog)
    memory = {}
    for r in loaded.regions:
        mem = RegionMemory(r.name, r.grid, TARGET.buffer_budget)
        mem.reserve(RegionMemory.high_water([r.op]))
        memory[r.name] = mem
    assert names == set(memory)
    msgs = {k: (v if isinstance(v, list) else [v]) for k, v in inputs.items()}
    return ProgramRun(loaded, memory if functional else {}, CostModel(TARGET), pos0=pos0,
                      inputs={k: (m if functional else None) for k, m in msgs.items()},
                      trace=trace, functional=functional).run()


def region(grid, name="r") -> RegionBuilder:
    return RegionBuilder(name, "test", grid, inputs={("input", 0): Inbound("in")},
                         outputs={0: ["out"]})


def io_region(grid, layout: Layout, dtype="f32"):
    b = region(grid)
    x = b.buffer("x", layout.tile, dtype, layout=layout)
    b.recv(x, ("input", 0))
    return b, x


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("by", [-1, 1, 2])
def test_shift_is_a_rotation_and_tracked(grid, axis, by):
    g = rng.standard_normal((11, 7)).astype(np.float32)
    lay = Layout(g.shape, grid, split_rows(grid[0]), split_cols(grid[1]))
    b, x = io_region(grid, lay)
    b.shift(x, axis=axis, by=by)
    b.send(x)
    # the layout plus the tracked rotation still name every element correctly
    r = run([b], {"in": g})
    np.testing.assert_array_equal(r.outputs["out"], g)


@pytest.mark.parametrize("into", ["in place", "into a second buffer"])
@pytest.mark.parametrize("axis", [0, 1])
def test_shift_moves_the_data(axis, into):
    """Added to an unshifted buffer of the same layout, a shifted one contributes its
    neighbour's block: the data moved, not only the bookkeeping of where it is."""
    grid = (3, 4)
    g = rng.standard_normal((6, 8)).astype(np.float32)
    lay = Layout(g.shape, grid, split_rows(3), split_cols(4))
    b, x = io_region(grid, lay)
    y = b.buffer("y", lay.tile, "f32", layout=lay)
    b.op(t.CopyOp, [x, y])
    if into == "in place":
        b.shift(x, axis=axis, by=1)
        moved = x
    else:
        moved = b.buffer("x2", lay.tile, "f32", layout=lay)
        b.shift(x, axis=axis, by=1, dst=moved)
    z = b.buffer("z", lay.tile, "f32", layout=lay)
    b.op(t.BinaryOp, [moved, y, z], fn="add")
    b.send(z)
    tiles = lay.scatter(g)
    want = lay.gather(np.roll(tiles, 1, axis=axis) + tiles)
    np.testing.assert_allclose(run([b], {"in": g}).outputs["out"], want, rtol=1e-6)


def centre_rooted(values: list[np.float32], group: int) -> np.float32:
    """One level of the tree, by hand: each group sums from both ends into its middle PE
    (left partial, right partial, root), then the roots do the same."""
    roots = []
    for i in range(0, len(values), group):
        v = values[i:i + group]
        c = len(v) // 2 if len(v) == group else group // 2
        left = v[0] if c > 0 else None
        for x in v[1:c]:
            left = np.float32(left + x)
        right = None
        for x in reversed(v[c + 1:]):
            right = x if right is None else np.float32(right + x)
        root = v[c] if c < len(v) else np.float32(0)
        root = root if right is None else np.float32(right + root)
        root = root if left is None else np.float32(left + root)
        roots.append(root)
    return roots[0] if len(roots) == 1 else centre_rooted(roots, group)


def test_the_tree_adds_in_the_order_its_levels_describe():
    """Values whose fp32 sum depends on the order: the simulator's all-reduce over a line of 9
    PEs in two levels (groups of 3) is exactly the centre-rooted tree's sum."""
    vals = np.array([-0.0012459110002964735, -73.22673797607422, -5442.58984375,
                     -0.0316300168633461, 411.6305236816406, 104251.3359375,
                     -1.2853466272354126, 136.64634704589844, -6651946.5], np.float32)
    n = vals.size
    lay = Layout((n, 1), (n, 1), split_rows(n))
    b, x = io_region((n, 1), lay)
    s = b.buffer("s", (1, 1), "f32", layout=Layout((1, 1), (n, 1)))
    b.op(t.CopyOp, [x, s])
    b.op(t.AllReduceOp, [s, b.scratch((1, 1))], axis=0, fn="sum", levels=2)
    b.send(s)
    got = run([b], {"in": vals[:, None]}).outputs["out"][0, 0]
    assert got == centre_rooted(list(vals), 3)
    in_order = np.float32(0)
    for v in vals:
        in_order = np.float32(in_order + v)
    assert got != in_order and got != vals.sum(dtype=np.float32)  # the order shows


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("fn", ["sum", "max"])
def test_allreduce_tree(grid, axis, fn):
    R, C = grid
    # every PE holds a different [2, 3] block; after the all-reduce each holds the reduction
    blocks = rng.standard_normal((R, C, 2, 3)).astype(np.float32)
    g = blocks.transpose(0, 2, 1, 3).reshape(R * 2, C * 3)
    lay = Layout(g.shape, grid, split_rows(R), split_cols(C))
    b, x = io_region(grid, lay)
    b.allreduce(x, axis=axis, fn=fn)
    b.send(x)
    got = run([b], {"in": g}).outputs["out"].reshape(R, 2, C, 3).transpose(0, 2, 1, 3)
    want = getattr(blocks.astype(np.float64), fn)(axis=axis, keepdims=True)
    np.testing.assert_allclose(got, np.broadcast_to(want, got.shape), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("grid", [(1, 1), (2, 1), (3, 1), (4, 2)])
def test_attn_merge_is_softmax_over_all_rows(grid):
    R, C = grid
    heads, hd, n = 2, 4, 3  # per PE: n key rows per head
    scores = rng.standard_normal((R, C, heads, n)).astype(np.float32)
    values = rng.standard_normal((R, C, heads, n, hd)).astype(np.float32)
    m = scores.max(-1)
    p = np.exp(scores - m[..., None])
    l, acc = p.sum(-1), (p[..., None] * values).sum(-2)
    b = RegionBuilder("r", "test", grid, outputs={0: ["out"]})
    lays = {}
    bufs = []
    for name, arr in (("m", m), ("l", l), ("acc", acc.reshape(R, C, heads * hd))):
        g = arr.reshape(R, C, -1).transpose(0, 1, 2).reshape(R, C * arr.reshape(R, C, -1).shape[-1])
        lays[name] = Layout(g.shape, grid, split_rows(R), split_cols(C))
        buf = b.buffer(name, lays[name].tile, "f32", layout=lays[name])
        b.inputs[("input", len(bufs))] = Inbound(f"in{name}")
        b.recv(buf, ("input", len(bufs)))
        bufs.append((buf, g))
    b.attn_merge(*(v for v, _ in bufs), axis=0, heads=heads, head_dim=hd)
    out = b.buffer("o", lays["acc"].tile, "f32", layout=lays["acc"])
    b.op(t.AttnFinishOp, [bufs[2][0], bufs[1][0], out], heads=heads, head_dim=hd)
    b.send(out)
    r = run([b], {f"in{n}": g for n, (_, g) in zip(("m", "l", "acc"), bufs)})
    got = r.outputs["out"].reshape(R, C, heads, hd)
    # reference: softmax over all R*n keys of each column
    s_all = scores.transpose(1, 2, 0, 3).reshape(C, heads, R * n)
    v_all = values.transpose(1, 2, 0, 3, 4).reshape(C, heads, R * n, hd)
    w = np.exp(s_all - s_all.max(-1, keepdims=True))
    want = (w[..., None] * v_all).sum(-2) / w.sum(-1)[..., None]
    for r_ in range(R):
        np.testing.assert_allclose(got[r_], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fn", ["exp", "tanh", "sigmoid", "rsqrt", "silu", "gelu", "gelu_tanh", "neg"])
def test_unary(fn):
    import torch

    g = (rng.random((6, 10)).astype(np.float32) + 0.1)
    lay = Layout(g.shape, (2, 3), split_rows(2), split_cols(3))
    b, x = io_region((2, 3), lay)
    y = b.buffer("y", lay.tile, "f32", layout=lay)
    b.op(t.UnaryOp, [x, y], fn=fn)
    b.send(y)
    ref = {"exp": torch.exp, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "rsqrt": torch.rsqrt,
           "silu": torch.nn.functional.silu, "neg": torch.neg,
           "gelu": torch.nn.functional.gelu,
           "gelu_tanh": lambda v: torch.nn.functional.gelu(v, approximate="tanh")}[fn]
    np.testing.assert_allclose(run([b], {"in": g}).outputs["out"], ref(torch.from_numpy(g)).numpy(),
                               rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("fn", ["sum", "sumsq"])
def test_reduce_skips_padding(fn):
    g = rng.standard_normal((5, 7)).astype(np.float32) + 3.0
    lay = Layout(g.shape, (2, 3), split_rows(2), split_cols(3))  # pads rows to 6, cols to 9
    b, x = io_region((2, 3), lay)
    b.op(t.UnaryOp, [x, x], fn="exp")  # padding becomes exp(0) = 1, which must not count
    s = b.buffer("s", (lay.tile[0], 1), "f32")
    b.op(t.ReduceOp, [x, s], fn=fn, dim=1)
    b.allreduce(s, axis=1)
    b.op(t.BinaryOp, [x, s, x], fn="div")
    b.send(x)
    e = np.exp(g)
    total = (e * e if fn == "sumsq" else e).sum(1, keepdims=True)
    np.testing.assert_allclose(run([b], {"in": g}).outputs["out"], e / total, rtol=1e-6)


def test_channel_changes_layout_and_takes_a_window():
    g = rng.standard_normal((9, 12)).astype(np.float32)
    a_lay = Layout(g.shape, (3, 2), split_rows(3, cyclic=True), split_cols(2))
    b_lay = Layout((9, 5), (2, 2), REPLICATED, split_cols(2))
    a, x = io_region((3, 2), a_lay)
    a.outputs = {0: ["c"]}
    a.send(x)
    b = RegionBuilder("s", "test", (2, 2), inputs={("input", 0): Inbound("c", (0, 9, 4, 9))},
                      outputs={0: ["out"]})
    y = b.buffer("y", b_lay.tile, "f32", layout=b_lay)
    b.recv(y, ("input", 0))
    b.send(y)
    r = run([a, b], {"in": g}, extra_channels=[("c", "r", "s")])
    np.testing.assert_array_equal(r.outputs["out"], g[:, 4:9])


def test_a_receive_that_can_never_be_matched_is_a_deadlock_naming_region_and_op():
    # each region waits for the other's send before sending: a cycle
    lay = Layout((1, 1), (1, 1))
    a = RegionBuilder("a", "test", (1, 1), inputs={("input", 0): Inbound("c2")}, outputs={0: ["c1"]})
    b = RegionBuilder("b", "test", (1, 1), inputs={("input", 0): Inbound("c1")}, outputs={0: ["c2"]})
    for r in (a, b):
        x = r.buffer("x", (1, 1), "f32", layout=lay)
        r.recv(x, ("input", 0))
        r.send(x)
    with pytest.raises(SimulationError, match=r"(?s)deadlock.*region a .*wsc.tile.recv for channel c2 from b, which is itself waiting"):
        run([a, b], {}, extra_channels=[("c1", "a", "b"), ("c2", "b", "a")])


def test_the_verifier_rejects_a_receive_without_a_send():
    from xdsl.utils.exceptions import VerifyException

    b = RegionBuilder("consumer", "test", (1, 1), inputs={("input", 0): Inbound("c")})
    b.recv(b.buffer("y", (1, 1), "f32", layout=Layout((1, 1), (1, 1))), ("input", 0))
    a = RegionBuilder("producer", "test", (1, 1))
    with pytest.raises(VerifyException, match="channel c: expected one send in producer"):
        run([a, b], {}, extra_channels=[("c", "producer", "consumer")])


def test_sram_overflow_is_refused():
    mem = RegionMemory("big", (2, 2), TARGET.buffer_budget)
    with pytest.raises(SimulationError, match="SRAM overflow in region big"):
        mem.reserve(TARGET.buffer_budget + 8)


def test_nan_is_reported_with_the_op_that_made_it():
    g = -np.ones((2, 2), np.float32)
    lay = Layout(g.shape, (1, 1))
    b, x = io_region((1, 1), lay)
    b.op(t.UnaryOp, [x, x], fn="sqrt")
    b.send(x)
    with pytest.raises(SimulationError, match="NaN/Inf first produced by wsc.tile.unary in region r"):
        run([b], {"in": g})


@pytest.mark.parametrize("dtype", ["f16", "bf16", "f32"])
def test_the_finite_check_agrees_with_isfinite_on_every_16_bit_pattern(dtype):
    from wsc.runtime_sim.memory import NP_DTYPES, all_finite

    dt = NP_DTYPES[dtype]
    if dt.itemsize == 2:
        values = np.arange(1 << 16, dtype=np.uint16).view(dt)
    else:
        values = np.array([0, 1, -1, np.inf, -np.inf, np.nan, 3.4e38, -3.4e38, 1e-45], dt)
    ok = np.isfinite(values.astype(np.float32))
    for block in range(0, values.size, 64):  # a block is finite iff all its patterns are
        assert all_finite(values[block:block + 64]) == ok[block:block + 64].all()
    for i in np.flatnonzero(~ok)[:: max(1, (~ok).sum() // 50)]:
        x = np.zeros((2, 3, 4), dt)
        x[1, 2, 3] = values[i]
        assert not all_finite(x[:, :, 1:])  # strided, like a buffer's view of SRAM
    assert all_finite(np.zeros((0, 3), dt))


def test_persistent_buffers_must_end_where_they_started():
    lay = Layout((4, 4), (2, 1), split_rows(2))
    b = region((2, 1))
    w = b.buffer("w", lay.tile, "f32", layout=lay, persistent=True)
    b.shift(w, axis=0, by=1)
    with pytest.raises(SimulationError, match="persistent buffer w ends the program rotated"):
        run([b], {})


def test_overlapping_buffers_really_share_memory():
    """SRAM is bytes: two buffers at the same offset alias (the verifier forbids building it)."""
    mem = RegionMemory("r", (1, 1), 1024)
    mem.reserve(64)
    b = RegionBuilder("r", "test", (1, 1))
    v1 = b.buffer("a", (2, 2), "f32")
    v2 = b.buffer("b", (2, 2), "f32")
    b.allocate()
    ops = [v.owner for v in (v1, v2)]
    ops[1].properties["offset"] = ops[0].properties["offset"]
    x, y = mem.bind(ops[0]), mem.bind(ops[1])
    x.view[...] = 5.0
    assert (y.view == 5.0).all()


def test_a_cached_conversion_sees_writes_to_overlapping_buffers():
    """A narrow buffer's fp32 conversion is kept until its bytes change, also when they change
    through another buffer declared over them (here half of them)."""
    mem = RegionMemory("r", (1, 2), 1024)
    mem.reserve(64)
    b = RegionBuilder("r", "test", (1, 2))
    v1 = b.buffer("a", (2, 4), "f16")
    v2 = b.buffer("b", (2, 2), "f16")
    v3 = b.buffer("c", (2, 2), "f16")
    b.allocate()
    ops = [v.owner for v in (v1, v2, v3)]
    ops[1].properties["offset"] = IntegerAttr(ops[0].offset_bytes + 8, i64)  # a's second row
    x, y, z = (mem.bind(o) for o in ops)
    x.view[...] = 1.0
    x.home.touch()
    assert (x.f32() == 1.0).all()
    y.view[...] = 2.0
    y.home.touch()
    assert (x.f32()[:, :, 1] == 2.0).all() and (x.f32()[:, :, 0] == 1.0).all()
    before = x.f32()
    z.view[...] = 3.0  # disjoint bytes: the conversion is kept
    z.home.touch()
    assert x.f32() is before


def test_a_bundle_whose_routes_clash_on_a_router_is_refused():
    from wsc.machine.colors import color_violations

    placement = {"colors": {"total": 24, "reserved": 4}, "edges": [
        {"src": "a", "dst": "b", "group": 0, "color": 5, "path": [[0, 0], [3, 0]]},
        {"src": "c", "dst": "d", "group": 1, "color": 5, "path": [[2, 1], [2, 0], [2, -1]]},
    ]}
    stats, problems = color_violations(placement, 24)
    assert problems and "router (2, 0)" in problems[0] and "a->b" in problems[0]
    placement["edges"][1]["color"] = 6
    stats, problems = color_violations(placement, 24)
    assert not problems and stats["max_colors_per_router"] == 2
    placement["colors"]["reserved"] = 23  # one free color for two trees at (2, 0)
    placement["edges"][0]["color"] = placement["edges"][1]["color"] = 23
    assert "only 1 of 24 are free" in color_violations(placement, 24)[1][0]
