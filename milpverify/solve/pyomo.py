"""Pyomo backend: `to_pyomo` and `PyomoBackend` ("pyomo:<solver>", e.g. "pyomo:appsi_highs").

Naming (`to_pyomo`)
-------------------
Names follow the `MilpModel` name prefixes, so Pyomo output reads like the network:

* a prefix without a dot, e.g. ``"fc2/pre"``, becomes one indexed ``Var`` (or ``Constraint``)
  named ``fc2/pre``; its item ``i`` is ``fc2/pre[17]``, exactly `MilpModel.var_name`;
* a prefix ``"head.leaf"`` (split at the last dot), e.g. ``"layer/relu.active"``, becomes a
  component ``leaf`` inside an indexed ``Block`` ``head``: item 17 is named
  ``layer/relu[17].active``. All prefixes with the same head share the block, so a neuron's
  variables and constraints sit together (``layer/relu[17].active``, ``layer/relu[17].post``,
  ``layer/relu[17].le_ua``). This costs one Pyomo object per item.

Pyomo quotes names that contain one of ``()[],.'":`` or a backslash (e.g. a head ``fc[0]``
prints as ``'fc[0]'``).
If a name clashes with an attribute of ``ConcreteModel`` or with another component, a ``_`` is
appended until it is free. The objective is ``obj``; a cutoff adds the constraint
``milpverify_cutoff`` while solving. Rows are built from the CSR arrays with one
``LinearExpression`` each.

Options
-------
``SolveOptions`` are translated for the solver families HiGHS (``appsi_highs``, ``highs``),
SCIP (``scip_direct``, ``scip_persistent``; ``display/verblevel`` is set to 0 unless verbose,
because a full log pipe can hang ``scip_direct``), Gurobi and CBC. For other solvers only
``time_limit_s`` (as Pyomo's ``timelimit``) and ``solver_params`` are passed, and a warning
names the options that were not. The cutoff is imposed as the constraint
``c·x + c0 <= cutoff``; an optimum equal to the cutoff then counts as CUTOFF, so the
semantics match the other backends. Solutions are feasible up to the solver's tolerances.

Sessions rebuild nothing in Pyomo but the solver re-reads the whole model at every solve.
"""

from __future__ import annotations

import itertools
import math
import time
import warnings
from typing import Any, Callable

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
    require_linear,
    warn_unknown_param,
)

__all__ = ["PyomoBackend", "PyomoSession", "to_pyomo"]

_INSTALL_HINTS = {
    "appsi_highs": "pip install highspy",
    "highs": "pip install highspy",
    "scip_direct": "pip install pyscipopt",
    "scip_persistent": "pip install pyscipopt",
    "scip": "install the SCIP executable with AMPL support "
            "(e.g. conda install -c conda-forge scip)",
    "cbc": "install the CBC executable so that `cbc` is on PATH (e.g. conda install -c "
           "conda-forge coin-or-cbc, or apt-get install coinor-cbc)",
    "glpk": "install GLPK so that `glpsol` is on PATH (e.g. apt-get install glpk-utils)",
    "gurobi_direct": "pip install gurobipy (and a Gurobi license)",
    "gurobi_persistent": "pip install gurobipy (and a Gurobi license)",
    "gurobi": "install Gurobi and its command-line tools (and a license)",
    "cplex_direct": "pip install cplex (and a CPLEX license)",
}

# SolveOptions -> option names per solver family; None = not supported.
_FAMILY_OPTIONS: dict[str, dict[str, str | None]] = {
    "highs": {"time": "time_limit", "threads": "threads", "gap": "mip_rel_gap",
              "seed": "random_seed", "first": "mip_max_improving_sols"},
    "scip": {"time": "limits/time", "threads": None, "gap": "limits/gap",
             "seed": "randomization/randomseedshift", "first": "limits/solutions"},
    "gurobi": {"time": "TimeLimit", "threads": "Threads", "gap": "MIPGap", "seed": "Seed",
               "first": "SolutionLimit"},
    "cbc": {"time": "sec", "threads": "threads", "gap": "ratio", "seed": "randomCbcSeed",
            "first": "maxSolutions"},
}


