"""Canonical `wsc.graph` modules built by hand, for testing the backend without the frontend.

`GraphBuilder` writes the post-pass form the partitioner expects; `gpt2_block_graph` and
`llama_block_graph` build small models in that form with random weights (fixed seed).
"""

from __future__ import annotations

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import FloatAttr, IntegerAttr, ModuleOp, StringAttr, UnitAttr, f64, i64
from xdsl.ir import Block, Region, SSAValue

from wsc.ir import graph as g
from wsc.ir.attrs import shape_of, tensor


class GraphBuilder:
    def __init__(self, seq: int, seed: int = 0):
        self.seq = seq
        self.block = Block(arg_types=[tensor((1, seq), "i64")])
        self.weights: dict[str, np.ndarray] = {}
        self.rng = np.random.default_rng(seed)

    @property
    def ids(self) -> SSAValue:
        return self.block.args[0]

    def add(self, op):
        self.block.add_op(op)
        return op.results[0]

    def weight(self, name: str, shape, *, scale: float = 0.2, transpose: bool = False,
               value: np.ndarray | None = None) -> SSAValue:
        if name not in self.weights:
            self.weights[name] = (value if value is not None
                                  else (self.rng.standard_normal(shape) * scale).astype(np.float32))
        stored = self.weights[name].shape
        shape = stored[::-1] if transpose else stored
        props = {"name": StringAttr(name)}
        if transpose:
            props["transpose"] = UnitAttr()
        return self.add(g.WeightOp.create(properties=props, result_types=[tensor(shape)]))

    def op(self, cls, operands, shape, **props) -> SSAValue:
        p = {}
        for k, v in props.items():
            if isinstance(v, bool):
                if v:
                    p[k] = UnitAttr()
            elif isinstance(v, int):
                p[k] = IntegerAttr(v, i64)
            elif isinstance(v, float):
                p[k] = FloatAttr(v, f64)
            else:
                p[k] = StringAttr(v) if isinstance(v, str) else v
        return self.add(cls.create(operands=list(operands), properties=p, result_types=[tensor(shape)]))

    def linear(self, x, name: str, k: int, n: int, *, bias: bool = True) -> SSAValue:
        w = self.weight(f"{name}.weight", (k, n))
        ops = [x, w] + ([self.weight(f"{name}.bias", (n,), scale=0.1)] if bias else [])
        return self.op(g.LinearOp, ops, shape_of(x.type)[:-1] + (n,), module=name)

    def slice(self, x, start: int, end: int) -> SSAValue:
        s = shape_of(x.type)
        return self.op(g.SliceOp, [x], s[:-1] + (end - start,), dim=len(s) - 1, start=start,
                       end=end, step=1)

    def layer_norm(self, x, name: str) -> SSAValue:
        d = shape_of(x.type)[-1]
        gam = self.weight(f"{name}.weight", (d,), value=(1 + 0.1 * self.rng.standard_normal(d)).astype(np.float32))
        bet = self.weight(f"{name}.bias", (d,), scale=0.1)
        return self.op(g.LayerNormOp, [x, gam, bet], shape_of(x.type), eps=1e-5, module=name)

    def rms_norm(self, x, name: str) -> SSAValue:
        d = shape_of(x.type)[-1]
        gam = self.weight(f"{name}.weight", (d,), value=(1 + 0.1 * self.rng.standard_normal(d)).astype(np.float32))
        return self.op(g.RmsNormOp, [x, gam], shape_of(x.type), eps=1e-6, module=name)

    def head_rms_norm(self, x, name: str, head_dim: int) -> SSAValue:
        """RMSNorm of each head of x, with a (1 + weight) gain (as Gemma 3 has)."""
        gam = self.weight(f"{name}.weight", (head_dim,), scale=0.3)
        return self.op(g.RmsNormOp, [x, gam], shape_of(x.type), eps=1e-6, head_dim=head_dim,
                       gamma_offset=1.0, module=name)

    def binary(self, cls, a, b) -> SSAValue:
        return self.op(cls, [a, b], shape_of(a.type))

    def module(self, result: SSAValue) -> ModuleOp:
        self.block.add_op(func.ReturnOp(result))
        f = func.FuncOp("forward", ([tensor((1, self.seq), "i64")], [result.type]), Region(self.block))
        m = ModuleOp([f])
        m.verify()
        return m


