"""Closing the bracket on rho: heuristic upper bounds, descent refinement, and the certified-radius
salvage on a time-out.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from milpverify.core.decide import _check_point
from milpverify.core.query import Query, query_box
from milpverify.core.results import RhoResult, RhoStatus
from milpverify.core.spec_bounds import query_bounds
from milpverify.core.witness import WitnessCheck
from milpverify.errors import InvalidInputError
from milpverify.ir.network import Network

#: Rounds of "prove nothing within best - tolerance, or find a closer point" in `rho`.
DESCENT_ROUNDS = 20


#: On a time-out, `lower` is raised by bisecting the radius with symbolic bounds
#: (`_certified_radius`): at most this many bound passes, and the MILPs stop early by up
#: to `SALVAGE_SHARE` of the budget so the passes fit inside `time_limit_s`.
SALVAGE_STEPS = 12


SALVAGE_SHARE = 0.1


def _heuristic_upper(net: Network, q: Query, method: str | None, candidates: list[int]
                     ) -> tuple[WitnessCheck | None, dict[str, Any]]:
    """Run a quick upper-bound heuristic on `candidates`; its witness is always re-checked."""
    if method is None or method == "none":
        return None, {}
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
                    restarts=1, bisection_steps=8)
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
        f"`upper_bound` must be 'lp', 'pgd', 'pgd+lp' or None; got {method!r}.")


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
    if not math.isfinite(high) or high <= low:
        return low
    last = pass_s
    for step in range(SALVAGE_STEPS):
        if high - low <= tolerance or (step and time.perf_counter() + last > deadline):
            break
        mid = 0.5 * (low + high)
        t0 = time.perf_counter()
        proven = not query_bounds(net, q, query_box(q, mid), "symbolic").candidates
        last = time.perf_counter() - t0
        low, high = (mid, high) if proven else (low, mid)
    return low


def _refine(net: Network, q: Query, found: WitnessCheck) -> WitnessCheck:
    """The nearest point of `found`'s activation region (LP restriction), if it is closer."""
    from milpverify.core.restriction import lp_restriction
    local = lp_restriction(net, q.x, target=found.adversarial_label, margin=q.margin,
                           domain=q.domain, label=q.label, norm=q.norm,
                           region_point=found.witness)
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
