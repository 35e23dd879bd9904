"""Press Ctrl-C inside every stage of `wsc compile`, round after round, in one process.

test_reliability.py runs this as a subprocess, so that a crash (the native solver's) shows as a
return code instead of taking pytest down:

    python interrupt_driver.py CHECKPOINT WORKDIR ROUNDS

Every compile goes through the CLI in-process, as a user runs it, and this process sends itself
SIGINT from inside one stage: in most stages at the N-th Python call of the stage (N a fraction
of the calls a warm-up compile made there: deterministic), in tracing and placement after a
fraction of the stage's warm-up duration (tracing defers a Ctrl-C to its end, placement stops
CP-SAT's native search at once). One JSON line per compile says what came of it. The
warm-up's traced model is reused by the rounds that interrupt a later stage, so that only the
trace rounds pay for tracing.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from rich.console import Console

import wsc.frontend.importer as importer
from wsc import cli
from wsc.driver import Pipeline

STAGES = {"load": "load", "trace": "trace+import", "plan": "plan", "place": "place",
          "lower": "lower", "emit": "emit"}
# stages interrupted by the clock instead of at a Python call: placement's time goes to CP-SAT's
# native search, where no Python call happens; tracing is slow to count calls in
TIMED = {"trace+import", "place"}
ARGS = ["--target", "mesh:32x32", "--seq-len", "8", "--plan", "min-pes", "--place-time", "0.5"]

_original_stage = Pipeline.stage
_original_import = importer.import_model


class Plan:
    """Which stage to interrupt, and when; what the warm-up measured."""

    def __init__(self) -> None:
        self.stage: str | None = None
        self.at: float = 0.0  # calls into the stage (Python stages) or seconds (native ones)
        self.calls: dict[str, int] = {}
        self.seconds: dict[str, float] = {}
        self.sent_at: float | None = None
        self.in_solver = False  # whether some thread was inside CP-SAT's Solve at the signal
        self.imported = None  # the warm-up's traced model, before any pass changed it

    def send(self) -> None:
        if self.sent_at is None:
            self.sent_at = time.perf_counter()
            self.in_solver = _solving()
            os.kill(os.getpid(), signal.SIGINT)


PLAN = Plan()


def _solving() -> bool:
    for frame in sys._current_frames().values():
        while frame is not None:
            if frame.f_code.co_name == "solve" and frame.f_code.co_filename.endswith("cp_model.py"):
                return True
            frame = frame.f_back
    return False


def stage(self, name, fn, *args, **kw):
    """`Pipeline.stage`, measuring it (warm-up) or interrupting it (rounds)."""
    measuring, target = PLAN.stage is None, PLAN.stage == name
    calls = [0]

    def count(frame, event, arg):
        calls[0] += 1
        if target and calls[0] >= PLAN.at:
            sys.settrace(None)
            PLAN.send()

    timer = threading.Timer(PLAN.at, PLAN.send) if target and name in TIMED else None
    if timer is not None:
        timer.start()
    elif measuring or target:
        sys.settrace(count)
    t0 = time.perf_counter()
    try:
        out = _original_stage(self, name, fn, *args, **kw)
        if target:
            PLAN.send()  # the stage ended before its moment: the Ctrl-C comes as it ends
        return out
    finally:
        sys.settrace(None)
        if timer is not None:
            timer.cancel()
        if measuring:
            PLAN.calls[name], PLAN.seconds[name] = calls[0], time.perf_counter() - t0


def import_model(loaded, seq_len):
    """The warm-up's traced model again, in the rounds that interrupt a later stage."""
    if PLAN.stage is None or PLAN.stage == "trace+import":
        m = _original_import(loaded, seq_len)
        if PLAN.stage is None:
            PLAN.imported = dataclasses.replace(m, module=m.module.clone())
        return m
    m = PLAN.imported
    return dataclasses.replace(m, module=m.module.clone(), weights=dict(m.weights))


def compile_once(checkpoint: Path, out: Path) -> tuple[int, str]:
    """`wsc compile` in this process: its exit code and what it printed."""
    buf = io.StringIO()
    cli.err = Console(file=buf, width=200)
    try:
        code = cli.app(["compile", str(checkpoint), "-o", str(out), *ARGS], standalone_mode=False)
    except SystemExit as e:
        code = e.code
    return int(code or 0), buf.getvalue()


def main(checkpoint: Path, workdir: Path, rounds: int) -> None:
    Pipeline.stage = stage
    importer.import_model = import_model
    t0 = time.perf_counter()
    for i in range(2):  # the first compile imports and caches; the second is the one measured
        code, text = compile_once(checkpoint, workdir / f"warm{i}.wsc")
        assert code == 0, text
    print(json.dumps({"warm_up_s": time.perf_counter() - t0,
                      "threads": sorted(t.name for t in threading.enumerate())}), flush=True)
    existing = workdir / "warm1.wsc"
    manifest = (existing / "manifest.json").read_text()
    for r in range(rounds):
        for short, name in STAGES.items():
            frac = (r + 0.5) / rounds * 0.9
            PLAN.stage, PLAN.sent_at = name, None
            PLAN.at = frac * (PLAN.seconds[name] if name in TIMED else PLAN.calls[name])
            # odd rounds compile over an existing bundle, which must survive the interrupt
            out = existing if r % 2 else workdir / f"{short}-{r}.wsc"
            before, t0 = set(workdir.iterdir()), time.perf_counter()
            code, text = compile_once(checkpoint, out)
            print(json.dumps({
                "stage": short, "round": r, "code": code, "said": text.strip().splitlines()[-1:],
                "wall_s": time.perf_counter() - t0, "lag_s": time.perf_counter() - PLAN.sent_at, "in_solver": PLAN.in_solver,
                "bundle": out.exists() and (out != existing or
                                            (out / "manifest.json").read_text() != manifest),
                "threads": sorted(t.name for t in threading.enumerate()),
                "dir_changes": sorted(p.name for p in set(workdir.iterdir()) ^ before),
            }), flush=True)
            PLAN.stage = None

if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
