r"""Solver-neutral solve API: `SolveStatus`, `SolveOptions`, `SolveResult`, `Backend`, `Session`.

Every backend minimises :math:`c^\top x + c_0` over a `MilpModel` and reports a `SolveResult`.
Outcomes (infeasible, time limit, ...) are statuses, never exceptions; `SolverError` is raised
only when a solver is missing or crashes.

Objective cutoff
----------------
With ``SolveOptions(objective_cutoff=t)`` only solutions with objective *strictly below* ``t``
are wanted (the verification question "is there a counterexample with margin < t?"). Then

* ``OPTIMAL``: a solution with objective < t was found and proven optimal;
* ``CUTOFF``: proven (up to solver tolerances, about 1e-6 relative) that *no* feasible point
  has objective < t; ``dual_bound >= t`` (``+inf`` if the model is infeasible outright);
* limits (``TIME_LIMIT``, ...) only ever carry solutions with objective < t.

A model that is infeasible outright is reported as ``INFEASIBLE`` without a cutoff and as
``CUTOFF`` (or ``INFEASIBLE``) with one: "no solution below the cutoff" is
``result.status.no_solution_proven``.
"""

from __future__ import annotations

import enum
import math
import threading
import warnings
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping, Protocol, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from milpverify.encode.model import MilpModel
from milpverify.errors import InvalidInputError

__all__ = ["Backend", "NodePropagator", "Session", "SolveOptions", "SolveResult", "SolveStatus"]


class SolveStatus(enum.Enum):
    """Outcome of a solve. Values are lowercase strings (``SolveStatus("optimal")``)."""

    #: An optimal solution was found (within ``SolveOptions.mip_gap``; exact up to the
    #: solver's tolerances when ``mip_gap == 0``). With a cutoff: its objective is < cutoff.
    OPTIMAL = "optimal"
    #: Proven: the model has no feasible point.
    INFEASIBLE = "infeasible"
    #: Proven: no feasible point has objective strictly below ``objective_cutoff``.
    CUTOFF = "cutoff"
    #: Stopped by ``time_limit_s``; ``x``/``objective`` hold the best solution, if any.
    TIME_LIMIT = "time_limit"
    #: Stopped at the first feasible (and, with a cutoff, better-than-cutoff) solution as
    #: asked by ``stop_at_first_feasible``; ``x`` is that solution.
    SOLUTION_LIMIT = "solution_limit"
    #: Stopped by another limit (node, memory, gap with an unproven cutoff, interrupt).
    OTHER_LIMIT = "other_limit"
    #: The objective is unbounded below (the model is feasible).
    UNBOUNDED = "unbounded"
    #: The solver failed or returned something that could not be interpreted.
    ERROR = "error"

    @property
    def no_solution_proven(self) -> bool:
        """True for INFEASIBLE and CUTOFF: proven that no (better-than-cutoff) solution exists."""
        return self in (SolveStatus.INFEASIBLE, SolveStatus.CUTOFF)

    @property
    def has_limit(self) -> bool:
        """True if the solve stopped early on a limit (time, solution, other)."""
        return self in (SolveStatus.TIME_LIMIT, SolveStatus.SOLUTION_LIMIT, SolveStatus.OTHER_LIMIT)


@runtime_checkable
class NodePropagator(Protocol):
    """Tightens a branch-and-bound node's variable bounds from knowledge the model lacks.

    At a node, the backend reads the local bounds of `variables` (model columns) and calls
    `propagate(lower, upper)`. It returns the tightened bounds of the same columns (any
    bound it cannot improve returned unchanged), or None when it proves that no feasible
    point of the model lies in the node, which is then cut off. Every returned bound must
    hold for every feasible point of the model inside the given bounds (a node that
    contains a feasible point must never be cut off). `report()` is a short text for the
    result's message (calls, cut-offs, time).

    A propagator may also have ``branch_scores()``: scores of `variables` at the node it
    last propagated (None: no opinion); SCIP then branches on the fractional binary with
    the highest positive score, and otherwise by its own rules.
    """

    @property
    def variables(self) -> NDArray[np.int64]: ...

    def propagate(self, lower: NDArray[np.float64], upper: NDArray[np.float64]
                  ) -> tuple[NDArray[np.float64], NDArray[np.float64]] | None: ...

    def report(self) -> str: ...


