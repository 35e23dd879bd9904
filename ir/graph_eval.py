"""A numpy reference interpreter of the `wsc.graph` dialect (no torch).

One small function per op, registered by op class in `IMPLS`, as xDSL's interpreters do. It
runs a module's `@forward` on concrete input ids and gives the logits, or every value
(`evaluate_values`, for layer-by-layer comparisons). The semantics are the dialect's: attention
is causal softmax(q kᵀ · scale) v per head with kv heads shared by `heads / kv_heads` query
heads, within a sliding `window` if it has one; rope rotates halves by `position * inv_freq`
for positions 0..S-1, times `scaling`; `position_embedding` reads rows 0..S-1. Arithmetic is
float32 like the model's, so results match PyTorch eager to summation order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from xdsl.dialects.builtin import ModuleOp
from xdsl.dialects.func import FuncOp, ReturnOp
from xdsl.ir import Operation, SSAValue

from wsc.ir import graph as g
from wsc.ir.attrs import dtype_of, get_ints, shape_of

NUMPY_DTYPES = {"f32": np.float32, "f16": np.float16, "i64": np.int64, "i32": np.int32,
                "i1": np.bool_}


@dataclass(frozen=True)
class Env:
    """What an op may read besides its operands: the weight store."""

    weights: Mapping[str, np.ndarray]

    def weight(self, name: str) -> np.ndarray:
        if name not in self.weights:
            raise KeyError(f"weight `{name}` is not in the weight store")
        w = self.weights[name]
        if not isinstance(w, np.ndarray):
            raise ValueError(f"weight `{name}` has no values (compiled without weights)")
        return w


Impl = Callable[[Operation, list[np.ndarray], Env], np.ndarray]
IMPLS: dict[type[Operation], Impl] = {}


def impl(*classes: type[Operation]) -> Callable[[Impl], Impl]:
    def register(fn: Impl) -> Impl:
        for cls in classes:
            IMPLS[cls] = fn
        return fn

    return register


def evaluate(module: ModuleOp, weights: Mapping[str, np.ndarray], input_ids: np.ndarray) -> np.ndarray:
    """The first result of `@forward` on `input_ids` (the logits)."""
    outputs, _ = run(module, weights, input_ids)
    return outputs[0]


def evaluate_values(module: ModuleOp, weights: Mapping[str, np.ndarray],
                    input_ids: np.ndarray) -> dict[SSAValue, np.ndarray]:
    """Every SSA value of `@forward` on `input_ids`, for layer-by-layer comparisons."""
    _, values = run(module, weights, input_ids)
    return values


def run(module: ModuleOp, weights: Mapping[str, np.ndarray],
        input_ids: np.ndarray) -> tuple[list[np.ndarray], dict[SSAValue, np.ndarray]]:
    """(results of `@forward`, every value) on `input_ids`."""
    func = next(op for op in module.body.ops if isinstance(op, FuncOp))
    block = func.body.block
    env = Env(weights)
    values: dict[SSAValue, np.ndarray] = {block.args[0]: np.asarray(input_ids)}
    outputs: list[np.ndarray] = []
    for op in block.ops:
        args = [values[v] for v in op.operands]
        if isinstance(op, ReturnOp):
            outputs = args
            break
        fn = IMPLS.get(type(op))
        if fn is None:
            raise NotImplementedError(f"graph_eval has no implementation of {op.name}")
        out = np.asarray(fn(op, args, env))
        want = shape_of(op.results[0].type)
        if out.shape != want:
            raise ValueError(f"{op.name} at {getattr(op, 'source', '')}: "
                             f"computed shape {out.shape}, IR says {want}")
        values[op.results[0]] = out.astype(NUMPY_DTYPES[dtype_of(op.results[0].type)], copy=False)
    return outputs, values


def _int(attr) -> int:
    return int(attr.value.data)


def _float(attr) -> float:
    return float(attr.value.data)


# --- sources --------------------------------------------------------------------------


@impl(g.WeightOp)
def _weight(op: g.WeightOp, args, env: Env):
    w = env.weight(op.ref)
    return w.T if op.transpose is not None else w


def rope_cos_sin(inv_freq: np.ndarray, positions: int, scaling: float) -> tuple[np.ndarray, np.ndarray]:
    """[S, head_dim] cos and sin of `position * inv_freq` (halves repeated) times `scaling`."""
    angles = np.arange(positions, dtype=np.float32)[:, None] * inv_freq.astype(np.float32)[None, :]
    emb = np.concatenate([angles, angles], axis=-1)
    s = np.float32(scaling)
    return np.cos(emb) * s, np.sin(emb) * s


@impl(g.RopeTableOp)
def _rope_table(op: g.RopeTableOp, args, env: Env):
    shape = shape_of(op.result.type)
    cos, sin = rope_cos_sin(env.weight(op.inv_freq.data), shape[-2], _float(op.scaling))
    return np.broadcast_to(cos if op.kind.data == "cos" else sin, shape)


# --- embeddings and matrix products ---------------------------------------------------


@impl(g.EmbeddingOp)
def _embedding(op, args, env):
    table, ids = args
    return table[ids]


@impl(g.PositionEmbeddingOp)
def _position_embedding(op, args, env):
    shape = shape_of(op.result.type)
    rows = math.prod(shape[:-1])
    return args[0][:rows].reshape(shape)


@impl(g.LinearOp)
def _linear(op, args, env):
    out = np.matmul(args[0], args[1])
    return out + args[2] if len(args) == 3 else out


@impl(g.MatmulOp)
def _matmul(op, args, env):
    return np.matmul(args[0], args[1])


# --- normalizations and reductions ----------------------------------------------------


@impl(g.LayerNormOp)
def _layer_norm(op, args, env):
    x, gamma, beta = args
    mean = x.mean(-1, keepdims=True)
    var = np.square(x - mean).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + np.float32(_float(op.eps))) * gamma + beta


@impl(g.RmsNormOp)
def _rms_norm(op: g.RmsNormOp, args, env):
    x, gamma = args
    groups = x.reshape(*x.shape[:-1], -1, op.group)  # one row, or one head, per group
    ms = np.square(groups).mean(-1, keepdims=True)
    normed = groups * (np.float32(1.0) / np.sqrt(ms + np.float32(_float(op.eps))))
    return ((gamma + np.float32(op.offset)) * normed).reshape(x.shape)


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@impl(g.SoftmaxOp)
def _softmax(op, args, env):
    return softmax(args[0], _int(op.dim))


@impl(g.MeanOp)
def _mean(op, args, env):
    return args[0].mean(axis=get_ints(op.dims), keepdims=op.keepdim is not None)


# --- attention ------------------------------------------------------------------------


def attention_heads(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float,
                    causal: bool, mask: np.ndarray | None = None,
                    window: int | None = None) -> np.ndarray:
    """softmax(q kᵀ · scale [+ mask]) v on [H, S, D] heads; k and v may have fewer heads,
    each shared by consecutive query heads; a causal `window` hides keys `window` or more
    positions before the query."""
    rep = q.shape[0] // k.shape[0]
    k, v = np.repeat(k, rep, axis=0), np.repeat(v, rep, axis=0)
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) * np.float32(scale)
    s, t = scores.shape[-2:]
    if causal:
        visible = np.tril(np.ones((s, t), dtype=bool))
        if window is not None:
            visible &= ~np.tril(visible, -window)
        scores = np.where(visible, scores, -np.inf)
    if mask is not None:
        scores = np.where(mask, scores, -np.inf) if mask.dtype == np.bool_ else scores + mask
    return np.matmul(softmax(scores, -1), v)


@impl(g.AttentionOp)
def _attention(op: g.AttentionOp, args, env):
    h, kvh, d = _int(op.heads), _int(op.kv_heads), _int(op.head_dim)
    q, k, v = args
    tokens = math.prod(q.shape[:-1])
    heads = [x.reshape(tokens, n, d).transpose(1, 0, 2) for x, n in ((q, h), (k, kvh), (v, kvh))]
    window = _int(op.window) if op.window is not None else None
    out = attention_heads(*heads, _float(op.scale), op.causal is not None, window=window)
    return out.transpose(1, 0, 2).reshape(q.shape)


@impl(g.SdpaOp)
def _sdpa(op: g.SdpaOp, args, env):
    q, k, v = args[:3]
    mask = args[3] if len(args) > 3 else None
    d = q.shape[-1]
    scale = _float(op.scale) if op.scale is not None else 1.0 / math.sqrt(d)
    lead = q.shape[:-2]
    qh = q.reshape(-1, *q.shape[-2:])
    kh, vh = k.reshape(-1, *k.shape[-2:]), v.reshape(-1, *v.shape[-2:])
    if mask is not None:
        mask = np.broadcast_to(mask, (*lead, q.shape[-2], k.shape[-2])).reshape(qh.shape[0], *mask.shape[-2:])
    window = _int(op.window) if op.window is not None else None
    return attention_heads(qh, kh, vh, scale, op.causal is not None, mask,
                           window).reshape(*lead, -1, d)


@impl(g.RopeOp)
def _rope(op: g.RopeOp, args, env):
    x = args[0]
    h, d = _int(op.heads), _int(op.head_dim)
    tokens = math.prod(x.shape[:-1])
    cos, sin = rope_cos_sin(env.weight(op.inv_freq.data), tokens, _float(op.scaling))
    xh = x.reshape(tokens, h, d)
    rotated = np.concatenate([-xh[..., d // 2:], xh[..., : d // 2]], axis=-1)
    return (xh * cos[:, None, :] + rotated * sin[:, None, :]).reshape(x.shape)


# --- elementwise ----------------------------------------------------------------------


def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[np.float64])(x).astype(x.dtype)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.float32(1.0) / (np.float32(1.0) + np.exp(-x))


def _gelu(op: g.GeluOp, x: np.ndarray) -> np.ndarray:
    half, one = np.float32(0.5), np.float32(1.0)
    if op.tanh_approx:
        inner = np.float32(math.sqrt(2.0 / math.pi)) * (x + np.float32(0.044715) * x * x * x)
        return half * x * (one + np.tanh(inner))
    return half * x * (one + _erf(x / np.float32(math.sqrt(2.0))))


UNARY_FNS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "neg": np.negative, "exp": np.exp, "tanh": np.tanh, "sigmoid": _sigmoid,
    "rsqrt": lambda x: np.float32(1.0) / np.sqrt(x), "sqrt": np.sqrt,
    "relu": lambda x: np.maximum(x, 0).astype(x.dtype), "silu": lambda x: x * _sigmoid(x),
    "erf": _erf, "cos": np.cos, "sin": np.sin, "reciprocal": lambda x: np.float32(1.0) / x,
}


@impl(*(c for c in g.UNARY_OPS.values() if c is not g.GeluOp))
def _unary(op, args, env):
    return UNARY_FNS[op.name.split(".")[-1]](args[0])


@impl(g.GeluOp)
def _gelu_impl(op, args, env):
    return _gelu(op, args[0])


BINARY_FNS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
    "pow": np.power, "maximum": np.maximum, "minimum": np.minimum,
}


@impl(*g.BINARY_OPS.values())
def _binary(op: g.BinaryOp, args, env):
    fn = BINARY_FNS[op.name.split(".")[-1]]
    lhs = args[0]
    rhs = args[1] if len(args) > 1 else lhs.dtype.type(op.scalar_value)
    return fn(rhs, lhs) if op.reverse is not None else fn(lhs, rhs)


@impl(g.WhereOp)
def _where(op, args, env):
    return np.where(*args)


@impl(g.CastOp)
def _cast(op, args, env):
    return args[0].astype(NUMPY_DTYPES[dtype_of(op.result.type)])


# --- views ----------------------------------------------------------------------------


@impl(g.ReshapeOp)
def _reshape(op, args, env):
    return args[0].reshape(shape_of(op.result.type))


@impl(g.TransposeOp)
def _transpose(op, args, env):
    return np.transpose(args[0], get_ints(op.perm))


@impl(g.ExpandOp)
def _expand(op, args, env):
    return np.broadcast_to(args[0], shape_of(op.result.type))


@impl(g.SliceOp)
def _slice(op: g.SliceOp, args, env):
    dim, start, end, step = op.bounds()
    index = [slice(None)] * args[0].ndim
    index[dim] = slice(start, end, step)
    return args[0][tuple(index)]


@impl(g.ConcatOp)
def _concat(op, args, env):
    return np.concatenate(args, axis=_int(op.dim))
