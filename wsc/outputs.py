"""Output paths, checked before any work starts: a compile or a simulation that runs for
minutes must not fail at its end because its result cannot be written where it was asked to."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from wsc.bundle_format import MANIFEST
from wsc.errors import UsageError, WscError


def check_bundle_output(path: Path, option: str = "-o") -> None:
    """A bundle goes to a new path or replaces a bundle; never a file or another directory."""
    path = Path(path)
    if path.is_dir() and not (path / MANIFEST).is_file():
        raise UsageError(f"{option} {path}: the directory exists and is not a wsc bundle; "
                         "refusing to replace it", hint="remove it, or choose another path")
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path}: a file of that name exists, a bundle is a directory",
                         hint="remove it, or choose another path")
    _check_parent(path, option)


def check_file_output(path: Path, option: str) -> None:
    """A file output (IR, JSON, HTML, trace) goes where a file can be written."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{option} {path} is a directory", hint="give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise UsageError(f"{option} {path}: the file exists and is read-only")
    _check_parent(path, option)


def check_dir_output(path: Path, option: str) -> None:
    """A directory that wsc creates if need be, and writes files into."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path}: a file of that name exists, a directory is needed")


def write_text(path: Path, text: str, option: str) -> None:
    """Write a result file (and the directories above it); a failure (disk full,
    permissions changed) is one clear error."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
    except OSError as e:
        raise WscError(f"cannot write {option} {path}: {e.strerror or e}") from None


def _check_parent(path: Path, option: str) -> None:
    """Missing directories are created, as every writer does: the nearest one that exists
    must be a directory that can be written."""
    existing = next(p for p in [path.parent, *path.parent.parents] if p.exists())
    if not existing.is_dir():
        raise UsageError(f"{option} {path}: {existing} is not a directory")
    try:  # access() says yes to root and knows nothing of read-only mounts: try it
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UsageError(f"{option} {path}: cannot write in {existing} ({e.strerror or e})") from None
