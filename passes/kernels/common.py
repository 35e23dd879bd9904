"""What every kernel lowering shares: the lowering context, weight access, the epilogue."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from xdsl.ir import SSAValue

from wsc.errors import UnsupportedOpError
from wsc.ir import graph as g
from wsc.ir import tile as t
from wsc.ir.attrs import shape_of
from wsc.ir.kernel import KernelOp, YieldOp
from wsc.ir.layout import REPLICATED, Layout, split_cols, split_rows
from wsc.machine.cost import CostModel
from wsc.passes.tile_builder import RegionBuilder

PHASES = ("prefill", "decode")
M_INIT = -3.0e38  # running max before any key: finite, so masked rows never make NaN


@dataclass
class LowerCtx:
    dtype: str  # storage dtype of weights and activations: f32 | f16 | bf16
    seq_len: int  # prefill tokens
    max_seq: int  # KV cache positions
    weights: Mapping[str, Any]  # the frontend's weight store (arrays, or shapes when plan-only)
    chunk: int = 0  # prefill tokens per chunk (0: the whole prompt at once)
    double_buffer: int = 2  # at most: 2 operands and weights, 1 operands only, 0 none
    cost: CostModel | None = None  # the target's costs, which choose collective tree depths
    accumulate: str = "f32"  # linear layers' accumulators: f32, or f16 as WaferLLM does

    def tokens(self, phase: str) -> int:
        """Tokens one pass of a kernel's program processes: a prefill chunk, or one."""
        return (self.chunk or self.seq_len) if phase == "prefill" else 1

    @property
    def chunks(self) -> int:
        return self.seq_len // (self.chunk or self.seq_len)

    def matrix(self, name: str, transpose: bool = False, *, offset: float = 0.0,
               repeat: int = 1):
        """A weight as a 2-D float32 matrix (vectors become one row), read lazily; `offset`
        is added to every element (a `1 + weight` gain) and the columns are repeated
        `repeat` times (one head's gain for every head a PE holds)."""

        def read() -> np.ndarray:
            a = np.asarray(self.weights[name], dtype=np.float32)
            if a.ndim == 1:
                a = a[None, :]
            elif a.ndim > 2:
                a = a.reshape(-1, a.shape[-1])
            a = np.tile(a.T if transpose else a, (1, repeat)) + np.float32(offset)
            return np.ascontiguousarray(a)

        return read


def ladder(hi: int, dense: int = 8, ratio: float = 1.25) -> list[int]:
    """Candidate extents: every value up to `dense`, then geometric steps up to `hi`."""
    out, v = list(range(1, min(dense, hi) + 1)), float(dense)
    while out and out[-1] < hi:
        v = max(v * ratio, out[-1] + 1)
        out.append(min(hi, int(round(v))))
    return out


def rowwise_layout(tokens: int, features: int, grid: tuple[int, int], phase: str) -> Layout:
    """Token rows over the region's rows (every row has the one decode token), features over
    its columns: the layout of kernels that work row by row (norms, elementwise maps)."""
    rows = split_rows(grid[0]) if phase == "prefill" else REPLICATED
    return Layout((tokens, features), grid, rows, split_cols(grid[1]))


def rowwise_grids(tokens: int, features: int, max_h: int, max_w: int) -> list[tuple[int, int]]:
    return [(r, c) for r in ladder(min(tokens, max_h), 4, 1.5)
            for c in ladder(min(features, max_w), 4, 1.5)]


def row_vector(layout: Layout, n: int) -> Layout:
    """A length-`n` vector broadcast over rows, split like `layout`'s columns."""
    return Layout((1, n), layout.grid, REPLICATED, layout.cols)


UNARY_FN = {
    "neg": "neg", "exp": "exp", "tanh": "tanh", "sigmoid": "sigmoid", "rsqrt": "rsqrt",
    "sqrt": "sqrt", "relu": "relu", "silu": "silu", "erf": "erf", "cos": "cos", "sin": "sin",
    "reciprocal": "reciprocal",
}
COMMUTATIVE = {"add", "mul", "maximum", "minimum"}


def lower_result(b: RegionBuilder, k: KernelOp, ctx: LowerCtx, layout: Layout,
                 produce: Callable[[SSAValue], object], *, core: SSAValue | None = None,
                 core_name: str = "core") -> list[SSAValue]:
    """Emit the kernel's last op, `produce(dst)`, and its epilogue; returns the outputs.

    Without an epilogue the op writes the storage-dtype output directly, rounding as it
    writes; otherwise it writes the fp32 `core` (a new buffer unless one is given) and the
    epilogue follows."""
    block = k.epilogue.block
    if (len(block.args) == 1 and [type(op) for op in block.ops] == [YieldOp]
            and list(block.ops.last.values) == [block.args[0]]):
        out = b.buffer("out0", layout.tile, ctx.dtype, layout=layout)
        produce(out)
        return [out]
    if core is None:
        core = b.buffer(core_name, layout.tile, "f32", layout=layout)
    produce(core)
    return lower_epilogue(b, k, ctx, core, layout)


