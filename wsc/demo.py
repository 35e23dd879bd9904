"""`wsc demo` (and `make demo`): the whole job, end to end, on a small built-in code model.

It builds a StarCoder-style model (GPTBigCode, multi-query attention, a byte-level vocabulary)
from a config with a fixed seed, saves it as a Hugging Face checkpoint, compiles it for a
32x32 mesh, runs prefill and greedy decoding on the simulated wafer, checks the logits and the
generated tokens against PyTorch, and writes the placement report. The weights are random, so
the generated text is noise: the point is that the wafer and PyTorch agree.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

PROMPT = "def fibonacci(n):\n    "
SEQ_LEN = 24
GENERATE = 16


def build_demo_checkpoint(directory: Path, *, seed: int = 0) -> Path:
    import torch
    from transformers import GPTBigCodeConfig, GPTBigCodeForCausalLM
    from transformers.utils import logging as hf_logging

    config = GPTBigCodeConfig(
        vocab_size=256, n_positions=256, n_embd=128, n_layer=2, n_head=4, multi_query=True,
        bos_token_id=0, eos_token_id=0, activation_function="gelu_pytorch_tanh",
    )
    torch.manual_seed(seed)
    model = GPTBigCodeForCausalLM(config).eval()
    with torch.no_grad():  # give biases and norms non-trivial values, as a trained model has
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    hf_logging.disable_progress_bar()  # a one-shard save: the step line is progress enough
    model.save_pretrained(directory)
    return directory


def encode(text: str, length: int) -> np.ndarray:
    data = list(text.encode("utf-8"))[:length]
    return np.array([32] * (length - len(data)) + data, dtype=np.int64)  # left-pad with spaces


def decode(ids) -> str:
    """Bytes as text; bytes that are not printable ASCII show as '·'."""
    return "".join(chr(i) if 32 <= i < 127 or i == 10 else "·" for i in map(int, ids))


def run_demo(out_dir: Path, target: str, out, err) -> dict:
    from wsc.driver import CompileOptions, Pipeline
    from wsc.report import write_report_for_bundle
    from wsc.simulate import SimulateOptions, simulate

    out_dir = Path(out_dir)
    ckpt = out_dir / "tiny-starcoder"
    bundle = out_dir / "tiny-starcoder.wsc"
    err.print(f"[bold]1/4[/] building the demo model (GPTBigCode, 2 layers, seed 0) in {ckpt}")
    build_demo_checkpoint(ckpt)
    err.print(f"[bold]2/4[/] compiling for {target}")
    opts = CompileOptions(checkpoint=ckpt, output=bundle, target=target, dtype="f16",
                          seq_len=SEQ_LEN, max_seq=64, place_time=5.0)
    res = Pipeline(opts, lambda stage: err.print(f"      {stage}")).run()
    err.print(f"[bold]3/4[/] simulating prefill + {GENERATE} decode steps, checking against PyTorch")
    ids = encode(PROMPT, SEQ_LEN)
    sim = simulate(SimulateOptions(bundle, tokens=[int(i) for i in ids], check=True,
                                   generate=GENERATE, trace=out_dir / "trace.json"))
    (out_dir / "simulate.json").write_text(json.dumps(sim, indent=1, sort_keys=True) + "\n")
    err.print("[bold]4/4[/] writing the report")
    report = write_report_for_bundle(bundle, out_dir / "report.html", sim=sim)
    out.print(f"\nprompt      {PROMPT!r}\ngenerated   {decode(sim['tokens'])!r}  (random weights)")
    out.print(f"numerics    rel L2 {sim['rel_l2_err']:.2e}, top-1 agreement {sim['top1_agree']:.3f}\n"
              f"tokens      same as transformers' generate: {sim['tokens_match']}", highlight=False)
    out.print(f"modeled     time to first token {sim['ttft_s'] * 1e6:.1f} us, "
              f"{sim['tokens_per_s']:.0f} tokens/s on {res.pes} PEs", highlight=False)
    out.print(f"\ncheckpoint  {ckpt}\nbundle      {bundle}\nreport      {report}\n"
              f"trace       {out_dir / 'trace.json'} (open in https://ui.perfetto.dev)\n"
              f"results     {out_dir / 'simulate.json'}")
    if not sim.get("passed"):
        from wsc.errors import SimulationError

        raise SimulationError("the demo's numerics check failed")
    return sim
