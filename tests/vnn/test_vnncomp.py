"""VNN-LIB decisions (`verify_vnnlib`), the falsifier, shared rho, the runner and the CLI.

Tiny networks are built as ONNX models so that every counterexample is re-run by
onnxruntime on the original file. `abs_net` (inputs in [0, 1]^2) computes exactly::

    h = relu([x0 - x1, x1 - x0, x0 + x1 - 1, x0 + x1])
    y0 = h0 + h1 = |x0 - x1|,   y1 = h2 = max(0, x0 + x1 - 1),   y2 = h3 = x0 + x1

so each spec below has a known answer.
"""

from __future__ import annotations

import csv
import math
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import make_onnx, node, run_ort

from milpverify import load_onnx
from milpverify.bounds.base import Bounds
from milpverify.cli import _vnnlib_options, build_parser, main
from milpverify.errors import InvalidInputError
from milpverify.runs.vnncomp import read_instances, run_vnncomp
from milpverify.vnn import decide as vnn_decide
from milpverify.vnn.check import check_counterexample
from milpverify.vnn.decide import (
    SPEC_NODE,
    _milp_params,
    _nearest_refuted_first,
    _PropertyOutcome,
    milp_solvers,
)
from milpverify.vnn.falsify import FalsifierOptions, falsify
from milpverify.vnn.options import VnnlibOptions, milp_form_flag
from milpverify.vnn.results import RESULT_COLUMNS, parse_result
from milpverify.vnn.shared_rho import linf_robustness_form, shared_rho_decisions
from milpverify.vnn.spec import read_vnnlib
from milpverify.vnn.verify import verify_vnnlib

