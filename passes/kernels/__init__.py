"""One distributed algorithm per kernel kind (DESIGN §4).

Each module provides `layouts(kernel, grid, ctx, phase)`, `grids(kernel, max_side)` (the
candidate PE rectangles) and `lower(builder, kernel, ctx, phase)`, which emits the region's
tile program for one phase.
"""

from __future__ import annotations

from dataclasses import replace
from types import ModuleType

from xdsl.ir import Operation

from wsc.ir.kernel import AttentionKernel, EltwiseKernel, EmbeddingKernel, KernelOp, LinearKernel, NormKernel
from wsc.passes.kernels import attention, eltwise, embedding, linear, norm
from wsc.passes.kernels.common import PHASES, LowerCtx
from wsc.ir.tile import AdvanceOp
from wsc.passes.tile_builder import RegionBuilder

ALGORITHMS: dict[type[KernelOp], ModuleType] = {
    EmbeddingKernel: embedding,
    NormKernel: norm,
    LinearKernel: linear,
    AttentionKernel: attention,
    EltwiseKernel: eltwise,
}


def algorithm(k: KernelOp) -> ModuleType:
    return ALGORITHMS[type(k)]


def build_region(k: KernelOp, grid: tuple[int, int], ctx: LowerCtx, phase: str, *,
                 budget: int, inputs=None, outputs=None) -> RegionBuilder:
    """Lower `k` on `grid` for `phase`, double-buffering as much as the SRAM budget allows.

    A kernel marked `last_row` (the one that makes the logits, when only the last position's
    are wanted) takes, in prefill, the last row of every chunk as it streams past and computes
    once, on the final one, as a decode step does.
    """
    last_row = k.last_row is not None
    b = None
    for db in range(ctx.double_buffer, -1, -1):
        fx, module = k.source
        b = RegionBuilder(k.kernel_name, k.KIND, grid, module, dict(inputs or {}),
                          dict(outputs or {}), ctx.cost)
        b.result_module = result_module(k)
        lctx = replace(ctx, double_buffer=db)
        if phase == "prefill" and last_row:
            b.recv_repeat = ctx.chunks
            algorithm(k).lower(b, k, lctx, "decode")
        else:
            chunks = ctx.chunks if phase == "prefill" else 1
            with b.loop(chunks, chunks=True):  # a chunked prefill runs it once per chunk
                algorithm(k).lower(b, k, lctx, phase)
                if chunks > 1:
                    b.op(AdvanceOp, [], tokens=ctx.tokens(phase))
        if b.allocate() <= budget:
            break
    return b


def result_module(k: KernelOp) -> str:
    """The module path of the op whose value is the kernel's first result: the last op of
    its epilogue (e.g. `mlp.act_fn` for a SiLU fused into `gate_proj`), or the kernel's own."""
    yielded = list(k.epilogue.block.ops)[-1].operands
    owner = yielded[0].owner if yielded else None
    module = getattr(owner, "module", None) if isinstance(owner, Operation) else None
    return module.data if module is not None else k.source[1]


__all__ = ["ALGORITHMS", "PHASES", "LowerCtx", "algorithm", "build_region"]
