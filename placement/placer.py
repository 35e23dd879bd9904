"""`place`: the placement stage from kernel graph to routed, colored placement (DESIGN §6).

Reads top to bottom:

1. check the input (and that it can fit at all: numbers in the error);
2. the baselines, rowmajor and snake (greedy.py: skyline packers in dataflow order), costed
   with the same objective;
3. the lower bound from the cycle decomposition (bounds.py), whose pieces also become cuts;
4. CP-SAT: for a deep stack of identical blocks, the block template (one shape per role)
   tiled in snake order around the kernels outside the blocks, seams refined (tiling.py);
   otherwise, or when no tiling fits, the whole graph on the whole mesh (cpsat.py), warm
   started from the best baseline, as two single-worker solves side by side: every kernel
   streaming east (fast to improve) and free orientations (the real problem, whose bound
   counts), then neighbourhoods of the better one (lns.py);
5. the cheapest legal layout of all of these wins; it is routed and colored (routing.py).

Time: `time_limit` wall seconds bound the call. CP-SAT gets deterministic budgets, a share of
the wall time converted at DTIME_PER_SECOND (or DTIME_PER_SECOND_NO_LP for the bound's
LP-free models), so two runs give the same placement. `time_limit=0` disables CP-SAT
(baselines only).
"""

from __future__ import annotations

from wsc.errors import PlacementError
from wsc.placement.bounds import decomposition_bound
from wsc.placement.cpsat import DTIME_PER_SECOND, DTIME_PER_SECOND_NO_LP, Clock, Term, Window, parallel, solve
from wsc.placement.greedy import layered, rowmajor, snake
from wsc.placement.hops import hops, in_port, objective, out_port
from wsc.placement.lns import improve
from wsc.placement.result import Placement, PlacedEdge, PlacedKernel
from wsc.placement.routing import route
from wsc.placement.spec import EdgeSpec, KernelSpec, Rect, check_layout, problem_checks
from wsc.placement.tiling import find_stack, place_deep

# From 3 blocks on, tiling wins: GPT-2 with 3 blocks on 400x300 in 20 s, the whole-graph model
# stays at the snake baseline, the template reaches 0.53 of it (2 blocks: both optimal).
DEEP_MIN_BLOCKS = 3
# Share of the wall-clock limit for the lower bound. Small graphs get more: their layout
# is found quickly, proving it (free orientations) is the slow part. Deep models spend
# their time on the template instead, and their repeated components are solved once.
BOUND_SHARE = {"flat": 0.4, "deep": 0.2}
LAYERED_MAX_KERNELS = 60  # the layered warm start's shape search is quadratic in Python
FLAT_LNS_SHARE = 0.3  # of the whole-graph budget, for neighbourhoods of its best layout (lns.py)
ROUTING_RESERVE = 0.1  # of the wall-clock limit, kept for routing and coloring
# The deterministic budgets are sized to finish within `time_limit` on this class of machine;
# the wall-clock safety net fires only at WALL_SAFETY times that, so that a loaded machine
# (tests in parallel) still reproduces the same placement byte for byte.
WALL_SAFETY = 3.0


