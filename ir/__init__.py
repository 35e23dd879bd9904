"""wsc's IR: three xDSL dialects (`wsc.graph`, `wsc.kernel`, `wsc.tile`) and their text form."""

from __future__ import annotations

import io

from xdsl.context import Context
from xdsl.dialects.builtin import Builtin, ModuleOp
from xdsl.dialects.func import Func
from xdsl.ir import Dialect
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.utils.exceptions import ParseError, VerifyException

from wsc.errors import IRError
from wsc.ir.graph import WscGraph
from wsc.ir.kernel import WscKernel
from wsc.ir.tile import WscTile

DIALECTS = (WscGraph, WscKernel, WscTile)


def make_context() -> Context:
    ctx = Context()
    for d in (Builtin, Func, *DIALECTS):
        ctx.load_dialect(d)
    return ctx


def combined_dialect() -> Dialect:
    """All three levels as one dialect named `wsc`, for xdsl-opt's lazy loading (which keys
    dialects by the op name's first component)."""
    ops = [op for d in DIALECTS for op in d.operations]
    attrs = [a for d in DIALECTS for a in d.attributes]
    return Dialect("wsc", ops, attrs)


def print_module(module: ModuleOp) -> str:
    out = io.StringIO()
    Printer(stream=out).print_op(module)
    out.write("\n")
    return out.getvalue()


def parse_module(text: str, origin: str = "<input>") -> ModuleOp:
    """Parse and verify textual IR; errors become `IRError` naming the file and position."""
    try:
        module = Parser(make_context(), text, origin).parse_module()
        module.verify()
    except ParseError as e:
        raise IRError(f"{origin}: does not parse:\n{e}") from None
    except VerifyException as e:
        raise IRError(f"{origin}: does not verify: {e}") from None
    return module
