"""The error family users see. Every message names what failed, where, and what to do.

The CLI prints `str(error)` and exits with `error.exit_code`; anything that is not a
`WscError` is a bug in wsc and is reported as one.
"""

from __future__ import annotations


class WscError(Exception):
    """Base of every error wsc reports to a user."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if self.hint is None else f"{self.message}\n  hint: {self.hint}"


class UsageError(WscError):
    """Bad command-line arguments or options."""

    exit_code = 2


class CheckpointError(WscError):
    """A checkpoint directory or file is missing, corrupt or not a supported model."""


class UnsupportedOpError(WscError):
    """An operation wsc cannot lower, with its source location."""

    def __init__(self, op: str, module_path: str, why: str = "", *, hint: str | None = None):
        where = module_path or "<top level>"
        msg = f"unsupported operation `{op}` at module `{where}`"
        if why:
            msg += f": {why}"
        super().__init__(
            msg,
            hint=hint
            or "wsc lowers decoders made of the ops it knows (embeddings, layer and RMS "
            "norms, linear layers, causal or sliding-window attention, rotary embeddings, "
            "elementwise maps); if this op is elementwise, add it to wsc.graph and its tile "
            "lowering, otherwise file an issue with the model config",
        )
        self.op = op
        self.module_path = module_path


class TargetError(WscError):
    """An unknown or malformed target description."""


class CapacityError(WscError):
    """The model, or one kernel, does not fit the target (with the numbers)."""


class PlacementError(WscError):
    """Kernels cannot be placed or routed on the mesh."""


class BundleError(WscError):
    """A bundle is missing, corrupt, or was tampered with."""


class SimulationError(WscError):
    """The simulated machine failed: deadlock, SRAM overflow, NaN, color budget."""


class IRError(WscError):
    """Textual IR that does not parse or verify."""


class WscWarning(UserWarning):
    """Something a user should know that does not stop the work (the CLI prints it plainly)."""
