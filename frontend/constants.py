"""What a folded constant is: causal masks, position ids and rotary tables, checked by value.

Tracing folds the shape-only parts of a model into constants. Three kinds matter to the wafer
program and must be recognised exactly, because the hardware regenerates them from positions
instead of storing them: causal attention masks (with or without a sliding window), the
positions 0..S-1 fed to a learned position embedding, and the rotary cos/sin tables. Each
predicate compares the folded values with the table the hardware will compute, so a model
variant that differs (a custom mask, a rope scaling the kernels do not implement) is refused
instead of silently miscompiled.
"""

from __future__ import annotations

import numpy as np

# Additive masks hide a key with the dtype's lowest value (transformers) or -inf.
_MASKED = float(np.finfo(np.float32).min) / 2


def is_positions(value: np.ndarray, seq_len: int) -> bool:
    """Integer positions 0..S-1 along the last dimension (any unit leading dims)."""
    return (np.issubdtype(value.dtype, np.integer) and value.ndim >= 1
            and value.shape[-1] == seq_len and value.size == seq_len
            and bool(np.array_equal(value.reshape(-1), np.arange(seq_len))))


def causal_visible(n: int, window: int | None = None) -> np.ndarray:
    """[n, n] keys each query sees: k <= q, and q - window < k with a sliding window (the
    query's own position counts, as in transformers' `sliding_window_overlay`)."""
    visible = np.tril(np.ones((n, n), dtype=bool))
    return visible if window is None else visible & ~np.tril(visible, -window)


def _visible(value: np.ndarray) -> np.ndarray | None:
    """[rows, n, n] visibility of a square mask (True or 0 = attend), or None when the
    values are no mask: booleans, or 0 and -inf / the float minimum."""
    if value.ndim < 2 or value.shape[-1] != value.shape[-2]:
        return None
    n = value.shape[-1]
    if value.dtype == np.bool_:
        return value.reshape(-1, n, n)
    if not np.issubdtype(value.dtype, np.floating):
        return None
    rows = value.reshape(-1, n, n)
    if not np.all((rows == 0) | (rows <= _MASKED)):
        return None
    return rows == 0


def _causal_window(value: np.ndarray) -> tuple[bool, int | None]:
    """(whether `value` is a causal mask, the sliding window its values show or None)."""
    visible = _visible(value)
    if visible is None:
        return False, None
    n = visible.shape[-1]
    window = int(visible[0, -1].sum())  # the last query sees exactly `window` keys
    window = None if window >= n else window
    return bool(window != 0 and np.all(visible == causal_visible(n, window))), window


def causal_mask_kind(value: np.ndarray) -> str | None:
    """`bool` for a boolean causal mask (True = attend), `additive` for 0 where a key is
    seen and -inf / the float minimum where it is not, else None. A sliding-window causal
    mask is one too (see `mask_window`)."""
    if not _causal_window(value)[0]:
        return None
    return "bool" if value.dtype == np.bool_ else "additive"


def mask_window(value: np.ndarray) -> int | None:
    """The sliding window a causal mask shows: how many keys, its own included, the query
    sees at most; None when every earlier key is seen (a window, if any, >= its length)."""
    is_causal, window = _causal_window(value)
    return window if is_causal else None


def rope_tables(inv_freq: np.ndarray, seq_len: int, scaling: float) -> dict[str, np.ndarray]:
    """cos and sin of `position * inv_freq`, halves concatenated, times `scaling`: [S, head_dim],
    computed in float32 as transformers' rotary embeddings do."""
    positions = np.arange(seq_len, dtype=np.float32)
    freqs = positions[:, None] * inv_freq.astype(np.float32)[None, :]
    emb = np.concatenate([freqs, freqs], axis=-1)
    s = np.float32(scaling)
    return {"cos": np.cos(emb) * s, "sin": np.sin(emb) * s}


def rope_table_kind(value: np.ndarray, inv_freq: np.ndarray, scaling: float) -> str | None:
    """`cos` or `sin` when `value` ([..., S, head_dim], unit leading dims) is that rotary
    table at positions 0..S-1, else None."""
    if value.ndim < 2 or not np.issubdtype(value.dtype, np.floating):
        return None
    seq_len, dim = value.shape[-2:]
    if dim != 2 * inv_freq.shape[-1] or value.size != seq_len * dim:
        return None
    got = value.reshape(seq_len, dim).astype(np.float32)
    for kind, table in rope_tables(inv_freq, seq_len, scaling).items():
        if np.allclose(got, table, rtol=1e-5, atol=1e-5 * max(1.0, abs(scaling))):
            return kind
    return None
