"""Routing: dimension-ordered routes between the right ports, link loads, multicast trees,
colors and the color budget (placement/routing.py)."""

from __future__ import annotations

import copy
import json
from collections import defaultdict

import pytest

from wsc.errors import PlacementError
from wsc.placement import EdgeSpec, KernelSpec, check_color_budget, place
from wsc.placement.hops import hops
from wsc.placement.routing import corners, links, route, routers
from wsc.placement.spec import Rect
from wsc.placement.synthetic import gpt2_graph


def segments_are_dimension_ordered(path, order) -> bool:
    axes = ["x" if a[1] == b[1] else "y" for a, b in zip(path, path[1:])]
    if any(a[0] != b[0] and a[1] != b[1] for a, b in zip(path, path[1:])):
        return False  # a diagonal segment
    first = order[0]
    return axes in ([], [first], [first, order[1]]) or axes == [order[1]]


def test_corners_and_links():
    assert corners((0, 0), (3, 2), "xy") == [(0, 0), (3, 0), (3, 2)]
    assert corners((0, 0), (3, 2), "yx") == [(0, 0), (0, 2), (3, 2)]
    assert corners((1, 1), (1, 4), "xy") == [(1, 1), (1, 4)]
    assert links([(0, 0), (2, 0), (2, 1)]) == [(0, 0, 1, 0), (1, 0, 2, 0), (2, 0, 2, 1)]
    assert routers([(2, 2), (0, 2)]) == [(2, 2), (1, 2), (0, 2)]


def test_placed_routes_connect_the_ports_and_are_dimension_ordered():
    kernels, edges = gpt2_graph(2)
    p = place(kernels, edges, width=400, height=300, time_limit=2)
    for e in p.edges:
        src, dst = p.kernels[e.src], p.kernels[e.dst]
        assert e.path[0] == src.out_port and e.path[-1] == dst.in_port
        assert segments_are_dimension_ordered(e.path, e.order), (e.path, e.order)
        assert len(links(list(e.path))) == e.hops
        assert e.hops == abs(src.out_port[0] - dst.in_port[0]) + abs(src.out_port[1] - dst.in_port[1])
    check_color_budget(p.to_json(), p.colors)


def chain(n: int, bytes_: int = 100):
    kernels = [KernelSpec(f"k{i}", "linear", ((3, 2),)) for i in range(n)]
    return kernels, [EdgeSpec(f"k{i}", f"k{i + 1}", bytes_ * (i + 1)) for i in range(n - 1)]


def test_link_loads_add_up():
    kernels, edges = chain(4)
    rects = {"k0": Rect(0, 0, 3, 2), "k1": Rect(5, 4, 3, 2), "k2": Rect(1, 8, 3, 2), "k3": Rect(9, 1, 3, 2)}
    r = route(rects, edges, colors=24, reserved_colors=4)
    # point-to-point trees: every link carries exactly the edges crossing it
    assert sum(r.link_load.values()) == sum(e.bytes * hops(rects[e.src], rects[e.dst]) for e in edges)
    expect = defaultdict(int)
    for e, path in zip(edges, r.path):
        for ln in links(path):
            expect[ln] += e.bytes
    assert r.link_load == dict(expect)
    for i, path in enumerate(r.path):
        assert r.max_link_load[i] == max(r.link_load[ln] for ln in links(path))


def test_multicast_shares_links():
    kernels = [KernelSpec("p", "linear", ((3, 2),)), KernelSpec("a", "linear", ((3, 2),)),
               KernelSpec("b", "linear", ((3, 2),))]
    edges = [EdgeSpec("p", "a", 100), EdgeSpec("p", "b", 60)]  # one tensor, two readers
    rects = {"p": Rect(0, 0, 3, 2), "a": Rect(6, 0, 3, 2), "b": Rect(10, 3, 3, 2)}
    r = route(rects, edges, colors=24, reserved_colors=4)
    assert r.group[0] == r.group[1] and r.color[0] == r.color[1] and r.order[0] == r.order[1]
    shared = set(links(r.path[0])) & set(links(r.path[1]))
    assert shared  # both leave along the producer's row
    for ln in shared:
        assert r.link_load[ln] == 100  # sent once: the larger slice, not 160
    union = set(links(r.path[0])) | set(links(r.path[1]))
    assert sum(r.link_load.values()) == sum(r.link_load[ln] for ln in union)
    assert sum(r.link_load.values()) < sum(e.bytes * len(links(p)) for e, p in zip(edges, r.path))
    # different tensors from one producer are separate trees on separate colors
    split = [EdgeSpec("p", "a", 100, "q"), EdgeSpec("p", "b", 60, "k")]
    r2 = route(rects, split, colors=24, reserved_colors=4)
    assert r2.group[0] != r2.group[1] and r2.color[0] != r2.color[1]