def _pe() -> Any:
    try:
        import pyomo.environ as pe
    except ImportError as exc:
        raise SolverError("Backend 'pyomo:<solver>' needs pyomo, which is not installed "
                          "(pip install pyomo).") from exc
    return pe


def _family(solver_name: str) -> str | None:
    s = solver_name.lower()
    for fam in ("highs", "scip", "gurobi", "cbc"):
        if fam in s:
            return fam
    return None


def _free_name(pm: Any, name: str) -> str:
    while hasattr(pm, name) or pm.component(name) is not None:
        name += "_"
    return name


def _linear(pe_lin: Any, coefs: list[float], pvars: list[Any], constant: float = 0.0) -> Any:
    return pe_lin(constant=constant, linear_coefs=coefs, linear_vars=pvars)


def _split(prefix: str) -> tuple[str, str] | None:
    """``"layer/relu.active"`` -> ``("layer/relu", "active")``; None if there is no usable dot."""
    head, dot, leaf = prefix.rpartition(".")
    return (head, leaf) if dot and head and leaf else None


def _groups(blocks: Any) -> dict[str, np.ndarray]:
    """Prefix -> global index of each name index (0..count-1) of that prefix."""
    by_prefix: dict[str, list[Any]] = {}
    for b in blocks:
        by_prefix.setdefault(b.prefix, []).append(b)
    out = {}
    for prefix, bl in by_prefix.items():
        glob = np.empty(sum(b.count for b in bl), dtype=np.int64)
        for b in bl:
            glob[b.offset:b.offset + b.count] = np.arange(b.start, b.start + b.count)
        out[prefix] = glob
    return out


def _build(model: MilpModel) -> tuple[Any, list[Any], Any]:
    """Build the ConcreteModel; return it, the Pyomo variable of each model variable and
    the objective component."""
    pe = _pe()
    from pyomo.core.expr.numeric_expr import LinearExpression

    pm = pe.ConcreteModel(name="milpverify")
    var_groups, row_groups = _groups(model.var_blocks), _groups(model.row_blocks)
    # indexed Blocks for dotted prefixes: "head.leaf" -> Block head[i] holding component leaf
    heads: dict[str, int] = {}
    for prefix, glob in itertools.chain(var_groups.items(), row_groups.items()):
        split = _split(prefix)
        if split:
            heads[split[0]] = max(heads.get(split[0], 0), glob.shape[0])
    blocks: dict[str, Any] = {}
    for head, size in heads.items():
        blocks[head] = pe.Block(range(size))
        pm.add_component(_free_name(pm, head), blocks[head])

    lo, up, isint = np.asarray(model.lower), np.asarray(model.upper), model.integrality
    pvars: list[Any] = [None] * model.n_vars
    for prefix, glob in var_groups.items():
        lb = [None if v == -math.inf else v for v in lo[glob].tolist()]
        ub = [None if v == math.inf else v for v in up[glob].tolist()]
        ints = isint[glob].tolist()
        gl = glob.tolist()
        split = _split(prefix)
        if split:
            blk = blocks[split[0]]
            leaf = _free_name(blk[0], split[1])
            for i, j in enumerate(gl):
                v = pe.Var(bounds=(lb[i], ub[i]), within=pe.Integers if ints[i] else pe.Reals)
                blk[i].add_component(leaf, v)
                pvars[j] = v
        else:
            var = pe.Var(range(len(gl)), bounds=lambda _m, i, lb=lb, ub=ub: (lb[i], ub[i]),
                         within=pe.Reals)
            pm.add_component(_free_name(pm, prefix), var)
            for i, j in enumerate(gl):
                pvars[j] = var[i]
                if ints[i]:
                    var[i].domain = pe.Integers

    A = model.A
    ip, ix, data = A.indptr.tolist(), A.indices.tolist(), A.data.tolist()
    rl, ru = np.asarray(model.row_lower).tolist(), np.asarray(model.row_upper).tolist()

    def row(r: int) -> Any:
        lb = None if rl[r] == -math.inf else rl[r]
        ub = None if ru[r] == math.inf else ru[r]
        if lb is None and ub is None:
            return pe.Constraint.Skip
        s, e = ip[r], ip[r + 1]
        if s == e:
            if (lb is None or lb <= 0) and (ub is None or ub >= 0):
                return pe.Constraint.Skip
            if not pvars:
                raise InvalidInputError(f"row {model.row_name(r)} is empty and infeasible")
            return (lb, _linear(LinearExpression, [0.0], [pvars[0]]), ub)
        expr = _linear(LinearExpression, data[s:e], [pvars[k] for k in ix[s:e]])
        if lb is not None and lb == ub:
            return expr == lb
        return (lb, expr, ub)

    for prefix, glob in row_groups.items():
        gl = glob.tolist()
        split = _split(prefix)
        if split:
            blk = blocks[split[0]]
            leaf = _free_name(blk[0], split[1])
            for i, r in enumerate(gl):
                expr = row(r)
                if expr is not pe.Constraint.Skip:
                    blk[i].add_component(leaf, pe.Constraint(expr=expr))
        else:
            pm.add_component(_free_name(pm, prefix), pe.Constraint(
                range(len(gl)), rule=lambda _m, i, gl=gl: row(gl[i])))
    c = model.c
    nz = np.flatnonzero(c).tolist()
    obj = pe.Objective(expr=_linear(LinearExpression, c[nz].tolist(), [pvars[j] for j in nz],
                                    model.c0), sense=pe.minimize)
    pm.add_component(_free_name(pm, "obj"), obj)
    return pm, pvars, obj


