"""Ruling out labels by ReLU splitting (`milpverify.core.refute`): a label is ruled out exactly
when enumerating the activation regions says it cannot win by the query's margin, and
`certify` reports what it proved."""

from __future__ import annotations

import functools
import time

import numpy as np
import pytest
from helpers import activation_regions, random_mlp
from scipy.optimize import linprog

import milpverify
from milpverify.core.bracket import certified_lower, split_lower
from milpverify.core.query import query_box, validate_query
from milpverify.core.refute import can_refute, refute_labels
from milpverify.core.results import RhoStatus
from milpverify.core.spec_bounds import query_bounds
from milpverify.errors import InvalidInputError
from milpverify.ir import ops
from milpverify.ir.network import Network

X = np.array([0.5, 0.5])
EPS = 0.5  # the whole unit square
#: Seeds whose closest label wins somewhere in the square and where the symbolic bounds keep
#: two labels open just above its exact reach (the test asserts both).
SEEDS = (2, 5, 8, 9)


def _exact_max(weights, label: int, j: int) -> float:
    """max of f_j - f_label over the unit square, by LP over every activation region."""
    row = np.zeros(weights[-1][0].shape[0])
    row[j], row[label] = 1.0, -1.0
    best = -np.inf
    for a_ub, b_ub, fa, fc in activation_regions(weights, 2, (0.0, 1.0)):
        res = linprog(-(row @ fa), A_ub=a_ub, b_ub=b_ub, bounds=[(0.0, 1.0)] * 2,
                      method="highs")
        if res.status == 0:
            best = max(best, -res.fun + row @ fc)
    return best


@functools.cache
def _case(seed: int):
    """A 2-5-5-3 net, the other label that comes closest to winning at X and every reach."""
    net, weights = random_mlp(np.random.default_rng(200 + seed), [2, 5, 5, 3])
    label = int(np.argmax(net.forward(X)))
    reach = {j: _exact_max(weights, label, j) for j in range(3) if j != label}
    top = max(reach, key=reach.get)
    return net, top, reach


@pytest.mark.parametrize("seed", SEEDS)
def test_rules_out_a_label_exactly_when_region_enumeration_says_it_cannot_win(seed):
    """Margin just above the closest label's exact reach: every label is ruled out although
    the symbolic bounds keep that one; just below: that label stays."""
    net, top, reach = _case(seed)
    gap = 0.02 * (1.0 + abs(reach[top]))
    assert reach[top] - gap >= 0, "the case needs a label that wins somewhere"
    for margin, possible in ((reach[top] + gap, False), (reach[top] - gap, True)):
        q = validate_query(net, X, norm="linf", domain=(0.0, 1.0), margin=margin, target=None,
                           label=None)
        qb = query_bounds(net, q, query_box(q, EPS), "symbolic")
        assert top in qb.candidates and len(qb.candidates) == 2  # the bounds leave both open
        left, stats = refute_labels(net, q, qb, time.perf_counter() + 20)
        if possible:
            assert top in left.candidates, stats
        else:
            assert left.candidates == [], stats
            assert top in stats["relu_refuted"] and stats["relu_domains"] > 1
        kept = [qb.candidates.index(j) for j in left.candidates]
        np.testing.assert_array_equal(left.margin_upper, qb.margin_upper[kept])


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_certify_reports_the_labels_relu_splitting_rules_out(seed, monkeypatch):
    """With no time for the first MILP, the stage must prove robustness above the reach."""
    monkeypatch.setattr(milpverify.verify, "FIRST_MILP_SHARE", 1e-12)
    net, top, reach = _case(seed)
    gap = 0.02 * (1.0 + abs(reach[top]))
    cert = milpverify.certify(net, X, EPS, margin=reach[top] + gap, bounds_method="symbolic",
                              attack=None, relu_split=0.9, time_limit_s=30)
    assert (cert.verdict, cert.message) == ("robust", "proven by ReLU splitting")
    assert top in cert.stats["relu_refuted"] and cert.timings["relu_split_s"] > 0
    # below the reach: the splitting (on alpha bounds) leaves `top`, the LP-tightened bounds
    # are computed for what it leaves and the last MILP finds a point and verifies it
    cert = milpverify.certify(net, X, EPS, margin=reach[top] - gap, bounds_method="progressive",
                              attack=None, relu_split=0.9, time_limit_s=30)
    assert cert.verdict == "not_robust" and cert.witness_verified
    assert cert.adversarial_label == top or reach[cert.adversarial_label] >= reach[top] - gap


