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
from dataclasses import dataclass
from typing import Any

import numpy.typing as npt

from milpverify.core.bracket import (
    ATTACK_SHARE,
    LOWER_SHARE,
    SALVAGE_SHARE,
    SALVAGE_STEPS,
    _certified_radius,
    _heuristic_upper,
    _refine,
    certified_lower,
    close_bracket,
    distance_below,
    gap_of,
    proven_beyond,
    split_lower,
)
from milpverify.core.decide import (
    PROPAGATE,
    MilpRun,
    _check_point,
    _decide,
    _region_repair,
    _solution_region,
)
from milpverify.core.query import (
    NORMS,
    Query,
    check_norm_backend,
    check_positive,
    check_share,
    max_radius,
    query_box,
    validate_query,
)
from milpverify.core.refute import can_refute, refute_labels
from milpverify.core.results import Certificate, RhoResult, RhoStatus, Verdict
from milpverify.core.spec_bounds import QueryBounds, query_bounds
from milpverify.core.witness import WitnessCheck, repair_witness, reports_rejections
from milpverify.encode.objective import build_robustness_problem
from milpverify.errors import InvalidInputError
from milpverify.ir.network import Network
from milpverify.ir.ops import FloatArray
from milpverify.solve import get_backend
from milpverify.solve.base import SolveResult, SolveStatus

#: How `rho` searches several open labels (see its `strategy` parameter).
STRATEGIES = ("disjunction", "per_target")


#: `optimal` is reported when the verified upper bound and the proven lower bound differ
#: by at most this much (absolute, in input units).
DEFAULT_TOLERANCE = 1e-5

#: Share of `certify`'s time left after a first short MILP (`FIRST_MILP_SHARE` of the time
#: left after the bounds) that ReLU splitting may spend ruling out labels before the last
#: MILP (`benchmarks/relu_split.py --part certify`).
RELU_SPLIT_SHARE = 0.5
FIRST_MILP_SHARE = 0.1
#: Share of `rho`'s MILP time kept for a time-out: the radius between `lower` and `upper`
#: is then bisected with ReLU splitting (`core.bracket.split_lower`). It raised `lower` on
#: every ERAN 3x100 image tried and on some RSL18a and ConvSmall ones, changed no
#: optimum of mnist_fc 256x2 and none of WK17a's brackets (`benchmarks/relu_split.py
#: --part rho`).
RHO_SPLIT_SHARE = 0.3
#: Bound methods that solve LPs or MILPs per neuron: with ReLU splitting on, `certify`
#: computes them only after the splitting on alpha-CROWN bounds.
TIGHTENED_BOUNDS = ("lp", "mip", "progressive")


