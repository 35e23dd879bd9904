"""Deep models: solve one transformer block as a template, tile it in snake order, fix the seams.

A 32-layer model has ~300 kernels, far beyond what CP-SAT places well in a minute, but its
blocks are copies (DESIGN §10). So:

1. `find_stack` checks the blocks really are copies: same roles with the same kinds, the same
   edges inside every block, the same seam edges from block b to b+1. A role's shape is chosen
   once, for every block (the compiler adopts the shape placement picks, so the blocks' tile
   programs stay identical): it ranges over the shapes every block allows.
2. Blocks are tiled boustrophedon in bands of equal slots: along x (rows of blocks, the odd
   rows running west) or along y (columns of blocks, the odd columns running up). A band
   running backwards holds the template's mirror image: mirrored in x with every kernel's
   orientation flipped, hops are exactly those of the template (hops.py); mirrored in y they
   differ by at most one hop per even-height end. `grid_options` picks the band shapes
   (blocks per band, a slot left free before block 0 or not) and the largest slot each allows
   while the kernels outside the blocks still fit around the full slots: at the planner's
   default 70% of a WSE-3 mesh, the ~265k spare PEs must still hold a 38x683 embedding and a
   171x171 LM head, so a strip on the south or east side may be reserved for them.
3. The template is one block placed by CP-SAT in a slot-sized box, with its seam edges costed
   against its own copy one template width further on (a forward seam) and against its
   mirror image one template height down (a turn at a band's end), weighted by how many of
   each the tiling has; those extents are variables, so the template optimises the block, the
   block-to-block hops and its own compactness together. It is warm started from the cheapest
   of the layered, row-major and snake layouts of the block that fit the box. The two most
   promising band shapes get a solve with every kernel streaming east (fast to solve), then
   continue with free orientations. The slot pitch is then the template's actual extent.
4. Kernels outside the blocks (embedding, final norm, LM head) go around the tiled blocks
   (`bestfit.py`, then a CP-SAT window with every block as an obstacle). The grid is tried in
   each corner of the mesh; the cheapest complete layout wins.
5. Seams: for each consecutive block pair, a CP-SAT window over their two slots frees both
   blocks' kernels (positions and orientations; shapes stay the template's) with everything
   else fixed. Congruent windows (every forward seam looks the same, and so does every turn at
   the same end) are solved once and reused. (On the GPT-2 and Llama-shaped graphs these
   windows have found little the template had missed; they get a small share of the budget.)
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, replace

import numpy as np

from wsc.placement.bestfit import best_fit
from wsc.placement.cpsat import Clock, Term, Window, parallel, solve, window_cost
from wsc.placement.greedy import layered, rowmajor, snake
from wsc.placement.hops import in_port, mirror_x, mirror_y, objective, out_port
from wsc.placement.lns import improve
from wsc.placement.spec import EdgeSpec, KernelSpec, Rect, topo_order

FILL_MAX = 0.8  # a slot box fuller than this leaves the template no room to choose
MAX_BOXES = 4  # band shapes considered, best first
FINALISTS = 2  # band shapes whose templates are solved (side by side on two workers)
# Shares of the deterministic budget: per finalist, its template streaming east (fast to
# solve), then with free orientations from there, then neighbourhoods of that (lns.py), then
# the extras around each tiling; seams last. On the real Llama-3-8B template, 0.15 + 0.4 of
# the whole-window solve and 0.3 of neighbourhoods end ~20% below 0.85 of the solve alone,
# and GPT-2's 7-kernel template still reaches the optimum of its box.
SHARES = {"east": 0.15, "flip": 0.4, "lns": 0.3, "extras": 0.05, "seams": 0.1}
PACK_DTIME = 0.05  # deterministic seconds to find any packing of a block in a box


@dataclass
class Stack:
    blocks: list[int]
    names: dict[int, dict[str, str]]  # block -> role -> kernel name
    roles: list[str]  # in the first block's order
    seam: list[tuple[str, str]]  # (role in block b, role in block b+1) pairs with an edge
    extras: list[KernelSpec]  # kernels outside the blocks
    shapes: dict[str, tuple[tuple[int, int], ...]]  # role -> the shapes every block allows

    def specs(self, kernel: dict[str, KernelSpec], block: int) -> list[KernelSpec]:
        """The block's kernels in role order, each limited to its role's shapes."""
        return [replace(kernel[self.names[block][r]], shapes=self.shapes[r]) for r in self.roles]


@dataclass(frozen=True)
class Slots:
    axis: str  # "x": bands are rows of blocks; "y": bands are columns of blocks
    per: int  # blocks per band
    width: int  # slot width (the template's extent once solved)
    height: int
    x0: int = 0  # north-west corner of the grid
    skip: int = 0  # slots left free before the first block, for the kernels feeding it
    y0: int = 0

    def origin(self, i: int) -> tuple[int, int, bool]:
        """Slot of the i-th block: (x, y, mirrored); odd bands run backwards."""
        band, j = divmod(i + self.skip, self.per)
        back = band % 2 == 1
        pos = self.per - 1 - j if back else j
        if self.axis == "x":
            return self.x0 + pos * self.width, self.y0 + band * self.height, back
        return self.x0 + band * self.width, self.y0 + pos * self.height, back

    def extent(self, n: int) -> tuple[int, int]:
        """(cols, rows) the grid of `n` blocks spans."""
        used = n + self.skip
        bands, along = math.ceil(used / self.per), min(self.per, used)
        if self.axis == "x":
            return along * self.width, bands * self.height
        return bands * self.width, along * self.height


@dataclass
class Tiled:
    rects: dict[str, Rect]
    cost: int
    slots: Slots
    template_cost: int  # the template window's cost (one block + its seam)
    template_bound: int
    template_status: str
    seams_improved: int = 0
    seam_windows: int = 0


def find_stack(kernels: list[KernelSpec], edges: list[EdgeSpec]) -> Stack | None:
    """The repeated blocks, or None when they are not exact copies of each other."""
    by_block: dict[int, dict[str, KernelSpec]] = {}
    extras = []
    for k in kernels:
        if k.block is None:
            extras.append(k)
            continue
        roles = by_block.setdefault(k.block, {})
        if not k.role or k.role in roles:
            return None
        roles[k.role] = k
    blocks = sorted(by_block)
    if len(blocks) < 2 or blocks != list(range(blocks[0], blocks[0] + len(blocks))):
        return None
    first = by_block[blocks[0]]
    for b in blocks[1:]:
        other = by_block[b]
        if other.keys() != first.keys() or any(other[r].kind != first[r].kind for r in first):
            return None
    # one shape per role for all blocks: those every block allows, in the first block's order
    shapes = {r: tuple(s for s in k.shapes if all(s in by_block[b][r].shapes for b in blocks))
              for r, k in first.items()}
    if not all(shapes.values()):
        return None
    kernel = {k.name: k for k in kernels}
    inside: dict[int, Counter] = {b: Counter() for b in blocks}
    across: dict[int, Counter] = {b: Counter() for b in blocks}
    for e in edges:
        s, d = kernel[e.src], kernel[e.dst]
        if s.block is None or d.block is None:
            continue
        key = (s.role, d.role, e.bytes, e.tensor)
        if d.block == s.block:
            inside[s.block][key] += 1
        elif d.block == s.block + 1:
            across[s.block][key] += 1
        else:
            return None
    if any(inside[b] != inside[blocks[0]] for b in blocks):
        return None
    if any(across[b] != across[blocks[0]] for b in blocks[:-1]):
        return None
    seam = sorted({(a, b) for a, b, _, _ in across[blocks[0]]})
    names = {b: {r: k.name for r, k in by_block[b].items()} for b in blocks}
    return Stack(blocks, names, list(first), seam, extras, shapes)


def _slot_rects(slots: Slots, n: int) -> list[Rect]:
    return [Rect(*slots.origin(i)[:2], slots.height, slots.width) for i in range(n)]


def extras_fit(extras: list[KernelSpec], slots: Slots, n: int, width: int, height: int) -> bool:
    """Whether the extras, largest first, find room around `n` full slots (a sufficient test)."""
    taken = _slot_rects(slots, n)
    for k in sorted(extras, key=lambda k: (-min(r * c for r, c in k.shapes), k.name)):
        for rows, cols in k.shapes:
            if rows > height or cols > width:
                continue
            free = np.ones((height - rows + 1, width - cols + 1), dtype=bool)  # free[y, x]: origin
            for t in taken:  # the origins whose rectangle would overlap t
                free[max(0, t.y - rows + 1): t.y + t.rows, max(0, t.x - cols + 1): t.x + t.cols] = False
            at = np.flatnonzero(free)
            if len(at):
                y, x = divmod(int(at[0]), free.shape[1])
                taken.append(Rect(x, y, rows, cols))
                break
        else:
            return False
    return True


def grid_options(stack: Stack, kernel: dict[str, KernelSpec], edges: list[EdgeSpec], width: int,
                 height: int) -> list[Slots]:
    """Slot boxes the template may use, at most MAX_BOXES: one per band shape (axis, blocks
    per band, free slots before block 0), with the largest slot the block packs into that
    leaves the extras room around the grid. When the bands' share of the mesh leaves too
    little, the slot is shrunk in height (room on the south side), in width (room on the east
    side) or in both in proportion, the largest of these kept. Roomiest first, counting only
    the width up to the block's natural (one row) width; rows of blocks (axis x) first on
    ties, as a row of copies has 1-hop seams.
    """
    n = len(stack.blocks)
    block = stack.specs(kernel, _rep_block(stack))
    names = {k.name for k in block}
    inner = [e for e in edges if e.src in names and e.dst in names]
    area = sum(min(r * c for r, c in k.shapes) for k in block)
    lo_h = max(min(r for r, _ in k.shapes) for k in block)
    lo_w = max(min(c for _, c in k.shapes) for k in block)
    head = head_extras(stack, edges)

    def fits(s: Slots) -> bool:
        return extras_fit(stack.extras, s, n, width, height)

    def largest(lo: int, hi: int, at) -> int | None:
        """The largest v in [lo, hi] with fits(at(v)), by bisection (room grows as v shrinks)."""
        if lo > hi or not fits(at(lo)):
            return None
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if fits(at(mid)) else (lo, mid - 1)
        return lo

    cands = []
    for axis in ("x", "y"):
        for skip in (0, 1) if head else (0,):
            used = n + skip
            for per in range(1, used + 1):
                bands = math.ceil(used / per)
                if per > 1 and math.ceil(used / (per - 1)) == bands:
                    continue  # as many bands with fewer blocks each: strictly roomier
                w, h = (width // per, height // bands) if axis == "x" else (width // bands, height // per)
                if w < lo_w or h < lo_h or area > FILL_MAX * w * h:
                    continue
                if skip and rowmajor(head, [], w, h) is None:
                    continue  # the free slot is for the kernels feeding block 0
                box = Slots(axis, per, w, h, 0, skip)
                if not fits(box):
                    shrunk = []
                    for lo, hi, at in (  # shorter, narrower, or both in proportion
                        (max(lo_h, math.ceil(area / (w * FILL_MAX))), h, lambda v: replace(box, height=v)),
                        (max(lo_w, math.ceil(area / (h * FILL_MAX))), w, lambda v: replace(box, width=v)),
                        (max(lo_w, math.ceil(lo_h * w / h)), w, lambda v: replace(box, width=v, height=v * h // w)),
                    ):
                        v = largest(lo, hi, at)
                        s = at(v) if v is not None else None
                        if s is not None and s.height >= lo_h and area <= FILL_MAX * s.width * s.height:
                            shrunk.append(s)
                    if not shrunk:
                        continue
                    box = max(shrunk, key=lambda s: (s.width * s.height, s.width))
                cands.append(box)
    # a block is a chain streaming along x: a slot narrower than the chain laid out in a row
    # folds it, which costs hops (on the real GPT-2 and Llama graphs this ranks the band
    # shapes in the order their templates come out)
    row = layered(block, inner, 10 ** 9, 10 ** 9)
    natural = max(r.x + r.cols for r in row.values()) if row else 1

    def room(s: Slots) -> float:
        return s.width * s.height * min(1.0, s.width / natural)

    cands.sort(key=lambda s: (-room(s), s.axis, s.skip, s.per, s.width))
    chosen: list[Slots] = []
    for s in cands:
        if len(chosen) == MAX_BOXES:
            break
        if block_layout(block, inner, s.width, s.height) is not None:
            chosen.append(s)
    return chosen


def _rep_block(stack: Stack) -> int:
    """The template's block: an inner one, so its edges are the typical block's."""
    return stack.blocks[1] if len(stack.blocks) >= 3 else stack.blocks[0]


def template_window(stack: Stack, kernel: dict[str, KernelSpec], edges: list[EdgeSpec],
                    box: Slots, cuts: list[tuple[list[int], int]],
                    hint: dict[str, Rect] | None = None, skip: int = 0) -> Window:
    """One block in one slot box; its seam edges go to its own copy one extent further on.

    In row bands (axis x) a seam is either forward (the next slot east) or a turn (the slot
    below, mirrored). With N blocks in bands of `per`, there are T = bands - 1 turns and
    F = N - 1 - T forward seams, so the terms are weighted N (inside the block), F and T:
    the template minimises N times the average cost per block.
    """
    n = len(stack.blocks)
    turns = math.ceil((n + skip) / box.per) - 1 if box.axis == "x" else 0
    scale = {"": n, box.axis: n - 1 - turns, "turn": turns}
    rep = _rep_block(stack)
    mine, nxt = stack.names[rep], stack.names[rep + 1]
    names = set(mine.values())
    role_in_next = {m: r for r, m in nxt.items()}
    terms: list[Term] = []
    term_of: dict[int, list[int]] = {}  # edge -> its terms (a seam has a forward and a turn term)
    for i, e in enumerate(edges):
        if e.src in names and e.dst in names:
            term_of[i] = [len(terms)]
            terms.append(Term(e.bytes * scale[""], e.src, e.dst))
        elif e.src in names and e.dst in role_in_next:
            for pitch in (box.axis, "turn"):
                if scale[pitch] > 0:
                    terms.append(Term(e.bytes * scale[pitch], e.src, mine[role_in_next[e.dst]], pitch=pitch))
    # a cut of the bound (bounds.py) on this block's edges, or on the seam from the block
    # before (the same edges one block earlier, by translation), holds for the template too,
    # scaled by the smallest weight its terms got
    prev = {m: r for r, m in stack.names.get(rep - 1, {}).items()}
    role_here = {m: r for r, m in mine.items()}
    for i, e in enumerate(edges):
        if e.src in prev and e.dst in names:
            seam = Term(e.bytes * scale[box.axis], mine[prev[e.src]], mine[role_here[e.dst]], pitch=box.axis)
            if seam in terms:
                term_of[i] = [terms.index(seam)]
    tcuts = []
    for idx, lb in cuts:
        if all(i in term_of for i in idx):
            ids = [j for i in idx for j in term_of[i]]
            tcuts.append((ids, lb * min(scale[terms[j].pitch] for j in ids)))
    block = stack.specs(kernel, rep)
    inner = [e for e in edges if e.src in names and e.dst in names]
    ports = "flip" if hint else "east"
    win = Window(block, (0, 0, box.width, box.height), terms, anchored=False, cuts=tcuts, ports=ports)
    if hint is None:  # the cheapest greedy layout of the block in the box, streaming east
        def cost(rects):
            return window_cost(terms, rects)

        hint = block_layout(block, inner, box.width, box.height, cost)
    win.hint = hint
    return win


def block_layout(block: list[KernelSpec], inner: list[EdgeSpec], width: int, height: int,
                 cost=None) -> dict[str, Rect] | None:
    """The cheapest greedy layout of one block in a `width` x `height` box, every kernel
    streaming east: layered, row-major or snake in dataflow order, row-major largest first
    (packs tight boxes best), else whatever a short CP-SAT feasibility solve finds; None when
    nothing does."""
    cost = cost or (lambda rects: objective(rects, inner))
    big_first = sorted(block, key=lambda k: (-min(r * c for r, c in k.shapes), k.name))
    found = [layered(block, inner, width, height, cost), rowmajor(block, inner, width, height),
             snake(block, inner, width, height), rowmajor(big_first, [], width, height)]
    found = [{n: r._replace(flip=False) for n, r in g.items()} for g in found if g is not None]
    if not found:
        res = solve(Window(block, (0, 0, width, height), [], anchored=False, ports="east", lp=False),
                    det_time=PACK_DTIME, seed=0)
        found = [res.rects] if res.rects is not None else []
    return min(found, key=cost, default=None)


def anchored(template: dict[str, Rect], box: Slots, n: int, width: int, height: int) -> list[Slots]:
    """The band layout of `box` at the template's pitch (its extent), in each corner of the mesh."""
    w = max(r.x + r.cols for r in template.values())
    h = max(r.y + r.rows for r in template.values())
    slots = replace(box, width=w, height=h, x0=0, y0=0)
    gw, gh = slots.extent(n)
    if gw > width or gh > height:
        return []
    return [replace(slots, x0=x0, y0=y0) for y0 in sorted({0, height - gh}) for x0 in sorted({0, width - gw})]


