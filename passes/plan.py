"""Choosing each kernel's PE grid (DESIGN §6, partitioning).

A candidate grid is feasible when the kernel's tile programs — actually lowered, for both
phases — fit the per-PE SRAM budget. Kernels with the same signature (kind, shapes,
attributes: every block of a transformer repeats them) are planned once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from xdsl.dialects.builtin import IntegerAttr, ModuleOp, i64

from wsc.errors import CapacityError
from wsc.ir.attrs import ints, shape_of
from wsc.ir.kernel import KernelOp
from wsc.passes.kernels import LowerCtx, algorithm, footprint


def signature(k: KernelOp) -> tuple:
    """What determines a kernel's tile program, apart from weight values and names."""
    skip = {"sym_name", "fx", "module", "grid", "sram_bytes", "weight", "bias", "gamma", "beta",
            "table", "position_table", "rope_inv_freq"}
    props = tuple(sorted((n, str(v)) for n, v in k.properties.items() if n not in skip))
    shapes = tuple(shape_of(v.type) for v in (*k.inputs, *k.extras))
    epi = tuple(op.name for op in k.epilogue.block.ops)
    return (k.name, props, shapes, epi, k.bias is not None if hasattr(k, "bias") else None)


@dataclass(frozen=True)
class Choice:
    grid: tuple[int, int]
    sram_bytes: int


def _by_area(grids: list[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    yield from sorted(grids, key=lambda rc: (rc[0] * rc[1], abs(rc[0] - rc[1]), rc))


def smallest_fit(k: KernelOp, ctx: LowerCtx, budget: int, max_side: int) -> Choice:
    """The feasible grid with the fewest PEs."""
    grids = algorithm(k).grids(k, max_side)
    last = None
    for grid in _by_area(grids):
        need = footprint(k, grid, ctx, budget)
        if need <= budget:
            return Choice(grid, need)
        last = (grid, need)
    fx, module = k.source
    grid, need = last if last else ((0, 0), 0)
    raise CapacityError(
        f"kernel {k.kernel_name} ({k.KIND} at {module or '?'}) does not fit: on its largest "
        f"grid {grid[0]}x{grid[1]} it needs {need} bytes of SRAM per PE, the budget is {budget}",
        hint="choose a larger target, a smaller --seq-len/--max-seq, or a narrower dtype",
    )


def plan(kmodule: ModuleOp, ctx: LowerCtx, budget: int, max_side: int) -> dict[str, Choice]:
    """Choose every kernel's grid and record it (`grid`, `sram_bytes`) on the kernel op."""
    memo: dict[tuple, Choice] = {}
    out: dict[str, Choice] = {}
    for k in kmodule.walk():
        if not isinstance(k, KernelOp):
            continue
        sig = signature(k)
        if sig not in memo:
            memo[sig] = smallest_fit(k, ctx, budget, max_side)
        choice = memo[sig]
        k.properties["grid"] = ints(choice.grid)
        k.properties["sram_bytes"] = IntegerAttr(choice.sram_bytes, i64)
        out[k.kernel_name] = choice
    return out
