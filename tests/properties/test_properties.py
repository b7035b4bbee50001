"""Relaxed top-K and affinity robustness: brute force on tiny nets, K = 1 is rho, witnesses.

The brute force is independent of milpverify's encoder: in each activation region the
network is affine, and "every certifying top-k set changed" is a union of polyhedra (one
pair (i in T_k, j not in T_k) with y_j >= y_i chosen per k), so the minimum over regions
and choices of the region-restricted LP is exactly the property's radius.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
from helpers import activation_regions, make_onnx, node, random_mlp, run_ort
from scipy.optimize import linprog

import milpverify
from milpverify.encode.milp import Term, encode_network
from milpverify.encode.model import MilpModel
from milpverify.errors import InvalidInputError
from milpverify.properties.certify import certify_affinity, certify_properties, certify_topk
from milpverify.properties.encoding import add_topk_changed
from milpverify.properties.pairs import plan_pairs, property_bounds
from milpverify.properties.query import check_property_witness, topk_query
from milpverify.properties.rho import rho_affinity, rho_property, rho_topk
from milpverify.properties.spec import Affinity, RelaxedTopK, load_groups, parse_property
from milpverify.solve import get_backend
from milpverify.solve.base import SolveOptions, SolveStatus
from milpverify.verify import rho

SIZES = [2, 5, 4, 4]
#: Exact answers: a bracket below the 1e-6 the comparisons use (float32 witnesses are
#: only resolved to ~6e-8 near 0.5, so not much tighter).
EXACT = {"time_limit_s": 30, "tolerance": 5e-7}


@pytest.fixture(autouse=True)
def _quiet_witness_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)


# ---------------------------------------------------------------------------- brute force
def brute_force_radius(pieces: list, x: np.ndarray, order: list[int], ks: list[int],
                       domain: tuple[float, float] = (0.0, 1.0)) -> float:
    """min over regions and per-k pair choices of the L-inf LP (scipy HiGHS)."""
    if not ks:
        return 0.0
    n = len(x)
    per_k = [[(i, j) for i in order[:k] for j in order[k:]] for k in ks]
    if any(not p for p in per_k):
        return math.inf
    choices = {frozenset(c) for c in itertools.product(*per_k)}
    best = math.inf
    for a_ub, b_ub, fa, fc in pieces:
        base_rows = [np.c_[a_ub, np.zeros(len(a_ub))], np.c_[np.eye(n), -np.ones(n)],
                     np.c_[-np.eye(n), -np.ones(n)]]
        base_rhs = [b_ub, x, -x]
        for choice in choices:
            # (fa_j - fa_i) x' + fc_j - fc_i >= 0  for every chosen pair
            pair_rows = np.array([np.r_[-(fa[j] - fa[i]), 0.0] for i, j in choice])
            pair_rhs = np.array([fc[j] - fc[i] for i, j in choice])
            res = linprog(np.r_[np.zeros(n), 1.0], A_ub=np.vstack([pair_rows, *base_rows]),
                          b_ub=np.concatenate([pair_rhs, *base_rhs]),
                          bounds=[domain] * n + [(0, None)], method="highs")
            if res.status == 0:
                best = min(best, res.fun)
    return best


def tiny(seed: int) -> tuple[milpverify.Network, list, np.ndarray]:
    rng = np.random.default_rng(seed)
    net, weights = random_mlp(rng, SIZES)
    return net, weights, rng.uniform(0.2, 0.8, size=2)


@functools.lru_cache(maxsize=None)
def expected_radius(seed: int, ks: tuple[int, ...]) -> float:
    """Brute-force radius of the tiny net `seed` at its x for certifying k's `ks` (cached)."""
    net, weights, x = tiny(seed)
    return brute_force_radius(tiny_regions(seed), x, order_at(net, x), list(ks))


@functools.lru_cache(maxsize=None)
def tiny_regions(seed: int) -> list:
    return activation_regions(tiny(seed)[1], 2)


