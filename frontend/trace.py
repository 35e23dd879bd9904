"""Trace a loaded model with `torch.export` into core ATen, and fold what is static.

The program is exported at one sequence length S with batch 1, decomposed to the core ATen
opset except `scaled_dot_product_attention` (kept whole so attention stays recognisable), and
then every node that depends only on static shapes and buffers -- positions, causal masks,
rotary cos/sin tables -- is evaluated once with torch on the CPU. The importer turns those
values into constants; nothing depending on `input_ids` or a parameter is ever folded.

Tracing works on `meta` models too (no weights): the export runs on meta tensors, and folding
substitutes the real buffer values kept in `LoadedModel.buffers`.
"""

from __future__ import annotations

import operator
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx

from wsc.errors import UnsupportedOpError, UsageError
from wsc.frontend.checkpoint import LoadedModel

# Ops that only check metadata at run time: dropped from the program, never evaluated.
ASSERT_OPS = frozenset({
    "aten._assert_tensor_metadata.default", "aten._assert_scalar.default",
    "aten.sym_constrain_range_for_size.default", "aten._assert_async.msg",
})


@dataclass
class Trace:
    """A decomposed export of the model plus the values of its static nodes."""

    graph: fx.Graph
    program: torch.export.ExportedProgram
    input_name: str  # the input_ids placeholder
    state_names: dict[str, str]  # placeholder -> parameter / buffer / constant name
    static: dict[str, Any]  # node name -> value, for every node that does not depend on inputs
    seq_len: int

    def is_static(self, node: fx.Node) -> bool:
        return node.name in self.static


def trace_model(loaded: LoadedModel, seq_len: int) -> Trace:
    """Export `loaded.model` at batch 1 and sequence length `seq_len`, decompose, fold."""
    max_positions = getattr(loaded.config, "max_position_embeddings", None) or getattr(
        loaded.config, "n_positions", None)
    if seq_len < 1 or (max_positions and seq_len > max_positions):
        raise UsageError(f"sequence length {seq_len} is outside 1..{max_positions}, the "
                         f"positions this {loaded.arch} config supports")
    device = "meta" if loaded.no_weights else "cpu"
    input_ids = torch.zeros((1, seq_len), dtype=torch.long, device=device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(loaded.model, (input_ids,), kwargs={"use_cache": False},
                                      strict=False)
    return trace_program(program, seq_len, loaded.buffers)


def trace_program(program: torch.export.ExportedProgram, seq_len: int,
                  buffers: dict[str, torch.Tensor] | None = None) -> Trace:
    """Decompose an exported program and fold its static nodes; `buffers` gives real values
    for buffers the program only has on `meta`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = program.run_decompositions(decomposition_table())
    signature = program.graph_signature
    state_names = {**signature.inputs_to_parameters, **signature.inputs_to_buffers,
                   **signature.inputs_to_lifted_tensor_constants}
    user_inputs = [n for n in signature.user_inputs if n not in state_names]
    input_name = user_inputs[0]
    graph = program.graph_module.graph
    values = {**program.state_dict, **program.constants, **(buffers or {})}
    static = fold_static(graph, input_name, signature.inputs_to_parameters, state_names, values)
    return Trace(graph=graph, program=program, input_name=input_name, state_names=state_names,
                 static=static, seq_len=seq_len)


def decomposition_table() -> dict:
    """The core ATen decompositions, minus those that would split up SDPA."""
    table = torch.export.default_decompositions()
    for op in list(table):
        if "scaled_dot_product" in str(op):
            del table[op]
    return table


def fold_static(graph: fx.Graph, input_name: str, parameters: dict[str, str],
                state_names: dict[str, str], values: dict[str, Any]) -> dict[str, Any]:
    """Evaluate, in graph order, every node whose inputs are all static (no input_ids, no
    parameters); buffers and lifted constants count as static, with the values given."""
    static: dict[str, Any] = {}
    for node in graph.nodes:
        if node.op == "placeholder":
            if node.name in parameters or node.name == input_name:
                continue
            if node.name in state_names:
                static[node.name] = values[state_names[node.name]]
            elif not isinstance(node.meta.get("val"), torch.Tensor):
                static[node.name] = node.meta.get("val")  # non-tensor user input (use_cache)
            continue
        if node.op != "call_function" or str(node.target) in ASSERT_OPS:
            continue
        inputs = node.all_input_nodes
        if not all(n.name in static for n in inputs):
            continue
        args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda n: static[n.name])
        if "device" in kwargs:
            kwargs = {**kwargs, "device": torch.device("cpu")}
        if node.target is operator.getitem:
            static[node.name] = args[0][args[1]]
            continue
        try:
            static[node.name] = node.target(*args, **kwargs)
        except Exception as e:  # e.g. a buffer that exists only on `meta`
            stack = node.meta.get("nn_module_stack") or {}
            where = list(stack.values())[-1][0] if stack else ""
            raise UnsupportedOpError(str(node.target), where,
                                     f"cannot fold this shape-only computation: {e}") from None
    return static
