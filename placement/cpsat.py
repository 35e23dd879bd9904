"""CP-SAT placement of a window: free kernels inside a box, around fixed obstacles.

One model serves every use (DESIGN §6): the whole mesh for small graphs, one transformer block
in its slot for the deep-model template, small windows when refining seams, and the cycle
components of the lower bound. The model:

- each kernel k has an origin (x_k, y_k), one boolean b_ks per allowed shape s (exactly one
  true) and an orientation boolean f_k (hops.py); each shape contributes an optional
  fixed-size interval pair to one `AddNoOverlap2D` with the fixed obstacles, so a shape's box
  only exists when it is chosen;
- ports are linear in those variables: with z_ks = b_ks ∧ f_k, the output column is
  x_k + Σ_s (cols_s - 1)(b_ks - z_ks), the input column x_k + Σ_s (cols_s - 1) z_ks, and the
  port row y_k + Σ_s (rows_s // 2) b_ks;
- each objective term (an edge; an edge to a fixed port; a template's seam to its own copy one
  template width or height further on) gets dx, dy ≥ 0 with dx ≥ ±(out_x - in_x - shift_x),
  likewise dy, and the objective is Σ bytes/g × (dx + dy), g the gcd of the weights (exact).
  A template's width/height is a variable (max of x_k + cols_k), so the seam term makes the
  block both well laid out and compact enough to tile densely;
- bounds that make the relaxation mean something: domains cut to the box minus the smallest
  shape; every free-to-free edge costs ≥ 1 hop (ports in disjoint rectangles differ); explicit
  left/right/above/below literals for every connected pair and every pair of siblings (two
  consumers of one producer or two producers of one consumer), redundant with NoOverlap2D but
  giving the search and the LP the disjunction that makes an edge long; and cuts Σ_{i∈C} cost_i
  ≥ LB_C from the cycle decomposition (bounds.py);
- symmetry: without fixed anchors the cost is translation invariant, so the layout is pinned to
  the box's west and north walls (min x = x0, min y = y0), and mirror invariant in x (flip every
  kernel), so the first kernel streams east;
- determinism: every solve is CP-SAT's sequential search (`num_workers=1`) with a fixed
  `random_seed` and a `max_deterministic_time` budget. The caller's `workers` cores run
  *independent* solves side by side (`parallel`: a portfolio of seeds, or independent windows)
  whose results are combined in a fixed order, so nothing depends on thread timing. CP-SAT's own
  deterministic parallel mode (`interleave_search`) was measured and rejected: on a GPT-2 block
  plus head and tail on a 200x200 mesh it ended 3x worse than one worker at equal wall time.
  A wall-clock cap is set only as a safety net at the caller's remaining time (`Clock`).

Only this module imports ortools.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from ortools.sat.python import cp_model

from wsc.placement import interrupt
from wsc.placement.hops import in_port, out_port
from wsc.placement.spec import KernelSpec, Rect

Port = tuple[int, int]

# Deterministic seconds granted per wall-clock second of the caller's time limit. CP-SAT's
# deterministic time is calibrated to be "close to a second"; on this project's 2-core
# machines one deterministic second of a single-worker solve took 2-3 wall seconds for the
# small cycle models, ~5 for a whole 17-kernel graph with the LP on, and 10-13 with two solves
# side by side while another job ran. Budgets are sized so that the wall-clock cap (which would
# make a run irreproducible) stays out of the way up to a ratio of about 18; the placements of
# the 12- and 32-block benchmarks barely change between 3 and 9 deterministic seconds.
DTIME_PER_SECOND = 0.05
# Without the LP (the bound's cycle models, `Window.lp`) a deterministic second took 2-4 wall
# seconds, also with two solves side by side: the same margin allows three times the budget.
DTIME_PER_SECOND_NO_LP = 0.15


@dataclass
class Clock:
    """Wall-clock safety net around deterministic budgets.

    Budgets are deterministic, so results reproduce; the wall deadline only fires on a machine
    much slower than assumed, and then `capped` records that this run may not reproduce.
    """

    deadline: float  # time.monotonic() value
    capped: bool = False

    @classmethod
    def start(cls, seconds: float) -> Clock:
        return cls(time.monotonic() + seconds)

    def left(self) -> float:
        return self.deadline - time.monotonic()


@dataclass(frozen=True)
class Term:
    """`weight` bytes from `src`'s out port to `dst`'s in port shifted by `shift`.

    An end is a free kernel's name or a fixed port PE (x, y). `pitch` "x" or "y" also moves the
    destination by the window layout's width or height: a template's copy in the next slot;
    "turn" puts it in the copy one height down and mirrored in x within the layout's width: the
    first block after a snake band turns around (tiling.py).
    """

    weight: int
    src: str | Port
    dst: str | Port
    shift: Port = (0, 0)
    pitch: str = ""


@dataclass
class Window:
    kernels: list[KernelSpec]
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)
    terms: list[Term]
    obstacles: list[Rect] = field(default_factory=list)
    hint: dict[str, Rect] | None = None
    # False: the layout floats (a template, a bound's cycle): pinned to the box's west and north
    # walls, its obstacles (kernels of the same layout held fixed: lns.py) counting as part of it
    anchored: bool = True
    cuts: list[tuple[list[int], int]] = field(default_factory=list)  # Σ cost(terms[i]) ≥ lb
    ports: str = "flip"  # "flip": orientation is a variable; "east": every kernel streams east
    lp: bool = True  # False: no LP relaxation (linearization_level 0), pure propagation and search


@dataclass
class Solved:
    rects: dict[str, Rect] | None
    cost: int | None  # exact Σ weight × hops of the window's terms at `rects`
    bound: int  # lower bound on the window's cost
    status: str
    det_time: float = 0.0
    capped: bool = False


def extent(rects, axis: str) -> int:
    """Width ("x") or height ("y") of the bounding box of `rects`."""
    rs = list(rects)
    if not rs:
        return 0
    if axis == "x":
        return max(r.x + r.cols for r in rs) - min(r.x for r in rs)
    return max(r.y + r.rows for r in rs) - min(r.y for r in rs)


def _dst(t: Term, x, y, pitch: dict):
    """The destination port after the term's shift, pitch or mirror (ints or CP-SAT exprs)."""
    if t.pitch == "turn":  # one layout height down, mirrored within [0, layout width)
        return pitch["x"] - 1 - x + t.shift[0], y + t.shift[1] + pitch["y"]
    return (x + t.shift[0] + (pitch["x"] if t.pitch == "x" else 0),
            y + t.shift[1] + (pitch["y"] if t.pitch == "y" else 0))


