"""Query export (`milpverify.core.export`, `milpverify export`) and the Pyomo path end to end.

The same query solved natively by SCIP, through Pyomo + HiGHS, and by SCIP reading the
exported LP/MPS file must give the same optimum; rho through ``backend="pyomo:appsi_highs"``
must give the same bracket as through SCIP.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from helpers import random_mlp

from milpverify import cli
from milpverify.core.export import QueryProblem, build_query, to_pyomo, write_query
from milpverify.errors import InvalidInputError, SolverError
from milpverify.ir import ops
from milpverify.ir.network import Network
from milpverify.solve import get_backend
from milpverify.solve.base import SolveOptions, SolveStatus
from milpverify.verify import certify, rho

TOL = 1e-6
PYOMO_HIGHS = "pyomo:appsi_highs"


def _unavailable(name: str) -> str | None:
    try:
        get_backend(name)
    except SolverError as exc:
        return str(exc)
    return None


needs_pyomo_highs = pytest.mark.skipif(_unavailable(PYOMO_HIGHS) is not None,
                                       reason=f"{PYOMO_HIGHS} unavailable")


def convnet(rng: np.random.Generator) -> Network:
    """1x5x5 -> Conv(3, 2x2) -> Relu -> MaxPool(2x2) -> Affine(6) -> Relu -> Affine(3)."""
    nodes: list[tuple[str, ops.Op]] = [
        ("x", ops.Input((), (1, 5, 5))),
        ("conv", ops.Conv(("x",), (3, 4, 4), (1, 5, 5), rng.normal(size=(3, 1, 2, 2)),
                          rng.normal(size=3) * 0.1, (1, 1), (0, 0, 0, 0), (1, 1), 1)),
        ("relu", ops.Relu(("conv",), (3, 4, 4))),
        ("pool", ops.MaxPool(("relu",), (3, 2, 2), (3, 4, 4), (2, 2), (2, 2), (0, 0, 0, 0),
                             (1, 1))),
        ("fc", ops.Affine(("pool",), (6,), rng.normal(size=(6, 12)), rng.normal(size=6) * 0.1)),
        ("relu2", ops.Relu(("fc",), (6,))),
        ("out", ops.Affine(("relu2",), (3,), rng.normal(size=(3, 6)), np.zeros(3))),
    ]
    return Network(nodes, "out")


def _case(kind: str, seed: int) -> tuple[Network, np.ndarray]:
    rng = np.random.default_rng(seed)
    if kind == "mlp":
        net = random_mlp(rng, [4, 8, 8, 3])[0]
        return net, rng.uniform(0.2, 0.8, size=4)
    net = convnet(rng)
    return net, rng.uniform(0.3, 0.7, size=25)


#: (kind, seed, cap): rho of each is below its cap (None: the whole domain), and every
#: query here solves in well under a second on an idle core.
CASES = [("mlp", 3, None), ("mlp", 12, None), ("conv", 4, 0.06), ("conv", 1, 0.03)]


@pytest.fixture(params=CASES, ids=[f"{k}{s}" for k, s, _ in CASES])
def case(request: pytest.FixtureRequest) -> tuple[Network, np.ndarray, float | None]:
    kind, seed, cap = request.param
    return (*_case(kind, seed), cap)


def _scip_file_optimum(path: Path) -> tuple[str, float | None]:
    """Status and optimum of the file as SCIP's own reader sees it."""
    pyscipopt = pytest.importorskip("pyscipopt")
    m = pyscipopt.Model()
    m.hideOutput()
    m.readProblem(str(path))
    m.optimize()
    status = m.getStatus()
    return status, (m.getObjVal() if status == "optimal" else None)


# ---------------------------------------------------------------------------- the model
@needs_pyomo_highs
def test_rho_milp_optimum_same_native_pyomo_and_files(case, tmp_path) -> None:
    net, x, cap = case
    query = build_query(net, x, eps_cap=cap)
    assert isinstance(query, QueryProblem) and query.kind == "rho"
    native = get_backend("scip").solve(query.model)
    through_pyomo = get_backend(PYOMO_HIGHS).solve(query.model)
    assert native.status is through_pyomo.status is SolveStatus.OPTIMAL
    assert through_pyomo.objective == pytest.approx(native.objective, abs=TOL)
    point = native.x[query.input_vars]
    assert np.max(np.abs(point - x)) <= native.objective + TOL <= query.radius + TOL
    for fmt in ("lp", "mps"):
        status, optimum = _scip_file_optimum(query.write(tmp_path / f"q.{fmt}"))
        assert status == "optimal" and optimum == pytest.approx(native.objective, abs=TOL)


