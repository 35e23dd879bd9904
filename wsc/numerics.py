"""Comparing logits (DESIGN §9): max-abs error, relative L2 error, top-1 agreement."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Agreement:
    max_abs_err: float
    rel_l2_err: float
    top1_agree: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def compare(got: np.ndarray, ref: np.ndarray) -> Agreement:
    got = np.asarray(got, dtype=np.float64).reshape(-1, np.shape(ref)[-1])
    ref = np.asarray(ref, dtype=np.float64).reshape(got.shape)
    diff = got - ref
    rel = float(np.linalg.norm(diff) / max(np.linalg.norm(ref), 1e-30))
    top1 = float(np.mean(np.argmax(got, axis=-1) == np.argmax(ref, axis=-1)))
    return Agreement(float(np.max(np.abs(diff))), rel, top1)
