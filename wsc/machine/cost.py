"""The cycle model (DESIGN §8): what every tile op costs on the target, from first principles.

Every number comes from the target's fields (`wsc.machine.target.Target`); nothing here is fitted to
a published result. Symbols used below:

    Wf  FMACs per cycle of a dot product (`fmac_mixed` for fp16/bf16 operands accumulating
        in fp32, `fmac_fp32` for fp32)
    We  elements per cycle of an elementwise vector instruction (`fmac_fp16` or `fmac_fp32`)
    O   per-instruction overhead (`instruction_overhead_cycles`): DSD setup and issue
    T   cycles per element of a transcendental (`transcendental_cycles`): exp, tanh, rsqrt,
        division... run as a software polynomial, one element at a time
    h   hop latency, ρ ramp latency (PE <-> router), Bw link bytes per cycle
        (`wavelet_bytes * link_wavelets_per_cycle`)

Compute (one PE; all PEs of a region run the same instruction stream, so a region's time is
one PE's time):
  * matmul `[m,k] @ [k,n]`, in the cheaper of two loop orders: `k` rank-1 updates of the
    `m x n` accumulator tile, one 2-D DSD instruction each, `k * (O + ceil(m*n / Wf))`; or
    `m*n` dot products of length `k`, `m*n * (O + ceil(k / Wf))` (better for a single query
    row against a few keys). The SIMD width is taken as the sustained rate of the instruction.
  * elementwise on `n` elements: `O + max(ceil(n / We), read_bytes / Br, write_bytes / Bw_mem)`
    with the memory ports (2x64-bit reads, 1x64-bit write per cycle), plus `T * n` if the
    function is transcendental.
  * reductions, copies and fills: the same elementwise formula over the bytes they touch.

Fabric (a region's PEs act in parallel; a collective costs its slowest line):
  * a stream of `b` bytes over `d` hops: `2ρ + d*h + ceil(b / Bw)` — the wavelets pipeline
    behind the head, which pays both ramps and the hops once.
  * shift by one along a ring of `n` PEs: the stream above with `d = 1`, or `d = 2` on an
    interleaved ring (logical neighbours sit at most two physical hops apart and the two
    directions of each link carry different logical edges, so there is no contention); a
    plain ring pays `d = n - 1` for its wrap-around link.
  * reduce trees follow Luczynski et al., "Near-Optimal Wafer-Scale Reduce" (HPDC'24):
    `T = max(C, E/N + L) + (2ρ + 1) * D` with C the wavelets on the busiest link, E/N the
    average wavelets per link, L the longest path in hops and D the dependent depth. The
    trees are centre-rooted, as WaferLLM's MeshGEMV (OSDI'25) builds them: a `K`-level tree
    over a line of `n` PEs cuts it into groups of `g = ceil(n ** (1/K))`; each group streams
    its partials from both ends towards the PE in its middle, adding as they pass (so every
    link carries the message once: C = E/N = w, and L = D = ceil((g - 1) / 2) steps of the
    level's spacing); the next level does the same over the group roots, spaced `g` apart,
    and the last root — the middle of the line — multicasts the result back both ways
    (`2ρ + ceil((n - 1) / 2) * h + w`). Every phase (each level, and the broadcast) costs
    `task_activation_cycles` more: the fabric task every PE of the phase must be woken for
    and the DSDs it sets up. The number of levels is chosen per size (`tree_levels`): the
    cheapest from 1 to `MAX_LEVELS`.
  * a transfer between regions (`transfer`): `2ρ + (hops + traverse) * h + ceil(max(lane,
    distinct / lanes) / Bw * contention)`. The receiver needs every block on every PE that
    holds it: data enters a region through one side and is multicast along each line of PEs
    behind it (the receiver's rows: placement puts every input port on a vertical side), so
    the line that must see the most distinct bytes (`lane`, from the receiver's layout) bounds
    the time, and so does the sender, which puts each distinct byte on the fabric once over
    its `lanes` facing links. `traverse` is the hops the stream runs inside the two regions
    (from the sender's far column to its edge, along the receiver's rows), `contention >= 1`
    the busiest link's load on the route over this transfer's bytes (placement's routing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from wsc.ir.attrs import DTYPE_BYTES
from wsc.machine.target import Target


def ceil_div(a: float, b: float) -> int:
    return int(math.ceil(a / b)) if a > 0 else 0


@dataclass(frozen=True)
class CostModel:
    target: Target

    # --- compute ------------------------------------------------------------------------

    def matmul(self, m: int, k: int, n: int, dtype: str, accumulate: str = "f32") -> int:
        wf = self.target.fmacs_per_cycle(dtype, accumulate)
        o = self.target.instruction_overhead_cycles
        return int(min(k * (o + ceil_div(m * n, wf)), m * n * (o + ceil_div(k, wf))))

    def elementwise(self, n: int, dtype: str, *, reads: int = 2, transcendental: bool = False,
                    out_dtype: str = "f32") -> int:
        """`n` elements reading `reads` operands of `dtype`, writing one of `out_dtype`."""
        t = self.target
        vec = ceil_div(n, t.simd_width(dtype))
        mem = max(
            ceil_div(n * reads * DTYPE_BYTES[dtype], t.mem_read_bytes_per_cycle),
            ceil_div(n * DTYPE_BYTES[out_dtype], t.mem_write_bytes_per_cycle),
        )
        extra = n * t.transcendental_cycles if transcendental else 0
        return int(t.instruction_overhead_cycles + max(vec, mem) + extra)

    def fill(self, nbytes: int) -> int:
        t = self.target
        return int(t.instruction_overhead_cycles + ceil_div(nbytes, t.mem_write_bytes_per_cycle))

    # --- fabric -------------------------------------------------------------------------

    @property
    def link_bytes_per_cycle(self) -> float:
        return self.target.wavelet_bytes * self.target.link_wavelets_per_cycle

    def wavelets(self, nbytes: int) -> int:
        return ceil_div(nbytes, self.target.wavelet_bytes)

    def stream(self, nbytes: int, hops: int, *, lanes: int = 1, contention: float = 1.0) -> int:
        t = self.target
        body = ceil_div(nbytes, lanes * self.link_bytes_per_cycle) * max(1.0, contention)
        return int(2 * t.ramp_latency_cycles + hops * t.hop_latency_cycles + math.ceil(body))

    def transfer(self, lane_bytes: int, distinct_bytes: int, lanes: int, hops: int, *,
                 traverse: int = 0, contention: float = 1.0) -> int:
        """A message between regions: the receiver's busiest line, or the sender's links."""
        t = self.target
        need = max(lane_bytes, ceil_div(distinct_bytes, max(1, lanes)))
        body = ceil_div(need, self.link_bytes_per_cycle) * max(1.0, contention)
        return int(2 * t.ramp_latency_cycles + (hops + traverse) * t.hop_latency_cycles
                   + math.ceil(body))

    def shift(self, nbytes: int, n: int, *, interleaved: bool) -> int:
        if n <= 1:
            return 0
        hops = 1 if n == 2 else (2 if interleaved else n - 1)
        return self.stream(nbytes, hops)

    def chain_to_centre(self, nbytes: int, n: int, stride: int = 1, step_cycles: float = 0) -> int:
        """HPDC'24 reduce of `n` PEs spaced `stride` hops apart, both halves streaming into the
        middle one; `step_cycles` is extra work each PE does before it can pass a partial on."""
        if n <= 1:
            return 0
        t = self.target
        w = self.wavelets(nbytes) / t.link_wavelets_per_cycle
        depth = math.ceil((n - 1) / 2)
        longest = depth * stride * t.hop_latency_cycles
        # every link of either half carries the message once: C = E/N = w
        per_step = 2 * t.ramp_latency_cycles + 1 + step_cycles
        return int(math.ceil(w + longest + per_step * depth + t.task_activation_cycles))

    def tree_reduce(self, nbytes: int, n: int, levels: int, step_cycles: float = 0) -> int:
        """A `levels`-level centre-rooted tree over a line of `n` PEs."""
        total = 0
        for group, stride in tree_phases(n, levels):
            total += self.chain_to_centre(nbytes, group, stride, step_cycles)
        return total

    def broadcast(self, nbytes: int, n: int) -> int:
        """The root in the middle of the line multicasts to both ends."""
        if n <= 1:
            return 0
        return self.stream(nbytes, math.ceil((n - 1) / 2)) + int(self.target.task_activation_cycles)

    def allreduce(self, nbytes: int, n: int, levels: int, step_cycles: float = 0) -> int:
        return self.tree_reduce(nbytes, n, levels, step_cycles) + self.broadcast(nbytes, n)

    def tree_levels(self, nbytes: int, n: int, step_cycles: float = 0) -> int:
        """The cheapest number of tree levels for an all-reduce of `nbytes` over `n` PEs."""
        costs = [(self.allreduce(nbytes, n, k, step_cycles), k) for k in range(1, MAX_LEVELS + 1)]
        return min(costs)[1]

    def seconds(self, cycles: float) -> float:
        return cycles / self.target.clock_hz


MAX_LEVELS = 4


def tree_phases(n: int, levels: int) -> list[tuple[int, int]]:
    """(group size, spacing in PEs) of each level of a `levels`-level tree over `n` PEs."""
    if n <= 1:
        return []
    g = max(2, math.ceil(n ** (1.0 / max(1, levels))))
    out, stride, remaining = [], 1, n
    for _ in range(max(1, levels)):
        if remaining <= 1:
            break
        group = min(g, remaining)
        out.append((group, stride))
        stride *= group
        remaining = math.ceil(remaining / group)
    return out
