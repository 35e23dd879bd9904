"""Reading a bundle (DESIGN §7): the only thing the simulator and the report see.

A bundle is a directory `NAME.wsc/` with `manifest.json` (which holds the sha256 of every
other file), `program.mlir`, `weights.safetensors`, `placement.json` and `compile_log.json`.
A file that is missing, or whose bytes do not hash to what the manifest says, is refused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsc.errors import BundleError

FORMAT = "wsc-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PROGRAM = "program.mlir"
WEIGHTS = "weights.safetensors"
PLACEMENT = "placement.json"
COMPILE_LOG = "compile_log.json"
REPORT = "report.html"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Bundle:
    path: Path
    manifest: dict[str, Any]

    def file(self, name: str) -> Path:
        return self.path / name

    def read_json(self, name: str) -> dict[str, Any]:
        try:
            return json.loads(self.file(name).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise BundleError(f"bundle {self.path}: cannot read {name}: {e}") from None

    def program_text(self) -> str:
        return self.file(PROGRAM).read_text()


def open_bundle(path: str | Path, *, verify: bool = True) -> Bundle:
    """Open a bundle directory; with `verify`, check every file against the manifest."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"no bundle at {path}", hint="compile one with `wsc compile CHECKPOINT -o BUNDLE`")
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"{path} is not a wsc bundle: it has no {MANIFEST}")
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{mpath} is corrupt: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{mpath} is not a wsc bundle manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{path} has bundle format version {manifest.get('format_version')}, this wsc reads "
            f"version {FORMAT_VERSION}",
            hint="recompile the checkpoint with this version of wsc",
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or PROGRAM not in files:
        raise BundleError(f"{mpath} lists no files")
    if verify:
        for name, digest in sorted(files.items()):
            f = path / name
            if not f.is_file():
                raise BundleError(f"bundle {path} is incomplete: {name} is missing")
            got = sha256_file(f)
            if got != digest:
                raise BundleError(
                    f"bundle {path}: {name} has been modified since it was compiled "
                    f"(sha256 {got[:16]}..., the manifest says {digest[:16]}...)",
                    hint="recompile; never edit a bundle by hand",
                )
    return Bundle(path, manifest)