@pytest.mark.parametrize("share", [-0.1, 1.0, float("nan"), "half"])
def test_bad_relu_split_share_is_named(share):
    net, _ = random_mlp(np.random.default_rng(0), [2, 5, 5, 3])
    message = r"`relu_split` must be a number in \[0, 1\); got "
    with pytest.raises(InvalidInputError, match=message):
        milpverify.certify(net, X, EPS, relu_split=share)
    with pytest.raises(InvalidInputError, match=message):
        milpverify.rho(net, X, relu_split=share)


#: Seeds whose bound-certified radius (symbolic, alpha) stays visibly below rho.
LOOSE_SEEDS = (1, 8)


@pytest.mark.parametrize("seed", LOOSE_SEEDS)
def test_split_lower_proves_a_radius_between_the_alpha_radius_and_rho(seed):
    """The bisection by ReLU splitting is sound (never above rho) and beats alpha-CROWN's."""
    net, _, _ = _case(seed)
    exact = milpverify.rho(net, X, time_limit_s=30)
    assert exact.status == "optimal"
    q = validate_query(net, X, norm="linf", domain=(0.0, 1.0), margin=0.0, target=None,
                       label=None)
    alpha, _ = certified_lower(net, q, exact.upper, 1e-5, 5.0)
    proven = split_lower(net, q, alpha, exact.upper, 1e-5, time.perf_counter() + 10)
    assert alpha < proven <= exact.lower + 1e-9, (alpha, proven, exact.lower)


@pytest.mark.parametrize("seed", LOOSE_SEEDS[:1])
def test_rho_raises_lower_by_relu_splitting_after_a_time_out(seed, monkeypatch):
    """A time-out of the MILPs (forced: the closer returns at once) with the stage on (the
    default): `lower` comes from the bisection by ReLU splitting, still below rho; off: it
    does not."""
    net, _, _ = _case(seed)
    exact = milpverify.rho(net, X, time_limit_s=30)

    def time_out(search, best, radius, qb, deadline, tolerance, first_lower, stats, finish,
                 beyond):
        return finish(first_lower, RhoStatus.TIME_LIMIT, best, "forced time-out")

    monkeypatch.setattr(milpverify.verify, "close_bracket", time_out)
    on = milpverify.rho(net, X, time_limit_s=20)
    off = milpverify.rho(net, X, time_limit_s=20, relu_split=0)
    assert on.status == off.status == "time_limit"
    assert on.stats["lower_from"] == "ReLU-splitting bisection"
    assert off.lower < on.lower <= exact.lower + 1e-9
    assert on.timings["relu_split_s"] > 0 and "relu_split_s" not in off.timings


def test_can_refute_takes_chains_ending_in_a_relu_and_refuses_other_graphs():
    """ERAN's MLPs end in a ReLU on the logits; a skip connection is not a chain."""
    eye = np.eye(3)
    nodes = [("x", ops.Input((), (3,))), ("h", ops.Affine(("x",), (3,), eye, np.zeros(3))),
             ("r", ops.Relu(("h",), (3,)))]
    assert can_refute(Network(nodes, "r"))
    skip = Network([*nodes, ("y", ops.Add(("r", "x"), (3,)))], "y")
    assert not can_refute(skip)
