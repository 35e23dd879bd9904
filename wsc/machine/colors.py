"""The color budget of a placement (DESIGN §3, §8): checked by the simulator on load.

A route occupies its color on every router it passes. At any router, different multicast trees
need different colors, every color must lie in the free range `[reserved, colors)`, and no
router may need more colors than are free. The compiler's router assigns colors this way; the
simulator re-checks the bundle's `placement.json` rather than trusting it.
"""

from __future__ import annotations

from collections import defaultdict

Point = tuple[int, int]


def routers(path: list[Point]) -> list[Point]:
    """Every router on a polyline of axis-parallel segments, in order."""
    out = [tuple(path[0])]
    for (ax, ay), (bx, by) in zip(path, path[1:]):
        sx = (bx > ax) - (bx < ax)
        sy = (by > ay) - (by < ay)
        x, y = ax, ay
        while (x, y) != (bx, by):
            x, y = x + sx, y + sy
            out.append((x, y))
    return out  # type: ignore[return-value]


def color_violations(placement: dict, colors: int) -> tuple[dict, list[str]]:
    """({"max_colors_per_router", "colors_used"}, violations) of a placement.json."""
    reserved = int(placement.get("colors", {}).get("reserved", 0))
    budget = colors - reserved
    at: dict[Point, dict[int, int]] = defaultdict(dict)  # router -> tree -> color
    names: dict[int, list[str]] = defaultdict(list)
    used: set[int] = set()
    problems: list[str] = []
    for e in placement.get("edges", []):
        if e.get("color") is None:  # an unrouted edge holds no color
            continue
        g, c = int(e.get("group", id(e))), int(e["color"])
        names[g].append(f"{e['src']}->{e['dst']}")
        if not reserved <= c < colors:
            problems.append(f"route {e['src']}->{e['dst']} uses color {c}, outside the free "
                            f"colors [{reserved}, {colors})")
        used.add(c)
        if e.get("path"):
            for r in routers([tuple(p) for p in e["path"]]):
                at[r][g] = c
    peak = 0
    for r in sorted(at):
        trees = at[r]
        peak = max(peak, len(trees))
        by_color: dict[int, list[int]] = defaultdict(list)
        for g, c in trees.items():
            by_color[c].append(g)
        clash = next((gs for gs in by_color.values() if len(gs) > 1), None)
        if len(trees) > budget or clash:
            routes = ", ".join(n for g in sorted(trees) for n in names[g])
            why = (f"{len(trees)} trees need distinct colors but only {budget} of {colors} are free"
                   if len(trees) > budget else f"trees {sorted(clash)} share color {trees[clash[0]]}")
            problems.append(f"color budget violated at router ({r[0]}, {r[1]}): {why}; routes: {routes}")
    return {"max_colors_per_router": peak, "colors_used": len(used)}, problems
