"""Simulator speed: a functional prefill of a GPT-2-small-shaped checkpoint against torch eager.

Builds a GPT-2-small-shaped checkpoint (124M parameters, random weights, fixed seed) from
`benchmarks/configs/gpt2-small.json`, compiles it (the `wsc compile` pipeline, default options:
fp16 on wse3) at `--seq-len` prompt tokens, then, in the same process and on the same prompt,
times

  * torch eager: the checkpoint's forward pass, exactly what `wsc simulate --check` compares
    with (`wsc.golden.reference_logits`: fp32, eager attention, no KV cache), with torch's
    default number of threads, after one untimed warm-up call; the best of
    `max(--repeat, --torch-repeat)` calls (one call is cheap, and on a shared machine the best
    of a few is the honest estimate of what it costs);
  * wsc: loading the bundle from disk (once: the manifest's digests checked, the program
    parsed, the weights written into every PE's SRAM and the Cannon loops' weights gathered to
    fp32), and the simulated prefill (every region's tile program executed per PE, with SRAM,
    FIFO, replicated-consistency and NaN/Inf checks on): the first call, and the best of
    `--repeat` calls (the first included).

and prints the ratio of the best simulated prefill to the best torch forward pass. The JSON also
records torch's thread count and the machine's load average when the timing started.

    python benchmarks/sim_speed.py [--seq-len 128] [--repeat 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def build_checkpoint(directory: Path) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = json.loads((HERE / "configs" / "gpt2-small.json").read_text())
    cfg.pop("transformers_version", None)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg))
    model.save_pretrained(directory)
    return directory


def best(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--target", default="wse3")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--torch-repeat", type=int, default=5,
                    help="torch calls timed at least (the best counts)")
    ap.add_argument("--json")
    args = ap.parse_args()

    from wsc.driver import CompileOptions, Pipeline
    from wsc.golden import reference_logits
    from wsc.numerics import compare
    from wsc.runtime_sim.simulator import Simulator

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = build_checkpoint(Path(tmp) / "gpt2-small")
        bundle = Path(tmp) / "g.wsc"
        t0 = time.perf_counter()
        Pipeline(CompileOptions(checkpoint=ckpt, output=bundle, target=args.target,
                                seq_len=args.seq_len, report=False)).run()
        compile_s = time.perf_counter() - t0
        ids = np.random.default_rng(0).integers(0, 50257, args.seq_len)
        import torch

        load_avg = os.getloadavg()[0]
        reference_logits(ckpt, ids)  # load the model once, and warm up, outside the timing
        torch_s, ref = best(lambda: reference_logits(ckpt, ids), max(args.repeat, args.torch_repeat))
        load_s, sim = best(lambda: Simulator.open(bundle), 1)
        first_s, (logits, run) = best(lambda: sim.prefill(ids), 1)
        sim_s = first_s
        if args.repeat > 1:
            again, (logits, run) = best(lambda: sim.prefill(ids), args.repeat - 1)
            sim_s = min(first_s, again)
        agree = compare(logits, ref)
    row = {"seq_len": args.seq_len, "target": args.target, "compile_s": compile_s,
           "torch_eager_s": torch_s, "torch_threads": torch.get_num_threads(),
           "sim_load_s": load_s, "sim_prefill_first_s": first_s, "sim_prefill_s": sim_s,
           "ratio": sim_s / torch_s, "rel_l2_err": agree.rel_l2_err,
           "regions": len(run.regions), "load_average": load_avg}
    print(json.dumps(row, indent=1))
    print(f"\nGPT-2-small ({args.seq_len} tokens, {args.target}): torch eager {torch_s:.3f} s, "
          f"simulated prefill {sim_s:.2f} s ({sim_s / torch_s:.1f}x; first {first_s:.2f} s), "
          f"bundle load {load_s:.1f} s, "
          f"rel L2 {agree.rel_l2_err:.1e}")
    if args.json:
        Path(args.json).write_text(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
