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
    average wavelets per link, L the longest path in hops and D the dependent depth. A
    `levels`-level tree over `n` PEs is `levels` chain reductions over groups of
    `g = ceil(n ** (1/levels))`; an all-reduce adds a multicast broadcast back over the line
    (`2ρ + (n-1)*h + wavelets`).
  * a channel between regions: `2ρ + hops*h + ceil(b / (lanes * Bw)) * contention`, where
    `lanes` is the number of parallel links the transfer spreads over (the smaller of the two
    regions' facing sides) and `contention >= 1` is the busiest link's load on the route
    divided by this transfer's bytes (from placement's routing).
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

    def matmul(self, m: int, k: int, n: int, dtype: str) -> int:
        wf = self.target.fmacs_per_cycle(dtype)
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

    def shift(self, nbytes: int, n: int, *, interleaved: bool) -> int:
        if n <= 1:
            return 0
        hops = 1 if n == 2 else (2 if interleaved else n - 1)
        return self.stream(nbytes, hops)

    def chain_reduce(self, nbytes: int, n: int, stride: int = 1) -> int:
        """HPDC'24 reduce of `n` PEs spaced `stride` hops apart, pipelined along a chain."""
        if n <= 1:
            return 0
        t = self.target
        w = self.wavelets(nbytes) / self.target.link_wavelets_per_cycle
        longest = (n - 1) * stride * t.hop_latency_cycles
        contention = w  # every link of the chain carries the full message once
        avg = w  # E/N: each of the (n-1)*stride links carries w wavelets
        depth = n - 1
        return int(math.ceil(max(contention, avg + longest) + (2 * t.ramp_latency_cycles + 1) * depth))

    def tree_reduce(self, nbytes: int, n: int, levels: int) -> int:
        if n <= 1:
            return 0
        levels = max(1, levels)
        g = max(2, math.ceil(n ** (1.0 / levels)))
        total, span, remaining = 0, 1, n
        for _ in range(levels):
            if remaining <= 1:
                break
            group = min(g, remaining)
            total += self.chain_reduce(nbytes, group, span)
            span *= group
            remaining = math.ceil(remaining / group)
        return total

    def broadcast(self, nbytes: int, n: int) -> int:
        if n <= 1:
            return 0
        return self.stream(nbytes, n - 1)

    def allreduce(self, nbytes: int, n: int, levels: int) -> int:
        return self.tree_reduce(nbytes, n, levels) + self.broadcast(nbytes, n)

    def seconds(self, cycles: float) -> float:
        return cycles / self.target.clock_hz