def to_pyomo(model: MilpModel) -> Any:
    """Build a ``pyomo.environ.ConcreteModel`` equal to ``model`` (names: module docstring).

    Parameters
    ----------
    model : MilpModel

    Returns
    -------
    pyomo.environ.ConcreteModel
        Variable ``prefix[i]`` is ``m.component(prefix)[i]``; variable ``head.leaf[i]`` is
        ``m.component(head)[i].component(leaf)``; rows likewise; the objective is ``m.obj``.
    """
    return _build(model)[0]


class PyomoBackend:
    """Solve through Pyomo with the solver ``solver_name`` (any ``SolverFactory`` name).

    Raises
    ------
    SolverError
        If pyomo is missing or the solver is not available (the message says how to install it).
    """

    def __init__(self, solver_name: str) -> None:
        pe = _pe()
        self.solver_name = solver_name
        self.name = f"pyomo:{solver_name}"
        hint = _INSTALL_HINTS.get(solver_name, f"see Pyomo's documentation for solver "
                                               f"{solver_name!r}")
        try:
            solver = pe.SolverFactory(solver_name)
            ok = bool(solver.available(exception_flag=False))
        except (RuntimeError, ValueError, AttributeError, ImportError, OSError) as exc:
            raise SolverError(f"Backend {self.name!r}: Pyomo solver {solver_name!r} is not "
                              f"available ({exc}); {hint}.") from exc
        if not ok:
            raise SolverError(f"Backend {self.name!r}: Pyomo solver {solver_name!r} is not "
                              f"available; {hint}.")

    def solve(self, model: MilpModel, options: SolveOptions | None = None) -> SolveResult:
        """Build ``model`` in Pyomo and solve it once."""
        options = options or SolveOptions()
        t0 = time.perf_counter()
        require_linear(model, self.name)
        pm, pvars, obj = _build(model)
        return _solve(self.solver_name, pm, pvars, obj, model.objective_value, options, t0)

    def session(self, model: MilpModel) -> PyomoSession:
        """A session that keeps the Pyomo model and changes its objective and bounds."""
        return PyomoSession(self.solver_name, model)