W1 = np.array([[1.0, -1.0], [-1.0, 1.0], [1.0, 1.0], [1.0, 1.0]])
B1 = np.array([0.0, 0.0, -1.0, 0.0])
W2 = np.array([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
B2 = np.zeros(3)


def _mlp_onnx(layers: list[tuple[np.ndarray, np.ndarray]], in_shape: tuple[int, ...]):
    """Flatten -> (Gemm -> Relu)* -> Gemm as an ONNX model with a fixed batch of 1."""
    nodes = [node("Flatten", ["x"], "f0", axis=1)]
    inits = {}
    prev = "f0"
    for k, (w, b) in enumerate(layers):
        inits[f"w{k}"], inits[f"b{k}"] = w, b
        nodes.append(node("Gemm", [prev, f"w{k}", f"b{k}"], f"g{k}", transB=1))
        prev = f"g{k}"
        if k < len(layers) - 1:
            nodes.append(node("Relu", [prev], f"r{k}"))
            prev = f"r{k}"
    nodes.append(node("Identity", [prev], "y"))
    return make_onnx(nodes, inits, [("x", (1, *in_shape))], [("y", (1, layers[-1][0].shape[0]))])


@pytest.fixture(scope="module")
def abs_model():
    return _mlp_onnx([(W1, B1), (W2, B2)], (2,))


@pytest.fixture(scope="module")
def abs_net(abs_model):
    return load_onnx(abs_model)


def _spec(asserts: str, n_in: int = 2, n_out: int = 3, box: tuple[float, float] = (0.0, 1.0)
          ) -> str:
    lines = [f"(declare-const X_{i} Real)" for i in range(n_in)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_out)]
    for i in range(n_in):
        lines += [f"(assert (>= X_{i} {box[0]!r}))", f"(assert (<= X_{i} {box[1]!r}))"]
    return "\n".join(lines) + "\n" + asserts + "\n"


def _assert_valid(model, spec_text: str, x: np.ndarray, y: np.ndarray) -> None:
    """x in the box and onnxruntime's outputs at float32(x) in the unsafe set; y matches."""
    prop = read_vnnlib(spec_text).properties[0]
    assert np.all(x >= prop.input_lower) and np.all(x <= prop.input_upper)
    assert np.array_equal(x, x.astype(np.float32).astype(np.float64))
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    y_ort = run_ort(model, x[None], per_sample_shape=dims)[0]
    np.testing.assert_allclose(y, y_ort, rtol=0, atol=1e-6)
    assert any(np.all(c.A @ y_ort <= c.b) for c in prop.unsafe)


QUICK = VnnlibOptions(falsifier=FalsifierOptions(time_limit_s=0.5))
MILP_ONLY = VnnlibOptions(attack=False, input_split=False)
MILP_OBJECTIVE = VnnlibOptions(attack=False, input_split=False, milp_objective=True)
MILP_NO_CUTS = VnnlibOptions(attack=False, input_split=False, ideal_cuts=False)


# ---------------------------------------------------------------------------- decisions
@pytest.mark.parametrize("options", [QUICK, MILP_ONLY, MILP_OBJECTIVE, MILP_NO_CUTS],
                         ids=["attack", "milp", "milp-objective", "milp-no-cuts"])
def test_sat_with_valid_counterexample(abs_model, abs_net, options):
    text = _spec("(assert (and (>= Y_0 0.5) (>= Y_1 0.2)))")
    r = verify_vnnlib(abs_net, read_vnnlib(text), timeout_s=30, options=options)
    assert r.result == "sat"
    assert r.decided_by in ("attack", "milp", "input_split")
    x, y = r.counterexample
    _assert_valid(abs_model, text, x, y)


@pytest.mark.parametrize("asserts, by", [
    ("(assert (>= Y_0 1.5))", "bounds"),                           # |x0 - x1| <= 1
    ("(assert (and (>= Y_1 0.6) (<= Y_2 1.5)))", None),            # x0 + x1 >= 1.6 and <= 1.5
    ("(assert (and (>= Y_0 0.9) (>= Y_1 0.2)))", "milp"),          # needs the two rows jointly
])
def test_unsat(abs_net, asserts, by):
    for options in (QUICK, MILP_OBJECTIVE, MILP_NO_CUTS):
        r = verify_vnnlib(abs_net, read_vnnlib(_spec(asserts)), timeout_s=30, options=options)
        assert r.result == "unsat", r.message
        assert r.counterexample is None
        if by is not None:  # with the defaults, input splitting decides for the MILP
            assert r.decided_by in ((by, "input_split") if by == "milp" and options is QUICK
                                    else (by,))


def test_or_of_ands_mixing_outputs(abs_model, abs_net):
    # Only the third disjunct is reachable (e.g. x = (1, 0.4)).
    text = _spec("""(assert (or
        (and (>= Y_0 1.5))
        (and (>= Y_1 0.6) (<= (+ Y_2 (* -1 Y_0)) 1.5) (<= Y_2 1.5))
        (and (>= (- Y_0 Y_1) 0.3) (>= (+ Y_1 Y_2) 1.4) (>= Y_0 0.5))))""")
    split_last_milp = VnnlibOptions(attack=False, input_split=False, tighten=False, split_disjuncts=True)
    split_in_threads = VnnlibOptions(attack=False, input_split=False, tighten=False, split_disjuncts=True,
                                     threads=2)
    for options in (QUICK, MILP_ONLY, MILP_OBJECTIVE, split_last_milp, split_in_threads):
        r = verify_vnnlib(abs_net, read_vnnlib(text), timeout_s=30, options=options)
        assert r.result == "sat"
        _assert_valid(abs_model, text, *r.counterexample)
    raced = verify_vnnlib(abs_net, read_vnnlib(text), timeout_s=30, options=split_in_threads,
                          backend="scip+highs")
    assert raced.result == "sat"
    _assert_valid(abs_model, text, *raced.counterexample)
    unsat = _spec("""(assert (or (and (>= Y_0 1.5)) (and (>= Y_0 0.9) (>= Y_1 0.2))
                                 (and (>= Y_1 0.6) (<= Y_2 1.5))))""")
    # Without tightening the only MILP is the last one, the one `split_disjuncts` splits.
    for split, objective, threads, backend in (
            (False, False, 1, "scip"), (True, False, 1, "scip"), (False, True, 1, "scip"),
            (True, True, 1, "scip"), (True, False, 2, "scip"), (True, False, 2, "scip+highs")):
        r = verify_vnnlib(abs_net, read_vnnlib(unsat), timeout_s=30, backend=backend,
                          options=VnnlibOptions(attack=False, input_split=False, tighten=False, threads=threads,
                                                split_disjuncts=split, milp_objective=objective))
        assert (r.result, r.decided_by) == ("unsat", "milp"), r.message


def test_disjunct_tightening_keeps_both_answers(abs_model, abs_net):
    """LP bounds conditioned on each disjunct before its MILP: the reachable third disjunct
    still gives a valid counterexample, the unreachable ones are refuted (by those bounds
    or by the MILP), and the time spent is reported."""
    options = VnnlibOptions(attack=False, input_split=False, tighten=False, split_disjuncts=True,
                            disjunct_tighten_fraction=0.5)
    text = _spec("""(assert (or
        (and (>= Y_0 1.5))
        (and (>= Y_1 0.6) (<= (+ Y_2 (* -1 Y_0)) 1.5) (<= Y_2 1.5))
        (and (>= (- Y_0 Y_1) 0.3) (>= (+ Y_1 Y_2) 1.4) (>= Y_0 0.5))))""")
    r = verify_vnnlib(abs_net, read_vnnlib(text), timeout_s=30, options=options)
    assert r.result == "sat"
    _assert_valid(abs_model, text, *r.counterexample)
    unsat = _spec("""(assert (or (and (>= Y_0 1.5)) (and (>= Y_0 0.9) (>= Y_1 0.2))
                                 (and (>= Y_1 0.6) (<= Y_2 1.5))))""")
    r = verify_vnnlib(abs_net, read_vnnlib(unsat), timeout_s=30, options=options)
    assert r.result == "unsat" and r.decided_by in ("bounds", "milp"), r.message
    assert r.timings["disjunct_tighten_s"] > 0


def test_split_milps_go_nearest_refuted_first():
    # A disjunct falls when any of its rows is positive: disjunct 2 (rows at -3 and -0.1)
    # is nearer than disjunct 0 (-1) although its smallest row is the smallest of all.
    lower = np.array([-1.0, -2.0, -3.0, -0.1, -0.5])
    bounds = Bounds({SPEC_NODE: (lower, np.ones(5))}, {}, "test")
    groups = [np.array([0]), np.array([1]), np.array([2, 3]), np.array([4])]
    assert _nearest_refuted_first(bounds, groups, [0, 1, 2, 3]) == [2, 3, 0, 1]
    assert _nearest_refuted_first(bounds, groups, [1, 0]) == [0, 1]


def _scheduled(monkeypatch, n_batches, backend, threads, answer):
    """Run `_solve_disjuncts` (split) with `_solve_batch` replaced by `answer(solver, batch,
    cancel)`; return its outcome and the (solver, disjunct) starts in order."""
    starts, lock = [], threading.Lock()

    def fake(aug, bounds, prop, groups, batch, n_rows, net, deadline, solver, opts, timings,
             stats, cancel):
        with lock:
            starts.append((solver, batch[0]))
        time.sleep(0.05)
        return answer(solver, batch[0], cancel)

    monkeypatch.setattr(vnn_decide, "_solve_batch", fake)
    lower = -np.arange(1.0, n_batches + 1)  # nearest refuted first: 0, 1, 2, ...
    bounds = Bounds({SPEC_NODE: (lower, np.ones(n_batches))}, {}, "test")
    groups = [np.array([d]) for d in range(n_batches)]
    outcome, still_open = vnn_decide._solve_disjuncts(
        SimpleNamespace(num_classes=n_batches), bounds, None, groups, list(range(n_batches)), None, time.perf_counter() + 30,
        backend, VnnlibOptions(threads=threads), {}, {}, split=True)
    return outcome, still_open, starts


def test_milp_workers_take_disjuncts_from_both_ends(monkeypatch):
    def unsat(solver, d, cancel):
        return _PropertyOutcome("unsat", decided_by="milp")

    outcome, left, starts = _scheduled(monkeypatch, 4, "scip+highs", 2, unsat)
    assert (outcome.result, left) == ("unsat", [])
    assert starts[:2] in ([("scip", 0), ("highs", 3)], [("highs", 3), ("scip", 0)])
    # each solved; a second start only when nothing was left to start (a race)
    assert sorted({d for _, d in starts}) == [0, 1, 2, 3] and len(starts) <= 5
    outcome, _, starts = _scheduled(monkeypatch, 3, "scip", 1, unsat)
    assert starts == [("scip", 0), ("scip", 1), ("scip", 2)]


def test_milp_workers_race_on_the_last_disjunct(monkeypatch):
    """Disjunct 1 is hard for SCIP (it waits for its cancel event) and easy for HiGHS:
    HiGHS, done with disjunct 2 before, joins disjunct 1 and its proof stops SCIP."""
    def answer(solver, d, cancel):
        if solver == "scip" and d == 1:
            assert cancel.wait(10), "the race never cancelled SCIP"
            return _PropertyOutcome("timeout", message="cancelled")
        return _PropertyOutcome("unsat", decided_by="milp")

    outcome, left, starts = _scheduled(monkeypatch, 3, "scip+highs", 2, answer)
    assert (outcome.result, left) == ("unsat", [])
    assert ("highs", 1) in starts and ("scip", 1) in starts


def test_a_counterexample_stops_every_milp_worker(monkeypatch):
    def answer(solver, d, cancel):
        if d == 0:
            return _PropertyOutcome("sat", decided_by="milp")
        assert cancel.wait(10), "the counterexample did not cancel the other MILPs"
        return _PropertyOutcome("timeout", message="cancelled")

    outcome, left, starts = _scheduled(monkeypatch, 3, "scip", 2, answer)
    assert (outcome.result, left) == ("sat", [0])
    assert len(starts) == 2  # no MILP starts after the counterexample


def test_unknown_milp_solver_is_named():
    assert milp_solvers("SCIP+highs") == ("scip", "highs")
    with pytest.raises(InvalidInputError, match="joined by '\\+'"):
        milp_solvers("scip+")
    with pytest.raises(InvalidInputError, match="unknown backend 'nosuch'"):
        milp_solvers("highs+nosuch")


def test_root_cut_rounds_reach_scip_only_and_solver_params_win():
    assert _milp_params("scip", VnnlibOptions()) == {"separating/maxroundsroot": 20}
    assert _milp_params("scip", VnnlibOptions(root_cut_rounds=None)) == {}
    assert _milp_params("highs", VnnlibOptions()) == {}
    given = VnnlibOptions(solver_params={"separating/maxroundsroot": 5, "limits/nodes": 9})
    assert _milp_params("scip", given) == {"separating/maxroundsroot": 5, "limits/nodes": 9}


@pytest.mark.parametrize("kwargs, message", [
    ({"root_cut_rounds": -1}, r"`root_cut_rounds` must be an integer >= 0 or None"),
    ({"root_cut_rounds": 2.5}, r"`root_cut_rounds` must be an integer >= 0 or None"),
    ({"threads": 0}, r"`threads` must be an integer >= 1; got 0"),
    ({"disjunct_tighten_fraction": 1.0},
     r"`disjunct_tighten_fraction` must be a number in \[0, 1\); got 1.0"),
    ({"disjunct_tighten_fraction": -0.1}, r"`disjunct_tighten_fraction` must be .* got -0.1"),
    ({"relu_split_fraction": 1.0},
     r"`relu_split_fraction` must be a number in \[0, 1\); got 1.0"),
    ({"relu_split_fraction": "half"},
     r"`relu_split_fraction` must be a number in \[0, 1\); got 'half'"),
    ({"relu_split_fraction": -0.1}, r"`relu_split_fraction` must be .* got -0.1"),
])
def test_bad_options_are_named(kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        VnnlibOptions(**kwargs)


def test_several_input_regions(abs_model, abs_net):
    # Two boxes (an `or` over X bounds); only the second holds a counterexample.
    text = _spec("""(assert (or (and (<= X_0 0.2) (<= X_1 0.2))
                                (and (>= X_0 0.9) (<= X_1 0.1))))
                    (assert (>= Y_0 0.75))""")
    spec = read_vnnlib(text)
    assert len(spec.properties) == 2
    r = verify_vnnlib(abs_net, spec, timeout_s=30, options=MILP_ONLY)
    assert r.result == "sat"
    x, y = r.counterexample
    assert x[0] >= 0.9 and x[1] <= 0.1 and y[0] >= 0.75


def test_boundary_only_counterexample(abs_model, abs_net):
    # |x0 - x1| >= 1 holds only at the corners (1, 0) and (0, 1), where it is exact.
    text = _spec("(assert (>= Y_0 1.0))")
    r = verify_vnnlib(abs_net, read_vnnlib(text), timeout_s=30, options=QUICK)
    assert r.result in ("sat", "unknown")
    if r.result == "sat":
        _assert_valid(abs_model, text, *r.counterexample)


def test_input_order_is_c_order_of_the_onnx_input():
    # Input [1, 2, 2]; y = relu(x[1, 1]) = X_3 only (C order), so the box on X_3 matters.
    w = np.zeros((1, 4))
    w[0, 3] = 1.0
    model = _mlp_onnx([(np.eye(4), np.zeros(4)), (w, np.zeros(1))], (2, 2))
    net = load_onnx(model)
    text = _spec("(assert (<= X_3 0.95))\n(assert (>= Y_0 0.9))", n_in=4, n_out=1)
    r = verify_vnnlib(net, read_vnnlib(text), timeout_s=30, options=MILP_ONLY)
    assert r.result == "sat"
    x, y = r.counterexample
    assert 0.9 <= x[3] <= 0.95
    _assert_valid(model, text, x, y)
    text = _spec("(assert (<= X_3 0.85))\n(assert (>= Y_0 0.9))", n_in=4, n_out=1)
    assert verify_vnnlib(net, read_vnnlib(text), timeout_s=30).result == "unsat"


def test_size_mismatch_is_an_error(abs_net):
    from milpverify.errors import InvalidInputError
    with pytest.raises(InvalidInputError, match="flat inputs in C order"):
        verify_vnnlib(abs_net, read_vnnlib(_spec("(assert (>= Y_0 1.5))", n_in=3)))
    with pytest.raises(InvalidInputError, match="timeout_s"):
        verify_vnnlib(abs_net, read_vnnlib(_spec("(assert (>= Y_0 1.5))")), timeout_s=0)


def test_counterexample_check_rounds_into_the_box(abs_net):
    # 0.1 is not a float32: the rounded point must still lie inside [0.1, 0.3].
    prop = read_vnnlib(_spec("(assert (>= Y_2 0.0))", box=(0.1, 0.3))).properties[0]
    check = check_counterexample(abs_net, prop, np.array([0.1, 0.1]))
    assert check.verified and check.in_domain
    assert np.all(check.x >= 0.1)
    assert check.margin_onnx is not None and check.margin_onnx >= 0
    bad = check_counterexample(abs_net, read_vnnlib(_spec("(assert (>= Y_0 0.5))")).properties[0],
                               np.array([0.5, 0.5]))
    assert not bad.verified and "rejected" in bad.message


def test_falsifier_gradient_finds_narrow_region(abs_model, abs_net):
    text = _spec("(assert (and (>= Y_0 0.8) (>= Y_1 0.05)))")
    found = falsify(abs_net, read_vnnlib(text).properties[0],
                    options=FalsifierOptions(time_limit_s=2.0, restarts=2, steps=30))
    assert found is not None and found.verified
    _assert_valid(abs_model, text, found.x, found.y)


def test_falsifier_starts_attack_their_own_disjunct(abs_net):
    """Disjunct 0 (y0 = |x0 - x1| >= 0.9999) holds only in two tiny corners of the box
    (area 5e-9 each: random starts do not hit them), disjunct 1 (y2 >= 5) never. A
    corner start paired with disjunct 1 proves nothing, paired with disjunct 0 it is a
    counterexample at once."""
    prop = read_vnnlib(_spec("(assert (or (>= Y_0 0.9999) (>= Y_2 5.0)))")).properties[0]
    corner = np.array([[1.0, 0.0]])
    quick = FalsifierOptions(time_limit_s=0.2, restarts=1, steps=0)
    assert falsify(abs_net, prop, options=quick, starts=corner, start_disjuncts=[1]) is None
    found = falsify(abs_net, prop, options=quick, starts=corner, start_disjuncts=[0])
    assert found is not None and found.verified
    np.testing.assert_allclose(found.x, [1.0, 0.0])
    # a start for a disjunct that is not attacked is dropped
    assert falsify(abs_net, prop, options=quick, disjuncts=[1], starts=corner,
                   start_disjuncts=[0]) is None
    with pytest.raises(InvalidInputError, match="one per start"):
        falsify(abs_net, prop, options=quick, starts=corner, start_disjuncts=[0, 1])


def test_input_gradient_matches_finite_differences(rng):
    from milpverify.core.region import input_gradient
    layers = [(rng.normal(size=(6, 3)), rng.normal(size=6)), (rng.normal(size=(2, 6)),
                                                                rng.normal(size=2))]
    net = load_onnx(_mlp_onnx(layers, (3,)))
    x = rng.uniform(size=(4, 3))
    g_out = rng.normal(size=(4, 2))
    grad = input_gradient(net, x, g_out)
    h = 1e-6
    for i in range(3):
        e = np.zeros(3)
        e[i] = h
        fd = ((net.forward(x + e) - net.forward(x - e)) * g_out).sum(axis=1) / (2 * h)
        np.testing.assert_allclose(grad[:, i], fd, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------- result files / CLI
def test_cli_vnnlib_result_file_round_trips(tmp_path, abs_model):
    model_path = tmp_path / "abs.onnx"
    model_path.write_bytes(abs_model.SerializeToString())
    text = _spec("(assert (and (>= Y_0 0.5) (>= Y_1 0.2)))")
    spec_path = tmp_path / "p.vnnlib"
    spec_path.write_text(text)
    out = tmp_path / "result.txt"
    assert main(["vnnlib", str(model_path), str(spec_path), "--timeout", "30",
                 "--out", str(out)]) == 0
    result, x, y = parse_result(out)
    assert result == "sat" and x.shape == (2,) and y.shape == (3,)
    _assert_valid(abs_model, text, x, y)
    spec_path.write_text(_spec("(assert (>= Y_0 1.5))"))
    assert main(["vnnlib", str(model_path), str(spec_path), "--out", str(out)]) == 0
    assert parse_result(out) == ("unsat", None, None)


def test_cli_vnnlib_error_still_writes_result(tmp_path, abs_model, capsys):
    model_path = tmp_path / "abs.onnx"
    model_path.write_bytes(abs_model.SerializeToString())
    spec_path = tmp_path / "p.vnnlib"
    spec_path.write_text(_spec("(assert (>= Y_0 1.5))", n_in=5))
    out = tmp_path / "result.txt"
    assert main(["vnnlib", str(model_path), str(spec_path), "--out", str(out)]) == 1
    assert parse_result(out)[0] == "error"
    assert "milpverify: error:" in capsys.readouterr().err


def test_cli_vnnlib_threads(tmp_path, abs_model, capsys):
    model_path = tmp_path / "abs.onnx"
    model_path.write_bytes(abs_model.SerializeToString())
    spec_path = tmp_path / "p.vnnlib"
    spec_path.write_text(_spec("(assert (>= Y_0 1.5))"))
    assert main(["vnnlib", str(model_path), str(spec_path), "--threads", "2"]) == 0
    assert capsys.readouterr().out.startswith("unsat")
    assert main(["vnnlib", str(model_path), str(spec_path), "--threads", "0"]) == 1
    assert "`--threads` must be >= 1; got 0" in capsys.readouterr().err


def test_cli_scip_and_highs_workers(tmp_path, abs_model, capsys):
    model_path = tmp_path / "abs.onnx"
    model_path.write_bytes(abs_model.SerializeToString())
    spec_path = tmp_path / "p.vnnlib"
    spec_path.write_text(_spec("(assert (and (>= Y_0 0.9) (>= Y_1 0.2)))"))  # needs the MILP
    assert main(["vnnlib", str(model_path), str(spec_path), "--threads", "2",
                 "--backend", "scip+highs", "--no-attack"]) == 0
    assert capsys.readouterr().out.startswith("unsat")
    assert main(["vnnlib", str(model_path), str(spec_path), "--backend", "scip+nosuch"]) == 1
    assert "unknown backend 'nosuch'" in capsys.readouterr().err
    out = tmp_path / "results.csv"
    bench = _bench(tmp_path, abs_model)
    assert main(["vnncomp", str(bench), "--out", str(out), "--backend", "scip+"]) == 1
    assert "joined by '+'" in capsys.readouterr().err
    assert not out.exists()  # refused before any row


def test_cli_disjunct_cut_round_relu_split_and_milp_form_flags():
    def options(*flags: str) -> VnnlibOptions:
        return _vnnlib_options(build_parser().parse_args(["vnnlib", "m.onnx", "s.vnnlib", *flags]))

    assert (options().split_disjuncts, options().root_cut_rounds) == (True, 20)
    assert options().disjunct_tighten_fraction == VnnlibOptions().disjunct_tighten_fraction
    assert options("--disjunct-tighten", "0.25").disjunct_tighten_fraction == 0.25
    with pytest.raises(InvalidInputError, match="`disjunct_tighten_fraction` must be"):
        options("--disjunct-tighten", "2")
    assert options().relu_split_fraction == VnnlibOptions().relu_split_fraction == 0.0
    assert options("--relu-split", "0.3").relu_split_fraction == 0.3
    with pytest.raises(InvalidInputError, match="`relu_split_fraction` must be"):
        options("--relu-split", "2")
    assert options("--joint-disjuncts").split_disjuncts is False
    assert options("--root-cut-rounds", "5").root_cut_rounds == 5
    assert options("--root-cut-rounds", "-1").root_cut_rounds is None
    assert options().milp_objective is VnnlibOptions().milp_objective
    assert options("--milp-form", "objective").milp_objective is True
    assert options("--milp-form", "feasibility").milp_objective is False
    with pytest.raises(InvalidInputError, match="--milp-form"):
        milp_form_flag("optimality")


def _bench(tmp_path: Path, abs_model) -> Path:
    bench = tmp_path / "bench"
    (bench / "onnx").mkdir(parents=True)
    (bench / "vnnlib").mkdir()
    (bench / "onnx" / "abs.onnx").write_bytes(abs_model.SerializeToString())
    specs = {"sat": "(assert (and (>= Y_0 0.5) (>= Y_1 0.2)))", "unsat": "(assert (>= Y_0 1.5))"}
    rows = []
    for name, asserts in specs.items():
        (bench / "vnnlib" / f"{name}.vnnlib").write_text(_spec(asserts))
        rows.append(f"onnx/abs.onnx,vnnlib/{name}.vnnlib,30")
    (bench / "instances.csv").write_text("\n".join(rows) + "\n")
    return bench


def test_cli_vnncomp_is_resumable(tmp_path, abs_model):
    bench = _bench(tmp_path, abs_model)
    out = tmp_path / "results.csv"
    cex = tmp_path / "cex"
    args = ["vnncomp", str(bench), "--out", str(out), "--quiet", "--result-dir", str(cex)]
    assert main(args) == 0
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["vnnlib"], r["result"]) for r in rows] == [("vnnlib/sat.vnnlib", "sat"),
                                                          ("vnnlib/unsat.vnnlib", "unsat")]
    assert all(float(r["seconds"]) < 30 for r in rows)
    result, x, y = parse_result(cex / "abs__sat.txt")
    assert result == "sat"
    _assert_valid(abs_model, (bench / "vnnlib" / "sat.vnnlib").read_text(), x, y)
    assert main(args) == 0  # everything already done: nothing appended
    with open(out, newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 2
    assert len(run_vnncomp(bench, out, progress=False)) == 0
    assert len(run_vnncomp(bench, out, progress=False, rerun=True)) == 2


def test_vnncomp_resume_drops_a_truncated_last_line(tmp_path, abs_model):
    """A run killed mid-row leaves a line without its newline: the resumed run drops it and
    runs that instance again, so no row is glued to a half-written one."""
    bench = _bench(tmp_path, abs_model)
    out = tmp_path / "results.csv"
    run_vnncomp(bench, out, progress=False)
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:2]) + lines[2][:12])  # header, sat row, half the unsat row
    again = run_vnncomp(bench, out, progress=False)
    assert [r["vnnlib"] for r in again] == ["vnnlib/unsat.vnnlib"]
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["onnx"], r["vnnlib"], r["result"]) for r in rows] == [
        ("onnx/abs.onnx", "vnnlib/sat.vnnlib", "sat"),
        ("onnx/abs.onnx", "vnnlib/unsat.vnnlib", "unsat")]


