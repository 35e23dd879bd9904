"""`wsc opt`: run any pass pipeline on a textual IR file (`-p 'a,b{opt=1}'`)."""

from __future__ import annotations

import sys
from pathlib import Path

from xdsl.context import Context
from xdsl.passes import PassPipeline
from xdsl.utils.exceptions import VerifyException

from wsc.errors import IRError, UsageError
from wsc.ir import make_context, parse_module, print_module


def available_passes() -> dict:
    from wsc.passes import all_passes

    return {name: (lambda p=p: p) for name, p in all_passes().items()}


def run_opt(file: Path, pipeline: str, *, print_ir_after_all: bool = False) -> str:
    file = Path(file)
    if not file.is_file():
        raise UsageError(f"no such file {file}")
    module = parse_module(file.read_text(), str(file))
    passes = available_passes()

    def callback(prev, mod, _next) -> None:
        if print_ir_after_all and prev is not None:
            sys.stderr.write(f"// -----// IR after {prev.name} //----- //\n{print_module(mod)}")

    try:
        pipe = PassPipeline.parse_spec(passes, pipeline, callback) if pipeline else None
    except Exception as e:  # xdsl raises ValueError / PassFailedException for bad specs
        raise UsageError(f"bad pass pipeline {pipeline!r}: {e}",
                         hint=f"available passes: {', '.join(sorted(passes))}") from None
    if pipe is not None:
        ctx: Context = make_context()
        pipe.apply(ctx, module)
        try:
            module.verify()
        except VerifyException as e:
            raise IRError(f"{file}: the result does not verify: {e}") from None
    return print_module(module)