class PyomoSession:
    """A Pyomo model re-solved with new objectives/bounds (the solver re-reads it each time)."""

    def __init__(self, solver_name: str, model: MilpModel) -> None:
        self.solver_name = solver_name
        self.backend = f"pyomo:{solver_name}"
        self._n = model.n_vars
        self._pm, self._pvars, self._obj = _build(model)

    def _check_open(self) -> None:
        if self._pm is None:
            raise InvalidInputError("the Pyomo session is closed")

    def minimize(self, cols: ArrayLike, vals: ArrayLike,
                 options: SolveOptions | None = None) -> SolveResult:
        """Minimise ``sum(vals * x[cols])`` (duplicates summed) and return the result."""
        self._check_open()
        from pyomo.core.expr.numeric_expr import LinearExpression

        options = options or SolveOptions()
        t0 = time.perf_counter()
        c, v = objective_terms(cols, vals, self._n)
        self._obj.set_value(_linear(LinearExpression, v.tolist(),
                                    [self._pvars[j] for j in c.tolist()]))
        return _solve(self.solver_name, self._pm, self._pvars, self._obj,
                      lambda x: float(v @ x[c]), options, t0)

    def set_bounds(self, idx: ArrayLike, lower: ArrayLike, upper: ArrayLike) -> None:
        """Set variable bounds (``±inf`` allowed) for the following solves."""
        self._check_open()
        j, lo, up = bounds_args(idx, lower, upper, self._n)
        for jj, lb, ub in zip(j.tolist(), lo.tolist(), up.tolist()):
            self._pvars[jj].setlb(None if lb == -math.inf else lb)
            self._pvars[jj].setub(None if ub == math.inf else ub)

    def close(self) -> None:
        """Drop the Pyomo model."""
        self._pm, self._pvars, self._obj = None, [], None

    def __enter__(self) -> PyomoSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _solver_options(solver_name: str, options: SolveOptions) -> tuple[dict[str, object], bool]:
    """Solver option dict for ``options``; second item: pass ``timelimit=`` to ``solve``."""
    fam = _family(solver_name)
    out: dict[str, object] = {}
    unmapped: list[str] = []
    if fam is None:
        for field, default in (("mip_gap", 0.0), ("seed", 0), ("threads", 1),
                               ("stop_at_first_feasible", False)):
            if getattr(options, field) != default:
                unmapped.append(field)
        use_kwarg = options.time_limit_s is not None
    else:
        names = _FAMILY_OPTIONS[fam]
        use_kwarg = False
        if options.time_limit_s is not None:
            out[str(names["time"])] = float(options.time_limit_s)
        if names["threads"] is not None:
            out[names["threads"]] = int(options.threads)
        elif options.threads != 1:
            unmapped.append("threads")
        out[str(names["gap"])] = float(options.mip_gap)
        if fam == "highs":
            out["mip_abs_gap"] = 0.0
        out[str(names["seed"])] = int(options.seed)
        if options.stop_at_first_feasible:
            out[str(names["first"])] = 1
        if fam == "scip":
            out["display/verblevel"] = 4 if options.verbose else 0
    if unmapped:
        warnings.warn(f"pyomo:{solver_name}: options {', '.join(unmapped)} are not translated "
                      f"for this solver; pass them in solver_params", RuntimeWarning, stacklevel=4)
    out.update(_known_params(solver_name, fam, options.solver_params))
    return out, use_kwarg


def _known_params(solver_name: str, fam: str | None, params: Any) -> dict[str, object]:
    """``solver_params`` the solver knows; unknown names of HiGHS/SCIP are warned about and
    dropped (other solvers get everything: Pyomo cannot check their option names)."""
    out = dict(params)
    if not out or fam not in ("highs", "scip"):
        return out
    if fam == "highs":
        from milpverify.solve.highs import unknown_options
    else:
        from milpverify.solve.scip import unknown_options
    known = set(out) - set(unknown_options(list(out)))
    for k in sorted(set(out) - known):
        warn_unknown_param(f"pyomo:{solver_name}", k)
        del out[k]
    return out