def test_vnncomp_resume_keeps_an_older_files_columns(tmp_path, abs_model):
    """A results file written before the `group` column existed is resumed in its own seven
    columns: its rows count as done and new rows are written in its layout."""
    bench = _bench(tmp_path, abs_model)
    out = tmp_path / "results.csv"
    old = [c for c in RESULT_COLUMNS if c != "group"]
    out.write_text(",".join(old) + "\n"
                   + "onnx/abs.onnx,vnnlib/sat.vnnlib,sat,0.5,30,attack,found\n")
    again = run_vnncomp(bench, out, progress=False)
    assert [r["vnnlib"] for r in again] == ["vnnlib/unsat.vnnlib"]
    with open(out, newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert reader.fieldnames == old
    assert [(r["vnnlib"], r["result"]) for r in rows] == [("vnnlib/sat.vnnlib", "sat"),
                                                          ("vnnlib/unsat.vnnlib", "unsat")]


def test_read_instances_errors(tmp_path):
    from milpverify.errors import InvalidInputError
    bad = tmp_path / "instances.csv"
    bad.write_text("a.onnx,b.vnnlib,-3\n")
    with pytest.raises(InvalidInputError, match="positive number"):
        read_instances(bad)
    bad.write_text("a.onnx,b.vnnlib\n")
    with pytest.raises(InvalidInputError, match="onnx,vnnlib,timeout"):
        read_instances(bad)
    with pytest.raises(InvalidInputError, match="not found"):
        read_instances(tmp_path / "missing.csv")


# ---------------------------------------------------------------------------- shared rho
def _robustness_spec(centre: np.ndarray, eps: float, label: int, n_out: int) -> str:
    lo = np.maximum(0.0, centre - eps).astype(np.float32).astype(np.float64)
    hi = np.minimum(1.0, centre + eps).astype(np.float32).astype(np.float64)
    lines = [f"(declare-const X_{i} Real)" for i in range(centre.size)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_out)]
    for i in range(centre.size):
        lines += [f"(assert (<= X_{i} {float(hi[i])!r}))", f"(assert (>= X_{i} {float(lo[i])!r}))"]
    ors = " ".join(f"(and (>= Y_{j} Y_{label}))" for j in range(n_out) if j != label)
    return "\n".join(lines) + f"\n(assert (or {ors}))\n"