def _frozen_empty() -> Mapping[str, object]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class SolveOptions:
    """Options understood by every backend.

    Attributes
    ----------
    time_limit_s : float or None
        Wall-clock limit of one solve; None for no limit.
    threads : int
        Threads the solver may use (SCIP's default solver is sequential: see
        `milpverify.solve.scip`).
    mip_gap : float
        Relative gap at which a MILP solve stops with OPTIMAL; 0 means proven optimal.
    objective_cutoff : float or None
        Only solutions with objective strictly below it are wanted (SCIP ``setObjlimit``,
        HiGHS ``objective_bound``); see the module docstring for the statuses it gives.
    stop_at_first_feasible : bool
        Stop at the first feasible solution found (status SOLUTION_LIMIT), e.g. to find
        any counterexample; combine with ``objective_cutoff`` to require a margin.
    seed : int
        Random seed of the solver.
    solver_params : Mapping[str, object]
        Backend-specific parameters passed through as given (SCIP parameter names for
        "scip", HiGHS option names for "highs", solver options for "pyomo:..."); they are
        applied last, so they override the options above. An unknown name gives a
        `warnings.warn`, never an error and never silence.
    verbose : bool
        Let the solver print its log.
    cancel : threading.Event or None
        Set it from another thread to stop the solve early (status OTHER_LIMIT, with what
        was found so far). SCIP and HiGHS; Pyomo solvers run to their own limits.
    node_propagator : NodePropagator or None
        Called at branch-and-bound nodes to tighten local bounds or cut the node off (SCIP
        only, as a propagator plugin; the other backends ignore it, which is sound since it
        only removes points that are not feasible).
    """

    time_limit_s: float | None = None
    threads: int = 1
    mip_gap: float = 0.0
    objective_cutoff: float | None = None
    stop_at_first_feasible: bool = False
    seed: int = 0
    solver_params: Mapping[str, object] = field(default_factory=_frozen_empty)
    verbose: bool = False
    cancel: threading.Event | None = None
    node_propagator: NodePropagator | None = None

    def __post_init__(self) -> None:
        if self.time_limit_s is not None and not self.time_limit_s > 0:
            raise InvalidInputError(f"time_limit_s must be > 0 or None, got {self.time_limit_s!r}")
        if int(self.threads) != self.threads or self.threads < 1:
            raise InvalidInputError(f"threads must be a positive integer, got {self.threads!r}")
        if not (self.mip_gap >= 0 and math.isfinite(self.mip_gap)):
            raise InvalidInputError(f"mip_gap must be finite and >= 0, got {self.mip_gap!r}")
        if self.objective_cutoff is not None and math.isnan(self.objective_cutoff):
            raise InvalidInputError("objective_cutoff must not be NaN")
        if not isinstance(self.solver_params, Mapping):
            raise InvalidInputError("solver_params must be a mapping of name -> value")
        object.__setattr__(self, "solver_params", MappingProxyType(dict(self.solver_params)))


@dataclass(frozen=True, slots=True)
class SolveResult:
    """Result of one solve.

    Attributes
    ----------
    status : SolveStatus
    objective : float or None
        Objective :math:`c^\\top x + c_0` of the best solution found; None when there is no
        solution (INFEASIBLE, CUTOFF, ERROR, and limits without a solution); ``-inf`` for
        UNBOUNDED.
    dual_bound : float
        Proven lower bound on the minimum: ``-inf`` if unknown, ``+inf`` if INFEASIBLE,
        ``>= objective_cutoff`` if CUTOFF, about ``objective`` if OPTIMAL (within ``mip_gap``).
    x : ndarray of float64, shape (n_vars,), or None
        The best solution in model variable order; present exactly when ``objective`` is a
        finite number (OPTIMAL, SOLUTION_LIMIT, and TIME_LIMIT/OTHER_LIMIT with a solution).
        Solvers satisfy constraints only up to their tolerances: re-check it
        (`MilpModel.max_violation`).
    nodes : int
        Branch-and-bound nodes (0 for LPs or when unknown).
    solve_time_s : float
        Wall-clock seconds of the call (including building the solver's model, for one-shot
        solves).
    backend : str
        Name of the backend that produced it.
    message : str
        The solver's raw status and any notes, for humans.
    row_duals : ndarray of float64, shape (n_rows,), or None
        Dual values of the rows for an LP whose solver reports valid duals (HiGHS), else
        None. Any vector is usable for a rigorous bound (`milpverify.bounds.tighten`).
    dual_ray : ndarray of float64, shape (n_rows,), or None
        For an LP the solver found INFEASIBLE (HiGHS), its dual (Farkas) ray if it gave
        one, else None; `milpverify.bounds.tighten` checks it rigorously before trusting it.
    """

    status: SolveStatus
    objective: float | None
    dual_bound: float
    x: NDArray[np.float64] | None
    nodes: int
    solve_time_s: float
    backend: str
    message: str
    row_duals: NDArray[np.float64] | None = None
    dual_ray: NDArray[np.float64] | None = None

    @property
    def has_solution(self) -> bool:
        """True when ``x`` holds a feasible point."""
        return self.x is not None


