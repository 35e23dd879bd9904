"""The hop model: where data leaves a kernel, where it enters one, and what a transfer costs.

Activations stream through a kernel along x. A kernel's input enters at the middle PE of one
vertical edge and its output leaves from the middle PE of the opposite edge; which way round is
the kernel's orientation, chosen by the placer (mirroring a region's SPMD program in x costs
nothing). Concretely, for a rectangle at (x, y), `rows` x `cols`, with r = y + rows // 2:

    east-streaming (flip = False):  in_port = (x, r)             out_port = (x + cols - 1, r)
    west-streaming (flip = True):   in_port = (x + cols - 1, r)  out_port = (x, r)

    hops(p -> c) = |out_port(p).x - in_port(c).x| + |out_port(p).y - in_port(c).y|

That is the number of links on a dimension-ordered route between the two port PEs: a consumer
flush east of an east-streaming producer, on the same middle row, is 1 hop away. Ports are
linear in the origin, the shape-choice booleans and the orientation boolean, which lets CP-SAT
optimise this exact cost (cpsat.py); the router (routing.py) starts and ends every route at
these PEs, so `hops` is the length of the route the simulator sees. Orientation is what makes
boustrophedon layouts cheap: a row running west is the mirror image of one running east.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from wsc.placement.spec import EdgeSpec, Rect


def out_port(r: Rect) -> tuple[int, int]:
    return (r.x if r.flip else r.x + r.cols - 1, r.y + r.rows // 2)


def in_port(r: Rect) -> tuple[int, int]:
    return (r.x + r.cols - 1 if r.flip else r.x, r.y + r.rows // 2)


def hops(src: Rect, dst: Rect) -> int:
    (ax, ay), (bx, by) = out_port(src), in_port(dst)
    return abs(ax - bx) + abs(ay - by)


def objective(rects: Mapping[str, Rect], edges: Iterable[EdgeSpec]) -> int:
    """Σ over edges of bytes × hops: the quantity every placer in this package minimises."""
    return sum(e.bytes * hops(rects[e.src], rects[e.dst]) for e in edges)


def mirror_x(r: Rect, x0: int, x1: int) -> Rect:
    """`r` mirrored in x inside [x0, x1), streaming the other way: hops are unchanged."""
    return Rect(x0 + x1 - r.x - r.cols, r.y, r.rows, r.cols, not r.flip)


def mirror_y(r: Rect, y0: int, y1: int) -> Rect:
    """`r` mirrored in y inside [y0, y1); hops change by at most 1 per even-height end."""
    return Rect(r.x, y0 + y1 - r.y - r.rows, r.rows, r.cols, r.flip)
