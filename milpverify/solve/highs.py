r"""HiGHS backend (highspy): cross-checks SCIP and runs LP-heavy bound tightening.

The model is passed to HiGHS in one call (``passModel`` with the CSC arrays), so building
costs about as much as copying the arrays. A `HighsSession` keeps the model in HiGHS and
changes only the costs (``changeColsCost``) and bounds (``changeColsBounds``) between
solves; LP re-solves warm-start from the previous basis, which makes per-neuron LP bound
tightening much faster than rebuilding (see ``benchmarks/build_speed.py``).

Tolerances (HiGHS defaults, set explicitly; override through ``solver_params``):
``primal_feasibility_tolerance = 1e-7``, ``dual_feasibility_tolerance = 1e-7``,
``mip_feasibility_tolerance = 1e-6``. Solutions are feasible only up to these: re-check them.
The MIP gaps are ``mip_rel_gap = SolveOptions.mip_gap`` and ``mip_abs_gap = 0`` (HiGHS's own
defaults, 1e-4 and 1e-6, would stop before optimality is proven).

Options: ``time_limit``, ``threads`` (HiGHS sizes its thread pool once per process, at the
first solve), ``random_seed``, ``objective_bound`` (the cutoff), ``mip_max_improving_sols``
(1 for ``stop_at_first_feasible``), ``output_flag`` (verbose), then ``solver_params``; every
solve starts from HiGHS's defaults, so a session's solve does not inherit the
``solver_params`` of the one before. ``SolveOptions.cancel`` is
read by HiGHS's interrupt callbacks (MIP, simplex, interior point), which interrupt the
solve once the event is set. highspy releases the GIL while HiGHS runs, so solves in
different threads run at the same time.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike

from milpverify.encode.model import MilpModel
from milpverify.errors import InvalidInputError, SolverError
from milpverify.solve.base import (
    SolveOptions,
    SolveResult,
    SolveStatus,
    bounds_args,
    finish_result,
    objective_terms,
    require_linear,
    warn_unknown_param,
)

__all__ = ["BASIS_BASIC", "BASIS_LOWER", "BASIS_UPPER", "HighsBackend", "HighsSession",
           "build_highs", "new_highs", "unknown_options"]

#: Basis statuses of `HighsSession.set_basis`: nonbasic at the lower bound, basic, nonbasic
#: at the upper bound (of a column, or of a row's activity).
BASIS_LOWER, BASIS_BASIC, BASIS_UPPER = 0, 1, 2

HIGHS_INT_MAX = 2147483647
"""The largest value of HiGHS's integer options (32-bit)."""


def _highspy() -> Any:
    try:
        import highspy
    except ImportError as exc:
        raise SolverError("Backend 'highs' needs highspy, which is not installed "
                          "(pip install highspy).") from exc
    return highspy


_BANNER_LOCK = threading.Lock()
_banner_done = False


def new_highs(*, verbose: bool = False) -> Any:
    """A fresh ``highspy.Highs``; unless `verbose`, without HiGHS's banner on stdout.

    HiGHS prints its "Running HiGHS ..." banner from C++ onto file descriptor 1 when the
    first ``Highs`` of a process is constructed, before ``output_flag`` can be set. That
    first construction therefore runs with descriptor 1 pointed at the null device, so
    solver output appears only with ``verbose`` (the CLI's ``--verbose``).
    """
    global _banner_done
    hp = _highspy()
    with _BANNER_LOCK:
        if verbose or _banner_done:
            _banner_done = True
            return hp.Highs()
        _banner_done = True
        try:
            sys.stdout.flush()
            saved = os.dup(1)
        except (OSError, ValueError):  # no descriptor 1 (embedded interpreters)
            return hp.Highs()
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(null, 1)
            finally:
                os.close(null)
            return hp.Highs()
        finally:
            os.dup2(saved, 1)
            os.close(saved)


