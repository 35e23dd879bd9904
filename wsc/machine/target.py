"""Targets: the machine model as data (DESIGN §3).

A target is a TOML file. `wse2` and `wse3` ship with wsc; `mesh:WxH` is a small mesh with
wse3's per-PE numbers, for tests and demos; any other spec is a path to a TOML file with the
same fields. The bundle's manifest carries the resolved target, so the simulator never needs
the original file.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from wsc.errors import TargetError

BUILTIN_TARGETS = ("wse2", "wse3")


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    # fabric
    width: int
    height: int
    usable_width: int
    usable_height: int
    colors: int
    hop_latency_cycles: float
    ramp_latency_cycles: float
    wavelet_bytes: int
    link_wavelets_per_cycle: float
    # processing element
    clock_hz: float
    sram_bytes: int
    sram_reserve_bytes: int
    fmac_fp16: int
    fmac_mixed: int
    fmac_fp32: int
    mem_read_bytes_per_cycle: int
    mem_write_bytes_per_cycle: int
    instruction_overhead_cycles: float
    transcendental_cycles: float
    task_activation_cycles: float  # per collective phase: wake the fabric task, set up DSDs

    @property
    def buffer_budget(self) -> int:
        """Bytes of SRAM per PE available to buffers (weights, activations, KV cache)."""
        return self.sram_bytes - self.sram_reserve_bytes

    @property
    def pe_count(self) -> int:
        return self.usable_width * self.usable_height

    def fmacs_per_cycle(self, dtype: str, accumulate: str = "f32") -> int:
        """FMACs per cycle for a dot product whose operands are stored as `dtype`, summing in
        `accumulate`: fp16/bf16 operands into fp32 use the mixed instruction (`@fmachs`), into
        fp16 the plain fp16 one (`@fmach`, as WaferLLM does); fp32 operands the fp32 one."""
        if dtype == "f32":
            return self.fmac_fp32
        return self.fmac_mixed if accumulate == "f32" else self.fmac_fp16

    def simd_width(self, dtype: str) -> int:
        """Elements per cycle of an elementwise vector instruction on `dtype` storage."""
        return self.fmac_fp32 if dtype == "f32" else self.fmac_fp16

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Target:
        """A target from its fields, each of its declared type (an int where the machine counts,
        a finite number where it measures), with no field missing and none unknown."""
        fields = {f.name: f.type for f in dataclasses.fields(cls)}
        missing, unknown = sorted(fields.keys() - data.keys()), sorted(data.keys() - fields.keys())
        if unknown:  # most likely a misspelling of a missing one: name both
            raise TargetError(f"target description has unknown fields: {', '.join(unknown)}"
                              + (f" (and lacks {', '.join(missing)})" if missing else ""),
                              hint="check the spelling against wsc/targets/wse3.toml")
        if missing:
            raise TargetError(f"target description lacks fields: {', '.join(missing)}")
        for name, kind in fields.items():
            if not _is(data[name], kind):
                raise TargetError(f"{name} must be {_KINDS[kind]}, got {data[name]!r}")
        return cls(**data)


_KINDS = {"int": "an integer", "float": "a number", "str": "a string"}


def _is(value: Any, kind: str) -> bool:
    if kind == "str":
        return isinstance(value, str)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, int) if kind == "int" else math.isfinite(value)


# The largest wafer built (WSE-3's fabric): a mesh beyond it is most likely a typo, and
# placement and simulation time grow with the mesh.
LARGEST_WAFER = ("wse3", 762, 1172)


def _flatten(doc: dict[str, Any], origin: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key in ("name", "description"):
        if key in doc:
            flat[key] = doc[key]
    for section in ("fabric", "pe"):
        table = doc.get(section)
        if not isinstance(table, dict):
            raise TargetError(f"{origin}: missing [{section}] table")
        flat.update(table)
    flat.setdefault("description", flat.get("name", origin))
    return flat


def _validate(t: Target, origin: str) -> Target:
    """Every count, size, latency and rate is positive: a zero or negative one would make
    the cost model divide by zero or charge nothing, a speed-up that is not there."""
    for f in dataclasses.fields(Target):
        value = getattr(t, f.name)
        if f.type != "str" and value <= 0:
            raise TargetError(f"{origin}: {f.name} must be positive, got {value}")
    checks = [
        (t.usable_width <= t.width, "usable_width must be at most width"),
        (t.usable_height <= t.height, "usable_height must be at most height"),
        (t.sram_reserve_bytes < t.sram_bytes, "sram_reserve_bytes must be less than sram_bytes"),
    ]
    for ok, why in checks:
        if not ok:
            raise TargetError(f"{origin}: {why}")
    return t


def size_warning(t: Target) -> str | None:
    """A warning for a mesh larger than any wafer built, or None."""
    name, w, h = LARGEST_WAFER
    if t.width * t.height <= w * h:
        return None
    return (f"target {t.name}: a {t.width}x{t.height} mesh has {t.width * t.height:,} PEs, more "
            f"than the largest wafer built ({name}: {w}x{h}, {w * h:,} PEs); placement and "
            "simulation take time in proportion")


def target_from_toml(text: str, origin: str) -> Target:
    """Parse and validate the text of a target TOML file (`origin` names it in errors)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise TargetError(f"{origin}: not valid TOML ({e})") from None
    flat = _flatten(doc, origin)
    try:
        target = Target.from_dict(flat)
    except TargetError as e:
        raise TargetError(f"{origin}: {e.message}", hint=e.hint) from None
    return _validate(target, origin)


def load_target(spec: str) -> Target:
    """Resolve `wse2`, `wse3`, `mesh:WxH` or a path to a TOML file."""
    if spec in BUILTIN_TARGETS:
        text = resources.files("wsc").joinpath(f"targets/{spec}.toml").read_text()
        return target_from_toml(text, spec)
    if spec.startswith("mesh:"):
        m = re.fullmatch(r"mesh:(\d+)x(\d+)", spec)
        if not m or int(m[1]) < 1 or int(m[2]) < 1:
            raise TargetError(
                f"bad mesh target {spec!r}", hint="write mesh:WIDTHxHEIGHT, e.g. mesh:32x32"
            )
        w, h = int(m[1]), int(m[2])
        base = load_target("wse3")
        return dataclasses.replace(
            base, name=spec, description=f"{w}x{h} mesh with WSE-3 PEs",
            width=w, height=h, usable_width=w, usable_height=h,
        )
    path = Path(spec)
    if path.suffix == ".toml":
        if not path.is_file():
            raise TargetError(f"target file {spec} does not exist")
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise TargetError(f"cannot read target file {spec}: {e}") from None
        return target_from_toml(text, str(path))
    raise TargetError(
        f"unknown target {spec!r}",
        hint="use wse2, wse3, mesh:WxH (e.g. mesh:32x32) or a path to a .toml target file",
    )
