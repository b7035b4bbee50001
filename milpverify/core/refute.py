"""Ruling out a query's other labels by branch and bound on ReLU phases (chain networks).

A label j stays a candidate while the bounds allow ``f_j - f_label >= margin`` somewhere in
the box. On a fully connected network a few hundred ReLUs can stay unstable there, and the
decision MILP then spends its time in SCIP's generic tree. `bounds.relu_split` splits those
ReLUs itself, with beta-CROWN bounds of many domains per batch, and rules out each label it
refutes; the MILP is left with the others (`benchmarks/relu_split.py` compares both ways on
ERAN mnist_relu_3_100).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from milpverify.bounds.interval import round_down, round_up
from milpverify.core.query import SOLVER_SLACK, Query
from milpverify.core.spec_bounds import QueryBounds, with_output_rows
from milpverify.ir.network import Network

if TYPE_CHECKING:
    from milpverify.bounds.relu_split import ReluSplitOptions


def can_refute(net: Network) -> bool:
    """Whether `refute_labels` can work on `net`: a chain of affine maps and ReLUs (it may
    end in a ReLU, as the ERAN MLPs do: the label rows follow it)."""
    from milpverify.bounds.box_bounds import is_chain  # torch: see refute_labels

    return is_chain(with_output_rows(net, np.ones((1, net.num_classes)), np.zeros(1)))


def refute_labels(net: Network, q: Query, qb: QueryBounds, until: float,
                  options: ReluSplitOptions | None = None, reachable: int | None = None
                  ) -> tuple[QueryBounds, dict[str, Any]]:
    """`qb` without the candidates that ReLU splitting proves unreachable before `until`;
    `reachable` (the label of a witness inside the box) is kept without trying.

    Candidate j is refuted when ``f_label - f_j + margin - SOLVER_SLACK > 0`` holds on the
    whole box (the strict side of the rule that made j a candidate), the label with the
    smallest margin upper bound first. Networks that are not a chain of affine maps and
    ReLUs (`as_chain`) are returned unchanged.

    Returns the remaining bounds and stats (``relu_refuted`` labels, domains, seconds).
    """
    tried = [k for k, j in enumerate(qb.candidates) if j != reachable]
    if not tried:
        return qb, {}
    # imported here: the search runs on torch, which `import milpverify` does not load
    from milpverify.bounds.box_bounds import as_chain
    from milpverify.bounds.relu_split import refute_disjuncts, root_bounds

    offset = q.margin - SOLVER_SLACK
    order = np.array(tried)[np.argsort(qb.margin_upper[tried], kind="stable")]
    labels = [qb.candidates[k] for k in order]
    rows = np.zeros((len(labels), net.num_classes))
    rows[:, q.label] = 1.0
    rows[np.arange(len(labels)), labels] -= 1.0
    chain = as_chain(with_output_rows(net, rows, np.full(len(labels), offset)))
    if chain is None:
        return qb, {"relu_split": "skipped: not a chain of affine maps and ReLUs"}
    spec = (round_down(offset - qb.margin_upper[order])[None],
            round_up(offset - qb.margin_lower[order])[None])
    root = [*root_bounds(net, qb.bounds), spec]
    masks = [np.arange(len(labels)) == r for r in range(len(labels))]
    left, stats = refute_disjuncts(chain, root, masks, until, options, start=spec[0][0])
    stats["relu_refuted"] = [labels[r] for r in range(len(labels)) if r not in left]
    refuted = set(stats["relu_refuted"])
    return qb.keep([j for j in qb.candidates if j not in refuted]), stats