def test_linf_robustness_form():
    centre = np.array([0.0, 0.3, 0.99, 0.5])
    form = linf_robustness_form(read_vnnlib(_robustness_spec(centre, 0.05, 1, 3)))
    assert form is not None and form.label == 1 and form.exact
    np.testing.assert_allclose(form.centre, centre, atol=1e-7)
    assert abs(form.radius - 0.05) < 1e-7
    # Not the misclassification set, or several properties: not recognised.
    assert linf_robustness_form(read_vnnlib(_spec("(assert (>= Y_0 Y_1))"))) is None
    text = _robustness_spec(centre, 0.05, 1, 3).replace("(and (>= Y_2 Y_1))", "(and (>= Y_2 2))")
    assert linf_robustness_form(read_vnnlib(text)) is None


def test_shared_rho_agrees_with_per_instance(rng):
    layers = [(rng.normal(size=(8, 4)), rng.normal(size=8) * 0.3),
              (rng.normal(size=(3, 8)), rng.normal(size=3) * 0.3)]
    model = _mlp_onnx(layers, (4,))
    net = load_onnx(model)
    centre = rng.uniform(0.1, 0.9, size=4)
    label = int(net.predict(centre)[0])
    specs = [read_vnnlib(_robustness_spec(centre, eps, label, 3))
             for eps in (0.01, 0.05, 0.1, 0.2, 0.4)]
    answers, res = shared_rho_decisions(net, specs, time_limit_s=30)
    assert res.status in ("optimal", "robust_at_cap")
    decided = 0
    for spec, answer in zip(specs, answers):
        single = verify_vnnlib(net, spec, timeout_s=30)
        if answer is None:
            continue
        decided += 1
        assert answer.result == single.result
        if answer.result == "sat":
            check = check_counterexample(net, spec.properties[0], answer.x)
            assert check.verified
    assert decided >= 4


