"""The three dialects: text round-trips, and the verifiers state each level's invariant."""

from __future__ import annotations

import pytest
from xdsl.dialects.builtin import IntegerAttr, i64
from xdsl.utils.exceptions import VerifyException

from backend import lower_graph
from graphs import gpt2_block_graph, llama_block_graph
from wsc.errors import IRError
from wsc.ir import parse_module, print_module
from wsc.ir.kernel import SRAM_BUDGET_ATTR, KernelOp
from wsc.ir.tile import BufferOp, RegionOp
from wsc.passes.kernels import LowerCtx
from wsc.passes.partition import partition
from wsc.passes.plan import plan
from wsc.runtime_sim.scheduler import estimate_region
from wsc.machine.target import load_target


def round_trips(module) -> str:
    text = print_module(module)
    assert print_module(parse_module(text)) == text
    return text


@pytest.mark.parametrize("build", [gpt2_block_graph, llama_block_graph])
def test_every_level_round_trips(build):
    graph, weights = build(16)
    round_trips(graph)
    km = partition(graph)
    t = load_target("mesh:32x32")
    km.attributes[SRAM_BUDGET_ATTR] = IntegerAttr(t.buffer_budget, i64)
    plan(km, LowerCtx("f16", 16, 32, weights), t, estimate_region, strategy="min-pes")
    text = round_trips(km)
    assert "wsc.kernel.attention" in text and "grid = array<i64:" in text
    tm, _, _ = lower_graph(graph, weights, dtype="f16", chunk=8)
    text = round_trips(tm)
    assert "#wsc.tile.layout<" in text and "wsc.tile.loop" in text
    assert "weight = " in text  # weights referenced by name, never inline
    assert "dense<" not in text


def test_kernel_verifier_refuses_a_footprint_over_budget():
    graph, weights = gpt2_block_graph(16)
    km = partition(graph)
    km.attributes[SRAM_BUDGET_ATTR] = IntegerAttr(1000, i64)
    k = next(op for op in km.walk() if isinstance(op, KernelOp))
    k.properties["sram_bytes"] = IntegerAttr(1200, i64)
    with pytest.raises(VerifyException, match=r"kernel wte needs 1200 bytes of SRAM per PE, the budget is 1000"):
        km.verify()


def _first_region(graph, weights):
    tm, _, _ = lower_graph(graph, weights)
    return tm, next(op for op in tm.walk() if isinstance(op, RegionOp))


def test_tile_verifier_refuses_overlapping_and_oversized_buffers():
    tm, region = _first_region(*gpt2_block_graph(16))
    a, b = region.buffers()[:2]
    b.properties["offset"] = IntegerAttr(a.offset_bytes, i64)
    with pytest.raises(VerifyException, match="overlap"):
        tm.verify()
    b.properties["offset"] = IntegerAttr(10**6, i64)
    with pytest.raises(VerifyException, match="past the per-PE budget"):
        tm.verify()


def test_tile_verifier_refuses_a_layout_for_another_grid():
    tm, region = _first_region(*gpt2_block_graph(16))
    text = print_module(tm)
    r, c = region.grid
    bad = text.replace(f"on [{r}, {c}]", f"on [{r + 1}, {c}]", 1)
    with pytest.raises(IRError):
        parse_module(bad)


def test_parse_errors_name_the_file():
    with pytest.raises(IRError, match="broken.mlir"):
        parse_module("builtin.module { wsc.tile.nonsense }", "broken.mlir")


def test_buffers_declare_what_they_hold():
    tm, region = _first_region(*gpt2_block_graph(16))
    table = next(b for b in region.buffers() if b.sym.data == "table")
    assert isinstance(table, BufferOp) and table.persistent is not None
    assert table.weight.data == f"{region.sym_name.data}/table"


def test_xdsl_opt_knows_the_dialects_and_passes(tmp_path):
    """The dialects and passes are registered through xDSL's universe entry point."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    graph, _ = gpt2_block_graph(8)
    f = tmp_path / "g.mlir"
    f.write_text(print_module(graph))
    exe = shutil.which("xdsl-opt", path=str(Path(sys.executable).parent))
    r = subprocess.run([exe, str(f), "-p", "partition"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "wsc.kernel.linear" in r.stdout
