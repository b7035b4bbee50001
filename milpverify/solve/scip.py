r"""SCIP backend (pyscipopt), the default, plus LP/MPS file writing (`write_model`).

Building
--------
`build_scip` copies a `MilpModel` into a ``pyscipopt.Model``. Several ways were measured
(``benchmarks/build_speed.py``; numbers in ``benchmarks/results/build_speed.csv``):

``"coef"`` (default, fastest)
    one ``addVar`` per variable, then per row an empty linear constraint filled with
    ``addCoefLinear`` driven by ``map`` over pre-sliced Python lists (no ``Expr`` objects);
``"expr"``
    per row an ``Expr`` built directly from a ``{Term: coef}`` dict;
``"quicksum"``
    per row ``quicksum(a * x)`` (the textbook way, slowest of the per-row ones);
``"mps"``
    write a free MPS file with `write_model` (vectorised string building) and
    ``readProblem`` it, then map variables back by name;
``"matrix"``
    ``addMatrixVar`` + ``addMatrixCons`` on dense row blocks (``A @ X`` with a scipy sparse
    ``A`` raises a dtype error in pyscipopt 6.3); slowest, benchmark only.

Tolerances
----------
pyscipopt's PyPI build has no exact rational mode. We set SCIP's defaults explicitly:
``numerics/feastol = 1e-6`` (primal feasibility, relative), ``numerics/dualfeastol = 1e-7``,
``numerics/epsilon = 1e-9``; callers can override them through ``solver_params``. Returned
solutions are therefore feasible only up to about 1e-6: re-check them in exact or float
arithmetic (`MilpModel.max_violation`) before reporting a counterexample. SCIP compares the
objective with ``objective_cutoff`` (``setObjlimit``) with a similar tolerance.

Numbers of magnitude >= 1e20 are infinity for SCIP; infinite bounds are passed as such.

Options
-------
Every solve sets ``limits/time``, ``limits/gap``, ``limits/solutions`` (1 with
``stop_at_first_feasible``, else -1), ``randomization/randomseedshift`` (seed),
``parallel/maxnthreads`` and ``lp/threads`` (threads), ``display/verblevel`` (0 unless
verbose); ``solver_params`` may also hold SCIP's meta settings (`META_SETTINGS`, e.g.
``{"heuristics/emphasis": "off"}``). SCIP's ``optimize()`` is sequential: ``threads``
only reaches the LP solver and SCIP's concurrent mode, which is not used. Solves run
through ``optimizeNogil`` where pyscipopt has it, so models solved in different threads
run in parallel; ``SolveOptions.cancel`` interrupts a solve from another thread.

Separators
----------
A model's cut `Separator`s (`MilpModel.add_separator`, e.g. the ideal ReLU cuts of
`milpverify.encode.ideal`) run in one SCIP separator plugin
(``scip_plugins.SEPARATOR_NAME``) at every node by default (LP solutions only); each round
adds at most ``scip_plugins.MAX_CUTS_PER_ROUND`` cuts per separator as removable global rows. The result's ``message`` reports how many.
`ScipSession` (bound tightening) does not run them.

Node propagation
----------------
``SolveOptions.node_propagator`` (a `NodePropagator`) runs as one SCIP propagator plugin
(``scip_plugins.PROPAGATOR_NAME``) before the LP of every node (not inside probing or
diving, where the heuristics' own propagation suffices): it gets the local bounds of its variables, and its
tightened bounds become local bound changes, or it cuts the node off. It is called again
at a node only when a bound it reads changed since its last call. SCIP keeps no local
bounds of a variable that presolve multi-aggregated (typically a pre-activation, a linear
function of the previous layer): such a variable is passed as unbounded and never
tightened (keeping them from multi-aggregation was measured 3.5x fewer nodes per second
on a 4-40-40-40-3 net). Tune with ``propagating/milpverify_nodes/freq`` etc. in ``solver_params``;
the result's ``message`` reports its calls, cut-offs and time.

Sessions
--------
`ScipSession` builds once and, per objective, calls ``freeTransform()``, replaces the
objective, re-applies options and re-optimises (presolve runs again each time; solutions of
earlier solves are kept by SCIP and re-used as starting solutions).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
import math
import os
import tempfile
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np
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
    warn_unknown_param,
)

if TYPE_CHECKING:
    import pyscipopt
from milpverify.solve.files import write_model
from milpverify.solve.scip_plugins import SCIP_INFINITY, _attach_propagator, _attach_separators

FEASTOL = 1e-6


DUALFEASTOL = 1e-7


EPSILON = 1e-9


BUILD_METHODS = ("coef", "expr", "quicksum", "mps", "matrix")


_STATUS = {
    "optimal": SolveStatus.OPTIMAL,
    "gaplimit": SolveStatus.OPTIMAL,  # only reached when mip_gap > 0 was asked for
    "infeasible": SolveStatus.INFEASIBLE,
    "unbounded": SolveStatus.UNBOUNDED,
    "timelimit": SolveStatus.TIME_LIMIT,
    "sollimit": SolveStatus.SOLUTION_LIMIT,
    "bestsollimit": SolveStatus.SOLUTION_LIMIT,
    "userinterrupt": SolveStatus.OTHER_LIMIT,
    "nodelimit": SolveStatus.OTHER_LIMIT,
    "totalnodelimit": SolveStatus.OTHER_LIMIT,
    "stallnodelimit": SolveStatus.OTHER_LIMIT,
    "memlimit": SolveStatus.OTHER_LIMIT,
    "restartlimit": SolveStatus.OTHER_LIMIT,
    "primallimit": SolveStatus.OTHER_LIMIT,
    "duallimit": SolveStatus.OTHER_LIMIT,
}


def _pyscipopt() -> Any:
    try:
        import pyscipopt
    except ImportError as exc:
        raise SolverError("Backend 'scip' needs pyscipopt, which is not installed "
                          "(pip install pyscipopt).") from exc
    return pyscipopt


def scip_version() -> str:
    """SCIP's own version (``pyscipopt.Model().version()``), e.g. ``"10.0"``.

    Raises
    ------
    SolverError
        pyscipopt is not installed.
    """
    return str(_pyscipopt().Model().version())


def _scip_bound(a: np.ndarray) -> list[float]:
    return np.clip(a, -SCIP_INFINITY, SCIP_INFINITY).tolist()


def _from_scip(v: float) -> float:
    if v >= SCIP_INFINITY:
        return math.inf
    if v <= -SCIP_INFINITY:
        return -math.inf
    return float(v)


# ---------------------------------------------------------------------------- building
def build_scip(model: MilpModel, *, method: str = "coef", names: bool = True,
               verbose: bool = False) -> tuple[pyscipopt.Model, list[pyscipopt.Variable]]:
    """Copy ``model`` into a new ``pyscipopt.Model``.

    Parameters
    ----------
    model : MilpModel
    method : {"coef", "expr", "quicksum", "mps", "matrix"}
        How to pass the rows (see the module docstring); "coef" is the fastest.
    names : bool
        Give SCIP the model's variable/row names (readable logs and files); False uses
        SCIP's generic names and saves a little time.
    verbose : bool
        Leave SCIP's output on.

    Returns
    -------
    scip : pyscipopt.Model
        The model, in stage PROBLEM, objective sense minimise.
    variables : list of pyscipopt.Variable
        SCIP's variable for each model variable, in model order.
    """
    ps = _pyscipopt()
    if method not in BUILD_METHODS:
        raise InvalidInputError(f"unknown SCIP build method {method!r}; valid: {BUILD_METHODS}")
    scip = ps.Model()
    scip.hideOutput(not verbose)
    if not verbose:
        scip.setParam("display/verblevel", 0)
    if model.quadratic and method in ("mps", "matrix"):
        raise InvalidInputError(f"SCIP build method {method!r} cannot pass quadratic rows; "
                                "use 'coef', 'expr' or 'quicksum'")
    if method == "mps":
        return scip, _build_via_mps(scip, model)
    if method == "matrix":
        return scip, _build_matrix(ps, scip, model)

    variables = _add_vars(scip, model, names)
    A = model.A
    rl = _scip_bound(model.row_lower)
    ru = _scip_bound(model.row_upper)
    rnames = model.row_names() if names else [f"c{i}" for i in range(model.n_rows)]
    ip = A.indptr.tolist()
    data = A.data.tolist()
    Expr, ExprCons = ps.scip.Expr, ps.scip.ExprCons
    add_cons = scip.addCons
    if method == "coef":
        xv = [variables[k] for k in A.indices.tolist()]
        add_coef = scip.addCoefLinear
        consume = collections.deque(maxlen=0).extend
        rep = itertools.repeat
        for i in range(model.n_rows):
            cons = add_cons(ExprCons(Expr(), rl[i], ru[i]), name=rnames[i])
            s, e = ip[i], ip[i + 1]
            if e > s:
                consume(map(add_coef, rep(cons, e - s), xv[s:e], data[s:e]))
    elif method == "expr":
        Term = ps.scip.Term
        terms = [Term(v) for v in variables]
        tv = [terms[k] for k in A.indices.tolist()]
        for i in range(model.n_rows):
            s, e = ip[i], ip[i + 1]
            add_cons(ExprCons(Expr(dict(zip(tv[s:e], data[s:e]))), rl[i], ru[i]), name=rnames[i])
    else:  # quicksum
        quicksum = ps.quicksum
        idx = A.indices.tolist()
        for i in range(model.n_rows):
            expr = quicksum(data[k] * variables[idx[k]] for k in range(ip[i], ip[i + 1]))
            add_cons(ExprCons(expr, rl[i], ru[i]), name=rnames[i])
    _add_quadratic(ps, scip, model, variables)
    return scip, variables


#: Factor on both sides of a quadratic row: SCIP measures a nonlinear row's violation
#: absolutely, so this tightens its feasibility tolerance (1e-6 on a squared distance is
#: 5e-6 on a distance of 0.1) without touching the linear rows.
QUAD_SCALE = 1e3


def _add_quadratic(ps: Any, scip: Any, model: MilpModel, variables: list[Any]) -> None:
    """The model's convex rows ``sum x_k^2 <= rhs + x_t``, disaggregated for SCIP.

    One variable ``s_k >= x_k^2`` per term (a one-dimensional convex row) and the linear
    row ``sum s_k - x_t <= rhs``. SCIP separates convex rows by gradient cuts, valid
    everywhere, so its dual bound stays a bound of the quadratic problem. An aggregated row
    gets one cut per round, which converges slowly over hundreds of inputs; per-term rows
    give a tight outer approximation at once (the extended formulation).
    """
    Term, Expr, ExprCons = ps.scip.Term, ps.scip.Expr, ps.scip.ExprCons
    add_var, add_cons = scip.addVar, scip.addCons
    for q, row in enumerate(model.quadratic):
        terms = {}
        for k in row.cols.tolist():
            v = variables[k]
            s = add_var(f"sum_squares[{q}].term[{k}]", "C", 0.0, None, 0.0)
            add_cons(ExprCons(Expr({Term(v, v): QUAD_SCALE, Term(s): -QUAD_SCALE}), None, 0.0),
                     name=f"sum_squares[{q}]/term[{k}]")
            terms[Term(s)] = 1.0
        if row.bound >= 0:
            terms[Term(variables[row.bound])] = -1.0
        add_cons(ExprCons(Expr(terms), None, row.rhs), name=f"sum_squares[{q}]")


def _add_vars(scip: Any, model: MilpModel, names: bool) -> list[Any]:
    lo, up = model.lower, model.upper
    isint = model.integrality
    binary = isint & (lo >= 0) & (up <= 1)
    vtype = np.where(binary, "B", np.where(isint, "I", "C")).tolist()
    lb = [None if v <= -SCIP_INFINITY else v for v in _scip_bound(lo)]
    ub = [None if v >= SCIP_INFINITY else v for v in _scip_bound(up)]
    obj = model.c.tolist()
    vnames = model.var_names() if names else [f"x{j}" for j in range(model.n_vars)]
    add = scip.addVar
    variables = [add(vnames[j], vtype[j], lb[j], ub[j], obj[j]) for j in range(model.n_vars)]
    if model.c0:
        scip.addObjoffset(model.c0)
    return variables


def _build_via_mps(scip: Any, model: MilpModel) -> list[Any]:
    fd, path = tempfile.mkstemp(suffix=".mps", prefix="milpverify_")
    os.close(fd)
    try:
        write_model(model, path, "mps", generic_names=True)
        scip.readProblem(path)
    finally:
        os.unlink(path)
    variables: list[Any] = [None] * model.n_vars
    for v in scip.getVars():
        variables[int(v.name[1:])] = v
    return variables


def _build_matrix(ps: Any, scip: Any, model: MilpModel) -> list[Any]:
    """addMatrixVar + addMatrixCons on dense row blocks (benchmark only: slow)."""
    n = model.n_vars
    isint = model.integrality
    lo = np.clip(model.lower, -SCIP_INFINITY, SCIP_INFINITY).astype(object)
    up = np.clip(model.upper, -SCIP_INFINITY, SCIP_INFINITY).astype(object)
    X = scip.addMatrixVar((n,), name="x", vtype=np.where(isint, "I", "C"), lb=lo, ub=up,
                          obj=model.c)
    if model.c0:
        scip.addObjoffset(model.c0)
    A = model.A
    rl, ru = np.asarray(model.row_lower), np.asarray(model.row_upper)
    nonempty = np.diff(A.indptr) > 0
    block = max(1, 4_000_000 // max(n, 1))
    for s in range(0, model.n_rows, block):
        rows = np.arange(s, min(s + block, model.n_rows))
        rows = rows[nonempty[rows]]
        if rows.size == 0:
            continue
        ex = A[rows].toarray() @ X
        fin_up = np.isfinite(ru[rows])
        fin_lo = np.isfinite(rl[rows])
        if fin_up.any():
            scip.addMatrixCons(ex[fin_up] <= ru[rows][fin_up])
        if fin_lo.any():
            scip.addMatrixCons(ex[fin_lo] >= rl[rows][fin_lo])
    bad = (~nonempty) & ((rl > 0) | (ru < 0))
    if bad.any():  # an empty row that no x satisfies
        scip.addCons(ps.scip.ExprCons(ps.scip.Expr(), 1.0, 0.0), name="empty_infeasible_row")
    return X.tolist()


# ---------------------------------------------------------------------------- solving
def unknown_options(names: list[str]) -> list[str]:
    """The names in ``names`` that are not SCIP parameters."""
    probe = _pyscipopt().Model()
    out = []
    for k in names:
        try:
            probe.getParam(k)
        except KeyError:
            out.append(k)
    probe.freeProb()
    return out


def _apply_options(scip: Any, options: SolveOptions, backend: str = "scip") -> None:
    set_param = scip.setParam
    scip.hideOutput(not options.verbose)
    set_param("display/verblevel", 4 if options.verbose else 0)
    limit = options.time_limit_s
    set_param("limits/time", limit if limit and math.isfinite(limit) else SCIP_INFINITY)
    set_param("limits/gap", float(options.mip_gap))
    set_param("limits/solutions", 1 if options.stop_at_first_feasible else -1)
    set_param("randomization/randomseedshift", int(options.seed))
    set_param("parallel/maxnthreads", int(options.threads))
    set_param("lp/threads", int(options.threads))
    set_param("numerics/feastol", FEASTOL)
    set_param("numerics/dualfeastol", DUALFEASTOL)
    set_param("numerics/epsilon", EPSILON)
    cutoff = options.objective_cutoff
    scip.setObjlimit(SCIP_INFINITY if cutoff is None else
                     float(np.clip(cutoff, -SCIP_INFINITY, SCIP_INFINITY)))
    params = dict(options.solver_params)
    for key in [k for k in params if k in META_SETTINGS]:  # first: plain names override them
        value = str(params.pop(key)).lower()
        if value not in META_VALUES:
            warn_unknown_param(backend, key, f"give one of {', '.join(META_VALUES)}")
            continue
        getattr(scip, META_SETTINGS[key])(getattr(_pyscipopt().SCIP_PARAMSETTING,
                                                  value.upper()))
    for key, value in params.items():
        try:
            set_param(key, value)
        except (KeyError, LookupError, ValueError, TypeError) as exc:
            warn_unknown_param(backend, key, str(exc))


META_SETTINGS = {"heuristics/emphasis": "setHeuristics", "presolving/emphasis": "setPresolve",
                 "separating/emphasis": "setSeparating"}
"""SCIP's meta settings, accepted in ``solver_params`` as e.g. ``{"heuristics/emphasis":
"off"}``: each sets a group of parameters at once (pyscipopt's ``setHeuristics`` etc.),
before the other ``solver_params``, which can override single members."""


META_VALUES = ("default", "aggressive", "fast", "off")
"""Values of a meta setting (``SCIP_PARAMSETTING``)."""


CANCEL_POLL_S = 0.05
"""How often a solve with ``SolveOptions.cancel`` looks at the event."""


def _run(scip: Any, cancel: threading.Event | None = None) -> None:
    """``optimizeNogil`` where pyscipopt has it (>= 5.1), so that solves in other threads
    run at the same time (plugins written in Python take the GIL back while they run).

    With `cancel`, a watcher thread interrupts the solve once the event is set; it asks
    again at every poll because SCIP clears the interrupt flag when a solve starts.
    """
    run = getattr(scip, "optimizeNogil", None) or scip.optimize
    if cancel is None:
        run()
        return
    done = threading.Event()

    def watch() -> None:
        while not done.wait(CANCEL_POLL_S):
            if cancel.is_set():
                with contextlib.suppress(Exception):  # not in a solving stage (yet / any more)
                    scip.interruptSolve()

    watcher = threading.Thread(target=watch, name="scip-cancel", daemon=True)
    watcher.start()
    try:
        run()
    finally:
        done.set()
        watcher.join()


def _optimize(scip: Any, variables: list[Any], options: SolveOptions, t0: float,
              backend: str = "scip") -> SolveResult:
    """Run ``optimize`` on a model in stage PROBLEM and turn the outcome into a `SolveResult`."""
    try:
        _apply_options(scip, options, backend)
        _run(scip, options.cancel)
        raw = scip.getStatus()
        status = _STATUS.get(raw, SolveStatus.ERROR)
        message = f"SCIP status {raw!r}"
        sol = scip.getBestSol() if scip.getNSols() > 0 else None
        x = objective = None
        if sol is not None and status is not SolveStatus.INFEASIBLE:
            x = np.array([sol[v] for v in variables], dtype=np.float64)
            objective = float(scip.getSolObjVal(sol))
        dual = _from_scip(scip.getDualbound())
        nodes = int(scip.getNTotalNodes())
        if raw == "inforunbd":
            status, note = _disambiguate(scip)
            message = f"{message}; {note}"
    except (OSError, RuntimeError, ValueError, LookupError, Warning) as exc:
        raise SolverError(f"SCIP failed: {exc}") from exc
    return finish_result(status, objective, dual, x, options, nodes=nodes,
                         solve_time_s=time.perf_counter() - t0, backend=backend, message=message)


def _disambiguate(scip: Any) -> tuple[SolveStatus, str]:
    """SCIP said "infeasible or unbounded": re-solve the feasibility problem (zero objective).

    Leaves the model solved with a zero objective; sessions set a new objective anyway.
    """
    ps = _pyscipopt()
    scip.freeTransform()
    scip.setObjective(ps.scip.Expr(), clear=True)
    scip.setObjlimit(SCIP_INFINITY)
    scip.setParam("limits/solutions", 1)
    _run(scip)
    raw = scip.getStatus()
    if raw == "infeasible":
        status = SolveStatus.INFEASIBLE
    elif raw in ("optimal", "sollimit") or scip.getNSols() > 0:
        status = SolveStatus.UNBOUNDED
    else:
        status = SolveStatus.ERROR
    return status, f"feasibility re-solve gave {raw!r}"


class ScipBackend:
    """SCIP through pyscipopt (see the module docstring for tolerances and options).

    Parameters
    ----------
    build_method : str
        Default ``"coef"``; see `build_scip`.
    names : bool
        Pass variable/row names to SCIP (default True).
    """

    name = "scip"

    def __init__(self, build_method: str = "coef", names: bool = True) -> None:
        if build_method not in BUILD_METHODS:
            raise InvalidInputError(f"unknown SCIP build method {build_method!r}; "
                                    f"valid: {BUILD_METHODS}")
        _pyscipopt()
        self.build_method = build_method
        self.names = names

    def solve(self, model: MilpModel, options: SolveOptions | None = None) -> SolveResult:
        """Build ``model`` in SCIP and solve it once."""
        options = options or SolveOptions()
        t0 = time.perf_counter()
        scip, variables = build_scip(model, method=self.build_method, names=self.names,
                                     verbose=options.verbose)
        try:
            plugin = _attach_separators(scip, model, variables) if model.separators else None
            prop = options.node_propagator
            prop_plugin = _attach_propagator(scip, prop, variables) if prop is not None else None
            result = _optimize(scip, variables, options, t0, self.name)
            notes = [result.message]
            if plugin is not None:
                notes.append(f"{plugin.cuts} separator cuts in {plugin.rounds} rounds")
            if prop_plugin is not None:
                notes.append(f"node propagator: {prop_plugin.calls} calls, "
                             f"{prop_plugin.cutoffs} cut-offs, {prop_plugin.tightened} bounds "
                             f"tightened, {prop_plugin.seconds:.3f} s; {prop.report()}")
            if len(notes) > 1:
                result = dataclasses.replace(result, message="; ".join(m for m in notes if m))
            return result
        finally:
            scip.freeProb()

    def session(self, model: MilpModel) -> ScipSession:
        """Build ``model`` once for repeated `ScipSession.minimize` calls."""
        return ScipSession(model, build_method=self.build_method, names=self.names)


class ScipSession:
    """A `MilpModel` kept in SCIP for many solves with different objectives and bounds."""

    backend = "scip"

    def __init__(self, model: MilpModel, *, build_method: str = "coef", names: bool = True) -> None:
        self._ps = _pyscipopt()
        self._n = model.n_vars
        self._scip, self._vars = build_scip(model, method=build_method, names=names)
        self._terms = None
        self._lower = np.array(model.lower)
        self._upper = np.array(model.upper)

    def _check_open(self) -> None:
        if self._scip is None:
            raise InvalidInputError("the SCIP session is closed")

    def minimize(self, cols: ArrayLike, vals: ArrayLike,
                 options: SolveOptions | None = None) -> SolveResult:
        """Minimise ``sum(vals * x[cols])`` (duplicates summed) and return the result."""
        self._check_open()
        options = options or SolveOptions()
        t0 = time.perf_counter()
        cols_a, vals_a = objective_terms(cols, vals, self._n)
        scip = self._scip
        scip.freeTransform()
        if self._terms is None:
            Term = self._ps.scip.Term
            self._terms = [Term(v) for v in self._vars]
        terms = self._terms
        scip.setObjective(self._ps.scip.Expr(
            {terms[j]: v for j, v in zip(cols_a.tolist(), vals_a.tolist())}), clear=True)
        return _optimize(scip, self._vars, options, t0, "scip")

    def set_bounds(self, idx: ArrayLike, lower: ArrayLike, upper: ArrayLike) -> None:
        """Set variable bounds (``±inf`` allowed) for the following solves."""
        self._check_open()
        j, lo, up = bounds_args(idx, lower, upper, self._n)
        scip = self._scip
        scip.freeTransform()
        for jj, lb, ub in zip(j.tolist(), _scip_bound(lo), _scip_bound(up)):
            var = self._vars[jj]
            if lb > self._upper[jj]:  # keep lb <= ub at every step
                scip.chgVarUb(var, ub)
                scip.chgVarLb(var, lb)
            else:
                scip.chgVarLb(var, lb)
                scip.chgVarUb(var, ub)
        self._lower[j], self._upper[j] = lo, up

    def close(self) -> None:
        """Free SCIP's memory."""
        if self._scip is not None:
            self._scip.freeProb()
            self._scip = None
            self._vars = []
            self._terms = None

    def __enter__(self) -> ScipSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