def _solve(solver_name: str, pm: Any, pvars: list[Any], obj: Any,
           objective_value: Callable[[np.ndarray], float], options: SolveOptions,
           t0: float) -> SolveResult:
    """Solve ``pm`` (objective component ``obj``) and map the outcome to a `SolveResult`."""
    pe = _pe()
    from pyomo.core.expr import is_constant
    from pyomo.opt import SolverStatus
    from pyomo.opt import TerminationCondition as TC

    solver = pe.SolverFactory(solver_name)
    opts, use_kwarg = _solver_options(solver_name, options)
    for k, v in opts.items():
        solver.options[k] = v
    kwargs: dict[str, object] = {"load_solutions": False, "tee": bool(options.verbose)}
    if use_kwarg:
        kwargs["timelimit"] = options.time_limit_s
    cut_name = None
    if options.objective_cutoff is not None and not is_constant(obj.expr):
        cut_name = _free_name(pm, "milpverify_cutoff")
        pm.add_component(cut_name, pe.Constraint(expr=obj.expr <= float(options.objective_cutoff)))
    try:
        results = solver.solve(pm, **kwargs)
        tc = results.solver.termination_condition
        x = None
        if len(results.solution) > 0:
            # limits give status "unknown"/"aborted", which load_from refuses even with a
            # solution attached; the termination condition has been read already.
            results.solver.status = SolverStatus.ok
            pm.solutions.load_from(results)
            x = np.array([_value(v) for v in pvars], dtype=np.float64)
            if np.isnan(x).any():
                x = None
        if tc == TC.infeasibleOrUnbounded:
            status = _disambiguate(solver, pm, obj, pvars, kwargs)
        else:
            status = _status(tc, x is not None, options)
    except (RuntimeError, ValueError, OSError, AttributeError, KeyError, TypeError) as exc:
        raise SolverError(f"pyomo:{solver_name} failed: {exc}") from exc
    finally:
        if cut_name is not None:
            pm.del_component(cut_name)
    obj_val = None if x is None else objective_value(x)
    lb = getattr(results.problem, "lower_bound", None)
    try:
        dual = float(lb) if lb is not None else -math.inf
    except (TypeError, ValueError):
        dual = -math.inf
    if math.isnan(dual) or abs(dual) >= 1e20 and status is not SolveStatus.INFEASIBLE:
        dual = -math.inf
    if status is SolveStatus.OPTIMAL and obj_val is not None and not math.isfinite(dual):
        dual = obj_val
    return finish_result(status, obj_val, dual, x, options, nodes=0,
                         solve_time_s=time.perf_counter() - t0,
                         backend=f"pyomo:{solver_name}",
                         message=f"Pyomo termination {str(tc)!r}")


def _value(v: Any) -> float:
    """The solution value of `v`. Pyomo sends the solver only variables that appear in an
    active constraint or the objective, so any other one has no value: it is free within
    its bounds, and the bound nearest 0 is feasible (e.g. an input pixel no kernel reads)."""
    if v.value is not None:
        return float(v.value)
    lb, ub = v.lb, v.ub
    return float(min(max(0.0, -math.inf if lb is None else lb), math.inf if ub is None else ub))


def _status(tc: Any, has_x: bool, options: SolveOptions) -> SolveStatus:
    from pyomo.opt import TerminationCondition as TC

    if tc in (TC.optimal, TC.globallyOptimal):
        return SolveStatus.OPTIMAL
    if tc == TC.infeasible:
        return SolveStatus.INFEASIBLE
    if tc == TC.unbounded:
        return SolveStatus.UNBOUNDED
    if tc == TC.maxTimeLimit:
        return SolveStatus.TIME_LIMIT
    if tc in (TC.error, TC.solverFailure, TC.internalSolverError, TC.invalidProblem,
              TC.licensingProblems):
        return SolveStatus.ERROR
    if has_x and options.stop_at_first_feasible:
        return SolveStatus.SOLUTION_LIMIT
    return SolveStatus.OTHER_LIMIT


def _disambiguate(solver: Any, pm: Any, obj: Any, pvars: list[Any],
                  kwargs: dict[str, object]) -> SolveStatus:
    """"Infeasible or unbounded": re-solve with a zero objective."""
    pe = _pe()
    from pyomo.core.expr.numeric_expr import LinearExpression
    from pyomo.opt import TerminationCondition as TC

    old = obj.expr
    obj.set_value(_linear(LinearExpression, [0.0], pvars[:1]))
    try:
        tc = solver.solve(pm, **kwargs).solver.termination_condition
    finally:
        obj.set_value(old)
    if tc == TC.infeasible:
        return SolveStatus.INFEASIBLE
    if tc in (TC.optimal, TC.globallyOptimal, TC.feasible):
        return SolveStatus.UNBOUNDED
    return SolveStatus.ERROR
