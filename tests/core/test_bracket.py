"""The first bracket of rho, before any MILP: the attack's upper bound and the certified radius."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import brute_force_rho, random_mlp

import milpverify
from milpverify.core.attacks import pgd
from milpverify.core.bracket import attack_upper, certified_lower
from milpverify.core.query import validate_query
from milpverify.core.witness import check_witness
from milpverify.verify import rho


def _query(net, x):
    return validate_query(net, x, norm="linf", domain=(0.0, 1.0), margin=0.0, target=None,
                          label=None)


@pytest.mark.parametrize("seed", range(6))
def test_certified_lower_is_positive_and_below_the_exact_rho(seed: int) -> None:
    """Symbolic then alpha bisection proves a radius > 0 and never more than the true rho."""
    rng = np.random.default_rng(300 + seed)
    net, weights = random_mlp(rng, [2, 5, 4, 4])
    x = rng.uniform(0.2, 0.8, size=2)
    q = _query(net, x)
    expected = brute_force_rho(weights, x, q.label)
    high = min(expected, 1.0) if math.isfinite(expected) else 1.0
    lower, info = certified_lower(net, q, high, 1e-6, 5.0)
    assert 0.0 < lower <= expected
    assert info["stage1_symbolic"] <= lower  # alpha only ever raises it


@pytest.mark.parametrize("seed", range(6))
def test_attack_upper_is_verified_and_not_worse_than_pgd(seed: int) -> None:
    rng = np.random.default_rng(400 + seed)
    net, weights = random_mlp(rng, [2, 5, 4, 4])
    x = rng.uniform(0.2, 0.8, size=2)
    q = _query(net, x)
    expected = brute_force_rho(weights, x, q.label)
    best, info = attack_upper(net, q, [j for j in range(4) if j != q.label], 1.0, math.inf)
    plain = pgd(net, x, label=q.label)
    if best is None:
        assert plain.witness is None
        return
    assert best.distance <= plain.upper
    assert best.distance >= expected - 1e-9
    check = check_witness(net, x, best.witness, label=q.label)
    assert check.verified and check.distance == pytest.approx(best.distance, abs=1e-12)
    assert info["pgd_upper"] == plain.upper  # the same PGD run as `pgd` with its defaults


@pytest.mark.shared
def test_wk17a_uncapped_bracket_is_finite_and_beats_pgd(shared_data, mnist) -> None:
    """Without a cap the feasibility MILP over the whole [0, 1]^784 box found nothing in 120 s
    (upper = inf); the attack gives a witness at least as close as PGD's, and the certified
    radius a lower bound > 0, even when the MILP has almost no time."""
    net = milpverify.load_onnx(shared_data / "nets/mnist/wk17a_linf0.1.onnx")
    x = mnist["images"][0] / 255.0
    result = rho(net, x, time_limit_s=8)
    plain = pgd(net, x)
    assert math.isfinite(result.upper) and result.upper <= plain.upper
    assert 0.0 < result.lower <= result.upper
    check = check_witness(net, x.reshape(-1), result.witness, label=result.label)
    assert check.verified and check.distance == pytest.approx(result.upper, abs=1e-12)


def test_attack_upper_under_l1_uses_the_lp_restriction_only() -> None:
    """PGD is an L-inf attack: under L1 the witness comes from the LP restriction, its
    distance measured in L1, and rho stays exact against its own witness."""
    rng = np.random.default_rng(7)
    net, _ = random_mlp(rng, [2, 5, 4, 3])
    x = np.array([0.4, 0.6])
    q = validate_query(net, x, norm="l1", domain=(0.0, 1.0), margin=0.0, target=None,
                       label=None)
    best, info = attack_upper(net, q, [j for j in range(3) if j != q.label], 1.0, math.inf)
    assert "pgd_upper" not in info
    if best is not None:
        check = check_witness(net, x, best.witness, label=q.label, norm="l1")
        assert check.verified and check.distance == pytest.approx(best.distance, abs=1e-12)
    result = rho(net, x, norm="l1", tolerance=1e-6)
    assert result.status in ("optimal", "robust_at_cap")
    if best is not None:
        assert result.upper <= best.distance + 1e-12