@needs_pyomo_highs
@pytest.mark.parametrize("seed", [3, 12])
def test_l1_rho_milp_optimum_same_native_pyomo_and_file(seed, tmp_path) -> None:
    net, x = _case("mlp", seed)
    query = build_query(net, x, norm="l1")
    native = get_backend("scip").solve(query.model)
    through_pyomo = get_backend(PYOMO_HIGHS).solve(query.model)
    assert native.status is through_pyomo.status is SolveStatus.OPTIMAL
    assert through_pyomo.objective == pytest.approx(native.objective, abs=TOL)
    assert np.abs(native.x[query.input_vars] - x).sum() == pytest.approx(native.objective,
                                                                         abs=TOL)
    status, optimum = _scip_file_optimum(query.write(tmp_path / "q.lp"))
    assert status == "optimal" and optimum == pytest.approx(native.objective, abs=TOL)


@needs_pyomo_highs
def test_certify_milp_status_same_native_pyomo_and_files(case, tmp_path) -> None:
    net, x, cap = case
    exact = get_backend("scip").solve(build_query(net, x, eps_cap=cap).model).objective
    for eps, feasible in ((exact * 0.98, False), (exact * 1.02, True)):
        query = build_query(net, x, eps=eps)
        assert query.kind == "certify" and query.radius == eps
        assert np.all(query.model.c == 0)
        for backend in ("scip", PYOMO_HIGHS):
            result = get_backend(backend).solve(query.model)
            assert (result.status is SolveStatus.OPTIMAL) == feasible, (backend, eps)
            assert result.status.no_solution_proven != feasible
        write_query(net, x, tmp_path / "c.mps", eps=eps)
        status, _ = _scip_file_optimum(tmp_path / "c.mps")
        assert (status == "optimal") == feasible


def test_certify_l1_uses_the_l1_ball() -> None:
    """The L1 certify model bounds sum |x' - x| by eps, not just the L-inf box."""
    net, x = _case("mlp", 3)
    exact = get_backend("scip").solve(build_query(net, x, norm="l1").model).objective
    for eps, feasible in ((exact * 0.98, False), (exact * 1.02, True)):
        result = get_backend("scip").solve(build_query(net, x, eps=eps, norm="l1").model)
        assert (result.status is SolveStatus.OPTIMAL) == feasible


def test_bounds_proof_still_gives_an_infeasible_model() -> None:
    net, x = _case("mlp", 3)
    query = build_query(net, x, eps=1e-4)
    assert query.proven_by_bounds
    assert query.candidates == tuple(j for j in range(3) if j != query.label)
    assert get_backend("scip").solve(query.model).status is SolveStatus.INFEASIBLE


def test_names_are_readable_and_files_deterministic(tmp_path) -> None:
    net, x = _case("mlp", 5)
    query = write_query(net, x, tmp_path / "a.lp", eps_cap=0.5)
    write_query(net, x, tmp_path / "b.lp", eps_cap=0.5)
    text = (tmp_path / "a.lp").read_text()
    assert text == (tmp_path / "b.lp").read_text()
    assert "input(3)" in text and "relu0.active(0)" in text and "Generals" in text
    write_query(net, x, tmp_path / "a.mps", eps_cap=0.5)
    assert "relu0.active[0]" in (tmp_path / "a.mps").read_text()
    assert query.model.var_name(int(query.input_vars[2])) == "input[2]"


@needs_pyomo_highs
def test_to_pyomo_names() -> None:
    net, x = _case("mlp", 5)
    pm = to_pyomo(net, x, eps_cap=0.5)
    assert pm.component("input")[3].name == "input[3]"
    assert pm.component("distance")[0].name == "distance[0]"
    relu_block = pm.component("relu0")[0]
    assert relu_block.post.name == "relu0[0].post"
    assert relu_block.active_.is_integer()  # Pyomo blocks own `active`, hence the "_"


