"""Partition planning: each kernel's PE grid (DESIGN §6).

For every kernel, candidate grids are lowered for real — both phases — and kept if the tile
programs fit the per-PE SRAM budget; each feasible candidate is then timed by the simulator's
cycle model on its own (inputs ready, outputs streamed off). Kernels with the same signature
(every transformer block repeats its kernels) are evaluated once and share one choice.

The choice is a multiple-choice knapsack solved exactly with OR-Tools CP-SAT: one grid per
kernel group, the sum of PEs within the mesh's capacity, minimising the modeled latency of a
request — one prefill plus `plan_tokens` decode steps (kernels of a decoder run one after the
other, so their times add). `strategy="min-pes"` instead takes the smallest feasible grid of
every kernel: the baseline the optimiser is measured against.

Layer folding (this amends DESIGN §4, one disjoint grid per kernel). A group's kernels — the
same kernel of consecutive layers — may be stacked `fold` deep on one rectangle: the stack's
PEs hold every member's buffers at disjoint offsets (so `fold` x a member's bytes must fit
the budget) and run the members' programs one after the other (the simulator time-multiplexes
them, scheduler.py). With one request the layers run in sequence anyway, so a stack costs
decode nothing, and it lets each kernel spread over `fold` times more PEs: a GEMV's weights
stream through more FMACs. The fold is chosen with the grid, per group, as the largest that
fits SRAM (never above `fold` when the user caps it; `fold=1` is the disjoint plan).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

from xdsl.dialects.builtin import IntegerAttr, ModuleOp, StringAttr, i64

from wsc.errors import CapacityError
from wsc.ir.attrs import ints, shape_of
from wsc.ir import graph as g
from wsc.ir.kernel import KernelOp
from wsc.passes.kernels import PHASES, LowerCtx, algorithm, build_region
from wsc.passes.lower_tile import KernelGraph, inbound
from wsc.ir.tile import RegionOp
from wsc.machine.cost import CostModel
from wsc.machine.target import Target

STRATEGIES = ("latency", "min-pes")


class RegionTiming(Protocol):
    cycles: float
    critical: dict[str, float]  # the latency along its critical path: compute, fabric, waiting


# The simulator's estimate of one region on its own (inputs ready at cycle 0, results streamed
# off), given to the planner by the driver: the compiler imports nothing from runtime_sim.
Estimator = Callable[[RegionOp, CostModel, int], RegionTiming]


def signature(k: KernelOp) -> tuple:
    """What determines a kernel's tile program, apart from weight values and names."""
    skip = {"sym_name", "fx", "module", "grid", "sram_bytes", "origin", "weight", "bias",
            "gamma", "beta", "table", "position_table", "rope_inv_freq"}
    props = tuple(sorted((n, str(v)) for n, v in k.properties.items() if n not in skip))
    presence = tuple(n for n in ("bias", "beta", "position_table", "rope_inv_freq") if n in k.properties)
    shapes = tuple(shape_of(v.type) for v in (*k.inputs, *k.extras))
    epi = tuple(op.name for op in k.epilogue.block.ops)
    return (k.name, props, presence, shapes, epi)


@dataclass(frozen=True)
class Candidate:
    grid: tuple[int, int]
    sram_bytes: int
    prefill_cycles: float
    decode_cycles: float
    # (compute, communication) cycles on each phase's own critical path
    prefill_split: tuple[float, float] = (0.0, 0.0)
    decode_split: tuple[float, float] = (0.0, 0.0)

    @property
    def pes(self) -> int:
        return self.grid[0] * self.grid[1]

    def summary(self) -> dict:
        """What the compile log records per kernel."""
        def phase(cycles, split):
            return {"cycles": round(cycles), "compute_cycles": round(split[0]),
                    "communication_cycles": round(split[1]),
                    "bound": "compute" if split[0] >= split[1] else "communication"}

        return {"grid": list(self.grid), "pes": self.pes, "sram_bytes": self.sram_bytes,
                "prefill": phase(self.prefill_cycles, self.prefill_split),
                "decode": phase(self.decode_cycles, self.decode_split)}


