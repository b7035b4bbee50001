"""`rho` and `certify`: the exact pipeline (bounds -> MILP -> SCIP -> witness re-check).

Thin front doors over `milpverify.core` (query, decide, bracket). Soundness contract:
- `lower` is SCIP's dual bound of a MILP whose misclassification row is relaxed by
  `SOLVER_SLACK` (so solutions that violate it within SCIP's feasibility tolerance are not
  lost), built on bounds that are sound under float64 rounding; it is exact up to the LP
  solver's floating-point tolerances (the PyPI SCIP has no exact rational mode).
- `upper` is always the distance of a witness that passed `check_witness` (numpy float64
  and onnxruntime on the original model). A solver point that fails the check is pushed a
  little further along its ray (`repair_witness`) and re-checked; if that fails too it is
  discarded and the bracket stays open, never closed by a guess.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy.typing as npt

from milpverify.core.bracket import (
    ATTACK_SHARE,
    DESCENT_ROUNDS,
    LOWER_SHARE,
    SALVAGE_SHARE,
    SALVAGE_STEPS,
    _certified_radius,
    _heuristic_upper,
    _refine,
    certified_lower,
    proven_beyond,
)
from milpverify.core.decide import (
    PROPAGATE,
    _check_point,
    _decide,
    _region_repair,
    _solution_region,
    node_propagator,
    record_propagation,
    solver_parameters,
)
from milpverify.core.query import (
    NORMS,
    SOLVER_SLACK,
    WITNESS_MARGIN,
    Query,
    check_norm_backend,
    check_positive,
    max_radius,
    query_box,
    validate_query,
)
from milpverify.core.results import Certificate, RhoResult, RhoStatus, Verdict
from milpverify.core.spec_bounds import query_bounds
from milpverify.core.witness import WitnessCheck, repair_witness
from milpverify.encode.objective import build_robustness_problem
from milpverify.errors import InvalidInputError
from milpverify.ir.network import Network
from milpverify.ir.ops import FloatArray
from milpverify.solve import get_backend
from milpverify.solve.base import SolveOptions, SolveStatus

#: How `rho` searches several open labels (see its `strategy` parameter).
STRATEGIES = ("disjunction", "per_target")


#: `optimal` is reported when the verified upper bound and the proven lower bound differ
#: by at most this much (absolute, in input units).
DEFAULT_TOLERANCE = 1e-5


def rho(net: Network, x: npt.ArrayLike, *, norm: str = "linf", eps_cap: float | None = None,
        target: int | None = None, domain: tuple[float, float] = (0.0, 1.0),
        time_limit_s: float = 60.0, backend: str = "scip", margin: float = 0.0,
        bounds_method: str = "progressive", upper_bound: str | None = "attack",
        threads: int = 1, tolerance: float = DEFAULT_TOLERANCE, label: int | None = None,
        solver_params: dict[str, object] | None = None,
        initial_witness: npt.ArrayLike | None = None,
        strategy: str = "disjunction", propagate: bool = PROPAGATE) -> RhoResult:
    """Exact pointwise robustness rho(f, x) = min ||x' - x|| s.t. x' is misclassified.

    Parameters
    ----------
    net : Network
    x : array
        One input, scaled as the network expects (inside `domain`).
    norm : {"linf", "l1", "l2"}
        "l2" solves mixed-integer convex quadratic programs (backend "scip" only): the
        squared distance is minimised and `lower` is the square root of SCIP's dual bound,
        rounded down.
    eps_cap : float, optional
        Only search `||x' - x|| <= eps_cap`; a proof that none exists gives
        status "robust_at_cap" with `lower = eps_cap`.
    target : int, optional
        Only count misclassification as this label (default: any label but `label`).
    domain : (low, high)
        Valid input range (default [0, 1]).
    time_limit_s : float
        Wall-clock budget for the whole query; on expiry the proven bracket is returned
        with status "time_limit".
    backend : str
        "scip" (default), "highs", or "pyomo:SOLVER".
    margin : float
        Require `f_adv >= f_label + margin` (Bastani et al.'s rounding fix); 0 gives rho
        itself, where the nearest point may only tie.
    bounds_method : str
        "interval", "symbolic", "alpha", "lp", "mip" or "progressive" (default).
    upper_bound : {"attack", "lp", "pgd", "pgd+lp", None}
        Heuristic run first: its verified distance shrinks the input box before bounds
        are computed and is passed to the solver as an objective cutoff. "attack"
        (default, `core.bracket.attack_upper`): `pgd` with its defaults (radius the cap if
        one is given), the LP restriction at x and in the best point's activation region,
        then a few more PGD runs below the best distance; without a cap `upper` is thus
        never worse than `pgd`'s. "lp" (the LP restriction at x) is cheapest but often
        finds nothing; "pgd+lp" is PGD with fewer steps and the restriction.
        Whatever the heuristic, a bound-certified radius (symbolic, then alpha-CROWN
        bisection, `LOWER_SHARE` of the budget) is the first `lower`.
    tolerance : float
        Bracket width under which the answer is reported "optimal".
    label : int, optional
        Label to measure against (default: the network's prediction at x).
    initial_witness : array, optional
        A known adversarial point (e.g. from an attack). It is re-checked like any
        witness; if it passes, it is a first upper bound (box shrink and cutoff) next to
        the `upper_bound` heuristic's. A point that fails the check is ignored.
    strategy : {"disjunction", "per_target"}
        How several labels the bounds leave open are searched. "disjunction" (default):
        one MILP with a binary per label. "per_target": one `rho(target=j)` per open
        label, most likely first, each capped at the best distance found so far; rho is
        the minimum. Measured: per target was faster on 28 of 42 easy images
        (`benchmarks/per_target.py`, 0.89x total), but on mnist_fc 256x2 image 6 (rho in
        (0.03, 0.05], cap 0.05) it spent 300 s proving the first label beyond the cap and
        found no witness, where the disjunction finds one, so it is not the default.
    propagate : bool
        Run the network-aware node propagator inside the MILPs' branch and bound (SCIP
        only, `milpverify.core.propagate`): at every node it re-derives the bounds from
        the node's fixed ReLU phases and input box, fixes ReLUs that became stable and
        cuts off nodes that cannot hold a counterexample. Default `core.decide.PROPAGATE`.

    Returns
    -------
    RhoResult
        Proven bracket `[lower, upper]`, status, verified witness and timings.

    Raises
    ------
    InvalidInputError
        Bad `x`, `norm`, `eps_cap`, `domain`, `margin`, `target`, `time_limit_s`.

    Example
    -------
    >>> r = rho(net, images[8], eps_cap=0.1)
    >>> r.status, r.lower, r.upper
    """
    check_positive("eps_cap", eps_cap)
    check_positive("time_limit_s", time_limit_s, allow_none=False)
    check_positive("tolerance", tolerance, allow_none=False)
    q = validate_query(net, x, norm=norm, domain=domain, margin=margin, target=target,
                       label=label, norms=NORMS)
    check_norm_backend(norm, backend)
    if strategy not in STRATEGIES:
        raise InvalidInputError(f"`strategy` must be one of {', '.join(STRATEGIES)}; "
                                f"got {strategy!r}.")
    solver = get_backend(backend)
    start = time.perf_counter()
    timings: dict[str, float] = {}
    stats: dict[str, Any] = {}

    cap = eps_cap if eps_cap is not None else max_radius(q)
    proven_cap = cap if eps_cap is not None else math.inf

    symbolic_pass_s = 0.0  # the time of one symbolic bound pass, measured in step 1
    first_lower = [0.0]  # the bound-certified radius of step 2b, a floor of every `lower`

    def finish(lower: float, status: RhoStatus, witness: WitnessCheck | None, message: str = ""
               ) -> RhoResult:
        upper = witness.distance if witness is not None else math.inf
        if first_lower[0] > lower:
            stats["lower_from"] = "certified radius before the MILP"
            lower = first_lower[0]
        if status == RhoStatus.TIME_LIMIT:
            t0 = time.perf_counter()
            certified = _certified_radius(net, q, lower, min(upper, cap), tolerance,
                                          start + time_limit_s, symbolic_pass_s)
            timings["salvage_s"] = time.perf_counter() - t0
            if certified > lower:
                stats["lower_from"] = "symbolic bisection"
                lower = certified
        timings["total_s"] = time.perf_counter() - start
        lower = min(lower, upper)
        if status == RhoStatus.TIME_LIMIT and upper - lower <= tolerance:
            status = RhoStatus.OPTIMAL
        return RhoResult(lower, upper, status, q.label,
                         None if witness is None else witness.adversarial_label,
                         None if witness is None else witness.witness,
                         witness is not None, timings, stats, "exact", q.norm, message)

    # 1. Cheap bounds on the capped box (margins f_j - f_label bounded directly): often
    # they already eliminate every other label.
    box = query_box(q, cap)
    qb = query_bounds(net, q, box, "symbolic")
    symbolic_pass_s = timings["bounds_s"] = time.perf_counter() - start
    stats["unstable_relus"] = qb.bounds.unstable
    stats["candidate_labels"] = len(qb.candidates)
    if not qb.candidates:
        return proven_beyond(cap, proven_cap, None, finish, tolerance)
    if strategy == "per_target" and len(qb.candidates) > 1:
        return _rho_per_target(
            net, q, qb.candidates, eps_cap, start, time_limit_s, tolerance,
            dict(backend=backend, bounds_method=bounds_method, upper_bound=upper_bound,
                 threads=threads, tolerance=tolerance, solver_params=solver_params,
                 propagate=propagate),
            initial_witness)
    # The MILPs stop early enough to leave time for the time-out salvage (`finish`).
    deadline = start + time_limit_s - min(SALVAGE_SHARE * time_limit_s,
                                          SALVAGE_STEPS * symbolic_pass_s)

    # 2. A quick verified upper bound on the surviving labels shrinks the box.
    t0 = time.perf_counter()
    # Uncapped, PGD runs at its own default radius 1.0 (not the domain's extent, which
    # would change its step size), so its result is exactly `pgd`'s.
    eps_max = eps_cap if eps_cap is not None else 1.0
    best, info = _heuristic_upper(net, q, upper_bound, qb.candidates, eps_max,
                                  start + ATTACK_SHARE * time_limit_s)
    stats.update(info)
    if initial_witness is not None:
        given = _check_point(net, q, initial_witness)
        stats["initial_witness_verified"] = given.verified
        if given.verified and (best is None or given.distance < best.distance):
            best = given
    timings["upper_bound_s"] = time.perf_counter() - t0
    radius = min(cap, best.distance) if best is not None else cap

    # 2b. A bound-certified radius is the first `lower` (a time-out never reports 0 when
    # the bounds prove a radius); it may already close the bracket. Under a cap with no
    # witness inside it, it could close nothing, and a time-out's salvage runs the same
    # bisection on [0, cap]: skipped there (it cost WK17a image 8 at cap 0.1 ~4 s).
    if eps_cap is None or radius < cap:
        t0 = time.perf_counter()
        first_lower[0], info = certified_lower(net, q, radius, tolerance,
                                               LOWER_SHARE * time_limit_s)
        stats.update(info)
        timings["lower_bound_s"] = time.perf_counter() - t0
        if best is not None and best.distance - first_lower[0] <= tolerance:
            return finish(first_lower[0], RhoStatus.OPTIMAL, best)

    # 3. Final bounds on the (shrunk) box with the requested method.
    t0 = time.perf_counter()
    if radius < cap or bounds_method != "symbolic":
        box = query_box(q, radius)
        qb = query_bounds(net, q, box, bounds_method, max((deadline - t0) * 0.5, 1e-3))
    timings["bounds_s"] += time.perf_counter() - t0
    stats["unstable_relus"] = qb.bounds.unstable
    stats["candidate_labels"] = len(qb.candidates)
    if not qb.candidates:
        return proven_beyond(radius, proven_cap, best, finish, tolerance)

    if best is None or best.distance > radius:
        # 4. Nothing known inside the radius: a feasibility MILP (no degenerate distance
        # objective) either proves rho > radius or yields a first witness, which is then
        # refined to the nearest point of its activation region (LP restriction).
        verdict, found, message = _decide(net, q, qb, box, radius, deadline,
                                          backend, threads, solver_params, timings, stats,
                                          propagate=propagate)
        if verdict == Verdict.ROBUST:
            return proven_beyond(radius, proven_cap, best, finish, tolerance)
        if found is None:
            return finish(0.0, RhoStatus.TIME_LIMIT, best, message)
        best = _refine(net, q, found)
        stats["first_witness"] = "feasibility MILP"
    # 5. Close the bracket by descent: a feasibility MILP on the box of radius
    # best - 0.99 * tolerance either proves the bracket (measured on WK17a image 8: 31 s,
    # where the distance MILP did not finish in 120 s) or yields a closer point, which
    # is refined and the step repeats.
    # `outer`: bounds valid on a box at least as large as the best witness's distance,
    # which the fallback distance MILP needs.
    outer = qb
    crawl = 0
    for round_ in range(DESCENT_ROUNDS):
        target_radius = min(radius, best.distance - 0.99 * tolerance)
        if target_radius <= 0:
            return finish(0.0, RhoStatus.OPTIMAL, best)
        radius = target_radius
        box = query_box(q, radius)
        t0 = time.perf_counter()
        # Bounds of the larger box remain valid here; intersect with them.
        qb = query_bounds(net, q, box, "symbolic", base=qb.bounds)
        timings["bounds_s"] += time.perf_counter() - t0
        if not qb.candidates:
            return proven_beyond(radius, proven_cap, best, finish, tolerance)
        verdict, found, message = _decide(net, q, qb, box, radius, deadline,
                                          backend, threads, solver_params, timings, stats,
                                          propagate=propagate)
        stats["descent_rounds"] = round_ + 1
        if verdict == Verdict.ROBUST:
            return proven_beyond(radius, proven_cap, best, finish, tolerance)
        if found is None:
            break  # inconclusive (time, or a point that failed every re-check)
        previous = best.distance
        best = _refine(net, q, found)
        outer = qb  # the new witness lies inside this round's box
        # Points that only tie within tolerance land on the box boundary, and the descent
        # then crawls by one tolerance per round: after two such rounds in a row, the
        # distance MILP is faster (e.g. a small conv net: 0.0274 -> 0.02136 in one solve).
        small = previous - best.distance < max(10 * tolerance, 0.005 * previous)
        crawl = crawl + 1 if small else 0
        if crawl >= 2:
            break

    # 6. Fallback: the distance MILP on the box of the best witness, its distance as cutoff.
    # The first solve (misclassification relaxed by SOLVER_SLACK) proves `lower`; if its
    # optimum is a near-miss that no true adversarial point attains (a region whose best
    # margin lies in (-SOLVER_SLACK, 0)), solves with a strict margin (2e-6, twice SCIP's
    # feasibility tolerance, then WITNESS_MARGIN) find a point that passes the re-check
    # and lowers `upper`.
    radius = best.distance
    box = query_box(q, radius)
    qb = outer
    lower, status_note = first_lower[0], "time limit reached before the solve"
    margins = (q.margin - SOLVER_SLACK, q.margin + 2e-6, q.margin + WITNESS_MARGIN)
    for attempt, row_margin in enumerate(margins):
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            break
        t1 = time.perf_counter()
        problem = build_robustness_problem(net, q.x, q.label, qb.bounds, box[0], box[1],
                                           norm=q.norm, radius=radius, margin=row_margin,
                                           candidates=qb.candidates,
                                           margin_lower=qb.margin_lower)
        timings["build_s"] = timings.get("build_s", 0.0) + time.perf_counter() - t1
        stats["binaries"] = int(problem.model.n_integer)
        stats["rows"] = problem.model.n_rows
        prop = node_propagator(net, qb, problem, backend, propagate)
        options = SolveOptions(time_limit_s=remaining, threads=threads,
                               objective_cutoff=_objective_of(q.norm, best.distance),
                               solver_params=solver_parameters(
                                   backend, solver_params, _gap_of(q.norm, tolerance, lower)),
                               node_propagator=prop)
        t2 = time.perf_counter()
        result = solver.solve(problem.model, options)
        timings["solve_s"] = timings.get("solve_s", 0.0) + time.perf_counter() - t2
        record_propagation(stats, prop)
        stats["nodes"] = stats.get("nodes", 0) + result.nodes
        if result.status == SolveStatus.ERROR:
            return finish(lower, RhoStatus.ERROR, best, f"solver error: {result.message}")
        if result.status.no_solution_proven:
            if attempt == 0:
                # Nothing strictly closer than the cutoff inside the box.
                return proven_beyond(radius, proven_cap, best, finish, tolerance)
            break
        if attempt == 0:
            lower = max(lower, _distance_below(q.norm, result.dual_bound))
        if result.x is not None:
            point = result.x[problem.input_vars]
            found = repair_witness(net, q.x, point, label=q.label, domain=q.domain,
                                   norm=q.norm, required_margin=q.margin, target=q.target,
                                   box=box)
            if found is None or found.distance - lower > tolerance:
                # A tie the ray cannot fix: solve exactly in the region the solver chose.
                regional = _region_repair(net, q, point,
                                          _solution_region(net, problem, result.x, point))
                if regional is not None and (found is None or
                                             regional.distance < found.distance):
                    found = regional
            if found is not None and found.distance < best.distance:
                best = found
        if best.distance - lower <= tolerance:
            return finish(lower, RhoStatus.OPTIMAL, best)
        if result.status != SolveStatus.OPTIMAL:
            status_note = f"solver stopped: {result.status.value}"
            break
        status_note = (f"the relaxed optimum {lower:.6g} is not attained by a verified "
                       f"witness; bracket left open")
    return finish(lower, RhoStatus.TIME_LIMIT, best, status_note)


def _objective_of(norm: str, distance: float) -> float:
    """The MILP objective of a distance (squared for L2), rounded up: a cutoff that keeps
    every point strictly closer than `distance`."""
    if norm != "l2":
        return distance
    return float(math.nextafter(distance * distance, math.inf))


def _distance_below(norm: str, dual_bound: float) -> float:
    """A distance proven by the MILP's dual bound (for L2, the square root, rounded down)."""
    if norm != "l2":
        return dual_bound
    if not dual_bound > 0:
        return 0.0
    return float(math.nextafter(math.sqrt(dual_bound), 0.0))


def _gap_of(norm: str, tolerance: float, lower: float) -> float | None:
    """The absolute gap (in objective units) that closes the bracket to `tolerance / 2`.

    For L2 the objective is the squared distance: with a proven `lower` L > 0, a gap
    `p - d <= tolerance * L` gives `sqrt(p) - max(L, sqrt(d)) <= tolerance * L / (2 L)`.
    Without one, no early stop (None): SCIP closes the gap itself.
    """
    if norm != "l2":
        return tolerance
    return tolerance * lower if lower > 0 else None


def _rho_per_target(net: Network, q: Query, candidates: list[int], eps_cap: float | None,
                    start: float, time_limit_s: float, tolerance: float,
                    options: dict[str, Any], initial_witness: npt.ArrayLike | None
                    ) -> RhoResult:
    """rho = min over open labels j of rho(target=j), each capped at the best distance so far.

    A target proven beyond its cap (the best distance found before it) cannot beat that
    distance, so its cap is a valid lower bound of its own rho; the combined `lower` is the
    minimum over the targets of their lower bounds.
    """
    logits = net.forward(q.x)[0]
    order = sorted(candidates, key=lambda j: -logits[j])
    cap = eps_cap if eps_cap is not None else max_radius(q)
    best: tuple[float, FloatArray, int | None] | None = None  # distance, witness, label
    lower = math.inf
    timings: dict[str, float] = {}
    stats: dict[str, Any] = {"strategy": "per_target", "targets": [], "nodes": 0,
                             "binaries": 0}
    if initial_witness is not None:
        given = _check_point(net, q, initial_witness)
        stats["initial_witness_verified"] = given.verified
        if given.verified:
            best = (given.distance, given.witness, given.adversarial_label)
    messages = []
    errors = False
    # As in the disjunction path, the MILPs leave a share of the budget for the salvage.
    deadline = start + time_limit_s * (1.0 - SALVAGE_SHARE)
    unsearched = False
    for j in order:
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            unsearched = True
            messages.append(f"no time left for label {j}")
            break
        limit = cap if best is None else min(cap, best[0])
        r = rho(net, q.x, norm=q.norm, eps_cap=limit, target=j, domain=q.domain,
                time_limit_s=remaining, margin=q.margin, label=q.label,
                strategy="disjunction", **options)
        for key, value in r.timings.items():
            timings[key] = timings.get(key, 0.0) + value
        stats["targets"].append({"target": j, "status": str(r.status), "lower": r.lower,
                                 "upper": r.upper})
        stats["nodes"] += int(r.stats.get("nodes", 0))
        stats["binaries"] = max(stats["binaries"], int(r.stats.get("binaries", 0)))
        stats["unstable_relus"] = r.stats.get("unstable_relus")
        if r.status == RhoStatus.ERROR:
            errors = True
            messages.append(f"label {j}: {r.message}")
        if r.lower < lower and r.stats.get("lower_from"):
            stats["lower_from"] = r.stats["lower_from"]  # the binding target's bound
        elif r.lower < lower:
            stats.pop("lower_from", None)
        lower = min(lower, r.lower)
        if r.witness_verified and r.witness is not None and (best is None or r.upper < best[0]):
            best = (r.upper, r.witness, r.adversarial_label)
    stats["candidate_labels"] = len(candidates)
    upper = best[0] if best is not None else math.inf
    if unsearched:
        lower = 0.0  # an unsearched label bounds nothing by itself
        stats.pop("lower_from", None)
    if upper - lower > tolerance and not (best is None and lower >= cap):
        # What symbolic bounds prove for all labels at once (e.g. for a label whose
        # search got no time) is a proof for rho itself.
        certified = _certified_radius(net, q, lower, min(upper, cap), tolerance,
                                      start + time_limit_s, 0.0)
        if certified > lower:
            stats["lower_from"] = "symbolic bisection"
            lower = certified
    timings["total_s"] = time.perf_counter() - start
    lower = min(lower, upper)
    if upper - lower <= tolerance:
        status = RhoStatus.OPTIMAL
    elif errors:
        status = RhoStatus.ERROR
    elif best is None and lower >= cap:
        status = RhoStatus.ROBUST_AT_CAP
        if eps_cap is None:
            lower = math.inf  # every label proven beyond the whole domain
    else:
        status = RhoStatus.TIME_LIMIT
    return RhoResult(lower, upper, status, q.label,
                     None if best is None else best[2],
                     None if best is None else best[1], best is not None, timings, stats,
                     "exact", q.norm, "; ".join(messages))


def certify(net: Network, x: npt.ArrayLike, eps: float, *, time_limit_s: float = 60.0,
            norm: str = "linf", domain: tuple[float, float] = (0.0, 1.0), target: int | None = None,
            margin: float = 0.0, backend: str = "scip", bounds_method: str = "progressive",
            attack: str | None = "pgd", threads: int = 1, label: int | None = None,
            solver_params: dict[str, object] | None = None,
            propagate: bool = PROPAGATE) -> Certificate:
    """Decide whether every x' with ||x' - x|| <= eps (in `domain`) keeps the label.

    Stops at the first adversarial point the solver finds. "not_robust" always comes with
    a verified witness; "robust" only with a proof (bounds or solver infeasibility).
    `propagate` as for `rho`.

    Example
    -------
    >>> certify(net, images[0], 0.1).verdict
    'robust'
    """
    check_positive("eps", eps, allow_none=False)
    check_positive("time_limit_s", time_limit_s, allow_none=False)
    q = validate_query(net, x, norm=norm, domain=domain, margin=margin, target=target,
                       label=label, norms=NORMS)
    check_norm_backend(norm, backend)
    get_backend(backend)  # a missing solver is reported now, not after the bounds
    start = time.perf_counter()
    timings: dict[str, float] = {}
    stats: dict[str, Any] = {}

    def done(verdict: Verdict, witness: WitnessCheck | None, message: str = "") -> Certificate:
        timings["total_s"] = time.perf_counter() - start
        return Certificate(verdict, float(eps), q.label,
                           None if witness is None else witness.witness, witness is not None,
                           None if witness is None else witness.adversarial_label, timings,
                           stats, message)

    box = query_box(q, eps)
    if attack == "pgd" and norm in ("linf", "l2"):
        from milpverify.core.attacks import pgd
        found = pgd(net, q.x, label=q.label, domain=q.domain, target=q.target, eps_max=eps,
                    steps=30, restarts=1, bisection_steps=0, norm=norm)
        timings["attack_s"] = time.perf_counter() - start
        if found.witness_verified and found.witness is not None and found.upper <= eps:
            check = _check_point(net, q, found.witness)
            if check.verified and check.distance <= eps:
                return done(Verdict.NOT_ROBUST, check)
    t0 = time.perf_counter()
    qb = query_bounds(net, q, box, bounds_method, max((time_limit_s - (t0 - start)) * 0.5, 1e-3))
    timings["bounds_s"] = time.perf_counter() - t0
    stats["unstable_relus"] = qb.bounds.unstable
    if not qb.candidates:
        return done(Verdict.ROBUST, None, "proven by bounds alone")
    deadline = start + time_limit_s
    verdict, witness, message = _decide(net, q, qb, box, eps, deadline, backend, threads,
                                        solver_params, timings, stats, propagate=propagate)
    return done(verdict, witness, message)
