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
def _model(checkpoint: str, attn_implementation: str):
    return load_checkpoint(Path(checkpoint), attn_implementation=attn_implementation).model


def reference_logits(checkpoint: str | Path, ids: np.ndarray, *,
                     attn_implementation: str = "eager") -> np.ndarray:
    """`[S, vocab]` fp32 logits of torch eager for one sequence of token ids."""
    model = _model(str(checkpoint), attn_implementation)
    with torch.no_grad():
        x = torch.as_tensor(np.asarray(ids, dtype=np.int64).reshape(1, -1))
        out = model(input_ids=x, use_cache=False).logits
    return out[0].float().numpy()


def reference_generate(checkpoint: str | Path, ids: np.ndarray, steps: int, *,
                       attn_implementation: str = "eager") -> list[int]:
    """`transformers` greedy generation (`do_sample=False`) of `steps` new tokens."""
    model = _model(str(checkpoint), attn_implementation)
    x = torch.as_tensor(np.asarray(ids, dtype=np.int64).reshape(1, -1))
    with torch.no_grad():
        out = model.generate(
            input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=steps,
            min_new_tokens=steps, do_sample=False, num_beams=1, pad_token_id=0,
        )
    return [int(t) for t in out[0, x.shape[1]:]]
