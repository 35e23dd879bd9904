"""The bundle format (DESIGN §7): the only contract between the compiler and the simulator.

A bundle is a directory `NAME.wsc/` holding `manifest.json`, `program.mlir`,
`weights.safetensors`, `placement.json`, `compile_log.json` and `report.html`. The compiler
writes it (`wsc.codegen.bundle`), the simulator and the report read it (`open_bundle`); both
use the names, the manifest schema and the weight-shard encoding defined here.

Integrity: the manifest holds the sha256 of every other file and, in `digest`, the sha256 of
its own canonical JSON without that field, so an edit of any file, the manifest included, is
refused. The manifest also records how its target was named (`target_source`): the target's
fields must be exactly what that builtin target (or the recorded TOML text) resolves to, so an
edited cost or SRAM budget is refused as well.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from wsc.errors import BundleError, TargetError
from wsc.machine.target import Target, load_target, target_from_toml

FORMAT = "wsc-bundle"
FORMAT_VERSION = 2
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


def dump_json(obj: Any) -> str:
    """The canonical JSON of every bundle file: sorted keys, so equal inputs give equal bytes."""
    return json.dumps(obj, sort_keys=True, indent=1) + "\n"


def json_digest(obj: Any) -> str:
    return hashlib.sha256(dump_json(obj).encode()).hexdigest()


# --- the manifest -------------------------------------------------------------------------


@dataclass(frozen=True)
class IOSpec:
    """One host channel of a program: the token ids in, the logits out."""

    channel: str
    shape: tuple[int, int]
    dtype: str


@dataclass(frozen=True)
class ModelInfo:
    arch: str
    vocab_size: int
    layers: int = 0
    hidden: int = 0


@dataclass(frozen=True)
class CheckpointInfo:
    path: str
    digest: str
    attn_implementation: str = "sdpa"


@dataclass(frozen=True)
class TargetSource:
    """How the target was named: a builtin or `mesh:WxH` spec, or a TOML file's text."""

    spec: str
    toml: str | None = None

    @classmethod
    def of(cls, spec: str) -> TargetSource:
        """What to record for a `--target` spec: a TOML file's text travels with the bundle."""
        path = Path(spec)
        if path.suffix == ".toml" and path.is_file():
            return cls(str(path), path.read_text())
        return cls(spec)

    def resolve(self) -> Target:
        if self.toml is not None:
            return target_from_toml(self.toml, self.spec)
        return load_target(self.spec)


@dataclass(frozen=True)
class Manifest:
    wsc_version: str
    target: Target
    target_source: TargetSource
    dtype: str
    phases: tuple[str, ...]
    seq_len: int
    prefill_chunk: int
    prefill_logits: str
    max_seq: int
    weights: bool
    model: ModelInfo
    inputs: dict[str, dict[str, IOSpec]]
    outputs: dict[str, dict[str, IOSpec]]
    checkpoint: CheckpointInfo
    pes_used: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    def io(self, phase: str) -> tuple[dict[str, IOSpec], dict[str, IOSpec]]:
        return self.inputs[phase], self.outputs[phase]

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["phases"] = list(self.phases)
        for side in ("inputs", "outputs"):
            for specs in d[side].values():
                for s in specs.values():
                    s["shape"] = list(s["shape"])
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **d}

    def with_files(self, files: dict[str, str]) -> Manifest:
        return dataclasses.replace(self, files=dict(sorted(files.items())))

    def text(self) -> str:
        """The bytes of `manifest.json`: the canonical JSON with its own digest."""
        d = self.to_json()
        return dump_json({**d, "digest": json_digest(d)})

    @classmethod
    def from_json(cls, d: dict[str, Any], origin: str = "manifest") -> Manifest:
        """Parse and type-check a manifest; anything missing or mistyped is a `BundleError`."""
        try:
            def ios(side: str) -> dict[str, dict[str, IOSpec]]:
                return {phase: {name: IOSpec(str(s["channel"]), _pair(s["shape"]), str(s["dtype"]))
                                for name, s in specs.items()}
                        for phase, specs in d[side].items()}

            return cls(
                wsc_version=str(d["wsc_version"]),
                target=Target.from_dict(d["target"]),
                target_source=TargetSource(**d["target_source"]),
                dtype=str(d["dtype"]),
                phases=tuple(str(p) for p in d["phases"]),
                seq_len=_int(d["seq_len"]),
                prefill_chunk=_int(d["prefill_chunk"]),
                prefill_logits=str(d["prefill_logits"]),
                max_seq=_int(d["max_seq"]),
                weights=bool(d["weights"]),
                model=ModelInfo(**d["model"]),
                inputs=ios("inputs"),
                outputs=ios("outputs"),
                checkpoint=CheckpointInfo(**d["checkpoint"]),
                pes_used=_int(d.get("pes_used", 0)),
                options=dict(d.get("options", {})),
                files={str(k): str(v) for k, v in d.get("files", {}).items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError, TargetError) as e:
            what = f"lacks {e}" if isinstance(e, KeyError) else f"is malformed ({e})"
            raise BundleError(f"{origin} {what}", hint="recompile with this version of wsc") from None


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"expected an integer, got {v!r}")
    return v


