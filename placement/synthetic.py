"""Hand-built kernel graphs shaped like decoder LLMs, for tests and benchmarks.

They stand in for the partitioner's output until it exists: the roles, edges and byte weights
follow the real dataflow (bytes = S × features × 2 for fp16 activations), the rectangles are
plausible PE grids for a WSE-3 class mesh, not the partitioner's decisions.
"""

from __future__ import annotations

from wsc.placement.spec import EdgeSpec, KernelSpec


def aspect_variants(rows: int, cols: int) -> tuple[tuple[int, int], ...]:
    """The default grid, its transpose, and 2:1 stretches of about the same PE count."""
    out = [(rows, cols), (cols, rows)]
    if rows % 2 == 0:
        out += [(rows // 2, cols * 2)]
    if cols % 2 == 0:
        out += [(rows * 2, cols // 2)]
    seen: list[tuple[int, int]] = []
    for s in out:
        if s not in seen:
            seen.append(s)
    return tuple(seen)


def _k(name: str, kind: str, grid: tuple[int, int], block: int | None = None, role: str = "") -> KernelSpec:
    return KernelSpec(name, kind, aspect_variants(*grid), block, role)


def gpt2_graph(layers: int = 12, seq: int = 2048, d: int = 768, grids: dict[str, tuple[int, int]] | None = None):
    """GPT-2: wte → [ln_1, c_attn, attn, c_proj(+residual), ln_2, c_fc, mlp.c_proj(+residual)]×L → ln_f → lm_head."""
    g = {"wte": (48, 48), "ln_1": (48, 6), "attn.c_attn": (48, 48), "attn.attn": (48, 48),
         "attn.c_proj": (32, 32), "ln_2": (48, 6), "mlp.c_fc": (48, 64), "mlp.c_proj": (64, 48),
         "ln_f": (48, 6), "lm_head": (48, 48)}
    g.update(grids or {})
    act = seq * d * 2
    kernels = [_k("wte", "embedding", g["wte"])]
    edges: list[EdgeSpec] = []
    resid = "wte"  # the residual stream's producer
    for i in range(layers):
        h = f"h{i}."
        for role, kind in (("ln_1", "norm"), ("attn.c_attn", "linear"), ("attn.attn", "attention"),
                           ("attn.c_proj", "linear"), ("ln_2", "norm"), ("mlp.c_fc", "linear"),
                           ("mlp.c_proj", "linear")):
            kernels.append(_k(h + role, kind, g[role], i, role))
        edges += [
            EdgeSpec(resid, h + "ln_1", act),
            EdgeSpec(h + "ln_1", h + "attn.c_attn", act),
            EdgeSpec(h + "attn.c_attn", h + "attn.attn", 3 * act),
            EdgeSpec(h + "attn.attn", h + "attn.c_proj", act),
            EdgeSpec(resid, h + "attn.c_proj", act),  # residual add in c_proj's epilogue
            EdgeSpec(h + "attn.c_proj", h + "ln_2", act),
            EdgeSpec(h + "ln_2", h + "mlp.c_fc", act),
            EdgeSpec(h + "mlp.c_fc", h + "mlp.c_proj", 4 * act),
            EdgeSpec(h + "attn.c_proj", h + "mlp.c_proj", act),  # residual add
        ]
        resid = h + "mlp.c_proj"
    kernels += [_k("ln_f", "norm", g["ln_f"]), _k("lm_head", "linear", g["lm_head"])]
    edges += [EdgeSpec(resid, "ln_f", act), EdgeSpec("ln_f", "lm_head", act)]
    return kernels, edges


def llama_graph(layers: int = 32, seq: int = 2048, d: int = 4096, kv: int = 1024, ff: int = 14336,
                grids: dict[str, tuple[int, int]] | None = None):
    """Llama-3-8B-shaped: embed → [ln_1, q, k, v, attn, o(+res), ln_2, gate_up, down(+res)]×L → norm → lm_head."""
    g = {"embed": (96, 96), "ln_1": (56, 4), "q_proj": (48, 48), "k_proj": (24, 24),
         "v_proj": (24, 24), "attn": (48, 48), "o_proj": (48, 48), "ln_2": (56, 4),
         "gate_up": (80, 80), "down_proj": (56, 56), "norm": (56, 4), "lm_head": (96, 96)}
    g.update(grids or {})
    act, kva, ffa = seq * d * 2, seq * kv * 2, seq * ff * 2
    kernels = [_k("embed", "embedding", g["embed"])]
    edges: list[EdgeSpec] = []
    resid = "embed"
    roles = (("ln_1", "norm"), ("q_proj", "linear"), ("k_proj", "linear"), ("v_proj", "linear"),
             ("attn", "attention"), ("o_proj", "linear"), ("ln_2", "norm"), ("gate_up", "linear"),
             ("down_proj", "linear"))
    for i in range(layers):
        h = f"l{i}."
        for role, kind in roles:
            kernels.append(_k(h + role, kind, g[role], i, role))
        edges += [
            EdgeSpec(resid, h + "ln_1", act),
            EdgeSpec(h + "ln_1", h + "q_proj", act),
            EdgeSpec(h + "ln_1", h + "k_proj", act),
            EdgeSpec(h + "ln_1", h + "v_proj", act),
            EdgeSpec(h + "q_proj", h + "attn", act),
            EdgeSpec(h + "k_proj", h + "attn", kva),
            EdgeSpec(h + "v_proj", h + "attn", kva),
            EdgeSpec(h + "attn", h + "o_proj", act),
            EdgeSpec(resid, h + "o_proj", act),
            EdgeSpec(h + "o_proj", h + "ln_2", act),
            EdgeSpec(h + "ln_2", h + "gate_up", act),
            EdgeSpec(h + "gate_up", h + "down_proj", ffa),
            EdgeSpec(h + "o_proj", h + "down_proj", act),
        ]
        resid = h + "down_proj"
    kernels += [_k("norm", "norm", g["norm"]), _k("lm_head", "linear", g["lm_head"])]
    edges += [EdgeSpec(resid, "norm", act), EdgeSpec("norm", "lm_head", act)]
    return kernels, edges
