"""Tests of the solver backends: statuses, cutoffs, agreement, sessions, files, naming."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from milpverify.encode.model import MilpModel
from milpverify.errors import InvalidInputError, SolverError
from milpverify.solve import get_backend
from milpverify.solve.base import Backend, SolveOptions, SolveResult, SolveStatus

TOL = 1e-6


def _available(name: str) -> str | None:
    """None if backend `name` can be built, else the reason it cannot."""
    try:
        get_backend(name)
    except SolverError as exc:
        return str(exc)
    return None


BACKENDS = []
for _name in ("scip", "highs", "pyomo:appsi_highs", "pyomo:scip_direct"):
    _reason = _available(_name)
    BACKENDS.append(pytest.param(_name, marks=pytest.mark.skipif(
        _reason is not None, reason=f"{_name} unavailable: {_reason}")))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Backend:
    return get_backend(request.param)


# ---------------------------------------------------------------------------- models
def knapsack() -> MilpModel:
    """max 5a + 4b + 3c s.t. 2a + 3b + c <= 5, binary; as min with constant 0.5: opt -8.5."""
    m = MilpModel()
    x = m.add_vars(3, 0, 1, integer=True, name="fc2/relu.active")
    m.add_rows([0, 0, 0], x, [2.0, 3.0, 1.0], 1, -np.inf, 5.0, name="cap")
    m.set_objective(x, [-5.0, -4.0, -3.0], constant=0.5)
    return m


def infeasible(integer: bool) -> MilpModel:
    m = MilpModel()
    x = m.add_vars(2, 0, 1, integer=integer)
    m.add_rows([0, 0], x, [1.0, 1.0], 1, 3.0, np.inf)
    m.set_objective([0], [-1.0])
    return m


def unbounded_lp() -> MilpModel:
    m = MilpModel()
    x = m.add_vars(2, 0, np.inf)
    m.add_rows([0, 0], x, [1.0, -1.0], 1, -np.inf, 1.0)
    m.set_objective([0], [-1.0])
    return m


def infeasible_with_ray() -> MilpModel:
    """Infeasible, but with an unbounded ray in a free direction: solvers say 'inf or unbd'."""
    m = MilpModel()
    x = m.add_vars(3, 0, np.inf, integer=[True, False, False])
    m.add_rows([0, 0, 1, 1], [0, 1, 0, 1], [1.0, -1.0, 1.0, -1.0], 2, [1.0, -np.inf], [np.inf, 0.0])
    m.set_objective([2], [-1.0])
    return m


def multi_knapsack(n: int = 40, k: int = 5, seed: int = 0) -> MilpModel:
    rng = np.random.default_rng(seed)
    m = MilpModel()
    x = m.add_vars(n, 0, 1, integer=True, name="item")
    W = rng.integers(1, 30, (k, n)).astype(float)
    m.add_matrix_rows(W, x, -np.inf, W.sum(1) / 3, name="cap")
    m.set_objective(x, -rng.integers(1, 40, n).astype(float))
    return m


def random_milp(seed: int, n: int = 12, k: int = 8) -> MilpModel:
    """A random bounded MILP (box [-3, 3]; half the variables integer)."""
    rng = np.random.default_rng(seed)
    m = MilpModel()
    m.add_vars(n, rng.uniform(-3, 0, n).round(1), rng.uniform(0, 3, n).round(1),
               integer=rng.random(n) < 0.5, name="v")
    rows = np.repeat(np.arange(k), 5)
    cols = np.concatenate([rng.choice(n, 5, replace=False) for _ in range(k)])
    lo = rng.uniform(-4, 0, k).round(2)
    up = np.where(rng.random(k) < 0.3, lo, lo + rng.uniform(0, 6, k).round(2))
    up[0] = np.inf
    m.add_rows(rows, cols, rng.integers(-5, 6, rows.size).astype(float), k, lo, up, name="r")
    m.set_objective(np.arange(n), rng.standard_normal(n).round(3), constant=1.25)
    return m


def market_split(m: int = 4, seed: int = 0) -> MilpModel:
    """Cornuejols-Dawande market split: ``A x = floor(A 1 / 2)``, x binary, A in [0, 99]^(m x
    10(m-1)). Tiny and very hard: SCIP proved m = 4, seed 0 infeasible in 21 s and 476k
    nodes here (with another 2-thread job beside it)."""
    rng = np.random.default_rng(seed)
    A = rng.integers(0, 100, (m, 10 * (m - 1))).astype(float)
    model = MilpModel()
    x = model.add_vars(A.shape[1], 0, 1, integer=True, name="x")
    rhs = np.floor(A.sum(axis=1) / 2)
    model.add_matrix_rows(A, x, rhs, rhs, name="split")
    return model


def check_solution(model: MilpModel, res: SolveResult) -> None:
    assert res.x is not None and res.objective is not None
    assert res.x.shape == (model.n_vars,)
    assert model.max_violation(res.x) <= 1e-6
    assert model.objective_value(res.x) == pytest.approx(res.objective, abs=TOL)


# ---------------------------------------------------------------------------- statuses
def test_knapsack_optimal(backend: Backend) -> None:
    m = knapsack()
    res = backend.solve(m)
    assert res.status is SolveStatus.OPTIMAL
    assert res.objective == pytest.approx(-8.5, abs=TOL)
    assert res.dual_bound == pytest.approx(-8.5, abs=TOL)
    np.testing.assert_allclose(res.x, [1, 1, 0], atol=TOL)
    check_solution(m, res)
    assert res.backend == backend.name and res.status.value == "optimal"


@pytest.mark.parametrize("integer", [False, True])
def test_infeasible(backend: Backend, integer: bool) -> None:
    res = backend.solve(infeasible(integer))
    assert res.status is SolveStatus.INFEASIBLE
    assert res.x is None and res.objective is None and res.dual_bound == np.inf


def test_unbounded_lp(backend: Backend) -> None:
    res = backend.solve(unbounded_lp())
    assert res.status is SolveStatus.UNBOUNDED
    assert res.objective == -np.inf and res.dual_bound == -np.inf and res.x is None


def test_infeasible_or_unbounded_is_resolved(backend: Backend) -> None:
    res = backend.solve(infeasible_with_ray())
    assert res.status is SolveStatus.INFEASIBLE


@pytest.mark.parametrize("cutoff", [-12.0, -8.5])
def test_cutoff_proven(backend: Backend, cutoff: float) -> None:
    """No solution strictly below the cutoff (-8.5 is the optimum itself) -> CUTOFF."""
    res = backend.solve(knapsack(), SolveOptions(objective_cutoff=cutoff))
    assert res.status is SolveStatus.CUTOFF
    assert res.status.no_solution_proven
    assert res.dual_bound >= cutoff
    assert res.x is None and res.objective is None


def test_cutoff_not_binding(backend: Backend) -> None:
    m = knapsack()
    res = backend.solve(m, SolveOptions(objective_cutoff=-8.0))
    assert res.status is SolveStatus.OPTIMAL
    assert res.objective == pytest.approx(-8.5, abs=TOL)
    check_solution(m, res)


def test_stop_at_first_feasible(backend: Backend) -> None:
    m = multi_knapsack()
    opt = backend.solve(m)
    assert opt.status is SolveStatus.OPTIMAL and opt.objective == pytest.approx(-424.0, abs=TOL)
    res = backend.solve(m, SolveOptions(stop_at_first_feasible=True))
    assert res.status is SolveStatus.SOLUTION_LIMIT
    check_solution(m, res)
    assert res.objective >= opt.objective - TOL
    # with a cutoff, the first solution found must beat it
    res = backend.solve(m, SolveOptions(stop_at_first_feasible=True, objective_cutoff=-300.0))
    assert res.status in (SolveStatus.SOLUTION_LIMIT, SolveStatus.OPTIMAL)
    check_solution(m, res)
    assert res.objective < -300.0


def test_scip_first_feasible_is_the_trivial_point() -> None:
    """SCIP's first solution here is x = 0 (its trivial heuristic): clearly not optimal."""
    res = get_backend("scip").solve(knapsack(), SolveOptions(stop_at_first_feasible=True))
    assert res.status is SolveStatus.SOLUTION_LIMIT
    np.testing.assert_allclose(res.x, 0.0)
    assert res.objective == pytest.approx(0.5)


