"""Nothing crashes, nothing is silently wrong (issue 11): Ctrl-C at any moment, bundles whose
hashes were recomputed over an edit, target files, output paths, the golden reference."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from models import make_checkpoint

HERE = Path(__file__).parent


# --- Ctrl-C -------------------------------------------------------------------------------


def test_ctrl_c_in_every_stage_leaves_nothing_behind(tmp_path):
    """Five interrupts in each stage: each says `interrupted` and exits 130, leaves no bundle,
    no temporary directory, an existing bundle as it was, and no solver running."""
    ckpt = make_checkpoint("gpt2", tmp_path / "gpt2", layers=1)
    work = tmp_path / "work"
    work.mkdir()
    r = subprocess.run([sys.executable, HERE / "interrupt_driver.py", ckpt, work, "5"],
                       capture_output=True, text=True, timeout=400, cwd=HERE)
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert r.returncode == 0, f"the process died (rc {r.returncode}) after {lines[-1:]}: {r.stderr[-2000:]}"
    runs = lines[1:]
    assert len(runs) == 30
    for run in runs:
        assert run["code"] == 130 and run["said"] == ["interrupted"], run
        assert not run["bundle"] and not run["dir_changes"], run
        assert not [t for t in run["threads"] if t.startswith(("cp-sat", "ThreadPool"))], run
    # the placement rounds really stopped CP-SAT in its native search
    assert sum(run["in_solver"] for run in runs if run["stage"] == "place") >= 2


STOP_SCRIPT = """
import os, signal, threading, time
# as `wsc` does on start (wsc.interrupts.install): Ctrl-C raises, whatever this process
# inherited from the one that started it (a test runner's worker may ignore or block SIGINT)
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
from wsc.placement import place
from wsc.placement.synthetic import llama_graph
kernels, edges = llama_graph(1)  # on WSE-3 with a 30 s limit: about 10 s of solving
for delay in (0.5, 3.0):  # in the bound's solves, in the main solves
    threading.Timer(delay, os.kill, (os.getpid(), signal.SIGINT)).start()
    t0 = time.perf_counter()
    try:
        place(kernels, edges, width=755, height=1170, time_limit=30)
        print("placed", flush=True)
    except KeyboardInterrupt:
        print("stopped", round(time.perf_counter() - t0 - delay, 3), threading.active_count(), flush=True)
"""


def test_ctrl_c_stops_the_placement_search_at_once():
    """CP-SAT neither takes SIGINT over (the search ended early and placement went on) nor
    leaves the default handler behind (the second Ctrl-C killed the process silently)."""
    r = subprocess.run([sys.executable, "-c", STOP_SCRIPT], capture_output=True, text=True,
                       timeout=120)
    lines = [line.split() for line in r.stdout.splitlines()]
    assert r.returncode == 0 and [w[0] for w in lines] == ["stopped", "stopped"], (r.returncode, r.stdout, r.stderr[-1000:])
    for _, lag, threads in lines:
        assert float(lag) < 1.0 and threads == "1"  # stopped within a second, no solver left


@pytest.fixture(scope="module")
def parts():
    """What a bundle is written from: a GPT-2 block lowered in memory."""
    from backend import lower_graph
    from graphs import gpt2_block_graph

    graph, weights = gpt2_block_graph()
    tm, shards, manifest = lower_graph(graph, weights, target="mesh:16x16")
    return dict(program=tm, shards=shards, placement={}, manifest=manifest, compile_log={})


@pytest.mark.parametrize("existing", [False, True])
def test_ctrl_c_while_a_bundle_is_renamed_into_place_leaves_what_was_there(parts, tmp_path,
                                                                           monkeypatch, existing):
    import os
    import signal

    from wsc.codegen import bundle as cg

    out = tmp_path / "m.wsc"
    if existing:
        cg.write_bundle(out, **parts)
    before = {p.name: p.read_bytes() for p in out.iterdir()} if existing else None

    class CtrlCOnRename:  # the os module, with a Ctrl-C right after the first rename
        def __getattr__(self, name):
            return getattr(os, name)

        def rename(self, a, b):
            os.rename(a, b)
            if not hasattr(self, "pressed"):
                self.pressed = True
                os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(cg, "os", CtrlCOnRename())
    with pytest.raises(KeyboardInterrupt):
        cg.write_bundle(out, **parts)
    assert [p.name for p in tmp_path.iterdir()] == (["m.wsc"] if existing else [])
    if existing:
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before


# --- programs whose hashes were recomputed after an edit ----------------------------------


def _edit_regions(parts, edit):
    """A copy of the program with `edit(regions by name)` applied to every program's regions."""
    from wsc.ir import parse_module, print_module
    from wsc.ir.tile import programs

    module = parse_module(print_module(parts["program"]))
    by_name: dict = {}
    for prog in programs(module).values():
        for region in prog.regions_():
            by_name.setdefault(region.sym_name.data, []).append(region)
    edit(by_name)
    return module


