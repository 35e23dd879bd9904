"""`wsc simulate`: the Perfetto trace and the JSON result's bundle digest."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from pathlib import Path

import pytest

from test_report import tiny_bundle
from wsc.runtime_sim.scheduler import Event
from wsc.simulate import SimulateOptions, _lanes, simulate


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return tiny_bundle(tmp_path_factory.mktemp("simulate"))


def slices_by_track(trace: dict) -> tuple[dict, dict]:
    """Track names, and each track's slices as (start, end) in whole nanoseconds, rounded as
    Perfetto rounds them."""
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "thread_name"}
    tracks = defaultdict(list)
    for e in trace["traceEvents"]:
        if e["ph"] == "X":
            ts = round(e["ts"] * 1000)
            tracks[(e["pid"], e["tid"])].append((ts, ts + round(e["dur"] * 1000), e["cat"]))
    return names, tracks


@pytest.mark.parametrize("estimate_only", [True, False], ids=["estimate-only", "functional"])
def test_trace_has_both_phases_and_no_overlapping_slices(bundle, tmp_path, estimate_only):
    path = tmp_path / "trace.json"
    res = simulate(SimulateOptions(bundle, estimate_only=estimate_only, trace=path))
    trace = json.loads(path.read_text())
    procs = {e["pid"]: e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "process_name"}
    assert [n.split(" ")[0] for _, n in sorted(procs.items())] == ["prefill", "decode"]
    names, tracks = slices_by_track(trace)
    assert all(names.get(k) for k in tracks)  # every slice is on a named track
    for key, slices in tracks.items():
        slices.sort()
        for (a0, a1, _), (b0, _, _) in zip(slices, slices[1:]):
            assert b0 >= a1, f"{names[key]}: a slice at {b0} ns starts before the one at {a0} ns ends ({a1})"
        cats = {c for *_, c in slices}
        assert cats <= ({"fabric"} if " · fabric" in names[key] else {"compute", "send", "wait"}), names[key]
    tracks_of = defaultdict(set)
    for n in names.values():
        region, track = n.split(" · ")
        tracks_of[region].add(track)
    assert len(tracks_of) > 10 and all("compute" in t for t in tracks_of.values())
    # the linear kernels' transfers run beside their compute, and beside each other
    assert any({"fabric", "fabric 2"} <= t for t in tracks_of.values())
    decode_pid = next(p for p, n in procs.items() if n.startswith("decode"))
    first_decode = min(s[0] for k, v in tracks.items() if k[0] == decode_pid for s in v)
    prefill_end_ns = res["cycles"] / json.loads((bundle / "manifest.json").read_text())["target"]["clock_hz"] * 1e9
    assert first_decode >= round(prefill_end_ns)  # decode follows prefill on one time axis


def test_lanes_split_overlaps_only():
    ev = [Event("r", "a", "fabric", 0.0, 10.0), Event("r", "b", "fabric", 10.0, 5.0),  # touching
          Event("r", "c", "fabric", 3.0, 4.0),  # inside a: a second lane
          Event("r", "d", "fabric", 20.0, 0.2)]  # shorter than a nanosecond: dropped
    lanes = _lanes(ev, 0.0, 1.0)
    assert [[e.name for *_, e in lane] for lane in lanes] == [["a", "b"], ["c"]]
    assert lanes[0][1][:2] == (10, 15)
    assert _lanes(ev[:1], 100.0, 2.0)[0][0][:2] == (200, 220)  # the phase's offset, in ns


def test_json_result_names_its_bundle(bundle):
    res = simulate(SimulateOptions(bundle, estimate_only=True))
    assert res["bundle_digest"] == "sha256:" + hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest()