# ---------------------------------------------------------------------------- agreement
@pytest.mark.parametrize("seed", range(6))
def test_backends_agree_on_random_milps(seed: int) -> None:
    m = random_milp(seed)
    results = {}
    for param in BACKENDS:
        name = param.values[0]
        if _available(name) is None:
            results[name] = get_backend(name).solve(m)
    ref = results["scip"]
    for name, res in results.items():
        assert res.status is ref.status, (name, res.message, ref.message)
        if ref.status is SolveStatus.OPTIMAL:
            assert res.objective == pytest.approx(ref.objective, abs=TOL), name
            check_solution(m, res)
        # the LP relaxation agrees too
    lp = m.relaxed()
    lp_obj = {n: get_backend(n).solve(lp).objective for n in results}
    vals = [v for v in lp_obj.values() if v is not None]
    assert len(vals) in (0, len(lp_obj)) and (not vals or np.ptp(vals) <= TOL), lp_obj


CANCELLED_MESSAGE = {"scip": "userinterrupt", "highs": "Interrupted by user"}


@pytest.mark.parametrize("name", sorted(CANCELLED_MESSAGE))
@pytest.mark.parametrize("delay_s", [0.0, 0.5])
def test_cancel_stops_a_solve_from_another_thread(name: str, delay_s: float) -> None:
    """`SolveOptions.cancel` interrupts SCIP and HiGHS mid-solve (uncancelled, SCIP took 21 s
    to prove the market-split instance infeasible and HiGHS had not within 20 s); an event
    set before the solve starts is not lost when SCIP clears its interrupt flag."""
    cancel = threading.Event()
    timer = threading.Timer(delay_s, cancel.set)
    timer.start()
    t0 = time.perf_counter()
    res = get_backend(name).solve(market_split(), SolveOptions(time_limit_s=60, cancel=cancel))
    timer.join()
    assert res.status is SolveStatus.OTHER_LIMIT, res.message
    assert CANCELLED_MESSAGE[name] in res.message
    assert time.perf_counter() - t0 < delay_s + 5.0