def lower_epilogue(b: RegionBuilder, k: KernelOp, ctx: LowerCtx, core: SSAValue,
                   layout: Layout) -> list[SSAValue]:
    """Emit the kernel's fused elementwise epilogue on its result tile (`core`, fp32, in
    `layout`); returns the output buffers, rounded to the storage dtype, one per result. The
    op that makes a result writes it straight into its output buffer, rounding as it writes,
    unless something else reads it."""
    block = k.epilogue.block
    env: dict[SSAValue, SSAValue] = {block.args[0]: core}
    kinds: dict[SSAValue, str] = {core: "temp"}
    for i, arg in enumerate(block.args[1:]):
        buf = b.buffer(f"extra{i}", layout.tile, ctx.dtype, layout=layout)
        b.recv(buf, ("extra", i))
        env[arg] = buf
        kinds[buf] = "extra"
    uses = {v: len(list(v.uses)) for op in block.ops for v in op.results}
    uses[block.args[0]] = len(list(block.args[0].uses))

    yielded = {v: i for i, v in enumerate(block.ops.last.values)}
    outs: dict[int, SSAValue] = {}

    def fresh(srcs: list[SSAValue], result: SSAValue | None = None) -> SSAValue:
        if result in yielded and uses.get(result) == 1:  # only yielded: round as it is written
            i = yielded[result]
            outs[i] = b.buffer(f"out{i}", layout.tile, ctx.dtype, layout=layout)
            kinds[outs[i]] = "out"
            return outs[i]
        for s in srcs:  # write in place over a temporary that dies here
            if s in env and kinds.get(env[s]) == "temp" and uses.get(s, 0) == 0:
                return env[s]
        buf = b.buffer("tmp", layout.tile, "f32", layout=layout)
        kinds[buf] = "temp"
        return buf

    def consume(vals: list[SSAValue]) -> None:
        for v in vals:
            if v in uses:
                uses[v] -= 1

    module = k.source[1]
    for op in block.ops:
        if isinstance(op, YieldOp):
            for i, v in enumerate(op.values):
                if i not in outs:
                    outs[i] = b.buffer(f"out{i}", layout.tile, ctx.dtype, layout=layout)
                    b.op(t.UnaryOp, [env[v], outs[i]], fn="identity")
            return [outs[i] for i in range(len(op.values))]
        if isinstance(op, g.WeightOp):
            n = int(np.prod(shape_of(op.result.type)))
            if n != layout.shape[1]:
                raise UnsupportedOpError(
                    op.name, module, f"epilogue weight {op.ref} of {n} elements does not "
                    f"broadcast over rows of {layout.shape[1]}")
            lay = row_vector(layout, n)
            env[op.result] = b.weight(f"ew_{len(b.shards)}", lay, ctx.dtype,
                                      ctx.matrix(op.ref, op.transpose is not None))
            kinds[env[op.result]] = "weight"
        elif isinstance(op, g.CastOp):
            env[op.result] = env[op.x]
            uses[op.x] = uses.get(op.x, 0) + uses.get(op.result, 0) - 1
        elif isinstance(op, g.UnaryOp):
            name = op.name.split(".")[-1]
            fn = ("gelu_tanh" if op.tanh_approx else "gelu") if isinstance(op, g.GeluOp) else UNARY_FN[name]
            consume([op.x])
            out = fresh([op.x], op.result)
            b.op(t.UnaryOp, [env[op.x], out], fn=fn)
            env[op.result] = out
        elif isinstance(op, g.BinaryOp):
            fn = op.name.split(".")[-1]
            if op.rhs is None:
                consume([op.lhs])
                out = fresh([op.lhs], op.result)
                b.op(t.ScalarOp, [env[op.lhs], out], fn=fn, value=op.scalar_value,
                     reverse=op.reverse is not None)
            else:
                x, y = op.lhs, op.rhs
                swap = kinds.get(env[x]) == "weight" and kinds.get(env[y]) != "weight"
                consume([x, y])
                # w / x goes through 1/x in `out`: that must not be rounded to storage
                out = fresh([x, y], None if swap and fn == "div" else op.result)
                if swap and fn in COMMUTATIVE:
                    b.op(t.BinaryOp, [env[y], env[x], out], fn=fn)
                elif swap and fn == "sub":  # w - x = -(x - w)
                    b.op(t.BinaryOp, [env[y], env[x], out], fn="sub")
                    b.op(t.ScalarOp, [out, out], fn="mul", value=-1.0)
                elif swap and fn == "div":  # w / x = w * (1/x)
                    b.op(t.UnaryOp, [env[y], out], fn="reciprocal")
                    b.op(t.BinaryOp, [out, env[x], out], fn="mul")
                elif swap:
                    raise UnsupportedOpError(op.name, module, "a weight on the left of " + fn)
                else:
                    b.op(t.BinaryOp, [env[x], env[y], out], fn=fn)
            env[op.result] = out
        else:
            raise UnsupportedOpError(op.name, module, "not an elementwise op; it cannot be fused")
    raise AssertionError("epilogue without yield")