def order_at(net: milpverify.Network, x: np.ndarray) -> list[int]:
    return [int(c) for c in np.argsort(-net.forward(x)[0], kind="stable")]


def assert_radius(result: milpverify.core.results.RhoResult, expected: float) -> None:
    if math.isinf(expected):
        assert result.status == "robust_at_cap" and math.isinf(result.lower), result
        return
    assert result.status == "optimal", result
    assert result.lower == pytest.approx(expected, abs=1e-6)
    assert result.upper == pytest.approx(expected, abs=1e-5)
    assert result.witness_verified


# ---------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("seed", range(6))
def test_topk_1_equals_rho(seed: int) -> None:
    net, _, x = tiny(seed)
    plain = rho(net, x, **EXACT)
    relaxed = rho_topk(net, x, 1, **EXACT)
    assert relaxed.status == plain.status
    if math.isinf(plain.lower):
        assert math.isinf(relaxed.lower)
    else:
        assert relaxed.lower == pytest.approx(plain.lower, abs=1e-6)
        assert relaxed.upper == pytest.approx(plain.upper, abs=1e-5)
        assert relaxed.label == plain.label


@pytest.mark.parametrize(("seed", "encoding"), [
    (0, "pairs"), (1, "pairs"), (2, "pairs"), (7, "pairs"), (8, "pairs"),
    (1, "select"), (8, "select"),
    *[pytest.param(s, "select", marks=pytest.mark.slow) for s in (0, 2, 7)],
])
def test_rho_topk_matches_brute_force(seed: int, encoding: str) -> None:
    net, _, x = tiny(seed)
    for k_max in (2, 3):
        expected = expected_radius(seed, tuple(range(1, k_max + 1)))
        assert_radius(rho_topk(net, x, k_max, encoding=encoding, **EXACT), expected)


@pytest.mark.parametrize("seed", [0, 3, 6, 7, 11])
@pytest.mark.parametrize("semantics", ["subset", "full"])
def test_rho_affinity_matches_brute_force(seed: int, semantics: str) -> None:
    net, _, x = tiny(seed)
    groups = [[0, 1], [2, 3]]
    ks = Affinity(((0, 1), (2, 3)), semantics).certifying_ks(order_at(net, x))
    expected = expected_radius(seed, ks)
    result = rho_affinity(net, x, groups, semantics=semantics, **EXACT)
    assert result.stats["certifying_ks"] == list(ks)
    assert_radius(result, expected)


@pytest.mark.parametrize("seed", [1, 2, 8])
def test_rho_topk_is_non_decreasing_in_k(seed: int) -> None:
    net, _, x = tiny(seed)
    radii = [rho_topk(net, x, k, **EXACT).lower for k in (1, 2, 3, 4)]
    assert all(a <= b + 1e-6 for a, b in zip(radii, radii[1:])), radii
    assert math.isinf(radii[-1])  # k = #classes: the top-4 set of 4 classes never changes


# ---------------------------------------------------------------------------- witnesses
def onnx_mlp(weights: list) -> milpverify.Network:
    """The same MLP as a Gemm/Relu ONNX model (float32 weights), so onnxruntime runs too."""
    nodes, inits, prev = [], {}, "x"
    for k, (w, b) in enumerate(weights):
        inits[f"W{k}"], inits[f"b{k}"] = w, b
        out = "y" if k == len(weights) - 1 else f"h{k}"
        nodes.append(node("Gemm", [prev, f"W{k}", f"b{k}"], out, transB=1))
        prev = out
        if k < len(weights) - 1:
            nodes.append(node("Relu", [out], f"r{k}"))
            prev = f"r{k}"
    return milpverify.load_onnx(make_onnx(nodes, inits, [("x", ("N", weights[0][0].shape[1]))]))