# ---------------------------------------------------------------------------- VNN-COMP data
FC = ("vnncomp", "mnist_fc_2022")
ERAN = ("vnncomp", "eran_mnist_2021")


def _truth(path: Path) -> dict[tuple[str, str], str]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    key = "ground_truth" if "ground_truth" in rows[0] else "consensus"
    return {(Path(r["onnx"]).name, Path(r["vnnlib"]).name): r[key] for r in rows}


def _check_against_truth(bench: Path, truth: dict, onnx_rel: str, vnnlib_rel: str,
                         timeout_s: float) -> str:
    net = load_onnx(bench / onnx_rel)
    spec = read_vnnlib(bench / vnnlib_rel)
    r = verify_vnnlib(net, spec, timeout_s=timeout_s)
    expected = truth[(Path(onnx_rel).name, Path(vnnlib_rel).name)]
    if r.result == "sat":
        assert expected != "holds", f"WRONG: sat on a 'holds' instance {vnnlib_rel}"
        check = check_counterexample(net, spec.properties[0], r.x)
        assert check.verified
        np.testing.assert_allclose(r.y, check.y_onnx, rtol=0, atol=0)
    if r.result == "unsat":
        assert expected != "violated", f"WRONG: unsat on a 'violated' instance {vnnlib_rel}"
    return r.result


