"""`Bounds`: per-node lower/upper bounds of a network over an input box."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from milpverify.ir.ops import FloatArray


@dataclass(frozen=True)
class Bounds:
    """Sound element-wise bounds of every node's output over an input region.

    Attributes
    ----------
    pre : dict[str, tuple[ndarray, ndarray]]
        For every node (same keys as `Network.forward_all`), `(lower, upper)` arrays of the
        node's shape: every input in the box maps to values inside them. For a ReLU node
        the entry bounds its *output*; the pre-activation bounds of ReLU `r` are
        `pre[net.op(r).inputs[0]]`.
    relu_cases : dict[str, dict[str, int]]
        Per ReLU node: counts of `"active"` (lower >= 0), `"inactive"` (upper <= 0) and
        `"unstable"` neurons.
    method : str
        The method that produced the bounds.
    time_s : float
        Wall time spent.
    """

    pre: dict[str, tuple[FloatArray, FloatArray]]
    relu_cases: dict[str, dict[str, int]]
    method: str
    time_s: float = 0.0
    details: dict[str, object] = field(default_factory=dict)

    def flat(self, name: str) -> tuple[FloatArray, FloatArray]:
        """`(lower, upper)` of node `name` as flat float64 vectors."""
        lower, upper = self.pre[name]
        return lower.reshape(-1), upper.reshape(-1)

    @property
    def unstable(self) -> int:
        """Total number of unstable ReLUs."""
        return sum(c["unstable"] for c in self.relu_cases.values())


def relu_case_counts(lower: FloatArray, upper: FloatArray) -> dict[str, int]:
    """Count active (l >= 0), inactive (u <= 0) and unstable (l < 0 < u) neurons."""
    inactive = upper <= 0
    active = (lower >= 0) & ~inactive
    return {"active": int(active.sum()), "inactive": int(inactive.sum()),
            "unstable": int((~active & ~inactive).sum())}


def contains(outer: Bounds, inner: Bounds, *, tol: float = 0.0) -> bool:
    """True if every interval of `inner` lies inside the matching interval of `outer`."""
    return all(np.all(outer.pre[k][0] <= inner.pre[k][0] + tol)
               and np.all(inner.pre[k][1] <= outer.pre[k][1] + tol) for k in inner.pre)
