"""Channels (runtime_sim/channels.py): a transfer is charged for what its receiver needs,
messages wait in bounded FIFOs in the receiver's SRAM, a full FIFO holds its sender back, and a
replicated result that is not the same on every holder is caught when it is sent (issue 5)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from test_runtime_sim import TARGET, io_region, run
from wsc.errors import SimulationError
from wsc.ir import tile as t
from wsc.ir.layout import REPLICATED, Layout, skewed, split_cols, split_rows
from wsc.machine.cost import CostModel
from wsc.passes.lower_tile import HOST, Edge, fifo_depths
from wsc.passes.tile_builder import Inbound, RegionBuilder

COST = CostModel(TARGET)
rng = np.random.default_rng(3)


def pair(recv_layout: Layout, *, depth: int = 1, src_layout: Layout | None = None):
    """A 1x1 sender that forwards what the host gives it to a receiver laid out as given."""
    g = recv_layout.shape
    src_layout = src_layout or Layout(g, (1, 1))
    a, x = io_region(src_layout.grid, src_layout, "f16")
    a.outputs = {0: ["c"]}
    a.send(x)
    b = RegionBuilder("s", "test", recv_layout.grid, inputs={("input", 0): Inbound("c", depth=depth)},
                      outputs={0: ["out"]})
    y = b.buffer("y", recv_layout.tile, "f16", layout=recv_layout)
    b.recv(y, ("input", 0))
    b.send(y)
    return a, b


def arrival(recv_layout: Layout) -> float:
    """Cycles from the send to the receiver having its data, from a region with a row of PEs
    per matrix row."""
    m = recv_layout.shape[0]
    a, b = pair(recv_layout, src_layout=Layout(recv_layout.shape, (m, 1), split_rows(m)))
    res = run([a, b], {"in": rng.standard_normal(recv_layout.shape).astype(np.float32)},
              extra_channels=[("c", "r", "s")], trace=True)
    sent = next(e.start for e in res.events if e.region == "r" and e.cat == "send")
    got = next(e.start for e in res.events if e.region == "s" and e.name == "recv" and e.cat == "fabric")
    return got - sent


def test_every_row_of_a_replicated_or_skewed_receiver_is_delivered_its_blocks():
    """A decode GEMV's input is replicated over rows and skewed over columns: each of the 8
    rows holds all of x, so each row's link carries all of it, not 1/8 of it."""
    K = 2048  # fp16: 4096 bytes, 1024 wavelets
    skew = Layout((1, K), (8, 8), REPLICATED, skewed(8))
    assert skew.busiest_row == K
    assert arrival(skew) >= K * 2 / TARGET.wavelet_bytes
    # tokens split over the rows: each row needs an eighth, and the transfer is that much faster
    split = Layout((8, K), (8, 8), split_rows(8), split_cols(8))
    assert split.busiest_row == K
    assert arrival(split) < arrival(Layout((8, K), (8, 8), REPLICATED, split_cols(8))) / 4


def test_the_transfer_formula():
    # lane bound: 4096 bytes on one row; the sender's 2 links carry 8192 distinct bytes
    assert COST.transfer(4096, 8192, 2, 10, traverse=3) == 2 * 2 + 13 + 1024
    # sender bound: 8192 bytes over one link
    assert COST.transfer(4096, 8192, 1, 10) == 2 * 2 + 10 + 2048
    assert COST.transfer(4096, 8192, 2, 10, contention=2.0) == 2 * 2 + 10 + 2048


def test_a_fifo_is_a_buffer_of_the_receiver():
    lay = Layout((6, 10), (2, 2), split_rows(2), split_cols(2))
    _, b = pair(lay, depth=3)
    fifo = next(op for op in b.finish((0, 0)).buffers() if op.fifo is not None)
    assert fifo.fifo.data == "c" and fifo.dims == (3, 3, 5) and fifo.dtype_str == "f16"
    assert b.allocate() >= fifo.nbytes + 3 * 5 * 2  # the slots and the destination


def slow_consumer(depth: int, messages: int = 4):
    """A producer forwarding `messages` chunks to a consumer that computes for a while on each."""
    lay = Layout((4, 64), (1, 1))
    a = RegionBuilder("r", "test", (1, 1), inputs={("input", 0): Inbound("in", depth=messages)},
                      outputs={0: ["c"]})
    x = a.buffer("x", lay.tile, "f32", layout=lay)
    with a.loop(messages):
        a.recv(x, ("input", 0))
        a.send(x)
    b = RegionBuilder("s", "test", (1, 1), inputs={("input", 0): Inbound("c", depth=depth)},
                      outputs={0: ["out"]})
    y = b.buffer("y", lay.tile, "f32", layout=lay)
    with b.loop(messages):
        b.recv(y, ("input", 0))
        for _ in range(20):
            b.op(t.UnaryOp, [y, y], fn="tanh")
        b.send(y)
    chunks = [rng.standard_normal((4, 64)).astype(np.float32) for _ in range(messages)]
    return run([a, b], {"in": chunks}, extra_channels=[("c", "r", "s")], trace=True), chunks