@dataclass
class Group:
    """Kernels sharing one signature, and therefore one grid."""

    kernels: list[KernelOp]
    feasible: list[Candidate] = field(default_factory=list)  # every candidate that fits
    candidates: list[Candidate] = field(default_factory=list)  # the Pareto-optimal ones
    choice: Candidate | None = None
    folds: dict[tuple[int, int], int] = field(default_factory=dict)  # grid -> its fold

    @property
    def fold(self) -> int:
        """Kernels per stack with the chosen grid."""
        return self.folds.get(self.choice.grid, 1) if self.choice else 1

    def stacks(self, c: Candidate) -> int:
        """Rectangles the group needs with candidate `c`."""
        return -(-len(self.kernels) // self.folds.get(c.grid, 1))

    def alternatives(self, plan_tokens: int, *, slack: float = 0.1, limit: int = 3) -> list[Candidate]:
        """Other grids about as good as the choice (placement may prefer their shape)."""
        c = self.choice
        if self.fold > 1:
            return []  # a stack's grid is what its members' SRAM was sized for
        t = _time(c, plan_tokens)  # type: ignore[arg-type]
        near = [a for a in self.feasible if a.grid != c.grid  # type: ignore[union-attr]
                and a.pes <= c.pes * (1 + slack) and _time(a, plan_tokens) <= t * (1 + slack)]  # type: ignore[union-attr]
        return sorted(near, key=lambda a: (_time(a, plan_tokens), a.grid))[:limit]


def fanout(k: KernelOp) -> dict[int, list[str]]:
    """One send per reader of each result (through column slices), as the program will have."""
    def readers(v) -> int:
        n = 0
        for use in v.uses:
            n += readers(use.operation.results[0]) if isinstance(use.operation, g.SliceOp) else 1
        return n

    return {i: [f"{k.kernel_name}.out{i}.{j}" for j in range(max(1, readers(r)))]
            for i, r in enumerate(k.outputs)}


@dataclass(frozen=True)
class Sizing:
    """Everything a kernel's tile program depends on besides its grid: the lowering context,
    the SRAM budget, its operands' channels (with their FIFO depths) per phase, and one send
    per reader of each result. Lowering with it is what the planner measures."""

    ctx: LowerCtx
    budget: int
    inputs: dict[str, dict]  # phase -> slot -> Inbound
    outputs: dict[int, list[str]]

    def region(self, k: KernelOp, grid: tuple[int, int], phase: str):
        return build_region(k, grid, self.ctx, phase, budget=self.budget,
                            inputs=self.inputs[phase], outputs=self.outputs)

    def footprint(self, k: KernelOp, grid: tuple[int, int]) -> int:
        """Bytes per PE the kernel needs on `grid` (the larger of its two phases)."""
        return max(self.region(k, grid, p).allocate() for p in PHASES)


def evaluate(k: KernelOp, grid: tuple[int, int], sizing: Sizing, cost: CostModel,
             estimate: Estimator) -> Candidate | None:
    """Lower `k` on `grid` for both phases and time it; None if it does not fit SRAM."""
    need, cycles, split = 0, {}, {}
    for phase in PHASES:
        b = sizing.region(k, grid, phase)
        need = max(need, b.allocate())
        if need > sizing.budget:
            return None
        pos0 = sizing.ctx.seq_len if phase == "decode" else 0  # decode right after the prompt
        r = estimate(b.finish((0, 0)), cost, pos0)
        cycles[phase] = r.cycles
        split[phase] = (r.critical["compute"], r.critical["fabric"] + r.critical["waiting"])
    return Candidate(grid, need, cycles["prefill"], cycles["decode"], split["prefill"],
                     split["decode"])


def _area_order(grids) -> list[tuple[int, int]]:
    return sorted(set(grids), key=lambda rc: (rc[0] * rc[1], abs(rc[0] - rc[1]), rc))


def candidates(k: KernelOp, sizing: Sizing, cost: CostModel, estimate: Estimator, *,
               exhaustive: bool) -> list[Candidate]:
    """Feasible candidates. Without `exhaustive`, only the smallest feasible grid (and the
    ladder step that found it)."""
    target = cost.target
    grids = [g for g in algorithm(k).grids(k, target.usable_height, target.usable_width)
             if g[0] <= target.usable_height and g[1] <= target.usable_width]
    out = []
    smallest = None
    for grid in _area_order(grids):
        if smallest is not None and not exhaustive:
            break
        c = evaluate(k, grid, sizing, cost, estimate)
        if c is None:
            continue
        smallest = smallest or c
        out.append(c)
    if not out:
        raise _does_not_fit(k, grids, sizing)
    # the candidate list is a coarse ladder: find the truly smallest grid that fits near it
    tight = shrink(k, smallest.grid, grids, sizing)
    if tight != smallest.grid:
        out.append(evaluate(k, tight, sizing, cost, estimate))  # type: ignore[arg-type]
    return out


def shrink(k: KernelOp, grid: tuple[int, int], grids: list[tuple[int, int]],
           sizing: Sizing) -> tuple[int, int]:
    """Binary-search each grid extent down to the smallest that still fits SRAM (the
    footprint falls as the grid grows), among the grids the kernel's algorithm allows."""
    allows = getattr(algorithm(k), "allows", lambda k, g: True)

    def fits(g: tuple[int, int]) -> bool:
        return allows(k, g) and sizing.footprint(k, g) <= sizing.budget

    def smallest(values: list[int], make) -> int:  # fits(make(values[-1])) holds
        lo, hi = -1, len(values) - 1
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if fits(make(values[mid])) else (mid, hi)
        return values[hi]

    r, c = grid
    if all(a == b for a, b in grids):  # square kernels stay square
        below = max([g[0] for g in grids if g[0] < r], default=0)
        p = smallest(list(range(below + 1, r + 1)), lambda v: (v, v))
        return (p, p)
    below_r = max([g[0] for g in grids if g[0] < r and g[1] == c], default=0)
    r = smallest([v for v in range(below_r + 1, r + 1) if allows(k, (v, c))] or [r], lambda v: (v, c))
    below_c = max([g[1] for g in grids if g[1] < c and g[0] == grid[0]], default=0)
    c = smallest([v for v in range(below_c + 1, c + 1) if allows(k, (r, v))] or [c], lambda v: (r, v))
    return (r, c)


def pareto(cands: list[Candidate], plan_tokens: int = 128,
           stacks: Callable[[Candidate], int] = lambda c: 1) -> list[Candidate]:
    """Drop candidates that another one beats on both PEs (`stacks(c)` rectangles of them)
    and modeled time."""
    cands = sorted(cands, key=lambda c: (stacks(c) * c.pes, _time(c, plan_tokens)))
    out, best = [], math.inf
    for c in cands:
        t = _time(c, plan_tokens)
        if t < best:
            out.append(c)
            best = t
    return out


def _time(c: Candidate, plan_tokens: int) -> float:
    return c.prefill_cycles + plan_tokens * c.decode_cycles


def _does_not_fit(k: KernelOp, grids, sizing: Sizing) -> CapacityError:
    fx, module = k.source
    budget = sizing.budget
    largest = max(grids, key=lambda g: g[0] * g[1]) if grids else (1, 1)
    need = sizing.footprint(k, largest)
    return CapacityError(
        f"kernel {k.kernel_name} ({k.KIND} at {module or '?'}) does not fit: on its largest "
        f"grid, {largest[0]}x{largest[1]} PEs, it needs {need} bytes of SRAM per PE; the budget "
        f"is {budget}",
        hint="choose a larger target, a smaller --seq-len/--max-seq, or a narrower --dtype",
    )


def min_pes(groups: list[Group]) -> int:
    return sum(min(g.stacks(c) * c.pes for c in g.candidates) for g in groups)


def fold_options(g: Group, budget: int, fold: int | None) -> None:
    """Each feasible candidate's fold: the deepest stack of it that fits `budget` (at most
    `fold`, when given); a candidate that cannot be stacked `fold` deep when `fold` is forced
    is dropped."""
    n = len(g.kernels)
    keep = []
    for c in g.feasible:
        deepest = max(1, min(n, budget // max(1, c.sram_bytes)))
        f = deepest if fold is None else min(fold, n)
        if f > deepest:
            continue
        g.folds[c.grid] = f
        keep.append(c)
    g.feasible = keep


def capacity(groups: list[Group], target: Target, fraction: float) -> int:
    """PEs the planner may hand out: `fraction` of the mesh, leaving placement room to pack,
    or — for models that need more — their minimum plus 5%, up to 90% of the mesh."""
    need, mesh = min_pes(groups), target.pe_count
    cap = max(int(mesh * fraction), min(int(need * 1.05), int(mesh * max(fraction, 0.9))))
    if need > cap:
        raise CapacityError(
            f"the model needs {need:,} PEs at least (every kernel on its smallest grid that fits "
            f"{target.buffer_budget} bytes of SRAM per PE) but {target.name} has {mesh:,} "
            f"({need / mesh:.0%}; placement needs some of the mesh free to pack rectangles)",
            hint="choose a larger target, a narrower --dtype, or a smaller --prefill-chunk",
        )
    return cap


def select(groups: list[Group], capacity: int, plan_tokens: int, *, time_limit: float = 10.0) -> None:
    """Pick one candidate per group: minimise Σ time, Σ PEs ≤ capacity (CP-SAT, exact)."""
    from ortools.sat.python import cp_model

    from wsc.placement import interrupt

    m = cp_model.CpModel()
    scale = max(1.0, max(_time(c, plan_tokens) for g in groups for c in g.candidates) / 1e6)
    xs = []
    pes, obj = [], []
    for gi, g in enumerate(groups):
        row = [m.NewBoolVar(f"g{gi}c{ci}") for ci in range(len(g.candidates))]
        m.AddExactlyOne(row)
        xs.append(row)
        for x, c in zip(row, g.candidates):
            pes.append(g.stacks(c) * c.pes * x)
            obj.append(int(round(len(g.kernels) * _time(c, plan_tokens) / scale)) * x)
    m.Add(sum(pes) <= capacity)
    m.Minimize(sum(obj))
    for row in xs:  # hint: smallest grids (always feasible)
        for i, x in enumerate(row):
            m.AddHint(x, i == 0)
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = 0
    solver.parameters.max_deterministic_time = time_limit
    solver.parameters.catch_sigint_signal = False  # Ctrl-C stays Python's, as in placement
    status = interrupt.solve(solver, m)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        for g in groups:
            g.choice = g.candidates[0]
        return
    for g, row in zip(groups, xs):
        g.choice = next(c for c, x in zip(g.candidates, row) if solver.Value(x))


def plan(kmodule: ModuleOp, ctx: LowerCtx, target: Target, estimate: Estimator, *,
         strategy: str = "latency", capacity_fraction: float = 0.7,
         plan_tokens: int = 128, fold: int | None = None) -> dict[str, Planned]:
    """Choose every kernel's grid and fold and record them (`grid`, `sram_bytes`, `stack`) on
    the kernel ops. `fold=None` lets the planner choose; `min-pes` never folds."""
    if strategy == "min-pes":
        fold = 1
    cost = CostModel(target)
    ctx = replace(ctx, cost=cost)
    kg = KernelGraph.of(kmodule)
    inputs = {phase: inbound(kg, ctx, phase) for phase in PHASES}
    groups: dict[tuple, Group] = {}
    sizings: dict[tuple, Sizing] = {}
    for k in kg.kernels:
        k.properties.pop("stack", None)  # a replan (placement found no room) starts afresh
        name = k.kernel_name
        ins = {phase: inputs[phase][name] for phase in PHASES}
        # kernels alike but for how deep their FIFOs are size their SRAM apart
        depths = tuple(tuple(sorted((s, i.depth) for s, i in ins[p].items())) for p in PHASES)
        key = (signature(k), depths)
        groups.setdefault(key, Group([])).kernels.append(k)
        sizings.setdefault(key, Sizing(ctx, target.buffer_budget, ins, fanout(k)))
    for key, g in groups.items():
        g.feasible = candidates(g.kernels[0], sizings[key], cost, estimate,
                                exhaustive=strategy == "latency")
        fold_options(g, target.buffer_budget, fold)
        if not g.feasible:
            k = g.kernels[0]
            raise CapacityError(
                f"kernel {k.kernel_name} cannot be stacked {fold} deep: {fold} copies of it "
                f"exceed {target.buffer_budget} bytes per PE on every grid",
                hint="choose a smaller --fold, or leave it to the planner")
        g.candidates = pareto(g.feasible, plan_tokens, g.stacks)
    glist = list(groups.values())
    cap = capacity(glist, target, capacity_fraction)
    if strategy == "latency":
        select(glist, cap, plan_tokens)
    else:
        for g in glist:
            g.choice = g.candidates[0]
    out: dict[str, Planned] = {}
    for g in glist:
        alts = g.alternatives(plan_tokens) if strategy == "latency" else []
        for i, k in enumerate(g.kernels):
            set_grid(k, g.choice)  # type: ignore[arg-type]
            stack = None
            head = i - i % g.fold  # consecutive layers share a stack, named after its first
            if len(g.kernels[head:head + g.fold]) > 1:
                stack = g.kernels[head].kernel_name
                k.properties["stack"] = StringAttr(stack)
            out[k.kernel_name] = Planned(g.choice, alts, stack)  # type: ignore[arg-type]
    return out


@dataclass(frozen=True)
class Planned:
    """A kernel's grid, and near-equivalent grids placement may choose instead."""

    choice: Candidate
    alternatives: list[Candidate]
    stack: str | None = None  # the stack the kernel shares its PEs with (named after its head)

    @property
    def shapes(self) -> tuple[tuple[int, int], ...]:
        return (self.choice.grid, *(a.grid for a in self.alternatives))

    def pick(self, grid: tuple[int, int]) -> Candidate:
        return next(c for c in (self.choice, *self.alternatives) if c.grid == tuple(grid))


def set_grid(k: KernelOp, c: Candidate) -> None:
    k.properties["grid"] = ints(c.grid)
    k.properties["sram_bytes"] = IntegerAttr(c.sram_bytes, i64)
