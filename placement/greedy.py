"""The two baselines every placement is measured against (and warm-started from).

Both take kernels in dataflow order and drop them on a skyline: a kernel placed at columns
[x, x + cols) rests against the lowest free row over those columns (the highest PE already
taken there, plus one), like a piece falling up the mesh. Among a kernel's allowed shapes the
one that rests highest (ties: the least area lost under it, then the first shape) wins:

- `rowmajor`: first fit in reading order — the kernel goes wherever it rests highest, the
  west-most spot on ties; everything streams east.
- `snake`: boustrophedon — a cursor runs along a row of kernels, west to east, then east to
  west (those kernels stream west: hops.py), so consecutive kernels stay neighbours. A kernel
  takes the spot at or ahead of the cursor where it rests highest, the nearest on ties; when
  none is left before the row's end, the row turns. As a skipped-over gap is wasted for
  locality and vice versa, a few tie-break rules are tried and the cheapest layout is kept.

Gravity against a skyline packs the partitioner's mixed shapes (a 146x8 attention next to
60x60 matmuls and a 38x683 embedding) to ~70% of a WSE-3 mesh, where fixed-height shelves
do not. They return None when they run out of mesh, which is not proof that nothing fits.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from wsc.placement.spec import EdgeSpec, KernelSpec, Rect, topo_order


def _rests(top: np.ndarray, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """For every x: the row a `cols`-wide kernel at x rests on, and the PEs lost under it."""
    win = sliding_window_view(top, cols)
    ys = win.max(axis=1)
    return ys, ys * cols - win.sum(axis=1)


def rowmajor(kernels: list[KernelSpec], edges: list[EdgeSpec], width: int, height: int) -> dict[str, Rect] | None:
    top = np.zeros(width, dtype=np.int64)
    out: dict[str, Rect] = {}
    for k in topo_order(kernels, edges):
        best = None
        for i, (rows, cols) in enumerate(k.shapes):
            if rows > height or cols > width:
                continue
            ys, waste = _rests(top, cols)
            ok = np.flatnonzero(ys + rows <= height)
            if not len(ok):
                continue
            x = int(ok[np.argmin(ys[ok])])  # argmin takes the west-most of the highest spots
            cand = ((int(ys[x]), int(waste[x]), i), Rect(x, int(ys[x]), rows, cols))
            if best is None or cand[0] < best[0]:
                best = cand
        if best is None:
            return None
        r = out[k.name] = best[1]
        top[r.x: r.x + r.cols] = r.y + r.rows
    return out


def _snake(order: list[KernelSpec], width: int, height: int, ahead: float) -> dict[str, Rect] | None:
    """One boustrophedon pass; a spot d columns past the cursor costs `ahead` * d rows."""
    top = np.zeros(width, dtype=np.int64)
    out: dict[str, Rect] = {}
    east, cur = True, 0  # cursor: columns used from the row's starting edge
    for k in order:
        best = None
        for turn in (False, True):
            if turn:
                east, cur = not east, 0
            for i, (rows, cols) in enumerate(k.shapes):
                if rows > height or cur + cols > width:
                    continue
                ys, waste = _rests(top, cols)
                d = np.arange(width - cols + 1 - cur)  # offsets ahead of the cursor
                xs = cur + d if east else width - cur - cols - d
                y = ys[xs]
                ok = y + rows <= height
                if not ok.any():
                    continue
                score = np.where(ok, y + ahead * d, np.inf)
                j = int(np.argmin(score))
                cand = ((float(score[j]), int(waste[xs[j]]), i), Rect(int(xs[j]), int(y[j]), rows, cols, not east),
                        int(cur + d[j] + cols))
                if best is None or cand[0] < best[0]:
                    best = cand
            if best is not None:
                break
        if best is None:
            return None
        r, cur = best[1], best[2]
        out[k.name] = r
        top[r.x: r.x + r.cols] = r.y + r.rows
    return out


def snake(kernels: list[KernelSpec], edges: list[EdgeSpec], width: int, height: int) -> dict[str, Rect] | None:
    from wsc.placement.hops import objective

    order = topo_order(kernels, edges)
    best = None
    # the nearest spot that fits; a row higher is worth a column further; the highest spot
    for ahead in (float(width * height), 1.0, 0.0):
        rects = _snake(order, width, height, ahead)
        if rects is not None:
            cost = objective(rects, edges)
            if best is None or cost < best[0]:
                best = (cost, rects)
    return None if best is None else best[1]


def layered(kernels: list[KernelSpec], edges: list[EdgeSpec], width: int, height: int,
            cost=None) -> dict[str, Rect] | None:
    """Dataflow layers as columns, west to east, each column centred on one middle row.

    A kernel's layer is its longest path from a source, so a chain becomes one row of kernels
    with aligned ports (1 hop per edge) and a fan-out becomes a column of siblings. Shapes are
    then chosen by coordinate descent on `cost(rects)` (default: Σ bytes × hops). None when
    the layers do not fit `width` x `height`. This is the template's warm start (tiling.py).
    """
    from wsc.placement.hops import objective

    cost = cost or (lambda rects: objective(rects, edges))
    order = topo_order(kernels, edges)
    names = {k.name for k in kernels}
    level: dict[str, int] = {}
    for k in order:
        level[k.name] = max([level[e.src] + 1 for e in edges if e.dst == k.name and e.src in level], default=0)
    layers: list[list[KernelSpec]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for k in order:
        layers[level[k.name]].append(k)
    # start from the narrowest columns that fit the height (a small search per layer), so the
    # descent starts from a layout that fits whenever one of this form does
    choice = {k.name: 0 for k in kernels}
    for layer in layers:
        options = [list(enumerate(k.shapes)) for k in layer]
        best_w = None
        if math.prod(len(o) for o in options) <= 256:
            for combo in itertools.product(*options):
                if sum(s[0] for _, s in combo) <= height:
                    w = max(s[1] for _, s in combo)
                    if best_w is None or w < best_w:
                        best_w = w
                        for k, (i, _) in zip(layer, combo):
                            choice[k.name] = i

    def build() -> dict[str, Rect] | None:
        shape = {k.name: k.shapes[choice[k.name]] for k in kernels}
        tall = [sum(shape[k.name][0] for k in layer) for layer in layers]
        if max(tall, default=0) > height:
            return None
        mid, x, out = max(tall) // 2, 0, {}
        for layer, h in zip(layers, tall):
            y = mid - h // 2
            for k in layer:
                rows, cols = shape[k.name]
                out[k.name] = Rect(x, y, rows, cols)
                y += rows
            x += max(shape[k.name][1] for k in layer)
        return out if x <= width else None

    best = build()
    best_cost = cost(best) if best is not None else None
    for _ in range(3):
        changed = False
        for k in order:
            if k.name not in names:
                continue
            keep = choice[k.name]
            for i in range(len(k.shapes)):
                if i == keep:
                    continue
                choice[k.name] = i
                rects = build()
                c = cost(rects) if rects is not None else None
                if c is not None and (best_cost is None or c < best_cost):
                    best, best_cost, keep, changed = rects, c, i, True
            choice[k.name] = keep
        if not changed:
            break
    return best
