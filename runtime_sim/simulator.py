"""The simulated wafer: load a bundle from disk, then run its programs.

Weights are written into the PEs' SRAM once, at load; the prefill program then leaves the KV
cache in SRAM for the decode program, exactly as the persistent buffers say. Greedy
generation takes the argmax of each step's last logits row on the host.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file
from xdsl.dialects.builtin import ModuleOp
from xdsl.utils.exceptions import VerifyException

from wsc.errors import BundleError, SimulationError
from wsc.ir import parse_module
from wsc.ir.tile import LoopOp, RecvOp, programs, verify_on_mesh, verify_persistent
from wsc.bundle_format import PLACEMENT, PROGRAM, WEIGHTS, Bundle, Manifest, check_shard, open_bundle
from wsc.machine.colors import color_violations
from wsc.runtime_sim import cannon
from wsc.runtime_sim.memory import RegionMemory
from wsc.runtime_sim.scheduler import LoadedProgram, ProgramRun, RunResult
from wsc.machine.cost import CostModel


@dataclass
class Generation:
    tokens: list[int]
    prefill_logits: np.ndarray
    prefill: RunResult
    ttft_s: float
    decode_s: list[float] = field(default_factory=list)
    # the logits each token was chosen from: the prompt's last row, then every decode step's
    step_logits: list[np.ndarray] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return len(self.decode_s) / sum(self.decode_s) if self.decode_s else 0.0


class Simulator:
    """The machine state of one bundle: its programs, its regions' SRAM, its cost model."""

    def __init__(self, module: ModuleOp, manifest: Manifest, placement: dict, *,
                 weights: Path | Mapping[str, np.ndarray] | None = None, functional: bool = True,
                 check_finite: bool = True, origin: str = "<module>"):
        self.manifest = manifest
        self.origin = origin
        self.target = manifest.target
        self.cost = CostModel(self.target)
        self.functional = functional
        self.check_finite = check_finite
        try:
            verify_persistent(module)
            verify_on_mesh(module, self.target.usable_width, self.target.usable_height)
        except VerifyException as e:
            raise BundleError(f"{origin}: {e}") from None
        self.programs = {n: LoadedProgram.load(p) for n, p in programs(module).items()}
        self.placement = placement
        self._check_colors()
        self.memory: dict[str, RegionMemory] = {}
        self._check_sram()
        if functional:
            if weights is None or not manifest.weights:
                raise SimulationError(
                    f"{origin} was compiled without weights (--no-weights): it can only be "
                    "estimated", hint="use `wsc simulate --estimate-only`")
            self._allocate()
            self._load_weights(weights)
        self.last: RunResult | None = None
        self._varlen: bool | None = None

    @classmethod
    def open(cls, bundle_path, *, functional: bool = True, check_finite: bool = True) -> Simulator:
        """Load a bundle from disk, refusing it if any file does not match its manifest."""
        bundle: Bundle = open_bundle(bundle_path)
        module = parse_module(bundle.program_text(), str(bundle.file(PROGRAM)))
        return cls(module, bundle.manifest, bundle.read_json(PLACEMENT),
                   weights=bundle.file(WEIGHTS), functional=functional,
                   check_finite=check_finite, origin=str(bundle.path))

    # --- loading --------------------------------------------------------------------------

    def _check_colors(self) -> None:
        """Re-check every router's colors from the routes themselves."""
        _, problems = color_violations(self.placement, self.target.colors)
        if problems:
            raise SimulationError(f"{self.origin}: {problems[0]}")

    def _regions(self) -> dict[str, tuple[tuple[int, int], list]]:
        """Every region name: its grid and its programs' region ops (they share its SRAM)."""
        out: dict[str, tuple[tuple[int, int], list]] = {}
        for prog in self.programs.values():
            for r in prog.regions:
                out.setdefault(r.name, (r.grid, []))[1].append(r.op)
        return out

    def _check_sram(self) -> None:
        """Every byte a PE holds is a declared buffer: their extent must fit the budget, also
        when only estimating."""
        for name, (_, ops) in self._regions().items():
            RegionMemory.check(name, RegionMemory.high_water(ops), self.target.buffer_budget)

    def _allocate(self) -> None:
        for name, (grid, ops) in self._regions().items():
            mem = RegionMemory(name, grid, self.target.buffer_budget)
            mem.reserve(RegionMemory.high_water(ops))
            self.memory[name] = mem

    def _load_weights(self, source: Path | Mapping[str, np.ndarray]) -> None:
        if isinstance(source, Mapping):
            weights = source
        else:
            try:
                weights = load_file(str(source))
            except (SafetensorError, OSError, ValueError) as e:
                raise BundleError(f"{source} is corrupt: {e}") from None
        loaded: set[tuple[str, str]] = set()
        for prog in self.programs.values():
            for r in prog.regions:
                for b in r.buffers:
                    if b.weight is None or (r.name, b.sym.data) in loaded:
                        continue
                    key = b.weight.data
                    if key not in weights:
                        raise BundleError(f"weights file has no tensor {key} (region {r.name})")
                    arr = weights[key]
                    check_shard(key, arr, (*r.grid, *b.dims), b.dtype_str)
                    buf = self.memory[r.name].bind(b)
                    buf.raw[...] = np.ascontiguousarray(arr).view(np.uint8).reshape(buf.raw.shape)
                    loaded.add((r.name, b.sym.data))
        cannon.warm(self.programs, self.memory)  # weights converted once, here, not per run

    # --- running --------------------------------------------------------------------------

    def io(self, phase: str):
        return self.manifest.io(phase)

    def run(self, phase: str, ids: np.ndarray | None, pos0: int, *, trace: bool = False,
            prompt_len: int | None = None, record: dict | None = None) -> RunResult:
        """Run one program. A prefill takes 1..seq_len prompt tokens (`prompt_len` when only
        estimating; default: all of them): see `prompt_chunks`."""
        if phase not in self.programs:
            raise SimulationError(
                f"bundle has no {phase} program (it has {', '.join(sorted(self.programs))})"
            )
        ins, _ = self.io(phase)
        spec = ins["ids"]
        step = spec.shape[0]
        inputs: dict = {spec.channel: None}
        chunks = last_rows = None
        if phase == "prefill":
            n = (len(np.asarray(ids).reshape(-1)) if ids is not None and self.functional
                 else self.manifest.seq_len if prompt_len is None else prompt_len)
            chunks, last_rows = self.prompt_chunks(n)
        if self.functional:  # the host sends the prompt one chunk at a time
            arr = np.asarray(ids, dtype=np.int32).reshape(-1, 1)
            if chunks is not None and arr.shape[0] < chunks * step:  # pad the final chunk
                arr = np.concatenate([arr, np.zeros((chunks * step - arr.shape[0], 1), np.int32)])
            inputs[spec.channel] = [arr[i:i + step] for i in range(0, len(arr), step)]
        run = ProgramRun(self.programs[phase], self.memory, self.cost, pos0=pos0, inputs=inputs,
                         functional=self.functional, trace=trace,
                         check_finite=self.check_finite, chunks=chunks, last_rows=last_rows)
        run.record = record
        self.last = run.run()
        return self.last

    def prompt_chunks(self, n: int) -> tuple[int, int]:
        """How a prompt of `n` tokens (1..seq_len) runs: as the first ceil(n / chunk) of the
        compiled chunks, the last of them holding `n - (chunks - 1) * chunk` tokens and
        padding behind them. Padding sits after every prompt token, so causal masking keeps
        it out of their results; the KV cache entries it leaves are overwritten by decode
        before any query can see them (a decode step at position p attends to 0..p only).
        Returns (chunks, tokens in the last chunk)."""
        seq, step = self.manifest.seq_len, self.manifest.inputs["prefill"]["ids"].shape[0]
        if not 1 <= n <= seq:
            raise SimulationError(
                f"this bundle's prefill takes 1 to {seq} prompt tokens, got {n}",
                hint=f"pass at most {seq} token ids, or recompile with --seq-len {n}")
        chunks = -(-n // step)
        if n < seq and not self._variable_length():
            raise SimulationError(
                f"this bundle's prefill takes exactly {seq} tokens (it was compiled by a wsc "
                f"without variable prompt lengths), got {n}", hint="recompile the bundle")
        return chunks, n - (chunks - 1) * step

    def _variable_length(self) -> bool:
        """Whether the prefill program marks what a shorter prompt changes: its loops over
        the chunks, and the receives that take the last valid row (a last-logits head)."""
        if self._varlen is None:
            m = self.manifest
            ops = [op for r in self.programs["prefill"].regions for op in r.op.walk()]
            loops = m.seq_len // m.inputs["prefill"]["ids"].shape[0] == 1 or any(
                isinstance(op, LoopOp) and op.chunks is not None for op in ops)
            last = m.prefill_logits != "last" or any(
                isinstance(op, RecvOp) and op.last_valid is not None for op in ops)
            self._varlen = loops and last
        return self._varlen

    def logits(self, phase: str, result: RunResult) -> np.ndarray:
        _, outs = self.io(phase)
        return np.asarray(result.outputs[outs["logits"].channel], dtype=np.float32)

    def prefill(self, ids: np.ndarray, *, trace: bool = False,
                record: dict | None = None) -> tuple[np.ndarray, RunResult]:
        """Logits of a prompt of 1..seq_len tokens: one row per token, or only the last one's
        (a bundle compiled with --prefill-logits last). `record` collects every message sent
        (per region and channel: --compare-layers)."""
        ids = np.asarray(ids).reshape(-1)
        self.prompt_chunks(ids.size)
        vocab = self.manifest.model.vocab_size
        if ids.min() < 0 or ids.max() >= vocab:
            raise SimulationError(f"token ids must be in [0, {vocab})")
        r = self.run("prefill", ids, 0, trace=trace, record=record)
        logits = self.logits("prefill", r)
        return (logits[-1:] if self.manifest.prefill_logits == "last" else logits[:ids.size]), r

    def decode(self, token: int, pos: int, *, trace: bool = False) -> tuple[np.ndarray, RunResult]:
        r = self.run("decode", np.array([token]), pos, trace=trace)
        return self.logits("decode", r), r

    def generate(self, ids: np.ndarray, steps: int, *, trace: bool = False) -> Generation:
        """Prefill, then `steps` greedy decode steps; times come from the cycle model."""
        max_seq = self.manifest.max_seq
        ids = np.asarray(ids).reshape(-1)
        if ids.size + steps - 1 > max_seq:  # the last token generated is never fed back
            raise SimulationError(
                f"{ids.size} prompt tokens + {steps} generated exceed the KV cache of "
                f"{max_seq} positions", hint="recompile with a larger --max-seq",
            )
        logits, r = self.prefill(ids, trace=trace)
        gen = Generation([], logits, r, self.cost.seconds(r.cycles), step_logits=[logits[-1]])
        for i in range(steps):
            gen.tokens.append(int(np.argmax(gen.step_logits[-1])))
            if i == steps - 1:
                break
            step, r = self.decode(gen.tokens[-1], ids.size + i)
            gen.decode_s.append(self.cost.seconds(r.cycles))
            gen.step_logits.append(step[-1])
        return gen

    def estimate(self, phase: str, pos0: int = 0, prompt_len: int | None = None) -> RunResult:
        """Modeled timing only: the programs run without moving data."""
        return self.run(phase, None, pos0, prompt_len=prompt_len)
