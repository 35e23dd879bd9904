"""ir/graph_eval.py: every `wsc.graph` op against torch on fresh random data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from xdsl.dialects.builtin import ModuleOp, UnitAttr
from xdsl.dialects.func import FuncOp, ReturnOp
from xdsl.ir import Block, Region

from wsc.ir import graph as g
from wsc.ir import graph_eval
from wsc.ir.attrs import f64_attr, i64_attr, ints, string, tensor

DTYPES = {np.dtype(np.float32): "f32", np.dtype(np.int64): "i64", np.dtype(np.bool_): "i1"}


@pytest.fixture
def rng():
    return np.random.default_rng()  # fresh data every run


def randn(rng, *shape) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def run_op(cls, operands, shape, dtype="f32", **props) -> np.ndarray:
    """Evaluate one `cls` op whose operands are weights w0, w1, ... (a `("T", a)` operand is
    stored as `a` and read transposed)."""
    block = Block(arg_types=[tensor((1, 1), "i64")])
    weights, values = {}, []
    for i, a in enumerate(operands):
        transpose = isinstance(a, tuple)
        a = a[1] if transpose else a
        weights[f"w{i}"] = a
        shape_a = a.shape[::-1] if transpose else a.shape
        w = g.make(g.WeightOp, [], tensor(shape_a, DTYPES[a.dtype]), name=string(f"w{i}"),
                   transpose=UnitAttr() if transpose else None)
        block.add_op(w)
        values.append(w.results[0])
    op = g.make(cls, values, tensor(shape, dtype), **props)
    block.add_op(op)
    block.add_op(ReturnOp(op.results[0]))
    func = FuncOp("forward", ([tensor((1, 1), "i64")], [op.results[0].type]), Region(block))
    module = ModuleOp([func])
    module.verify()
    return graph_eval.evaluate(module, weights, np.ones((1, 1), np.int64))


def close(got: np.ndarray, want: torch.Tensor, tol: float = 1e-6) -> None:
    want = want.detach().numpy()
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, want.shape, got.dtype)
    if got.dtype == np.bool_ or np.issubdtype(got.dtype, np.integer):
        assert np.array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


T = torch.from_numpy


# --- sources, embeddings, products ----------------------------------------------------


def test_linear(rng):
    x, w, b = randn(rng, 2, 3, 8), randn(rng, 8, 5), randn(rng, 5)
    close(run_op(g.LinearOp, [x, w, b], (2, 3, 5)), T(x) @ T(w) + T(b))
    stored = randn(rng, 5, 8)  # nn.Linear layout, read transposed
    close(run_op(g.LinearOp, [x, ("T", stored)], (2, 3, 5)), F.linear(T(x), T(stored)))


def test_matmul(rng):
    a, b = randn(rng, 2, 3, 4), randn(rng, 2, 4, 5)
    close(run_op(g.MatmulOp, [a, b], (2, 3, 5)), torch.bmm(T(a), T(b)))


def test_embeddings(rng):
    table = randn(rng, 10, 4)
    ids = rng.integers(0, 10, (1, 6))
    close(run_op(g.EmbeddingOp, [table, ids], (1, 6, 4)), F.embedding(T(ids), T(table)))
    pos = randn(rng, 32, 4)
    close(run_op(g.PositionEmbeddingOp, [pos], (1, 6, 4)), T(pos)[:6].reshape(1, 6, 4))


# --- norms and reductions ---------------------------------------------------------------


def test_layer_norm(rng):
    x, gamma, beta = randn(rng, 1, 6, 16), randn(rng, 16), randn(rng, 16)
    close(run_op(g.LayerNormOp, [x, gamma, beta], x.shape, eps=f64_attr(1e-5)),
          F.layer_norm(T(x), (16,), T(gamma), T(beta), 1e-5), 1e-5)


def test_rms_norm(rng):
    x, gamma = randn(rng, 1, 6, 16), randn(rng, 16)
    xt = T(x)
    want = T(gamma) * (xt * torch.rsqrt(xt.pow(2).mean(-1, keepdim=True) + 1e-6))
    close(run_op(g.RmsNormOp, [x, gamma], x.shape, eps=f64_attr(1e-6)), want, 1e-5)


@pytest.mark.parametrize("dim", [1, 2])
def test_softmax(rng, dim):
    x = randn(rng, 2, 5, 7) * 4
    close(run_op(g.SoftmaxOp, [x], x.shape, dim=i64_attr(dim)), torch.softmax(T(x), dim))


def test_mean(rng):
    x = randn(rng, 2, 5, 7)
    close(run_op(g.MeanOp, [x], (2, 5, 1), dims=ints([2]), keepdim=UnitAttr()),
          T(x).mean(-1, keepdim=True))
    close(run_op(g.MeanOp, [x], (5,), dims=ints([0, 2])), T(x).mean((0, 2)))


# --- attention and rope -----------------------------------------------------------------


@pytest.mark.parametrize("mask", ["none", "causal", "bool", "additive"])
def test_sdpa(rng, mask):
    q, k, v = (randn(rng, 1, 4, 6, 8) for _ in range(3))
    tril = np.tril(np.ones((6, 6), bool)).reshape(1, 1, 6, 6)
    operands, kw, props = [q, k, v], {}, {}
    if mask == "causal":
        kw["is_causal"], props["causal"] = True, UnitAttr()
    elif mask == "bool":
        operands.append(tril)
        kw["attn_mask"] = T(tril)
    elif mask == "additive":
        add = np.where(tril, 0.0, np.finfo(np.float32).min).astype(np.float32)
        operands.append(add)
        kw["attn_mask"] = T(add)
    got = run_op(g.SdpaOp, operands, q.shape, scale=f64_attr(0.3), **props)
    close(got, F.scaled_dot_product_attention(T(q), T(k), T(v), scale=0.3, **kw), 1e-5)


def test_sdpa_grouped_kv(rng):
    q, k, v = randn(rng, 1, 4, 6, 8), randn(rng, 1, 2, 6, 8), randn(rng, 1, 2, 6, 8)
    got = run_op(g.SdpaOp, [q, k, v], q.shape, causal=UnitAttr())
    want = F.scaled_dot_product_attention(T(q), T(k), T(v), is_causal=True, enable_gqa=True)
    close(got, want, 1e-5)


@pytest.mark.parametrize("causal", [True, False])
def test_attention(rng, causal):
    s, heads, kv_heads, d = 7, 4, 2, 8
    q, k, v = randn(rng, s, heads * d), randn(rng, s, kv_heads * d), randn(rng, s, kv_heads * d)
    got = run_op(g.AttentionOp, [q, k, v], q.shape, heads=i64_attr(heads),
                 kv_heads=i64_attr(kv_heads), head_dim=i64_attr(d), scale=f64_attr(0.2),
                 causal=UnitAttr() if causal else None)
    qh = T(q).reshape(s, heads, d).transpose(0, 1)
    kh, vh = (T(x).reshape(s, kv_heads, d).transpose(0, 1).repeat_interleave(2, 0) for x in (k, v))
    want = F.scaled_dot_product_attention(qh, kh, vh, is_causal=causal, scale=0.2)
    close(got, want.transpose(0, 1).reshape(s, heads * d), 1e-5)


def torch_rope_tables(inv_freq: np.ndarray, s: int, scaling: float):
    """As transformers' rotary embeddings compute them."""
    freqs = torch.arange(s, dtype=torch.float32)[:, None] @ T(inv_freq)[None, :]
    emb = torch.cat([freqs, freqs], -1)
    return emb.cos() * scaling, emb.sin() * scaling


