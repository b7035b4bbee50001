"""Sound bound tightening: per-node lower/upper bounds of a network over an input box.

* `interval_bounds` — interval arithmetic, one rule per op (`INTERVAL_RULES`).
* `symbolic_bounds` — CROWN-style backward linear relaxation, intersected with interval.
* `bounds_for_box(net, lower, upper, method)` — dispatch by name (`BOUND_METHODS`).

All bounds hold for the exact real-valued network despite float64 rounding (outward
slack `2 gamma(n + 2) * magnitude` plus `nextafter`; see the `interval` and `symbolic`
module docstrings). This package imports only numpy, scipy, `milpverify.ir`
and `milpverify.errors`.

Example
-------
>>> from milpverify.bounds import bounds_for_box
>>> b = bounds_for_box(net, np.clip(x - 0.1, 0, 1), np.clip(x + 0.1, 0, 1), "symbolic")
>>> b.unstable, b.relu_cases
"""

from __future__ import annotations

from milpverify.bounds.base import Bounds, contains, relu_case_counts
from milpverify.bounds.interval import INTERVAL_RULES, interval_bounds
from milpverify.bounds.symbolic import (BOUND_METHODS, LinearRelaxation, bounds_for_box,
                                        symbolic_bounds)

__all__ = [
    "BOUND_METHODS", "Bounds", "INTERVAL_RULES", "LinearRelaxation", "bounds_for_box",
    "contains", "interval_bounds", "relu_case_counts", "symbolic_bounds",
]
