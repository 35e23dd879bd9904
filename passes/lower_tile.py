"""Lower: `wsc.kernel` + placement → `wsc.tile` (DESIGN §2).

Every kernel becomes one region per phase (prefill and decode share the region, its origin and
its persistent buffers); every edge of the kernel graph becomes one channel per phase, named
after the consumer and the operand it feeds. Edges carry column windows when the consumer
reads a slice of the producer's result (GPT-2's q/k/v split of `c_attn`). The token ids come
from the host on channel `in.ids`; the logits go back on `out.logits`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from xdsl.dialects import func
from xdsl.dialects.builtin import IntegerAttr, ModuleOp, StringAttr, i64
from xdsl.ir import Block, Region, SSAValue

from wsc.ir import graph as g
from wsc.ir import tile as t
from wsc.ir.attrs import DTYPE_BYTES, get_ints, shape_of
from wsc.ir.kernel import KernelOp
from wsc.passes.kernels import PHASES, LowerCtx, build_region
from wsc.passes.tile_builder import Inbound, WeightShard

IDS_CHANNEL = "in.ids"
LOGITS_CHANNEL = "out.logits"
HOST = t.HOST


@dataclass(frozen=True)
class Edge:
    """One operand of one kernel: where its data comes from."""

    src: str  # producer kernel name, or "host"
    output: int  # producer result index
    dst: str
    slot: tuple[str, int]
    cols: tuple[int, int] | None  # column window of the producer's result, None = all

    @property
    def channel(self) -> str:
        if self.src == HOST:
            return IDS_CHANNEL
        return f"{self.dst}.{self.slot[0]}{self.slot[1]}"


@dataclass
class KernelGraph:
    kernels: list[KernelOp]
    edges: list[Edge]
    result: tuple[str, int] = ("", 0)  # (kernel, output) that produces the logits
    widths: dict[tuple[str, int], int] = field(default_factory=dict)  # result -> columns

    @classmethod
    def of(cls, module: ModuleOp) -> KernelGraph:
        f = next(op for op in module.ops if isinstance(op, func.FuncOp))
        ids = f.body.block.args[0]
        where: dict[SSAValue, tuple[str, int, tuple[int, int] | None]] = {ids: (HOST, 0, None)}
        kg = cls([], [])
        for op in f.body.block.ops:
            if isinstance(op, g.SliceOp):
                src, out, win = where[op.x]
                _, start, end, _ = op.bounds()
                base = win[0] if win else 0
                where[op.result] = (src, out, (base + start, base + end))
            elif isinstance(op, KernelOp):
                kg.kernels.append(op)
                name = op.kernel_name
                for i, v in enumerate(op.inputs):
                    src, out, win = where[v]
                    kg.edges.append(Edge(src, out, name, ("input", i), win))
                for i, v in enumerate(op.extras):
                    src, out, win = where[v]
                    kg.edges.append(Edge(src, out, name, ("extra", i), win))
                for i, r in enumerate(op.outputs):
                    where[r] = (name, i, None)
                    kg.widths[(name, i)] = shape_of(r.type)[1]
            elif isinstance(op, func.ReturnOp):
                src, out, win = where[op.arguments[0]]
                if win is not None:
                    raise ValueError("the logits must be a whole kernel result")
                kg.result = (src, out)
        return kg

    def by_name(self) -> dict[str, KernelOp]:
        return {k.kernel_name: k for k in self.kernels}


def fifo_depths(kg: KernelGraph, chunks: int) -> dict[Edge, int]:
    """Messages each edge's FIFO holds in a chunked prefill: as many chunks as the longest
    path from its producer to its consumer, so that a residual that skips a few kernels lets
    its producer run that many chunks ahead instead of stalling the pipeline (bounded by the
    chunks there are). A direct edge needs one: the consumer takes a chunk out of its FIFO
    before it computes on it, so the producer can already send the next."""
    succ: dict[str, set[str]] = {}
    for e in kg.edges:
        succ.setdefault(e.src, set()).add(e.dst)
    order = [HOST] + [k.kernel_name for k in kg.kernels]  # program order is topological
    rank = {n: i for i, n in enumerate(order)}

    def longest_from(src: str) -> dict[str, int]:
        dist = {src: 0}
        for n in order[rank[src]:]:
            if n in dist:
                for m in succ.get(n, ()):
                    dist[m] = max(dist.get(m, 0), dist[n] + 1)
        return dist

    cache: dict[str, dict[str, int]] = {}
    out = {}
    for e in kg.edges:
        if e.src not in cache:
            cache[e.src] = longest_from(e.src)
        out[e] = max(1, min(chunks, cache[e.src].get(e.dst, 1)))
    return out


def inbound(kg: KernelGraph, ctx: LowerCtx, phase: str) -> dict[str, dict]:
    """Per kernel, where each of its operands comes from in `phase` (channel, window, FIFO
    depth): what the lowering wires up and the planner sizes SRAM with."""
    depth = fifo_depths(kg, ctx.chunks) if phase == "prefill" else {}
    by_name = kg.by_name()
    tokens = ctx.tokens(phase)
    out: dict[str, dict] = {k.kernel_name: {} for k in kg.kernels}
    for e in kg.edges:
        window, last = None, False
        if phase == "prefill" and by_name[e.dst].last_row is not None:
            window, last = (tokens - 1, tokens, *edge_cols(e, kg)), True  # the last row only
        elif e.cols is not None:
            window = (0, tokens, e.cols[0], e.cols[1])
        out[e.dst][e.slot] = Inbound(e.channel, window, depth.get(e, 1), last)
    return out


def edge_bytes(e: Edge, kg: KernelGraph, tokens: int, dtype: str) -> int:
    if e.src == HOST:
        return tokens * 4
    return tokens * len(range(*edge_cols(e, kg))) * DTYPE_BYTES[dtype]


def edge_cols(e: Edge, kg: KernelGraph) -> tuple[int, int]:
    return e.cols if e.cols else (0, kg.widths[(e.src, e.output)])


@dataclass(frozen=True)
class Route:
    """What placement says about one kernel-to-kernel edge."""

    hops: int = 0
    lanes: int = 1
    contention: float = 1.0  # bytes on the route's busiest link / this edge's bytes
    color: int | None = None
    order: str = ""


def _i(v: int) -> IntegerAttr:
    return IntegerAttr(int(v), i64)


def lower_to_tile(kmodule: ModuleOp, ctx: LowerCtx, *, budget: int,
                  origins: Mapping[str, tuple[int, int]],
                  routes: Mapping[tuple[str, str], Route] | None = None,
                  phases: tuple[str, ...] = PHASES) -> tuple[ModuleOp, list[WeightShard]]:
    """The tile programs of both phases, and the weight shards their buffers start from."""
    kg = KernelGraph.of(kmodule)
    routes = routes or {}
    shards: dict[str, WeightShard] = {}
    progs = []
    for phase in phases:
        tokens = ctx.tokens(phase)
        inputs = inbound(kg, ctx, phase)
        outputs: dict[str, dict[int, list[str]]] = {k.kernel_name: {} for k in kg.kernels}
        channels = []
        by_name = kg.by_name()
        for e in kg.edges:
            rows = 1 if phase == "prefill" and by_name[e.dst].last_row is not None else tokens
            if e.src != HOST:
                outputs[e.src].setdefault(e.output, []).append(e.channel)
            channels.append(_channel(e.channel, e.src, e.dst, edge_bytes(e, kg, rows, ctx.dtype),
                                     routes.get((e.src, e.dst))))
        src, out = kg.result
        outputs[src].setdefault(out, []).append(LOGITS_CHANNEL)
        rows = 1 if by_name[src].last_row is not None else tokens
        width = kg.widths[kg.result]
        channels.append(_channel(LOGITS_CHANNEL, src, HOST, rows * width * DTYPE_BYTES[ctx.dtype], None))
        regions = []
        base: dict[str, int] = {}  # stack -> where its next member's SRAM starts
        for k in kg.kernels:
            name = k.kernel_name
            b = build_region(k, k.grid_shape, ctx, phase, budget=budget, inputs=inputs[name],
                             outputs=outputs[name])
            for s in b.shards:
                shards.setdefault(s.key, s)
            stack = k.stack.data if k.stack is not None else None
            if stack is None:
                regions.append(b.finish(origins[name]))
                continue
            # a member's share is what the planner sized (the larger phase), so its persistent
            # buffers lie at the same offsets in both programs
            need = b.allocate()
            share = k.sram_bytes.value.data if k.sram_bytes is not None else need
            if need > share:
                raise ValueError(f"kernel {name} needs {need} bytes per PE in {phase}, "
                                 f"more than the {share} its stack reserves")
            regions.append(b.finish(origins[name], base=base.get(stack, 0), stack=stack))
            base[stack] = base.get(stack, 0) + share
        block = Block([*regions, *channels])
        progs.append(t.ProgramOp.create(
            properties={"sym_name": StringAttr(phase), "phase": StringAttr(phase),
                        "tokens": _i(tokens)},
            regions=[Region(block)],
        ))
    module = ModuleOp(progs)
    module.attributes[t.SRAM_BUDGET_ATTR] = _i(budget)
    return module, list(shards.values())


def _channel(name: str, src: str, dst: str, nbytes: int, route: Route | None) -> t.ChannelOp:
    props = {"sym_name": StringAttr(name), "src": StringAttr(src), "dst": StringAttr(dst),
             "bytes": _i(nbytes)}
    if route is not None:
        props["hops"] = _i(route.hops)
        props["lanes"] = _i(route.lanes)
        props["load"] = _i(max(nbytes, round(route.contention * nbytes)))
        if route.color is not None:
            props["color"] = _i(route.color)
        if route.order:
            props["route"] = StringAttr(route.order)
    return t.ChannelOp.create(properties=props)


def region_grid(r: t.RegionOp) -> tuple[int, int]:
    return get_ints(r.shape)  # type: ignore[return-value]