def gpt2_block_graph(seq: int = 16, *, layers: int = 1, d: int = 64, heads: int = 4,
                     vocab: int = 256, seed: int = 0):
    b = GraphBuilder(seq, seed)
    hd = d // heads
    wte = b.weight("wte", (vocab, d))
    h = b.op(g.EmbeddingOp, [wte, b.ids], (1, seq, d), module="wte")
    pos = b.op(g.PositionEmbeddingOp, [b.weight("wpe", (128, d))], (1, seq, d))
    h = b.binary(g.AddOp, h, pos)
    for i in range(layers):
        p = f"h.{i}"
        x = b.layer_norm(h, f"{p}.ln_1")
        qkv = b.linear(x, f"{p}.attn.c_attn", d, 3 * d)
        q, k, v = (b.slice(qkv, j * d, (j + 1) * d) for j in range(3))
        a = b.op(g.AttentionOp, [q, k, v], (1, seq, d), heads=heads, kv_heads=heads, head_dim=hd,
                 scale=hd ** -0.5, causal=True, module=f"{p}.attn")
        h = b.binary(g.AddOp, b.linear(a, f"{p}.attn.c_proj", d, d), h)
        x = b.layer_norm(h, f"{p}.ln_2")
        f = b.linear(x, f"{p}.mlp.c_fc", d, 4 * d)
        f = b.add(g.GeluOp.create(operands=[f], result_types=[f.type],
                                  properties={"approximate": StringAttr("tanh")}))
        h = b.binary(g.AddOp, h, b.linear(f, f"{p}.mlp.c_proj", 4 * d, d))
    x = b.layer_norm(h, "ln_f")
    logits = b.op(g.LinearOp, [x, b.weight("wte", (vocab, d), transpose=True)], (1, seq, vocab),
                  module="lm_head")
    return b.module(logits), b.weights


def llama_block_graph(seq: int = 16, *, layers: int = 1, d: int = 64, heads: int = 4,
                      kv_heads: int = 2, ff: int = 160, vocab: int = 256, seed: int = 0,
                      window: int | None = None, qk_norm: bool = False):
    """`window`: sliding-window attention (Mistral); `qk_norm`: per-head RMSNorms of q and k
    before rope (Qwen3), with (1 + weight) gains (Gemma 3)."""
    b = GraphBuilder(seq, seed)
    hd = d // heads
    b.weights["inv_freq"] = (1.0 / (10000 ** (np.arange(0, hd, 2) / hd))).astype(np.float32)
    h = b.op(g.EmbeddingOp, [b.weight("embed", (vocab, d)), b.ids], (1, seq, d), module="embed")
    for i in range(layers):
        p = f"layers.{i}"
        x = b.rms_norm(h, f"{p}.input_layernorm")
        q = b.linear(x, f"{p}.q_proj", d, d, bias=False)
        k = b.linear(x, f"{p}.k_proj", d, kv_heads * hd, bias=False)
        v = b.linear(x, f"{p}.v_proj", d, kv_heads * hd, bias=False)
        if qk_norm:
            q = b.head_rms_norm(q, f"{p}.q_norm", hd)
            k = b.head_rms_norm(k, f"{p}.k_norm", hd)
        q = b.op(g.RopeOp, [q], shape_of(q.type), heads=heads, head_dim=hd, inv_freq="inv_freq", scaling=1.0)
        k = b.op(g.RopeOp, [k], shape_of(k.type), heads=kv_heads, head_dim=hd, inv_freq="inv_freq", scaling=1.0)
        extra = {} if window is None else {"window": window}
        a = b.op(g.AttentionOp, [q, k, v], (1, seq, d), heads=heads, kv_heads=kv_heads,
                 head_dim=hd, scale=hd ** -0.5, causal=True, module=f"{p}.self_attn", **extra)
        h = b.binary(g.AddOp, h, b.linear(a, f"{p}.o_proj", d, d, bias=False))
        x = b.rms_norm(h, f"{p}.post_attention_layernorm")
        gate = b.linear(x, f"{p}.mlp.gate_proj", d, ff, bias=False)
        gate = b.add(g.SiluOp.create(operands=[gate], result_types=[gate.type]))
        up = b.linear(x, f"{p}.mlp.up_proj", d, ff, bias=False)
        h = b.binary(g.AddOp, h, b.linear(b.binary(g.MulOp, gate, up), f"{p}.mlp.down_proj", ff, d, bias=False))
    x = b.rms_norm(h, "norm")
    logits = b.linear(x, "lm_head", d, vocab, bias=False)
    return b.module(logits), b.weights
