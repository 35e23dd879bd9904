"""The `wsc` command line: compile, simulate, report, opt, demo.

Every failure a user can cause is one message and a non-zero exit code; `--debug` shows the
traceback. Anything that is not a `WscError` is a bug in wsc and says so.
"""

from __future__ import annotations

import json
import re
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from wsc import interrupts
from wsc.errors import UsageError, WscError, WscWarning

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="wsc: compile decoder LLM checkpoints to tile programs for a wafer-scale mesh, "
         "simulate them, and check them against PyTorch.",
)
out = Console()
err = Console(stderr=True)
STATE = {"debug": False}


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors.")) -> None:
    STATE["debug"] = debug
    interrupts.install()
    warnings.showwarning = _show_warning


_python_showwarning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """wsc's own warnings as one plain line; everyone else's as Python prints them."""
    if issubclass(category, WscWarning):
        err.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False, soft_wrap=True)
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


def _fail(e: BaseException) -> None:
    if STATE["debug"]:
        traceback.print_exception(e)
    # whatever fails after a Ctrl-C fails because of it (a library that wrapped the
    # KeyboardInterrupt in an error of its own, say)
    if interrupts.pressed() or _caused_by_interrupt(e):
        err.print("[bold red]interrupted[/]")
        raise typer.Exit(130)
    if isinstance(e, WscError):
        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        raise typer.Exit(e.exit_code)
    err.print(f"[bold red]internal error[/] (a bug in wsc): {type(e).__name__}: {escape(str(e))}\n"
              "  rerun with `wsc --debug ...` for the traceback", highlight=False)
    raise typer.Exit(70)


def _caused_by_interrupt(e: BaseException | None) -> bool:
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


# --- compile ----------------------------------------------------------------------------


@app.command("compile")
def compile_cmd(
    checkpoint: Optional[Path] = typer.Argument(None, help="Hugging Face model directory (config.json + weights)."),
    output: Path = typer.Option(..., "-o", "--output", help="Bundle directory to write (or .mlir file with --compile-to)."),
    target: str = typer.Option("wse3", help="wse3, wse2, mesh:WxH or a target .toml file."),
    dtype: str = typer.Option("fp16", help="Storage dtype: fp16, bf16 or fp32 (accumulation is fp32)."),
    seq_len: int = typer.Option(64, help="Prefill sequence length."),
    max_seq: Optional[int] = typer.Option(None, help="KV cache positions for decode (default: the model's context, at most 2048)."),
    compile_to: str = typer.Option("bundle", help="Stop after graph, kernel, placed or tile and write that IR."),
    attn_impl: str = typer.Option("sdpa", help="Attention implementation to trace: sdpa or eager."),
    config: Optional[Path] = typer.Option(None, help="Plan-only: a config.json instead of a checkpoint (needs --no-weights)."),
    no_weights: bool = typer.Option(False, help="Plan, place and estimate without materialising weights."),
    place_time: float = typer.Option(20.0, help="Placement time limit in seconds (deterministic)."),
    phase: str = typer.Option("both", help="Programs to emit: prefill, decode or both."),
    plan: str = typer.Option("latency", help="Grid planner: latency (optimise) or min-pes (smallest grids that fit)."),
    fold: int = typer.Option(1, help="Kernels of consecutive layers stacked on one rectangle of PEs, at most (1: every kernel on its own PEs; 0: the deepest stack that fits SRAM)."),
    accumulate: str = typer.Option("fp32", help="Linear layers' accumulators: fp32, or fp16 (fp16 FMACs, as WaferLLM)."),
    prefill_chunk: int = typer.Option(0, help="Prefill tokens per pipelined chunk (must divide --seq-len; 0: auto)."),
    mesh_fraction: float = typer.Option(0.7, help="Share of the mesh the planner may give kernels (the rest lets placement pack)."),
    prefill_logits: str = typer.Option("all", help="Prefill logits for every position (all) or only the last, as serving needs (last)."),
    print_ir_after_all: bool = typer.Option(False, help="Print the IR after every pass."),
    dump_ir_to: Optional[Path] = typer.Option(None, help="Write the IR after every pass into this directory."),
    report: bool = typer.Option(True, help="Write report.html into the bundle."),
) -> None:
    """Compile a checkpoint into a bundle: tile programs, weights, placement, report."""
    from wsc.driver import CompileOptions, Pipeline

    try:
        if checkpoint is not None and config is not None:
            raise UsageError("give either a checkpoint or --config, not both")
        opts = CompileOptions(
            checkpoint=checkpoint, output=output, target=target, dtype=dtype, seq_len=seq_len,
            max_seq=max_seq, compile_to=compile_to, attn_implementation=attn_impl,
            config=config, no_weights=no_weights or config is not None, place_time=place_time,
            phase=phase, plan=plan, fold=fold, accumulate=accumulate,
            prefill_chunk=prefill_chunk, mesh_fraction=mesh_fraction,
            prefill_logits=prefill_logits,
            print_ir_after_all=print_ir_after_all, dump_ir_to=dump_ir_to, report=report,
        )
        t0 = time.perf_counter()
        with err.status("compiling") as status:
            def progress(stage: str) -> None:
                status.update(f"[bold]{escape(stage)}[/] ({time.perf_counter() - t0:.1f}s)")
                err.print(f"  [dim]{time.perf_counter() - t0:6.1f}s[/] {escape(stage)}", highlight=False)

            result = Pipeline(opts, progress).run()
        what = "bundle" if result.stage == "bundle" else f"{result.stage} IR"
        err.print(f"[green]wrote {what}[/] {escape(str(result.output))} in {time.perf_counter() - t0:.1f}s"
                  + (f": {result.kernels} kernels on {result.pes} PEs" if result.kernels else ""),
                  highlight=False)
    except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - every error gets one message
        _fail(e)