@reports_rejections
def rho(net: Network, x: npt.ArrayLike, *, norm: str = "linf", eps_cap: float | None = None,
        target: int | None = None, domain: tuple[float, float] = (0.0, 1.0),
        time_limit_s: float = 60.0, backend: str = "scip", margin: float = 0.0,
        bounds_method: str = "progressive", upper_bound: str | None = "attack",
        threads: int = 1, tolerance: float = DEFAULT_TOLERANCE, label: int | None = None,
        solver_params: dict[str, object] | None = None,
        initial_witness: npt.ArrayLike | None = None,
        strategy: str = "disjunction", verbose: bool = False,
        propagate: bool = PROPAGATE, relu_split: float = RHO_SPLIT_SHARE) -> RhoResult:
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
    verbose : bool
        Let the MILP solver print its log on stdout (the CLI's ``--verbose``); bound
        tightening and the heuristics stay quiet.

    propagate : bool
        Run the network-aware node propagator inside the MILPs' branch and bound (SCIP
        only, `milpverify.core.propagate`): at every node it re-derives the bounds from
        the node's fixed ReLU phases and input box, fixes ReLUs that became stable and
        cuts off nodes that cannot hold a counterexample. Default `core.decide.PROPAGATE`
        (off: it lowered nodes per second more than it pruned; benchmarks/results/propagator.md).
    relu_split : float
        Share of the MILPs' time kept for a time-out (chain networks only): the MILPs stop
        that much earlier, and if they time out, `lower` is raised by bisecting the radius
        between it and `upper` with branch and bound on ReLU phases (`core.bracket.
        split_lower`: alpha-CROWN bounds, then `core.refute.refute_labels`); default
        `RHO_SPLIT_SHARE`, 0: off.

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
    check_share("relu_split", relu_split)
    q = validate_query(net, x, norm=norm, domain=domain, margin=margin, target=target,
                       label=label, norms=NORMS)
    check_norm_backend(norm, backend)
    if strategy not in STRATEGIES:
        raise InvalidInputError(f"`strategy` must be one of {', '.join(STRATEGIES)}; "
                                f"got {strategy!r}.")
    get_backend(backend)  # a missing solver is reported now, not after the bounds
    start = time.perf_counter()
    timings: dict[str, float] = {}
    stats: dict[str, Any] = {}

    cap = eps_cap if eps_cap is not None else max_radius(q)
    proven_cap = cap if eps_cap is not None else math.inf

    finish = _RhoFinish(net, q, cap, tolerance, start, time_limit_s, timings, stats)

    # 1. Cheap bounds on the capped box (margins f_j - f_label bounded directly): often
    # they already eliminate every other label.
    box = query_box(q, cap)
    qb = query_bounds(net, q, box, "symbolic")
    finish.symbolic_pass_s = timings["bounds_s"] = time.perf_counter() - start
    stats["unstable_relus"] = qb.bounds.unstable
    stats["candidate_labels"] = len(qb.candidates)
    if not qb.candidates:
        return proven_beyond(cap, proven_cap, None, finish, tolerance)
    if strategy == "per_target" and len(qb.candidates) > 1:
        return _rho_per_target(
            net, q, qb.candidates, eps_cap, start, time_limit_s, tolerance,
            dict(backend=backend, bounds_method=bounds_method, upper_bound=upper_bound,
                 threads=threads, tolerance=tolerance, solver_params=solver_params,
                 verbose=verbose, propagate=propagate, relu_split=relu_split),
            initial_witness)
    # The MILPs stop early enough to leave time for the time-out salvage (`finish`).
    deadline = start + time_limit_s - min(SALVAGE_SHARE * time_limit_s,
                                          SALVAGE_STEPS * finish.symbolic_pass_s)

    # 2. A quick verified upper bound on the surviving labels shrinks the box.
    t0 = time.perf_counter()
    best = _first_upper(net, q, upper_bound, qb.candidates, eps_cap,
                        (start + ATTACK_SHARE * time_limit_s, deadline), initial_witness, stats)
    timings["upper_bound_s"] = time.perf_counter() - t0
    radius = min(cap, best.distance) if best is not None else cap

    # 2b. A bound-certified radius is the first `lower` (a time-out never reports 0 when
    # the bounds prove a radius); it may already close the bracket. Under a cap with no
    # witness inside it, it could close nothing, and a time-out's salvage runs the same
    # bisection on [0, cap]: skipped there (it cost WK17a image 8 at cap 0.1 ~4 s).
    if eps_cap is None or radius < cap:
        t0 = time.perf_counter()
        finish.first_lower, info = certified_lower(net, q, radius, tolerance,
                                                   LOWER_SHARE * time_limit_s)
        stats.update(info)
        timings["lower_bound_s"] = time.perf_counter() - t0
        if best is not None and best.distance - finish.first_lower <= tolerance:
            return finish(finish.first_lower, RhoStatus.OPTIMAL, best)

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
    if relu_split > 0 and can_refute(net):
        # the MILPs stop early; a time-out then bisects the radius by ReLU splitting
        finish.split_until = deadline
        deadline -= relu_split * (deadline - time.perf_counter())

    run = MilpRun(backend, threads, solver_params, timings, stats, verbose, propagate)
    search = _Misclassification(net, q, run)
    return close_bracket(search, best, radius, qb, deadline, tolerance, finish.first_lower,
                         stats, finish,
                         lambda r, b: proven_beyond(r, proven_cap, b, finish, tolerance))


def _first_upper(net: Network, q: Query, upper_bound: str | None, candidates: list[int],
                 eps_cap: float | None, deadlines: tuple[float, float],
                 initial_witness: npt.ArrayLike | None, stats: dict[str, Any]
                 ) -> WitnessCheck | None:
    """The closer of the heuristic's verified witness and the caller's `initial_witness`
    (re-checked like any witness). `deadlines`: the attack's share of the budget, and the
    end of the MILPs' (see `attack_upper`)."""
    # Uncapped, PGD runs at its own default radius 1.0 (not the domain's extent, which
    # would change its step size), so its result is exactly `pgd`'s.
    eps_max = eps_cap if eps_cap is not None else 1.0
    best, info = _heuristic_upper(net, q, upper_bound, candidates, eps_max, *deadlines)
    stats.update(info)
    if initial_witness is not None:
        given = _check_point(net, q, initial_witness)
        stats["initial_witness_verified"] = given.verified
        if given.verified and (best is None or given.distance < best.distance):
            best = given
    return best


