"""Emit: the bundle on disk (DESIGN §7; the format itself is `wsc.bundle_format`).

Everything is written into a temporary directory next to the destination, hashed into the
manifest, and only then renamed into place: an interrupted compile leaves no half-written
bundle, and an existing bundle is replaced whole or not at all. The bytes depend only on the
inputs and options (no timestamps, sorted JSON, sorted tensors), so the same compile twice
gives a byte-identical bundle.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

from wsc.bundle_format import (
    COMPILE_LOG, MANIFEST, PLACEMENT, PROGRAM, REPORT, WEIGHTS, Manifest, dump_json,
    encode_shard, sha256_file,
)
from wsc import interrupts
from wsc.errors import WscError
from wsc.ir import print_module
from wsc.passes.tile_builder import WeightShard


def shard_bytes(shard: WeightShard) -> np.ndarray:
    """`[rows, cols, *tile]` in the storage encoding: exactly the bytes the PEs start with."""
    return encode_shard(shard.layout.scatter(shard.source().astype(np.float32)), shard.dtype)


def write_bundle(out: Path, *, program, shards: list[WeightShard] | None,
                 placement: dict, manifest: Manifest, compile_log: dict[str, Any],
                 report: str | None = None) -> Path:
    """Write the bundle directory `out` atomically; returns its path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        (tmp / PROGRAM).write_text(print_module(program))
        if shards is not None:
            tensors = {s.key: shard_bytes(s) for s in sorted(shards, key=lambda s: s.key)}
            save_file(tensors, str(tmp / WEIGHTS))
        (tmp / PLACEMENT).write_text(dump_json(placement))
        (tmp / COMPILE_LOG).write_text(dump_json(compile_log))
        if report is not None:
            (tmp / REPORT).write_text(report)
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir())}
        (tmp / MANIFEST).write_text(manifest.with_files(files).text())
        with interrupts.held() as came:
            _commit(tmp, out, came)
    except BaseException:
        with interrupts.held():  # a second Ctrl-C must not leave the temporary directory behind
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _commit(tmp: Path, out: Path, came: list) -> None:
    """Move the finished bundle `tmp` to `out`, replacing a bundle there; a Ctrl-C that came
    meanwhile (or earlier, and was lost) undoes it all: an interrupted compile leaves what
    was there."""
    interrupts.check()
    if out.exists() and not (out / MANIFEST).is_file():
        raise WscError(f"{out} exists and is not a wsc bundle; refusing to replace it")
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.rename(out, old)
    os.rename(tmp, out)
    if came:  # (a Ctrl-C after this look is too late: the compile has finished)
        os.rename(out, tmp)
        if old is not None:
            os.rename(old, out)
        raise KeyboardInterrupt
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
