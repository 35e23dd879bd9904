"""The bundle is the only contract between compiler and simulator (DESIGN §7, STYLE).

The simulator imports no compiler stage and no torch; the compiler's stages import nothing from
the simulator (the driver hands the planner the simulator's region estimator). Both sides share
only `wsc.machine` (target, costs, colors), `wsc.bundle_format` and the IR.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

COMPILER = ("wsc.frontend", "wsc.passes", "wsc.placement", "wsc.codegen")
SIMULATOR = ("wsc.runtime_sim",)
HEAVY = ("torch", "transformers", "ortools")


def imported_by(packages: tuple[str, ...]) -> set[str]:
    """Every module that importing all modules of `packages` pulls in, in a fresh interpreter."""
    code = (
        "import sys, pkgutil, importlib\n"
        f"for pkg in {packages!r}:\n"
        "    p = importlib.import_module(pkg)\n"
        "    for m in pkgutil.walk_packages(getattr(p, '__path__', []), pkg + '.'):\n"
        "        importlib.import_module(m.name)\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def offending(modules: set[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == f or m.startswith(f + ".") for f in forbidden))


def test_runtime_sim_imports_no_compiler_stage_and_no_torch():
    bad = offending(imported_by(SIMULATOR), COMPILER + HEAVY)
    assert not bad, f"runtime_sim pulled in: {bad}"


@pytest.mark.parametrize("stage", COMPILER)
def test_no_compiler_stage_imports_the_simulator(stage):
    bad = offending(imported_by((stage,)), SIMULATOR)
    assert not bad, f"{stage} pulled in: {bad}"


def test_the_check_is_able_to_fail():
    assert offending(imported_by(("wsc.simulate",)), SIMULATOR)
