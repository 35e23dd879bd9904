"""Layer folding (issue 9): kernels of consecutive layers stacked on one rectangle of PEs, their
buffers at disjoint offsets and their programs time-multiplexed, give the same numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from xdsl.utils.exceptions import VerifyException

from models import make_checkpoint
from wsc.driver import CompileOptions, Pipeline
from wsc.golden import reference_generate, reference_logits
from wsc.ir import tile as t
from wsc.numerics import compare
from wsc.runtime_sim.simulator import Simulator

pytestmark = pytest.mark.slow


def compile_folded(tmp_path, arch: str, fold: int):
    ckpt = make_checkpoint(arch, tmp_path / arch, layers=4)
    out = tmp_path / f"{arch}-{fold}.wsc"
    Pipeline(CompileOptions(checkpoint=ckpt, output=out, target="mesh:32x32", dtype="fp32",
                            seq_len=16, max_seq=32, fold=fold, place_time=2.0)).run()
    return ckpt, out


def stacks(sim: Simulator) -> dict[str, list[t.RegionOp]]:
    out: dict[str, list] = {}
    for r in sim.programs["decode"].regions:
        if r.op.stack is not None:
            out.setdefault(r.op.stack.data, []).append(r.op)
    return out


@pytest.mark.parametrize("arch", ["gpt2", "bigcode", "llama", "qwen2"])
def test_folded_models_match_torch(tmp_path, arch):
    """Four layers stacked two deep: fp32 logits within 1e-5 of torch and the greedy tokens
    of a plain greedy loop."""
    ckpt, bundle = compile_folded(tmp_path, arch, 2)
    sim = Simulator.open(bundle)
    st = stacks(sim)
    assert st and all(len(ms) == 2 for ms in st.values()), {s: len(m) for s, m in st.items()}
    for members in st.values():  # one rectangle, bytes apart
        assert len({(tuple(m.origin.get_values()), m.grid) for m in members}) == 1
    ids = np.random.default_rng(3).integers(0, 256, 16)
    logits, _ = sim.prefill(ids)
    assert compare(logits, reference_logits(ckpt, ids)).rel_l2_err <= 1e-5
    assert sim.generate(ids, 8).tokens == reference_generate(ckpt, ids, 8)
    placement = json.loads((bundle / "placement.json").read_text())
    assert set(placement["stacks"]) == set(st)


def test_members_of_a_stack_run_one_at_a_time(tmp_path, monkeypatch):
    """Sequencing is charged: with the stack's PEs free for every member at once the same
    prefill would be faster (the chunks of consecutive layers overlap)."""
    from wsc.runtime_sim import frame

    _, bundle = compile_folded(tmp_path, "llama", 4)
    sim = Simulator.open(bundle, functional=False)
    shared = sim.estimate("prefill").cycles
    monkeypatch.setattr(frame.Frame, "turn", lambda self, start: start)
    assert sim.estimate("prefill").cycles < shared


def test_stacked_regions_may_not_hold_the_same_bytes(tmp_path):
    _, bundle = compile_folded(tmp_path, "gpt2", 2)
    sim = Simulator.open(bundle, functional=False)
    module = sim.programs["decode"].regions[0].op.parent_op().parent_op()
    a, b = next(iter(stacks(sim).values()))
    from xdsl.dialects.builtin import IntegerAttr, i64

    for prog in t.programs(module).values():
        for r in prog.regions_():
            if r.sym_name.data == b.sym_name.data:
                for buf in r.buffers():
                    buf.properties["offset"] = IntegerAttr(0, i64)
    with pytest.raises(VerifyException, match="hold the same bytes"):
        t.verify_on_mesh(module, 32, 32)


def test_fold_is_checked():
    from wsc.errors import UsageError

    with pytest.raises(UsageError, match="--fold"):
        CompileOptions(checkpoint=None, output="x.wsc", config="c.json", no_weights=True,
                       fold=-1).validate()


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_fp16_accumulation_stays_within_the_fp16_tolerances(tmp_path, arch):
    """--accumulate fp16 (fp16 FMACs, as WaferLLM): fp16 storage tolerances still hold, and
    the accumulators really are fp16 (the logits differ from fp32 accumulation)."""
    ckpt = make_checkpoint(arch, tmp_path / arch, layers=2)
    ids = np.random.default_rng(4).integers(0, 256, 16)
    ref = reference_logits(ckpt, ids)
    got = {}
    for acc in ("fp32", "fp16"):
        out = tmp_path / f"{acc}.wsc"
        Pipeline(CompileOptions(checkpoint=ckpt, output=out, target="mesh:32x32", dtype="fp16",
                                seq_len=16, max_seq=24, accumulate=acc, place_time=2.0)).run()
        got[acc], _ = Simulator.open(out).prefill(ids)
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["options"]["accumulate"] == {"fp32": "f32", "fp16": "f16"}[acc]
    agree = compare(got["fp16"], ref)
    assert agree.rel_l2_err <= 1e-2 and agree.top1_agree >= 0.95, agree
    assert not np.array_equal(got["fp16"], got["fp32"])


def test_a_replan_forgets_the_previous_stacks(tmp_path, monkeypatch):
    """The driver replans with less of the mesh when placement finds no room: stacks of the
    first plan must not survive into the second (they sized SRAM for other grids)."""
    import wsc.passes.plan as planmod
    from wsc.ir.kernel import KernelOp

    ckpt = make_checkpoint("llama", tmp_path / "l", layers=4)
    seen = []
    real = planmod.plan

    def twice(kmodule, ctx, target, estimate, **kw):
        real(kmodule, ctx, target, estimate, **kw)  # the plan placement could not place
        out = real(kmodule, ctx, target, estimate, **{**kw, "fold": 1})
        seen.extend(op for op in kmodule.walk() if isinstance(op, KernelOp))
        return out

    monkeypatch.setattr(planmod, "plan", twice)
    Pipeline(CompileOptions(checkpoint=ckpt, output=tmp_path / "k.mlir", target="mesh:32x32",
                            dtype="fp32", seq_len=16, max_seq=32, fold=2,
                            compile_to="kernel")).run()
    assert seen and all(k.stack is None for k in seen)
