"""Robustness statistics of a results table: phi(eps), mu(eps), median rho, CDFs, and their
intervals when exact solves stopped early. Pure functions on numbers; no solver, no torch.

Definitions follow Bastani et al., "Measuring Neural Net Robustness with Constraints"
(NIPS 2016), section 2: over a set X of test points,

    phi(eps) = |{x in X : rho(x) <= eps}| / |X|                (adversarial frequency)
    mu(eps)  = mean of rho(x) over {x in X : rho(x) <= eps}     (adversarial severity)

where rho(x) is measured against the label f predicts at x (f is (x, eps)-robust iff
f(x') = f(x) for all ||x' - x|| <= eps). The paper's X is the whole test set: it does *not*
restrict to correctly classified points, so by default (``population="all"``) neither do
we. ``population="correct"`` restricts X to the points whose prediction equals the true
label (the convention of MIPVerify's "adversarial error"), for comparison.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

#: Statuses whose `[lower, upper]` is a proven bracket of rho (the exact method).
BRACKET_STATUSES = frozenset({"optimal", "time_limit", "robust_at_cap"})
#: Statuses of a heuristic estimate rho_hat = upper (LP restriction, attacks); `not_found`
#: means rho_hat = inf, as in the paper's estimators (rho_hat >= rho, so phi_hat <= phi).
ESTIMATE_STATUSES = frozenset({"upper_bound", "not_found"})
POPULATIONS = ("all", "correct")

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Interval:
    """A closed interval `[low, high]` known to contain a statistic (NaN when undefined)."""

    low: float
    high: float

    @property
    def exact(self) -> bool:
        """True when the interval is a single value (or both ends are NaN)."""
        return self.low == self.high or (math.isnan(self.low) and math.isnan(self.high))

    def format(self, spec: str = ".4g", scale: float = 1.0) -> str:
        """`"v"` when both ends print the same under `spec`, else `"[low, high]"`; "—" if NaN."""
        if math.isnan(self.low) and math.isnan(self.high):
            return "—"
        low, high = format(self.low * scale, spec), format(self.high * scale, spec)
        return low if low == high else f"[{low}, {high}]"


@dataclass(frozen=True, slots=True)
class Brackets:
    """What a results table says about rho at each point: `lower <= rho <= upper`.

    `strict[i]` means rho > lower (a proof that no adversarial example lies within the
    closed ball of radius `lower`, status ``robust_at_cap``).
    """

    lower: FloatArray
    upper: FloatArray
    strict: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return len(self.lower)


@dataclass(frozen=True, slots=True)
class MethodSummary:
    """Statistics of one method over the points of one population (see module docstring)."""

    method: str
    eps: float | None
    population: str
    points: int
    accuracy: float
    phi: Interval
    mu: Interval
    median_rho: Interval
    certain: int
    unknown: int
    statuses: dict[str, int]
    median_s: float
    total_s: float


def brackets(rows: Iterable[Mapping[str, Any]]) -> Brackets:
    """The rho bracket each row stands for, by its status.

    * ``optimal``, ``time_limit``: `[lower, upper]` as proven by the solver;
    * ``robust_at_cap``: `[lower, upper]` with rho > lower (strict);
    * ``upper_bound``, ``not_found`` (heuristics): the point estimate `[upper, upper]`,
      the paper's rho_hat (inf when nothing was found);
    * anything else (``error``): `[0, inf]`, i.e. unknown.
    """
    lows, highs, strict = [], [], []
    for row in rows:
        status = str(row["status"])
        lower, upper = float(row["lower"]), float(row["upper"])
        if status in BRACKET_STATUSES:
            lows.append(lower)
            highs.append(upper)
        elif status in ESTIMATE_STATUSES:
            lows.append(upper)
            highs.append(upper)
        else:
            lows.append(0.0)
            highs.append(math.inf)
        strict.append(status == "robust_at_cap")
    return Brackets(np.asarray(lows, dtype=np.float64), np.asarray(highs, dtype=np.float64),
                    np.asarray(strict, dtype=bool))


def classify(b: Brackets, eps: float) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Masks `(certain, unknown)` of points with rho <= eps certainly / possibly.

    certain: upper <= eps (a verified adversarial example within eps).
    not adversarial: lower > eps, or lower >= eps with a strict lower bound.
    unknown: everything else (lower <= eps < upper).
    """
    certain = b.upper <= eps
    robust = (b.lower > eps) | (b.strict & (b.lower >= eps))
    return certain, ~certain & ~robust