@pytest.mark.parametrize("kw, match", [
    ({"eps": 0.1, "eps_cap": 0.2}, "not both"),
    ({"eps": 0.0}, r"`eps` must be a finite number > 0"),
    ({"eps_cap": -1.0}, r"`eps_cap` must be a finite number > 0"),
    ({"eps": math.nan}, r"`eps` must be"),
    ({"bounds_method": "crown"}, "`bounds_method` must be one of"),
    ({"norm": "l2"}, "`norm` must be"),
])
def test_build_query_rejects_bad_options(kw, match) -> None:
    net, x = _case("mlp", 3)
    with pytest.raises(InvalidInputError, match=match):
        build_query(net, x, **kw)


def test_write_query_rejects_unknown_format_before_building(tmp_path) -> None:
    net, x = _case("mlp", 3)
    with pytest.raises(InvalidInputError, match="`format` must be 'lp' or 'mps'; got 'gms'"):
        write_query(net, x, tmp_path / "q.lp", format="gms", eps=0.1)
    with pytest.raises(InvalidInputError, match="cannot tell the file format"):
        write_query(net, x, tmp_path / "q.txt", eps=0.1)
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------- pipeline
@needs_pyomo_highs
def test_rho_through_pyomo_highs_equals_native_scip(request, case) -> None:
    net, x, cap = case
    if request.node.callspec.id == "conv1":
        # Known limit, kept visible: SCIP's relaxed optimum (0.0130244) is a near-miss
        # 1.2e-6 below the attained rho, while HiGHS proves rho >= 0.01302461: the two
        # floating-point solvers differ by ~2e-7 here, so SCIP's bracket stays 1.16e-6
        # wide (> the 1e-6 tolerance). The endpoints still agree to 2e-7.
        request.applymarker(pytest.mark.xfail(strict=False, reason="solver tolerance limit"))
    # tolerance 1e-6: SCIP then stops at an absolute gap of 5e-7 (HiGHS runs to gap 0)
    native = rho(net, x, eps_cap=cap, backend="scip", time_limit_s=60, tolerance=TOL)
    through_pyomo = rho(net, x, eps_cap=cap, backend=PYOMO_HIGHS, time_limit_s=60,
                        tolerance=TOL)
    assert native.status == through_pyomo.status == "optimal"
    assert through_pyomo.lower == pytest.approx(native.lower, abs=TOL)
    assert through_pyomo.upper == pytest.approx(native.upper, abs=TOL)
    assert through_pyomo.witness_verified
    # and both agree with the exported MILP's optimum
    optimum = get_backend(PYOMO_HIGHS).solve(build_query(net, x, eps_cap=cap).model).objective
    assert native.lower - TOL <= optimum <= native.upper + TOL


def _certify_both(net: Network, x: np.ndarray, cap: float | None) -> None:
    exact = rho(net, x, eps_cap=cap)
    assert exact.status == "optimal"
    for eps in (exact.lower * 0.95, exact.upper * 1.05):
        native = certify(net, x, eps, backend="scip", attack=None)
        through_pyomo = certify(net, x, eps, backend=PYOMO_HIGHS, attack=None)
        assert native.verdict == through_pyomo.verdict != "unknown", through_pyomo.message


@needs_pyomo_highs
def test_certify_through_pyomo_highs_equals_native_scip() -> None:
    _certify_both(*_case("mlp", 3), None)


@needs_pyomo_highs
def test_certify_through_pyomo_highs_with_unused_inputs() -> None:
    _certify_both(*_case("conv", 4), 0.06)


@needs_pyomo_highs
def test_pyomo_backends_get_no_scip_parameters(monkeypatch) -> None:
    from milpverify.solve import pyomo as pyomo_backend

    seen: list[SolveOptions] = []
    original = pyomo_backend.PyomoBackend.solve

    def spy(self, model, options=None):
        seen.append(options)
        return original(self, model, options)

    monkeypatch.setattr(pyomo_backend.PyomoBackend, "solve", spy)
    net, x = _case("mlp", 3)
    rho(net, x, backend=PYOMO_HIGHS, upper_bound=None)
    certify(net, x, 0.3, backend=PYOMO_HIGHS, attack=None)
    assert len(seen) >= 2
    assert all(dict(o.solver_params) == {} for o in seen)


@pytest.mark.parametrize("solver, hint", [("gurobi_direct", "pip install gurobipy"),
                                          ("cbc", "coin-or-cbc")])
def test_missing_pyomo_solver_is_a_clear_solver_error(solver, hint) -> None:
    pytest.importorskip("pyomo")
    if _unavailable(f"pyomo:{solver}") is None:
        pytest.skip(f"{solver} is installed here")
    net, x = _case("mlp", 3)
    with pytest.raises(SolverError, match=f"pyomo:{solver}.*not available.*{hint}"):
        rho(net, x, backend=f"pyomo:{solver}")