@dataclass
class _RhoFinish:
    """Builds `rho`'s result from a bracket: the bound-certified radius found before the
    MILPs (`first_lower`) is a floor of `lower`, and a time-out raises `lower` by the
    symbolic bisection of the radius (`_certified_radius`, about `SALVAGE_STEPS` passes of
    `symbolic_pass_s`)."""

    net: Network
    q: Query
    cap: float
    tolerance: float
    start: float
    time_limit_s: float
    timings: dict[str, float]
    stats: dict[str, Any]
    symbolic_pass_s: float = 0.0
    first_lower: float = 0.0
    split_until: float = 0.0  # end of the ReLU-splitting bisection after a time-out (0: none)

    def __call__(self, lower: float, status: RhoStatus, witness: WitnessCheck | None,
                 message: str = "") -> RhoResult:
        upper = witness.distance if witness is not None else math.inf
        if self.first_lower > lower:
            self.stats["lower_from"] = "certified radius before the MILP"
            lower = self.first_lower
        if status == RhoStatus.TIME_LIMIT and time.perf_counter() < self.split_until:
            t0 = time.perf_counter()
            proven = split_lower(self.net, self.q, lower, min(upper, self.cap), self.tolerance,
                                 self.split_until)
            self.timings["relu_split_s"] = time.perf_counter() - t0
            if proven > lower:
                self.stats["lower_from"] = "ReLU-splitting bisection"
                lower = proven
        if status == RhoStatus.TIME_LIMIT:
            t0 = time.perf_counter()
            certified = _certified_radius(self.net, self.q, lower, min(upper, self.cap),
                                          self.tolerance, self.start + self.time_limit_s,
                                          self.symbolic_pass_s)
            self.timings["salvage_s"] = time.perf_counter() - t0
            if certified > lower:
                self.stats["lower_from"] = "symbolic bisection"
                lower = certified
        self.timings["total_s"] = time.perf_counter() - self.start
        lower = min(lower, upper)
        if status == RhoStatus.TIME_LIMIT and upper - lower <= self.tolerance:
            status = RhoStatus.OPTIMAL
        q = self.q
        return RhoResult(lower, upper, status, q.label,
                         None if witness is None else witness.adversarial_label,
                         None if witness is None else witness.witness,
                         witness is not None, self.timings, self.stats, "exact", q.norm,
                         message)


@dataclass
class _Misclassification:
    """`core.bracket.DistanceSearch` for misclassification: bounds on the margins
    f_j - f_label, the MILPs of `build_robustness_problem`, ray then region repair."""

    net: Network
    q: Query
    run: MilpRun

    def bounds(self, box: tuple[FloatArray, FloatArray], base: QueryBounds
               ) -> QueryBounds | None:
        t0 = time.perf_counter()
        qb = query_bounds(self.net, self.q, box, "symbolic", base=base.bounds)
        self.run.timings["bounds_s"] += time.perf_counter() - t0
        return qb if qb.candidates else None

    def decide(self, qb: QueryBounds, box: tuple[FloatArray, FloatArray], radius: float,
               deadline: float) -> tuple[Verdict, WitnessCheck | None, str]:
        return _decide(self.net, self.q, qb, box, radius, deadline, self.run)

    def refine(self, found: WitnessCheck) -> WitnessCheck:
        return _refine(self.net, self.q, found)

    def distance_milp(self, qb: QueryBounds, box: tuple[FloatArray, FloatArray],
                      radius: float, row_margin: float, cutoff: float, lower: float,
                      tolerance: float, deadline: float
                      ) -> tuple[SolveResult | None, WitnessCheck | None]:
        net, q, run = self.net, self.q, self.run
        t1 = time.perf_counter()
        problem = build_robustness_problem(net, q.x, q.label, qb.bounds, box[0], box[1],
                                           norm=q.norm, radius=radius, margin=row_margin,
                                           candidates=qb.candidates,
                                           margin_lower=qb.margin_lower)
        run.built(t1)
        run.stats["binaries"] = int(problem.model.n_integer)
        run.stats["rows"] = problem.model.n_rows
        result = run.solve(problem.model, max(deadline - time.perf_counter(), 1e-3),
                           cutoff=cutoff, gap=gap_of(q.norm, tolerance, lower),
                           propagator=run.propagator(net, qb, problem),
                           definitions=problem.encoding.definitions)
        if result.x is None or result.status == SolveStatus.ERROR:
            return result, None
        point = result.x[problem.input_vars]
        found = repair_witness(net, q.x, point, label=q.label, domain=q.domain, norm=q.norm,
                               required_margin=q.margin, target=q.target, box=box)
        if row_margin < q.margin:  # the relaxed solve: its dual bound is a proven distance
            lower = max(lower, distance_below(q.norm, result.dual_bound))
        if found is None or found.distance - lower > tolerance:
            # A tie the ray cannot fix: solve exactly in the region the solver chose.
            regional = _region_repair(net, q, point,
                                      _solution_region(net, problem, result.x, point))
            if regional is not None and (found is None or regional.distance < found.distance):
                found = regional
        return result, found


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