def build_highs(model: MilpModel, *, verbose: bool = False) -> Any:
    """Return a ``highspy.Highs`` holding ``model`` (costs include the constant ``c0``)."""
    hp = _highspy()
    h = new_highs(verbose=verbose)
    h.setOptionValue("output_flag", bool(verbose))
    A = model.A.tocsc()
    lp = hp.HighsLp()
    lp.num_col_ = model.n_vars
    lp.num_row_ = model.n_rows
    lp.col_cost_ = model.c
    lp.offset_ = float(model.c0)
    lp.col_lower_ = np.asarray(model.lower, dtype=np.float64)
    lp.col_upper_ = np.asarray(model.upper, dtype=np.float64)
    lp.row_lower_ = np.asarray(model.row_lower, dtype=np.float64)
    lp.row_upper_ = np.asarray(model.row_upper, dtype=np.float64)
    lp.a_matrix_.format_ = hp.MatrixFormat.kColwise
    lp.a_matrix_.start_ = A.indptr.astype(np.int32)
    lp.a_matrix_.index_ = A.indices.astype(np.int32)
    lp.a_matrix_.value_ = A.data.astype(np.float64)
    lp.a_matrix_.num_col_ = model.n_vars
    lp.a_matrix_.num_row_ = model.n_rows
    status = h.passModel(lp)
    if status == hp.HighsStatus.kError:
        raise SolverError(f"HiGHS rejected the model: {status}")
    ints = np.flatnonzero(model.integrality).astype(np.int32)
    if ints.size:
        h.changeColsIntegrality(ints.size, ints, np.ones(ints.size, dtype=np.uint8))
    return h


def unknown_options(names: list[str]) -> list[str]:
    """The names in ``names`` that are not HiGHS options."""
    hp = _highspy()
    h = new_highs()
    h.setOptionValue("output_flag", False)
    return [k for k in names if h.getOptionValue(k)[0] != hp.HighsStatus.kOk]


def _apply_options(h: Any, options: SolveOptions) -> None:
    hp = _highspy()
    h.resetOptions()  # a session's options persist: none of the last solve's solver_params
    values: dict[str, object] = {
        "output_flag": bool(options.verbose),
        "time_limit": float(options.time_limit_s) if options.time_limit_s else math.inf,
        "threads": int(options.threads),
        "random_seed": int(options.seed),
        "mip_rel_gap": float(options.mip_gap),
        "mip_abs_gap": 0.0,
        "objective_bound": (math.inf if options.objective_cutoff is None
                            else float(options.objective_cutoff)),
        "mip_max_improving_sols": 1 if options.stop_at_first_feasible else HIGHS_INT_MAX,
        "primal_feasibility_tolerance": 1e-7,
        "dual_feasibility_tolerance": 1e-7,
        "mip_feasibility_tolerance": 1e-6,
    }
    for key, value in values.items():
        h.setOptionValue(key, value)
    for key, value in options.solver_params.items():
        try:
            status = h.setOptionValue(key, value)
        except (TypeError, ValueError, RuntimeError) as exc:
            warn_unknown_param("highs", key, str(exc))
            continue
        if status != hp.HighsStatus.kOk:
            warn_unknown_param("highs", key, str(status))


def _interruptible_run(h: Any, cancel: threading.Event | None) -> None:
    """``h.run()``; with `cancel`, HiGHS's interrupt callbacks stop it once the event is set."""
    if cancel is None:
        h.run()
        return

    def check(event: Any) -> None:
        if cancel.is_set():
            event.interrupt()

    hooks = (h.cbMipInterrupt, h.cbSimplexInterrupt, h.cbIpmInterrupt)
    for hook in hooks:
        hook.subscribe(check)
    try:
        h.run()
    finally:
        for hook in hooks:
            hook.unsubscribe(check)


def _run(h: Any, n: int, is_mip: bool, options: SolveOptions, t0: float) -> SolveResult:
    hp = _highspy()
    MS = hp.HighsModelStatus
    _apply_options(h, options)
    _interruptible_run(h, options.cancel)
    ms = h.getModelStatus()
    message = f"HiGHS status {h.modelStatusToString(ms)!r}"
    status = {
        MS.kOptimal: SolveStatus.OPTIMAL,
        MS.kInfeasible: SolveStatus.INFEASIBLE,
        MS.kUnbounded: SolveStatus.UNBOUNDED,
        MS.kTimeLimit: SolveStatus.TIME_LIMIT,
        MS.kSolutionLimit: SolveStatus.SOLUTION_LIMIT,
        MS.kIterationLimit: SolveStatus.OTHER_LIMIT,
        MS.kInterrupt: SolveStatus.OTHER_LIMIT,
        MS.kMemoryLimit: SolveStatus.OTHER_LIMIT,
        MS.kHighsInterrupt: SolveStatus.OTHER_LIMIT,
        MS.kModelEmpty: SolveStatus.OPTIMAL,
    }.get(ms, SolveStatus.ERROR)
    if ms == MS.kObjectiveBound:
        # proven: no solution better than objective_bound (dual simplex / MIP pruning)
        status = (SolveStatus.INFEASIBLE if options.objective_cutoff is not None
                  else SolveStatus.OTHER_LIMIT)
    info = h.getInfo()
    x = objective = row_duals = None
    feasible = info.primal_solution_status == hp.kSolutionStatusFeasible
    if status is not SolveStatus.INFEASIBLE and feasible:
        solution = h.getSolution()
        x = np.array(solution.col_value, dtype=np.float64)
        objective = float(info.objective_function_value)
        if not is_mip and solution.dual_valid:
            row_duals = np.array(solution.row_dual, dtype=np.float64)
    if is_mip:
        dual = float(info.mip_dual_bound)
        nodes = int(max(info.mip_node_count, 0))
    else:
        dual = objective if status is SolveStatus.OPTIMAL and objective is not None else -math.inf
        nodes = 0
    if ms == MS.kModelEmpty:
        objective = float(h.getLp().offset_)
        x, dual = np.zeros(n), objective
    if ms == MS.kUnboundedOrInfeasible:
        status, note = _disambiguate(h, n)
        message += f"; {note}"
    if math.isnan(dual):
        dual = -math.inf
    dual_ray = None
    if not is_mip and status is SolveStatus.INFEASIBLE:
        _, has_ray, ray = h.getDualRay()
        if has_ray:
            dual_ray = np.array(ray, dtype=np.float64)
    return finish_result(status, objective, dual, x, options, nodes=nodes,
                         solve_time_s=time.perf_counter() - t0, backend="highs", message=message,
                         row_duals=row_duals, dual_ray=dual_ray)


