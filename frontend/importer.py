"""Import a traced model as a `wsc.graph` module: one op per ATen op, with source locations.

The result is `func.func @forward(%input_ids: tensor<1xSxi64>) -> tensor<1xSxVxf32>`. Weights
are referenced by their checkpoint names (`wsc.graph.weight "transformer.wte.weight"`) and
returned beside the module as numpy arrays -- or, without weights, as `MetaArray`s that carry
only shape and dtype. Folded constants are materialised only where a traced op consumes them:
a view of a constant stays a view op of that constant, rotary cos/sin tables become symbolic
`rope_table` ops, causal masks become named constants (`folded.<fx node>`) marked
`causal_mask` (with the `window` of a sliding-window layer, see `sliding_window.py`), and
position ids feeding an embedding become `position_embedding`.

The ATen op table lives in `aten.py`; this file is the walk and the constants.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import fx
from xdsl.dialects.builtin import FunctionType, ModuleOp, UnitAttr
from xdsl.dialects.func import FuncOp, ReturnOp
from xdsl.ir import Block, Operation, Region, SSAValue

from wsc.errors import UnsupportedOpError
from wsc.frontend import constants
from wsc.frontend.checkpoint import LoadedModel
from wsc.frontend.sliding_window import attention_window
from wsc.frontend.trace import ASSERT_OPS, Trace, trace_model
from wsc.ir.attrs import f64_attr, i64_attr, string, tensor
from wsc.ir.graph import GraphOp, RopeTableOp, WeightOp, make

TORCH_DTYPES = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16",
                torch.int64: "i64", torch.int32: "i32", torch.bool: "i1"}
TORCH_DTYPES_NP = {np.float32: "f32", np.float16: "f16", np.int64: "i64", np.int32: "i32",
                   np.bool_: "i1"}


@dataclass(frozen=True)
class MetaArray:
    """A weight without data (no-weights compiles): shape and dtype only."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * np.dtype(self.dtype).itemsize


@dataclass
class ImportedModel:
    """A model as `wsc.graph` IR plus the weights it references by name."""

    module: ModuleOp
    weights: dict[str, np.ndarray | MetaArray]
    config: Any  # transformers.PretrainedConfig
    arch: str
    digest: str
    seq_len: int


def import_model(loaded: LoadedModel, seq_len: int) -> ImportedModel:
    """Trace `loaded` at sequence length `seq_len` and import it."""
    trace = trace_model(loaded, seq_len)
    module, weights = import_trace(trace, loaded.model, no_weights=loaded.no_weights)
    return ImportedModel(module=module, weights=weights, config=loaded.config, arch=loaded.arch,
                         digest=loaded.digest, seq_len=seq_len)


def import_trace(trace: Trace, model: torch.nn.Module | None = None, *,
                 no_weights: bool = False) -> tuple[ModuleOp, dict[str, np.ndarray | MetaArray]]:
    """The `wsc.graph` module and weights of a trace; `model` resolves rotary modules."""
    importer = Importer(trace, model, no_weights)
    return importer.run(), importer.weights


def module_path(node: fx.Node) -> str:
    """The nn.Module path an FX node was traced in (`transformer.h.0.attn`), or ''."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    return path if isinstance(path, str) else ""


def tensor_type(val: Any):
    """The builtin tensor type of an FX node's example value."""
    if not isinstance(val, torch.Tensor) or val.dtype not in TORCH_DTYPES:
        raise TypeError(f"not a supported tensor: {val!r}")
    return tensor(tuple(val.shape), TORCH_DTYPES[val.dtype])


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