@pytest.mark.parametrize("prop, expected", [
    ("prop_0_0.03", "unsat"),    # bounds
    ("prop_1_0.03", "sat"),      # falsifier
    ("prop_2_0.03", "sat"),      # falsifier from bound vertices (was the MILP; two
                                 # VNN-COMP tools wrongly said "holds")
    ("prop_8_0.03", "unsat"),    # MILP
])
def test_mnist_fc_256x2_ground_truth(shared_data, prop, expected):
    bench = shared_data.joinpath(*FC)
    truth = _truth(bench / "results_vnncomp2022_consensus.csv")
    got = _check_against_truth(bench, truth, "onnx/mnist-net_256x2.onnx",
                               f"vnnlib/{prop}.vnnlib", 60)
    assert got == expected


def test_disjunct_tightening_on_a_milp_instance(shared_data):
    """256x2 prop_8_0.03 ("holds", decided by a MILP): without the global tightening (so
    that the split MILPs come at once), the disjunct-conditioned LP bounds before each of
    them keep the answer."""
    bench = shared_data.joinpath(*FC)
    truth = _truth(bench / "results_vnncomp2022_consensus.csv")
    assert truth[("mnist-net_256x2.onnx", "prop_8_0.03.vnnlib")] == "holds"
    net = load_onnx(bench / "onnx" / "mnist-net_256x2.onnx")
    r = verify_vnnlib(net, bench / "vnnlib" / "prop_8_0.03.vnnlib", timeout_s=60,
                      options=VnnlibOptions(tighten=False, disjunct_tighten_fraction=0.3))
    assert r.result == "unsat", r.message
    assert r.timings["disjunct_tighten_s"] > 0