def head_extras(stack: Stack, edges: list[EdgeSpec]) -> list[KernelSpec]:
    """Kernels outside the blocks that feed the first block (the embedding)."""
    first = set(stack.names[stack.blocks[0]].values())
    feeding = {e.src for e in edges if e.dst in first}
    return [k for k in stack.extras if k.name in feeding]


def instantiate(stack: Stack, template: dict[str, Rect], slots: Slots) -> dict[str, Rect]:
    """Copy the template (keyed by role) into every block's slot, mirrored in backward bands."""
    out = {}
    for i, b in enumerate(stack.blocks):
        sx, sy, back = slots.origin(i)
        for role, r in template.items():
            r = Rect(sx + r.x, sy + r.y, r.rows, r.cols, r.flip)
            if back:
                r = (mirror_x(r, sx, sx + slots.width) if slots.axis == "x"
                     else mirror_y(r, sy, sy + slots.height))
            out[stack.names[b][role]] = r
    return out


def terms_around(free: set[str], edges: list[EdgeSpec], rects: dict[str, Rect]) -> list[Term]:
    """Objective terms of the edges touching `free`; the other ends become fixed ports."""
    terms = []
    for e in edges:
        if e.src in free or e.dst in free:
            src = e.src if e.src in free else out_port(rects[e.src])
            dst = e.dst if e.dst in free else in_port(rects[e.dst])
            terms.append(Term(e.bytes, src, dst))
    return terms