@runtime_checkable
class Session(Protocol):
    """A model kept built inside a solver, re-solved with new objectives and bounds.

    Used for per-neuron bound tightening (thousands of LPs/MILPs on the same constraints with
    different single-variable objectives). Use as a context manager or call `close`.
    """

    def minimize(self, cols: ArrayLike, vals: ArrayLike,
                 options: SolveOptions | None = None) -> SolveResult:
        """Minimise ``sum(vals * x[cols])`` (replacing the previous objective; the model's
        objective constant is not added) over the session's constraints and bounds."""
        ...

    def set_bounds(self, idx: ArrayLike, lower: ArrayLike, upper: ArrayLike) -> None:
        """Set (not intersect) variable bounds for later solves; the `MilpModel` is unchanged."""
        ...

    def close(self) -> None:
        """Free the solver's memory; the session cannot be used afterwards."""
        ...

    def __enter__(self) -> Session:
        ...

    def __exit__(self, *exc: object) -> None:
        ...


@runtime_checkable
class Backend(Protocol):
    """A MILP solver behind a common interface (get one with `milpverify.solve.get_backend`)."""

    name: str

    def solve(self, model: MilpModel, options: SolveOptions | None = None) -> SolveResult:
        """Solve ``model`` once."""
        ...

    def session(self, model: MilpModel) -> Session:
        """Build ``model`` in the solver for repeated `Session.minimize` calls. Pass
        ``model.relaxed()`` for an LP session."""
        ...


# ---------------------------------------------------------------------- helpers for backends
def finish_result(status: SolveStatus, objective: float | None, dual_bound: float,
                  x: NDArray[np.float64] | None, options: SolveOptions, *,
                  nodes: int, solve_time_s: float, backend: str, message: str,
                  row_duals: NDArray[np.float64] | None = None,
                  dual_ray: NDArray[np.float64] | None = None) -> SolveResult:
    """Build a `SolveResult`, applying the cutoff rules of the module docstring uniformly.

    Backends call it with the solver's raw outcome mapped to a status, where INFEASIBLE
    means "the solver proved there is no solution it may accept" (so, when a cutoff was
    passed to the solver, no solution below the cutoff). This function then

    * turns INFEASIBLE into CUTOFF with ``dual_bound = cutoff`` when a cutoff is set
      (a solver's dual bound in that case refers to the cut-off problem, e.g. SCIP's
      ``+inf``, so only the cutoff itself is justified);
    * turns OPTIMAL with ``objective >= cutoff`` into CUTOFF (the optimum is not below the
      cutoff) when the dual bound proves it, keeping ``dual_bound = max(dual, cutoff)``;
      otherwise (gap-limited) into OTHER_LIMIT without a solution;
    * drops solutions with ``objective >= cutoff`` from limit statuses.
    """
    cutoff = options.objective_cutoff
    notes: list[str] = []
    if status is not SolveStatus.UNBOUNDED and (x is None or objective is None):
        x, objective = None, None
    if cutoff is not None:
        if status is SolveStatus.INFEASIBLE:
            status, dual_bound, x, objective = SolveStatus.CUTOFF, float(cutoff), None, None
        elif status is SolveStatus.OPTIMAL and objective is not None and objective >= cutoff:
            x, objective = None, None
            if dual_bound >= cutoff or options.mip_gap == 0:
                status, dual_bound = SolveStatus.CUTOFF, max(float(dual_bound), float(cutoff))
                if math.isnan(dual_bound):
                    dual_bound = float(cutoff)
            else:
                status = SolveStatus.OTHER_LIMIT
                notes.append("gap limit reached without a solution below the cutoff")
        elif status.has_limit and objective is not None and objective >= cutoff:
            x, objective = None, None
            notes.append("dropped the best solution: not below the cutoff")
    if status is SolveStatus.INFEASIBLE:
        dual_bound, x, objective = math.inf, None, None
    if status is SolveStatus.UNBOUNDED:
        objective, dual_bound, x = -math.inf, -math.inf, None
    if status is SolveStatus.ERROR:
        # A failed solve proves nothing (HiGHS 1.15 reports "Solve error" with bound 0).
        dual_bound = -math.inf
    if x is not None:
        x = np.asarray(x, dtype=np.float64)
        x.flags.writeable = False
    if notes:
        message = f"{message}; {'; '.join(notes)}"
    return SolveResult(status=status, objective=None if objective is None else float(objective),
                       dual_bound=float(dual_bound), x=x, nodes=int(nodes),
                       solve_time_s=float(solve_time_s), backend=backend, message=message,
                       row_duals=row_duals, dual_ray=dual_ray)


