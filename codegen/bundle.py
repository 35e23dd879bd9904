"""Emit: the bundle on disk (DESIGN §7).

Everything is written into a temporary directory next to the destination, hashed into the
manifest, and only then renamed into place: an interrupted compile leaves no half-written
bundle, and an existing bundle is replaced whole or not at all. The bytes depend only on the
inputs and options (no timestamps, sorted JSON, sorted tensors), so the same compile twice
gives a byte-identical bundle.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
from safetensors.numpy import save_file

from wsc.errors import WscError
from wsc.ir import print_module
from wsc.passes.tile_builder import WeightShard
from wsc.runtime_sim.bundle import (
    COMPILE_LOG,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    PLACEMENT,
    PROGRAM,
    REPORT,
    WEIGHTS,
    sha256_file,
)


def shard_bytes(shard: WeightShard) -> np.ndarray:
    """`[rows, cols, *tile]` in the storage dtype — exactly the bytes the PEs start with.
    bf16 is stored as its raw 16-bit patterns (numpy has no bfloat16)."""
    tiles = shard.layout.scatter(shard.source().astype(np.float32))
    if shard.dtype == "f16":
        return tiles.astype(np.float16)
    if shard.dtype == "bf16":
        return tiles.astype(ml_dtypes.bfloat16).view(np.uint16)
    return tiles.astype(np.float32)


def dump_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, indent=1) + "\n"


def write_bundle(out: Path, *, program, shards: list[WeightShard] | None,
                 placement: dict, manifest: dict, compile_log: dict,
                 report: str | None = None) -> Path:
    """Write the bundle directory `out` atomically; returns its path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        (tmp / PROGRAM).write_text(print_module(program))
        tensors = {s.key: shard_bytes(s) for s in sorted(shards or [], key=lambda s: s.key)}
        if shards is not None:
            save_file(tensors, str(tmp / WEIGHTS))
        (tmp / PLACEMENT).write_text(dump_json(placement))
        (tmp / COMPILE_LOG).write_text(dump_json(compile_log))
        if report is not None:
            (tmp / REPORT).write_text(report)
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir())}
        full = {"format": FORMAT, "format_version": FORMAT_VERSION, **manifest, "files": files}
        (tmp / MANIFEST).write_text(dump_json(full))
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _replace(tmp: Path, out: Path) -> None:
    if out.exists() and not (out / MANIFEST).is_file():
        raise WscError(f"{out} exists and is not a wsc bundle; refusing to replace it")
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.rename(out, old)
    os.rename(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