def _pair(v: Any) -> tuple[int, int]:
    a, b = v
    return (_int(a), _int(b))


# --- weight shards ------------------------------------------------------------------------

# How each storage dtype is kept in weights.safetensors: the exact bytes the PEs start with.
# bf16 is stored as its raw 16-bit patterns (numpy has no bfloat16).
SHARD_DTYPES = {"f32": np.dtype(np.float32), "f16": np.dtype(np.float16),
                "bf16": np.dtype(np.uint16)}


def encode_shard(tiles: np.ndarray, dtype: str) -> np.ndarray:
    """Per-PE tiles `[rows, cols, *tile]` (any float dtype) as they are stored for `dtype`."""
    if dtype == "bf16":
        return np.asarray(tiles, dtype=np.float32).astype(ml_dtypes.bfloat16).view(np.uint16)
    return np.asarray(tiles, dtype=np.float32).astype(SHARD_DTYPES[dtype])


def check_shard(key: str, arr: np.ndarray, shape: tuple[int, ...], dtype: str) -> None:
    """A stored shard must be exactly the buffer it initialises."""
    want = SHARD_DTYPES.get(dtype)
    if tuple(arr.shape) != tuple(shape) or arr.dtype != want:
        raise BundleError(f"weight {key} is stored as {tuple(arr.shape)} {arr.dtype}, its buffer "
                          f"needs {tuple(shape)} {want} ({dtype})")


# --- reading ------------------------------------------------------------------------------


@dataclass
class Bundle:
    path: Path
    manifest: Manifest

    def file(self, name: str) -> Path:
        return self.path / name

    def read_json(self, name: str) -> dict[str, Any]:
        try:
            return json.loads(self.file(name).read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BundleError(f"bundle {self.path}: cannot read {name}: {e}") from None

    def program_text(self) -> str:
        try:
            return self.file(PROGRAM).read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise BundleError(f"bundle {self.path}: cannot read {PROGRAM}: {e}") from None


def open_bundle(path: str | Path, *, verify: bool = True) -> Bundle:
    """Open a bundle directory; with `verify`, check every file, the manifest itself and its
    target against what the compiler wrote."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"no bundle at {path}", hint="compile one with `wsc compile CHECKPOINT -o BUNDLE`")
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"{path} is not a wsc bundle: it has no {MANIFEST}")
    try:
        raw = json.loads(mpath.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{mpath} is corrupt: {e}") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise BundleError(f"{mpath} is not a wsc bundle manifest")
    if raw.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{path} has bundle format version {raw.get('format_version')}, this wsc reads "
            f"version {FORMAT_VERSION}", hint="recompile the checkpoint with this version of wsc")
    if verify:
        _verify_manifest_digest(raw, mpath)
    manifest = Manifest.from_json(raw, str(mpath))
    if PROGRAM not in manifest.files:
        raise BundleError(f"{mpath} lists no {PROGRAM}")
    if verify:
        _verify_files(path, manifest.files)
        verify_target(manifest, str(mpath))
    return Bundle(path, manifest)


_TAMPERED = "recompile; never edit a bundle by hand"


def _verify_manifest_digest(raw: dict[str, Any], mpath: Path) -> None:
    body = {k: v for k, v in raw.items() if k != "digest"}
    if raw.get("digest") != json_digest(body):
        raise BundleError(f"{mpath} has been modified since it was compiled (its digest does "
                          "not match its contents)", hint=_TAMPERED)


def _verify_files(path: Path, files: dict[str, str]) -> None:
    for name, digest in sorted(files.items()):
        f = path / name
        if not f.is_file():
            raise BundleError(f"bundle {path} is incomplete: {name} is missing")
        got = sha256_file(f)
        if got != digest:
            raise BundleError(
                f"bundle {path}: {name} has been modified since it was compiled "
                f"(sha256 {got[:16]}..., the manifest says {digest[:16]}...)", hint=_TAMPERED)


def verify_target(manifest: Manifest, origin: str) -> None:
    """The manifest's target fields must be what its named target resolves to."""
    try:
        want = manifest.target_source.resolve()
    except TargetError as e:
        raise BundleError(f"{origin}: its target {manifest.target_source.spec!r} cannot be "
                          f"resolved: {e.message}") from None
    got = manifest.target
    changed = [f.name for f in dataclasses.fields(Target) if getattr(got, f.name) != getattr(want, f.name)]
    if changed:
        diffs = ", ".join(f"{n} = {getattr(got, n)!r} (target says {getattr(want, n)!r})" for n in changed)
        raise BundleError(f"{origin}: the machine model differs from target "
                          f"{manifest.target_source.spec!r}: {diffs}", hint=_TAMPERED)