def term_hops(t: Term, rects: dict[str, Rect], pitch: dict[str, int] | None = None) -> int:
    sx, sy = out_port(rects[t.src]) if isinstance(t.src, str) else t.src
    dx, dy = _dst(t, *(in_port(rects[t.dst]) if isinstance(t.dst, str) else t.dst), pitch or {"x": 0, "y": 0})
    return abs(sx - dx) + abs(sy - dy)


def window_cost(terms: list[Term], rects: dict[str, Rect], fixed: list[Rect] = ()) -> int:
    """Σ weight × hops of `terms` at `rects`; pitches are the extent of `rects` and `fixed`."""
    pitch = {a: extent([*rects.values(), *fixed], a) for a in "xy"} if any(t.pitch for t in terms) else None
    return sum(t.weight * term_hops(t, rects, pitch) for t in terms)


def _fits(win: Window, rects: dict[str, Rect]) -> bool:
    x0, y0, x1, y1 = win.box
    for k in win.kernels:
        r = rects.get(k.name)
        if r is None or (r.rows, r.cols) not in k.shapes or (r.flip and win.ports == "east"):
            return False
        if r.x < x0 or r.y < y0 or r.x + r.cols > x1 or r.y + r.rows > y1:
            return False
    free = [rects[k.name] for k in win.kernels]
    return not any(a.overlaps(b) for i, a in enumerate(free) for b in [*free[i + 1:], *win.obstacles])