def test_rope(rng):
    s, heads, d, scaling = 9, 3, 8, 1.5
    inv_freq = (1.0 / 10000 ** (np.arange(0, d, 2) / d)).astype(np.float32)
    x = randn(rng, 1, s, heads * d)
    block = Block(arg_types=[tensor((1, 1), "i64")])
    w = g.make(g.WeightOp, [], tensor(x.shape), name=string("x"))
    op = g.make(g.RopeOp, [w.results[0]], tensor(x.shape), heads=i64_attr(heads),
                head_dim=i64_attr(d), inv_freq=string("inv_freq"), scaling=f64_attr(scaling))
    block.add_ops([w, op, ReturnOp(op.results[0])])
    module = ModuleOp([FuncOp("forward", ([tensor((1, 1), "i64")], [op.results[0].type]),
                              Region(block))])
    module.verify()
    got = graph_eval.evaluate(module, {"x": x, "inv_freq": inv_freq}, np.ones((1, 1), np.int64))
    cos, sin = torch_rope_tables(inv_freq, s, scaling)
    xh = T(x).reshape(s, heads, d).transpose(0, 1)
    rotated = torch.cat([-xh[..., d // 2:], xh[..., : d // 2]], -1)
    want = (xh * cos + rotated * sin).transpose(0, 1).reshape(x.shape)
    close(got, want, 1e-5)


def test_rope_table():
    inv_freq = (1.0 / 10000 ** (np.arange(0, 8, 2) / 8)).astype(np.float32)
    cos, sin = torch_rope_tables(inv_freq, 12, 0.5)
    for kind, want in (("cos", cos), ("sin", sin)):
        block = Block(arg_types=[tensor((1, 1), "i64")])
        op = g.make(g.RopeTableOp, [], tensor((1, 12, 8)), kind=string(kind),
                    inv_freq=string("f"), scaling=f64_attr(0.5))
        block.add_ops([op, ReturnOp(op.results[0])])
        module = ModuleOp([FuncOp("forward", ([tensor((1, 1), "i64")], [op.results[0].type]),
                                  Region(block))])
        got = graph_eval.evaluate(module, {"f": inv_freq}, np.ones((1, 1), np.int64))
        close(got, want[None], 1e-6)


# --- elementwise ------------------------------------------------------------------------

UNARY_TORCH = {
    "neg": torch.neg, "exp": torch.exp, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
    "rsqrt": torch.rsqrt, "sqrt": torch.sqrt, "relu": torch.relu, "silu": F.silu,
    "erf": torch.erf, "cos": torch.cos, "sin": torch.sin, "reciprocal": torch.reciprocal,
    "gelu": F.gelu,
}


@pytest.mark.parametrize("name", sorted(g.UNARY_OPS))
def test_unary(rng, name):
    x = randn(rng, 3, 17) * 3
    if name in ("rsqrt", "sqrt", "reciprocal"):
        x = np.abs(x) + 0.5
    close(run_op(g.UNARY_OPS[name], [x], x.shape), UNARY_TORCH[name](T(x)), 2e-6)


def test_gelu_tanh(rng):
    x = randn(rng, 3, 17) * 3
    got = run_op(g.GeluOp, [x], x.shape, approximate=string("tanh"))
    close(got, F.gelu(T(x), approximate="tanh"), 2e-6)


BINARY_TORCH = {
    "add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div, "pow": torch.pow,
    "maximum": torch.maximum, "minimum": torch.minimum,
}


@pytest.mark.parametrize("name", sorted(g.BINARY_OPS))
def test_binary(rng, name):
    a, b = np.abs(randn(rng, 2, 3, 5)) + 0.5, randn(rng, 3, 1)
    fn, cls = BINARY_TORCH[name], g.BINARY_OPS[name]
    close(run_op(cls, [a, b], a.shape), fn(T(a), T(b)), 2e-6)
    s = float(rng.uniform(0.5, 2.0))
    close(run_op(cls, [a], a.shape, scalar=f64_attr(s)), fn(T(a), torch.tensor(s)), 2e-6)
    close(run_op(cls, [a], a.shape, scalar=f64_attr(s), reverse=UnitAttr()),
          fn(torch.tensor(s), T(a)), 2e-6)


def test_where_and_cast(rng):
    c, x, y = rng.random((4, 5)) > 0.5, randn(rng, 4, 5), randn(rng, 1, 5)
    close(run_op(g.WhereOp, [c, x, y], (4, 5)), torch.where(T(c), T(x), T(y)))
    ids = rng.integers(-50, 50, (4, 5))
    close(run_op(g.CastOp, [ids], (4, 5)), T(ids).to(torch.float32))


# --- views --------------------------------------------------------------------------------


def test_views(rng):
    x = randn(rng, 2, 3, 4)
    close(run_op(g.ReshapeOp, [x], (6, 4)), T(x).reshape(6, 4))
    close(run_op(g.TransposeOp, [x], (4, 2, 3), perm=ints([2, 0, 1])), T(x).permute(2, 0, 1))
    y = randn(rng, 1, 3, 1)
    close(run_op(g.ExpandOp, [y], (2, 3, 4)), T(y).expand(2, 3, 4))
    close(run_op(g.SliceOp, [x], (2, 3, 2), dim=i64_attr(2), start=i64_attr(1),
                 end=i64_attr(4), step=i64_attr(2)), T(x)[..., 1:4:2])
    z = randn(rng, 2, 3, 2)
    close(run_op(g.ConcatOp, [x, z], (2, 3, 6), dim=i64_attr(2)), torch.cat([T(x), T(z)], 2))


def test_every_op_has_an_implementation():
    assert set(g.GRAPH_OPS) <= set(graph_eval.IMPLS)


def test_evaluate_values_gives_every_value(rng):
    x = randn(rng, 3, 4)
    block = Block(arg_types=[tensor((1, 1), "i64")])
    w = g.make(g.WeightOp, [], tensor(x.shape), name=string("x"))
    e = g.make(g.ExpOp, [w.results[0]], tensor(x.shape))
    block.add_ops([w, e, ReturnOp(e.results[0])])
    module = ModuleOp([FuncOp("forward", ([tensor((1, 1), "i64")], [tensor(x.shape)]),
                              Region(block))])
    values = graph_eval.evaluate_values(module, {"x": x}, np.ones((1, 1), np.int64))
    assert np.array_equal(values[w.results[0]], x)
    np.testing.assert_allclose(values[e.results[0]], np.exp(x), rtol=1e-6)


def test_weights_without_values_are_an_error():
    from wsc.frontend.importer import MetaArray

    block = Block(arg_types=[tensor((1, 1), "i64")])
    w = g.make(g.WeightOp, [], tensor((3, 4)), name=string("x"))
    block.add_ops([w, ReturnOp(w.results[0])])
    module = ModuleOp([FuncOp("forward", ([tensor((1, 1), "i64")], [tensor((3, 4))]),
                              Region(block))])
    with pytest.raises(ValueError, match="no values"):
        graph_eval.evaluate(module, {"x": MetaArray((3, 4), np.dtype(np.float32))},
                            np.ones((1, 1), np.int64))


def test_graph_eval_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, wsc.ir.graph_eval; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