def test_statuses_cover_random_models() -> None:
    """The random family above exercises both feasible and infeasible outcomes."""
    statuses = {get_backend("highs").solve(random_milp(s)).status for s in range(6)}
    assert SolveStatus.OPTIMAL in statuses


# ---------------------------------------------------------------------------- sessions
@pytest.mark.parametrize("relax", [False, True])
def test_session_equals_fresh_solves(backend: Backend, relax: bool) -> None:
    base = multi_knapsack(n=15, k=3, seed=2)
    model = base.relaxed() if relax else base
    objectives = [([0], [1.0]), ([3, 7], [-1.0, -2.0]), ([5, 5, 6], [-1.0, -1.0, 3.0])]
    with backend.session(model) as session:
        for cols, vals in objectives:
            fresh_model = model.copy()
            fresh_model.set_objective(cols, vals)
            fresh = backend.solve(fresh_model)
            again = session.minimize(np.array(cols), np.array(vals))
            assert again.status is fresh.status is SolveStatus.OPTIMAL
            assert again.objective == pytest.approx(fresh.objective, abs=TOL)
            check_solution(fresh_model, again)
        # bounds: fix item 3 to 1, item 7 to 0
        session.set_bounds(np.array([3, 7]), [1.0, 0.0], [1.0, 0.0])
        tightened = model.copy()
        tightened.fix_vars([3, 7], [1.0, 0.0])
        tightened.set_objective([3, 7, 1], [-1.0, -2.0, -5.0])
        fresh = backend.solve(tightened)
        again = session.minimize(np.array([3, 7, 1]), np.array([-1.0, -2.0, -5.0]))
        assert again.objective == pytest.approx(fresh.objective, abs=TOL)
        check_solution(tightened, again)
        # a cutoff inside a session, then none again
        cut = session.minimize([1], [-1.0], SolveOptions(objective_cutoff=-5.0))
        assert cut.status is SolveStatus.CUTOFF
        free = session.minimize([1], [-1.0])
        assert free.status is SolveStatus.OPTIMAL and free.objective == pytest.approx(-1.0)


