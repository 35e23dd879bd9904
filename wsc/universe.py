"""Registers wsc's dialects and passes with `xdsl-opt` (entry point `xdsl.universe`)."""

from xdsl.universe import Universe

from wsc.passes import all_passes


def _dialect():
    from wsc.ir import combined_dialect

    return combined_dialect()


WSC_UNIVERSE = Universe(
    all_dialects={"wsc": _dialect},
    all_passes={name: (lambda p=p: p) for name, p in all_passes().items()},
)