def test_optimised_slopes_decide_by_bounds(shared_data):
    """256x2 prop_4_0.03 ("holds"): symbolic bounds leave disjuncts open and the MILP
    decides it; with the optimised-slope bounds (default) the bounds alone decide it."""
    bench = shared_data.joinpath(*FC)
    net = load_onnx(bench / "onnx" / "mnist-net_256x2.onnx")
    spec = read_vnnlib(bench / "vnnlib" / "prop_4_0.03.vnnlib")
    with_alpha = verify_vnnlib(net, spec, timeout_s=60)
    without = verify_vnnlib(net, spec, timeout_s=60, options=VnnlibOptions(alpha=False))
    assert (with_alpha.result, with_alpha.decided_by) == ("unsat", "bounds")
    assert with_alpha.stats["unstable_alpha"] < with_alpha.stats["unstable_symbolic"]
    assert (without.result, without.decided_by) == ("unsat", "milp")
    assert "unstable_alpha" not in without.stats


@pytest.mark.parametrize("onnx_name, prop", [("256x4", "prop_6_0.05"), ("256x6", "prop_1_0.05")])
def test_attack_from_bound_vertices_finds_counterexamples(shared_data, onnx_name, prop):
    """Two "violated" instances that random-start gradient attacks miss (30 s of
    `falsify` here, and 300 s of MILP in the VNN-COMP run): starting the attack at the
    box vertices where the bounds' relaxation of each spec row is smallest finds them
    (256x4 from the CROWN vertices, 256x6 only from the optimised-slope ones)."""
    bench = shared_data.joinpath(*FC)
    truth = _truth(bench / "results_vnncomp2022_consensus.csv")
    onnx_rel, vnnlib_rel = f"onnx/mnist-net_{onnx_name}.onnx", f"vnnlib/{prop}.vnnlib"
    assert truth[(Path(onnx_rel).name, Path(vnnlib_rel).name)] == "violated"
    net = load_onnx(bench / onnx_rel)
    blind = falsify(net, read_vnnlib(bench / vnnlib_rel).properties[0],
                    options=FalsifierOptions(time_limit_s=3.0))
    assert blind is None
    r = verify_vnnlib(net, bench / vnnlib_rel, timeout_s=60)
    assert (r.result, r.decided_by) == ("sat", "attack")
    assert _check_against_truth(bench, truth, onnx_rel, vnnlib_rel, 60) == "sat"


