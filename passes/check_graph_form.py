"""check-graph-form: the contract between the graph passes and partitioning.

After the graph pipeline a supported model holds only ops that map onto wafer kernels:
weights, embeddings, layer / RMS norms, linear layers, attention, rope, elementwise ops and
casts, reshapes that keep the matrix view [prod(leading dims), last dim], and column slices
(the last dim, step 1). Anything else means the model has a structure the recognisers do not
know; it is reported as an `UnsupportedOpError` at its source location rather than failing
later in partitioning.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.dialects.func import FuncOp, ReturnOp
from xdsl.ir import Operation
from xdsl.passes import ModulePass

from wsc.errors import UnsupportedOpError
from wsc.ir import graph as g
from wsc.ir.attrs import shape_of
from wsc.passes import views

KERNEL_OPS = (g.WeightOp, g.EmbeddingOp, g.PositionEmbeddingOp, g.LayerNormOp, g.RmsNormOp,
              g.LinearOp, g.AttentionOp, g.RopeOp, g.CastOp, *g.UNARY_OPS.values(),
              *g.BINARY_OPS.values())

_WHY = {
    g.SdpaOp: "attention that is not causal self-attention on per-head views of q/k/v columns",
    g.MatmulOp: "a product of two activations that is not part of a recognised attention",
    g.SoftmaxOp: "a softmax that is not part of a recognised attention",
    g.MeanOp: "a reduction that is not part of a recognised RMSNorm",
    g.RopeTableOp: "rotary tables used other than by a recognised rotate-half rope",
    g.ConcatOp: "a concatenation that is not part of a recognised rope",
    g.WhereOp: "a select that is not a recognised attention mask",
    g.TransposeOp: "a layout change the kernels do not implement",
    g.ExpandOp: "a broadcast the kernels do not implement",
}


def form_violation(op: Operation) -> str | None:
    """Why `op` may not appear after the graph passes, or None."""
    if isinstance(op, (ReturnOp, FuncOp, ModuleOp)):
        return None
    if isinstance(op, g.WeightOp) and op.causal_mask is not None:
        return "an attention mask used outside a recognised attention"
    if isinstance(op, KERNEL_OPS):
        return None
    if isinstance(op, g.ReshapeOp):
        if views.is_leading_reshape(shape_of(op.x.type), shape_of(op.result.type)):
            return None
        return "a reshape that splits or merges the last (feature) dim"
    if isinstance(op, g.SliceOp):
        dim, _, _, step = op.bounds()
        if dim == len(shape_of(op.x.type)) - 1 and step == 1:
            return None
        return "a slice of a dim other than the last (feature) dim"
    return _WHY.get(type(op), "an op with no wafer kernel")


@dataclass(frozen=True)
class CheckGraphForm(ModulePass):
    """Raise `UnsupportedOpError` for the first op that is not in kernel form."""

    name = "check-graph-form"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        for inner in op.walk():
            why = form_violation(inner)
            if why is not None:
                fx, module = inner.source if isinstance(inner, g.GraphOp) else ("", "")
                raise UnsupportedOpError(
                    inner.name, module, f"{why} (traced as `{fx}`) remains after the graph passes")