def test_highs_session_solver_params_last_one_solve() -> None:
    """A session solve's `solver_params` do not carry over to the next solve (HiGHS keeps
    options; progressive tightening's iteration-limited re-solves once leaked their limit)."""
    model = multi_knapsack(n=15, k=3, seed=2).relaxed()
    with get_backend("highs").session(model) as session:
        limited = session.minimize([0, 3], [-1.0, -2.0], SolveOptions(
            solver_params={"solver": "simplex", "presolve": "off", "simplex_iteration_limit": 0}))
        assert limited.status is SolveStatus.OTHER_LIMIT
        again = session.minimize([1, 4], [-1.0, -3.0])
        assert again.status is SolveStatus.OPTIMAL


def test_highs_session_add_rows_equals_a_model_built_with_them() -> None:
    """Rows appended to a live LP session give the optimum of the model built with them."""
    rng = np.random.default_rng(3)
    n = 6
    base = MilpModel()
    xv = base.add_vars(n, -1.0, 1.0)
    cost = rng.normal(size=n)
    rows = rng.normal(size=(4, n))
    rows[1, 2] = 0.0  # a zero coefficient must not become a stored nonzero problem
    full = MilpModel()
    fv = full.add_vars(n, -1.0, 1.0)
    full.add_matrix_rows(rows, fv, -0.5, np.inf)
    full.set_objective(fv, cost)
    expected = get_backend("highs").solve(full)
    with get_backend("highs").session(base) as s:
        first = s.minimize(xv, cost)
        s.add_rows(xv, rows[:2], -0.5, np.inf)
        s.add_rows(xv, rows[2:], -0.5, np.inf)
        s.add_rows(xv, np.zeros((0, n)), -0.5, np.inf)  # nothing to add
        got = s.minimize(xv, cost)
    assert first.objective <= got.objective + 1e-9
    assert got.status == expected.status == SolveStatus.OPTIMAL
    assert got.objective == pytest.approx(expected.objective, abs=1e-9)
    assert got.row_duals is not None and got.row_duals.shape == (4,)


def test_session_bad_arguments() -> None:
    with get_backend("highs").session(knapsack()) as s:
        with pytest.raises(InvalidInputError, match="out of range"):
            s.minimize([5], [1.0])
        with pytest.raises(InvalidInputError, match="lower <= upper"):
            s.set_bounds([0], [1.0], [0.0])
    with pytest.raises(InvalidInputError, match="closed"):
        s.minimize([0], [1.0])


# ---------------------------------------------------------------------------- options
@pytest.mark.parametrize("name, params", [
    ("scip", {"no/such/param": 1}),
    ("highs", {"no_such_option": 1}),
    ("pyomo:appsi_highs", {"no_such_option": 1}),
    ("pyomo:scip_direct", {"no/such/param": 1}),
])
def test_unknown_solver_params_warn(name: str, params: dict[str, object]) -> None:
    if _available(name) is not None:
        pytest.skip(f"{name} unavailable")
    with pytest.warns(RuntimeWarning, match="not accepted"):
        res = get_backend(name).solve(knapsack(), SolveOptions(solver_params=params))
    assert res.status is SolveStatus.OPTIMAL


def test_known_solver_params_are_applied() -> None:
    # node limit 1 with aggressive presolve off still returns a valid status
    res = get_backend("scip").solve(multi_knapsack(), SolveOptions(
        solver_params={"limits/nodes": 1, "presolving/maxrounds": 0}))
    assert res.status in (SolveStatus.OTHER_LIMIT, SolveStatus.OPTIMAL)


