"""A lower bound on Σ bytes × hops that holds for the whole problem: decomposition into cycles.

The objective is a sum of non-negative per-edge terms, so for any partition of the edges into
groups, Σ_groups min(cost of the group's edges, placing only the group's kernels) is a lower
bound: each group's minimum is taken over a relaxation (the other kernels and edges vanish,
the group gets the whole mesh, orientations stay free). Cost beyond one hop per edge only arises where edges close a
cycle (a residual skip, a fan-out that fans back in), so the groups are the graph's biconnected
components: a bridge costs exactly ≥ 1 hop, a cycle is solved exactly by CP-SAT (`cpsat.py`,
its proven bound is used). A component with more than `MAX_KERNELS` kernels is split further by
dropping its lightest edge (which keeps its own ≥ 1 hop) until the pieces are small.

Decoder blocks repeat, so components repeat: each distinct shape of component (same roles,
shapes and weights, up to renaming) is solved once. The per-component bounds also become cuts
in the main model (Σ over a component's terms ≥ its bound), which is what lets the main
solve's own bound mean something.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from wsc.placement.cpsat import Clock, Term, Window, parallel, solve
from wsc.placement.greedy import layered
from wsc.placement.hops import objective
from wsc.placement.spec import EdgeSpec, KernelSpec

# CP-SAT proves cycles of up to 5 kernels with free orientations in 0.1-1.5 deterministic
# seconds without its LP relaxation (2-4x slower with it: with free orientations the LP says
# little); Llama-shaped 6-kernel cycles (residual plus fan-out) did not close in 10.
MAX_KERNELS = 5


@dataclass
class Bound:
    value: int  # lower bound on Σ bytes × hops over all edges
    cuts: list[tuple[list[int], int]] = field(default_factory=list)  # (edge indices, bound)
    proven: int = 0  # components whose bound is their proven optimum
    components: int = 0


def _components(edge_ids: list[int], edges: list[EdgeSpec]) -> tuple[list[list[int]], list[int]]:
    """Split edge ids into (cycle groups of ≤ MAX_KERNELS kernels, edges that only get 1 hop)."""
    g = nx.Graph()
    for i in edge_ids:
        g.add_edge(edges[i].src, edges[i].dst)
    groups: list[list[int]] = []
    single: list[int] = []
    for comp in nx.biconnected_component_edges(g):
        pairs = {frozenset(p) for p in comp}
        ids = [i for i in edge_ids if frozenset((edges[i].src, edges[i].dst)) in pairs]
        nodes = {n for p in pairs for n in p}
        if len(pairs) == 1:
            single += ids
        elif len(nodes) <= MAX_KERNELS:
            groups.append(ids)
        else:  # drop the lightest edge (last on ties) and split again
            drop = min(reversed(ids), key=lambda i: edges[i].bytes)
            single.append(drop)
            sub_groups, sub_single = _components([i for i in ids if i != drop], edges)
            groups += sub_groups
            single += sub_single
    groups.sort(key=min)
    return groups, sorted(single)


def _signature(ids: list[int], edges: list[EdgeSpec], kernels: dict[str, KernelSpec]):
    """The component up to renaming: blocks made relative, kernels named by role."""
    names = sorted({n for i in ids for n in (edges[i].src, edges[i].dst)})
    blocks = [kernels[n].block for n in names if kernels[n].block is not None]
    base = min(blocks) if blocks else 0

    def key(n: str):
        k = kernels[n]
        ident = (0, k.block - base, k.role) if k.block is not None and k.role else (1, 0, n)
        return (ident, k.kind, k.shapes)

    order = sorted(names, key=key)
    pos = {n: j for j, n in enumerate(order)}
    sig_edges = sorted((pos[edges[i].src], pos[edges[i].dst], edges[i].bytes) for i in ids)
    return tuple(key(n) for n in order), tuple(sig_edges)


def _room(kernels: list[KernelSpec], edges: list[EdgeSpec], cost: int, width: int, height: int):
    """How wide and tall a connected layout costing at most `cost` can be.

    If no rectangle covers some g consecutive columns, some edge crosses them (the kernels are
    connected) and pays ≥ g hops for it; so the columns no rectangle covers number at most
    cost / (lightest edge), and the width is at most that plus every kernel's widest shape.
    Likewise for rows. Optimal layouts, anchored at (0, 0), fit in this box.
    """
    light = min(e.bytes for e in edges)
    slack = cost // light
    w = sum(max(c for _, c in k.shapes) for k in kernels) + slack
    h = sum(max(r for r, _ in k.shapes) for k in kernels) + slack
    return min(width, w), min(height, h)


def decomposition_bound(kernels: list[KernelSpec], edges: list[EdgeSpec], width: int, height: int,
                        *, det_time: float, seed: int, workers: int, clock: Clock | None = None) -> Bound:
    by_name = {k.name: k for k in kernels}
    ids = [i for i, e in enumerate(edges) if e.bytes > 0]
    groups, single = _components(ids, edges)
    value = sum(edges[i].bytes for i in single)  # ports of disjoint rectangles differ: ≥ 1 hop
    distinct: dict[tuple, list[list[int]]] = {}
    for grp in groups:
        distinct.setdefault(_signature(grp, edges, by_name), []).append(grp)
    out = Bound(value, components=len(groups))

    def one(grp: list[int], budget: float):
        names = sorted({n for i in grp for n in (edges[i].src, edges[i].dst)})
        ks, sub = [by_name[n] for n in names], [edges[i] for i in grp]
        hint = layered(ks, sub, width, height)
        w, h = width, height
        if hint is not None:  # no better layout is wider or taller than this (see _room)
            w, h = _room(ks, sub, objective(hint, sub), width, height)
            hint = hint if all(r.x + r.cols <= w and r.y + r.rows <= h for r in hint.values()) else None
        win = Window(ks, (0, 0, w, h), [Term(e.bytes, e.src, e.dst) for e in sub], anchored=False,
                     lp=False, hint=hint)
        return solve(win, det_time=budget, seed=seed, clock=clock)

    todo = list(distinct.values())
    results, left, step = [], det_time, max(1, workers)
    for start in range(0, len(todo), step):  # rounds of `workers` solves side by side
        chunk = todo[start:start + step]
        share = left / -(-(len(todo) - start) // step)  # what is left, per remaining round
        done = parallel(lambda members: one(members[0], share), chunk, workers)
        left -= max(r.det_time for r in done)  # an easy proof hands its time on
        results += done
    for members, res in zip(todo, results):
        grp = members[0]
        lb = max(res.bound, sum(edges[i].bytes for i in grp))
        if res.status == "OPTIMAL":
            out.proven += len(members)
        for m in members:
            out.value += lb
            out.cuts.append((m, lb))
    return out
