"""Distance objectives and the misclassification disjunction of a robustness query.

The query "nearest x' to x (in `box`) whose outputs lie in an unsafe set":

    minimise   d(x', x)
    subject to x' in box, network constraints,
               OR_d  A_d f(x') <= b_d          (a disjunction of conjunctions)

Misclassification is the unsafe set with one single-row disjunct per candidate label j,
`f_label - f_j <= -margin`; VNN-LIB properties and relaxed top-K/affinity properties are
other unsafe sets over the same encoder (`add_unsafe_set`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from milpverify.bounds.base import Bounds
from milpverify.encode.milp import NetworkEncoding, Term, encode_network
from milpverify.encode.model import MilpModel
from milpverify.errors import InvalidInputError
from milpverify.ir.constraints import OutputConstraint
from milpverify.ir.network import Network
from milpverify.ir.ops import FloatArray, IntArray


@dataclass
class RobustnessProblem:
    """A built robustness MILP and the handles needed to read its solution."""

    model: MilpModel
    encoding: NetworkEncoding
    input_vars: IntArray
    distance_var: int | None
    disjuncts: list[OutputConstraint]
    choice_vars: IntArray


def add_distance(model: MilpModel, x: FloatArray, input_vars: IntArray, norm: str,
                 radius: float) -> int | None:
    """Objective `d(x', x)`; returns the variable holding d for L-inf (None otherwise).

    - linf: one variable t in [0, radius] with `-t <= x'_i - x_i <= t`; minimise t.
    - l1: split `x'_i - x_i = p_i - n_i`, p, n >= 0; minimise sum(p + n).
    - l2: offsets `d_i = x'_i - x_i` and t in [0, radius^2] with the convex quadratic row
      `sum_i d_i^2 <= t`; minimise t, the *squared* distance (see `add_l2_ball`). The
      squared form is a plain convex quadratic constraint, which SCIP outer-approximates
      with gradient cuts valid everywhere; a second-order cone `||d|| <= t` would keep the
      objective in input units but relies on SCIP recognising the cone.
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
    if norm == "l2":
        t = int(model.add_vars(1, 0.0, _squared_up(radius), name="distance.squared")[0])
        model.add_sum_squares(_offsets(model, x, input_vars, radius), 0.0, t)
        model.set_objective(np.array([t]), np.array([1.0]))
        return None
    raise InvalidInputError(f"`norm` must be 'linf', 'l1' or 'l2' for the MILP; got {norm!r}.")


def _squared_up(radius: float) -> float:
    """`radius**2` rounded up (a bound that must not cut off the ball)."""
    return float(np.nextafter(radius * radius, np.inf))


def _offsets(model: MilpModel, x: FloatArray, input_vars: IntArray, radius: float) -> IntArray:
    """Variables `d_i = x'_i - x_i` (|d_i| <= radius), so the quadratic row has no constant.

    Expanding `(x'_i - x_i)^2` would put `sum x_i^2` (~100 for an image) into the row's
    right-hand side, where SCIP's relative feasibility tolerance would swamp a squared
    distance of 1e-4.
    """
    n = len(input_vars)
    k = np.arange(n)
    d = model.add_vars(n, -radius, radius, name="distance.offset")
    model.add_rows(np.r_[k, k], np.r_[input_vars, d], np.r_[np.ones(n), -np.ones(n)], n, x, x,
                   name="distance/offset")
    return d


def add_l2_ball(model: MilpModel, x: FloatArray, input_vars: IntArray, radius: float,
                shrink: float = 0.0) -> None:
    """`||x' - x||_2^2 <= radius^2 - shrink`: the L2 ball of a feasibility query (no objective).

    `shrink` > 0 asks for points strictly inside (a solver point may overshoot the row by
    its feasibility tolerance); 0 keeps the row a proof when the model is infeasible.
    """
    rhs = _squared_up(radius) if shrink <= 0 else max(radius * radius - shrink,
                                                       0.25 * radius * radius)
    model.add_sum_squares(_offsets(model, x, input_vars, radius), rhs)


def misclassification(num_classes: int, label: int, candidates: list[int], margin: float
                      ) -> list[OutputConstraint]:
    """`f_j - f_label >= margin` for j in candidates, as disjuncts `(e_label - e_j) y <= -margin`."""
    out = []
    for j in candidates:
        a = np.zeros((1, num_classes))
        a[0, label], a[0, j] = 1.0, -1.0
        out.append(OutputConstraint(a, np.array([-margin]), str(j)))
    return out