def test_scip_meta_settings() -> None:
    """SCIP's meta settings in `solver_params` set their group first; plain names override
    single members; a bad value is named in a warning; the answer does not change."""
    import pyscipopt

    from milpverify.solve.scip import _apply_options
    scip = pyscipopt.Model()
    _apply_options(scip, SolveOptions(solver_params={
        "heuristics/rens/freq": 5, "heuristics/emphasis": "off", "presolving/emphasis": "OFF"}))
    assert scip.getParam("heuristics/shiftandpropagate/freq") == -1
    assert scip.getParam("heuristics/rens/freq") == 5
    assert scip.getParam("presolving/maxrounds") == 0
    with pytest.warns(RuntimeWarning, match="'heuristics/emphasis'.*give one of default, "):
        _apply_options(scip, SolveOptions(solver_params={"heuristics/emphasis": "none"}))
    plain = get_backend("scip").solve(multi_knapsack(), SolveOptions())
    bare = get_backend("scip").solve(multi_knapsack(), SolveOptions(solver_params={
        "heuristics/emphasis": "off", "presolving/emphasis": "off"}))
    assert plain.status is bare.status is SolveStatus.OPTIMAL
    assert bare.objective == pytest.approx(plain.objective, abs=1e-9)


def test_options_validation() -> None:
    with pytest.raises(InvalidInputError, match="time_limit_s"):
        SolveOptions(time_limit_s=0)
    with pytest.raises(InvalidInputError, match="threads"):
        SolveOptions(threads=0)
    with pytest.raises(InvalidInputError, match="mip_gap"):
        SolveOptions(mip_gap=-1)
    opts = SolveOptions(solver_params={"a": 1})
    with pytest.raises(TypeError):
        opts.solver_params["b"] = 2  # type: ignore[index]


def test_unknown_backend_lists_valid_names() -> None:
    with pytest.raises(InvalidInputError, match=r"unknown backend 'gurobi'; valid names: "
                                                r"'scip', 'highs', 'pyomo:<solver>'"):
        get_backend("gurobi")
    with pytest.raises(InvalidInputError, match="'pyomo:appsi_highs'"):
        get_backend("pyomo:")


def test_missing_pyomo_solver_says_how_to_install() -> None:
    pytest.importorskip("pyomo")
    if _available("pyomo:cbc") is None:
        pytest.skip("cbc is installed")
    with pytest.raises(SolverError, match=r"pyomo:cbc.*not available.*coin-or-cbc"):
        get_backend("pyomo:cbc")


