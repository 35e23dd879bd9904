"""`wsc simulate --check --compare-layers`: every kernel's output against PyTorch (DESIGN §9).

The simulator records every message a region sends during prefill; a region's first result is
what it sends first, all chunks of it stacked (the rows of the prompt's tokens). Its torch
counterpart is taken with forward hooks on the golden model, at a module path the bundle names:

1. when a consumer of the result is a linear or norm kernel that takes it whole as its main
   input, that consumer module's *input* (pre-hook). This is exactly the kernel's output
   with whatever was fused into its epilogue — a residual add, the attention core before
   `o_proj`, the SiLU-gated product, the embedding plus positions — none of which is the
   output of a module of its own;
2. otherwise the *output* of the module of the op that made the result (`result_module` of
   the region: e.g. `mlp.act_fn` for a SiLU fused into `gate_proj`; else the kernel's own
   module: `q_proj`, a norm, the LM head).

A kernel for which neither exists, or whose reference has another shape, is listed without an
error and does not count. The first kernel, in pipeline order, whose relative L2 error exceeds
the bundle dtype's tolerance is named: with every kernel before it correct, that is where the
error enters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wsc.ir import tile as t
from wsc.numerics import compare
from wsc.runtime_sim.simulator import Simulator

MAIN_INPUT_KINDS = ("linear", "norm")  # kernels whose module's first input is their input0


@dataclass
class KernelOutput:
    kernel: str  # region name
    kind: str
    module: str
    values: np.ndarray  # [rows, width]: one row per prompt token (or the last one only)
    reference: tuple[str, str] | None  # (module path, "input" | "output")


def kernel_outputs(sim: Simulator, ids: np.ndarray) -> tuple[np.ndarray, list[KernelOutput]]:
    """Prefill `ids` and return the logits and every region's first result, in pipeline order."""
    record: dict = {}
    logits, _ = sim.prefill(ids, record=record)
    prog = sim.programs["prefill"]
    regions = {r.name: r for r in prog.regions}
    recv_of = {}  # channel -> its receive op (to see the window it takes)
    for r in prog.regions:
        for op in r.op.walk():
            if isinstance(op, t.RecvOp):
                recv_of[op.channel.data] = op
    n = len(np.asarray(ids).reshape(-1))
    out = []
    for r in prog.regions:
        sends = [op for op in r.op.walk() if isinstance(op, t.SendOp)]
        if not sends:
            continue
        first = t.buffer_of(sends[0].src).sym.data
        channels = [op.channel.data for op in sends if t.buffer_of(op.src).sym.data == first]
        msgs = record.get((r.name, channels[0]))
        if not msgs:
            continue
        values = np.concatenate([np.asarray(m, dtype=np.float32) for m in msgs], axis=0)
        values = values[:n] if values.shape[0] >= n else values
        out.append(KernelOutput(r.name, r.op.kernel.data, _module(r.op), values,
                                _reference(r.op, channels, prog.channels, regions, recv_of)))
    return logits, out


def _module(op: t.RegionOp) -> str:
    return op.module.data if op.module is not None else ""


def _reference(op: t.RegionOp, channels: list[str], chans: dict, regions: dict,
               recv_of: dict) -> tuple[str, str] | None:
    for c in channels:
        ch = chans.get(c)
        if ch is None or ch.dst.data == t.HOST or not c.endswith(".input0"):
            continue
        dst = regions.get(ch.dst.data)
        recv = recv_of.get(c)
        if (dst is not None and dst.op.kernel.data in MAIN_INPUT_KINDS and _module(dst.op)
                and recv is not None and recv.window is None):
            return (_module(dst.op), "input")
    made_by = op.result_module.data if op.result_module is not None else _module(op)
    return (made_by, "output") if made_by else None


def compare_layers(sim: Simulator, checkpoint, ids: np.ndarray, rel_tol: float) -> dict:
    """Per-kernel errors against torch and the first kernel over `rel_tol` (JSON-able)."""
    from wsc.golden import reference_activations

    logits, outs = kernel_outputs(sim, ids)
    wanted = sorted({o.reference for o in outs if o.reference is not None})
    refs = reference_activations(checkpoint, ids, wanted)
    last_only = sim.manifest.prefill_logits == "last"
    rows, first_bad = [], None
    for o in outs:
        row: dict = {"kernel": o.kernel, "kind": o.kind, "module": o.module}
        ref = refs.get(o.reference) if o.reference is not None else None
        if o.reference is not None:
            row["reference"] = f"{o.reference[1]} of {o.reference[0]}"
        if ref is not None and o.values.shape[0] == 1 and ref.shape[0] > 1 and last_only:
            ref = ref[-1:]  # a last-row kernel (the head) made the last position only
        if ref is None or ref.shape != o.values.shape:
            row["note"] = ("no torch activation at that module" if ref is None or o.reference is None
                           else f"torch's is {tuple(ref.shape)}, the kernel's {tuple(o.values.shape)}")
            rows.append(row)
            continue
        a = compare(o.values, ref)
        row.update(rel_l2_err=a.rel_l2_err, max_abs_err=a.max_abs_err, passed=a.rel_l2_err <= rel_tol)
        if not row["passed"] and first_bad is None:
            first_bad = o.kernel
        rows.append(row)
    return {"layers": rows, "first_bad_kernel": first_bad, "layer_tolerance": rel_tol,
            "layers_compared": sum("rel_l2_err" in r for r in rows)}
