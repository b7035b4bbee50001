"""Closing the bracket on rho: the first bracket before any MILP (a minimum-distortion attack
for `upper`, a bound-certified radius for `lower`), the closer shared by every distance query
(`close_bracket`: first witness, descent, distance MILP), and the certified-radius salvage on
a time-out.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Protocol

from milpverify.core.decide import _check_point
from milpverify.core.query import Query, query_box
from milpverify.core.refute import refute_labels
from milpverify.core.results import RhoResult, RhoStatus, Verdict
from milpverify.core.spec_bounds import query_bounds
from milpverify.core.witness import WitnessCheck
from milpverify.errors import InvalidInputError
from milpverify.ir.network import Network
from milpverify.ir.ops import FloatArray
from milpverify.solve.base import SolveResult, SolveStatus

#: Rounds of "prove nothing within best - tolerance, or find a closer point" in `rho`.
DESCENT_ROUNDS = 20


#: On a time-out, `lower` is raised by bisecting the radius with symbolic bounds
#: (`_certified_radius`): at most this many bound passes, and the MILPs stop early by up
#: to `SALVAGE_SHARE` of the budget so the passes fit inside `time_limit_s`.
SALVAGE_STEPS = 12


SALVAGE_SHARE = 0.1


#: Share of `time_limit_s` after which `attack_upper` starts no new PGD run of its own
#: (PGD's default run and the LP polish always complete).
ATTACK_SHARE = 0.1


#: Extra PGD runs of `attack_upper` after PGD's own bisection, each at a radius between the
#: last radius where PGD failed and the best polished witness, with a fresh seed.
ATTACK_ROUNDS = 4


#: Share of `time_limit_s` that the first-stage certified radius (`certified_lower`) may
#: use, and its passes: symbolic bisection first, then alpha-CROWN passes on what is left.
LOWER_SHARE = 0.03
LOWER_SYMBOLIC_STEPS = 8
LOWER_ALPHA_STEPS = 3


#: Passes of `split_lower`'s bisection (each alpha-CROWN bounds, then ReLU splitting).
SPLIT_STEPS = 3


def _heuristic_upper(net: Network, q: Query, method: str | None, candidates: list[int],
                     eps_max: float = 1.0, deadline: float = math.inf, end: float = math.inf
                     ) -> tuple[WitnessCheck | None, dict[str, Any]]:
    """Run a quick upper-bound heuristic on `candidates`; its witness is always re-checked.

    "attack" (`attack_upper`) searches radii up to `eps_max`, starts no extra PGD run after
    `deadline` and stops its first PGD at `end` (the end of the caller's budget).
    """
    if method is None or method == "none":
        return None, {}
    if method == "attack":
        return attack_upper(net, q, candidates, eps_max, deadline, end)
    result = run_upper_bound(net, q, method, candidates)
    if result is None or not result.witness_verified or result.witness is None:
        return None, {}
    check = _check_point(net, q, result.witness)
    return (check if check.verified else None), {"heuristic": method}


def run_upper_bound(net: Network, q: Query, method: str, candidates: list[int]
                    ) -> RhoResult | None:
    """Dispatch to the LP restriction ("lp") or PGD ("pgd") as a first upper bound."""
    if method == "lp":
        from milpverify.core.restriction import lp_restriction
        return lp_restriction(net, q.x, target=candidates, margin=q.margin, domain=q.domain,
                              label=q.label, norm=q.norm)
    if method in ("pgd", "pgd+lp"):
        from milpverify.core.attacks import pgd
        from milpverify.core.restriction import lp_restriction
        found = pgd(net, q.x, label=q.label, domain=q.domain, target=q.target, steps=30,
                    restarts=1, bisection_steps=8, norm=q.norm)
        if method == "pgd" or found.witness is None or found.adversarial_label is None:
            return found
        # Refine: the nearest point of the attack point's activation region.
        local = lp_restriction(net, q.x, target=int(found.adversarial_label), margin=q.margin,
                               domain=q.domain, label=q.label, norm=q.norm,
                               region_point=found.witness)
        at_x = lp_restriction(net, q.x, target=candidates, margin=q.margin, domain=q.domain,
                              label=q.label, norm=q.norm)
        return min((r for r in (found, local, at_x) if r.witness_verified),
                   key=lambda r: r.upper, default=found)
    raise InvalidInputError(
        f"`upper_bound` must be 'attack', 'lp', 'pgd', 'pgd+lp' or None; got {method!r}.")


def _certified_radius(net: Network, q: Query, low: float, high: float, tolerance: float,
                      deadline: float, pass_s: float) -> float:
    """The largest radius in [low, high] that symbolic bounds prove robust, by bisection.

    A radius counts only when the bounds on its box rule out every other label (`lower`
    of `rho` stays a proof). The first pass (at the middle of the bracket) always runs,
    even past `deadline`: one symbolic pass is what a time-out costs beyond its budget.
    Then it stops after `SALVAGE_STEPS` passes, when the bracket is within `tolerance`,
    or when the next pass (expected to take as long as the last one, `pass_s` at first)
    would end after `deadline`.
    """
    return _bisect_radius(net, q, low, high, tolerance, deadline, pass_s, "symbolic",
                          SALVAGE_STEPS, first_always=True)[0]


def bisect_radius(prove: Callable[[float, float | None], bool], low: float, high: float,
                  tolerance: float, deadline: float, pass_s: float, steps: int, *,
                  first_always: bool = False, shares: bool = False, expect_last: bool = True
                  ) -> tuple[float, float]:
    """Bisect `[low, high]` with passes ``prove(radius, end)``: (largest proven, smallest
    failed).

    `low` must already be proven (0 always is); `prove` returns True only with a proof that
    nothing within `radius` violates the query, so every proven radius is a sound lower
    bound whatever the monotonicity of the proofs. With `shares`, each pass gets the time
    left split over the passes left (`end`; else None: the pass takes what it takes). With
    `expect_last`, a pass runs only if, expected to take as long as the last one (`pass_s`
    at first), it ends before `deadline` (the first one regardless with `first_always`);
    otherwise only the deadline stops the passes.
    """
    if not math.isfinite(high) or high <= low:
        return low, high
    last = pass_s
    for step in range(steps):
        now = time.perf_counter()
        expected = last if expect_last else 0.0
        if high - low <= tolerance or ((step or not first_always)
                                       and now + expected >= deadline):
            break
        mid = 0.5 * (low + high)
        end = now + max((deadline - now) / (steps - step), 1e-3) if shares else None
        proven = prove(mid, end)
        last = time.perf_counter() - now
        low, high = (mid, high) if proven else (low, mid)
    return low, high


def _bisect_radius(net: Network, q: Query, low: float, high: float, tolerance: float,
                   deadline: float, pass_s: float, method: str, steps: int,
                   first_always: bool = False) -> tuple[float, float]:
    """`bisect_radius` with bound passes of `method` on the query's labels.

    A pass proves radius r when the bounds of `method` ("symbolic" or "alpha") on the box
    of radius r rule out every other label; alpha passes get a share of the time. Method
    "relu_split": alpha-CROWN bounds, then branch and bound on ReLU phases
    (`core.refute.refute_labels`) on the labels they leave, in the pass's share of the
    time (a pass that cannot prove its radius uses all of it, so only the deadline stops
    the passes).
    """
    def prove(radius: float, end: float | None) -> bool:
        limit = None if end is None else max(end - time.perf_counter(), 1e-3)
        qb = query_bounds(net, q, query_box(q, radius),
                          "alpha" if method == "relu_split" else method, limit)
        if method == "relu_split" and qb.candidates and end is not None:
            qb = refute_labels(net, q, qb, end)[0]
        return not qb.candidates

    return bisect_radius(prove, low, high, tolerance, deadline, pass_s, steps,
                         first_always=first_always, shares=method != "symbolic",
                         expect_last=method != "relu_split")


def certified_lower(net: Network, q: Query, high: float, tolerance: float, budget_s: float
                    ) -> tuple[float, dict[str, Any]]:
    """A first proven `lower` of rho before any MILP: a bound-certified radius in [0, high].

    Bisection of the radius with symbolic bounds (cheap, `LOWER_SYMBOLIC_STEPS` passes),
    then alpha-CROWN passes (tighter slopes, costlier) between the largest radius symbolic
    proved and the smallest it failed, all within `budget_s`. A time-out of the MILP then
    still reports this radius instead of 0.
    """
    start = time.perf_counter()
    deadline = start + budget_s
    low, fail = _bisect_radius(net, q, 0.0, high, tolerance, deadline, 0.0, "symbolic",
                               LOWER_SYMBOLIC_STEPS, first_always=True)
    info: dict[str, Any] = {"stage1_symbolic": low}
    if math.isfinite(fail) and fail - low > tolerance and time.perf_counter() < deadline:
        tighter, _ = _bisect_radius(net, q, low, fail, tolerance, deadline, 0.0, "alpha",
                                    LOWER_ALPHA_STEPS)
        info["stage1_alpha"] = tighter
        low = max(low, tighter)
    info["stage1_lower_s"] = time.perf_counter() - start
    return low, info


def split_lower(net: Network, q: Query, low: float, high: float, tolerance: float,
                until: float) -> float:
    """The largest radius in [low, high] that ReLU splitting proves robust before `until`
    (`SPLIT_STEPS` bisection passes; `low` must be proven), or `low`."""
    return _bisect_radius(net, q, low, high, tolerance, until, 0.0, "relu_split",
                          SPLIT_STEPS)[0]


def attack_upper(net: Network, q: Query, candidates: list[int], eps_max: float,
                 deadline: float, end: float = math.inf
                 ) -> tuple[WitnessCheck | None, dict[str, Any]]:
    """A minimum-distortion attack: a verified witness as close to x as cheaply found.

    1. `pgd` with its defaults (radius `eps_max`; at 1.0, PGD's default, the result is the
       one `pgd` returns by itself, so `upper` of rho is never worse than PGD's unless the
       caller's budget ends (`end`) before PGD does: the budget is kept); PGD is
       an L-inf or L2 attack, so under the L1 norm only the LP restriction runs (step 2);
    2. the LP restriction at x (Bastani et al.), and the polish of the best point: the
       nearest point of its activation region (`_refine`), unless it lies beyond
       `eps_max` (a cap); under L2 the restriction is a convex QP (SCIP);
    3. if PGD found a point, up to `ATTACK_ROUNDS` more PGD runs (fresh seeds, no
       bisection of their own) at the middle between the last radius where PGD failed and
       the best distance; each hit is polished again. (If PGD found nothing up to
       `eps_max`, smaller radii are not worth its time: under a cap that is the usual
       case of an image the MILP must decide.) Every point is re-checked.
    """
    from milpverify.core.attacks import pgd
    from milpverify.core.restriction import lp_restriction
    run = {"label": q.label, "domain": q.domain, "target": q.target, "margin": q.margin}
    info: dict[str, Any] = {"heuristic": "attack"}
    best, failed, rounds = None, 0.0, 0
    if q.norm in ("linf", "l2"):
        found = pgd(net, q.x, eps_max=eps_max, norm=q.norm, time_limit_s=_left(end), **run)
        info["pgd_upper"] = found.upper
        best = _verified(net, q, found.witness)
        failed = float(found.stats.get("eps_bracket", [0.0])[0])
        rounds = ATTACK_ROUNDS if best is not None else 0
    if q.norm != "l2" or best is None:
        # Under L2 one restriction per label is a quadratic program each (seconds on
        # MNIST): only when PGD found nothing to polish.
        at_x = lp_restriction(net, q.x, target=candidates, margin=q.margin, domain=q.domain,
                              label=q.label, norm=q.norm, time_limit_s=_left(end))
        best = _closer(best, _verified(net, q, at_x.witness))
    if best is None or best.distance > eps_max:
        return best, info  # beyond a cap a witness shrinks no box: not worth a polish
    best = _refine(net, q, best, end)
    for k in range(rounds):
        if time.perf_counter() > deadline or best.distance - failed <= 1e-4 * best.distance:
            break
        mid = 0.5 * (failed + best.distance)
        hit = pgd(net, q.x, eps_max=mid, bisection_steps=0, seed=k + 1, norm=q.norm,
                  time_limit_s=_left(deadline), **run)
        check = _verified(net, q, hit.witness)
        if check is None or check.distance >= best.distance:
            failed = mid
            continue
        best = _refine(net, q, check, end)
    info["attack_upper"] = best.distance
    return best, info


def _left(deadline: float) -> float:
    """Seconds until `deadline`, at least 1 ms (an attack's budget must be positive)."""
    return max(deadline - time.perf_counter(), 1e-3)


def _verified(net: Network, q: Query, point: Any) -> WitnessCheck | None:
    """The re-checked witness of a candidate point, or None."""
    if point is None:
        return None
    check = _check_point(net, q, point)
    return check if check.verified else None


def _closer(a: WitnessCheck | None, b: WitnessCheck | None) -> WitnessCheck | None:
    if a is None or (b is not None and b.distance < a.distance):
        return b
    return a


def _refine(net: Network, q: Query, found: WitnessCheck, deadline: float = math.inf
            ) -> WitnessCheck:
    """The nearest point of `found`'s activation region (LP restriction), if it is closer;
    the restriction stops at `deadline`."""
    from milpverify.core.restriction import lp_restriction
    local = lp_restriction(net, q.x, target=found.adversarial_label, margin=q.margin,
                           domain=q.domain, label=q.label, norm=q.norm,
                           region_point=found.witness,
                           time_limit_s=None if math.isinf(deadline) else _left(deadline))
    if local.witness is None or local.upper >= found.distance:
        return found
    check = _check_point(net, q, local.witness)
    return check if check.verified and check.distance < found.distance else found


def proven_beyond(radius: float, cap: float, best: WitnessCheck | None,
                   finish: Callable[..., RhoResult], tolerance: float) -> RhoResult:
    """No adversarial point within `radius` is proven: report the bracket it closes.

    - a witness within `tolerance` of the radius: optimal;
    - the radius is the cap: robust_at_cap (`cap` is inf when the box was the whole
      domain: then no adversarial example exists and rho = inf);
    - otherwise the bracket `[radius, witness]` stays open (time_limit).
    """
    if best is not None and best.distance - radius <= tolerance:
        return finish(min(radius, best.distance), RhoStatus.OPTIMAL, best)
    if best is None or radius >= cap or math.isinf(cap):
        message = "no adversarial example exists in the domain" if math.isinf(cap) else ""
        return finish(cap if best is None or radius >= cap else radius,
                      RhoStatus.ROBUST_AT_CAP, best, message)
    return finish(radius, RhoStatus.TIME_LIMIT, best)


# ---------------------------------------------------------------------------- the closer
def objective_of(norm: str, distance: float) -> float:
    """The MILP objective of a distance (squared for L2), rounded up: a cutoff that keeps
    every point strictly closer than `distance`."""
    if norm != "l2":
        return distance
    return float(math.nextafter(distance * distance, math.inf))


def distance_below(norm: str, dual_bound: float) -> float:
    """A distance proven by the MILP's dual bound (for L2, the square root, rounded down)."""
    if norm != "l2":
        return dual_bound
    if not dual_bound > 0:
        return 0.0
    return float(math.nextafter(math.sqrt(dual_bound), 0.0))


def gap_of(norm: str, tolerance: float, lower: float) -> float | None:
    """The absolute gap (in objective units) that closes the bracket to `tolerance / 2`.

    For L2 the objective is the squared distance: with a proven `lower` L > 0, a gap
    `p - d <= tolerance * L` gives `sqrt(p) - max(L, sqrt(d)) <= tolerance * L / (2 L)`.
    Without one, no early stop (None): SCIP closes the gap itself.
    """
    if norm != "l2":
        return tolerance
    return tolerance * lower if lower > 0 else None


Box = tuple[FloatArray, FloatArray]


class DistanceSearch(Protocol):
    """What `close_bracket` needs from one kind of distance query (misclassification in
    `verify.rho`, a relaxed top-K or affinity property in `properties.rho_property`).
    `Prepared` is the query's bounds on a box (output bounds, open labels or pairs)."""

    q: Query

    def bounds(self, box: Box, base: Any) -> Any | None:
        """Symbolic bounds on `box`, intersected with `base` (bounds of a larger box); None
        when they prove that no unsafe point lies in the box."""

    def decide(self, prepared: Any, box: Box, radius: float, deadline: float
               ) -> tuple[Verdict, WitnessCheck | None, str]:
        """A feasibility MILP: robust in `box`, or a verified witness, or unknown."""

    def refine(self, found: WitnessCheck) -> WitnessCheck:
        """A closer verified point in `found`'s activation region, or `found`."""

    def distance_milp(self, prepared: Any, box: Box, radius: float, row_margin: float,
                      cutoff: float, lower: float, tolerance: float, deadline: float
                      ) -> tuple[SolveResult | None, WitnessCheck | None]:
        """Minimise the distance over `box` with the unsafe rows at `row_margin`, cut off at
        `cutoff` (objective units), stopping at a gap that closes `[lower, ...]` to
        `tolerance`; the result and its repaired, verified point. None as the result when
        the query has no unsafe rows at that margin."""


def close_bracket(search: DistanceSearch, best: WitnessCheck | None, radius: float,
                  prepared: Any, deadline: float, tolerance: float, lower: float,
                  stats: dict[str, Any], finish: Callable[..., RhoResult],
                  beyond: Callable[[float, WitnessCheck | None], RhoResult]) -> RhoResult:
    """Close `[lower, best]` from bounds `prepared` valid on the box of `radius`.

    4. No witness inside the radius: a feasibility MILP (no degenerate distance objective)
       proves rho > radius or yields a first witness, refined in its activation region.
    5. Descent: a feasibility MILP on the box of radius best - 0.99 tolerance proves the
       bracket or yields a closer point, which is refined, and the step repeats (at most
       `DESCENT_ROUNDS`; after two rounds in a row that gain little, the points only tie on
       the box boundary and the descent would crawl by one tolerance per round).
    6. The distance MILP on the box of the best witness, its distance as cutoff. The first
       solve (unsafe rows relaxed by SOLVER_SLACK) proves `lower`; if its optimum is a
       near-miss that no true unsafe point attains, solves with a strict margin (2e-6, twice
       SCIP's feasibility tolerance, then WITNESS_MARGIN) find a point that passes the
       re-check and lowers `upper`.

    `finish(lower, status, best, message)` builds the result; `beyond(radius, best)` reports
    a radius within which no unsafe point exists.
    """
    from milpverify.core.query import SOLVER_SLACK, WITNESS_MARGIN

    q = search.q
    if best is None or best.distance > radius:
        verdict, found, message = search.decide(prepared, query_box(q, radius), radius,
                                                deadline)
        if verdict == Verdict.ROBUST:
            return beyond(radius, best)
        if found is None:
            return finish(0.0, RhoStatus.TIME_LIMIT, best, message)
        best = search.refine(found)
        stats["first_witness"] = "feasibility MILP"
    outer = prepared  # bounds valid on a box that contains the best witness
    crawl = 0
    for round_ in range(DESCENT_ROUNDS):
        target_radius = min(radius, best.distance - 0.99 * tolerance)
        if target_radius <= 0:
            return finish(0.0, RhoStatus.OPTIMAL, best)
        radius = target_radius
        box = query_box(q, radius)
        prepared = search.bounds(box, prepared)
        if prepared is None:
            return beyond(radius, best)
        verdict, found, message = search.decide(prepared, box, radius, deadline)
        stats["descent_rounds"] = round_ + 1
        if verdict == Verdict.ROBUST:
            return beyond(radius, best)
        if found is None:
            break  # inconclusive (time, or a point that failed every re-check)
        previous = best.distance
        best = search.refine(found)
        outer = prepared
        small = previous - best.distance < max(10 * tolerance, 0.005 * previous)
        crawl = crawl + 1 if small else 0
        if crawl >= 2:
            break

    radius = best.distance
    box = query_box(q, radius)
    note = "time limit reached before the solve"
    margins = (q.margin - SOLVER_SLACK, q.margin + 2e-6, q.margin + WITNESS_MARGIN)
    for attempt, row_margin in enumerate(margins):
        if deadline - time.perf_counter() <= 0:
            break
        result, found = search.distance_milp(outer, box, radius, row_margin,
                                             objective_of(q.norm, best.distance), lower,
                                             tolerance, deadline)
        if result is None:
            break
        if result.status == SolveStatus.ERROR:
            return finish(lower, RhoStatus.ERROR, best, f"solver error: {result.message}")
        if result.status.no_solution_proven:
            if attempt == 0:  # nothing strictly closer than the cutoff inside the box
                return beyond(radius, best)
            break
        if attempt == 0:
            lower = max(lower, distance_below(q.norm, result.dual_bound))
        if found is not None and found.distance < best.distance:
            best = found
        if best.distance - lower <= tolerance:
            return finish(lower, RhoStatus.OPTIMAL, best)
        if result.status != SolveStatus.OPTIMAL:
            note = f"solver stopped: {result.status.value}"
            break
        note = (f"the relaxed optimum {lower:.6g} is not attained by a verified witness; "
                "bracket left open")
    return finish(lower, RhoStatus.TIME_LIMIT, best, note)
