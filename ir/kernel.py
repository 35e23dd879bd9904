"""`wsc.kernel`: distributed kernels (DESIGN §5, second level).

One op is one kernel that will own a rectangle of PEs: an embedding lookup, a norm, a linear
layer, an attention block, or a standalone elementwise map. Its `grid` is the PE rectangle
(rows x cols) the partitioner chose and `sram_bytes` the peak per-PE footprint of the tile
program that implements it; the verifier checks that footprint against the module's budget.

Activations are token-major matrices `[S, F]`. Elementwise work that follows a kernel is
fused into its *epilogue*: a region whose first block argument is the kernel's own result
tile and whose further arguments are the `extras` operands (a residual, a gate); it holds
`wsc.graph` elementwise ops and yields the kernel's results.
"""

from __future__ import annotations

from typing import ClassVar

from xdsl.dialects.builtin import (
    DenseArrayBase,
    FloatAttr,
    IntegerAttr,
    ModuleOp,
    StringAttr,
    TensorType,
    UnitAttr,
)
from xdsl.ir import Dialect, Operation
from xdsl.irdl import (
    AttrSizedOperandSegments,
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_op_definition,
    opt_prop_def,
    prop_def,
    region_def,
    traits_def,
    var_operand_def,
    var_result_def,
)
from xdsl.traits import HasParent, IsTerminator
from xdsl.utils.exceptions import VerifyException

from wsc.ir.attrs import get_ints, shape_of

SRAM_BUDGET_ATTR = "wsc.sram_budget"


def module_attr(op: Operation, key: str):
    """An attribute of the enclosing `builtin.module`, or None."""
    m = op.get_toplevel_object()
    if isinstance(m, ModuleOp):
        return m.attributes.get(key)
    return None


class KernelOp(IRDLOperation):
    """Base of the kernels: inputs, epilogue extras, grid, footprint and location."""

    inputs = var_operand_def(TensorType)
    extras = var_operand_def(TensorType)
    outputs = var_result_def(TensorType)
    sym_name = prop_def(StringAttr)
    grid = opt_prop_def(DenseArrayBase)
    sram_bytes = opt_prop_def(IntegerAttr)
    origin = opt_prop_def(DenseArrayBase)  # (x, y) of the top-left PE, once placed
    # prefill produces only the last token's row (the logits a generation step needs)
    last_row = opt_prop_def(UnitAttr)
    fx = opt_prop_def(StringAttr)
    module = opt_prop_def(StringAttr)
    # the stack of kernels sharing this kernel's PEs (plan.py folds layers), run in sequence
    stack = opt_prop_def(StringAttr)
    epilogue = region_def("single_block")

    irdl_options = (AttrSizedOperandSegments(as_property=True), ParsePropInAttrDict())
    assembly_format = (
        "$sym_name `(` $inputs `:` type($inputs) `)` "
        "(`extras` `(` $extras^ `:` type($extras) `)`)? "
        "`->` type($outputs) attr-dict-with-keyword $epilogue"
    )

    KIND: ClassVar[str] = ""

    @property
    def kernel_name(self) -> str:
        return self.sym_name.data

    @property
    def grid_shape(self) -> tuple[int, int] | None:
        return None if self.grid is None else get_ints(self.grid)  # type: ignore[return-value]

    @property
    def source(self) -> tuple[str, str]:
        """(FX node, module path) of the op this kernel was built around."""
        return (
            self.fx.data if self.fx is not None else "",
            self.module.data if self.module is not None else "",
        )

    def core_shape(self) -> tuple[int, ...]:
        """Shape of the kernel's own result, before the epilogue."""
        raise NotImplementedError

    def verify_(self) -> None:
        block = self.epilogue.block
        want = [self.core_shape()] + [shape_of(e.type) for e in self.extras]
        got = [shape_of(a.type) for a in block.args]
        if got != want:
            raise VerifyException(f"{self.kernel_name}: epilogue arguments {got}, expected {want}")
        term = block.last_op
        if not isinstance(term, YieldOp):
            raise VerifyException(f"{self.kernel_name}: epilogue must end in wsc.kernel.yield")
        if [v.type for v in term.values] != [r.type for r in self.outputs]:
            raise VerifyException(f"{self.kernel_name}: epilogue yields do not match results")
        if self.grid is not None:
            r, c = self.grid_shape  # type: ignore[misc]
            if r < 1 or c < 1:
                raise VerifyException(f"{self.kernel_name}: empty grid {r}x{c}")
        budget = module_attr(self, SRAM_BUDGET_ATTR)
        if self.sram_bytes is not None and isinstance(budget, IntegerAttr):
            need, have = self.sram_bytes.value.data, budget.value.data
            if need > have:
                raise VerifyException(
                    f"kernel {self.kernel_name} needs {need} bytes of SRAM per PE, "
                    f"the budget is {have}"
                )


