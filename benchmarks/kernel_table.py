"""Kernel table: modeled time and efficiency of the distributed GEMM and GEMV.

GEMV is `x[1, K] @ W[K, K]` (a decode step's linear layer); GEMM is `X[K, K] @ W[K, K]`
(Cannon). Both are wsc's own lowering of a linear kernel on a P x P grid, timed by the
simulator's cycle model (wsc/machine/cost.py). Efficiency is useful FMACs divided by
(cycles x PEs x FMACs per PE per cycle) for fp16 operands accumulating in fp32.

    python benchmarks/kernel_table.py [--target wse3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass

from xdsl.dialects import func
from xdsl.dialects.builtin import FloatAttr, IntegerAttr, ModuleOp, StringAttr, f64, i64
from xdsl.ir import Block, Region

from wsc.ir.attrs import ints, tensor
from wsc.ir.kernel import LinearKernel, YieldOp
from wsc.passes.kernels import LowerCtx, build_region
from wsc.runtime_sim.scheduler import estimate_region
from wsc.machine.cost import CostModel
from wsc.machine.target import load_target


@dataclass(frozen=True)
class Shape:
    """A weight's shape without its values (the lowering never reads them here)."""

    shape: tuple[int, ...]


def linear_kernel(m: int, k: int, n: int) -> LinearKernel:
    block = Block(arg_types=[tensor((m, k))])
    ep = Block(arg_types=[tensor((m, n))])
    ep.add_op(YieldOp.create(operands=[ep.args[0]]))
    op = LinearKernel.create(
        operands=[block.args[0]], result_types=[tensor((m, n))],
        properties={"sym_name": StringAttr("gemm"), "weight": StringAttr("w"),
                    "k": IntegerAttr(k, i64), "n": IntegerAttr(n, i64),
                    "operandSegmentSizes": _segments(1, 0)},
        regions=[Region(ep)],
    )
    block.add_op(op)
    block.add_op(func.ReturnOp(op.results[0]))
    ModuleOp([func.FuncOp("f", ([tensor((m, k))], [tensor((m, n))]), Region(block))])
    return op


def _segments(a: int, b: int):
    from xdsl.dialects.builtin import DenseArrayBase, i32

    return DenseArrayBase.from_list(i32, [a, b])


def measure(target, K: int, P: int, phase: str) -> dict:
    m = K if phase == "prefill" else 1
    op = linear_kernel(m, K, K)
    ctx = LowerCtx("f16", m, m, {"w": Shape((K, K))})
    b = build_region(op, (P, P), ctx, phase, budget=target.buffer_budget)
    sram = b.allocate()
    cost = CostModel(target)
    r = estimate_region(b.finish((0, 0)), cost)
    fmacs = m * K * K
    peak = P * P * target.fmacs_per_cycle("f16")
    return {
        "kernel": "GEMM" if phase == "prefill" else "GEMV", "K": K, "grid": P,
        "sram_bytes_per_pe": sram, "fits": sram <= target.buffer_budget,
        "cycles": r.cycles, "time_us": cost.seconds(r.cycles) * 1e6,
        "efficiency": fmacs / (r.cycles * peak),
        "compute_cycles": r.critical["compute"], "fabric_cycles": r.critical["fabric"],
    }


def table(target_name: str) -> list[dict]:
    t = load_target(target_name)
    full = min(t.usable_width, t.usable_height)
    rows = []
    for phase in ("decode", "prefill"):
        for K in (4096, 8192, 16384):
            for P in (360, 600, full):
                rows.append({"target": target_name, **measure(t, K, P, phase)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", action="append", help="wse3, wse2 (repeatable; default both)")
    ap.add_argument("--json", help="write the rows as JSON")
    args = ap.parse_args()
    rows = []
    t0 = time.perf_counter()
    for target in args.target or ["wse2", "wse3"]:
        rows += table(target)
    print(f"| target | kernel | K | grid | time (us) | efficiency | SRAM B/PE | compute / fabric cycles |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['target']} | {r['kernel']} | {r['K']} | {r['grid']}x{r['grid']} | "
              f"{r['time_us']:.1f} | {r['efficiency']:.1%} | {r['sram_bytes_per_pe']}"
              f"{'' if r['fits'] else ' (over)'} | {r['compute_cycles']:.0f} / {r['fabric_cycles']:.0f} |")
    print(f"\n({time.perf_counter() - t0:.1f}s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
