"""Deep models: solve one transformer block as a template, tile it in snake order, fix the seams.

A 32-layer model has ~300 kernels, far beyond what CP-SAT places well in a minute, but its
blocks are copies (DESIGN §10). So:

1. `find_stack` checks the blocks really are copies: same roles with the same kinds and
   shapes, the same edges inside every block, the same seam edges from block b to b+1.
2. Blocks are tiled boustrophedon in bands of equal slots: along x (rows of blocks, the odd
   rows running west) or along y (columns of blocks, the odd columns running up). A band
   running backwards holds the template's mirror image: mirrored in x with every kernel's
   orientation flipped, hops are exactly those of the template (hops.py); mirrored in y they
   differ by at most one hop per even-height end.
3. The template is one block placed by CP-SAT in a slot-sized box, with its seam edges costed
   against its own copy one template width further on (a forward seam) and against its
   mirror image one template height down (a turn at a band's end), weighted by how many of
   each the tiling has; those extents are variables, so the template optimises the block, the
   block-to-block hops and its own compactness together. A few band shapes (blocks per band,
   near the block's natural width) get a short solve with every kernel streaming east (fast to
   solve and prove); the two whose tiled layouts are cheapest continue with free orientations.
   The slot pitch is then the template's actual extent.
4. Kernels outside the blocks (embedding, final norm, LM head) go around the tiled blocks
   (`bestfit.py`, then a CP-SAT window with every block as an obstacle). The grid is tried
   flush west or east of a strip reserved for them, and with or without its first slot left
   free for the kernels feeding block 0 (the embedding then sits where a block before it
   would); the cheapest complete layout wins.
5. Seams: for each consecutive block pair, a CP-SAT window over their two slots frees both
   blocks' kernels (free orientations) with everything else fixed. Congruent windows (every
   forward seam looks the same, and so does every turn at the same end) are solved once and
   reused. (On the GPT-2 and Llama-shaped graphs these windows have found nothing the
   template had missed; they get a small share of the budget.)
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from wsc.placement.bestfit import best_fit
from wsc.placement.cpsat import Clock, Term, Window, parallel, solve, window_cost
from wsc.placement.greedy import layered, rowmajor
from wsc.placement.hops import in_port, mirror_x, mirror_y, objective, out_port
from wsc.placement.spec import EdgeSpec, KernelSpec, Rect, topo_order

FILL_MAX = 0.8  # a slot box fuller than this leaves the template no room to choose
MAX_BOXES = 4  # band shapes given a first, short template solve
FINALISTS = 2  # band shapes whose template gets the rest of the budget


@dataclass
class Stack:
    blocks: list[int]
    names: dict[int, dict[str, str]]  # block -> role -> kernel name
    roles: list[str]  # in the first block's order
    seam: list[tuple[str, str]]  # (role in block b, role in block b+1) pairs with an edge
    extras: list[KernelSpec]  # kernels outside the blocks


@dataclass(frozen=True)
class Slots:
    axis: str  # "x": bands are rows of blocks; "y": bands are columns of blocks
    per: int  # blocks per band
    width: int  # slot width (the template's extent once solved)
    height: int
    x0: int  # west edge of the grid (a strip for the extras may lie west of it)
    skip: int = 0  # slots left free before the first block, for the kernels feeding it

    def origin(self, i: int) -> tuple[int, int, bool]:
        """Slot of the i-th block: (x, y, mirrored); odd bands run backwards."""
        band, j = divmod(i + self.skip, self.per)
        back = band % 2 == 1
        pos = self.per - 1 - j if back else j
        if self.axis == "x":
            return self.x0 + pos * self.width, band * self.height, back
        return self.x0 + band * self.width, pos * self.height, back


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
        if other.keys() != first.keys() or any(
            (other[r].kind, other[r].shapes) != (first[r].kind, first[r].shapes) for r in first
        ):
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
    return Stack(blocks, names, list(first), seam, extras)


def strip_width(extras: list[KernelSpec], width: int, height: int) -> int:
    """Narrowest full-height strip the extras pack into (0 without extras)."""
    if not extras:
        return 0
    for w in sorted({c for k in extras for _, c in k.shapes if c <= width}):
        if rowmajor(extras, [], w, height) is not None:
            return w
    return width


def slot_boxes(stack: Stack, kernel: dict[str, KernelSpec], edges: list[EdgeSpec], width: int,
               height: int) -> list[Slots]:
    """Boxes the template may use: one per band shape (blocks per band), at most MAX_BOXES,
    those closest to the block's natural width (its dataflow layers side by side) first.

    Rows of blocks (axis x) come first: a block is a chain streaming along x, so a row of
    copies has 1-hop seams. Columns (axis y) are the fallback when no row box fits a block.
    """
    n = len(stack.blocks)
    block = [kernel[stack.names[stack.blocks[0]][r]] for r in stack.roles]
    names = {k.name for k in block}
    area = sum(min(r * c for r, c in k.shapes) for k in block)
    natural = layered(block, [e for e in edges if e.src in names and e.dst in names], width, height)
    guess = max(1, width // max(r.x + r.cols for r in natural.values())) if natural else 1
    for axis in ("x", "y"):
        found = []
        for per in range(1, n + 1):
            bands = math.ceil(n / per)
            if per > 1 and math.ceil(n / (per - 1)) == bands:
                continue  # as many bands with fewer blocks each: strictly roomier
            w, h = (width // per, height // bands) if axis == "x" else (width // bands, height // per)
            if w < 1 or h < 1 or area > FILL_MAX * w * h:
                continue
            if all(any(r <= h and c <= w for r, c in k.shapes) for k in block):
                found.append(Slots(axis, per, w, h, 0))
        if found:
            found.sort(key=lambda s: (abs(s.per - guess) if axis == "x" else 0, s.per))
            return sorted(found[:MAX_BOXES], key=lambda s: s.per)
    return []


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
    block = [kernel[mine[r]] for r in stack.roles]
    inner = [e for e in edges if e.src in names and e.dst in names]
    win = Window(block, (0, 0, box.width, box.height), terms, anchored=False, cuts=tcuts,
                 ports="flip" if hint else "east")
    win.hint = hint or layered(block, inner, box.width, box.height, lambda r: window_cost(terms, r)) \
        or rowmajor(block, inner, box.width, box.height)
    return win


def grid_for(template: dict[str, Rect], axis: str, n: int, width: int, height: int, x0: int,
             skip: int = 0) -> Slots | None:
    """The densest band layout of `n` template copies after `skip` free slots, pitch = the
    template's extent."""
    w = max(r.x + r.cols for r in template.values())
    h = max(r.y + r.rows for r in template.values())
    n += skip
    room_w, per = width - x0, 0
    if axis == "x":
        per = min(n, room_w // w)
        fits = per > 0 and math.ceil(n / per) * h <= height
    else:
        per = min(n, height // h)
        fits = per > 0 and math.ceil(n / per) * w <= room_w
    return Slots(axis, per, w, h, x0, skip) if fits else None


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
        win = Window([kernel[n] for n in free], box, terms_around(set(free), edges, rects),
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

    The template budget is spent in two rounds: a short solve for every band shape, then the
    FINALISTS whose tiled layouts were cheapest continue from their first-round solution.
    """
    kernel = {k.name: k for k in kernels}
    boxes = slot_boxes(stack, kernel, edges, width, height)
    if not boxes:
        return None
    strip = strip_width(stack.extras, width, height)
    head = head_extras(stack, edges)
    skip = 1 if head else 0  # the layouts that leave block 0's slot to the embedding
    rep = _rep_block(stack)
    role_of = {v: r for r, v in stack.names[rep].items()}

    def rounds(n: int) -> float:  # wall-clock rounds when n solves share `workers` threads
        return math.ceil(n / max(1, workers))

    first_dt = 0.2 * det_time / rounds(len(boxes))
    final_dt = 0.55 * det_time / rounds(min(FINALISTS, len(boxes)))
    extras_dt = 0.1 * det_time / rounds(min(FINALISTS, len(boxes)))
    seams_dt = 0.15 * det_time

    block_edges = [e for e in edges if kernel[e.src].block is not None and kernel[e.dst].block is not None]

    def rank(box: Slots, res) -> int | None:
        """Cost of the block-to-block edges once tiled (the extras come later)."""
        if res.rects is None:
            return None
        template = {role_of[n]: r for n, r in res.rects.items()}
        slots = grid_for(template, box.axis, len(stack.blocks), width, height, 0)
        return None if slots is None else objective(instantiate(stack, template, slots), block_edges)

    def tile(box: Slots, res) -> Tiled | None:
        if res.rects is None:
            return None
        template = {role_of[n]: r for n, r in res.rects.items()}
        best = None
        w_t = max(r.x + r.cols for r in template.values())
        h_t = max(r.y + r.rows for r in template.values())
        skips = {0, 1} if head and rowmajor(head, [], w_t, h_t) is not None else {0}
        for x0, skip in sorted((x0, skip) for x0 in {0, strip} for skip in skips):
            slots = grid_for(template, box.axis, len(stack.blocks), width, height, x0, skip)
            if slots is None:
                continue
            full = place_extras(stack, kernels, edges, instantiate(stack, template, slots), width, height,
                                det_time=extras_dt / 4, seed=seed, clock=clock)
            if full is not None:
                cost = objective(full, edges)
                if best is None or cost < best.cost:
                    best = Tiled(full, cost, slots, res.cost, res.bound, res.status)
        return best

    def first(box: Slots):
        res = solve(template_window(stack, kernel, edges, box, cuts, skip=skip), det_time=first_dt,
                    seed=seed, clock=clock)
        return box, res, rank(box, res)

    scored = [(c, i, box, res) for i, (box, res, c) in enumerate(parallel(first, boxes, workers))
              if c is not None]
    if not scored:
        return None
    scored.sort(key=lambda s: s[:2])

    def final(item) -> Tiled | None:
        _, _, box, res = item
        win = template_window(stack, kernel, edges, box, cuts, hint=res.rects, skip=skip)
        return tile(box, solve(win, det_time=final_dt, seed=seed, clock=clock))

    tried = [t for t in parallel(final, scored[:FINALISTS], workers) if t is not None]
    if not tried:
        return None
    best = min(tried, key=lambda t: t.cost)  # first on ties: finalists come in a fixed order
    rects, improved, windows = refine_seams(stack, kernel, edges, best.rects, best.slots,
                                            det_time=seams_dt, seed=seed, clock=clock)
    best.rects, best.cost = rects, objective(rects, edges)
    best.seams_improved, best.seam_windows = improved, windows
    return best
