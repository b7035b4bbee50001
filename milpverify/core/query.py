"""A verification query: the centre, norm, radius and label of a rho/certify question, and the
slack on its unsafe rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from milpverify.errors import InvalidInputError
from milpverify.ir.network import Network
from milpverify.ir.ops import FloatArray

# The query helpers (validate_query, query_box, query_bounds, max_radius, proven_beyond,
# solver_parameters) are shared with `properties` and `export`, which build other MILPs on
# the same validated query and bounds.

#: Misclassification rows are relaxed by this much, so that LP round-off in the solver
#: cannot cut off a true adversarial point and raise the dual bound above rho. (SCIP's
#: feasibility tolerance 1e-6 already errs the other way: it accepts slightly infeasible
#: points, which can only lower the optimum.) The witness re-check restores exactness.
SOLVER_SLACK = 1e-7


#: Margin asked of a second solve when a solver point only ties within tolerance
#: (10x SCIP's feasibility tolerance, so the solver cannot return a tie).
WITNESS_MARGIN = 1e-5


@dataclass(frozen=True)
class Query:
    """A validated robustness query (built by `validate_query`)."""

    x: FloatArray
    label: int
    norm: str
    domain: tuple[float, float]
    margin: float
    target: int | None


#: Norms of the MILP paths that build no quadratic row (properties, export).
LINEAR_NORMS = ("linf", "l1")
#: Norms of `rho` and `certify`; "l2" makes their problems mixed-integer quadratic (SCIP).
NORMS = ("linf", "l1", "l2")


def validate_query(net: Network, x: npt.ArrayLike, *, norm: str, domain: tuple[float, float],
              margin: float, target: int | None, label: int | None,
              norms: tuple[str, ...] = LINEAR_NORMS) -> Query:
    batch = net.as_batch(x)
    if batch.shape[0] != 1:
        raise InvalidInputError(f"`x` must be one sample; got a batch of {batch.shape[0]}.")
    flat = batch[0]
    if not np.all(np.isfinite(flat)):
        raise InvalidInputError("`x` contains inf or NaN.")
    if norm not in norms:
        raise InvalidInputError(f"`norm` must be one of {', '.join(map(repr, norms))}; "
                                f"got {norm!r}.")
    lo, hi = (float(v) for v in domain)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise InvalidInputError(f"`domain` must be finite (low, high) with low < high; got {domain}.")
    if np.any(flat < lo) or np.any(flat > hi):
        raise InvalidInputError(
            f"`x` lies outside the domain [{lo:g}, {hi:g}] (min {flat.min():g}, max {flat.max():g}); "
            "scale the input as the network expects (e.g. pixels / 255) or pass `domain`.")
    if not (math.isfinite(margin) and margin >= 0):
        raise InvalidInputError(f"`margin` must be a finite number >= 0; got {margin}.")
    logits = net.forward(flat)[0]
    pred = int(np.argmax(logits)) if label is None else int(label)
    if not 0 <= pred < net.num_classes:
        raise InvalidInputError(f"`label` must be in [0, {net.num_classes}); got {label}.")
    if target is not None and (not 0 <= int(target) < net.num_classes or int(target) == pred):
        raise InvalidInputError(
            f"`target` must be a label in [0, {net.num_classes}) other than {pred}; got {target}.")
    return Query(flat, pred, norm, (lo, hi), float(margin), None if target is None else int(target))


def check_norm_backend(norm: str, backend: str) -> None:
    """L2 problems are mixed-integer quadratic: only SCIP solves them here."""
    if norm == "l2" and str(backend).strip().lower() != "scip":
        raise InvalidInputError(
            f"norm 'l2' needs backend 'scip' (a mixed-integer quadratic program); backend "
            f"{backend!r} solves only linear models.")


def check_positive(name: str, value: float | None, *, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if value is None or not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise InvalidInputError(f"`{name}` must be a finite number > 0; got {value!r}.")


def check_share(name: str, value: float) -> None:
    """`value` must be a share of a time budget, a number in [0, 1) (0: the stage is off)."""
    if (isinstance(value, bool) or not isinstance(value, (int, float, np.floating))
            or not 0 <= value < 1):
        raise InvalidInputError(f"`{name}` must be a number in [0, 1); got {value!r}.")


def query_box(q: Query, radius: float) -> tuple[FloatArray, FloatArray]:
    """The L-inf box of `radius` around x, within the domain.

    It contains the ball of every supported norm (||d||_inf <= ||d||_2 <= ||d||_1), so
    bounds computed on it are sound for each; the L2 ball is a quadratic row of the model.
    """
    lo, hi = q.domain
    return np.maximum(lo, q.x - radius), np.minimum(hi, q.x + radius)


def max_radius(q: Query) -> float:
    """Distance to the farthest point of the domain (any adversarial point is closer)."""
    lo, hi = q.domain
    far = np.maximum(q.x - lo, hi - q.x)
    if q.norm == "linf":
        return float(np.max(far))
    if q.norm == "l2":
        return float(np.nextafter(np.sqrt(np.sum(far * far)), np.inf))
    return float(np.sum(np.maximum(q.x - lo, hi - q.x)))