# --- simulate ---------------------------------------------------------------------------


def _parse_tokens(text: str) -> list[int]:
    items = [x.strip() for x in text.split(",")]
    if not all(re.fullmatch(r"[0-9]+", x) for x in items):
        raise UsageError(f"--tokens takes token ids separated by commas, got {text!r}",
                         hint="e.g. --tokens 17,4,250 (non-negative integers)")
    return [int(x) for x in items]


@app.command("simulate")
def simulate_cmd(
    bundle: Path = typer.Argument(..., help="Bundle directory written by `wsc compile`."),
    tokens: Optional[str] = typer.Option(None, help="Prompt token ids, comma separated (default: random, --seed)."),
    seed: int = typer.Option(0, help="Seed for the random prompt."),
    check: bool = typer.Option(False, help="Compare with PyTorch eager on the source checkpoint."),
    generate: int = typer.Option(0, help="Greedy decode steps after prefill."),
    estimate_only: bool = typer.Option(False, help="Report modeled latency without moving data."),
    checkpoint: Optional[Path] = typer.Option(None, help="Checkpoint for --check (default: the one the bundle was compiled from)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the results as JSON."),
    trace: Optional[Path] = typer.Option(None, help="Write a Chrome/Perfetto trace: prefill, then one decode step (compute and fabric on separate tracks)."),
    prompt_len: Optional[int] = typer.Option(None, help="Prompt tokens, 1 to the compiled --seq-len (default: all of them; random ids, or what --estimate-only models)."),
    requests: Optional[int] = typer.Option(None, help="Model 1, 2, 4, ... up to this many requests in flight (continuous batching): per-request and aggregate tokens/s, time to first token; with --check and --generate, each request's tokens are checked."),
    compare_layers: bool = typer.Option(False, help="With --check: compare every kernel's output with torch's activation at its module path and name the first one over tolerance."),
) -> None:
    """Run a bundle on the simulated wafer; optionally check it against PyTorch."""
    try:
        from wsc.outputs import check_file_output, write_text
        from wsc.simulate import SimulateOptions, simulate

        opts = SimulateOptions(
            bundle=bundle, tokens=None if tokens is None else _parse_tokens(tokens), seed=seed,
            check=check, generate=generate, estimate_only=estimate_only, checkpoint=checkpoint,
            trace=trace, prompt_len=prompt_len, compare_layers=compare_layers,
            requests=requests,
        )
        opts.validate()  # before any note about the options
        for path, option in ((json_out, "--json"), (trace, "--trace")):
            if path is not None:
                check_file_output(path, option)
        if trace is not None:
            trace.parent.mkdir(parents=True, exist_ok=True)  # the trace writer expects it
        if estimate_only:
            _note_ignored(check=check, tokens=tokens is not None, trace=trace is not None)
        with err.status("simulating"):
            res = simulate(opts)
        _print_sim(res)
        if json_out is not None:
            write_text(json_out, json.dumps(res, indent=1, sort_keys=True) + "\n", "--json")
            err.print(f"[green]wrote[/] {escape(str(json_out))}", highlight=False)
        if res.get("passed") is False:
            raise typer.Exit(3)
    except typer.Exit:
        raise
    except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001
        _fail(e)