def place_extras(stack: Stack, kernels: list[KernelSpec], edges: list[EdgeSpec],
                 blocks: dict[str, Rect], width: int, height: int, *, det_time: float,
                 seed: int, clock: Clock) -> dict[str, Rect] | None:
    """Put the kernels outside the blocks around the tiled blocks; None if they do not fit."""
    if not stack.extras:
        return dict(blocks)
    order = [k for k in topo_order(kernels, edges) if k.block is None]
    greedy = best_fit(order, edges, blocks, width, height)
    if greedy is None:  # the dataflow order boxed a big one in: largest first
        greedy = best_fit(sorted(order, key=lambda k: (-min(r * c for r, c in k.shapes), k.name)),
                          edges, blocks, width, height)
    if greedy is None:
        return None
    free = {k.name for k in order}
    terms = terms_around(free, edges, {**blocks, **greedy})
    # a window around the greedy spots and the ports they connect to, not the whole mesh:
    # hundreds of obstacles cost CP-SAT more to load than to search
    pts = [p for t in terms for p in (t.src, t.dst) if not isinstance(p, str)]
    pts += [(r.x, r.y) for r in greedy.values()] + [(r.x + r.cols, r.y + r.rows) for r in greedy.values()]
    margin = max(max(r, c) for k in order for r, c in k.shapes)
    box = (max(0, min(p[0] for p in pts) - margin), max(0, min(p[1] for p in pts) - margin),
           min(width, max(p[0] for p in pts) + margin + 1), min(height, max(p[1] for p in pts) + margin + 1))
    inside = [r for r in blocks.values() if r.x < box[2] and r.x + r.cols > box[0]
              and r.y < box[3] and r.y + r.rows > box[1]]
    win = Window(order, box, terms, obstacles=inside, hint=greedy)
    res = solve(win, det_time=det_time, seed=seed, clock=clock)
    return {**blocks, **(res.rects or greedy)}