def test_order_is_chosen_to_spread_load():
    # two heavy trees between the same two columns: the second takes the other L
    kernels = [KernelSpec(n, "linear", ((3, 1),)) for n in "abcd"]
    rects = {"a": Rect(0, 0, 3, 1), "b": Rect(0, 4, 3, 1), "c": Rect(6, 5, 3, 1), "d": Rect(6, 9, 3, 1)}
    edges = [EdgeSpec("a", "c", 500), EdgeSpec("b", "d", 400)]
    r = route(rects, edges, colors=24, reserved_colors=4)
    assert r.order[0] != r.order[1] or not (set(links(r.path[0])) & set(links(r.path[1])))
    again = route(rects, edges, colors=24, reserved_colors=4)
    assert (again.order, again.path) == (r.order, r.path)  # deterministic


def crossing():
    """Eight producers in a column, eight consumers in a column: every route crosses x=5."""
    kernels, edges, rects = [], [], {}
    for i in range(8):
        kernels += [KernelSpec(f"s{i}", "linear", ((1, 1),)), KernelSpec(f"t{i}", "linear", ((1, 1),))]
        rects[f"s{i}"], rects[f"t{i}"] = Rect(0, i, 1, 1), Rect(10, 7 - i, 1, 1)
        edges.append(EdgeSpec(f"s{i}", f"t{i}", 10))
    return kernels, edges, rects


def test_colors_differ_on_shared_routers_and_skip_the_reserved_ones():
    kernels, edges, rects = crossing()
    r = route(rects, edges, colors=24, reserved_colors=4)
    assert min(r.color) >= 4
    seen: dict = defaultdict(set)
    for i, path in enumerate(r.path):
        for pt in routers(path):
            assert r.color[i] not in {c for g, c in seen[pt] if g != r.group[i]}
            seen[pt].add((r.group[i], r.color[i]))
    assert r.max_colors_per_router == max(len(s) for s in seen.values())


def test_color_budget_violation_names_the_router():
    kernels, edges, rects = crossing()
    with pytest.raises(PlacementError) as err:
        route(rects, edges, colors=8, reserved_colors=4)  # 4 free colors, 8 routes meet
    msg = str(err.value)
    assert "router (" in msg and "s0->t0" in msg and "4 of 8 colors" in msg


def test_check_color_budget_catches_a_tampered_bundle():
    kernels, edges = gpt2_graph(1)
    p = place(kernels, edges, width=300, height=300, time_limit=1)
    doc = p.to_json()
    assert check_color_budget(doc, 24)["max_colors_per_router"] == p.stats["max_colors_per_router"]
    bad = copy.deepcopy(doc)
    # give a route the color of another tree it shares a router with
    at = defaultdict(list)
    for i, e in enumerate(bad["edges"]):
        for pt in routers([tuple(q) for q in e["path"]]):
            at[pt].append(i)
    i, j = next((ids[0], ids[-1]) for ids in at.values()
                if bad["edges"][ids[0]]["group"] != bad["edges"][ids[-1]]["group"])
    for e in bad["edges"]:
        if e["group"] == bad["edges"][j]["group"]:
            e["color"] = bad["edges"][i]["color"]
    with pytest.raises(PlacementError, match=r"router \(\d+, \d+\).*share color"):
        check_color_budget(bad, 24)
    with pytest.raises(PlacementError, match="outside the free colors"):
        check_color_budget(json.loads(json.dumps(doc).replace('"color": 4', '"color": 2')), 24)


def test_routing_module_does_not_need_ortools():
    import subprocess
    import sys

    code = ("import sys; import wsc.placement.routing as r; "
            "assert 'ortools' not in sys.modules, 'routing imported ortools'; "
            "import wsc.placement; assert 'ortools' not in sys.modules, 'package imported ortools'")
    subprocess.run([sys.executable, "-c", code], check=True)