@irdl_op_definition
class EmbeddingKernel(KernelOp):
    """Token (and optionally position) embedding: rows of `table` gathered by id."""

    name = "wsc.kernel.embedding"
    KIND: ClassVar[str] = "embedding"
    table = prop_def(StringAttr)
    position_table = opt_prop_def(StringAttr)
    dim = prop_def(IntegerAttr)

    def core_shape(self) -> tuple[int, ...]:
        return (shape_of(self.inputs[0].type)[0], self.dim.value.data)


@irdl_op_definition
class NormKernel(KernelOp):
    """LayerNorm (`kind = "layer"`) or RMSNorm (`kind = "rms"`) over each row; the gain is
    `gamma + gamma_offset` (Gemma's `1 + weight`)."""

    name = "wsc.kernel.norm"
    KIND: ClassVar[str] = "norm"
    norm = prop_def(StringAttr)
    gamma = prop_def(StringAttr)
    beta = opt_prop_def(StringAttr)
    eps = prop_def(FloatAttr)
    gamma_offset = opt_prop_def(FloatAttr)

    def core_shape(self) -> tuple[int, ...]:
        return shape_of(self.inputs[0].type)

    def verify_(self) -> None:
        if self.norm.data not in ("layer", "rms"):
            raise VerifyException(f"{self.kernel_name}: unknown norm {self.norm.data}")
        super().verify_()


@irdl_op_definition
class LinearKernel(KernelOp):
    """`x @ W + b` with the weight resident in the PEs' SRAM (weight-stationary)."""

    name = "wsc.kernel.linear"
    KIND: ClassVar[str] = "linear"
    weight = prop_def(StringAttr)
    transpose_weight = opt_prop_def(UnitAttr)
    bias = opt_prop_def(StringAttr)
    k = prop_def(IntegerAttr)
    n = prop_def(IntegerAttr)

    def core_shape(self) -> tuple[int, ...]:
        return (shape_of(self.inputs[0].type)[0], self.n.value.data)


@irdl_op_definition
class AttentionKernel(KernelOp):
    """Causal multi-head attention over q, k, v token-major matrices, with optional per-head
    RMSNorms (`q_norm` / `k_norm` gains, Qwen3) and then a rotary embedding applied to q and k
    first, an optional sliding `window`, and a KV cache resident in SRAM for decode."""

    name = "wsc.kernel.attention"
    KIND: ClassVar[str] = "attention"
    heads = prop_def(IntegerAttr)
    kv_heads = prop_def(IntegerAttr)
    head_dim = prop_def(IntegerAttr)
    scale = prop_def(FloatAttr)
    causal = opt_prop_def(UnitAttr)
    window = opt_prop_def(IntegerAttr)
    rope_inv_freq = opt_prop_def(StringAttr)
    rope_scaling = opt_prop_def(FloatAttr)
    q_norm = opt_prop_def(StringAttr)
    k_norm = opt_prop_def(StringAttr)
    qk_norm_eps = opt_prop_def(FloatAttr)
    qk_norm_offset = opt_prop_def(FloatAttr)

    def core_shape(self) -> tuple[int, ...]:
        return shape_of(self.inputs[0].type)


@irdl_op_definition
class EltwiseKernel(KernelOp):
    """A standalone elementwise map; its core result is its first input, unchanged."""

    name = "wsc.kernel.eltwise"
    KIND: ClassVar[str] = "eltwise"

    def core_shape(self) -> tuple[int, ...]:
        return shape_of(self.inputs[0].type)


KERNEL_OPS = [EmbeddingKernel, NormKernel, LinearKernel, AttentionKernel, EltwiseKernel]


@irdl_op_definition
class YieldOp(IRDLOperation):
    name = "wsc.kernel.yield"
    values = var_operand_def(TensorType)
    traits = traits_def(IsTerminator(), HasParent(*KERNEL_OPS))
    assembly_format = "$values attr-dict `:` type($values)"


WscKernel = Dialect("wsc.kernel", [*KERNEL_OPS, YieldOp], [])