# ---------------------------------------------------------------------------- CLI
def test_cli_export_writes_a_readable_file(tmp_path, capsys) -> None:
    out = tmp_path / "q.mps"
    assert cli.main(["export", "default:mnist_mlp_32_16", "--indices", "1", "--eps-cap", "0.02",
                     "--out", str(out)]) == 0
    stdout, stderr = capsys.readouterr()
    assert stderr == ""
    assert stdout.startswith(f"wrote {out}: rho query, label 2, linf radius 0.02")
    text = out.read_text()
    assert text.startswith("NAME milpverify") and "input[783]" in text


def test_cli_export_with_data_file(tmp_path, capsys) -> None:
    from milpverify.runs.datasets import DATA_DIR, EMBEDDED_NETS
    with np.load(DATA_DIR / "mnist_test_first10.npz") as data:
        np.savez(tmp_path / "d.npz", images=data["images"][:3], labels=data["labels"][:3])
    model = str(EMBEDDED_NETS["mnist_mlp_32_16"].path)
    out = tmp_path / "q.txt"
    assert cli.main(["export", model, "--data", str(tmp_path / "d.npz"), "--indices", "2",
                     "--eps", "0.01", "--format", "LP", "--out", str(out)]) == 0
    assert "certify query" in capsys.readouterr().out
    assert out.read_text().startswith("\\ written by milpverify")


@pytest.mark.parametrize("args, message", [
    (["/no/such.onnx", "--indices", "0", "--eps", "0.1"], "`--data` is required"),
    (["default", "--data", "/no/such.npz", "--indices", "0", "--eps", "0.1"],
     "Data file not found"),
    (["default", "--indices", "10", "--eps", "0.1"], "out of range for 10 images"),
    (["default", "--indices", "0", "--eps", "0.1", "--format", "gms"],
     "`--format` must be 'lp' or 'mps'; got 'gms'"),
    (["default", "--indices", "0", "--eps", "0"], "`eps` must be a finite number > 0"),
    (["default", "--indices", "0", "--eps", "-0.1"], "`eps` must be a finite number > 0"),
    (["default", "--indices", "0", "--eps-cap", "0"], "`eps_cap` must be a finite number > 0"),
    (["default", "--indices", "0", "--eps", "0.1", "--eps-cap", "0.2"], "not both"),
])
def test_cli_export_errors_are_one_line(tmp_path, capsys, args, message) -> None:
    out = tmp_path / "q.lp"
    assert cli.main(["export", *args, "--out", str(out)]) == 1
    stdout, stderr = capsys.readouterr()
    assert stdout == ""
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("milpverify: error: ")
    assert message in lines[0]
    assert not out.exists()


def test_cli_export_usage_errors_exit_2(capsys) -> None:
    assert cli.main(["export", "default", "--eps", "0.1", "--out", "q.lp"]) == 2  # no --indices
    assert cli.main(["export", "default", "--indices", "x", "--out", "q.lp"]) == 2


# ---------------------------------------------------------------------------- slow
@pytest.mark.slow
@needs_pyomo_highs
def test_embedded_mnist_mlp_same_optimum_native_pyomo_file(tmp_path) -> None:
    from milpverify.runs.datasets import load_default
    net, images, _ = load_default("mnist_mlp_32_16")
    query = build_query(net, images[1], eps_cap=0.02)
    native = get_backend("scip").solve(query.model)
    through_pyomo = get_backend(PYOMO_HIGHS).solve(query.model)
    assert native.status is through_pyomo.status is SolveStatus.OPTIMAL
    assert through_pyomo.objective == pytest.approx(native.objective, abs=TOL)
    status, optimum = _scip_file_optimum(query.write(tmp_path / "q.lp"))
    assert status == "optimal" and optimum == pytest.approx(native.objective, abs=TOL)
    r_native = rho(net, images[1], eps_cap=0.02, backend="scip")
    r_pyomo = rho(net, images[1], eps_cap=0.02, backend=PYOMO_HIGHS)
    assert r_native.status == r_pyomo.status == "optimal"
    assert r_pyomo.lower == pytest.approx(r_native.lower, abs=TOL)
    assert r_pyomo.upper == pytest.approx(r_native.upper, abs=TOL)