def _window_key(win: Window):
    """The window translated to its box origin, so congruent seams share one solve."""
    x0, y0, x1, y1 = win.box
    idx = {k.name: i for i, k in enumerate(win.kernels)}

    def end(e):
        return ("k", idx[e]) if isinstance(e, str) else ("p", e[0] - x0, e[1] - y0)

    assert win.hint is not None
    return (
        (x1 - x0, y1 - y0),
        tuple((k.shapes, *win.hint[k.name]._replace(x=win.hint[k.name].x - x0, y=win.hint[k.name].y - y0))
              for k in win.kernels),
        tuple(sorted((o.x - x0, o.y - y0, o.rows, o.cols) for o in win.obstacles)),
        tuple((t.weight, end(t.src), end(t.dst)) for t in win.terms),
    )


def refine_seams(stack: Stack, kernel: dict[str, KernelSpec], edges: list[EdgeSpec],
                 rects: dict[str, Rect], slots: Slots, *, det_time: float, seed: int,
                 clock: Clock) -> tuple[dict[str, Rect], int, int]:
    """Re-solve each block-to-block seam in the window of its two slots; keep improvements.

    Returns the new layout, how many seams moved and how many distinct windows were solved.
    """
    rects = dict(rects)
    cache: dict = {}
    improved = windows = 0
    spent = 0.0
    per = det_time / 6  # a handful of distinct seam shapes: forward, backward, the turns, the ends
    for i in range(len(stack.blocks) - 1):
        b, nb = stack.blocks[i], stack.blocks[i + 1]
        free = sorted(set(stack.names[b].values()) | set(stack.names[nb].values()))
        (ax, ay, _), (bx, by, _) = slots.origin(i), slots.origin(i + 1)
        x0, y0 = min(ax, bx), min(ay, by)
        box = (x0, y0, max(ax, bx) + slots.width, max(ay, by) + slots.height)
        inside = [r for n, r in rects.items() if n not in free and r.x < box[2] and r.x + r.cols > box[0]
                  and r.y < box[3] and r.y + r.rows > box[1]]
        fixed_shapes = [replace(kernel[n], shapes=((rects[n].rows, rects[n].cols),)) for n in free]
        win = Window(fixed_shapes, box, terms_around(set(free), edges, rects),
                     obstacles=inside, hint={n: rects[n] for n in free})
        key = _window_key(win)
        if key not in cache:
            if spent >= det_time:
                continue
            windows += 1
            res = solve(win, det_time=min(per, det_time - spent), seed=seed, clock=clock)
            spent += res.det_time
            moved = None
            if res.rects is not None and res.cost < window_cost(win.terms, win.hint):
                moved = [res.rects[n]._replace(x=res.rects[n].x - x0, y=res.rects[n].y - y0) for n in free]
            cache[key] = moved
        moved = cache[key]
        if moved is not None:
            improved += 1
            for n, r in zip(free, moved):
                rects[n] = r._replace(x=x0 + r.x, y=y0 + r.y)
    return rects, improved, windows