def adversarial_frequency(b: Brackets, eps: float) -> Interval:
    """phi(eps) = |{rho <= eps}| / n as `[certain / n, (certain + unknown) / n]`.

    Example
    -------
    >>> b = brackets([{"status": "optimal", "lower": .05, "upper": .05},
    ...               {"status": "time_limit", "lower": .02, "upper": .3}])
    >>> adversarial_frequency(b, 0.1)
    Interval(low=0.5, high=1.0)
    """
    n = len(b)
    if n == 0:
        return Interval(math.nan, math.nan)
    certain, unknown = classify(b, eps)
    return Interval(certain.sum() / n, (certain.sum() + unknown.sum()) / n)


def _extreme_mean(fixed: FloatArray, optional: FloatArray, *, minimise: bool) -> float:
    """Min (max) of mean(fixed + S) over subsets S of `optional`, non-empty overall.

    For a fixed set size the best subset takes the smallest (largest) optional values, so
    it suffices to scan the sorted prefixes.
    """
    ordered = np.sort(optional) if minimise else -np.sort(-optional)
    sums = fixed.sum() + np.concatenate([[0.0], np.cumsum(ordered)])
    counts = len(fixed) + np.arange(len(ordered) + 1)
    valid = counts > 0
    means = sums[valid] / counts[valid]
    if means.size == 0:
        return math.nan
    return float(means.min() if minimise else means.max())


def adversarial_severity(b: Brackets, eps: float) -> Interval:
    """mu(eps) = mean rho over {rho <= eps}, as the tightest interval the brackets allow.

    Let C = {upper <= eps} (certainly in the set) and U the unknown points (see
    `classify`). A point of C has rho in [lower, upper]; a point of U, if it is in the set
    at all, has rho in [lower, min(upper, eps)]. Then

        mu_low  = min over S subset of U of mean({lower_i : i in C u S})
        mu_high = max over S subset of U of mean({upper_i : i in C} u {min(upper_i, eps) : i in S})

    (S non-empty when C is empty); each is attained by C plus a prefix of U sorted by
    value. NaN when C and U are both empty (no point can have rho <= eps).
    """
    certain, unknown = classify(b, eps)
    low = _extreme_mean(b.lower[certain], b.lower[unknown], minimise=True)
    high = _extreme_mean(b.upper[certain], np.minimum(b.upper[unknown], eps), minimise=False)
    return Interval(low, high)


def median_rho(b: Brackets) -> Interval:
    """`[median(lower), median(upper)]`: the median is monotone in each value."""
    if len(b) == 0:
        return Interval(math.nan, math.nan)
    return Interval(float(np.median(b.lower)), float(np.median(b.upper)))


def cdf_band(b: Brackets, grid: Sequence[float] | FloatArray) -> tuple[FloatArray, FloatArray]:
    """Fraction of points with rho <= eps for each eps of `grid`, as `(low, high)` curves.

    low counts `upper <= eps` (certainly), high counts `lower <= eps` (possibly; a strict
    lower bound at eps is counted as possible, which only widens the band on a null set).
    They coincide for point estimates.
    """
    eps = np.asarray(grid, dtype=np.float64)
    n = max(len(b), 1)
    low = (b.upper[None, :] <= eps[:, None]).sum(axis=1) / n
    high = (b.lower[None, :] <= eps[:, None]).sum(axis=1) / n
    return low, high


def combine(rows: Iterable[Mapping[str, Any]], *, exact: str = "exact",
            name: str = "combined") -> list[dict[str, Any]]:
    """Per point, the exact bracket with its upper end replaced by the best verified upper
    bound of *any* method (every upper bound is a verified witness distance, so this is
    sound): `[lower_exact, min_m upper_m]`, as rows of method `name`.

    Points without an `exact` row are left out. Status: ``optimal`` stays; ``robust_at_cap``
    stays while no method beat its lower bound; otherwise ``time_limit`` (a bracket). An
    ``error`` exact row contributes lower = 0.
    """
    by_index: dict[int, list[Mapping[str, Any]]] = {}
    for r in rows:
        by_index.setdefault(int(r["index"]), []).append(r)
    combined = []
    for group in by_index.values():
        base = next((r for r in group if r["method"] == exact), None)
        if base is None:
            continue
        verified = [float(r["upper"]) for r in group
                    if str(r["status"]) not in ("error", "not_found")]
        upper = min([float(base["upper"]) if str(base["status"]) != "error" else math.inf,
                     *verified])
        status = str(base["status"])
        lower = float(base["lower"]) if status in BRACKET_STATUSES else 0.0
        keep = (status == "optimal" and upper >= float(base["upper"])
                or status == "robust_at_cap" and upper > lower)
        status = status if keep else "time_limit"
        seconds = sum(float(r["seconds"]) for r in group)
        combined.append({**base, "method": name, "lower": min(lower, upper), "upper": upper,
                         "status": status, "seconds": seconds})
    return combined


