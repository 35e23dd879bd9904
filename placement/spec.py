"""The placement problem as plain data: kernels that want a rectangle, edges that carry bytes.

The partitioner hands placement a kernel graph; nothing here knows about xDSL. `problem_checks`
rejects malformed input and inputs that cannot fit the mesh, with the numbers (DESIGN §4: "if a
model does not fit, say so with numbers").
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import NamedTuple

from wsc.errors import PlacementError

KINDS = ("embedding", "norm", "linear", "attention", "eltwise")


@dataclass(frozen=True)
class KernelSpec:
    """A kernel that owns one rectangle of PEs.

    `shapes` lists the allowed (rows, cols) rectangles in preference order; the first is the
    partitioner's default. `block`/`role` identify transformer-block template slots: kernels
    with the same role in different blocks are interchangeable copies (DESIGN §10).
    """

    name: str
    kind: str
    shapes: tuple[tuple[int, int], ...]
    block: int | None = None
    role: str = ""


@dataclass(frozen=True)
class EdgeSpec:
    """`bytes` of activations per program run flowing from kernel `src` to kernel `dst`.

    Edges leaving one producer with the same `tensor` carry the same data and are routed as
    one multicast tree; the default "" means "the producer's (only) output".
    """

    src: str
    dst: str
    bytes: int
    tensor: str = ""


class Rect(NamedTuple):
    """A placed kernel: top-left PE (x, y), `rows` high (y), `cols` wide (x), and its
    orientation: `flip` kernels stream east to west (input on the east column, output on the
    west column; hops.py)."""

    x: int
    y: int
    rows: int
    cols: int
    flip: bool = False

    @property
    def area(self) -> int:
        return self.rows * self.cols

    def overlaps(self, o: Rect) -> bool:
        return (self.x < o.x + o.cols and o.x < self.x + self.cols
                and self.y < o.y + o.rows and o.y < self.y + self.rows)

    def inside(self, width: int, height: int) -> bool:
        return self.x >= 0 and self.y >= 0 and self.x + self.cols <= width and self.y + self.rows <= height


def problem_checks(kernels: list[KernelSpec], edges: list[EdgeSpec], width: int, height: int) -> None:
    """Raise `PlacementError` for malformed input or a kernel graph that cannot fit the mesh."""
    if width < 1 or height < 1:
        raise PlacementError(f"mesh {width}x{height} has no PEs")
    names: set[str] = set()
    for k in kernels:
        if k.name in names:
            raise PlacementError(f"kernel {k.name!r} appears twice in the kernel graph")
        names.add(k.name)
        if not k.shapes:
            raise PlacementError(f"kernel {k.name!r} has no allowed rectangle")
        for r, c in k.shapes:
            if not (isinstance(r, int) and isinstance(c, int)) or r < 1 or c < 1:
                raise PlacementError(f"kernel {k.name!r}: rectangle {r}x{c} is not a positive integer shape")
    for e in edges:
        for end in (e.src, e.dst):
            if end not in names:
                raise PlacementError(f"edge {e.src} -> {e.dst} names unknown kernel {end!r}")
        if e.src == e.dst:
            raise PlacementError(f"edge {e.src} -> {e.dst} is a self-loop; fold it into the kernel")
        if e.bytes < 0:
            raise PlacementError(f"edge {e.src} -> {e.dst} carries {e.bytes} bytes (negative)")

    mesh = width * height
    for k in kernels:
        fitting = [s for s in k.shapes if s[0] <= height and s[1] <= width]
        if not fitting:
            shapes = ", ".join(f"{r} rows x {c} cols" for r, c in k.shapes)
            raise PlacementError(
                f"kernel {k.name!r} fits none of its allowed rectangles ({shapes}) into the "
                f"{width}x{height} mesh ({width} cols x {height} rows)",
                hint="give the partitioner a smaller grid or a larger target",
            )
    need = sum(min(r * c for r, c in k.shapes if r <= height and c <= width) for k in kernels)
    if need > mesh:
        big = max(kernels, key=lambda k: min(r * c for r, c in k.shapes))
        r, c = min(big.shapes, key=lambda s: s[0] * s[1])
        raise PlacementError(
            f"kernels need {need} PEs (sum of their smallest rectangles) but the "
            f"{width}x{height} mesh has {mesh} ({need / mesh:.0%}); the largest kernel, "
            f"{big.name!r}, needs {r} rows x {c} cols",
            hint="reduce the partitioner's PE grids or choose a larger target",
        )


def topo_order(kernels: list[KernelSpec], edges: list[EdgeSpec]) -> list[KernelSpec]:
    """Kernels in dataflow order; ties (and cycles, which are broken) keep the input order."""
    index = {k.name: i for i, k in enumerate(kernels)}
    indeg = {k.name: 0 for k in kernels}
    succ: dict[str, list[str]] = {k.name: [] for k in kernels}
    for e in edges:
        succ[e.src].append(e.dst)
        indeg[e.dst] += 1
    ready = [index[n] for n, d in indeg.items() if d == 0]
    heapq.heapify(ready)
    out: list[KernelSpec] = []
    done: set[str] = set()
    while len(out) < len(kernels):
        if not ready:  # a cycle: release the earliest waiting kernel
            heapq.heappush(ready, min(index[n] for n in indeg if n not in done))
        i = heapq.heappop(ready)
        k = kernels[i]
        if k.name in done:
            continue
        done.add(k.name)
        out.append(k)
        for s in succ[k.name]:
            indeg[s] -= 1
            if indeg[s] == 0 and s not in done:
                heapq.heappush(ready, index[s])
    return out


def check_layout(kernels: list[KernelSpec], rects: dict[str, Rect], width: int, height: int) -> None:
    """Assert a layout is legal: every kernel placed once, an allowed shape, inside, disjoint."""
    for k in kernels:
        r = rects[k.name]
        if (r.rows, r.cols) not in k.shapes:
            raise PlacementError(f"kernel {k.name!r} placed as {r.rows}x{r.cols}, not an allowed shape")
        if not r.inside(width, height):
            raise PlacementError(f"kernel {k.name!r} at {r} leaves the {width}x{height} mesh")
    # sweep over x to find overlaps in O(n log n + overlaps)
    order = sorted(rects.items(), key=lambda kv: (kv[1].x, kv[0]))
    active: list[tuple[str, Rect]] = []
    for name, r in order:
        active = [(n, a) for n, a in active if a.x + a.cols > r.x]
        for n, a in active:
            if a.overlaps(r):
                raise PlacementError(f"kernels {n!r} at {a} and {name!r} at {r} overlap")
        active.append((name, r))
