"""The golden reference: PyTorch eager on the same checkpoint (DESIGN §9).

This is the only place outside the frontend where torch runs a model, and it only ever
produces reference numbers to compare the simulator's against.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from wsc.frontend import load_checkpoint


@lru_cache(maxsize=4)
def _loaded(checkpoint: str, attn_implementation: str):
    return load_checkpoint(Path(checkpoint), attn_implementation=attn_implementation)


def checkpoint_digest(checkpoint: str | Path) -> str:
    """The digest the frontend computes for `checkpoint` (what a bundle's manifest records)."""
    return _loaded(str(checkpoint), "eager").digest


def reference_logits(checkpoint: str | Path, ids: np.ndarray, *,
                     attn_implementation: str = "eager") -> np.ndarray:
    """`[S, vocab]` fp32 logits of torch eager for one sequence of token ids."""
    model = _loaded(str(checkpoint), attn_implementation).model
    with torch.no_grad():
        x = torch.as_tensor(np.asarray(ids, dtype=np.int64).reshape(1, -1))
        out = model(input_ids=x, use_cache=False).logits
    return out[0].float().numpy()


def reference_generate(checkpoint: str | Path, ids: np.ndarray, steps: int, *,
                       attn_implementation: str = "eager") -> list[int]:
    """Plain greedy decoding of `steps` tokens, by the simulator's rule: each token is the
    argmax of the last position's logits and is fed back; nothing stops early, EOS included.

    Not `generate`: its stopping rules (EOS, and `min_new_tokens`, which holds EOS back by
    masking its logit) would make the reference differ from a correct wafer run."""
    model = _loaded(str(checkpoint), attn_implementation).model
    seq = torch.as_tensor(np.asarray(ids, dtype=np.int64).reshape(1, -1))
    tokens: list[int] = []
    with torch.no_grad():
        for _ in range(steps):
            logits = model(input_ids=seq, use_cache=False).logits[0, -1]
            tokens.append(int(torch.argmax(logits)))
            seq = torch.cat([seq, seq.new_tensor([[tokens[-1]]])], dim=1)
    return tokens


def reference_activations(checkpoint: str | Path, ids: np.ndarray,
                          wanted: list[tuple[str, str]], *,
                          attn_implementation: str = "eager") -> dict[tuple[str, str], np.ndarray]:
    """Torch eager's activations at module paths, by forward hooks: for each (path, "input")
    the module's first input, for each (path, "output") its output (the first element of a
    tuple), as `[S, features]` fp32. A path the model lacks, or a module called more than
    once in the forward pass (its activation would be ambiguous), is left out."""
    model = _loaded(str(checkpoint), attn_implementation).model
    modules = dict(model.named_modules())
    got: dict[tuple[str, str], list] = {}
    handles = []

    def first_tensor(x, kwargs=None):
        if isinstance(x, torch.Tensor):
            return x
        for v in list(x if isinstance(x, (tuple, list)) else ()) + list((kwargs or {}).values()):
            if isinstance(v, torch.Tensor):
                return v
        return None

    for path, side in wanted:
        mod = modules.get(path)
        if mod is None:
            continue
        key = (path, side)
        if side == "input":
            def pre(m, args, kwargs, key=key):
                got.setdefault(key, []).append(first_tensor(args, kwargs))
            handles.append(mod.register_forward_pre_hook(pre, with_kwargs=True))
        else:
            def post(m, args, out, key=key):
                got.setdefault(key, []).append(first_tensor(out))
            handles.append(mod.register_forward_hook(post))
    try:
        with torch.no_grad():
            x = torch.as_tensor(np.asarray(ids, dtype=np.int64).reshape(1, -1))
            model(input_ids=x, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    out = {}
    for key, vals in got.items():
        if len(vals) != 1 or vals[0] is None:
            continue
        v = vals[0].detach().float()
        out[key] = v.reshape(-1, v.shape[-1]).numpy()
    return out