#: The one backend that solves models with quadratic rows (the L2 norm).
QUADRATIC_BACKEND = "scip"


def require_linear(model: MilpModel, backend: str) -> None:
    """Refuse a model with quadratic rows (L2 distance) in a linear-only backend."""
    if model.quadratic:
        raise InvalidInputError(
            f"norm 'l2' makes a mixed-integer quadratic program, which backend {backend!r} "
            f"cannot solve; use backend {QUADRATIC_BACKEND!r}.")


def warn_unknown_param(backend: str, name: str, reason: str = "") -> None:
    """Warn that a `SolveOptions.solver_params` entry was not accepted by the solver."""
    extra = f": {reason}" if reason else ""
    warnings.warn(f"{backend}: solver parameter {name!r} was not accepted and is ignored{extra}",
                  RuntimeWarning, stacklevel=3)


def objective_terms(cols: ArrayLike, vals: ArrayLike, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate a sparse objective; return sorted unique columns and summed coefficients."""
    c = np.asarray(cols)
    if c.size and c.dtype.kind not in "iu":
        raise InvalidInputError(f"objective columns must be integers, got dtype {c.dtype}")
    c = c.astype(np.int64).reshape(-1)
    v = np.asarray(vals, dtype=np.float64).reshape(-1)
    if c.shape != v.shape:
        raise InvalidInputError(f"cols and vals differ in length: {c.shape[0]} vs {v.shape[0]}")
    if c.size and (c.min() < 0 or c.max() >= n):
        raise InvalidInputError(f"objective column out of range [0, {n})")
    if not np.isfinite(v).all():
        raise InvalidInputError("objective coefficients must be finite")
    u, inv = np.unique(c, return_inverse=True)
    return u, np.bincount(inv, weights=v, minlength=u.shape[0])


def bounds_args(idx: ArrayLike, lower: ArrayLike, upper: ArrayLike, n: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate `Session.set_bounds` arguments; return (indices, lower, upper) arrays."""
    j = np.asarray(idx)
    if j.size and j.dtype.kind not in "iu":
        raise InvalidInputError(f"variable indices must be integers, got dtype {j.dtype}")
    j = j.astype(np.int64).reshape(-1)
    if j.size and (j.min() < 0 or j.max() >= n):
        raise InvalidInputError(f"variable index out of range [0, {n})")
    lo = np.array(np.broadcast_to(np.asarray(lower, dtype=np.float64), j.shape))
    up = np.array(np.broadcast_to(np.asarray(upper, dtype=np.float64), j.shape))
    if np.isnan(lo).any() or np.isnan(up).any() or (lo > up).any():
        raise InvalidInputError("bounds must not be NaN and must satisfy lower <= upper")
    return j, lo, up
