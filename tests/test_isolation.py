"""The simulator reads only the bundle: it imports no compiler stage and no torch (DESIGN §7)."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = ("torch", "transformers", "wsc.frontend", "wsc.passes", "wsc.placement", "ortools")


def test_runtime_sim_imports_no_compiler_stage_and_no_torch():
    code = (
        "import sys, pkgutil, importlib, wsc.runtime_sim as rs\n"
        "for m in pkgutil.iter_modules(rs.__path__):\n"
        "    importlib.import_module('wsc.runtime_sim.' + m.name)\n"
        f"bad = sorted(n for n in sys.modules if n.split('.')[0] in {FORBIDDEN!r} "
        f"or any(n.startswith(p) for p in {FORBIDDEN!r}))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"runtime_sim pulled in: {out.stdout.strip()}"


def test_the_check_is_able_to_fail():
    code = "import sys, wsc.frontend; print('wsc.frontend' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
