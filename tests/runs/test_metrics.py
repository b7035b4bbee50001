"""phi(eps), mu(eps), median rho and CDF bands of hand-made results tables (Bastani et al. §2)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from milpverify.runs import metrics
from milpverify.runs.metrics import Interval, brackets


def row(status, lower, upper, *, method="exact", label=1, pred=1, index=0, seconds=1.0):
    return {"index": index, "method": method, "status": status, "lower": lower, "upper": upper,
            "label": label, "pred": pred, "seconds": seconds}


# An exact run with open brackets, at eps = 0.1:
#   A optimal        [0.03, 0.03]  certainly adversarial
#   B optimal        [0.2, 0.2]    certainly not
#   C time_limit     [0.05, 0.3]   unknown
#   D robust_at_cap  [0.1, inf]    rho > 0.1 proven (strict)  -> certainly not
#   E time_limit     [0.12, inf]   certainly not
#   F time_limit     [0.0, 0.08]   certainly adversarial, rho in [0, 0.08]
#   G error          -> [0, inf]   unknown
EXACT = [row("optimal", .03, .03), row("optimal", .2, .2), row("time_limit", .05, .3),
         row("robust_at_cap", .1, math.inf), row("time_limit", .12, math.inf),
         row("time_limit", 0.0, .08), row("error", 0.0, math.inf)]


def test_frequency_interval_counts_certain_and_unknown():
    b = brackets(EXACT)
    certain, unknown = metrics.classify(b, 0.1)
    assert certain.tolist() == [True, False, False, False, False, True, False]
    assert unknown.tolist() == [False, False, True, False, False, False, True]
    assert metrics.adversarial_frequency(b, 0.1) == Interval(2 / 7, 4 / 7)


def test_robust_at_cap_is_strict_but_time_limit_is_not():
    """lower = eps proves rho > eps only for robust_at_cap; a dual bound allows rho = eps."""
    b = brackets([row("robust_at_cap", .1, math.inf), row("time_limit", .1, math.inf)])
    assert metrics.adversarial_frequency(b, 0.1) == Interval(0.0, 0.5)


def test_severity_interval_by_hand():
    # low: certain lowers {.03, 0}; add unknown lowers sorted [0 (G), .05 (C)]:
    #   means .015, .01, .02 -> .01.
    # high: certain uppers {.03, .08}; unknown contribute min(upper, eps) = .1 each:
    #   means .055, .07, .0775 -> .0775.
    mu = metrics.adversarial_severity(brackets(EXACT), 0.1)
    assert mu.low == pytest.approx(0.01)
    assert mu.high == pytest.approx(0.0775)


def _brute_force_mu(lower, upper, strict, eps):
    """min / max of the conditional mean over every consistent assignment (endpoints suffice)."""
    b = metrics.Brackets(np.asarray(lower), np.asarray(upper), np.asarray(strict))
    certain, unknown = metrics.classify(b, eps)
    lo, hi = math.inf, -math.inf
    unknown_idx = np.flatnonzero(unknown)
    for k in range(len(unknown_idx) + 1):
        for subset in itertools.combinations(unknown_idx, k):
            members = np.flatnonzero(certain).tolist() + list(subset)
            if not members:
                continue
            choices = [(lower[i], min(upper[i], eps)) for i in members]
            for values in itertools.product(*choices):
                lo, hi = min(lo, np.mean(values)), max(hi, np.mean(values))
    return lo, hi


@pytest.mark.parametrize("seed", range(6))
def test_severity_interval_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, eps = 6, 0.1
    lower = np.round(rng.uniform(0, 0.15, n), 3)
    upper = np.where(rng.random(n) < 0.3, np.inf, lower + np.round(rng.uniform(0, .1, n), 3))
    strict = rng.random(n) < 0.2
    b = metrics.Brackets(lower, upper, strict)
    lo, hi = _brute_force_mu(lower, upper, strict, eps)
    mu = metrics.adversarial_severity(b, eps)
    if math.isinf(lo):
        assert math.isnan(mu.low) and math.isnan(mu.high)
    else:
        assert (mu.low, mu.high) == pytest.approx((lo, hi))


def test_point_estimates_follow_the_papers_formulas():
    """Heuristic rows use rho_hat = upper (inf when not found); phi_hat and mu_hat as in §2."""
    rows = [row("upper_bound", 0.0, .04, method="lp"), row("not_found", 0.0, math.inf,
                                                             method="lp"),
            row("upper_bound", 0.0, .09, method="lp"), row("upper_bound", 0.0, .2, method="lp")]
    rho_hat = np.array([.04, math.inf, .09, .2])
    eps = 0.1
    b = brackets(rows)
    phi = metrics.adversarial_frequency(b, eps)
    mu = metrics.adversarial_severity(b, eps)
    assert phi.exact and phi.low == np.sum(rho_hat <= eps) / len(rho_hat) == 0.5
    assert mu.exact and mu.low == pytest.approx(rho_hat[rho_hat <= eps].mean())
    assert metrics.median_rho(b) == Interval(np.median(rho_hat), np.median(rho_hat))


def test_no_adversarial_point_gives_nan_severity():
    b = brackets([row("upper_bound", 0, .5, method="pgd"), row("robust_at_cap", .1, math.inf)])
    assert metrics.adversarial_frequency(b, 0.1) == Interval(0.0, 0.0)
    mu = metrics.adversarial_severity(b, 0.1)
    assert math.isnan(mu.low) and math.isnan(mu.high) and mu.format() == "—"


def test_median_is_an_interval_under_open_brackets():
    b = brackets(EXACT)
    assert metrics.median_rho(b) == Interval(float(np.median([.03, .2, .05, .1, .12, 0, 0])),
                                             float(np.median([.03, .2, .3, math.inf, math.inf,
                                                              .08, math.inf])))


def test_cdf_band():
    b = brackets([row("optimal", .03, .03), row("time_limit", .05, .3)])
    low, high = metrics.cdf_band(b, [0.0, 0.04, 0.1, 0.5])
    assert low.tolist() == [0.0, 0.5, 0.5, 1.0]
    assert high.tolist() == [0.0, 0.5, 1.0, 1.0]


def test_population_correct_drops_misclassified_points():
    rows = [row("upper_bound", 0, .05, method="lp", label=1, pred=1),
            row("upper_bound", 0, .02, method="lp", label=1, pred=4),
            row("upper_bound", 0, .5, method="lp", label=2, pred=2)]
    every = metrics.summarize_method(rows, "lp", 0.1)
    correct = metrics.summarize_method(rows, "lp", 0.1, population="correct")
    assert every.points == 3 and every.phi == Interval(2 / 3, 2 / 3)
    assert every.accuracy == correct.accuracy == pytest.approx(2 / 3)
    assert correct.points == 2 and correct.phi == Interval(0.5, 0.5)
    assert correct.mu == Interval(0.05, 0.05)


def test_summarize_counts_statuses_and_time():
    rows = [dict(r, seconds=s) for r, s in zip(EXACT, [1, 2, 3, 4, 5, 6, 7], strict=True)]
    s = metrics.summarize(rows, 0.1)["exact"]
    assert s.statuses == {"optimal": 2, "time_limit": 3, "robust_at_cap": 1, "error": 1}
    assert (s.certain, s.unknown, s.median_s, s.total_s) == (2, 2, 4.0, 28.0)
    assert "| exact | 7 | 100.00% | [28.57, 57.14] |" in metrics.summary_table({"exact": s})


def test_combine_lowers_the_exact_upper_bound_with_other_methods():
    rows = [row("time_limit", .02, .3, index=0), row("upper_bound", 0, .07, method="pgd", index=0),
            row("robust_at_cap", .1, math.inf, index=1),
            row("not_found", 0, math.inf, method="pgd", index=1),
            row("upper_bound", 0, .5, method="pgd", index=2)]
    combined = metrics.combine(rows)
    assert [(r["index"], r["status"], r["lower"], r["upper"]) for r in combined] == [
        (0, "time_limit", .02, .07), (1, "robust_at_cap", .1, math.inf)]
    assert metrics.adversarial_frequency(brackets(combined), 0.1) == Interval(0.5, 0.5)


def test_unknown_population_is_rejected():
    with pytest.raises(ValueError, match="population"):
        metrics.select([], population="wrong")
