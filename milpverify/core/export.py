"""The MILP of one robustness query, for any solver: `build_query`, `to_pyomo`, `write_query`.

The model is the one `milpverify.verify.rho` / `certify` hand to the solver (same input
validation, bounds, candidate labels and misclassification slack `SOLVER_SLACK`), built
without the heuristics that only speed the solve up (no attack, no LP-restriction cutoff,
so the box is the full `eps` / `eps_cap` box). Export it to Pyomo or as an LP/MPS file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from milpverify.bounds.tighten import METHODS as BOUNDS_METHODS
from milpverify.core.query import (
    SOLVER_SLACK,
    check_positive,
    max_radius,
    query_box,
    validate_query,
)
from milpverify.core.spec_bounds import query_bounds
from milpverify.encode.model import MilpModel
from milpverify.encode.objective import RobustnessProblem, build_robustness_problem
from milpverify.errors import InvalidInputError
from milpverify.ir.network import Network
from milpverify.ir.ops import IntArray
from milpverify.solve.files import file_format


@dataclass(frozen=True)
class QueryProblem:
    """The MILP of one robustness query and what its answer means.

    Attributes
    ----------
    problem : RobustnessProblem
        The built model (`problem.model`) and the handles to read a solution:
        `problem.input_vars` (x', flat input order), `problem.distance_var` (t, L-inf rho only).
    kind : {"rho", "certify"}
        "rho": minimise the distance d(x', x) over the box of radius `radius`; an optimum
        below `radius` is rho (up to `SOLVER_SLACK` and the solver's tolerances, about
        1e-6), and an infeasible model (or optimum >= `radius`) proves
        rho >= `radius`. "certify": a feasibility problem (objective 0) over the eps-ball;
        infeasible proves the label cannot change within eps, a solution is an
        adversarial point (up to solver tolerances). For ``norm="l1"`` the row
        ``distance/ball`` bounds the L1 distance by eps (the box alone is the L-inf ball).
    label : int
        The label of x the query is about (the prediction unless given).
    target : int or None
        The only label counted as misclassification, if given.
    norm : {"linf", "l1"}
    radius : float
        `eps` (certify) or `eps_cap` (rho; the distance to the farthest point of the domain
        when no cap was given).
    margin : float
        The margin asked for; the rows require `f_j - f_label >= margin - SOLVER_SLACK`.
    candidates : tuple of int
        Labels encoded in the misclassification disjunction.
    proven_by_bounds : bool
        True when the bounds alone already exclude every label: the model then encodes all
        other labels (or `target`) and is infeasible; a solver confirms it quickly.
    bounds_method : str
        How the big-M bounds were computed (see `milpverify.bounds.tighten.compute_bounds`).
    """

    problem: RobustnessProblem
    kind: str
    label: int
    target: int | None
    norm: str
    radius: float
    margin: float
    candidates: tuple[int, ...]
    proven_by_bounds: bool
    bounds_method: str

    @property
    def model(self) -> MilpModel:
        """The solver-neutral `MilpModel` (solve it with `milpverify.solve.get_backend`)."""
        return self.problem.model

    @property
    def input_vars(self) -> IntArray:
        """Indices of the input variables x' in `model` (flat input order)."""
        return self.problem.input_vars

    def to_pyomo(self) -> Any:
        """The model as a ``pyomo.environ.ConcreteModel`` (see `milpverify.solve.pyomo`).

        Variable ``input[i]`` is input element i, ``distance[0]`` the L-inf distance;
        network variables are named after their IR nodes (``fc1[3]``,
        ``relu1[3].post``; ``active`` becomes ``active_`` because Pyomo blocks own an
        ``active`` attribute). The objective is ``obj``.
        """
        from milpverify.solve.pyomo import to_pyomo as _to_pyomo
        return _to_pyomo(self.problem.model)

    def write(self, path: str | os.PathLike[str], *, format: str | None = None,
              generic_names: bool = False) -> Path:
        """Write the model as a CPLEX LP or free MPS file; see `write_query`."""
        fmt = file_format(path, format)
        from milpverify.solve.files import write_model
        return write_model(self.problem.model, path, fmt, generic_names=generic_names)


def build_query(net: Network, x: npt.ArrayLike, *, eps: float | None = None,
                eps_cap: float | None = None, norm: str = "linf",
                domain: tuple[float, float] = (0.0, 1.0), bounds_method: str = "symbolic",
                target: int | None = None, margin: float = 0.0, label: int | None = None,
                bounds_time_limit_s: float | None = None) -> QueryProblem:
    """Build the MILP of one rho query (`eps` None) or one certify query (`eps` given).

    Parameters
    ----------
    net : Network
    x : array
        One input, scaled as the network expects (inside `domain`).
    eps : float, optional
        Radius of a certify query: "is there x' with ||x' - x|| <= eps that is
        misclassified?" (feasibility, objective 0).
    eps_cap : float, optional
        Cap of a rho query: minimise ||x' - x|| over x' in the box of this radius (default:
        the whole domain). Not allowed together with `eps`.
    norm : {"linf", "l1"}
    domain : (low, high)
        Valid input range; the box is clipped to it.
    bounds_method : {"interval", "symbolic", "alpha", "lp", "mip", "progressive"}
        Bounds used for the big-M constants, computed like `rho` does: on the network
        extended by the margins `f_j - f_label`, which also set the disjunction's big-M
        ("symbolic", default, takes milliseconds; "progressive" gives smaller models).
    target : int, optional
        Only count misclassification as this label.
    margin : float
        Require `f_adv >= f_label + margin`.
    label : int, optional
        Label to measure against (default: the network's prediction at x).
    bounds_time_limit_s : float, optional
        Time budget of the solver-based bound methods ("lp", "mip", "progressive").

    Returns
    -------
    QueryProblem
        The model and how to read its answer (`kind`, `radius`, `candidates`, ...).

    Raises
    ------
    InvalidInputError
        Bad `x`, `eps`, `eps_cap` (both given, or not > 0), `norm`, `domain`, `margin`,
        `target`, `label` or `bounds_method`.
    UnboundedError
        If the bounds are not finite.

    Example
    -------
    >>> net, images, _ = milpverify.runs.datasets.load_default()
    >>> q = build_query(net, images[0], eps=0.05)
    >>> q.kind, q.model.n_integer
    """
    if eps is not None and eps_cap is not None:
        raise InvalidInputError(
            "pass `eps` (a certify query) or `eps_cap` (a rho query), not both; "
            f"got eps={eps!r} and eps_cap={eps_cap!r}.")
    check_positive("eps", eps)
    check_positive("eps_cap", eps_cap)
    check_positive("bounds_time_limit_s", bounds_time_limit_s)
    if bounds_method not in BOUNDS_METHODS:
        raise InvalidInputError(
            f"`bounds_method` must be one of {', '.join(map(repr, BOUNDS_METHODS))}; "
            f"got {bounds_method!r}.")
    q = validate_query(net, x, norm=norm, domain=domain, margin=margin, target=target, label=label)
    kind = "rho" if eps is None else "certify"
    if eps is not None:
        radius = float(eps)
    else:
        radius = float(eps_cap) if eps_cap is not None else max_radius(q)
    box = query_box(q, radius)
    qb = query_bounds(net, q, box, bounds_method, bounds_time_limit_s)
    candidates, margin_lower = qb.candidates, qb.margin_lower
    proven = not candidates
    if proven:
        # Keep a well-defined (infeasible) model rather than none; the margin bounds of
        # the excluded labels are not kept, so the big-M comes from the output bounds.
        candidates = [q.target] if q.target is not None else [
            j for j in range(net.num_classes) if j != q.label]
        margin_lower = None
    # certify/L1: the eps-ball is not the box, so keep the distance and bound it by eps.
    with_distance = kind == "rho" or q.norm == "l1"
    problem = build_robustness_problem(net, q.x, q.label, qb.bounds, box[0], box[1],
                                       norm=q.norm, radius=radius,
                                       margin=q.margin - SOLVER_SLACK, candidates=candidates,
                                       with_distance=with_distance, margin_lower=margin_lower)
    if kind == "certify" and q.norm == "l1":
        model = problem.model
        cols = np.flatnonzero(model.c)  # the split parts p, n of x' - x
        model.add_rows(np.zeros(len(cols), dtype=np.int64), cols, np.ones(len(cols)), 1,
                       -np.inf, radius, name="distance/ball")
        model.set_objective(np.zeros(0, dtype=np.int64), np.zeros(0))
    return QueryProblem(problem, kind, q.label, q.target, q.norm, radius, q.margin,
                        tuple(int(j) for j in candidates), proven, bounds_method)


def to_pyomo(net: Network, x: npt.ArrayLike, *, eps: float | None = None,
             eps_cap: float | None = None, norm: str = "linf",
             domain: tuple[float, float] = (0.0, 1.0), bounds_method: str = "symbolic",
             target: int | None = None, margin: float = 0.0, label: int | None = None) -> Any:
    """The MILP of one query (see `build_query`) as a ``pyomo.environ.ConcreteModel``.

    Parameters
    ----------
    net, x, eps, eps_cap, norm, domain, bounds_method, target, margin, label
        As in `build_query`.

    Returns
    -------
    pyomo.environ.ConcreteModel
        Names as in `QueryProblem.to_pyomo`; the objective is ``obj`` (minimised).

    Raises
    ------
    InvalidInputError
        As `build_query`.
    SolverError
        If pyomo is not installed.

    Example
    -------
    >>> m = to_pyomo(net, images[0], eps_cap=0.1)
    >>> pyomo.environ.SolverFactory("appsi_highs").solve(m)
    """
    return build_query(net, x, eps=eps, eps_cap=eps_cap, norm=norm, domain=domain,
                       bounds_method=bounds_method, target=target, margin=margin,
                       label=label).to_pyomo()


def write_query(net: Network, x: npt.ArrayLike, path: str | os.PathLike[str], *,
                format: str | None = None, eps: float | None = None,
                eps_cap: float | None = None, norm: str = "linf",
                domain: tuple[float, float] = (0.0, 1.0), bounds_method: str = "symbolic",
                target: int | None = None, margin: float = 0.0, label: int | None = None,
                generic_names: bool = False) -> QueryProblem:
    """Write the MILP of one query (see `build_query`) as a CPLEX LP or free MPS file.

    Parameters
    ----------
    net, x, eps, eps_cap, norm, domain, bounds_method, target, margin, label
        As in `build_query`.
    path : path-like
    format : {"lp", "mps"}, optional
        Default: the suffix of `path`.
    generic_names : bool
        Write ``x<j>``/``c<i>`` instead of the readable names (LP names write ``[i]`` as
        ``(i)``: ``relu1.post(3)``; see `milpverify.solve.scip.write_model`).

    Returns
    -------
    QueryProblem
        The model written, to read a solver's answer back (`input_vars`, `kind`, ...).

    Raises
    ------
    InvalidInputError
        As `build_query`, or an unknown `format`.

    Example
    -------
    >>> write_query(net, images[0], "query.mps", eps=0.05).kind
    'certify'
    """
    fmt = file_format(path, format)
    query = build_query(net, x, eps=eps, eps_cap=eps_cap, norm=norm, domain=domain,
                        bounds_method=bounds_method, target=target, margin=margin, label=label)
    query.write(path, format=fmt, generic_names=generic_names)
    return query
