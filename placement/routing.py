"""Routes, link loads and colors (DESIGN §6): what the fabric has to carry for a placement.

- A route runs from the producer's out port to the consumer's in port (hops.py), dimension
  ordered: "xy" (along x first, then y) or "yx". Its length is the edge's hops.
- Edges leaving one producer with the same `tensor` carry the same data: they form one
  multicast tree on one color. All its routes use the same order, which makes their union a
  tree (every router is entered from one direction only) sharing the common prefixes.
- Link load: each directed link carries, per program run, the bytes of every tree crossing
  it; a tree counts once per link, with the largest of its edges' bytes on that link (a
  receiver may take a slice of what was sent, never more).
- Order choice, to spread load: trees in a fixed order (heaviest first, then by name) pick xy
  or yx by (busiest link they would cross, total load along), xy on ties; a second pass
  re-routes each tree against all the others. Deterministic, no randomness.
- Colors: a tree holds one color on every router it touches; trees sharing a router need
  different colors; colors 0..reserved-1 are left to intra-region collectives. The conflict
  graph is colored greedily by networkx with deterministic strategies. A router whose trees
  outnumber the free colors, or a coloring that exceeds them, is a `PlacementError` naming the
  router and its routes.

`check_color_budget` re-checks a placement.json on load; it only needs the JSON and the
standard library (no ortools, no networkx).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from wsc.errors import PlacementError
from wsc.placement.hops import in_port, out_port
from wsc.placement.spec import EdgeSpec, Rect
from wsc.machine.colors import color_violations, routers

Point = tuple[int, int]
Link = tuple[int, int, int, int]  # from (x, y) to (x2, y2), neighbours


def corners(src: Point, dst: Point, order: str) -> list[Point]:
    """The polyline of a dimension-ordered route: 1 to 3 points."""
    (sx, sy), (dx, dy) = src, dst
    turn = (dx, sy) if order == "xy" else (sx, dy)
    pts = [src]
    for p in (turn, dst):
        if p != pts[-1]:
            pts.append(p)
    return pts


def links(path: list[Point]) -> list[Link]:
    pts = routers(path)
    return [(a[0], a[1], b[0], b[1]) for a, b in zip(pts, pts[1:])]


@dataclass
class Routed:
    order: list[str]  # per edge
    path: list[list[Point]]  # per edge: corner points
    group: list[int]  # per edge: multicast tree id
    color: list[int]  # per edge (its tree's color)
    max_link_load: list[int]  # per edge: load of the busiest link on its route
    link_load: dict[Link, int]
    colors_used: int
    max_colors_per_router: int
    busiest_router: Point | None


def _groups(edges: list[EdgeSpec]) -> list[list[int]]:
    by_key: dict[tuple[str, str], list[int]] = {}
    for i, e in enumerate(edges):
        by_key.setdefault((e.src, e.tensor), []).append(i)
    return list(by_key.values())


def _tree(group: list[int], edges: list[EdgeSpec], ports, order: str) -> dict[Link, int]:
    """Links of a multicast tree with the bytes each carries (max over its edges)."""
    tree: dict[Link, int] = {}
    for i in group:
        for ln in links(corners(ports[i][0], ports[i][1], order)):
            tree[ln] = max(tree.get(ln, 0), edges[i].bytes)
    return tree


def route(rects: dict[str, Rect], edges: list[EdgeSpec], *, colors: int, reserved_colors: int) -> Routed:
    ports = [(out_port(rects[e.src]), in_port(rects[e.dst])) for e in edges]
    groups = _groups(edges)
    group_of = [0] * len(edges)
    for g, members in enumerate(groups):
        for i in members:
            group_of[i] = g
    turn = sorted(range(len(groups)), key=lambda g: (-max(edges[i].bytes for i in groups[g]),
                                                      edges[groups[g][0]].src, edges[groups[g][0]].tensor))
    load: dict[Link, int] = defaultdict(int)
    chosen: dict[int, tuple[str, dict[Link, int]]] = {}
    for _ in range(2):
        for g in turn:
            if g in chosen:  # rip up, re-route against everyone else
                for ln, b in chosen[g][1].items():
                    load[ln] -= b
            best = None
            for order in ("xy", "yx"):
                tree = _tree(groups[g], edges, ports, order)
                worst = max((load[ln] + b for ln, b in tree.items()), default=0)
                total = sum(load[ln] for ln in tree)
                if best is None or (worst, total) < best[0]:
                    best = ((worst, total), order, tree)
            _, order, tree = best  # type: ignore[misc]
            chosen[g] = (order, tree)
            for ln, b in tree.items():
                load[ln] += b
    link_load = {ln: b for ln, b in load.items() if b > 0}

    order_of = [chosen[group_of[i]][0] for i in range(len(edges))]
    paths = [corners(ports[i][0], ports[i][1], order_of[i]) for i in range(len(edges))]
    max_load = [max((link_load.get(ln, 0) for ln in links(p)), default=0) for p in paths]

    touched: dict[int, set[Point]] = defaultdict(set)
    for i, p in enumerate(paths):
        touched[group_of[i]].update(routers(p))
    color, used, peak, where = _color(touched, groups, edges, colors, reserved_colors)
    return Routed(order_of, paths, group_of, [color[g] for g in group_of], max_load, link_load,
                  used, peak, where)


def _describe(router: Point, trees: list[int], groups, edges: list[EdgeSpec]) -> str:
    names = [f"{edges[i].src}->{edges[i].dst}" for g in trees for i in groups[g]]
    shown = ", ".join(names[:12]) + (f", ... ({len(names)} routes)" if len(names) > 12 else "")
    return f"router ({router[0]}, {router[1]}) carries {len(trees)} multicast trees: {shown}"


def _color(touched: dict[int, set[Point]], groups, edges, colors: int, reserved: int):
    """Greedy coloring of the router-sharing graph; raises when the budget cannot hold."""
    import networkx as nx  # only routing needs it; check_color_budget does not

    budget = colors - reserved
    at: dict[Point, list[int]] = defaultdict(list)
    for g in sorted(touched):
        for r in touched[g]:
            at[r].append(g)
    peak, where = 0, None
    for r in sorted(at):
        if len(at[r]) > peak:
            peak, where = len(at[r]), r
    if peak > budget:
        raise PlacementError(
            f"color budget exceeded: {_describe(where, at[where], groups, edges)}, but only "  # type: ignore[arg-type]
            f"{budget} of {colors} colors are free ({reserved} reserved for collectives)",
            hint="spread the kernels out (more PEs between them), shorten the routes, "
            "or reserve fewer colors",
        )
    graph = nx.Graph()
    graph.add_nodes_from(sorted(touched))
    for r in sorted(at):
        gs = at[r]
        graph.add_edges_from((a, b) for i, a in enumerate(gs) for b in gs[i + 1:])
    best = None
    for strategy in ("largest_first", "saturation_largest_first", "smallest_last", "connected_sequential_bfs"):
        coloring = nx.greedy_color(graph, strategy=strategy)
        used = 1 + max(coloring.values(), default=-1)
        if best is None or used < best[0]:
            best = (used, coloring)
        if used <= budget:
            break
    used, coloring = best  # type: ignore[misc]
    if used > budget:
        worst = max(coloring, key=lambda g: (coloring[g], -g))
        r = max(sorted(touched[worst]), key=lambda p: len(at[p]))
        raise PlacementError(
            f"color budget exceeded: greedy coloring needs {used} colors, {budget} of {colors} are "
            f"free ({reserved} reserved); e.g. {_describe(r, at[r], groups, edges)}",
            hint="spread the kernels out or reserve fewer colors",
        )
    color = {g: reserved + c for g, c in coloring.items()}
    return color, used, peak, where


def check_color_budget(placement: dict, colors: int) -> dict:
    """Verify a placement.json's colors (the same check the simulator makes on load).

    Returns {"max_colors_per_router", "colors_used"}; raises `PlacementError` naming the router.
    """
    stats, problems = color_violations(placement, colors)
    if problems:
        raise PlacementError(problems[0])
    return stats