def _note_ignored(**given: bool) -> None:
    """--estimate-only moves no data: say which of the options given it has no use for."""
    names = [f"--{name}" for name, on in given.items() if on]
    if names:
        err.print(f"note: --estimate-only models timing without running the programs; it "
                  f"ignores {' and '.join(names)}", highlight=False)


def _print_sim(res: dict) -> None:
    lines = [f"prefill of {res['prompt_len']} tokens: {res['cycles']:.0f} cycles = "
             f"{res['latency_s'] * 1e3:.3f} ms modeled (simulated in {res['sim_wall_s']:.2f}s)"]
    if "tokens_per_s" in res:
        lines.append(f"decode: time to first token {res['ttft_s'] * 1e3:.3f} ms, "
                     f"{res['tokens_per_s']:.0f} tokens/s modeled")
    if "rel_l2_err" in res:
        ok = "[green]PASS[/]" if res.get("passed") else "[red]FAIL[/]"
        lines.append(f"numerics vs torch: rel L2 {res['rel_l2_err']:.2e}, max abs "
                     f"{res['max_abs_err']:.2e}, top-1 agreement {res['top1_agree']:.3f}  {ok}")
    if "tokens_match" in res:
        lines.append(f"generated tokens match torch's greedy decoding: {res['tokens_match']}")
    if "layers" in res:
        lines.append(_layers_line(res))
    if "requests_check" in res:
        ok = res["requests_check"]["tokens_match"]
        lines.append(f"{len(ok)} requests, decode steps interleaved: {sum(ok)} of them generate "
                     f"torch's greedy tokens")
    if "requests" in res:
        lines += _requests_lines(res["requests"])
    for line in lines:
        out.print(line, highlight=False, soft_wrap=True)  # a result line stays one line


def _requests_lines(q: dict) -> list[str]:
    t = q["targets"]
    lines = [f"requests in flight (prompt {q['prompt_len']} tokens, decode from KV position "
             f"{q['decode_position']}; the plan holds the KV caches of "
             f"{'any number of' if q['kv_capacity'] is None else q['kv_capacity']} requests):",
             f"{'requests':>8} {'tok/s per request':>18} {'aggregate tok/s':>16} {'TTFT':>11} "
             f"{'decode stall':>13} {'bound per request':>17}  KV fits"]
    for r in q["rows"]:
        lines.append(f"{r['requests']:>8} {r['per_request_tokens_per_s']:>18,.0f} "
                     f"{r['aggregate_tokens_per_s']:>16,.0f} {r['ttft_s'] * 1e3:>8.3f} ms "
                     f"{r['decode_stall_s'] * 1e3:>10.3f} ms {1 / r['bound_period_s']:>11,.0f} tok/s"
                     f"  {'yes' if r['kv_fits'] else 'no: replan'}")
    lines.append(f"users served at >= {t['per_request_tokens_per_s']:,.0f} tok/s each and < "
                 f"{t['ttft_s'] * 1e3:.0f} ms to first token: {q['users_served']}"
                 + (f" ({q['users_served_if_kv_fit']} if the plan held their KV caches)"
                    if q["users_served_if_kv_fit"] != q["users_served"] else ""))
    return lines


