"""Ruling out a query's other labels by branch and bound on ReLU phases (chain networks).

A label j stays a candidate while the bounds allow ``f_j - f_label >= margin`` somewhere in
the box. On a fully connected network a few hundred ReLUs can stay unstable there, and the
decision MILP then spends its time in SCIP's generic tree. `bounds.relu_split` splits those
ReLUs itself, with beta-CROWN bounds of many domains per batch, and rules out each label it
refutes; the MILP is left with the others (`benchmarks/relu_split.py` compares both ways on
ERAN mnist_relu_3_100). `refute_rows` is the same for any rows of the outputs (the relaxed
properties' pairs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from milpverify.bounds.interval import round_down, round_up
from milpverify.core.query import SOLVER_SLACK, Query
from milpverify.core.spec_bounds import QueryBounds, with_output_rows
from milpverify.ir.network import Network
from milpverify.ir.ops import FloatArray

if TYPE_CHECKING:
    from milpverify.bounds.base import Bounds
    from milpverify.bounds.relu_split import ReluSplitOptions


def can_refute(net: Network) -> bool:
    """Whether `refute_labels` can work on `net`: a chain of affine maps and ReLUs (it may
    end in a ReLU, as the ERAN MLPs do: the label rows follow it)."""
    from milpverify.bounds.box_bounds import is_chain  # torch: see refute_labels

    return is_chain(with_output_rows(net, np.ones((1, net.num_classes)), np.zeros(1)))


def refute_labels(net: Network, q: Query, qb: QueryBounds, until: float,
                  options: ReluSplitOptions | None = None
                  ) -> tuple[QueryBounds, dict[str, Any]]:
    """`qb` without the candidates that ReLU splitting proves unreachable before `until`.

    Candidate j is refuted when ``f_label - f_j + margin - SOLVER_SLACK > 0`` holds on the
    whole box (the strict side of the rule that made j a candidate), the label with the
    smallest margin upper bound first. Networks that are not a chain of affine maps and
    ReLUs (`as_chain`) are returned unchanged.

    Returns the remaining bounds and stats (``relu_refuted`` labels, domains, seconds).
    """
    if not qb.candidates:
        return qb, {}
    order = np.argsort(qb.margin_upper, kind="stable")
    labels = [qb.candidates[k] for k in order]
    rows = np.zeros((len(labels), net.num_classes))
    rows[:, q.label] = 1.0
    rows[np.arange(len(labels)), labels] -= 1.0
    offset = q.margin - SOLVER_SLACK
    # row = f_label - f_j + offset lies in [offset - margin_upper, offset - margin_lower]
    refuted, stats = refute_rows(net, qb.bounds, rows, np.full(len(labels), offset),
                                 (offset - qb.margin_upper[order], offset - qb.margin_lower[order]),
                                 until, options)
    stats["relu_refuted"] = [labels[r] for r in refuted]
    return qb.keep([j for j in qb.candidates if j not in stats["relu_refuted"]]), stats


def refute_rows(net: Network, bounds: Bounds, rows: FloatArray, offsets: FloatArray,
                row_bounds: tuple[FloatArray, FloatArray], until: float,
                options: ReluSplitOptions | None = None, give_up_after_failure: bool = False
                ) -> tuple[list[int], dict[str, Any]]:
    """The indices r for which ReLU splitting proves ``rows[r] @ y + offsets[r] > 0`` on
    the whole box of `bounds` before `until`, each row in turn (order them by promise).

    `bounds` are sound bounds of every node of `net` over the box, `row_bounds` of the
    rows themselves (rounded outward here). With `give_up_after_failure` it stops at the
    first row it cannot refute (a caller that needs every row). On a network that is not
    a chain of affine maps and ReLUs (`as_chain`) nothing is refuted.
    """
    # imported here: the search runs on torch, which `import milpverify` does not load
    from milpverify.bounds.box_bounds import as_chain
    from milpverify.bounds.relu_split import refute_disjuncts, root_bounds

    chain = as_chain(with_output_rows(net, rows, offsets))
    if chain is None:
        return [], {"relu_split": "skipped: not a chain of affine maps and ReLUs"}
    spec = (round_down(np.asarray(row_bounds[0], dtype=np.float64))[None],
            round_up(np.asarray(row_bounds[1], dtype=np.float64))[None])
    root = [*root_bounds(net, bounds), spec]
    masks = [np.arange(len(rows)) == r for r in range(len(rows))]
    left, stats = refute_disjuncts(chain, root, masks, until, options, start=spec[0][0],
                                   give_up_after_failure=give_up_after_failure)
    return [r for r in range(len(rows)) if r not in left], stats
