"""Compile hand-built graphs through the backend in memory, for backend tests."""

from __future__ import annotations

from xdsl.dialects.builtin import IntegerAttr, i64

from wsc.bundle_format import CheckpointInfo, IOSpec, Manifest, ModelInfo, TargetSource
from wsc.codegen.bundle import shard_bytes
from wsc.ir.attrs import ints
from wsc.ir.kernel import SRAM_BUDGET_ATTR, KernelOp
from wsc.passes.kernels import LowerCtx
from wsc.passes.lower_tile import IDS_CHANNEL, LOGITS_CHANNEL, lower_to_tile
from wsc.passes.partition import partition
from wsc.passes.plan import plan
from wsc.machine.cost import CostModel
from wsc.runtime_sim.scheduler import estimate_region
from wsc.runtime_sim.simulator import Simulator
from wsc.machine.target import load_target


def manifest_for(target, dtype: str, seq: int, max_seq: int, vocab: int, chunk: int = 0) -> Manifest:
    def io(n):
        return ({"ids": IOSpec(IDS_CHANNEL, (n, 1), "i32")},
                {"logits": IOSpec(LOGITS_CHANNEL, (n, vocab), "f32")})

    (pi, po), (di, do) = io(chunk or seq), io(1)
    return Manifest(
        wsc_version="test", target=target, target_source=TargetSource(target.name), dtype=dtype,
        phases=("prefill", "decode"), seq_len=seq, prefill_chunk=chunk or seq,
        prefill_logits="all", max_seq=max_seq, weights=True, model=ModelInfo("test", vocab),
        inputs={"prefill": pi, "decode": di}, outputs={"prefill": po, "decode": do},
        checkpoint=CheckpointInfo("", ""))


def lower_graph(graph, weights, *, target="mesh:32x32", dtype="f32", seq=16, max_seq=32,
                grids: dict | None = None, strategy: str = "min-pes", chunk: int = 0,
                double_buffer: int = 2):
    """(tile module, shards, manifest) of a canonical graph; `grids` overrides the planner."""
    t = load_target(target)
    km = partition(graph)
    km.attributes[SRAM_BUDGET_ATTR] = IntegerAttr(t.buffer_budget, i64)
    ctx = LowerCtx(dtype, seq, max_seq, weights, chunk, cost=CostModel(t),
                   double_buffer=double_buffer)
    plan(km, ctx, t, estimate_region, strategy=strategy)
    origins, x, y, row_h = {}, 0, 0, 0
    for k in km.walk():
        if not isinstance(k, KernelOp):
            continue
        if grids and k.kernel_name in grids:
            k.properties["grid"] = ints(grids[k.kernel_name])
        r, c = k.grid_shape
        if x + c > t.usable_width:
            x, y, row_h = 0, y + row_h, 0
        origins[k.kernel_name] = (x, y)
        x, row_h = x + c, max(row_h, r)
    tm, shards = lower_to_tile(km, ctx, budget=t.buffer_budget, origins=origins)
    tm.verify()
    vocab = [a for a in km.walk() if isinstance(a, KernelOp)][-1].outputs[0].type.get_shape()[1]
    return tm, shards, manifest_for(t, dtype, seq, max_seq, vocab, chunk)


def simulator(graph, weights, **kw) -> Simulator:
    tm, shards, manifest = lower_graph(graph, weights, **kw)
    return Simulator(tm, manifest, {}, weights={s.key: shard_bytes(s) for s in shards})