def add_unsafe_set(model: MilpModel, outputs: Term, disjuncts: list[OutputConstraint],
                   lower: FloatArray, upper: FloatArray, *, relax: bool = False,
                   row_max: list[FloatArray] | None = None) -> IntArray:
    """Require the outputs y to satisfy at least one disjunct `A_d y <= b_d`.

    One disjunct: its rows are added as they are. Several: binaries `z_d` with
    `sum_d z_d = 1` and `A_d y <= b_d + M_d (1 - z_d)`, where `M_d = max(A_d y) - b_d`
    over the output bounds `[lower, upper]` (so the rows are slack when `z_d = 0`), or over
    the tighter sound upper bounds `row_max[d]` of `A_d y` when given (e.g. symbolic bounds
    of the margins). Rows that hold everywhere (`M <= 0`) are dropped. Returns the `z`
    indices.
    """
    if not disjuncts:
        raise ValueError("add_unsafe_set needs at least one disjunct")
    single = len(disjuncts) == 1
    z = np.zeros(0, dtype=np.int64) if single else model.add_vars(
        len(disjuncts), 0.0, 1.0, integer=not relax, name="unsafe.choice")
    for pos, d in enumerate(disjuncts):
        is_var = outputs.var >= 0
        const = d.A[:, ~is_var] @ outputs.const[~is_var]
        top = d.row_range(lower, upper)[1]
        if row_max is not None:
            top = np.minimum(top, row_max[pos])
        big = top - d.b
        for r in range(d.A.shape[0]):
            if big[r] <= 0:
                continue  # holds for every y in the bounds
            coeffs = d.A[r, is_var]
            nz = np.flatnonzero(coeffs)
            cols = outputs.var[is_var][nz]
            vals = coeffs[nz]
            rhs = d.b[r] - const[r]
            if not single:
                # A y + M z <= b + M
                cols = np.r_[cols, z[pos]]
                vals = np.r_[vals, big[r]]
                rhs = rhs + big[r]
            model.add_rows(np.zeros(len(cols), dtype=np.int64), cols, vals, 1, -np.inf, rhs,
                           name=f"unsafe[{d.name or pos}]")
    if not single:
        model.add_rows(np.zeros(len(z), dtype=np.int64), z, np.ones(len(z)), 1, 1.0, 1.0,
                       name="unsafe/one")
    return z


def build_robustness_problem(net: Network, x: FloatArray, label: int, bounds: Bounds,
                             box_lower: FloatArray, box_upper: FloatArray, *, norm: str,
                             radius: float, margin: float, candidates: list[int],
                             relax: bool = False, with_distance: bool = True,
                             margin_lower: FloatArray | None = None,
                             ball_shrink: float = 0.0) -> RobustnessProblem:
    """The full MILP: input box, network, misclassification, and (optionally) the distance.

    Without the distance, an L2 query keeps its ball as a row (`add_l2_ball`, `ball_shrink`).

    `bounds` must be valid over [box_lower, box_upper]; `candidates` non-empty.
    `margin_lower[k]`, if given, is a sound lower bound of `f_{candidates[k]} - f_label`
    in the box; it sets the disjunction's big-M constants.
    """
    row_max = None if margin_lower is None else [np.array([-m]) for m in margin_lower]
    return build_unsafe_problem(net, x, bounds, box_lower, box_upper,
                                misclassification(net.num_classes, label, candidates, margin),
                                norm=norm, radius=radius, relax=relax,
                                with_distance=with_distance, row_max=row_max,
                                ball_shrink=ball_shrink)


def build_unsafe_problem(net: Network, x: FloatArray | None, bounds: Bounds,
                         box_lower: FloatArray, box_upper: FloatArray,
                         disjuncts: list[OutputConstraint], *, norm: str = "linf", radius: float = 0.0,
                         relax: bool = False, with_distance: bool = True,
                         row_max: list[FloatArray] | None = None,
                         ball_shrink: float = 0.0) -> RobustnessProblem:
    """Input box + network + "outputs in the unsafe set" (+ distance to x if asked).

    The box bounds L-inf; without the distance, L2 adds its ball (`add_l2_ball`).
    """
    model = MilpModel()
    input_vars = model.add_vars(net.input_size, box_lower, box_upper, name="input")
    used = np.zeros(net.num_classes, dtype=bool)
    for d in disjuncts:
        used |= np.any(d.A != 0, axis=0)
    encoding = encode_network(net, bounds, model, Term.of_vars(input_vars), outputs=used,
                              relax=relax)
    lower, upper = bounds.flat(net.output)
    choice = add_unsafe_set(model, encoding.terms[net.output], disjuncts, lower, upper,
                            relax=relax, row_max=row_max)
    t = None
    if with_distance:
        assert x is not None
        t = add_distance(model, x, input_vars, norm, radius)
    elif norm == "l2":
        assert x is not None
        add_l2_ball(model, x, input_vars, radius, ball_shrink)
    return RobustnessProblem(model, encoding, input_vars, t, disjuncts, choice)
