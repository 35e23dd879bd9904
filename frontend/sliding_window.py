"""Sliding windows: how far back each attention layer of a transformers model looks.

A sliding-window layer (Mistral, StarCoder2, Phi-3, Qwen2/Qwen3 with `use_sliding_window`)
lets query q see keys q - window < k <= q. The traced prefill mask shows that window only when
the prompt is longer than it; a shorter prompt traces a plain causal mask, yet decode passes
the window as soon as generation is long enough. So the frontend reads the window the model
itself uses, as transformers' attention modules read it:

- a module attribute `sliding_window`, set per layer by models with mixed layer types (Qwen2
  and Qwen3 from `layer_types`, itself derived from `use_sliding_window` and
  `max_window_layers`): None on full-attention layers;
- otherwise the config's `sliding_window`, which Mistral, StarCoder2 and Phi-3 apply to every
  layer (their mask is built from it whatever `layer_types` says).

The importer checks this against the traced mask wherever the mask can show it (see
`Importer.mask_window`): the traced values win.
"""

from __future__ import annotations

from torch import nn


def attention_window(model: nn.Module | None, path: str) -> int | None:
    """The sliding window of the attention module at `path` (None: full causal attention,
    or no such module)."""
    if model is None or not path:
        return None
    try:
        module = model.get_submodule(path)
    except AttributeError:
        return None
    if hasattr(module, "sliding_window"):
        return _window(module.sliding_window)
    config = getattr(module, "config", None) or getattr(model, "config", None)
    return _window(getattr(config, "sliding_window", None))


def _window(value) -> int | None:
    """A configured window as a positive int; None, 0 or False mean none."""
    if value is None or isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return value
