"""`wsc simulate --requests R`: many requests in flight through the pipeline (issue 10).

For request counts r = 1, 2, 4, ... up to R, the simulator's scheduler runs r requests' decode
steps interleaved round-robin over the compiled decode program (runtime_sim/serving.py, where
the model and the bound T(r) >= max(L, r * B) are documented) and measures, in steady state:

- per-request tokens/s: 1 / (cycles between two tokens of one request);
- aggregate tokens/s: r times that;
- time to first token of a new request arriving while r - 1 others decode (prefill first:
  the prompt streams through the pipeline behind the tokens in flight), and how long the
  decoders stall meanwhile (the longest gap between two of their tokens).

All of it is the cycle model's (no data moves); `--check` adds a functional run of R requests
with distinct prompts whose greedy tokens must each equal torch's greedy generation.
"""

from __future__ import annotations

from wsc.errors import UsageError
from wsc.runtime_sim import serving
from wsc.runtime_sim.simulator import Simulator


def _needs_both(sim: Simulator) -> None:
    missing = [p for p in ("prefill", "decode") if p not in sim.programs]
    if missing:
        raise UsageError(f"--requests runs prefill and decode; this bundle has no "
                         f"{' or '.join(missing)} program", hint="recompile with --phase both")

ROUNDS = 4  # decode steps per request in a timed run: one to fill the pipeline, three measured
TARGET_TOKENS_PER_S = 1000.0  # real-time code completion, per request
TARGET_TTFT_S = 0.2


def request_counts(most: int) -> list[int]:
    """1, 2, 4, ... below `most`, and `most`."""
    out, r = [], 1
    while r < most:
        out.append(r)
        r *= 2
    return out + [most]


def requests_table(sim: Simulator, most: int, prompt_len: int, counts: list[int] | None = None,
                   progress=None) -> dict:
    """The requests curve of an estimate-only simulator (JSON-able)."""
    _needs_both(sim)
    m = sim.manifest
    hz = sim.target.clock_hz
    pos = max(0, min(prompt_len, m.max_seq - ROUNDS))  # the decode steps' first KV position
    one = sim.run("decode", None, pos)
    L, B, busiest = serving.one_step_bound(one)
    capacity = serving.kv_capacity(sim)
    rows = []
    for r in counts or request_counts(most):
        timed = serving.decode_timing(sim, r, pos, ROUNDS)
        period = timed.period()
        ttft, gap = serving.ttft_under_load(sim, r, pos, prompt_len)
        row = {
            "requests": r,
            "period_s": period / hz,
            "per_request_tokens_per_s": hz / period if period else 0.0,
            "aggregate_tokens_per_s": r * hz / period if period else 0.0,
            "bound_period_s": max(L, r * B) / hz,
            "ttft_s": ttft / hz,
            "decode_stall_s": gap / hz,
            "kv_fits": capacity is None or r <= capacity,
        }
        row["meets_targets"] = (row["per_request_tokens_per_s"] >= TARGET_TOKENS_PER_S
                                and row["ttft_s"] < TARGET_TTFT_S)
        rows.append(row)
        if progress is not None:
            progress(row)
    served = [row["requests"] for row in rows if row["meets_targets"] and row["kv_fits"]]
    unbounded = [row["requests"] for row in rows if row["meets_targets"]]
    return {
        "rows": rows, "prompt_len": prompt_len, "decode_position": pos, "rounds": ROUNDS,
        "kv_capacity": capacity, "step_latency_s": L / hz, "busiest_region": busiest,
        "busiest_region_s": B / hz,
        "targets": {"per_request_tokens_per_s": TARGET_TOKENS_PER_S, "ttft_s": TARGET_TTFT_S},
        "users_served": max(served, default=0),
        "users_served_if_kv_fit": max(unbounded, default=0),
        "model": ("requests' decode steps interleaved round-robin through the decode program's "
                  "regions on the simulator's scheduler (closed loop: a request's next token "
                  "is sent when its logits arrive); bound T(R) >= max(L, R*B); TTFT of a prompt "
                  "arriving while R-1 others decode, admitted before their next round"),
    }


def check_requests(sim: Simulator, checkpoint, prompts: list, generate: int) -> dict:
    """Functional: the requests' decode steps interleaved (KV caches swapped per request);
    each request's greedy tokens against torch's greedy generation of its own prompt."""
    from wsc.golden import reference_generate

    _needs_both(sim)
    served = serving.serve(sim, prompts, generate)
    out = {"tokens": [], "reference_tokens": [], "tokens_match": []}
    for r, ids in enumerate(prompts):
        want = reference_generate(checkpoint, ids, generate)
        out["tokens"].append(served.tokens[r])
        out["reference_tokens"].append(want)
        out["tokens_match"].append(served.tokens[r] == want)
    out["interleaved"] = ("decode steps of all requests interleaved round-robin in one run of "
                          "the scheduler; each region swaps in the KV cache of the request whose "
                          "step it runs (no cycles charged); prefills run one after the other")
    return out
