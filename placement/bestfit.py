"""Greedy best-position placement of a few kernels around fixed ones, on an occupancy grid.

Used for the kernels outside the transformer blocks (embedding, final norm, LM head) once the
blocks are tiled, and as a hint for the CP-SAT window that refines them. For each kernel, in
order, and each allowed shape, every legal origin is scored at once with numpy: a summed-area
table says which rectangles are free, and the cost map is Σ bytes × hops to the neighbours
already placed (hops.py's ports), for either orientation. The cheapest origin wins; ties go to
the first shape, east-streaming, then the smallest (y, x).
"""

from __future__ import annotations

import numpy as np

from wsc.placement.hops import in_port, out_port
from wsc.placement.spec import EdgeSpec, KernelSpec, Rect


def _occupancy(rects, width: int, height: int) -> np.ndarray:
    occ = np.zeros((height, width), dtype=np.int32)
    for r in rects:
        occ[max(r.y, 0): r.y + r.rows, max(r.x, 0): r.x + r.cols] = 1
    return occ


def best_fit(todo: list[KernelSpec], edges: list[EdgeSpec], fixed: dict[str, Rect],
             width: int, height: int) -> dict[str, Rect] | None:
    """Place `todo` in order around `fixed`; None if one of them finds no free rectangle."""
    placed = dict(fixed)
    occ = _occupancy(placed.values(), width, height)
    out: dict[str, Rect] = {}
    for k in todo:
        sat = np.zeros((height + 1, width + 1), dtype=np.int64)  # summed-area table
        sat[1:, 1:] = occ.cumsum(0).cumsum(1)
        best = None
        for rows, cols in k.shapes:
            if rows > height or cols > width:
                continue
            used = sat[rows:, cols:] - sat[:-rows, cols:] - sat[rows:, :-cols] + sat[:-rows, :-cols]
            free = used == 0  # free[y, x]: the rectangle at (x, y) touches no placed PE
            if not free.any():
                continue
            ny, nx = free.shape
            xs, ys = np.arange(nx, dtype=np.float64), np.arange(ny, dtype=np.float64)
            for flip in (False, True):
                # Σ bytes × (|dx| + |dy|) separates into a cost per column plus one per row
                fx, fy = np.zeros(nx), np.zeros(ny)
                in_x = xs + (cols - 1 if flip else 0)
                out_x = xs + (0 if flip else cols - 1)
                port_y = ys + rows // 2
                for e in edges:
                    if e.dst == k.name and e.src in placed:
                        px, py = out_port(placed[e.src])
                        fx += e.bytes * np.abs(px - in_x)
                        fy += e.bytes * np.abs(py - port_y)
                    elif e.src == k.name and e.dst in placed:
                        cx, cy = in_port(placed[e.dst])
                        fx += e.bytes * np.abs(out_x - cx)
                        fy += e.bytes * np.abs(port_y - cy)
                cost = np.where(free, fy[:, None] + fx[None, :], np.inf)
                i = int(np.argmin(cost))
                y, x = divmod(i, nx)
                if best is None or cost[y, x] < best[0]:
                    best = (cost[y, x], Rect(x, y, rows, cols, flip))
        if best is None:
            return None
        r = best[1]
        placed[k.name] = out[k.name] = r
        occ[r.y: r.y + r.rows, r.x: r.x + r.cols] = 1
    return out
