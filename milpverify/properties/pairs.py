"""Bounds on output differences y_j - y_i and the plan of which (i, j) pairs can still change a
top-K set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from milpverify.bounds.base import Bounds
from milpverify.core.refute import refute_rows
from milpverify.core.spec_bounds import bound_network, output_row_bounds
from milpverify.ir.network import Network
from milpverify.ir.ops import FloatArray
from milpverify.properties.query import TopKQuery

if TYPE_CHECKING:
    from milpverify.bounds.relu_split import ReluSplitOptions


# ============================================================================ the MILP
@dataclass
class PairPlan:
    """Which pairs can still change which top-k sets in a box (from output bounds).

    `diff_lower[j, i] <= y_j - y_i <= diff_upper[j, i]` over the box. `pairs[k]` lists the
    pairs (i, j) that can change T_k (`diff_upper >= margin`). `ks` are the k still to be
    changed (a k with a pair whose `diff_lower >= margin` changes everywhere and is dropped);
    `impossible` names a k that no pair can change (then the property holds in the box).
    `refuted` are pairs proven unable to reach the margin anywhere in the box beyond what
    the bounds show (ReLU splitting, `refute_pairs`); they are left out of `pairs`.
    """

    ks: list[int]
    pairs: dict[int, list[tuple[int, int]]]
    diff_lower: FloatArray
    diff_upper: FloatArray
    out_lower: FloatArray
    out_upper: FloatArray
    impossible: int | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    refuted: frozenset[tuple[int, int]] = frozenset()


@dataclass(frozen=True)
class OutputBounds:
    """Bounds of the logits, `lower <= y <= upper`, and of all their differences,
    `lower_diff[j, i] <= y_j - y_i <= upper_diff[j, i]`, over a box."""

    lower: FloatArray
    upper: FloatArray
    lower_diff: FloatArray
    upper_diff: FloatArray


def property_bounds(net: Network, box: tuple[FloatArray, FloatArray], method: str, *,
                    time_limit_s: float | None = None, base: Bounds | None = None,
                    differences: bool = True) -> tuple[Bounds, OutputBounds]:
    """Bounds of every node over `box`, and of the logits and all their differences.

    With `differences`, the rows are `e_c` per class and `e_j - e_i` per pair i < j,
    bounded as output rows (`core.spec_bounds.output_row_bounds`, as `query_bounds` does
    for the margins): far tighter than `u_j - l_i`. Without it the differences are
    `[l_j - u_i, u_j - l_i]`. With `base` (bounds valid over a box that contains `box`)
    one symbolic pass intersected with it is run instead of `method`. The returned
    `Bounds` also hold every node of `net` (the encoder reads those).
    """
    c = net.num_classes
    differences = differences and c > 1
    if differences:
        i_idx, j_idx = np.triu_indices(c, k=1)
        d = np.zeros((len(i_idx), c))
        d[np.arange(len(i_idx)), j_idx] = 1.0
        d[np.arange(len(i_idx)), i_idx] = -1.0
        # The logits themselves too: in the extended network they are no longer the
        # output, so only these rows give them back-substituted (not interval) bounds.
        bounds, low, high = output_row_bounds(net, np.vstack([np.eye(c), d]), box, method,
                                              time_limit_s, base)
    else:
        bounds = bound_network(net, box, method, time_limit_s, base)
    lo, up = bounds.flat(net.output)
    if differences:
        lo, up = np.maximum(lo, low[:c]), np.minimum(up, high[:c])
    lower_diff = lo[:, None] - up[None, :]
    upper_diff = up[:, None] - lo[None, :]
    if differences:
        dl, du = low[c:], high[c:]
        # row r bounds y_j - y_i in [dl, du], hence y_i - y_j in [-du, -dl]
        lower_diff[j_idx, i_idx] = np.maximum(lower_diff[j_idx, i_idx], dl)
        upper_diff[j_idx, i_idx] = np.minimum(upper_diff[j_idx, i_idx], du)
        lower_diff[i_idx, j_idx] = np.maximum(lower_diff[i_idx, j_idx], -du)
        upper_diff[i_idx, j_idx] = np.minimum(upper_diff[i_idx, j_idx], -dl)
    return bounds, OutputBounds(lo, up, lower_diff, upper_diff)


def plan_pairs(query: TopKQuery, out: OutputBounds, margin: float,
               refuted: frozenset[tuple[int, int]] = frozenset()) -> PairPlan:
    """The `PairPlan` of `query` under `out` for rows `y_j - y_i >= margin`, without the
    `refuted` pairs (proven `y_j - y_i < margin`, or less, on the box)."""
    plan = PairPlan([], {}, out.lower_diff, out.upper_diff, out.lower, out.upper,
                    refuted=refuted)
    n = len(query.order)
    for k in query.ks:
        inside, outside = query.order[:k], query.order[k:]
        cand = [(i, j) for i in inside for j in outside
                if out.upper_diff[j, i] >= margin and (i, j) not in refuted]
        if not cand:
            plan.impossible = k
            break
        if any(out.lower_diff[j, i] >= margin for i, j in cand):
            continue  # T_k is changed everywhere in the box
        plan.ks.append(k)
        plan.pairs[k] = cand
    plan.stats = {"open_ks": list(plan.ks),
                  "pairs_total": sum(k * (n - k) for k in query.ks),
                  "pairs_possible": len({p for ps in plan.pairs.values() for p in ps})}
    return plan


def refute_pairs(net: Network, bounds: Bounds, out: OutputBounds,
                 pairs: Sequence[tuple[int, int]], margin: float, until: float,
                 options: ReluSplitOptions | None = None) -> tuple[list[tuple[int, int]],
                                                                   dict[str, Any]]:
    """The pairs (i, j) of `pairs` (all needed: it stops at the first it cannot refute)
    for which ReLU splitting (`core.refute.refute_rows`) proves ``y_j - y_i < margin`` on
    the whole box of `bounds` and `out` before `until`, and its stats."""
    rows = np.zeros((len(pairs), net.num_classes))
    for r, (i, j) in enumerate(pairs):
        rows[r, i], rows[r, j] = 1.0, -1.0
    lower = np.array([out.lower_diff[i, j] for i, j in pairs]) + margin
    upper = np.array([out.upper_diff[i, j] for i, j in pairs]) + margin
    refuted, stats = refute_rows(net, bounds, rows, np.full(len(pairs), margin),
                                 (lower, upper), until, options, give_up_after_failure=True)
    return [pairs[r] for r in refuted], stats
