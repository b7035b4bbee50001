"""Ruling out output pairs by ReLU splitting for the relaxed properties
(`properties.pairs.refute_pairs`, `certify_properties` and `rho_property` with `relu_split`):
a pair is ruled out exactly when enumerating the activation regions says it cannot reach the
margin, and a top-k set whose every pair is ruled out proves the property."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest
from helpers import activation_regions, random_mlp
from scipy.optimize import linprog

from milpverify.core.query import SOLVER_SLACK, query_box, validate_query
from milpverify.core.results import RhoStatus
from milpverify.errors import InvalidInputError
from milpverify.properties import certify as property_certify
from milpverify.properties import rho as property_rho
from milpverify.properties.pairs import plan_pairs, property_bounds, refute_pairs
from milpverify.properties.query import check_property_witness, topk_query
from milpverify.properties.rho import rho_topk
from milpverify.properties.spec import RelaxedTopK

from .test_properties import EXACT, tiny

X = np.array([0.5, 0.5])
EPS = 0.5  # the whole unit square


@pytest.fixture(autouse=True)
def _quiet_witness_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)


def _exact_max(regions, i: int, j: int) -> float:
    """max of y_j - y_i over the unit square, by LP over every activation region."""
    best = -np.inf
    for a_ub, b_ub, fa, fc in regions:
        row = fa[j] - fa[i]
        res = linprog(-row, A_ub=a_ub, b_ub=b_ub, bounds=[(0.0, 1.0)] * 2, method="highs")
        if res.status == 0:
            best = max(best, -res.fun + fc[j] - fc[i])
    return best


@pytest.mark.parametrize("seed", [0, 3])
def test_rules_out_a_pair_exactly_when_region_enumeration_says_it_cannot_reach(seed):
    """Every pair of a 2-5-5-4 net over the unit square, the margin just above and just
    below the pair's exact maximum: ruled out above (although the symbolic bounds allow it
    for some pair), never below."""
    net, weights = random_mlp(np.random.default_rng(300 + seed), [2, 5, 5, 4])
    q = validate_query(net, X, norm="linf", domain=(0.0, 1.0), margin=0.0, target=None,
                       label=None)
    bounds, out = property_bounds(net, query_box(q, EPS), "symbolic")
    pairs = [(i, j) for i in range(4) for j in range(4) if i != j]
    regions = activation_regions(weights, 2, (0.0, 1.0))
    reach = {p: _exact_max(regions, *p) for p in pairs}
    loose = 0
    for p in pairs:
        gap = 0.02 * (1.0 + abs(reach[p]))
        loose += out.upper_diff[p[1], p[0]] >= reach[p] + gap
        for margin, refutable in ((reach[p] + gap, True), (reach[p] - gap, False)):
            # below, it searches until its deadline (or until a domain has every ReLU fixed)
            seconds = 5.0 if refutable else 0.5
            refuted, _ = refute_pairs(net, bounds, out, [p], margin,
                                      time.perf_counter() + seconds)
            assert (refuted == [p]) == refutable, (p, margin, reach[p])
    assert loose > 0, "the case needs a pair the symbolic bounds cannot rule out"


def test_stops_at_the_first_pair_it_cannot_rule_out():
    net, weights = random_mlp(np.random.default_rng(300), [2, 5, 5, 4])
    q = validate_query(net, X, norm="linf", domain=(0.0, 1.0), margin=0.0, target=None,
                       label=None)
    bounds, out = property_bounds(net, query_box(q, EPS), "symbolic")
    reach = _exact_max(activation_regions(weights, 2, (0.0, 1.0)), 0, 1)
    # (0, 1) can reach the margin; (0, 2) after it is never tried
    refuted, stats = refute_pairs(net, bounds, out, [(0, 1), (0, 2)], reach - 0.1,
                                  time.perf_counter() + 5.0)
    assert refuted == [] and stats["relu_domains"] > 0


def test_certify_topk_proven_by_relu_splitting_and_broken_above(monkeypatch):
    """Net `tiny(1)`, relaxed top-2 just inside its exact radius: alpha-CROWN bounds keep
    every top-k set changeable, ReLU splitting rules out T_2's one pair (no first MILP);
    just outside: a verified witness (the last MILP)."""
    net, _, x = tiny(1)
    exact = rho_topk(net, x, 2, **EXACT)
    assert exact.status == "optimal"
    eps = exact.lower * 0.98
    q = validate_query(net, x, norm="linf", domain=(0.0, 1.0), margin=0.0, target=None,
                       label=None)
    _, out = property_bounds(net, query_box(q, eps), "alpha")
    plan = plan_pairs(topk_query(net, q.x, RelaxedTopK(2)), out, -SOLVER_SLACK)
    assert plan.impossible is None, "the case needs bounds that do not prove it"
    monkeypatch.setattr(property_certify, "FIRST_MILP_SHARE", 0.0)
    inside = property_certify.certify_topk(net, x, 2, eps, bounds_method="alpha",
                                           time_limit_s=20)
    assert inside.verdict == "robust" and inside.message == "proven by ReLU splitting"
    assert inside.stats["relu_refuted_pairs"] and inside.timings["relu_split_s"] > 0
    off = property_certify.certify_topk(net, x, 2, eps, bounds_method="alpha",
                                        time_limit_s=20, relu_split=0)
    assert off.verdict == "robust" and "relu_refuted_pairs" not in off.stats
    above = property_certify.certify_topk(net, x, 2, exact.upper * 1.02, attack=None,
                                          bounds_method="alpha", time_limit_s=20)
    assert above.verdict == "not_robust" and above.witness_verified
    assert check_property_witness(net, x, above.witness, RelaxedTopK(2)).verified


@pytest.mark.parametrize("share", [-0.1, 1.0, float("nan"), "0.5"])
def test_bad_relu_split_share_is_one_line(share):
    net, _, x = tiny(1)
    with pytest.raises(InvalidInputError, match="`relu_split` must be a number in"):
        property_certify.certify_topk(net, x, 2, 0.01, relu_split=share)
    with pytest.raises(InvalidInputError, match="`relu_split` must be a number in"):
        rho_topk(net, x, 2, relu_split=share)


def test_rho_topk_raises_lower_by_relu_splitting_after_a_time_out(monkeypatch):
    """A time-out of the MILPs (forced: the closer returns at once) with the stage on (the
    default): `lower` comes from the bisection by ReLU splitting, still below the exact
    relaxed radius; off: it does not."""
    net, _, x = tiny(1)
    exact = rho_topk(net, x, 2, **EXACT)

    def time_out(search, best, radius, prepared, deadline, tolerance, first_lower, stats,
                 finish, beyond):
        return finish(first_lower, RhoStatus.TIME_LIMIT, best, "forced time-out")

    monkeypatch.setattr(property_rho, "close_bracket", time_out)
    on = rho_topk(net, x, 2, time_limit_s=20)
    off = rho_topk(net, x, 2, time_limit_s=20, relu_split=0)
    assert on.status == off.status == "time_limit"
    assert on.stats["lower_from"] == "ReLU-splitting bisection"
    assert off.lower < on.lower <= exact.lower + 1e-9
    assert on.timings["relu_split_s"] > 0 and "relu_split_s" not in off.timings
