"""The graph-level pipeline: imported `wsc.graph` -> kernel form (see check_graph_form).

Canonicalize first so that view chains are short; recognise norms, decomposed activations,
rotary embeddings (which attention then reads through) and attention; canonicalize again to
fold the head views away; and check that only kernel-form ops remain.
"""

from __future__ import annotations

from collections.abc import Callable

from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from wsc.ir import make_context
from wsc.passes.canonicalize import GraphCanonicalize
from wsc.passes.check_graph_form import CheckGraphForm
from wsc.passes.recognize_activations import RecognizeActivations
from wsc.passes.recognize_attention import RecognizeAttention
from wsc.passes.recognize_norms import RecognizeNorms
from wsc.passes.recognize_rope import RecognizeRope

GRAPH_PIPELINE: list[type[ModulePass]] = [
    GraphCanonicalize,
    RecognizeNorms,
    RecognizeActivations,
    RecognizeRope,
    RecognizeAttention,
    GraphCanonicalize,
    CheckGraphForm,
]

GRAPH_PASSES: dict[str, type[ModulePass]] = {p.name: p for p in GRAPH_PIPELINE}


def run_graph_passes(module: ModuleOp, *,
                     callback: Callable[[ModulePass, ModuleOp], None] | None = None) -> ModuleOp:
    """Run the graph pipeline in place, verifying after every pass; `callback(pass, module)`
    is called after each one (for --print-ir-after-all and pass timings)."""
    ctx = make_context()
    for pass_cls in GRAPH_PIPELINE:
        p = pass_cls()
        p.apply(ctx, module)
        module.verify()
        if callback is not None:
            callback(p, module)
    return module