def top_sets_all_changed(logits: np.ndarray, order: list[int], ks: list[int]) -> bool:
    """Independent check: for every k, some label outside T_k reaches min over T_k."""
    return all(max(logits[j] for j in order[k:]) >= min(logits[i] for i in order[:k])
               for k in ks)


@pytest.mark.parametrize("seed", [1, 8])
def test_witness_changes_every_top_k_set_in_onnxruntime(seed: int) -> None:
    _, weights, x = tiny(seed)
    net = onnx_mlp(weights)
    order = order_at(net, x)
    result = rho_topk(net, x, 3, time_limit_s=30)
    assert result.status == "optimal" and result.witness_verified, result
    ort_logits = run_ort(net.origin.onnx_bytes, result.witness.reshape(1, -1))[0]
    assert top_sets_all_changed(ort_logits, order, [1, 2, 3])
    assert top_sets_all_changed(net.forward(result.witness)[0], order, [1, 2, 3])
    assert np.abs(result.witness - x).max() == pytest.approx(result.upper, abs=1e-12)
    check = check_property_witness(net, x, result.witness, RelaxedTopK(3))
    assert check.verified and check.margin_onnx is not None and check.margin_onnx >= 0


def test_witness_check_rejects_a_point_that_keeps_a_top_k_set() -> None:
    net, _, x = tiny(1)
    r1 = rho_topk(net, x, 1, time_limit_s=30)
    check = check_property_witness(net, x, r1.witness, RelaxedTopK(2))
    if check.verified:  # the K=1 witness happens to change T_2 as well
        pytest.skip("witness changes both sets")
    assert not check.verified and check.margin_numpy < 0 and "topk:2" in check.message


# ---------------------------------------------------------------------------- certify
@pytest.mark.parametrize("seed", [1, 8])
def test_certify_topk_brackets_rho(seed: int) -> None:
    net, _, x = tiny(seed)
    exact = rho_topk(net, x, 2, time_limit_s=30)
    assert exact.status == "optimal"
    below = certify_topk(net, x, 2, exact.lower * 0.98, time_limit_s=30)
    above = certify_topk(net, x, 2, exact.upper * 1.02, time_limit_s=30)
    assert below.verdict == "robust"
    assert above.verdict == "not_robust" and above.witness_verified
    assert check_property_witness(net, x, above.witness, RelaxedTopK(2)).verified


def test_certify_properties_shares_proofs_and_witnesses() -> None:
    net, _, x = tiny(8)
    radii = [rho_topk(net, x, k, time_limit_s=30).lower for k in (1, 2, 3)]
    eps = 0.5 * (radii[0] + radii[1])            # between rho_1 and rho_2
    props = [RelaxedTopK(1), RelaxedTopK(2), RelaxedTopK(3)]
    certs = certify_properties(net, x, props, eps, time_limit_s=30)
    assert [c.verdict for c in certs] == ["not_robust", "robust", "robust"]
    assert certs[2].stats.get("implied_by") == "topk:2" or certs[2].message
    far = certify_properties(net, x, props, radii[2] * 1.05, time_limit_s=30)
    assert all(c.verdict == "not_robust" and c.witness_verified for c in far)


def test_affinity_with_no_fitting_group_is_violated_at_x() -> None:
    net, _, x = tiny(1)
    order = order_at(net, x)
    groups = [[order[0], order[3]]]               # top-1 fits, top-2 does not
    full = rho_affinity(net, x, groups, semantics="full", time_limit_s=30)
    assert full.stats["certifying_ks"] == []
    assert full.status == "optimal" and full.upper < 1e-7 and full.witness_verified
    cert = certify_affinity(net, x, groups, 1e-3, semantics="full")
    assert cert.verdict == "not_robust"
    subset = rho_affinity(net, x, groups, **EXACT)
    assert subset.stats["certifying_ks"] == [1]
    assert subset.lower == pytest.approx(rho(net, x, **EXACT).lower, abs=1e-6)


