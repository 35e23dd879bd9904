"""Ctrl-C, remembered: an interrupt must stop a compile even where Python loses it.

Python raises KeyboardInterrupt wherever the main thread happens to be, and in a few places
the exception is dropped: a generator finalised at that moment, a `__del__`, a library that
catches everything. `install` makes Ctrl-C raise as usual and also remember that it was
pressed; the driver `check`s after every stage, the bundle writer before it commits, and the
CLI reports any failure after a Ctrl-C as the interrupt it is. Code that an interrupt could
crash runs with it `deferred`, steps that belong together with it `held`. (CP-SAT's own
handler is turned off: `wsc.placement.interrupt`.)
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

_state = {"pressed": False}


def install() -> None:
    """Route SIGINT here (the CLI does this once per command)."""
    _state["pressed"] = False
    signal.signal(signal.SIGINT, _on_ctrl_c)


def _on_ctrl_c(signum, frame) -> None:
    _state["pressed"] = True
    raise KeyboardInterrupt


def pressed() -> bool:
    return _state["pressed"]


def check() -> None:
    """Raise the KeyboardInterrupt of a Ctrl-C that something swallowed."""
    if _state["pressed"]:
        raise KeyboardInterrupt


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold Ctrl-C while code runs that a KeyboardInterrupt could crash, and raise it when
    the block ends; a second Ctrl-C raises at once (whoever presses twice takes the risk).

    torch.export is such code: it calls back into Python from C++, and a KeyboardInterrupt
    raised in one of those callbacks aborted the process (SIGABRT) about once in twenty."""
    with held(second_raises=True) as came:
        yield
    if came:
        _state["pressed"] = True
        raise KeyboardInterrupt


@contextlib.contextmanager
def held(*, second_raises: bool = False) -> Iterator[list]:
    """Hold Ctrl-C for the block, so that steps that belong together (renaming a bundle into
    place, and undoing that) are never cut in half; the yielded list records whether Ctrl-C
    came meanwhile, and the block decides what that means (not `pressed`: a Ctrl-C after the
    block's last look is too late to matter). Only the main thread receives signals: elsewhere
    this holds nothing."""
    came: list = []
    if threading.current_thread() is not threading.main_thread():
        yield came
        return

    def hold(signum, frame) -> None:
        came.append(signum)
        if second_raises and len(came) > 1:
            _state["pressed"] = True
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, hold)
    try:
        yield came
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