def _layers_line(res: dict) -> str:
    tol = res["layer_tolerance"]
    done = [r for r in res["layers"] if "rel_l2_err" in r]
    head = f"per-kernel numerics: {len(done)} of {len(res['layers'])} kernels compared with torch"
    bad = res.get("first_bad_kernel")
    if bad is None:
        worst = max(done, key=lambda r: r["rel_l2_err"], default=None)
        return head + (f", all within rel L2 {tol:g} (largest {worst['rel_l2_err']:.2e}, "
                       f"{worst['kernel']})" if worst else "")
    row = next(r for r in res["layers"] if r["kernel"] == bad)
    return (head + f"; first over rel L2 {tol:g}: [red]{escape(bad)}[/] (rel L2 "
            f"{row['rel_l2_err']:.2e} against the {escape(row['reference'])})")


# --- report -----------------------------------------------------------------------------


@app.command("report")
def report_cmd(
    bundle: Path = typer.Argument(..., help="Bundle directory."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="HTML file (default: BUNDLE with .html)."),
    sim: Optional[Path] = typer.Option(None, "--sim", help="A `wsc simulate --json` result of this bundle: adds its numerics to the summary."),
    png: Optional[Path] = typer.Option(None, "--png", help="Also write a PNG figure of the mesh view, with title, labels and legend."),
) -> None:
    """Write the placement report of a bundle as one self-contained HTML file."""
    try:
        from wsc.outputs import check_file_output
        from wsc.report import timed_report

        for path, option in ((output, "-o"), (png, "--png")):
            if path is not None:
                check_file_output(path, option)
        try:
            path, seconds = timed_report(bundle, output, sim=sim, png=png)
        except OSError as e:  # the checks above cannot see a full disk
            raise WscError(f"cannot write the report: {e.filename or ''} {e.strerror or e}") from None
        size = path.stat().st_size
        err.print(f"[green]wrote[/] {escape(str(path))} ({size / 1e6:.2f} MB in {seconds:.1f}s)"
                  + (f" and {escape(str(png))}" if png is not None else ""), highlight=False)
    except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001
        _fail(e)


# --- opt --------------------------------------------------------------------------------


@app.command("opt")
def opt_cmd(
    file: Path = typer.Argument(..., help="Textual IR (.mlir)."),
    passes: str = typer.Option("", "-p", "--passes", help="Pass pipeline, e.g. 'canonicalize,recognize-attention'."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write the result here (default: stdout)."),
    print_ir_after_all: bool = typer.Option(False, help="Print the IR after every pass."),
) -> None:
    """Run a pass pipeline on a textual IR file."""
    try:
        from wsc.opt import run_opt

        text = run_opt(file, passes, print_ir_after_all=print_ir_after_all)
        if output is None:
            sys.stdout.write(text)
        else:
            from wsc.outputs import write_text

            write_text(output, text, "-o")
    except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001
        _fail(e)


# --- demo -------------------------------------------------------------------------------


@app.command("demo")
def demo_cmd(
    out_dir: Path = typer.Option(Path("out/demo"), "--out", help="Where the checkpoint, bundle and report go."),
    target: str = typer.Option("mesh:32x32", help="Target to compile for."),
) -> None:
    """Build a small code model, compile it, simulate it with the numerics check, write the report."""
    try:
        from wsc.demo import run_demo

        run_demo(out_dir, target, out, err)
    except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001
        _fail(e)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