# ---------------------------------------------------------------------------- encoders
@pytest.mark.parametrize("encoding", ["pairs", "select"])
def test_pinned_input_is_feasible_iff_every_set_changed(encoding: str) -> None:
    """Pin the input (lower = upper = p): the MILP is feasible iff violation(p) >= margin."""
    rng = np.random.default_rng(9)               # a net where ~40% of the domain violates
    net, _ = random_mlp(rng, [2, 6, 6, 5])
    x = np.array([0.5, 0.5])
    prop = RelaxedTopK(3)
    box = (np.zeros(2), np.ones(2))
    bounds, out = property_bounds(net, box, "symbolic")
    query = topk_query(net, x, prop)
    plan = plan_pairs(query, out, 0.0)
    assert plan.impossible is None and plan.ks == [1, 2, 3]
    outcomes = set()
    for p in rng.uniform(0, 1, size=(40, 2)):
        model = MilpModel()
        xv = model.add_vars(2, p, p, name="input")
        enc = encode_network(net, bounds, model, Term.of_vars(xv))
        add_topk_changed(model, enc.terms[net.output], plan, 0.0, encoding=encoding)
        result = get_backend("highs").solve(model, SolveOptions())
        v = query.violation(net.forward(p)[0])
        if abs(v) < 1e-6:
            continue
        assert (result.status == SolveStatus.OPTIMAL) == (v > 0), (p, v, result.status)
        outcomes.add(v > 0)
    assert outcomes == {True, False}


def test_difference_bounds_are_sound_and_tighter() -> None:
    rng = np.random.default_rng(3)
    net, _ = random_mlp(rng, [3, 8, 8, 5])
    x = np.full(3, 0.5)
    box = (x - 0.2, x + 0.2)
    _, tight = property_bounds(net, box, "symbolic")
    _, loose = property_bounds(net, box, "symbolic", differences=False)
    assert np.all(tight.lower_diff >= loose.lower_diff - 1e-12)
    assert np.all(tight.upper_diff <= loose.upper_diff + 1e-12)
    assert np.any(tight.upper_diff < loose.upper_diff - 1e-6)
    y = net.forward(rng.uniform(box[0], box[1], size=(2000, 3)))
    diff = y[:, :, None] - y[:, None, :]          # diff[s, j, i] = y_j - y_i
    assert np.all(diff >= tight.lower_diff - 1e-9) and np.all(diff <= tight.upper_diff + 1e-9)


def test_pairs_encoding_shares_one_binary_per_pair() -> None:
    """RTK-3 over 4 classes: 3 + 4 + 3 (k, pair) combinations, but only 6 distinct pairs."""
    net, _, x = tiny(8)
    query = topk_query(net, x, RelaxedTopK(3))
    box = (np.zeros(2), np.ones(2))
    bounds, out = property_bounds(net, box, "interval", differences=False)
    plan = plan_pairs(query, out, 0.0)
    model = MilpModel()
    enc = encode_network(net, bounds, model, Term.of_vars(model.add_vars(2, 0, 1)))
    z = add_topk_changed(model, enc.terms[net.output], plan, 0.0)
    assert len(z) <= 6
    assert plan.stats["pairs_total"] == 10


# ---------------------------------------------------------------------------- properties
def test_certifying_ks_by_hand() -> None:
    order = (3, 2, 0, 1, 4)
    assert RelaxedTopK(3).certifying_ks(order) == (1, 2, 3)
    groups = ((2, 3), (0, 1, 4))
    assert Affinity(groups).certifying_ks(order) == (1, 2)            # {3}, {3,2} fit (2,3)
    assert Affinity(groups, "full").certifying_ks(order) == (2,)      # top-2 = {2,3}
    assert Affinity(((0, 1, 4),)).certifying_ks(order) == ()          # top-1 = 3 fits none
    assert Affinity(((0, 1, 2, 3),), "full").certifying_ks(order) == (4,)  # top-4 = {0,1,2,3}
    assert Affinity(((0, 1, 2, 4),), "full").certifying_ks(order) == ()  # top-4 has 3, not 4


