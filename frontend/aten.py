"""The ATen op table: each core ATen op the decoders use, as `wsc.graph` ops.

One small converter per op, registered by overload name (`aten.add.Tensor`). Converters are
faithful: structure (attention, rotary embeddings, RMSNorm) is recognised later by graph passes.
Views become view ops, copies and metadata checks disappear, and a python scalar or one-element
folded constant becomes a binary op's `scalar` property. An op missing here raises
`UnsupportedOpError` in the importer, naming the op and its module path.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from torch import fx
from xdsl.dialects.builtin import UnitAttr
from xdsl.ir import SSAValue

from wsc.errors import UnsupportedOpError
from wsc.frontend import constants
from wsc.frontend.importer import Importer, module_path, tensor_type
from wsc.frontend.sliding_window import attention_window
from wsc.ir import graph as g
from wsc.ir.attrs import dtype_of, f64_attr, i64_attr, ints, shape_of, string, tensor

Converter = Callable[[Importer, fx.Node], object]
CONVERTERS: dict[str, Converter] = {}

# Pure data movement: a view of a folded constant is imported as a view op of that constant.
VIEW_OPS = {
    "aten.view.default", "aten._unsafe_view.default", "aten.reshape.default",
    "aten.unsqueeze.default", "aten.squeeze.dim", "aten.squeeze.dims", "aten.squeeze.default",
    "aten.permute.default", "aten.expand.default", "aten.slice.Tensor", "aten.select.int",
    "aten.clone.default", "aten.alias.default", "aten.detach.default",
    "aten.lift_fresh_copy.default", "aten._to_copy.default",
}


def aten(*names: str) -> Callable[[Converter], Converter]:
    def register(fn: Converter) -> Converter:
        for name in names:
            CONVERTERS[name] = fn
        return fn

    return register


def _unsupported(node: fx.Node, why: str) -> UnsupportedOpError:
    return UnsupportedOpError(Importer.op_name(node), module_path(node), why)


def _shape(node: fx.Node) -> tuple[int, ...]:
    return tuple(node.meta["val"].shape)


def _arg(node: fx.Node, index: int, name: str, default=None):
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


# --- views and copies -----------------------------------------------------------------


@aten("aten.clone.default", "aten.alias.default", "aten.detach.default",
      "aten.lift_fresh_copy.default")
def _identity(imp: Importer, node: fx.Node):
    return imp.value(node.args[0])


@aten("aten.dropout.default")
def _dropout(imp: Importer, node: fx.Node):
    if _arg(node, 2, "train", False) and _arg(node, 1, "p", 0.0):
        raise _unsupported(node, "dropout in training mode (export the model in eval mode)")
    return imp.value(node.args[0])


@aten("aten._to_copy.default")
def _to_copy(imp: Importer, node: fx.Node):
    x = imp.value(node.args[0])
    if x.type == tensor_type(node.meta["val"]):
        return x  # device or layout copies only
    return imp.build(g.CastOp, node, [x])


@aten("aten.view.default", "aten._unsafe_view.default", "aten.reshape.default",
      "aten.unsqueeze.default", "aten.squeeze.dim", "aten.squeeze.dims", "aten.squeeze.default")
def _reshape(imp: Importer, node: fx.Node):
    x = imp.value(node.args[0])
    if shape_of(x.type) == _shape(node):
        return x
    return imp.build(g.ReshapeOp, node, [x])


@aten("aten.permute.default")
def _permute(imp: Importer, node: fx.Node):
    src, perm = node.args[0], [int(p) for p in node.args[1]]
    rank = len(perm)
    perm = [p % rank for p in perm]
    if src.op == "placeholder" and src.name in imp.trace.state_names and rank == 2 \
            and perm == [1, 0] and not imp.trace.is_static(src):
        return imp.weight(src, transpose=True)  # Linear / Conv1D weights read as [K, N]
    x = imp.value(src)
    if perm == list(range(rank)):
        return x
    return imp.build(g.TransposeOp, node, [x], perm=ints(perm))


@aten("aten.expand.default")
def _expand(imp: Importer, node: fx.Node):
    x = imp.value(node.args[0])
    if shape_of(x.type) == _shape(node):
        return x
    if len(shape_of(x.type)) < len(_shape(node)):  # expand may add leading dims
        ones = (1,) * (len(_shape(node)) - len(shape_of(x.type)))
        x = imp.build(g.ReshapeOp, node, [x], tensor(ones + shape_of(x.type), _dtype(x)))
    return imp.build(g.ExpandOp, node, [x])


def _dtype(x: SSAValue) -> str:
    return dtype_of(x.type)


def _slice(imp: Importer, node: fx.Node, x: SSAValue, dim: int, start: int, end: int,
           step: int, result_type=None) -> SSAValue:
    xs = shape_of(x.type)
    dim %= len(xs)
    start, end, step = slice(start, end, step).indices(xs[dim])
    if (start, end, step) == (0, xs[dim], 1):
        return x
    return imp.build(g.SliceOp, node, [x], result_type, dim=i64_attr(dim), start=i64_attr(start),
                     end=i64_attr(end), step=i64_attr(step))


@aten("aten.slice.Tensor")
def _slice_tensor(imp: Importer, node: fx.Node):
    x = imp.value(node.args[0])
    dim = _arg(node, 1, "dim", 0)
    start = _arg(node, 2, "start", None)
    end = _arg(node, 3, "end", None)
    step = _arg(node, 4, "step", 1)
    start = 0 if start is None else start
    end = shape_of(x.type)[dim] if end is None else min(end, shape_of(x.type)[dim])
    return _slice(imp, node, x, dim, start, end, step)


@aten("aten.select.int")
def _select(imp: Importer, node: fx.Node):
    x = imp.value(node.args[0])
    dim, index = node.args[1], node.args[2]
    xs = list(shape_of(x.type))
    dim %= len(xs)
    index %= xs[dim]
    xs[dim] = 1
    row = _slice(imp, node, x, dim, index, index + 1, 1, tensor(xs, _dtype(x)))
    return imp.build(g.ReshapeOp, node, [row])


@aten("aten.split_with_sizes.default", "aten.split.Tensor")
def _split(imp: Importer, node: fx.Node):
    x = imp.value(node.args[0])
    dim = _arg(node, 2, "dim", 0) % len(shape_of(x.type))
    total = shape_of(x.type)[dim]
    sizes = node.args[1]
    if isinstance(sizes, int):
        sizes = [min(sizes, total - s) for s in range(0, total, sizes)]
    parts, start = [], 0
    for val, size in zip(node.meta["val"], sizes):
        parts.append(_slice(imp, node, x, dim, start, start + size, 1, tensor_type(val)))
        start += size
    return tuple(parts)


@aten("getitem")
def _getitem(imp: Importer, node: fx.Node):
    parts = imp.values.get(node.args[0].name)
    if not isinstance(parts, tuple) or parts[node.args[1]] is None:
        raise UnsupportedOpError(str(node.args[0].target), module_path(node),
                                 f"output {node.args[1]} of this op is not supported")
    return parts[node.args[1]]


@aten("aten.cat.default")
def _cat(imp: Importer, node: fx.Node):
    inputs = [imp.value(a) for a in node.args[0] if math.prod(_shape(a)) > 0]
    if len(inputs) == 1:
        return inputs[0]
    dim = _arg(node, 1, "dim", 0) % len(_shape(node))
    return imp.build(g.ConcatOp, node, inputs, dim=i64_attr(dim))


# --- embeddings and matrix products ---------------------------------------------------


@aten("aten.embedding.default")
def _embedding(imp: Importer, node: fx.Node):
    table, ids = node.args[0], node.args[1]
    if imp.trace.is_static(ids):
        positions = imp.static_value(ids).detach().cpu().numpy()
        if not constants.is_positions(positions, imp.trace.seq_len):
            raise _unsupported(node, "an embedding of constant indices other than the positions "
                                     f"0..{imp.trace.seq_len - 1}")
        return imp.build(g.PositionEmbeddingOp, node, [imp.value(table)])
    return imp.build(g.EmbeddingOp, node, [imp.value(table), imp.value(ids)])


def _is_weight(imp: Importer, value: SSAValue) -> bool:
    return isinstance(value.owner, g.WeightOp) and not value.owner.weight_name.data.startswith("folded.")


@aten("aten.addmm.default")
def _addmm(imp: Importer, node: fx.Node):
    if node.kwargs.get("beta", 1) != 1 or node.kwargs.get("alpha", 1) != 1:
        raise _unsupported(node, "addmm with beta or alpha other than 1")
    b, x, w = (imp.value(a) for a in node.args[:3])
    if _is_weight(imp, w) and _is_weight(imp, b) and len(shape_of(b.type)) == 1:
        return imp.build(g.LinearOp, node, [x, w, b])
    product = imp.build(g.MatmulOp, node, [x, w])
    return imp.build(g.AddOp, node, [product, b])


@aten("aten.mm.default")
def _mm(imp: Importer, node: fx.Node):
    x, w = imp.value(node.args[0]), imp.value(node.args[1])
    if _is_weight(imp, w):
        return imp.build(g.LinearOp, node, [x, w])
    return imp.build(g.MatmulOp, node, [x, w])


@aten("aten.bmm.default")
def _bmm(imp: Importer, node: fx.Node):
    return imp.build(g.MatmulOp, node, [imp.value(node.args[0]), imp.value(node.args[1])])


# --- normalizations, reductions, attention --------------------------------------------


@aten("aten.native_layer_norm.default")
def _layer_norm(imp: Importer, node: fx.Node):
    x, normalized, gamma, beta, eps = node.args
    if len(normalized) != 1 or gamma is None or beta is None:
        raise _unsupported(node, "layer norm over more than the last dim, or without affine weights")
    val = node.meta["val"][0]
    out = imp.build(g.LayerNormOp, node, [imp.value(x), imp.value(gamma), imp.value(beta)],
                    tensor_type(val), eps=f64_attr(eps))
    return (out, None, None)


@aten("aten._softmax.default")
def _softmax(imp: Importer, node: fx.Node):
    x, dim = imp.value(node.args[0]), node.args[1]
    return imp.build(g.SoftmaxOp, node, [x], dim=i64_attr(dim % len(shape_of(x.type))))


@aten("aten.mean.dim")
def _mean(imp: Importer, node: fx.Node):
    x = imp.value(node.args[0])
    rank = len(shape_of(x.type))
    dims = _arg(node, 1, "dim", None)
    dims = list(range(rank)) if dims is None else [d % rank for d in dims]
    keepdim = _arg(node, 2, "keepdim", False)
    return imp.build(g.MeanOp, node, [x], dims=ints(dims), keepdim=UnitAttr() if keepdim else None)


@aten("aten.scaled_dot_product_attention.default")
def _sdpa(imp: Importer, node: fx.Node):
    q, k, v = (imp.value(a) for a in node.args[:3])
    mask = _arg(node, 3, "attn_mask", None)
    if float(_arg(node, 4, "dropout_p", 0.0)) != 0.0:
        raise _unsupported(node, "attention dropout (export the model in eval mode)")
    causal = bool(_arg(node, 5, "is_causal", False))
    scale = node.kwargs.get("scale", node.args[6] if len(node.args) > 6 else None)
    operands = [q, k, v] + ([imp.value(mask)] if mask is not None else [])
    # without a mask constant to carry it, the layer's window goes on the op itself
    window = attention_window(imp.model, module_path(node)) if causal and mask is None else None
    return imp.build(g.SdpaOp, node, operands,
                     scale=None if scale is None else f64_attr(scale),
                     causal=UnitAttr() if causal else None,
                     window=None if window is None else i64_attr(window))


@aten("aten.where.self")
def _where(imp: Importer, node: fx.Node):
    cond, x, y = node.args
    fill = imp.scalar(y)
    if imp.trace.is_static(cond) and not imp.trace.is_static(x) and fill is not None \
            and fill <= float(np.finfo(np.float32).min) / 2:
        # where(causal, scores, min) is scores + an additive causal mask
        mask = imp.static_value(cond).detach().cpu().numpy()
        if constants.causal_mask_kind(mask) == "bool":
            additive = np.where(mask, 0.0, np.finfo(np.float32).min).astype(np.float32)
            w = imp.mask_constant(node, additive)  # read by this attention's softmax
            return imp.build(g.AddOp, node, [imp.value(x), w])
    return imp.build(g.WhereOp, node, [imp.value(cond), imp.value(x), imp.value(y)])


# --- elementwise ----------------------------------------------------------------------

_UNARY = {
    "neg": "neg", "exp": "exp", "tanh": "tanh", "sigmoid": "sigmoid", "rsqrt": "rsqrt",
    "sqrt": "sqrt", "relu": "relu", "silu": "silu", "erf": "erf", "cos": "cos", "sin": "sin",
    "reciprocal": "reciprocal",
}


def _unary(op_name: str) -> Converter:
    cls = g.UNARY_OPS[op_name]

    def convert(imp: Importer, node: fx.Node):
        return imp.build(cls, node, [imp.value(node.args[0])])

    return convert


for _aten_name, _op in _UNARY.items():
    CONVERTERS[f"aten.{_aten_name}.default"] = _unary(_op)


@aten("aten.gelu.default")
def _gelu(imp: Importer, node: fx.Node):
    approximate = node.kwargs.get("approximate", "none")
    return imp.build(g.GeluOp, node, [imp.value(node.args[0])],
                     approximate=string("tanh") if approximate == "tanh" else None)


_COMMUTATIVE = {"add", "mul", "maximum", "minimum"}


def _binary(imp: Importer, node: fx.Node, op_name: str, lhs, rhs) -> SSAValue:
    """`lhs op rhs` where either side may be a scalar (python or one-element constant)."""
    cls = g.BINARY_OPS[op_name]
    ls, rs = imp.scalar(lhs), imp.scalar(rhs)
    if ls is not None and rs is None:
        if op_name in _COMMUTATIVE:
            return _binary(imp, node, op_name, rhs, lhs)
        x = imp.value(rhs)
        out = imp.build(cls, node, [x], x.type, scalar=f64_attr(ls), reverse=UnitAttr())
    elif rs is not None and ls is None:
        x = imp.value(lhs)
        out = imp.build(cls, node, [x], x.type, scalar=f64_attr(rs))
    else:
        return imp.build(cls, node, [imp.value(lhs), imp.value(rhs)])
    if shape_of(out.type) != _shape(node):  # a one-element constant that also broadcast
        out = imp.build(g.ReshapeOp, node, [out])
    return out


def _alpha_scaled(imp: Importer, node: fx.Node, other):
    alpha = node.kwargs.get("alpha", 1)
    if alpha == 1:
        return other
    if imp.scalar(other) is not None:
        return imp.scalar(other) * alpha
    raise _unsupported(node, "alpha other than 1 on a tensor operand")


def _simple_binary(op_name: str) -> Converter:
    def convert(imp: Importer, node: fx.Node):
        return _binary(imp, node, op_name, node.args[0], node.args[1])

    return convert


@aten("aten.add.Tensor", "aten.add.Scalar")
def _add(imp: Importer, node: fx.Node):
    return _binary(imp, node, "add", node.args[0], _alpha_scaled(imp, node, node.args[1]))


@aten("aten.sub.Tensor", "aten.sub.Scalar")
def _sub(imp: Importer, node: fx.Node):
    return _binary(imp, node, "sub", node.args[0], _alpha_scaled(imp, node, node.args[1]))


@aten("aten.rsub.Scalar", "aten.rsub.Tensor")
def _rsub(imp: Importer, node: fx.Node):
    if node.kwargs.get("alpha", 1) != 1:
        raise _unsupported(node, "rsub with alpha other than 1")
    return _binary(imp, node, "sub", node.args[1], node.args[0])


@aten("aten.div.Tensor_mode", "aten.div.Scalar_mode")
def _div_mode(imp: Importer, node: fx.Node):
    if node.kwargs.get("rounding_mode") is not None:
        raise _unsupported(node, "division with rounding")
    return _binary(imp, node, "div", node.args[0], node.args[1])


for _names, _op in {
    ("aten.mul.Tensor", "aten.mul.Scalar"): "mul",
    ("aten.div.Tensor", "aten.div.Scalar"): "div",
    ("aten.pow.Tensor_Scalar", "aten.pow.Tensor_Tensor", "aten.pow.Scalar"): "pow",
    ("aten.maximum.default",): "maximum",
    ("aten.minimum.default",): "minimum",
}.items():
    for _name in _names:
        CONVERTERS[_name] = _simple_binary(_op)