def select(rows: Iterable[Mapping[str, Any]], *, method: str | None = None,
           population: str = "all") -> list[Mapping[str, Any]]:
    """Rows of `method` (all methods when None) in `population` ("all" or "correct")."""
    if population not in POPULATIONS:
        raise ValueError(f"`population` must be one of {POPULATIONS}; got {population!r}.")
    return [r for r in rows if (method is None or r["method"] == method)
            and (population == "all" or int(r["pred"]) == int(r["label"]))]


def summarize_method(rows: Sequence[Mapping[str, Any]], method: str, eps: float | None, *,
                     population: str = "all") -> MethodSummary:
    """Accuracy, phi(eps), mu(eps), median rho, status counts and time of one method.

    `rows` need `method`, `label`, `pred`, `status`, `lower`, `upper` and `seconds`.
    Accuracy is over all of the method's rows (it is what decides the population); every
    other statistic, status counts and times included, is over `population`, so the
    "correctly classified" table describes only those points.
    With `eps=None`, phi and mu are NaN.
    """
    mine = select(rows, method=method)
    chosen = select(mine, population=population)
    b = brackets(chosen)
    seconds = np.asarray([float(r["seconds"]) for r in chosen], dtype=np.float64)
    statuses: dict[str, int] = {}
    for r in chosen:
        statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
    if eps is None:
        phi = mu = Interval(math.nan, math.nan)
        certain = unknown = 0
    else:
        phi, mu = adversarial_frequency(b, eps), adversarial_severity(b, eps)
        c_mask, u_mask = classify(b, eps)
        certain, unknown = int(c_mask.sum()), int(u_mask.sum())
    correct = sum(int(r["pred"]) == int(r["label"]) for r in mine)
    return MethodSummary(
        method=method, eps=eps, population=population, points=len(chosen),
        accuracy=correct / len(mine) if mine else math.nan, phi=phi, mu=mu,
        median_rho=median_rho(b), certain=certain, unknown=unknown, statuses=statuses,
        median_s=float(np.median(seconds)) if seconds.size else math.nan,
        total_s=float(seconds.sum()))


def summarize(rows: Sequence[Mapping[str, Any]], eps: float | None, *,
              methods: Sequence[str] | None = None, population: str = "all"
              ) -> dict[str, MethodSummary]:
    """`summarize_method` for each method (in `methods` order, else order of appearance)."""
    order = list(methods) if methods is not None else list(dict.fromkeys(r["method"]
                                                                         for r in rows))
    return {m: summarize_method(rows, m, eps, population=population) for m in order}


def summary_table(summaries: Mapping[str, MethodSummary], *, pixel_divisor: float | None = None
                  ) -> str:
    """A Markdown table of `summarize` output (phi in %, mu and rho also in pixels if given)."""
    def dist(iv: Interval) -> str:
        text = iv.format(".4g")
        if pixel_divisor and math.isfinite(iv.low):
            text += f" ({iv.format('.3g', pixel_divisor)} px)"
        return text

    header = ("| method | points | accuracy | φ(ε) % | μ(ε) | median ρ | statuses "
              "| median s | total s |")
    lines = [header, "|" + "---|" * 9]
    for s in summaries.values():
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(s.statuses.items()))
        lines.append(
            f"| {s.method} | {s.points} | {100 * s.accuracy:.2f}% | {s.phi.format('.4g', 100)} "
            f"| {dist(s.mu)} | {dist(s.median_rho)} | {statuses} | {s.median_s:.3g} "
            f"| {s.total_s:.4g} |")
    return "\n".join(lines)


__all__ = ["BRACKET_STATUSES", "ESTIMATE_STATUSES", "POPULATIONS", "Brackets", "Interval",
           "MethodSummary", "adversarial_frequency", "adversarial_severity", "brackets",
           "cdf_band", "classify", "combine", "median_rho", "select", "summarize",
           "summarize_method", "summary_table"]