def parallel(fn, items: list, workers: int) -> list:
    """`[fn(i) for i in items]` on up to `workers` threads (CP-SAT releases the GIL)."""
    if workers <= 1 or len(items) <= 1:
        return [fn(i) for i in items]
    return interrupt.run_all(fn, items, min(workers, len(items)))


@dataclass
class _Vars:
    x: cp_model.IntVar
    y: cp_model.IntVar
    flip: cp_model.IntVar | bool  # a constant unless the orientation is free
    shapes: list[tuple[tuple[int, int], cp_model.IntVar]]
    width: cp_model.LinearExprT
    height: cp_model.LinearExprT
    out_x: cp_model.LinearExprT
    in_x: cp_model.LinearExprT
    port_y: cp_model.LinearExprT


def _kernel_vars(m: cp_model.CpModel, k: KernelSpec, box, boxes_x: list, boxes_y: list,
                 ports: str) -> _Vars | None:
    x0, y0, x1, y1 = box
    shapes = [(r, c) for r, c in k.shapes if r <= y1 - y0 and c <= x1 - x0]
    if not shapes:
        return None
    n = k.name
    x = m.NewIntVar(x0, x1 - min(c for _, c in shapes), f"x[{n}]")
    y = m.NewIntVar(y0, y1 - min(r for r, _ in shapes), f"y[{n}]")
    flip = m.NewBoolVar(f"flip[{n}]") if ports == "flip" else False
    bs = [m.NewBoolVar(f"b[{n},{r}x{c}]") for r, c in shapes]
    m.AddExactlyOne(bs)
    in_off = []
    for (r, c), b in zip(shapes, bs):
        boxes_x.append(m.NewOptionalFixedSizeIntervalVar(x, c, b, f"ix[{n},{r}x{c}]"))
        boxes_y.append(m.NewOptionalFixedSizeIntervalVar(y, r, b, f"iy[{n},{r}x{c}]"))
        m.Add(x + c <= x1).OnlyEnforceIf(b)
        m.Add(y + r <= y1).OnlyEnforceIf(b)
        if ports != "flip":
            pass
        elif len(shapes) == 1:
            in_off.append((c - 1) * flip)
        else:
            z = m.NewBoolVar(f"z[{n},{r}x{c}]")  # z = b ∧ flip
            m.AddBoolAnd([b, flip]).OnlyEnforceIf(z)
            m.AddBoolOr([b.Not(), flip.Not(), z])
            in_off.append((c - 1) * z)
    pairs = list(zip(shapes, bs))
    width = sum(c * b for (_, c), b in pairs)
    in_x = x + sum(in_off)
    out_x = x + sum((c - 1) * b for (_, c), b in pairs) - sum(in_off)
    port_y = y + sum((r // 2) * b for (r, _), b in pairs)
    return _Vars(x, y, flip, pairs, width, sum(r * b for (r, _), b in pairs), out_x, in_x, port_y)


def solve(win: Window, *, det_time: float, seed: int, clock: Clock | None = None) -> Solved:
    """Minimise the window's cost; never returns worse than a legal hint."""
    wall_limit = None if clock is None else clock.left()
    if wall_limit is not None and wall_limit <= 0.05:
        clock.capped = True  # type: ignore[union-attr]
        det_time = 0.0
    x0, y0, x1, y1 = win.box
    hint = win.hint if win.hint is not None and _fits(win, win.hint) else None
    hint_cost = window_cost(win.terms, hint, win.obstacles) if hint else None
    if det_time <= 0 or not win.kernels:
        if hint:
            return Solved(dict(hint), hint_cost, 0, "HINT")
        return Solved(None, None, 0, "NOT_SOLVED")

    m = cp_model.CpModel()
    v: dict[str, _Vars] = {}
    boxes_x, boxes_y = [], []
    for k in win.kernels:
        kv = _kernel_vars(m, k, win.box, boxes_x, boxes_y, win.ports)
        if kv is None:
            return Solved(None, None, 0, "INFEASIBLE")
        v[k.name] = kv
    for i, o in enumerate(win.obstacles):
        lx, hx = max(o.x, x0), min(o.x + o.cols, x1)
        ly, hy = max(o.y, y0), min(o.y + o.rows, y1)
        if lx < hx and ly < hy:
            boxes_x.append(m.NewFixedSizeIntervalVar(lx, hx - lx, f"ox{i}"))
            boxes_y.append(m.NewFixedSizeIntervalVar(ly, hy - ly, f"oy{i}"))
    m.AddNoOverlap2D(boxes_x, boxes_y)

    free = [v[k.name] for k in win.kernels]
    if not win.anchored:  # fixed kernels of the same layout may lie on the walls
        m.AddMinEquality(x0, [kv.x for kv in free] + [o.x for o in win.obstacles])
        m.AddMinEquality(y0, [kv.y for kv in free] + [o.y for o in win.obstacles])
        if win.ports == "flip" and not win.obstacles and not any(t.pitch in ("x", "turn") for t in win.terms):
            m.Add(free[0].flip == 0)  # an x seam is not mirror symmetric
    assert x0 == 0 or not any(t.pitch == "turn" for t in win.terms), "mirrors are taken in [0, width)"
    pitch: dict[str, cp_model.LinearExprT] = {"x": 0, "y": 0}
    hint_pitch = {a: extent([*hint.values(), *win.obstacles], a) for a in "xy"} if hint else {"x": 0, "y": 0}
    ends = {}
    for axis, lo, hi in (("x", x0, x1), ("y", y0, y1)):
        if any(t.pitch in (axis, "turn") for t in win.terms):
            assert not win.anchored, "a pitch is the extent of a free-floating layout"
            ends[axis] = m.NewIntVar(lo, hi, f"end_{axis}")
            m.AddMaxEquality(ends[axis], [(kv.x + kv.width) if axis == "x" else (kv.y + kv.height)
                                          for kv in free]
                             + [(o.x + o.cols) if axis == "x" else (o.y + o.rows) for o in win.obstacles])
            pitch[axis] = ends[axis] - lo

    weights = [t.weight for t in win.terms if t.weight > 0]
    g = math.gcd(*weights) if weights else 1
    objective, hints = [], {}
    pairs: set[tuple[str, str]] = set()
    term_expr: dict[int, cp_model.LinearExprT] = {}
    for i, t in enumerate(win.terms):
        if t.weight <= 0:
            continue
        sx, sy = (v[t.src].out_x, v[t.src].port_y) if isinstance(t.src, str) else t.src
        dx, dy = _dst(t, *((v[t.dst].in_x, v[t.dst].port_y) if isinstance(t.dst, str) else t.dst), pitch)
        consts = [*t.shift, *(() if isinstance(t.src, str) else t.src), *(() if isinstance(t.dst, str) else t.dst)]
        far = max([abs(c) for c in consts] + [x1, y1])
        hx = m.NewIntVar(0, x1 - x0 + 2 * far, f"dx{i}")
        hy = m.NewIntVar(0, y1 - y0 + 2 * far, f"dy{i}")
        m.Add(hx >= sx - dx)
        m.Add(hx >= dx - sx)
        m.Add(hy >= sy - dy)
        m.Add(hy >= dy - sy)
        if isinstance(t.src, str) and isinstance(t.dst, str) and t.shift == (0, 0) and not t.pitch:
            m.Add(hx + hy >= 1)
            pairs.add(tuple(sorted((t.src, t.dst))))  # type: ignore[arg-type]
        term_expr[i] = (t.weight // g) * (hx + hy)
        objective.append(term_expr[i])
        if hint:
            hsx, hsy = out_port(hint[t.src]) if isinstance(t.src, str) else t.src
            hdx, hdy = _dst(t, *(in_port(hint[t.dst]) if isinstance(t.dst, str) else t.dst), hint_pitch)
            hints[hx], hints[hy] = abs(hsx - hdx), abs(hsy - hdy)

    # siblings compete for the space next to the same port: give them relative literals too
    around: dict[tuple[str, int], list[str]] = {}
    for t in win.terms:
        if isinstance(t.src, str) and isinstance(t.dst, str) and t.shift == (0, 0) and not t.pitch:
            around.setdefault((t.src, 0), []).append(t.dst)
            around.setdefault((t.dst, 1), []).append(t.src)
    for group in around.values():
        for i, a in enumerate(group):
            pairs.update(tuple(sorted((a, b))) for b in group[i + 1:] if a != b)  # type: ignore[misc]
    for a, b in sorted(pairs):
        va, vb = v[a], v[b]
        rel = [m.NewBoolVar(f"{a}|{b}:{d}") for d in "WENS"]
        m.Add(va.x + va.width <= vb.x).OnlyEnforceIf(rel[0])
        m.Add(vb.x + vb.width <= va.x).OnlyEnforceIf(rel[1])
        m.Add(va.y + va.height <= vb.y).OnlyEnforceIf(rel[2])
        m.Add(vb.y + vb.height <= va.y).OnlyEnforceIf(rel[3])
        m.AddBoolOr(rel)
        if hint:
            ra, rb = hint[a], hint[b]
            truth = [ra.x + ra.cols <= rb.x, rb.x + rb.cols <= ra.x,
                     ra.y + ra.rows <= rb.y, rb.y + rb.rows <= ra.y]
            hints.update((lit, int(tv)) for lit, tv in zip(rel, truth))
    for idx, lb in win.cuts:
        if lb > 0 and all(i in term_expr for i in idx):
            m.Add(sum(term_expr[i] for i in idx) >= -(-lb // g))
    m.Minimize(sum(objective))

    if hint:
        for k in win.kernels:
            r, kv = hint[k.name], v[k.name]
            m.AddHint(kv.x, r.x)
            m.AddHint(kv.y, r.y)
            if win.ports == "flip":
                m.AddHint(kv.flip, int(r.flip))
            for (rows, cols), b in kv.shapes:
                m.AddHint(b, int((rows, cols) == (r.rows, r.cols)))
        for axis, var in ends.items():
            m.AddHint(var, (x0 if axis == "x" else y0) + hint_pitch[axis])
        for var, val in hints.items():
            m.AddHint(var, val)

    solver = cp_model.CpSolver()
    p = solver.parameters
    p.random_seed = seed
    p.num_workers = 1
    p.max_deterministic_time = det_time
    p.catch_sigint_signal = False  # Ctrl-C stays Python's (interrupt.py)
    if not win.lp:
        p.linearization_level = 0
    if wall_limit is not None:
        p.max_time_in_seconds = max(0.05, wall_limit)
    status = interrupt.solve(solver, m)
    name = solver.StatusName(status)
    dtime = solver.deterministic_time
    capped = (status not in (cp_model.OPTIMAL, cp_model.INFEASIBLE) and wall_limit is not None
              and dtime < 0.99 * det_time and solver.wall_time >= 0.95 * wall_limit)
    if capped and clock is not None:
        clock.capped = True
    if status == cp_model.INFEASIBLE:
        return Solved(None, None, 0, name, dtime, capped)

    rects = None
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        rects = {}
        for k in win.kernels:
            kv = v[k.name]
            shape = next(s for s, b in kv.shapes if solver.BooleanValue(b))
            flip = kv.flip if isinstance(kv.flip, bool) else solver.BooleanValue(kv.flip)
            rects[k.name] = Rect(solver.Value(kv.x), solver.Value(kv.y), *shape, flip)
    bound = max(0, math.ceil(solver.BestObjectiveBound() - 1e-6)) * g
    cost = window_cost(win.terms, rects, win.obstacles) if rects is not None else None
    if hint and (cost is None or hint_cost <= cost):  # type: ignore[operator]
        rects, cost = dict(hint), hint_cost
    if cost is not None:
        bound = min(bound, cost)
    return Solved(rects, cost, bound, name, dtime, capped)
