"""Exact L2 robustness: brute force over activation regions, certify on both sides, the L2
PGD attack, and the clear errors of unsupported norms and backends."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from helpers import brute_force_rho_l2, random_mlp

from milpverify.core.attacks import pgd
from milpverify.core.witness import check_witness
from milpverify.errors import InvalidInputError
from milpverify.verify import certify, rho

SEEDS = range(6)


def _case(seed: int):
    rng = np.random.default_rng(seed)
    net, weights = random_mlp(rng, [2, 5, 4, 4])
    x = rng.uniform(0.2, 0.8, size=2)
    return net, weights, x, int(net.predict(x)[0])


@functools.lru_cache(maxsize=None)
def _expected(seed: int) -> float:
    """The brute-force L2 rho of case `seed` (enumerating regions takes ~1 s: once)."""
    _, weights, x, label = _case(seed)
    return brute_force_rho_l2(weights, x, label)


@pytest.mark.parametrize("seed", SEEDS)
def test_rho_l2_matches_brute_force(seed: int) -> None:
    net, weights, x, label = _case(seed)
    expected = _expected(seed)
    result = rho(net, x, norm="l2", time_limit_s=30)
    if math.isinf(expected):
        assert result.status == "robust_at_cap" and math.isinf(result.lower)
        return
    assert result.status == "optimal", result
    # Sound bracket (SLSQP's optimum is accurate to ~1e-9) and within the tolerance.
    assert result.lower <= expected + 1e-8 <= result.upper + 2e-8
    assert result.upper - result.lower <= 1e-5
    assert result.upper == pytest.approx(expected, abs=1e-5)
    assert result.norm == "l2" and result.witness_verified
    check = check_witness(net, x, result.witness, label=label, norm="l2")
    assert check.verified and check.distance == result.upper


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_certify_l2_agrees_with_rho_on_both_sides(seed: int) -> None:
    net, weights, x, label = _case(seed)
    expected = _expected(seed)
    if math.isinf(expected):
        pytest.skip("no adversarial point in the domain")
    below = certify(net, x, expected * (1 - 1e-3), norm="l2", time_limit_s=30)
    assert below.verdict == "robust", below
    above = certify(net, x, expected * (1 + 1e-3), norm="l2", time_limit_s=30)
    assert above.verdict == "not_robust", above
    check = check_witness(net, x, above.witness, label=label, norm="l2")
    assert check.verified and check.distance <= expected * (1 + 1e-3)


@pytest.mark.parametrize("seed", SEEDS)
def test_pgd_l2_is_an_upper_bound_with_a_verified_witness(seed: int) -> None:
    net, weights, x, label = _case(seed)
    found = pgd(net, x, norm="l2", steps=40, restarts=3, bisection_steps=6)
    expected = _expected(seed)
    if found.witness is None:
        return
    assert found.norm == "l2"
    check = check_witness(net, x, found.witness, label=label, norm="l2")
    assert check.verified and check.distance == pytest.approx(found.upper, abs=1e-12)
    assert expected <= found.upper + 1e-8


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_l2_restriction_is_an_upper_bound_of_its_region(seed: int) -> None:
    """The L2 restriction (a convex QP per region, SCIP) gives verified witnesses >= rho."""
    from milpverify.core.restriction import lp_restriction
    net, weights, x, label = _case(seed)
    expected = _expected(seed)
    local = lp_restriction(net, x, norm="l2")
    if local.witness is None:
        return
    check = check_witness(net, x, local.witness, label=label, norm="l2")
    assert check.verified and check.distance == local.upper
    assert expected <= local.upper + 1e-8


def test_l2_needs_scip() -> None:
    net, _, x, _ = _case(0)
    for backend in ("highs", "pyomo:appsi_highs"):
        with pytest.raises(InvalidInputError, match="norm 'l2' needs backend 'scip'"):
            rho(net, x, norm="l2", backend=backend)
        with pytest.raises(InvalidInputError, match="norm 'l2' needs backend 'scip'"):
            certify(net, x, 0.1, norm="l2", backend=backend)


def test_unknown_norm_names_the_supported_ones() -> None:
    net, _, x, _ = _case(0)
    with pytest.raises(InvalidInputError, match="'linf', 'l1', 'l2'; got 'l3'"):
        rho(net, x, norm="l3")
    with pytest.raises(InvalidInputError, match="pgd's `norm` must be 'linf' or 'l2'"):
        pgd(net, x, norm="l1")
    from milpverify.core.restriction import lp_restriction
    with pytest.raises(InvalidInputError, match="'linf', 'l1', 'l2'; got 'l3'"):
        lp_restriction(net, x, norm="l3")


def test_linear_backends_refuse_quadratic_rows() -> None:
    from milpverify.encode.model import MilpModel
    from milpverify.encode.objective import add_distance
    from milpverify.solve import get_backend
    model = MilpModel()
    xs = model.add_vars(2, 0.0, 1.0, name="x")
    add_distance(model, np.array([0.5, 0.5]), xs, "l2", 1.0)
    with pytest.raises(InvalidInputError, match="backend 'highs' cannot solve"):
        get_backend("highs").solve(model)
    result = get_backend("scip").solve(model)
    assert result.objective == pytest.approx(0.0, abs=1e-9)


def test_l2_rho_keeps_a_short_budget_on_mnist() -> None:
    """Under L2 every label's restriction is a quadratic program that SCIP solves in
    seconds on the bundled MNIST MLP; nine of them took ~50 s of a 3 s budget when the
    restriction had no time limit. A time-out is a result: the budget holds."""
    from milpverify.runs.datasets import load_default

    net, images, _ = load_default()
    result = rho(net, images[0], eps_cap=0.5, norm="l2", time_limit_s=3)
    assert result.timings["total_s"] <= 3 + 1.0
    assert result.status in ("time_limit", "optimal")
    if result.witness is not None:
        assert check_witness(net, images[0], result.witness, label=result.label,
                             norm="l2").verified