@reports_rejections
def certify(net: Network, x: npt.ArrayLike, eps: float, *, time_limit_s: float = 60.0,
            norm: str = "linf", domain: tuple[float, float] = (0.0, 1.0), target: int | None = None,
            margin: float = 0.0, backend: str = "scip", bounds_method: str = "progressive",
            attack: str | None = "pgd", threads: int = 1, label: int | None = None,
            solver_params: dict[str, object] | None = None,
            verbose: bool = False, propagate: bool = PROPAGATE,
            relu_split: float = RELU_SPLIT_SHARE) -> Certificate:
    """Decide whether every x' with ||x' - x|| <= eps (in `domain`) keeps the label.

    Stops at the first adversarial point the solver finds. "not_robust" always comes with
    a verified witness; "robust" only with a proof (bounds, ReLU splitting or solver
    infeasibility). Options as in `rho`; `verbose` lets the MILP solver print its log on
    stdout, `propagate` runs the node propagator as for `rho`.

    With `relu_split` > 0 (on chains of affine maps and ReLUs): symbolic, then alpha-CROWN
    bounds, a first MILP (`FIRST_MILP_SHARE` of the time left), then branch and bound on ReLU phases
    (`core.refute.refute_labels`) rules out what labels it can in `relu_split` of the time
    left; `bounds_method`'s bounds (when dearer, `TIGHTENED_BOUNDS`) and the last MILP
    decide the others. With 0, or on other networks: `bounds_method`'s bounds and one MILP.

    Example
    -------
    >>> certify(net, images[0], 0.1).verdict
    'robust'
    """
    check_positive("eps", eps, allow_none=False)
    check_positive("time_limit_s", time_limit_s, allow_none=False)
    check_share("relu_split", relu_split)
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
    deadline = start + time_limit_s

    def bound(method: str, open_labels: list[int] | None = None) -> QueryBounds:
        t0 = time.perf_counter()
        found = query_bounds(net, q, box, method, max((deadline - t0) * 0.5, 1e-3))
        timings["bounds_s"] = timings.get("bounds_s", 0.0) + time.perf_counter() - t0
        stats["unstable_relus"] = found.bounds.unstable
        return found if open_labels is None else found.keep(open_labels)

    # With ReLU splitting, it works on alpha-CROWN bounds first (after a symbolic pass,
    # which alone decides the easy cases): the dearer LP-tightened bounds are computed
    # only for the labels it leaves (and for the MILP).
    split = relu_split > 0 and can_refute(net)
    cheap_first = split and bounds_method in TIGHTENED_BOUNDS
    qb = bound("symbolic" if cheap_first else bounds_method)
    if cheap_first and qb.candidates:
        qb = bound("alpha", qb.candidates)
    if not qb.candidates:
        return done(Verdict.ROBUST, None, "proven by bounds alone")
    run = MilpRun(backend, threads, solver_params, timings, stats, verbose, propagate)
    if split:
        # A short MILP first: it finds counterexamples (which ReLU splitting cannot) and
        # easy proofs in seconds, where the splitting would spend its whole share.
        t0 = time.perf_counter()
        verdict, witness, message = _decide(net, q, qb, box, eps,
                                            t0 + FIRST_MILP_SHARE * (deadline - t0), run)
        if verdict != Verdict.UNKNOWN:
            return done(verdict, witness, message)
        t0 = time.perf_counter()
        qb, info = refute_labels(net, q, qb, t0 + relu_split * (deadline - t0))
        stats.update(info)
        timings["relu_split_s"] = time.perf_counter() - t0
        if not qb.candidates:
            return done(Verdict.ROBUST, None, "proven by ReLU splitting")
        if cheap_first:
            qb = bound(bounds_method, qb.candidates)
            if not qb.candidates:
                return done(Verdict.ROBUST, None, "proven by bounds alone")
    verdict, witness, message = _decide(net, q, qb, box, eps, deadline, run)
    return done(verdict, witness, message)
