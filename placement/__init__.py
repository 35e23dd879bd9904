"""Placement and routing (DESIGN §6): a rectangle per kernel on the mesh, routes, colors.

    from wsc.placement import KernelSpec, EdgeSpec, place
    p = place(kernels, edges, width=755, height=1170, time_limit=60)
    json.dump(p.to_json(), f, sort_keys=True)      # the bundle's placement.json

`check_color_budget(placement_json, colors)` re-checks a placement.json. Importing this package
does not import ortools: `place` (and CP-SAT with it) loads on first use.
"""

from wsc.placement.result import Placement, PlacedEdge, PlacedKernel
from wsc.placement.routing import check_color_budget
from wsc.placement.spec import EdgeSpec, KernelSpec, Rect

__all__ = ["EdgeSpec", "KernelSpec", "Placement", "PlacedEdge", "PlacedKernel", "Rect",
           "check_color_budget", "place"]


def __getattr__(name: str):
    if name == "place":
        from wsc.placement.placer import place

        return place
    raise AttributeError(f"module 'wsc.placement' has no attribute {name!r}")
