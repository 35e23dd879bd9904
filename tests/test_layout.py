"""Layouts: scatter and gather are inverse, rotations are tracked, padding is zero."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wsc.ir.layout import REPLICATED, DimMap, Layout, skewed, split_cols, split_rows


@st.composite
def layouts(draw):
    m, n = draw(st.integers(1, 20)), draw(st.integers(1, 20))
    R, C = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    choices = [REPLICATED, split_rows(R), split_rows(R, cyclic=True), split_cols(C)]
    if R == C:
        choices.append(skewed(R))
    rows, cols = draw(st.sampled_from(choices)), draw(st.sampled_from(choices))
    lay = Layout((m, n), (R, C), rows, cols)
    try:
        lay.check_complete()
    except ValueError:
        lay = Layout((m, n), (R, C))
    return lay


@settings(max_examples=200, deadline=None)
@given(layouts(), st.integers(-7, 7), st.integers(-7, 7))
def test_scatter_gather_round_trip_under_rotation(lay, dr, dc):
    g = np.random.default_rng(0).standard_normal(lay.shape)
    tiles = lay.scatter(g)
    assert tiles.shape == (*lay.grid, *lay.tile)
    rot = (dr % lay.grid[0], dc % lay.grid[1])
    moved = np.roll(tiles, rot, axis=(0, 1))
    np.testing.assert_array_equal(lay.gather(moved, rot), g)
    gi, gj = lay.global_index(0, rot), lay.global_index(1, rot)
    valid = (gi < lay.shape[0])[..., :, None] & (gj < lay.shape[1])[..., None, :]
    assert (moved[~valid] == 0).all()
    ref = g[np.minimum(gi, lay.shape[0] - 1)[..., :, None], np.minimum(gj, lay.shape[1] - 1)[..., None, :]]
    np.testing.assert_array_equal(np.where(valid, moved, 0), np.where(valid, ref, 0))


def test_cannon_skew_gives_each_pe_the_blocks_cannon_needs():
    P = 3
    a = Layout((6, 6), (P, P), split_rows(P), skewed(P))
    b = Layout((6, 6), (P, P), skewed(P), split_cols(P))
    ar, ak = a.blocks()
    bk, bc = b.blocks()
    r, c = np.indices((P, P))
    assert (ar == r).all() and (bc == c).all() and (ak == bk).all() and (ak == (r + c) % P).all()


def test_incomplete_layouts_are_rejected():
    with pytest.raises(ValueError):
        DimMap(parts=3)  # split without a PE coefficient
    lay = Layout((4, 4), (1, 2), DimMap(4, 0, 1), REPLICATED)  # 4 blocks on 2 columns
    with pytest.raises(ValueError, match="on no PE"):
        lay.check_complete()