def place(kernels, edges, *, width: int, height: int, time_limit: float = 10.0, seed: int = 0,
          workers: int = 2, reserved_colors: int = 4, colors: int = 24) -> Placement:
    """Place every kernel on a `width` x `height` mesh, route and color every edge."""
    kernels, edges = list(kernels), list(edges)
    problem_checks(kernels, edges, width, height)
    if not 0 <= reserved_colors < colors:
        raise PlacementError(f"reserved_colors={reserved_colors} leaves no free color of {colors}")
    workers = max(1, int(workers))
    clock = Clock.start(max(0.0, time_limit) * WALL_SAFETY * (1 - ROUTING_RESERVE))
    budget = max(0.0, time_limit) * DTIME_PER_SECOND

    candidates: dict[str, dict[str, Rect]] = {}
    for name, packer in (("rowmajor", rowmajor), ("snake", snake)):
        rects = packer(kernels, edges, width, height)
        if rects is not None:
            candidates[name] = rects
    base_cost = {n: objective(r, edges) for n, r in candidates.items()}

    stats: dict = {"seed": seed, "workers": workers, "solve_time_limit": time_limit,
                   "bound_components": 0,
                   "bound_proven_components": 0}
    bound, status = sum(e.bytes for e in edges), "DISABLED"  # every edge is ≥ 1 hop
    if budget > 0:
        stack = find_stack(kernels, edges)
        deep = stack is not None and len(stack.blocks) >= DEEP_MIN_BLOCKS
        share = BOUND_SHARE["deep" if deep else "flat"]
        lb = decomposition_bound(kernels, edges, width, height,
                                 det_time=share * time_limit * DTIME_PER_SECOND_NO_LP,
                                 seed=seed, workers=workers, clock=clock)
        bound = max(bound, lb.value)
        stats.update(bound_components=lb.components, bound_proven_components=lb.proven,
                     deterministic_time_budget={"bound": round(share * time_limit * DTIME_PER_SECOND_NO_LP, 6),
                                                "placement": round((1 - share) * budget, 6)})
        tiled = None
        if deep:
            tiled = place_deep(stack, kernels, edges, width, height, cuts=lb.cuts,
                               det_time=(1 - share) * budget, seed=seed, workers=workers, clock=clock)
        if tiled is not None:
            candidates["template"] = tiled.rects
            status = tiled.template_status
            s = tiled.slots
            stats["tiling"] = {"axis": s.axis, "blocks_per_band": s.per, "slot": [s.height, s.width],
                               "origin": [s.x0, s.y0], "skip": s.skip,
                               "template_objective": tiled.template_cost,
                               "template_bound": tiled.template_bound,
                               "seam_windows": tiled.seam_windows, "seams_improved": tiled.seams_improved}
        else:  # not a deep stack, or its blocks found no tiling: the whole graph in one model
            left = (1 - share) * budget * (0.5 if deep else 1.0)  # a failed tiling spent up to half
            res, flat_bound = _flat(kernels, edges, width, height, candidates, lb.cuts,
                                    det_time=left, seed=seed, workers=workers, clock=clock)
            status = res.status
            bound = max(bound, flat_bound)
            if res.rects is not None:
                candidates["cpsat"] = res.rects
    if not candidates:
        need = sum(min(r * c for r, c in k.shapes) for k in kernels)
        big = max(kernels, key=lambda k: min(r * c for r, c in k.shapes))
        r, c = min(big.shapes, key=lambda s: s[0] * s[1])
        raise PlacementError(
            f"could not place {len(kernels)} kernels on the {width}x{height} mesh: they need {need} "
            f"of {width * height} PEs ({need / (width * height):.0%}), the largest is {big.name!r} "
            f"at {r} rows x {c} cols; the greedy packers ran out of room"
            + ("" if budget > 0 else " and CP-SAT is disabled (time_limit=0)"),
            hint="give CP-SAT time (time_limit > 0), reduce the partitioner's grids, or use a larger target",
        )

    # the cheapest wins; on ties the CP-SAT result, then the baselines in a fixed order
    order = ["cpsat", "template", "snake", "rowmajor"]
    method = min(candidates, key=lambda n: (objective(candidates[n], edges), order.index(n)))
    rects = candidates[method]
    check_layout(kernels, rects, width, height)
    cost = objective(rects, edges)
    bound = min(bound, cost)
    if status not in ("DISABLED", "NO_SOLUTION"):
        status = "OPTIMAL" if cost == bound else "FEASIBLE"

    routed = route(rects, edges, colors=colors, reserved_colors=reserved_colors)
    stats.update(
        method=method,
        objective=cost,
        bound=bound,
        gap=round((cost - bound) / cost, 6) if cost else 0.0,
        rowmajor_objective=base_cost.get("rowmajor"),
        snake_objective=base_cost.get("snake"),
        solver_status=status,
        time_capped=clock.capped,
        pes_used=sum(r.rows * r.cols for r in rects.values()),
        pes_available=width * height,
        total_hops=sum(hops(rects[e.src], rects[e.dst]) for e in edges),
        max_link_load_bytes=max(routed.link_load.values(), default=0),
        links_used=len(routed.link_load),
        colors_used=routed.colors_used,
        max_colors_per_router=routed.max_colors_per_router,
        flipped_kernels=sum(r.flip for r in rects.values()),
    )
    placed = {
        k.name: PlacedKernel(k.name, k.kind, (rects[k.name].x, rects[k.name].y),
                             (rects[k.name].rows, rects[k.name].cols), bool(rects[k.name].flip),
                             in_port(rects[k.name]), out_port(rects[k.name]), k.block, k.role)
        for k in kernels
    }
    placed_edges = [
        PlacedEdge(e.src, e.dst, e.bytes, e.tensor, hops(rects[e.src], rects[e.dst]), routed.order[i],
                   tuple(routed.path[i]), routed.group[i], routed.color[i], routed.max_link_load[i])
        for i, e in enumerate(edges)
    ]
    return Placement(width, height, placed, placed_edges, stats, colors, reserved_colors)


def _flat(kernels: list[KernelSpec], edges: list[EdgeSpec], width: int, height: int,
          candidates: dict[str, dict[str, Rect]], cuts, *, det_time: float, seed: int, workers: int,
          clock: Clock):
    """The whole graph in one model, warm started from the cheapest layout so far; returns
    (best solve, a bound valid with free orientations)."""
    hint = None
    if candidates:
        hint = candidates[min(candidates, key=lambda n: (objective(candidates[n], edges), n))]
    lay = layered(kernels, edges, width, height) if len(kernels) <= LAYERED_MAX_KERNELS else None
    if lay is not None and (hint is None or objective(lay, edges) < objective(hint, edges)):
        hint = lay
    terms = [Term(e.bytes, e.src, e.dst) for e in edges]
    modes = ["east", "flip"]

    solve_dt = (1 - FLAT_LNS_SHARE) * det_time

    def run(mode: str):
        east_hint = None if hint is None else {n: r._replace(flip=False) for n, r in hint.items()}
        win = Window(kernels, (0, 0, width, height), terms, hint=east_hint if mode == "east" else hint,
                     anchored=False, cuts=cuts, ports=mode)
        return solve(win, det_time=solve_dt if workers >= 2 else solve_dt / 2, seed=seed, clock=clock)

    if workers >= 2:
        east, free = parallel(run, modes, workers)
    else:  # one core: the flip model continues from the east model's layout
        east = run("east")
        if east.rects is not None and (hint is None or east.cost <= objective(hint, edges)):
            hint = east.rects
        free = run("flip")
    best = min((r for r in (free, east) if r.rects is not None), key=lambda r: r.cost, default=free)
    if free.status != "OPTIMAL" and best.rects is not None:  # neighbourhoods of the best, orientations free
        win = Window(kernels, (0, 0, width, height), terms, anchored=False, ports="flip")
        best = improve(win, best, det_time=FLAT_LNS_SHARE * det_time, seed=seed, clock=clock)
    return best, free.bound  # only the free-orientation model's bound holds for the problem