def place_deep(stack: Stack, kernels: list[KernelSpec], edges: list[EdgeSpec], width: int,
               height: int, *, cuts: list[tuple[list[int], int]], det_time: float, seed: int,
               workers: int, clock: Clock) -> Tiled | None:
    """Template, tiling, extras and seams, within about `det_time` deterministic seconds.

    The FINALISTS best band shapes (`grid_options`' order) get a template each, side by side;
    the cheapest complete layout wins. A first ranking round of short solves over more band
    shapes was tried and dropped: at the CLI's budget its solves were too short to rank the
    real graphs' band shapes as well as the room they leave the block does.
    """
    kernel = {k.name: k for k in kernels}
    boxes = grid_options(stack, kernel, edges, width, height)
    if not boxes:
        return None
    n = len(stack.blocks)
    rep = _rep_block(stack)
    role_of = {v: r for r, v in stack.names[rep].items()}

    def rounds(k: int) -> float:  # wall-clock rounds when k solves share `workers` threads
        return math.ceil(k / max(1, workers))

    finalists = min(FINALISTS, len(boxes))
    share = det_time / rounds(finalists)
    east_dt, flip_dt, lns_dt = SHARES["east"] * share, SHARES["flip"] * share, SHARES["lns"] * share
    extras_dt = SHARES["extras"] * share
    seams_dt = SHARES["seams"] * det_time

    def tile(box: Slots, res) -> Tiled | None:
        if res.rects is None:
            return None
        template = {role_of[k]: r for k, r in res.rects.items()}
        best = None
        grids = anchored(template, box, n, width, height)
        for slots in grids:
            full = place_extras(stack, kernels, edges, instantiate(stack, template, slots), width, height,
                                det_time=extras_dt / len(grids), seed=seed, clock=clock)
            if full is not None:
                cost = objective(full, edges)
                if best is None or cost < best.cost:
                    best = Tiled(full, cost, slots, res.cost, res.bound, res.status)
        return best

    def template(box: Slots) -> Tiled | None:
        east = solve(template_window(stack, kernel, edges, box, cuts, skip=box.skip), det_time=east_dt,
                     seed=seed, clock=clock)
        if east.rects is None:
            return None
        win = template_window(stack, kernel, edges, box, cuts, hint=east.rects, skip=box.skip)
        res = solve(win, det_time=flip_dt, seed=seed, clock=clock)
        if res.status != "OPTIMAL":
            res = improve(win, res, det_time=lns_dt, seed=seed, clock=clock)
        return tile(box, res)

    tried: list[Tiled] = []
    for start in range(0, len(boxes), finalists):  # the next boxes only when these all fail
        tried = [t for t in parallel(template, boxes[start:start + finalists], workers) if t is not None]
        if tried:
            break
    if not tried:
        return None
    best = min(tried, key=lambda t: t.cost)  # first on ties: finalists come in a fixed order
    rects, improved, windows = refine_seams(stack, kernel, edges, best.rects, best.slots,
                                            det_time=seams_dt, seed=seed, clock=clock)
    best.rects, best.cost = rects, objective(rects, edges)
    best.seams_improved, best.seam_windows = improved, windows
    return best
