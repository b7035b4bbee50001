"""Distance objectives and the misclassification disjunction of a robustness query.

The query "nearest x' to x (in `box`) whose label differs from `label`":

    minimise   d(x', x)
    subject to x' in box, network constraints,
               OR_{j in candidates}  f_j(x') - f_label(x') >= margin_j

For a single candidate the constraint is a plain row. For several, one binary `z_j` per
candidate with `sum_j z_j = 1` and
    f_j - f_label >= margin_j - (margin_j - (l_j - u_label)) (1 - z_j),
which is slack when z_j = 0 because `f_j - f_label >= l_j - u_label` holds in the box.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from milpverify.bounds.base import Bounds
from milpverify.encode.milp import NetworkEncoding, Term, encode_network
from milpverify.encode.model import MilpModel
from milpverify.errors import InvalidInputError
from milpverify.ir.network import Network
from milpverify.ir.ops import FloatArray, IntArray


@dataclass
class RobustnessProblem:
    """A built robustness MILP and the handles needed to read its solution."""

    model: MilpModel
    encoding: NetworkEncoding
    input_vars: IntArray
    distance_var: int | None
    candidates: list[int]
    choice_vars: IntArray


def add_distance(model: MilpModel, x: FloatArray, input_vars: IntArray, norm: str,
                 radius: float) -> int | None:
    """Objective `d(x', x)`; returns the variable holding d for L-inf (None otherwise).

    - linf: one variable t in [0, radius] with `-t <= x'_i - x_i <= t`; minimise t.
    - l1: split `x'_i - x_i = p_i - n_i`, p, n >= 0; minimise sum(p + n).
    """
    n = len(input_vars)
    k = np.arange(n)
    if norm == "linf":
        t = int(model.add_vars(1, 0.0, radius, name="distance")[0])
        # x'_i - t <= x_i  and  x'_i + t >= x_i
        model.add_rows(np.r_[k, k], np.r_[input_vars, np.full(n, t)],
                       np.r_[np.ones(n), -np.ones(n)], n, -np.inf, x, name="distance/upper")
        model.add_rows(np.r_[k, k], np.r_[input_vars, np.full(n, t)],
                       np.r_[np.ones(n), np.ones(n)], n, x, np.inf, name="distance/lower")
        model.set_objective(np.array([t]), np.array([1.0]))
        return t
    if norm == "l1":
        p = model.add_vars(n, 0.0, np.inf, name="distance.plus")
        m = model.add_vars(n, 0.0, np.inf, name="distance.minus")
        model.add_rows(np.r_[k, k, k], np.r_[input_vars, p, m],
                       np.r_[np.ones(n), -np.ones(n), np.ones(n)], n, x, x, name="distance/split")
        model.set_objective(np.r_[p, m], np.ones(2 * n))
        return None
    raise InvalidInputError(f"`norm` must be 'linf' or 'l1' for the MILP; got {norm!r}.")


def add_misclassification(model: MilpModel, logits: Term, label: int, candidates: list[int],
                          margin: float, lower: FloatArray, upper: FloatArray) -> IntArray:
    """Require `f_j - f_label >= margin` for at least one j in `candidates` (see module doc)."""
    def diff_row(j: int) -> tuple[list[int], list[float], float]:
        cols, vals, const = [], [], 0.0
        for idx, sign in ((j, 1.0), (label, -1.0)):
            if logits.var[idx] >= 0:
                cols.append(int(logits.var[idx]))
                vals.append(sign)
            else:
                const += sign * logits.const[idx]
        return cols, vals, const

    if len(candidates) == 1:
        cols, vals, const = diff_row(candidates[0])
        model.add_rows(np.zeros(len(cols), dtype=np.int64), np.array(cols, dtype=np.int64),
                       np.array(vals), 1, margin - const, np.inf, name="misclassified")
        return np.zeros(0, dtype=np.int64)
    z = model.add_vars(len(candidates), 0.0, 1.0, integer=True, name="misclassified.as")
    for pos, j in enumerate(candidates):
        cols, vals, const = diff_row(j)
        big = margin - (lower[j] - upper[label])
        # f_j - f_label + const - big * z_j >= margin - big
        model.add_rows(np.zeros(len(cols) + 1, dtype=np.int64),
                       np.array(cols + [int(z[pos])], dtype=np.int64),
                       np.array(vals + [-big]), 1, margin - big - const, np.inf,
                       name=f"misclassified[{j}]")
    model.add_rows(np.zeros(len(z), dtype=np.int64), z, np.ones(len(z)), 1, 1.0, 1.0,
                   name="misclassified/one")
    return z


def candidate_labels(bounds: Bounds, output: str, label: int, margin: float,
                     target: int | None = None) -> list[int]:
    """Labels that can still beat `label` by `margin` in the box: `u_j - l_label >= margin`."""
    lower, upper = bounds.flat(output)
    pool = [target] if target is not None else [j for j in range(len(lower)) if j != label]
    return [j for j in pool if upper[j] - lower[label] >= margin]


def build_robustness_problem(net: Network, x: FloatArray, label: int, bounds: Bounds,
                             box_lower: FloatArray, box_upper: FloatArray, *, norm: str,
                             radius: float, margin: float, candidates: list[int],
                             relax: bool = False, with_distance: bool = True
                             ) -> RobustnessProblem:
    """The full MILP: input box, network, misclassification, and (optionally) the distance.

    `bounds` must be valid over [box_lower, box_upper]; `candidates` non-empty.
    """
    model = MilpModel()
    input_vars = model.add_vars(net.input_size, box_lower, box_upper, name="input")
    outputs = np.zeros(net.num_classes, dtype=bool)
    outputs[[label, *candidates]] = True
    encoding = encode_network(net, bounds, model, Term.of_vars(input_vars), outputs=outputs,
                              relax=relax)
    lower, upper = bounds.flat(net.output)
    choice = add_misclassification(model, encoding.terms[net.output], label, candidates,
                                   margin, lower, upper)
    t = add_distance(model, x, input_vars, norm, radius) if with_distance else None
    return RobustnessProblem(model, encoding, input_vars, t, candidates, choice)