def _negative_offset(regions):
    from xdsl.dialects.builtin import IntegerAttr, i64

    for region in next(iter(regions.values())):
        b = region.buffers()[0]
        b.properties["offset"] = IntegerAttr(-b.nbytes // 8 * 8, i64)  # just below byte 0


def _outside(regions):
    from wsc.ir.attrs import ints

    for region in regions["lm_head"]:
        region.properties["origin"] = ints((16 - region.grid[1] + 1, 0))


def _stacked(regions):
    first, second = list(regions)[:2]
    for region in regions[second]:
        region.properties["origin"] = regions[first][0].origin


@pytest.mark.parametrize("edit,needle", [
    (_negative_offset, r"region \S+: buffer \S+ has a negative offset \(-\d+\)"),
    (_outside, r"region lm_head \(2x2 PEs at x=15, y=0\) lies outside the 16x16 mesh"),
    (_stacked, r"regions \S+ and \S+ are placed on the same PEs"),
])
def test_an_edited_program_with_recomputed_hashes_is_refused(parts, tmp_path, edit, needle):
    """write_bundle hashes whatever it is given: exactly what covering one's tracks produces."""
    from wsc.codegen.bundle import write_bundle
    from wsc.errors import BundleError
    from wsc.runtime_sim.simulator import Simulator

    out = write_bundle(tmp_path / "e.wsc", **{**parts, "program": _edit_regions(parts, edit)})
    with pytest.raises(BundleError, match=needle):
        Simulator.open(out)


# --- the golden reference ----------------------------------------------------------------


def test_the_golden_generation_is_plain_greedy_through_eos(tmp_path):
    """A trained model emits EOS; `generate(min_new_tokens=...)` masked it and picked another
    token, so a correct wafer run was reported FAIL."""
    import numpy as np
    import torch

    from models import make_model
    from wsc.golden import reference_generate

    prompt = np.random.default_rng(0).integers(0, 256, size=8)
    model, seq, want = make_model("gpt2", layers=1), torch.as_tensor(prompt)[None], []
    with torch.no_grad():
        for _ in range(4):
            want.append(int(model(input_ids=seq).logits[0, -1].argmax()))
            seq = torch.cat([seq, torch.tensor([[want[-1]]])], dim=1)
    # the same weights, with the second greedy token as their EOS
    ckpt = make_checkpoint("gpt2", tmp_path / "eos", layers=1, eos_token_id=want[1])
    assert reference_generate(ckpt, prompt, 4) == want


# --- target files ----------------------------------------------------------------------------


WSE3 = (Path(__file__).parents[1] / "wsc" / "targets" / "wse3.toml").read_text()


@pytest.mark.parametrize("old,new,needle", [
    ("width = 762 ", 'width = "762" ', "width must be an integer, got '762'"),
    ("width = 762 ", "width = 762.0 ", "width must be an integer, got 762.0"),
    ("colors = 24 ", "colors = true ", "colors must be an integer, got True"),
    ("clock_hz = 1.1e9 ", 'clock_hz = "fast" ', "clock_hz must be a number, got 'fast'"),
    ("hop_latency_cycles = 1 ", "hop_latency_cycles = nan ", "hop_latency_cycles must be a number, got nan"),
    ("hop_latency_cycles = 1 ", "hop_latency_cycles = 0 ", "hop_latency_cycles must be positive, got 0"),
    ("ramp_latency_cycles = 2 ", "ramp_latency_cycles = -2 ", "ramp_latency_cycles must be positive"),
    ("link_wavelets_per_cycle = 1 ", "link_wavelets_per_cycle = 0 ", "link_wavelets_per_cycle must be positive"),
    ("mem_read_bytes_per_cycle = 16 ", "mem_read_bytes_per_cycle = 0 ", "mem_read_bytes_per_cycle must be positive"),
    ("instruction_overhead_cycles = 3 ", "instruction_overhead_cycles = 0 ", "instruction_overhead_cycles must be positive"),
    ("usable_width = 755 ", "usable_width = 800 ", "usable_width must be at most width"),
    ("colors = 24 ", "colours = 24 ", "target description has unknown fields: colours (and lacks colors)"),
])
def test_a_malformed_target_file_is_a_clear_error(old, new, needle):
    from wsc.errors import TargetError
    from wsc.machine.target import target_from_toml

    assert old in WSE3
    with pytest.raises(TargetError, match=f"^mine.toml: {re.escape(needle)}"):
        target_from_toml(WSE3.replace(old, new), "mine.toml")


def test_only_meshes_beyond_the_largest_wafer_are_warned_about():
    from wsc.machine.target import load_target, size_warning

    assert size_warning(load_target("wse3")) is None and size_warning(load_target("mesh:900x900")) is None
    assert "more than the largest wafer built" in size_warning(load_target("mesh:1000x1000"))
