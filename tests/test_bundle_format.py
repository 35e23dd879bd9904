"""The bundle format: the manifest round-trips, and every edit of a bundle is refused, the
manifest and its machine model included (issue 5 item 3)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from backend import lower_graph
from graphs import gpt2_block_graph
from wsc.bundle_format import (
    MANIFEST, Manifest, TargetSource, dump_json, json_digest, open_bundle,
)
from wsc.codegen.bundle import write_bundle
from wsc.errors import BundleError


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    graph, weights = gpt2_block_graph()
    tm, shards, manifest = lower_graph(graph, weights, target="mesh:16x16")
    out = tmp_path_factory.mktemp("b") / "m.wsc"
    return write_bundle(out, program=tm, shards=shards, placement={}, manifest=manifest,
                        compile_log={})


def edited(bundle: Path, tmp_path: Path, edit, *, rehash: bool = False) -> Path:
    """A copy of the bundle whose manifest JSON went through `edit` (and, with `rehash`, whose
    digest was recomputed, as someone covering their tracks would)."""
    copy = tmp_path / "e.wsc"
    shutil.copytree(bundle, copy)
    raw = json.loads((copy / MANIFEST).read_text())
    edit(raw)
    if rehash:
        raw["digest"] = json_digest({k: v for k, v in raw.items() if k != "digest"})
    (copy / MANIFEST).write_text(dump_json(raw))
    return copy


def test_the_manifest_round_trips(bundle):
    m = open_bundle(bundle).manifest
    assert Manifest.from_json(m.to_json()) == m
    assert m.target_source == TargetSource("mesh:16x16")


def test_an_edited_manifest_is_refused(bundle, tmp_path):
    def edit(raw):
        raw["max_seq"] += 1

    with pytest.raises(BundleError, match="manifest.json has been modified"):
        open_bundle(edited(bundle, tmp_path, edit))


@pytest.mark.parametrize("field,value", [("sram_reserve_bytes", 1024), ("fmac_mixed", 64),
                                         ("hop_latency_cycles", 0)])
def test_an_edited_machine_model_is_refused_even_with_a_recomputed_digest(bundle, tmp_path,
                                                                          field, value):
    def edit(raw):
        raw["target"][field] = value

    with pytest.raises(BundleError, match=f"machine model differs from target 'mesh:16x16': {field}"):
        open_bundle(edited(bundle, tmp_path, edit, rehash=True))


def test_a_toml_target_travels_with_its_text(tmp_path):
    from wsc.machine.target import load_target

    text = (Path(__file__).parents[1] / "wsc" / "targets" / "wse2.toml").read_text()
    path = tmp_path / "mine.toml"
    path.write_text(text.replace('name = "wse2"', 'name = "mine"'))
    src = TargetSource.of(str(path))
    assert src.toml is not None and src.resolve() == load_target(str(path))
    path.unlink()  # the bundle does not need the file any more
    assert src.resolve().name == "mine"


def test_a_manifest_missing_a_field_is_a_clear_error(bundle, tmp_path):
    def edit(raw):
        del raw["seq_len"]

    with pytest.raises(BundleError, match="lacks 'seq_len'"):
        open_bundle(edited(bundle, tmp_path, edit, rehash=True))