def test_eran_ground_truth_by_bounds(shared_data):
    bench = shared_data.joinpath(*ERAN)
    truth = _truth(bench / "results_vnncomp2021_consensus.csv")
    got = _check_against_truth(bench, truth, "nets/mnist_relu_9_200.onnx",
                               "specs/mnist/mnist_spec_idx_8098_eps_0.01500.vnnlib", 60)
    assert got == "unsat"


@pytest.mark.slow
def test_mnist_fc_256x2_all_instances_no_wrong_answers(shared_data, tmp_path):
    bench = shared_data.joinpath(*FC)
    truth = _truth(bench / "results_vnncomp2022_consensus.csv")
    instances = [i for i in read_instances(bench / "instances.csv") if "256x2" in i.onnx]
    rows = run_vnncomp(bench, tmp_path / "r.csv", instances=instances, progress=False,
                       result_dir=tmp_path / "cex")
    net = load_onnx(bench / instances[0].onnx)
    solved = 0
    for inst, row in zip(instances, rows):
        expected = truth[(Path(inst.onnx).name, Path(inst.vnnlib).name)]
        assert (row["result"], expected) not in (("sat", "holds"), ("unsat", "violated"))
        solved += row["result"] in ("sat", "unsat")
        if row["result"] == "sat":
            name = f"mnist-net_256x2__{Path(inst.vnnlib).stem}.txt"
            _, x, y = parse_result(tmp_path / "cex" / name)
            spec = read_vnnlib(bench / inst.vnnlib)
            assert check_counterexample(net, spec.properties[0], x).verified
    assert solved == len(instances)


@pytest.mark.slow
def test_shared_rho_mnist_fc_pair(shared_data, tmp_path):
    bench = shared_data.joinpath(*FC)
    truth = _truth(bench / "results_vnncomp2022_consensus.csv")
    instances = [i for i in read_instances(bench / "instances.csv")
                 if "256x2" in i.onnx and Path(i.vnnlib).stem.startswith(("prop_0_", "prop_3_"))]
    rows = run_vnncomp(bench, tmp_path / "r.csv", instances=instances, shared_rho=True,
                       progress=False)
    by_key = {(r["onnx"], r["vnnlib"]): r for r in rows}
    for inst in instances:
        expected = truth[(Path(inst.onnx).name, Path(inst.vnnlib).name)]
        got = by_key[(inst.onnx, inst.vnnlib)]["result"]
        assert got == {"holds": "unsat", "violated": "sat"}[expected]
    assert any(r["decided_by"] == "rho" for r in rows)
    assert math.isfinite(float(rows[0]["seconds"]))


def test_gzipped_model_and_spec_paths(tmp_path, abs_model):
    import gzip
    model_path = tmp_path / "abs.onnx.gz"
    model_path.write_bytes(gzip.compress(abs_model.SerializeToString()))
    spec_path = tmp_path / "p.vnnlib.gz"
    spec_path.write_bytes(gzip.compress(_spec("(assert (>= Y_0 1.5))").encode()))
    assert verify_vnnlib(model_path, spec_path, timeout_s=30).result == "unsat"


@pytest.mark.parametrize("verbose", [False, True])
def test_vnnlib_solver_log_only_when_verbose(abs_net, tmp_path, capfd, verbose):
    """`VnnlibOptions.verbose` (the CLI's --verbose) is the one way to see SCIP's log of the
    property MILPs; the stages before the MILP are off so that the MILP decides."""
    spec = tmp_path / "sat.vnnlib"
    spec.write_text(_spec("(assert (and (>= Y_0 0.5) (>= Y_1 0.2)))"))
    options = VnnlibOptions(attack=False, alpha=False, tighten=False, input_split=False,
                            verbose=verbose)
    result = verify_vnnlib(abs_net, spec, timeout_s=30, options=options)
    assert result.result == "sat" and result.decided_by == "milp"
    assert ("SCIP Status" in capfd.readouterr().out) == verbose
