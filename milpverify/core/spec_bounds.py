"""Bounds on linear rows of a network's outputs, by bounding the network extended with them.

Every query asks about rows of the outputs: the margins ``f_j - f_label`` of a robustness
query, the differences ``y_j - y_i`` of a relaxed top-K property, the rows ``A y - b`` of a
VNN-LIB property. Appending the rows as one more Affine node (`with_output_rows`) and
back-substituting from it (CROWN's specification trick) bounds them far more tightly than
intervals on y would: the correlated parts of the outputs cancel before any ReLU is
relaxed. On WK17a at eps 0.1 the margin rows prove most robust images without a MILP.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from milpverify.bounds import symbolic_bounds
from milpverify.bounds.base import Bounds
from milpverify.bounds.tighten import compute_bounds
from milpverify.core.query import SOLVER_SLACK, Query
from milpverify.errors import InvalidInputError
from milpverify.ir import ops
from milpverify.ir.network import Network
from milpverify.ir.ops import FloatArray

#: Name of the node `with_output_rows` appends.
SPEC_NODE = "milpverify/spec"


def with_output_rows(net: Network, rows: FloatArray, offset: FloatArray,
                     notes: tuple[str, ...] = ()) -> Network:
    """`net` with one more node, `SPEC_NODE`, computing ``rows @ y + offset`` (y the outputs)."""
    rows = np.atleast_2d(np.asarray(rows, dtype=np.float64))
    if rows.shape[0] == 0:
        raise InvalidInputError("bounding output rows needs at least one row")
    if SPEC_NODE in net.graph:
        raise InvalidInputError(f"the network already has a node named {SPEC_NODE!r}")
    node = ops.Affine((net.output,), (rows.shape[0],), rows,
                      np.asarray(offset, dtype=np.float64).reshape(rows.shape[0]))
    return net.replace([*net.items(), (SPEC_NODE, node)], SPEC_NODE, notes=notes)


def bound_network(net: Network, box: tuple[FloatArray, FloatArray], method: str,
                  time_limit_s: float | None = None, base: Bounds | None = None) -> Bounds:
    """Bounds of every node of `net` over `box` by `method`; with `base` (bounds valid over
    a box that contains `box`) one symbolic pass intersected with it instead."""
    if base is not None:
        return symbolic_bounds(net, box[0], box[1], base=base)
    return compute_bounds(net, box[0], box[1], method=method, time_limit_s=time_limit_s)


def output_row_bounds(net: Network, rows: FloatArray, box: tuple[FloatArray, FloatArray],
                      method: str, time_limit_s: float | None = None,
                      base: Bounds | None = None) -> tuple[Bounds, FloatArray, FloatArray]:
    """Bounds of every node of `net` and of ``rows @ y`` (lower, upper) over `box`, from one
    bound pass through `net` extended by the rows (`with_output_rows`)."""
    bounds = bound_network(with_output_rows(net, rows, np.zeros(len(rows))), box, method,
                           time_limit_s, base)
    low, high = bounds.flat(SPEC_NODE)
    return bounds, low, high


@dataclass(frozen=True)
class QueryBounds:
    """Bounds for one query: every node, plus the margins `f_j - f_label` of the candidates.

    `candidates` are the labels whose margin upper bound reaches `margin - SOLVER_SLACK`;
    `margin_lower[k]` and `margin_upper[k]` are sound bounds of `f_{candidates[k]} - f_label`.
    """

    bounds: Bounds
    candidates: list[int]
    margin_lower: FloatArray
    margin_upper: FloatArray

    def keep(self, labels: list[int]) -> QueryBounds:
        """These bounds with only the candidates in `labels` (the others ruled out)."""
        idx = [k for k, j in enumerate(self.candidates) if j in labels]
        return QueryBounds(self.bounds, [self.candidates[k] for k in idx],
                           self.margin_lower[idx], self.margin_upper[idx])


def query_bounds(net: Network, q: Query, box: tuple[FloatArray, FloatArray], method: str,
                  time_limit_s: float | None = None, base: Bounds | None = None) -> QueryBounds:
    """Bounds of `net` and of the margin rows `e_j - e_label` (`output_row_bounds`); with
    `base` (bounds of a larger box) the symbolic pass intersects with it."""
    pool = [q.target] if q.target is not None else [j for j in range(net.num_classes)
                                                    if j != q.label]
    rows = np.zeros((len(pool), net.num_classes))
    rows[np.arange(len(pool)), pool] = 1.0
    rows[:, q.label] -= 1.0
    bounds, low, high = output_row_bounds(net, rows, box, method, time_limit_s, base)
    keep = np.flatnonzero(high >= q.margin - SOLVER_SLACK)
    return QueryBounds(bounds, [pool[k] for k in keep], low[keep], high[keep])