def test_invalid_properties_raise_clear_errors() -> None:
    net, _, x = tiny(0)
    with pytest.raises(InvalidInputError, match=r"`K` must be an integer in \[1, 4\]"):
        rho_topk(net, x, 5)
    with pytest.raises(InvalidInputError, match=r"`K` must be an integer"):
        certify_topk(net, x, 0, 0.1)
    with pytest.raises(InvalidInputError, match=r"labels \[7\] outside \[0, 4\)"):
        rho_affinity(net, x, [[0, 7]])
    with pytest.raises(InvalidInputError, match="lists a label twice"):
        Affinity(((0, 0),))
    with pytest.raises(InvalidInputError, match="non-empty list of label lists"):
        Affinity(())
    with pytest.raises(InvalidInputError, match="'subset' or 'full'"):
        Affinity(((0,),), "exact")
    with pytest.raises(InvalidInputError, match="`encoding` must be one of"):
        rho_topk(net, x, 2, encoding="dense")


def test_load_groups_and_parse_property(tmp_path: Path) -> None:
    good = tmp_path / "groups.json"
    good.write_text(json.dumps({"groups": [[0, 1, 8, 9], [2, 3, 4, 5, 6, 7]],
                                "names": ["vehicles", "animals"]}))
    assert load_groups(good) == [[0, 1, 8, 9], [2, 3, 4, 5, 6, 7]]
    assert parse_property(f"affinity:{good}") == Affinity(((0, 1, 8, 9), (2, 3, 4, 5, 6, 7)))
    full = tmp_path / "full.json"
    full.write_text(json.dumps({"groups": [[0, 1]], "semantics": "full"}))
    assert parse_property(f"affinity:{full}") == Affinity(((0, 1),), "full")
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps({"groups": [[0, 1]], "colour": "red"}))
    with pytest.warns(UserWarning, match=r"ignoring unknown keys \['colour'\]"):
        assert load_groups(odd) == [[0, 1]]
    assert parse_property("topk:3") == RelaxedTopK(3)
    cases = {
        "missing.json": "cannot read affinity groups file",
        "bad.json": "is not valid JSON",
        "nokey.json": 'must hold an object with a "groups" key',
        "strings.json": r"contains '0'; labels are integers",
        "empty.json": "must be a non-empty list of labels",
        "names.json": "must list one name per group",
        "semantics.json": "\"semantics\" in .* must be 'subset' or 'full'",
    }
    (tmp_path / "semantics.json").write_text(json.dumps({"groups": [[0]], "semantics": "x"}))
    (tmp_path / "bad.json").write_text("{groups: [[0, 1]]")
    (tmp_path / "nokey.json").write_text(json.dumps([[0, 1]]))
    (tmp_path / "strings.json").write_text(json.dumps({"groups": [["0", 1]]}))
    (tmp_path / "empty.json").write_text(json.dumps({"groups": [[0], []]}))
    (tmp_path / "names.json").write_text(json.dumps({"groups": [[0]], "names": ["a", "b"]}))
    for name, message in cases.items():
        with pytest.raises(InvalidInputError, match=message):
            load_groups(tmp_path / name)
    with pytest.raises(InvalidInputError, match="needs an integer K"):
        parse_property("topk:two")
    with pytest.raises(InvalidInputError, match="unknown property 'top3'"):
        parse_property("top3")


def test_rho_affinity_reads_a_groups_file(tmp_path: Path) -> None:
    net, _, x = tiny(7)
    path = tmp_path / "g.json"
    path.write_text(json.dumps({"groups": [[0, 1], [2, 3]]}))
    from_file = rho_affinity(net, x, str(path), time_limit_s=30)
    from_list = rho_property(net, x, Affinity(((0, 1), (2, 3))), time_limit_s=30)
    assert from_file.lower == pytest.approx(from_list.lower, abs=1e-9)