def _disambiguate(h: Any, n: int) -> tuple[SolveStatus, str]:
    """"Infeasible or unbounded": solve the feasibility problem (zero costs), then restore."""
    hp = _highspy()
    lp = h.getLp()
    cost = np.array(lp.col_cost_, dtype=np.float64)
    idx = np.arange(n, dtype=np.int32)
    h.changeColsCost(n, idx, np.zeros(n))
    h.setOptionValue("objective_bound", math.inf)
    h.setOptionValue("mip_max_improving_sols", 1)
    h.setOptionValue("presolve", "off")
    h.run()
    ms = h.getModelStatus()
    MS = hp.HighsModelStatus
    if ms == MS.kInfeasible:
        status = SolveStatus.INFEASIBLE
    elif ms in (MS.kOptimal, MS.kSolutionLimit) or (
            h.getInfo().primal_solution_status == hp.kSolutionStatusFeasible):
        status = SolveStatus.UNBOUNDED
    else:
        status = SolveStatus.ERROR
    h.changeColsCost(n, idx, cost)
    h.setOptionValue("presolve", "choose")
    return status, f"feasibility re-solve gave {h.modelStatusToString(ms)!r}"


class HighsBackend:
    """HiGHS through highspy (see the module docstring)."""

    name = "highs"

    def __init__(self) -> None:
        _highspy()

    def solve(self, model: MilpModel, options: SolveOptions | None = None) -> SolveResult:
        """Build ``model`` in HiGHS and solve it once."""
        options = options or SolveOptions()
        t0 = time.perf_counter()
        require_linear(model, self.name)
        h = build_highs(model, verbose=options.verbose)
        try:
            return _run(h, model.n_vars, bool(model.n_integer), options, t0)
        except (RuntimeError, ValueError, TypeError) as exc:
            raise SolverError(f"HiGHS failed: {exc}") from exc

    def session(self, model: MilpModel) -> HighsSession:
        """Keep ``model`` in HiGHS for repeated `HighsSession.minimize` calls."""
        return HighsSession(model)


