"""`wsc compile`: the whole pipeline, top to bottom (DESIGN §2).

    checkpoint → frontend → wsc.graph → graph passes → partition + plan → wsc.kernel
               → placement → lower → wsc.tile → emit bundle

Each stage verifies the module it produces; `compile_to` stops after a named stage and
writes that stage's IR instead of a bundle.
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from xdsl.dialects.builtin import IntegerAttr, ModuleOp, StringAttr, i64

from wsc import __version__, interrupts
from wsc.bundle_format import CheckpointInfo, IOSpec, Manifest, ModelInfo, TargetSource
from wsc.errors import CapacityError, PlacementError, UsageError, WscWarning
from wsc.ir import print_module
from wsc.ir.attrs import DTYPE_BYTES, ints
from wsc.ir.kernel import SRAM_BUDGET_ATTR, KernelOp
from wsc.ir.tile import verify_persistent
from wsc.machine.cost import CostModel
from wsc.machine.target import Target, load_target, size_warning
from wsc.outputs import check_bundle_output, check_dir_output, check_file_output

STAGES = ("graph", "kernel", "placed", "tile", "bundle")
PLACE_ATTEMPTS = 3  # replan with smaller grids when placement cannot pack the kernels
DTYPES = ("f16", "bf16", "f32")
DTYPE_ALIASES = {"fp16": "f16", "f16": "f16", "bf16": "bf16", "fp32": "f32", "f32": "f32"}


def default_prefill_chunk(seq_len: int) -> int:
    """The largest divisor of the prompt length up to 128 tokens."""
    return max(d for d in range(1, min(seq_len, 128) + 1) if seq_len % d == 0)


@dataclass
class CompileOptions:
    checkpoint: Path | None
    output: Path
    target: str = "wse3"
    dtype: str = "f16"
    seq_len: int = 64
    max_seq: int | None = None  # KV cache positions; default: the model's context, capped
    compile_to: str = "bundle"
    attn_implementation: str = "sdpa"
    config: Path | None = None  # plan-only: a config.json instead of a checkpoint
    no_weights: bool = False
    place_time: float = 20.0
    plan: str = "latency"  # or "min-pes": the smallest grid that fits, per kernel
    # layers stacked on one rectangle: 1 disjoint (the default: folding does not yet pay for
    # the transfers between its larger rectangles on Llama-3-8B), 0 the deepest that fits
    fold: int = 1
    accumulate: str = "fp32"  # linear layers' accumulators: fp32, or fp16 (as WaferLLM does)
    prefill_chunk: int = 0  # prefill tokens per pipelined chunk; 0 = auto
    mesh_fraction: float = 0.7  # share of the mesh's PEs the planner may hand to kernels
    prefill_logits: str = "all"  # or "last": prefill computes only the last position's logits
    phase: str = "both"  # prefill | decode | both
    print_ir_after_all: bool = False
    dump_ir_to: Path | None = None
    report: bool = True

    def validate(self) -> None:
        if self.dtype not in DTYPE_ALIASES:
            raise UsageError(f"unknown --dtype {self.dtype!r}", hint="use fp16, bf16 or fp32")
        self.dtype = DTYPE_ALIASES[self.dtype]
        if self.compile_to not in STAGES:
            raise UsageError(f"unknown --compile-to {self.compile_to!r}",
                             hint=f"use one of {', '.join(STAGES[:-1])}")
        if self.seq_len < 1:
            raise UsageError(f"--seq-len must be positive, got {self.seq_len}")
        if self.max_seq is not None and self.max_seq < self.seq_len:
            raise UsageError(f"--max-seq {self.max_seq} is shorter than --seq-len {self.seq_len}")
        if self.checkpoint is None and self.config is None:
            raise UsageError("give a checkpoint directory, or --config CONFIG.json with --no-weights")
        if self.config is not None and not self.no_weights:
            raise UsageError("--config compiles without weights: add --no-weights")
        if self.place_time < 0:
            raise UsageError("--place-time must be >= 0")
        if self.prefill_logits not in ("all", "last"):
            raise UsageError(f"unknown --prefill-logits {self.prefill_logits!r}", hint="use all or last")
        if not 0 < self.mesh_fraction <= 1:
            raise UsageError(f"--mesh-fraction must be in (0, 1], got {self.mesh_fraction}")
        if self.phase not in ("both", "prefill", "decode"):
            raise UsageError(f"unknown --phase {self.phase!r}", hint="use prefill, decode or both")
        if self.fold < 0:
            raise UsageError(f"--fold must be 0 (the planner chooses) or a positive number of "
                             f"layers per stack, got {self.fold}")
        acc = DTYPE_ALIASES.get(self.accumulate)
        if acc not in ("f32", "f16"):
            raise UsageError(f"unknown --accumulate {self.accumulate!r}", hint="use fp32 or fp16")
        self.accumulate = acc
        if self.plan not in ("latency", "min-pes"):
            raise UsageError(f"unknown --plan {self.plan!r}", hint="use latency or min-pes")
        if self.prefill_chunk < 0 or (self.prefill_chunk and self.seq_len % self.prefill_chunk):
            raise UsageError(f"--prefill-chunk {self.prefill_chunk} must divide --seq-len {self.seq_len}")
        if not self.prefill_chunk:
            self.prefill_chunk = default_prefill_chunk(self.seq_len)
        if self.compile_to == "bundle":
            check_bundle_output(self.output)
        else:
            check_file_output(self.output, "-o")
        if self.dump_ir_to is not None:
            check_dir_output(self.dump_ir_to, "--dump-ir-to")


@dataclass
class StageLog:
    name: str
    seconds: float
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class CompileResult:
    output: Path
    stage: str
    stages: list[StageLog]
    kernels: int = 0
    pes: int = 0


Progress = Callable[[str], None]


class Pipeline:
    """One compile. The `run` method is the pipeline; the rest are its stages."""

    def __init__(self, opts: CompileOptions, progress: Progress | None = None):
        opts.validate()
        self.opts = opts
        self.target: Target = load_target(opts.target)
        if (warning := size_warning(self.target)) is not None:
            warnings.warn(warning, WscWarning, stacklevel=2)
        self.progress = progress or (lambda msg: None)
        self.stages: list[StageLog] = []
        self._dump_index = 0

    @property
    def phases(self) -> tuple[str, ...]:
        return ("prefill", "decode") if self.opts.phase == "both" else (self.opts.phase,)

    # --- bookkeeping ----------------------------------------------------------------------

    def stage(self, name: str, fn, *args, **kw):
        self.progress(name)
        t0 = time.perf_counter()
        out = fn(*args, **kw)
        interrupts.check()  # a Ctrl-C that the stage's code lost still ends the compile
        self.stages.append(StageLog(name, time.perf_counter() - t0))
        return out

    def dump(self, after: str, module: ModuleOp) -> None:
        if not (self.opts.print_ir_after_all or self.opts.dump_ir_to):
            return
        text = print_module(module)
        if self.opts.print_ir_after_all:
            print(f"// -----// IR after {after} //----- //\n{text}")
        if self.opts.dump_ir_to:
            d = Path(self.opts.dump_ir_to)
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{self._dump_index:02d}-{after}.mlir").write_text(text)
            self._dump_index += 1

    def stop(self, stage: str, module: ModuleOp) -> CompileResult | None:
        if self.opts.compile_to != stage:
            return None
        out = Path(self.opts.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.partial")
        try:
            tmp.write_text(print_module(module))
            tmp.replace(out)
        except BaseException:  # an interrupt or a full disk: leave nothing half-written
            tmp.unlink(missing_ok=True)
            raise
        return CompileResult(out, stage, self.stages)

    # --- the pipeline ---------------------------------------------------------------------

    def run(self) -> CompileResult:
        from wsc.frontend import load_checkpoint, load_config_only
        from wsc.passes.graph_pipeline import run_graph_passes
        from wsc.passes.kernels import LowerCtx
        from wsc.passes.lower_tile import lower_to_tile
        from wsc.passes.partition import partition
        from wsc.passes.plan import plan, set_grid
        from wsc.runtime_sim.scheduler import estimate_region

        o, t = self.opts, self.target
        if o.config is not None:
            loaded = self.stage("load", load_config_only, o.config,
                                attn_implementation=o.attn_implementation)
        else:
            loaded = self.stage("load", load_checkpoint, o.checkpoint,
                                attn_implementation=o.attn_implementation, no_weights=o.no_weights)
        check_weights_fit(loaded, t, o.dtype)
        imported = self.stage("trace+import", self.trace, loaded)
        graph = imported.module
        graph.verify()
        self.dump("import", graph)

        def after_pass(p, module):
            self.dump(p.name, module)

        self.stage("graph passes", run_graph_passes, graph, callback=after_pass)
        graph.verify()
        if r := self.stop("graph", graph):
            return r

        max_seq = o.max_seq or min(_context_length(loaded.config), max(o.seq_len, 2048))
        max_seq = max(max_seq, o.seq_len)
        ctx = LowerCtx(o.dtype, o.seq_len, max_seq, imported.weights, o.prefill_chunk,
                       cost=CostModel(t), accumulate=o.accumulate)
        kmodule = self.stage("partition", partition, graph)
        kmodule.attributes[SRAM_BUDGET_ATTR] = IntegerAttr(t.buffer_budget, i64)
        if o.prefill_logits == "last":
            mark_last_row(kmodule)
        self.dump("partition", kmodule)
        fraction = o.mesh_fraction
        for attempt in range(PLACE_ATTEMPTS):
            planned = self.stage("plan", plan, kmodule, ctx, t, estimate_region, strategy=o.plan,
                                 capacity_fraction=fraction, fold=o.fold or None)
            kmodule.verify()
            self.dump("plan", kmodule)
            if r := self.stop("kernel", kmodule):
                return r
            try:
                placement = self.stage("place", place_kernels, kmodule, planned, ctx, t,
                                       o.place_time)
                break
            except PlacementError:
                if attempt == PLACE_ATTEMPTS - 1:
                    raise
                fraction *= 0.85  # smaller grids leave placement more room to pack
                self.progress(f"placement found no room; replanning for {fraction:.0%} of the mesh")
        choices = {}
        for k in _kernels(kmodule):  # placement may have picked an alternative grid
            n = k.kernel_name
            choices[n] = planned[n].pick(placement.shapes[n])
            set_grid(k, choices[n])
            k.properties["origin"] = ints(placement.origins[n])
        kmodule.verify()
        self.dump("place", kmodule)
        if r := self.stop("placed", kmodule):
            return r

        tmodule, shards = self.stage(
            "lower", lower_to_tile, kmodule, ctx, budget=t.buffer_budget,
            origins=placement.origins, routes=placement.routes, phases=self.phases,
        )
        tmodule.attributes["wsc.target"] = StringAttr(t.name)
        tmodule.attributes["wsc.dtype"] = StringAttr(o.dtype)
        tmodule.verify()
        verify_persistent(tmodule)
        self.dump("lower", tmodule)
        if r := self.stop("tile", tmodule):
            return r

        rects = {planned[n].stack or n: c.pes for n, c in choices.items()}  # a stack counts once
        pes = sum(rects.values())
        manifest = self.manifest(loaded, max_seq, pes)
        log = {"stages": [{"name": s.name, **s.stats} for s in self.stages],
               "kernels": {n: {**c.summary(), **({"stack": planned[n].stack}
                                                 if planned[n].stack else {})}
                           for n, c in choices.items()},
               "placement": {k: v for k, v in placement.json.get("stats", {}).items()}}
        self.stage("emit", self.emit, tmodule, None if o.no_weights else shards, placement,
                   manifest, log)
        return CompileResult(Path(o.output), "bundle", self.stages, len(choices), pes)

    def trace(self, loaded):
        """torch.export and import, with Ctrl-C deferred until torch is done: an interrupt
        inside torch.export could abort the process (`interrupts.deferred`)."""
        from wsc.frontend.importer import import_model

        with interrupts.deferred():
            return import_model(loaded, self.opts.seq_len)

    def emit(self, tmodule: ModuleOp, shards, placement: Placed, manifest: Manifest, log: dict) -> None:
        """The report (rendered here so that it counts as emitting), then the bundle."""
        from wsc.codegen.bundle import write_bundle

        report = None
        if self.opts.report:
            from wsc.report import render_report

            report = render_report(manifest.to_json(), placement.json, tmodule)
        write_bundle(self.opts.output, program=tmodule, shards=shards, placement=placement.json,
                     manifest=manifest, compile_log=log, report=report)

    def manifest(self, loaded, max_seq: int, pes: int) -> Manifest:
        o, cfg = self.opts, loaded.config
        vocab = int(cfg.vocab_size)
        from wsc.passes.lower_tile import IDS_CHANNEL, LOGITS_CHANNEL

        def io(tokens: int, logits_rows: int) -> tuple[dict, dict]:
            return ({"ids": IOSpec(IDS_CHANNEL, (tokens, 1), "i32")},
                    {"logits": IOSpec(LOGITS_CHANNEL, (logits_rows, vocab), "f32")})

        pi, po = io(o.prefill_chunk, 1 if o.prefill_logits == "last" else o.prefill_chunk)
        di, do = io(1, 1)
        source = str(Path(o.checkpoint).resolve()) if o.checkpoint else str(Path(o.config).resolve())
        return Manifest(
            wsc_version=__version__,
            target=self.target,
            target_source=TargetSource.of(o.target),
            dtype=o.dtype,
            phases=self.phases,
            seq_len=o.seq_len,
            prefill_chunk=o.prefill_chunk,
            prefill_logits=o.prefill_logits,
            max_seq=max_seq,
            weights=not o.no_weights,
            model=ModelInfo(
                arch=loaded.arch, vocab_size=vocab,
                layers=int(getattr(cfg, "num_hidden_layers", 0) or getattr(cfg, "n_layer", 0)),
                hidden=int(getattr(cfg, "hidden_size", 0) or getattr(cfg, "n_embd", 0))),
            inputs={"prefill": pi, "decode": di},
            outputs={"prefill": po, "decode": do},
            checkpoint=CheckpointInfo(source, loaded.digest, o.attn_implementation),
            pes_used=pes,
            options={"target": o.target, "dtype": o.dtype, "seq_len": o.seq_len,
                     "max_seq": max_seq, "attn_implementation": o.attn_implementation,
                     "place_time": o.place_time, "plan": o.plan, "fold": o.fold,
                     "accumulate": o.accumulate,
                     "prefill_chunk": o.prefill_chunk, "prefill_logits": o.prefill_logits,
                     "phase": o.phase, "mesh_fraction": o.mesh_fraction},
        )


def mark_last_row(kmodule: ModuleOp) -> None:
    """Make the kernel that produces the logits compute only the last position in prefill."""
    from xdsl.dialects.builtin import UnitAttr

    from wsc.passes.lower_tile import KernelGraph

    kg = KernelGraph.of(kmodule)
    k = kg.by_name()[kg.result[0]]
    if k.KIND not in ("linear", "norm", "eltwise"):
        raise UsageError(f"--prefill-logits last: the logits come from a {k.KIND} kernel",
                         hint="use --prefill-logits all")
    k.properties["last_row"] = UnitAttr()


def check_weights_fit(loaded, target: Target, dtype: str) -> None:
    """The weights alone must fit the mesh's SRAM: say so in bytes right after reading the
    config, rather than after minutes of tracing and planning."""
    params = sum(p.numel() for p in loaded.model.parameters())  # tied weights count once
    need, have = params * DTYPE_BYTES[dtype], target.pe_count * target.buffer_budget
    if need <= have:
        return
    hint = None
    if DTYPE_BYTES[dtype] > 2 and params * 2 <= have:
        hint = f"16-bit weights (--dtype fp16 or bf16) take {_bytes(params * 2)}, which fits"
    raise CapacityError(
        f"the model's {_count(params)} parameters take {_bytes(need)} as {dtype} weights alone; "
        f"{target.name} has {_bytes(have)} of SRAM for them ({target.usable_width}x"
        f"{target.usable_height} PEs x {target.buffer_budget} bytes), {need / have:.1f}x too little",
        hint=hint)


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n:,}"


def _bytes(n: int) -> str:
    return f"{n / 1e9:.1f} GB ({n:,} bytes)" if n >= 1e8 else f"{n:,} bytes"


def _kernels(module: ModuleOp) -> list[KernelOp]:
    return [op for op in module.walk() if isinstance(op, KernelOp)]


def _context_length(cfg) -> int:
    for key in ("max_position_embeddings", "n_positions", "n_ctx"):
        v = getattr(cfg, key, None)
        if isinstance(v, int) and v > 0:
            return v
    return 2048


# --- placement adapter ------------------------------------------------------------------

_BLOCK = re.compile(r"\.(?:h|layers|blocks)\.(\d+)\.")


@dataclass
class Placed:
    origins: dict[str, tuple[int, int]]
    shapes: dict[str, tuple[int, int]]
    routes: dict
    json: dict


def place_kernels(kmodule: ModuleOp, planned: dict, ctx, target: Target, time_limit: float) -> Placed:
    from wsc.passes.lower_tile import HOST, KernelGraph, Route, edge_bytes
    from wsc.placement import EdgeSpec, KernelSpec, place

    kg = KernelGraph.of(kmodule)
    # one rectangle per stack (plan.py): it is placed as its first kernel, a block of its own
    rect = {k.kernel_name: planned[k.kernel_name].stack or k.kernel_name for k in kg.kernels}
    specs, members = [], {}
    for k in kg.kernels:
        members.setdefault(rect[k.kernel_name], []).append(k.kernel_name)
        if rect[k.kernel_name] != k.kernel_name:
            continue
        module = k.source[1]
        m = _BLOCK.search(module + ".")
        block = int(m[1]) if m else None
        role = module[m.end():] if m else ""
        role = f"{role}:{k.KIND}" if role else ""
        specs.append(KernelSpec(k.kernel_name, k.KIND, planned[k.kernel_name].shapes, block, role))
    merged: dict[tuple[str, str, int], int] = {}
    for e in kg.edges:
        if e.src == HOST or rect[e.src] == rect[e.dst]:
            continue  # within a stack, a result stays on its PEs
        key = (rect[e.src], rect[e.dst], e.output)
        merged[key] = merged.get(key, 0) + edge_bytes(e, kg, ctx.seq_len, ctx.dtype)
    edges = [EdgeSpec(s, d, b, tensor=str(out)) for (s, d, out), b in merged.items()]
    result = place(specs, edges, width=target.usable_width, height=target.usable_height,
                   time_limit=time_limit, colors=target.colors)
    js = result.to_json()
    stacks = {s: ms for s, ms in members.items() if len(ms) > 1}
    if stacks:
        js["stacks"] = stacks
    origins = {n: tuple(js["kernels"][rect[n]]["origin"]) for n in rect}
    shapes = {n: tuple(js["kernels"][rect[n]]["shape"]) for n in rect}
    by_rects = {}
    for e in js["edges"]:
        s, d = e["src"], e["dst"]
        lanes = min(shapes[s][0], shapes[d][0])
        load = e.get("max_link_load_bytes") or e["bytes"]
        by_rects[(s, d)] = Route(e["hops"], lanes, load / max(1, e["bytes"]), e.get("color"),
                                 e.get("order", ""))
    routes = {}
    for e in kg.edges:
        if e.src != HOST:
            a, b = rect[e.src], rect[e.dst]
            # within a stack: no hops, the receiver's rows as lanes
            routes[(e.src, e.dst)] = by_rects.get((a, b), Route(0, shapes[e.dst][0]))
    return Placed(origins, shapes, routes, js)


__all__ = ["CompileOptions", "CompileResult", "Pipeline", "asdict"]
