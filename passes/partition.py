"""Partition: `wsc.graph` → `wsc.kernel` (DESIGN §2, §6).

Walks the canonical graph once, in order. Anchor ops become kernels — `embedding` (with a
following add of a `position_embedding` folded in), `layer_norm`/`rms_norm`, `linear`,
`attention` (with the `rope` of its q and k folded in, and per-head `rms_norm`s before it).
Every elementwise op joins the epilogue of the kernel that produced its latest activation
operand, as long as it keeps that kernel's tile shape; its other activation operands become
the kernel's `extras` (a residual, a gate). What cannot join becomes a standalone `eltwise`
kernel. Reshapes that keep the token-major matrix view are free, and slices of the last
dimension become windows on the edges that read them. Anything else is an `UnsupportedOpError` naming the op and its module.

Activations are token-major matrices at this level: `[1, S, F]` becomes `[S, F]`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from xdsl.dialects import func
from xdsl.dialects.builtin import (
    FloatAttr,
    IntegerAttr,
    ModuleOp,
    StringAttr,
    TensorType,
    UnitAttr,
    f64,
    i64,
)
from xdsl.ir import Block, Operation, Region, SSAValue

from wsc.errors import UnsupportedOpError
from wsc.ir import graph as g
from wsc.ir import kernel as kn
from wsc.ir.attrs import shape_of, tensor

# --- what the walk tracks -------------------------------------------------------------


@dataclass(frozen=True)
class MatRef:
    """An activation as a window of columns of a kernel result (or of the ids input)."""

    kernel: int  # index into the kernel list; -1 for the token ids
    value: SSAValue  # the graph value inside that kernel's group
    rows: int
    col0: int
    col1: int
    full_cols: int

    @property
    def full(self) -> bool:
        return self.col0 == 0 and self.col1 == self.full_cols

    @property
    def cols(self) -> int:
        return self.col1 - self.col0


@dataclass
class Group:
    kind: str
    anchor: Operation
    props: dict
    inputs: list[MatRef]
    core: SSAValue  # the graph value of the kernel's own result
    core_shape: tuple[int, int]
    epilogue: list[Operation] = field(default_factory=list)
    extras: list[MatRef] = field(default_factory=list)
    members: set[SSAValue] = field(default_factory=set)  # graph values computed in the group
    outputs: list[SSAValue] = field(default_factory=list)

    @property
    def source(self) -> tuple[str, str]:
        return self.anchor.source  # type: ignore[attr-defined]


def _matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    return (math.prod(shape[:-1]) if len(shape) > 1 else 1, shape[-1])


def _f(v: float) -> FloatAttr:
    return FloatAttr(float(v), f64)


def _i(v: int) -> IntegerAttr:
    return IntegerAttr(int(v), i64)


class Partitioner:
    def __init__(self, func_op: func.FuncOp):
        self.func = func_op
        self.groups: list[Group] = []
        self.mat: dict[SSAValue, MatRef] = {}
        self.weight: dict[SSAValue, g.WeightOp] = {}
        self.posemb: dict[SSAValue, str] = {}
        self.rope: dict[SSAValue, tuple[SSAValue, g.RopeOp]] = {}
        self.head_norm: dict[SSAValue, g.RmsNormOp] = {}  # per-head norms attention applies
        self.ids = func_op.body.block.args[0]
        s = shape_of(self.ids.type)
        self.seq = math.prod(s)
        self.mat[self.ids] = MatRef(-1, self.ids, self.seq, 0, 1, 1)
        self.result: MatRef | None = None

    # --- helpers ----------------------------------------------------------------------

    def error(self, op: Operation, why: str) -> UnsupportedOpError:
        module = op.source[1] if isinstance(op, g.GraphOp) else ""
        return UnsupportedOpError(op.name, module, why)

    def act(self, op: Operation, v: SSAValue) -> MatRef:
        if v in self.rope:
            raise self.error(op, "a rotary embedding must feed attention directly")
        if v in self.head_norm:
            raise self.error(op, "a per-head RMSNorm must feed attention's q or k directly "
                                 "(before its rotary embedding, if any)")
        if v not in self.mat:
            raise self.error(op, f"operand {v.name_hint or ''} is not an activation wsc can place")
        return self.mat[v]

    def new_group(self, kind: str, anchor: Operation, props: dict, inputs: list[MatRef]) -> Group:
        shape = _matrix_shape(shape_of(anchor.results[0].type))
        grp = Group(kind, anchor, props, inputs, anchor.results[0], shape)
        grp.members.add(anchor.results[0])
        self.groups.append(grp)
        idx = len(self.groups) - 1
        self.mat[anchor.results[0]] = MatRef(idx, anchor.results[0], *shape[:1], 0, shape[1], shape[1])
        return grp

    def weight_name(self, op: Operation, v: SSAValue) -> tuple[str, bool]:
        w = self.weight.get(v)
        if w is None:
            raise self.error(op, "expected a weight operand")
        return w.ref, w.transpose is not None

    # --- the walk ---------------------------------------------------------------------

    def run(self) -> None:
        for op in self.func.body.block.ops:
            self.visit(op)

    def visit(self, op: Operation) -> None:
        if isinstance(op, g.WeightOp):
            self.weight[op.result] = op
        elif isinstance(op, g.PositionEmbeddingOp):
            self.posemb[op.result] = self.weight_name(op, op.table)[0]
        elif isinstance(op, g.ReshapeOp):
            self.reshape(op)
        elif isinstance(op, g.SliceOp):
            self.slice(op)
        elif isinstance(op, g.EmbeddingOp):
            self.new_group("embedding", op, {"table": self.weight_name(op, op.table)[0]},
                           [self.act(op, op.ids)])
        elif isinstance(op, g.RmsNormOp) and op.head_dim is not None:
            self.head_norm[op.result] = op  # applied by the attention that reads it
        elif isinstance(op, (g.LayerNormOp, g.RmsNormOp)):
            props = {"norm": "layer" if isinstance(op, g.LayerNormOp) else "rms",
                     "gamma": self.weight_name(op, op.gamma)[0], "eps": op.eps.value.data}
            if isinstance(op, g.LayerNormOp):
                props["beta"] = self.weight_name(op, op.beta)[0]
            elif op.offset:
                props["gamma_offset"] = op.offset
            self.new_group("norm", op, props, [self.act(op, op.x)])
        elif isinstance(op, g.LinearOp):
            name, tr = self.weight_name(op, op.w)
            k, n = shape_of(op.w.type)
            props = {"weight": name, "transpose_weight": tr, "k": k, "n": n}
            if op.b is not None:
                props["bias"] = self.weight_name(op, op.b)[0]
            self.new_group("linear", op, props, [self.act(op, op.x)])
        elif isinstance(op, g.RopeOp):
            self.rope[op.result] = (op.x, op)
        elif isinstance(op, g.AttentionOp):
            self.attention(op)
        elif isinstance(op, (g.UnaryOp, g.BinaryOp, g.CastOp)):
            self.elementwise(op)
        elif isinstance(op, func.ReturnOp):
            self.result = self.act(op, op.arguments[0])
        else:
            raise self.error(op, "no kernel implements it")

    def reshape(self, op: g.ReshapeOp) -> None:
        if op.x in self.weight:
            raise self.error(op, "reshaped weights are not supported")
        ref = self.act(op, op.x)
        rows, cols = _matrix_shape(shape_of(op.result.type))
        if (rows, cols) != (ref.rows, ref.cols):
            raise self.error(op, f"reshape changes the token-major matrix {ref.rows}x{ref.cols} "
                                 f"to {rows}x{cols}; only leading dimensions may change")
        self.mat[op.result] = ref

    def slice(self, op: g.SliceOp) -> None:
        ref = self.act(op, op.x)
        dim, start, end, step = op.bounds()
        if dim != len(shape_of(op.x.type)) - 1 or step != 1:
            raise self.error(op, "only contiguous slices of the last (feature) dimension are supported")
        self.mat[op.result] = MatRef(ref.kernel, ref.value, ref.rows, ref.col0 + start,
                                     ref.col0 + end, ref.full_cols)

    def attention(self, op: g.AttentionOp) -> None:
        q, k = op.q, op.k
        ropes = [self.rope.get(v) for v in (q, k)]
        props = {"heads": op.heads.value.data, "kv_heads": op.kv_heads.value.data,
                 "head_dim": op.head_dim.value.data, "scale": op.scale.value.data,
                 "causal": op.causal is not None}
        if op.window is not None:
            props["window"] = op.window.value.data
        if any(ropes):
            if not all(ropes):
                raise self.error(op, "rotary embedding on only one of q and k")
            rq, rk = ropes[0][1], ropes[1][1]
            if (rq.inv_freq.data, rq.scaling.value.data) != (rk.inv_freq.data, rk.scaling.value.data):
                raise self.error(op, "q and k use different rotary embeddings")
            props["rope_inv_freq"] = rq.inv_freq.data
            props["rope_scaling"] = rq.scaling.value.data
            q, k = ropes[0][0], ropes[1][0]
        q, k = self.head_norms(op, q, k, props)
        if not props["causal"]:
            raise self.error(op, "only causal (decoder) attention is supported")
        self.new_group("attention", op, props, [self.act(op, v) for v in (q, k, op.v)])

    def head_norms(self, op: g.AttentionOp, q: SSAValue, k: SSAValue, props: dict):
        """Fold per-head RMSNorms of q and k (Qwen3) into the attention; their inputs."""
        norms = {name: self.head_norm.get(v) for name, v in (("q", q), ("k", k))}
        found = [n for n in norms.values() if n is not None]
        if not found:
            return q, k
        if any(n.group != op.head_dim.value.data for n in found):
            raise self.error(op, "a per-head norm over groups other than the attention heads")
        if len({(n.eps.value.data, n.offset) for n in found}) > 1:
            raise self.error(op, "q and k norms with different eps or gain offsets")
        for name, n in norms.items():
            if n is not None:
                props[f"{name}_norm"] = self.weight_name(op, n.gamma)[0]
        props["qk_norm_eps"] = found[0].eps.value.data
        if found[0].offset:
            props["qk_norm_offset"] = found[0].offset
        return tuple(n.x if n is not None else v for n, v in zip(norms.values(), (q, k)))

    def elementwise(self, op: Operation) -> None:
        operands = list(op.operands)
        acts = [v for v in operands if v not in self.weight]
        if any(v in self.posemb for v in operands):
            self.position_add(op)
            return
        refs = [self.act(op, v) for v in acts]
        out_shape = _matrix_shape(shape_of(op.results[0].type))
        for v, r in zip(acts, refs):
            if (r.rows, r.cols) != out_shape:
                raise self.error(op, f"operand of {r.rows}x{r.cols} broadcast to {out_shape}")
        for v in operands:
            if v in self.weight and math.prod(shape_of(v.type)) != out_shape[1]:
                raise self.error(op, "weights in elementwise ops must broadcast over rows")
        owners = [r.kernel for r in refs if r.kernel >= 0]
        target = self.groups[max(owners)] if owners else None
        ok = target is not None and target.core_shape == out_shape and all(
            r.full for r in refs if r.kernel == self.groups.index(target)
        )
        if not ok:
            first = refs[0]
            grp = Group("eltwise", op, {}, [first], first.value, out_shape)
            self.groups.append(grp)
            target = grp
            # the standalone kernel's core is its first input; map it as a member value
            self._join(grp, op, refs)
            return
        self._join(target, op, refs)

    def _join(self, grp: Group, op: Operation, refs: list[MatRef]) -> None:
        idx = self.groups.index(grp)
        for r in refs:
            if r.kernel == idx and r.value in grp.members:
                continue
            if grp.kind == "eltwise" and r == grp.inputs[0]:
                continue
            if r not in grp.extras:
                grp.extras.append(r)
        grp.epilogue.append(op)
        grp.members.add(op.results[0])
        rows, cols = grp.core_shape
        self.mat[op.results[0]] = MatRef(idx, op.results[0], rows, 0, cols, cols)

    def position_add(self, op: Operation) -> None:
        if not isinstance(op, g.AddOp) or op.rhs is None:
            raise self.error(op, "position embeddings may only be added to token embeddings")
        emb, pos = (op.lhs, op.rhs) if op.rhs in self.posemb else (op.rhs, op.lhs)
        ref = self.act(op, emb)
        grp = self.groups[ref.kernel] if ref.kernel >= 0 else None
        if grp is None or grp.kind != "embedding" or grp.epilogue or "position_table" in grp.props:
            raise self.error(op, "position embeddings must be added right after the token embedding")
        grp.props["position_table"] = self.posemb[pos]
        self.mat[op.result] = ref  # the kernel's core is now the sum of both lookups

    # --- outputs ----------------------------------------------------------------------

    def find_outputs(self) -> None:
        used: list[MatRef] = []
        for grp in self.groups:
            used += grp.inputs + grp.extras
        if self.result is None:
            raise UnsupportedOpError("func.return", "", "the model returns nothing")
        used.append(self.result)
        for r in used:
            if r.kernel < 0:
                continue
            grp = self.groups[r.kernel]
            if r.value not in grp.outputs:
                grp.outputs.append(r.value)
        for grp in self.groups:
            if not grp.outputs:  # nothing reads it: still keep its last value
                grp.outputs.append(grp.epilogue[-1].results[0] if grp.epilogue else grp.core)


KERNEL_CLASSES = {
    "embedding": kn.EmbeddingKernel,
    "norm": kn.NormKernel,
    "linear": kn.LinearKernel,
    "attention": kn.AttentionKernel,
    "eltwise": kn.EltwiseKernel,
}


def _kernel_names(groups: list[Group]) -> list[str]:
    names, seen = [], {}
    for grp in groups:
        base = grp.source[1] or grp.kind
        if grp.kind in ("eltwise",):
            base = f"{base}.{grp.kind}"
        n = seen.get(base, 0)
        seen[base] = n + 1
        names.append(base if n == 0 else f"{base}.{n}")
    return names


def _props(grp: Group, name: str) -> dict:
    p: dict = {"sym_name": StringAttr(name)}
    fx, module = grp.source
    if fx:
        p["fx"] = StringAttr(fx)
    if module:
        p["module"] = StringAttr(module)
    for k, v in grp.props.items():
        if isinstance(v, bool):
            if v:
                p[k] = UnitAttr()
        elif isinstance(v, int):
            p[k] = _i(v)
        elif isinstance(v, float):
            p[k] = _f(v)
        else:
            p[k] = StringAttr(v)
    if grp.kind == "embedding":
        p["dim"] = _i(grp.core_shape[1])
    return p


def _clone_elementwise(op: Operation, env: dict[SSAValue, SSAValue], shape: tuple[int, int]) -> Operation:
    return type(op).create(
        operands=[env[v] for v in op.operands],
        result_types=[TensorType(op.results[0].type.element_type, list(shape))],
        properties=dict(op.properties),
        attributes=dict(op.attributes),
    )


def build_module(p: Partitioner) -> ModuleOp:
    names = _kernel_names(p.groups)
    ids_t = tensor((p.seq, 1), "i32")
    out_t = tensor((p.result.rows, p.result.cols), "f32")  # type: ignore[union-attr]
    block = Block(arg_types=[ids_t])
    values: dict[tuple[int, SSAValue], SSAValue] = {}  # (kernel, graph value) -> kernel value

    def operand(ref: MatRef) -> SSAValue:
        base = block.args[0] if ref.kernel < 0 else values[(ref.kernel, ref.value)]
        if ref.full:
            return base
        sl = g.SliceOp.create(
            operands=[base],
            properties={"dim": _i(1), "start": _i(ref.col0), "end": _i(ref.col1), "step": _i(1)},
            result_types=[tensor((ref.rows, ref.cols), "f32")],
        )
        block.add_op(sl)
        return sl.result

    for idx, (grp, name) in enumerate(zip(p.groups, names)):
        ins = [operand(r) for r in grp.inputs]
        extras = [operand(r) for r in grp.extras]
        core_t = tensor(grp.core_shape, "f32")
        ep = Block(arg_types=[core_t] + [e.type for e in extras])
        env: dict[SSAValue, SSAValue] = {}  # group member value -> epilogue value
        if grp.kind != "eltwise":
            env[grp.core] = ep.args[0]
        extra_arg = dict(zip(grp.extras, ep.args[1:]))
        for op in grp.epilogue:
            local: dict[SSAValue, SSAValue] = {}
            for v in op.operands:
                if v in p.weight:
                    w = p.weight[v].clone()
                    ep.add_op(w)
                    local[v] = w.result
                    continue
                ref = p.mat[v]
                if ref.kernel == idx and ref.value in env and ref.full:
                    local[v] = env[ref.value]
                elif grp.kind == "eltwise" and ref == grp.inputs[0]:
                    local[v] = ep.args[0]
                else:
                    local[v] = extra_arg[ref]
            new = _clone_elementwise(op, local, grp.core_shape)
            ep.add_op(new)
            env[op.results[0]] = new.results[0]
        yields = [env[v] for v in grp.outputs]
        ep.add_op(kn.YieldOp.create(operands=yields))
        cls = KERNEL_CLASSES[grp.kind]
        kop = cls.create(
            operands=ins + extras,
            result_types=[tensor(grp.core_shape, "f32") for _ in grp.outputs],
            properties={**_props(grp, name), "operandSegmentSizes": _segments(len(ins), len(extras))},
            regions=[Region(ep)],
        )
        block.add_op(kop)
        for v, res in zip(grp.outputs, kop.results):
            values[(idx, v)] = res
    block.add_op(func.ReturnOp(operand(p.result)))  # type: ignore[arg-type]
    f = func.FuncOp("forward", ([ids_t], [out_t]), Region(block))
    return ModuleOp([f])


def _segments(a: int, b: int):
    from xdsl.dialects.builtin import DenseArrayBase, i32

    return DenseArrayBase.from_list(i32, [a, b])


def partition(graph_module: ModuleOp) -> ModuleOp:
    """The kernel graph of a canonical `wsc.graph` module (grids are chosen later)."""
    funcs = [op for op in graph_module.ops if isinstance(op, func.FuncOp)]
    if len(funcs) != 1:
        raise UnsupportedOpError("builtin.module", "", "expected exactly one func.func @forward")
    p = Partitioner(funcs[0])
    p.run()
    p.find_outputs()
    module = build_module(p)
    module.verify()
    return module


from dataclasses import dataclass as _dataclass  # noqa: E402

from xdsl.context import Context  # noqa: E402
from xdsl.passes import ModulePass  # noqa: E402


@_dataclass(frozen=True)
class PartitionPass(ModulePass):
    """`wsc opt -p partition`: replace a canonical graph module by its kernel graph (no grids)."""

    name = "partition"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        kernel = partition(op)
        for child in list(op.body.block.ops):
            child.detach()
            child.erase()
        for child in list(kernel.body.block.ops):
            child.detach()
            op.body.block.add_op(child)