class Importer:
    """Walks the FX graph once, in order, emitting ops into the body of `@forward`."""

    def __init__(self, trace: Trace, model: torch.nn.Module | None, no_weights: bool):
        self.trace = trace
        self.model = model
        self.no_weights = no_weights
        self.weights: dict[str, np.ndarray | MetaArray] = {}
        self.values: dict[str, Any] = {}  # node name -> SSAValue | tuple | None
        self.block: Block | None = None
        self._weight_ops: dict[tuple[str, bool], SSAValue] = {}
        self._constants: dict[str, SSAValue] = {}

    # --- the walk -------------------------------------------------------------------

    def run(self) -> ModuleOp:
        from wsc.frontend.aten import CONVERTERS

        nodes = {n.name: n for n in self.trace.graph.nodes}
        input_node = nodes[self.trace.input_name]
        self.block = Block(arg_types=[tensor_type(input_node.meta["val"])])
        self.block.args[0].name_hint = "input_ids"
        self.values[input_node.name] = self.block.args[0]
        outputs: list[SSAValue] = []
        for node in self.trace.graph.nodes:
            if node.op == "output":
                fx.node.map_arg(node.args[0], lambda n: outputs.append(self.value(n)))
            elif node.op != "call_function" or self.trace.is_static(node):
                continue
            elif str(node.target) in ASSERT_OPS:
                continue
            else:
                convert = CONVERTERS.get(self.op_name(node))
                if convert is None:
                    raise UnsupportedOpError(
                        self.op_name(node), module_path(node),
                        "wsc.graph has no equivalent of this ATen op")
                self.values[node.name] = convert(self, node)
        self.block.add_op(ReturnOp(*outputs))
        func = FuncOp("forward", FunctionType.from_lists(
            [self.block.args[0].type], [v.type for v in outputs]), Region(self.block))
        module = ModuleOp([func])
        module.verify()
        return module

    @staticmethod
    def op_name(node: fx.Node) -> str:
        return "getitem" if node.target.__name__ == "getitem" else str(node.target)

    def emit(self, op: Operation, node: fx.Node) -> SSAValue:
        """Append `op` with `node`'s location; its result gets the FX node's name as a hint."""
        if isinstance(op, GraphOp):
            op.set_location(node.name, module_path(node))
        assert self.block is not None
        self.block.add_op(op)
        result = op.results[0]
        result.name_hint = node.name
        return result

    def build(self, cls: type[GraphOp], node: fx.Node, operands, result_type=None, **props):
        """Emit a `cls` op for `node`; the result type defaults to the node's traced type."""
        if result_type is None:
            val = node.meta["val"]
            if not isinstance(val, torch.Tensor) or val.dtype not in TORCH_DTYPES:
                raise UnsupportedOpError(self.op_name(node), module_path(node),
                                         f"its result {getattr(val, 'dtype', val)} is not a "
                                         f"tensor of {', '.join(map(str, TORCH_DTYPES))}")
            result_type = tensor_type(val)
        return self.emit(make(cls, operands, result_type, **props), node)

    # --- operands -------------------------------------------------------------------

    def value(self, arg: Any) -> SSAValue:
        """The SSA value of a tensor argument: a weight, a constant, or an imported result."""
        if not isinstance(arg, fx.Node):
            raise TypeError(f"expected a tensor argument, got {arg!r}")
        if arg.op == "placeholder" and arg.name in self.trace.state_names \
                and not self.trace.is_static(arg):
            return self.weight(arg)
        if self.trace.is_static(arg):
            return self.constant(arg)
        result = self.values.get(arg.name)
        if not isinstance(result, SSAValue):
            raise UnsupportedOpError(str(arg.target), module_path(arg),
                                     "its result is used in a way wsc cannot import")
        return result

    def static_value(self, arg: Any) -> Any:
        """The folded value of a static argument (python scalars pass through), else None."""
        if isinstance(arg, fx.Node):
            return self.trace.static.get(arg.name)
        return arg

    def scalar(self, arg: Any) -> float | None:
        """`arg` as a python number when it is one, or a folded one-element tensor."""
        v = self.static_value(arg)
        if isinstance(v, (bool, int, float)):
            return float(v)
        if isinstance(v, torch.Tensor) and v.numel() == 1 and not self._windowed_mask(arg, v):
            return float(v.reshape(()).item())
        return None

    def _windowed_mask(self, node: fx.Node, value: torch.Tensor) -> bool:
        """A one-token causal mask of sliding-window layers: it stays a mask, as the only
        place the window is recorded (a one-token prompt cannot show it)."""
        array = _numpy(value)
        return array.ndim >= 2 and constants.causal_mask_kind(array) is not None \
            and self.mask_window(node, array) is not None

    def weight(self, node: fx.Node, transpose: bool = False) -> SSAValue:
        """`wsc.graph.weight` of a parameter placeholder (read transposed if asked)."""
        name = self.trace.state_names[node.name]
        key = (name, transpose)
        if key not in self._weight_ops:
            val = node.meta["val"]
            shape = tuple(val.shape)
            if transpose:
                shape = shape[::-1]
            self.weights.setdefault(name, self._weight_data(name, val))
            op = make(WeightOp, [], tensor(shape, TORCH_DTYPES[val.dtype]), name=string(name),
                      transpose=UnitAttr() if transpose else None)
            op.set_location(node.name, name.rpartition(".")[0])  # the module owning it
            assert self.block is not None
            self.block.add_op(op)
            op.results[0].name_hint = node.name
            self._weight_ops[key] = op.results[0]
        return self._weight_ops[key]

    def _weight_data(self, name: str, val: torch.Tensor) -> np.ndarray | MetaArray:
        program = self.trace.program
        data = program.state_dict.get(name, program.constants.get(name))
        if self.no_weights or data is None or data.device.type == "meta":
            return MetaArray(tuple(val.shape), np.dtype(str(val.dtype).removeprefix("torch.")))
        return _numpy(data)

    # --- folded constants -------------------------------------------------------------

    def constant(self, node: fx.Node) -> SSAValue:
        """Materialise a static node: views of constants stay views, the rest are leaves."""
        from wsc.frontend.aten import CONVERTERS, VIEW_OPS

        if node.name not in self._constants:
            name = self.op_name(node)
            same_dtype = isinstance(node.args[0], fx.Node) and \
                node.args[0].meta["val"].dtype == node.meta["val"].dtype
            if name in VIEW_OPS and same_dtype:
                self._constants[node.name] = CONVERTERS[name](self, node)
            else:
                self._constants[node.name] = self._leaf_constant(node)
        return self._constants[node.name]

    def _leaf_constant(self, node: fx.Node) -> SSAValue:
        value = self.trace.static[node.name]
        if not isinstance(value, torch.Tensor):
            raise UnsupportedOpError(self.op_name(node), module_path(node),
                                     f"folds to a non-tensor value {value!r} used as a tensor")
        rotary = self._rotary_module(node)
        if rotary is not None:
            return self._rope_table(node, value, rotary)
        array = _numpy(value)
        if array.ndim >= 2 and constants.causal_mask_kind(array):
            return self.mask_constant(node, array)
        name = f"folded.{node.name}"
        self.weights[name] = array
        return self.emit(make(WeightOp, [], tensor_type(value), name=string(name)), node)

    # --- causal masks -----------------------------------------------------------------

    def mask_constant(self, node: fx.Node, array: np.ndarray) -> SSAValue:
        """The causal mask `array` (`node`'s value, or made from it) as a constant marked
        `causal_mask`, with the sliding window of the attention layers that read it."""
        name = f"folded.{node.name}"
        self.weights[name] = array
        window = self.mask_window(node, array)
        op = make(WeightOp, [], tensor(array.shape, TORCH_DTYPES_NP[array.dtype.type]),
                  name=string(name), causal_mask=UnitAttr(),
                  window=None if window is None else i64_attr(window))
        return self.emit(op, node)

    def mask_window(self, node: fx.Node, mask: np.ndarray) -> int | None:
        """The sliding window of the causal mask `node`: the one its values show, else the
        one its attention layers are configured with, if the mask is too short to show it."""
        shown = constants.mask_window(mask)
        if shown is not None:
            return shown
        windows = {attention_window(self.model, path) for path in self._reader_paths(node)}
        if len(windows) > 1:
            raise UnsupportedOpError(
                self.op_name(node), module_path(node),
                f"one causal mask serves attention layers with different sliding windows "
                f"{sorted(windows, key=str)}")
        window = windows.pop() if windows else None
        # a window shorter than the mask would show in it: then the model does not use it
        return window if window is not None and window >= mask.shape[-1] else None

    def _reader_paths(self, node: fx.Node) -> set[str]:
        """Module paths of the traced ops that read `node` (through folded views)."""
        paths: set[str] = set()
        todo = list(node.users)
        while todo:
            user = todo.pop()
            if self.trace.is_static(user):
                todo.extend(user.users)
            elif user.op == "call_function":
                paths.add(module_path(user))
        return paths

    def _rotary_module(self, node: fx.Node) -> str | None:
        """The path of the rotary-embedding module `node` was computed in, if any."""
        for path, cls in (node.meta.get("nn_module_stack") or {}).values():
            cls_name = cls if isinstance(cls, str) else getattr(cls, "__name__", "")
            if cls_name.endswith("RotaryEmbedding"):
                return path
        return None

    def _rope_table(self, node: fx.Node, value: torch.Tensor, path: str) -> SSAValue:
        """A folded rotary table as `rope_table`, after checking its values."""
        module = self.model.get_submodule(path) if self.model is not None else None
        inv_freq_name = f"{path}.inv_freq"
        placeholder = next((n for n, t in self.trace.state_names.items() if t == inv_freq_name), None)
        inv_freq = self.trace.static.get(placeholder) if placeholder else None
        rope_type = getattr(module, "rope_type", "default")
        scaling = float(getattr(module, "attention_scaling", 1.0) or 1.0)
        kind = None
        if isinstance(inv_freq, torch.Tensor):
            kind = constants.rope_table_kind(_numpy(value), _numpy(inv_freq), scaling)
        if kind is None:
            raise UnsupportedOpError(
                f"rotary embedding (rope_type={rope_type!r})", path,
                f"the folded table `{node.name}` {tuple(value.shape)} is not cos/sin(position * "
                f"inv_freq) * {scaling} with halves concatenated",
                hint="wsc implements rotate-half rotary embeddings whose angles are "
                     "position * inv_freq; other rope variants need a new rope kernel")
        self.weights[inv_freq_name] = _numpy(inv_freq).astype(np.float32)
        op = make(RopeTableOp, [], tensor_type(value), kind=string(kind),
                  inv_freq=string(inv_freq_name), scaling=f64_attr(scaling))
        return self.emit(op, node)
