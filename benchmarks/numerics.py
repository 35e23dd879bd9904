"""Numerics table: the simulated wafer's logits against torch eager, per architecture and dtype.

Builds each tiny test checkpoint (2 layers, fixed seed, `tests/models.py`), compiles it with
`wsc compile` for `mesh:32x32` at 64 tokens, and runs `wsc simulate --check` (fresh random
token ids), printing the relative L2 and max-abs error of the logits and the top-1 agreement.

    python benchmarks/numerics.py [--archs gpt2,llama] [--dtypes fp32,fp16] [--seq-len 64]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.models import ARCHS, make_checkpoint  # noqa: E402


def wsc(*args: str) -> None:
    r = subprocess.run([sys.executable, "-m", "wsc.cli", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"wsc {' '.join(args)} failed:\n{r.stderr}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default=",".join(ARCHS))
    ap.add_argument("--dtypes", default="fp32,fp16")
    ap.add_argument("--seq-len", default="64")
    ap.add_argument("--target", default="mesh:32x32")
    args = ap.parse_args()
    print("| arch | dtype | rel L2 | max abs | top-1 agree |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs.split(","):
            ckpt = make_checkpoint(arch, Path(tmp) / arch)
            for dtype in args.dtypes.split(","):
                bundle, res = Path(tmp) / f"{arch}-{dtype}.wsc", Path(tmp) / f"{arch}-{dtype}.json"
                wsc("compile", str(ckpt), "-o", str(bundle), "--target", args.target,
                    "--dtype", dtype, "--seq-len", args.seq_len, "--no-report")
                wsc("simulate", str(bundle), "--check", "--json", str(res))
                r = json.loads(res.read_text())
                print(f"| {arch} | {dtype} | {r['rel_l2_err']:.2e} | {r['max_abs_err']:.2e} | "
                      f"{r['top1_agree']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