def test_importing_solve_does_not_import_solvers() -> None:
    code = ("import sys, milpverify.solve, milpverify.solve.base, milpverify.encode.model; "
            "bad = [m for m in ('pyscipopt', 'highspy', 'pyomo') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


# ---------------------------------------------------------------------------- files
def file_model() -> MilpModel:
    """Names with [ ] / . and every kind of row and bound."""
    m = MilpModel()
    x = m.add_vars(3, [-2.0, 0.0, -np.inf], [2.0, np.inf, np.inf], integer=[True, False, False],
                   name="fc2/relu[0].pre")
    a = m.add_vars(2, 0, 1, integer=True, name="fc2/relu.active")
    e = m.add_vars(1, -1.5, -1.5, name="1e5")  # fixed; name starts with a digit
    m.add_rows([0, 0, 0], [x[0], x[1], a[0]], [1.0, 2.0, -3.5], 1, -1.0, 4.25, name="range")
    m.add_rows([0, 0], [x[2], x[1]], [1.0, -1.0], 1, 0.0, 0.0, name="eq")
    m.add_rows([0, 0, 1, 1], [x[2], a[1], x[0], e[0]], [1.0, 5.0, 1.0, 0.1], 2,
               [-3.0, -np.inf], [np.inf, 1.0 / 3.0], name="one_sided")
    m.add_rows([], [], [], 2, [-1.0, -np.inf], [1.0, np.inf], name="empty")
    m.set_objective([x[0], x[1], x[2], a[0], a[1]], [1.0, 0.3, 0.7, -2.0, -1.0], constant=0.125)
    return m


@pytest.mark.parametrize("fmt", ["lp", "mps"])
def test_file_round_trip(tmp_path: Path, fmt: str) -> None:
    pyscipopt = pytest.importorskip("pyscipopt")
    from milpverify.solve.files import write_model

    m = file_model()
    ref = get_backend("scip").solve(m)
    assert ref.status is SolveStatus.OPTIMAL
    path = write_model(m, tmp_path / f"model.{fmt}")
    scip = pyscipopt.Model()
    scip.hideOutput()
    scip.readProblem(str(path))
    assert scip.getNVars() == m.n_vars
    scip.optimize()
    assert scip.getStatus() == "optimal"
    assert scip.getObjVal() == pytest.approx(ref.objective, abs=TOL)
    text = path.read_text()
    if fmt == "lp":
        assert "fc2/relu(0).pre(2)" in text and "fc2/relu.active(1)" in text
        assert "_1e5(0)" in text and "[" not in text
    else:
        assert "fc2/relu[0].pre[2]" in text
    # generic names work too, and HiGHS agrees with the optimum
    path2 = write_model(m, tmp_path / f"generic.{fmt}", generic_names=True)
    scip2 = pyscipopt.Model()
    scip2.hideOutput()
    scip2.readProblem(str(path2))
    scip2.optimize()
    assert scip2.getObjVal() == pytest.approx(ref.objective, abs=TOL)
    assert get_backend("highs").solve(m).objective == pytest.approx(ref.objective, abs=TOL)


def test_write_model_bad_format(tmp_path: Path) -> None:
    from milpverify.solve.files import write_model

    with pytest.raises(InvalidInputError, match="use 'lp' or 'mps'"):
        write_model(knapsack(), tmp_path / "model.txt")


def test_scip_build_methods_agree() -> None:
    from milpverify.solve.scip import BUILD_METHODS, ScipBackend

    m = file_model()
    objs = {meth: ScipBackend(build_method=meth).solve(m).objective for meth in BUILD_METHODS}
    assert np.ptp(list(objs.values())) <= TOL, objs


# ---------------------------------------------------------------------------- pyomo
def test_to_pyomo_names() -> None:
    """Undotted prefixes give indexed components; "head.leaf" gives head[i].leaf."""
    if _available("pyomo:appsi_highs") is not None:
        pytest.skip("pyomo or appsi_highs unavailable")
    from milpverify.solve.pyomo import to_pyomo

    m = MilpModel()
    pre = m.add_vars(20, -1, 1, name="layer/pre")
    post = m.add_vars(20, 0, 1, name="layer/relu.post")
    act = m.add_vars(20, 0, 1, integer=True, name="layer/relu.active")
    r = np.arange(20)
    m.add_rows(np.r_[r, r], np.r_[post, act], np.r_[np.ones(20), -np.ones(20)], 20, -np.inf, 0.0,
               name="layer/relu.le_ua")
    m.add_rows(np.r_[r, r], np.r_[post, pre], np.r_[np.ones(20), -np.ones(20)], 20, 0.0, np.inf,
               name="layer/ge_pre")
    m.set_objective(post, -np.ones(20))
    pm = to_pyomo(m)
    assert pm.component("layer/pre")[17].name == "layer/pre[17]" == m.var_name(17)
    block = pm.component("layer/relu")[17]
    assert block.post.name == "layer/relu[17].post"
    # "active" is a Block attribute in Pyomo, so the component gets a trailing "_"
    assert block.active_.name == "layer/relu[17].active_" and block.active_.is_integer()
    assert block.le_ua.name == "layer/relu[17].le_ua"
    assert pm.component("layer/ge_pre")[3].name == "layer/ge_pre[3]"
    res = get_backend("pyomo:appsi_highs").solve(m)
    assert res.objective == pytest.approx(-20.0)
