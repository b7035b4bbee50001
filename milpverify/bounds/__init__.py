"""Sound bound tightening: per-node lower/upper bounds of a network over an input box.

* `interval_bounds` — interval arithmetic, one rule per op (`INTERVAL_RULES`).
* `symbolic_bounds` — CROWN-style backward linear relaxation, intersected with interval.
* `alpha_bounds` — CROWN with per-row ReLU lower slopes optimised in torch (alpha-CROWN),
  kept only through the sound float64 back-substitution of `symbolic`.
* `bounds_for_box(net, lower, upper, method)` — dispatch by name (`BOUND_METHODS`).

All bounds hold for the exact real-valued network despite float64 rounding (outward
slack `2 gamma(n + 2) * magnitude` plus `nextafter`; see the `interval` and `symbolic`
module docstrings). This package imports only numpy, scipy, torch (`alpha` only),
`milpverify.ir` and `milpverify.errors`.

Example
-------
>>> from milpverify.bounds import bounds_for_box
>>> b = bounds_for_box(net, np.clip(x - 0.1, 0, 1), np.clip(x + 0.1, 0, 1), "symbolic")
>>> b.unstable, b.relu_cases
"""

from __future__ import annotations

from typing import Any

import numpy.typing as npt

from milpverify.bounds.base import Bounds, contains, relu_case_counts
from milpverify.bounds.interval import INTERVAL_RULES, interval_bounds
from milpverify.bounds.symbolic import (
    BOUND_METHODS,
    LinearRelaxation,
    bounds_for_box,
    symbolic_bounds,
)
from milpverify.ir.network import Network


def alpha_bounds(net: Network, lower: npt.ArrayLike, upper: npt.ArrayLike,
                 **options: Any) -> Bounds:
    """`milpverify.bounds.alpha.alpha_bounds`, imported on first use (torch loads slowly)."""
    from milpverify.bounds import alpha

    return alpha.alpha_bounds(net, lower, upper, **options)


__all__ = [
    "BOUND_METHODS", "Bounds", "INTERVAL_RULES", "LinearRelaxation", "alpha_bounds",
    "bounds_for_box", "contains", "interval_bounds", "relu_case_counts", "symbolic_bounds",
]
