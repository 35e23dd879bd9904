"""Large neighbourhood search over a window: re-place a few kernels at a time, the rest fixed.

One CP-SAT worker runs no LNS of its own, and on a deep model's template (ten Llama-3-8B
kernels packed to 70% of a slot) its search stalls: at the CLI's budget it ends 20-40% above
what re-solving small neighbourhoods reaches from its layout. So, after the whole-window
solve, each step picks a neighbourhood (the kernels of one objective term, drawn with
probability proportional to its cost, plus the kernels nearest to them), fixes every other
kernel as an obstacle, and re-solves those few exactly or nearly in a short deterministic
budget; the window's cost never goes up. A template's pitch terms (its seams to its own
copies) see the extent of the whole layout: the fixed kernels count towards it (cpsat.py).

Deterministic: neighbourhoods come from `random.Random(seed)`, steps and budgets are fixed.
"""

from __future__ import annotations

import random

from wsc.placement.cpsat import Clock, Solved, Term, Window, extent, solve, term_hops, window_cost
from wsc.placement.hops import in_port, out_port
from wsc.placement.spec import Rect

SIZE = 5  # kernels re-placed per step: 5 solve in a few hundredths of a deterministic second
STEP_DTIME = 0.008  # deterministic seconds per step
MAX_STEPS = 60  # each step builds a model in Python (~50 ms): bounds the wall time


def neighbourhood(win: Window, rects: dict[str, Rect], rng: random.Random) -> list[str]:
    """The kernels of one term (drawn by its share of the cost) and those nearest to them."""
    pitch = {a: extent([*rects.values(), *win.obstacles], a) for a in "xy"}
    costs = [t.weight * term_hops(t, rects, pitch) for t in win.terms]
    pick = rng.random() * sum(costs)
    term = win.terms[-1]
    for t, c in zip(win.terms, costs):
        pick -= c
        if pick <= 0:
            term = t
            break
    chosen = [e for e in (term.src, term.dst) if isinstance(e, str)]

    def centre(n: str) -> tuple[float, float]:
        r = rects[n]
        return r.x + r.cols / 2, r.y + r.rows / 2

    if not chosen:
        chosen = [win.kernels[rng.randrange(len(win.kernels))].name]
    cx = sum(centre(n)[0] for n in chosen) / len(chosen)
    cy = sum(centre(n)[1] for n in chosen) / len(chosen)
    # nearest first, with some jitter so that a term drawn twice frees a different ring
    spread = max(1, extent(rects.values(), "x") + extent(rects.values(), "y")) / 8
    rest = sorted((k.name for k in win.kernels if k.name not in chosen),
                  key=lambda n: abs(centre(n)[0] - cx) + abs(centre(n)[1] - cy) + spread * rng.random())
    return sorted(set(chosen) | set(rest[:max(0, SIZE - len(set(chosen)))]))


def improve(win: Window, start: Solved, *, det_time: float, seed: int, clock: Clock | None = None) -> Solved:
    """Re-solve neighbourhoods of `start`'s layout for about `det_time` deterministic seconds."""
    if start.rects is None or len(win.kernels) <= SIZE:
        return start
    rng = random.Random(seed)
    spec = {k.name: k for k in win.kernels}
    rects, cost = dict(start.rects), start.cost
    steps = max(1, min(MAX_STEPS, round(det_time / STEP_DTIME)))
    spent = 0.0
    for _ in range(steps):
        if spent >= det_time:
            break
        free = neighbourhood(win, rects, rng)
        terms = []
        for t in win.terms:  # the fixed ends become ports; pitch terms move with the extent
            if t.src in free or t.dst in free or t.pitch:
                src = t.src if not isinstance(t.src, str) or t.src in free else out_port(rects[t.src])
                dst = t.dst if not isinstance(t.dst, str) or t.dst in free else in_port(rects[t.dst])
                terms.append(Term(t.weight, src, dst, t.shift, t.pitch))
        fixed = [rects[k.name] for k in win.kernels if k.name not in free]
        sub = Window([spec[n] for n in free], win.box, terms, obstacles=[*win.obstacles, *fixed],
                     hint={n: rects[n] for n in free}, anchored=win.anchored, ports=win.ports, lp=win.lp)
        res = solve(sub, det_time=min(det_time / steps, det_time - spent), seed=seed, clock=clock)
        spent += res.det_time
        if res.rects is not None:
            moved = {**rects, **res.rects}
            c = window_cost(win.terms, moved, win.obstacles)
            if c < cost:
                rects, cost = moved, c
    return Solved(rects, cost, start.bound, start.status, start.det_time + spent, start.capped)
