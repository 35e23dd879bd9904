"""The two baselines every placement is measured against (and warm-started from).

Both take kernels in dataflow order and pack them on shelves: horizontal strips as tall as
the kernel that opened them, filled with columns; a kernel short enough goes below the previous
one in the shelf's last column, else starts a new column. A kernel takes its first allowed
shape that fits a shelf, else it opens a new shelf in its first shape that fits the mesh:

- `rowmajor`: first fit — a kernel goes on the first shelf with room; shelves fill west to
  east, like reading order.
- `snake`: next fit, boustrophedon — shelves alternate direction (even shelves west to east,
  odd shelves east to west, their kernels streaming west: hops.py), so consecutive kernels
  stay neighbours across a shelf change.

They return None when they run out of mesh, which is not proof that nothing fits.
"""

from __future__ import annotations

import itertools
import math

from wsc.placement.spec import EdgeSpec, KernelSpec, Rect, topo_order


class _Shelf:
    def __init__(self, y: int, east: bool = True):
        self.y, self.h, self.fill, self.east = y, 0, 0, east
        self.col = (0, 0, 0)  # last column: x offset, width, filled height

    def put(self, shape: tuple[int, int], width: int, height: int, grow: bool) -> tuple[int, int] | None:
        """Place `shape` (rows, cols) on this shelf if it fits; returns (x offset, y)."""
        rows, cols = shape
        cx, cw, ch = self.col
        if cols <= cw and ch + rows <= self.h:  # below the last column's kernels
            self.col = (cx, cw, ch + rows)
            return cx, self.y + ch
        fits_h = rows <= self.h or (grow and self.y + rows <= height)
        if self.fill + cols <= width and fits_h:
            self.col = (self.fill, cols, rows)
            self.fill += cols
            self.h = max(self.h, rows)
            return self.col[0], self.y
        return None

    def rect(self, at: tuple[int, int], shape: tuple[int, int], width: int) -> Rect:
        rows, cols = shape
        x = at[0] if self.east else width - at[0] - cols
        return Rect(x, at[1], rows, cols, not self.east)


def _shapes(k: KernelSpec, width: int, height: int) -> list[tuple[int, int]]:
    return [(r, c) for r, c in k.shapes if r <= height and c <= width]


def _shelf_pack(kernels, edges, width: int, height: int, first_fit: bool) -> dict[str, Rect] | None:
    shelves: list[_Shelf] = []
    out: dict[str, Rect] = {}
    for k in topo_order(kernels, edges):
        shapes = _shapes(k, width, height)
        placed = None
        for shelf, grow in [(sh, False) for sh in (shelves if first_fit else shelves[-1:])]:
            for shape in shapes:
                at = shelf.put(shape, width, height, grow)
                if at is not None:
                    placed = shelf.rect(at, shape, width)
                    break
            if placed is not None:
                break
        if placed is None:  # a new shelf below the last one
            y = shelves[-1].y + shelves[-1].h if shelves else 0
            shelf = _Shelf(y, east=first_fit or not shelves or not shelves[-1].east)
            for shape in shapes:
                at = shelf.put(shape, width, height, True)
                if at is not None:
                    placed = shelf.rect(at, shape, width)
                    break
            if placed is None:
                return None
            shelves.append(shelf)
        out[k.name] = placed
    return out


def rowmajor(kernels: list[KernelSpec], edges: list[EdgeSpec], width: int, height: int) -> dict[str, Rect] | None:
    return _shelf_pack(kernels, edges, width, height, first_fit=True)


def snake(kernels: list[KernelSpec], edges: list[EdgeSpec], width: int, height: int) -> dict[str, Rect] | None:
    return _shelf_pack(kernels, edges, width, height, first_fit=False)


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
