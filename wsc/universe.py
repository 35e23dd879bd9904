"""Registers wsc's dialects and passes with `xdsl-opt` (entry point `xdsl.universe`)."""

from xdsl.universe import Universe


def _dialect():
    from wsc.ir import combined_dialect

    return combined_dialect()


def _pass(name: str):
    def load():
        from wsc.passes import all_passes

        return all_passes()[name]

    return load


_PASS_NAMES = ("canonicalize-graph", "recognize-rope", "recognize-attention", "recognize-norms",
               "partition")

WSC_UNIVERSE = Universe(all_dialects={"wsc": _dialect},
                        all_passes={n: _pass(n) for n in _PASS_NAMES})