class HighsSession:
    """A `MilpModel` kept in HiGHS; objectives and bounds change in place (LPs warm-start)."""

    backend = "highs"

    def __init__(self, model: MilpModel) -> None:
        self._n = model.n_vars
        self._is_mip = bool(model.n_integer)
        require_linear(model, self.backend)
        self._h = build_highs(model)
        n = self._n
        self._h.changeColsCost(n, np.arange(n, dtype=np.int32), np.zeros(n))
        self._h.changeObjectiveOffset(0.0)
        self._cost_idx = np.zeros(0, dtype=np.int32)

    def _check_open(self) -> None:
        if self._h is None:
            raise InvalidInputError("the HiGHS session is closed")

    def minimize(self, cols: ArrayLike, vals: ArrayLike,
                 options: SolveOptions | None = None) -> SolveResult:
        """Minimise ``sum(vals * x[cols])`` (duplicates summed) and return the result."""
        self._check_open()
        options = options or SolveOptions()
        t0 = time.perf_counter()
        c, v = objective_terms(cols, vals, self._n)
        h = self._h
        old = self._cost_idx
        if old.size:
            h.changeColsCost(old.size, old, np.zeros(old.size))
        idx = c.astype(np.int32)
        if idx.size:
            h.changeColsCost(idx.size, idx, v)
        self._cost_idx = idx
        try:
            return _run(h, self._n, self._is_mip, options, t0)
        except (RuntimeError, ValueError, TypeError) as exc:
            raise SolverError(f"HiGHS failed: {exc}") from exc

    def set_bounds(self, idx: ArrayLike, lower: ArrayLike, upper: ArrayLike) -> None:
        """Set variable bounds (``±inf`` allowed) for the following solves."""
        self._check_open()
        j, lo, up = bounds_args(idx, lower, upper, self._n)
        if j.size:
            self._h.changeColsBounds(j.size, j.astype(np.int32), lo, up)

    def add_rows(self, cols: ArrayLike, coeffs: ArrayLike, lower: ArrayLike,
                 upper: ArrayLike) -> None:
        """Append rows ``lower <= coeffs @ x[cols] <= upper`` (`coeffs` dense or scipy sparse,
        one row per constraint) for the following solves. HiGHS keeps its basis, so the next LP
        warm-starts (the lazy LP restriction adds rows round by round)."""
        self._check_open()
        col_idx = np.asarray(cols, dtype=np.int64)
        if sp.issparse(coeffs):
            csr = sp.csr_array(coeffs)
            csr.eliminate_zeros()
            k = csr.shape[0]
            if k == 0:
                return
            starts, index, values = csr.indptr[:-1], col_idx[csr.indices], csr.data
        else:
            a = np.atleast_2d(np.asarray(coeffs, dtype=np.float64))
            k = a.shape[0]
            if k == 0:
                return
            rows, pos = np.nonzero(a)
            starts, index, values = np.searchsorted(rows, np.arange(k)), col_idx[pos], a[rows, pos]
        lo = np.broadcast_to(np.asarray(lower, dtype=np.float64), (k,)).copy()
        up = np.broadcast_to(np.asarray(upper, dtype=np.float64), (k,)).copy()
        self._h.addRows(k, lo, up, len(values), np.asarray(starts, dtype=np.int32),
                        np.asarray(index, dtype=np.int32), np.asarray(values, dtype=np.float64))

    @property
    def num_rows(self) -> int:
        """Number of rows the model holds now."""
        self._check_open()
        return int(self._h.getNumRow())

    def set_row_bounds(self, idx: ArrayLike, lower: ArrayLike, upper: ArrayLike) -> None:
        """Set row bounds (``±inf`` allowed) for the following solves."""
        self._check_open()
        j = np.asarray(idx, dtype=np.int32)
        k = j.size
        if k:
            lo = np.broadcast_to(np.asarray(lower, dtype=np.float64), (k,)).copy()
            up = np.broadcast_to(np.asarray(upper, dtype=np.float64), (k,)).copy()
            self._h.changeRowsBounds(k, j, lo, up)

    def truncate_rows(self, keep: int) -> None:
        """Delete every row from index `keep` on (rows added since the model held `keep`).

        The basis is dropped with them: the next solve starts from `set_basis` or afresh."""
        self._check_open()
        total = int(self._h.getNumRow())
        if total > keep:
            self._h.deleteRows(total - keep, np.arange(keep, total, dtype=np.int32))
        self._h.clearSolver()

    def clear_basis(self) -> None:
        """Forget the basis (and solution): the next solve starts afresh."""
        self._check_open()
        self._h.clearSolver()

    def set_basis(self, col_status: ArrayLike, row_status: ArrayLike) -> bool:
        """Start the next LP solve from this basis (`BASIS_LOWER`, `BASIS_BASIC`, `BASIS_UPPER`
        per column and row); False, and no basis, if HiGHS rejects it."""
        self._check_open()
        hp = _highspy()
        statuses = (hp.HighsBasisStatus.kLower, hp.HighsBasisStatus.kBasic,
                    hp.HighsBasisStatus.kUpper)
        basis = hp.HighsBasis()
        basis.col_status = [statuses[s] for s in np.asarray(col_status).tolist()]
        basis.row_status = [statuses[s] for s in np.asarray(row_status).tolist()]
        basis.valid = True
        if self._h.setBasis(basis) == hp.HighsStatus.kOk:
            return True
        self._h.clearSolver()
        return False

    def close(self) -> None:
        """Free HiGHS's memory."""
        if self._h is not None:
            self._h.clear()
            self._h = None

    def __enter__(self) -> HighsSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

