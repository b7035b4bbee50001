"""Bounds on rows of the outputs (`core.spec_bounds`): sound, and tighter than intervals."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import random_mlp

from milpverify.core.spec_bounds import SPEC_NODE, output_row_bounds, with_output_rows
from milpverify.errors import InvalidInputError


@pytest.mark.parametrize("seed", range(4))
def test_output_row_bounds_contain_sampled_values_and_beat_intervals(seed: int) -> None:
    rng = np.random.default_rng(seed)
    net, _ = random_mlp(rng, [4, 12, 12, 5])
    rows = rng.normal(size=(6, 5))
    x = rng.uniform(0.3, 0.7, size=4)
    box = (x - 0.2, x + 0.2)
    bounds, low, high = output_row_bounds(net, rows, box, "symbolic")
    points = rng.uniform(box[0], box[1], size=(2000, 4))
    values = net.forward(points) @ rows.T
    assert np.all(values >= low[None] - 1e-9) and np.all(values <= high[None] + 1e-9)
    # interval arithmetic on the outputs' own bounds is never tighter
    y_lo, y_hi = bounds.flat(net.output)
    interval_low = np.where(rows > 0, rows * y_lo, rows * y_hi).sum(axis=1)
    interval_high = np.where(rows > 0, rows * y_hi, rows * y_lo).sum(axis=1)
    assert np.all(low >= interval_low - 1e-9) and np.all(high <= interval_high + 1e-9)
    assert np.any(high - low < interval_high - interval_low - 1e-6)


def test_with_output_rows_computes_rows_plus_offset_and_refuses_bad_rows() -> None:
    rng = np.random.default_rng(7)
    net, _ = random_mlp(rng, [3, 8, 4])
    rows, offset = rng.normal(size=(2, 4)), rng.normal(size=2)
    aug = with_output_rows(net, rows, offset)
    x = rng.uniform(size=(5, 3))
    np.testing.assert_allclose(aug.forward(x), net.forward(x) @ rows.T + offset, atol=1e-12)
    assert aug.output == SPEC_NODE
    with pytest.raises(InvalidInputError, match="at least one row"):
        with_output_rows(net, np.zeros((0, 4)), np.zeros(0))
    with pytest.raises(InvalidInputError, match="already has a node"):
        with_output_rows(aug, np.ones((1, 2)), np.zeros(1))