def test_a_full_fifo_holds_its_sender_back():
    shallow, chunks = slow_consumer(depth=1)
    deep, _ = slow_consumer(depth=4)
    want = np.concatenate(chunks)
    for _ in range(20):
        want = np.tanh(want)
    np.testing.assert_allclose(shallow.outputs["out"], want, rtol=1e-5)
    sends = [e for e in shallow.events if e.region == "r" and e.cat == "send"]
    takes = [e for e in shallow.events if e.region == "s" and e.name == "recv" and e.cat == "fabric"]
    # message n + 1 leaves only once the consumer has taken message n out of the one slot
    for n in range(1, len(sends)):
        assert sends[n].start >= takes[n - 1].start + takes[n - 1].dur
    # with room for every chunk the producer is done long before
    assert deep.regions["r"].end < shallow.regions["r"].end / 2
    assert deep.cycles == pytest.approx(shallow.cycles, rel=0.05)  # the consumer sets the pace


def test_a_collective_that_leaves_holders_behind_fails_when_its_result_is_sent(monkeypatch):
    from wsc.runtime_sim import fabric

    real = fabric.tree_allreduce

    def root_row_only(state, axis, *args):  # the broadcast half forgotten
        out = real(state, axis, *args)
        return tuple(np.where(np.arange(s.shape[axis]).reshape(
            [-1 if i == axis else 1 for i in range(s.ndim)]) == 0, o, s) for o, s in zip(out, state))

    monkeypatch.setattr(fabric, "tree_allreduce", root_row_only)
    lay = Layout((1, 6), (4, 2), REPLICATED, split_cols(2))
    b, x = io_region((4, 2), Layout((4, 6), (4, 2), split_rows(4), split_cols(2)))
    y = b.buffer("y", lay.tile, "f32", layout=lay)
    b.op(t.CopyOp, [x, y])
    b.allreduce(y, axis=0)
    b.send(y)
    with pytest.raises(SimulationError, match="a collective left it behind"):
        run([b], {"in": rng.standard_normal((4, 6)).astype(np.float32)})


def test_fifo_depths_cover_the_longest_path_a_residual_skips():
    names = ["emb", "norm", "attn", "proj"]
    kg = SimpleNamespace(kernels=[SimpleNamespace(kernel_name=n) for n in names], edges=[
        Edge(HOST, 0, "emb", ("input", 0), None), Edge("emb", 0, "norm", ("input", 0), None),
        Edge("norm", 0, "attn", ("input", 0), None), Edge("attn", 0, "proj", ("input", 0), None),
        Edge("emb", 0, "proj", ("extra", 0), None)])
    depth = fifo_depths(kg, chunks=8)
    assert [depth[e] for e in kg.edges] == [1, 1, 1, 1, 3]
    assert fifo_depths(kg, chunks=2)[kg.edges[-1]] == 2  # never more than there are chunks


def test_estimating_checks_sram_too():
    from xdsl.dialects.builtin import IntegerAttr, ModuleOp, StringAttr, i64
    from xdsl.ir import Block, Region

    from backend import manifest_for
    from wsc.runtime_sim.simulator import Simulator

    lay = Layout((1, 4), (1, 1))
    b, x = io_region((1, 1), lay)
    b.buffer("big", (TARGET.buffer_budget // 4,), "f32")
    b.send(x)
    chans = [t.ChannelOp.create(properties={"sym_name": StringAttr(n), "src": StringAttr(s),
                                            "dst": StringAttr(d), "bytes": IntegerAttr(16, i64)})
             for n, s, d in (("in", "host", "r"), ("out", "r", "host"))]
    prog = t.ProgramOp.create(properties={"sym_name": StringAttr("prefill"),
                                          "phase": StringAttr("prefill"),
                                          "tokens": IntegerAttr(1, i64)},
                              regions=[Region(Block([b.finish((0, 0)), *chans]))])
    with pytest.raises(SimulationError, match="SRAM overflow in region r"):
        Simulator(ModuleOp([prog]), manifest_for(TARGET, "f32", 1, 1, 4), {}, functional=False)
