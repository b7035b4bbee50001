"""Exact distance to the nearest input that violates a relaxed property (relaxed top-K, affinity)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy.typing as npt

from milpverify.bounds.base import Bounds
from milpverify.bounds.tighten import METHODS
from milpverify.core.bracket import SPLIT_STEPS, bisect_radius, close_bracket, gap_of, proven_beyond
from milpverify.core.decide import TIE_MESSAGE, MilpRun, decide_loop
from milpverify.core.query import (
    SOLVER_SLACK,
    Query,
    check_positive,
    check_share,
    max_radius,
    query_box,
    validate_query,
)
from milpverify.core.refute import can_refute
from milpverify.core.results import RhoResult, RhoStatus, Verdict
from milpverify.core.witness import WitnessCheck, reports_rejections
from milpverify.errors import InvalidInputError
from milpverify.ir.network import Network
from milpverify.ir.ops import FloatArray
from milpverify.properties.encoding import ENCODINGS, build_property_problem
from milpverify.properties.pairs import (
    OutputBounds,
    PairPlan,
    plan_pairs,
    property_bounds,
    refute_pairs,
)
from milpverify.properties.query import (
    TopKQuery,
    _pgd_bisect,
    _refine_in_region,
    _repair,
    check_property_witness,
    topk_query,
)
from milpverify.properties.spec import Property, RelaxedTopK, affinity_of
from milpverify.solve import get_backend
from milpverify.solve.base import SolveResult, SolveStatus
from milpverify.verify import DEFAULT_TOLERANCE, RHO_SPLIT_SHARE


# ============================================================================ rho
@reports_rejections
def rho_property(net: Network, x: npt.ArrayLike, prop: Property, *, norm: str = "linf",
                 eps_cap: float | None = None, domain: tuple[float, float] = (0.0, 1.0),
                 time_limit_s: float = 60.0, backend: str = "scip",
                 bounds_method: str = "progressive", upper_bound: str | None = "pgd",
                 encoding: str = "pairs", difference_bounds: bool = True, threads: int = 1,
                 tolerance: float = DEFAULT_TOLERANCE,
                 solver_params: dict[str, object] | None = None,
                 verbose: bool = False, relu_split: float = RHO_SPLIT_SHARE) -> RhoResult:
    """Exact distance from x to the nearest x' that violates `prop` (RTK or affinity).

    The pipeline, bracket and statuses of `milpverify.verify.rho`: symbolic bounds on the
    capped box (they may prove the property there already), a PGD upper bound on the
    violation that shrinks the box, final bounds with `bounds_method`, then the closer
    `rho` uses (`core.bracket.close_bracket`: a feasibility MILP when no witness is known
    yet, descent, and the distance MILP of `build_property_problem` cut off at the best
    witness). `upper` is always the distance of a witness that passed
    `check_property_witness` (numpy float64 and onnxruntime both show every certifying
    top-k set changed); a solver point that fails is pushed along its ray
    (`witness.RAY_STEPS`) and re-checked, else discarded and the bracket stays open.

    Parameters
    ----------
    net : Network
    x : array
        One input inside `domain`.
    prop : RelaxedTopK or Affinity
    norm : {"linf", "l1"}
    eps_cap : float, optional
        Only search `||x' - x|| <= eps_cap` ("robust_at_cap" with `lower = eps_cap`).
    domain : (low, high)
    time_limit_s : float
        Budget of the whole query.
    backend : str
        MILP backend ("scip", "highs", "pyomo:SOLVER").
    bounds_method : str
        "interval", "symbolic", "alpha", "lp", "mip" or "progressive" (default).
    upper_bound : {"pgd", None}
        Heuristic run first (L-inf only).
    encoding : {"pairs", "select"}
        Property encoding (`add_topk_changed`).
    difference_bounds : bool
        Bound every `y_j - y_i` by back-substitution (`property_bounds`): prunes pairs and
        tightens the big-M constants.
    threads : int
    tolerance : float
        Bracket width under which the answer is "optimal".
    solver_params : dict, optional
        Passed to the backend on top of `verify.SCIP_DEFAULTS`.
    verbose : bool
        Let the MILP solver print its log on stdout (the CLI's ``--verbose``).
    relu_split : float
        As in `milpverify.verify.rho`: share of the MILPs' time kept for a time-out, after
        which `lower` is raised by bisecting the radius, each radius proven when ReLU
        splitting keeps some certifying top-k set everywhere in its box (`_keeps_a_set`);
        chain networks only, 0: off.

    Returns
    -------
    RhoResult
        `label` is the top-1 label at x, `adversarial_label` the witness's top-1;
        `stats`: "property", "certifying_ks", "open_ks", "pairs_possible", "binaries", ...

    Raises
    ------
    InvalidInputError
        Bad `x`, `prop`, `eps_cap`, `domain`, options.

    Example
    -------
    >>> rho_property(net, x, RelaxedTopK(2), eps_cap=0.1).upper
    """
    check_positive("eps_cap", eps_cap)
    check_positive("time_limit_s", time_limit_s, allow_none=False)
    check_positive("tolerance", tolerance, allow_none=False)
    check_share("relu_split", relu_split)
    q = validate_query(net, x, norm=norm, domain=domain, margin=0.0, target=None, label=None)
    query = topk_query(net, q.x, prop)
    check_options(upper_bound, encoding, bounds_method)
    get_backend(backend)  # a bad name fails before any work
    start = time.perf_counter()
    timings: dict[str, float] = {}
    stats: dict[str, Any] = {"property": query.name, "certifying_ks": list(query.ks)}
    cap = eps_cap if eps_cap is not None else max_radius(q)
    proven_cap = cap if eps_cap is not None else math.inf
    end = start + time_limit_s
    split_until = 0.0  # end of the bisection by ReLU splitting after a time-out (0: none)

    def finish(lower: float, status: RhoStatus, witness: WitnessCheck | None, message: str = ""
               ) -> RhoResult:
        upper = witness.distance if witness is not None else math.inf
        if status == RhoStatus.TIME_LIMIT and time.perf_counter() < split_until:
            t0 = time.perf_counter()
            proven = bisect_radius(
                lambda r, until: _keeps_a_set(net, q, query, r, until, difference_bounds),
                lower, min(upper, cap), tolerance, split_until, 0.0, SPLIT_STEPS,
                shares=True, expect_last=False)[0]
            timings["relu_split_s"] = time.perf_counter() - t0
            if proven > lower:
                stats["lower_from"] = "ReLU-splitting bisection"
                lower = proven
        timings["total_s"] = time.perf_counter() - start
        lower = min(lower, upper)
        if status == RhoStatus.TIME_LIMIT and upper - lower <= tolerance:
            status = RhoStatus.OPTIMAL
        return RhoResult(lower, upper, status, query.order[0],
                         None if witness is None else witness.adversarial_label,
                         None if witness is None else witness.witness, witness is not None,
                         timings, stats, "exact", q.norm, message)

    def beyond(radius: float, best: WitnessCheck | None) -> RhoResult:
        return proven_beyond(radius, proven_cap, best, finish, tolerance)

    def bound(box: tuple[FloatArray, FloatArray], method: str, budget: float | None = None,
              base: Bounds | None = None) -> tuple[Bounds, OutputBounds, PairPlan]:
        t0 = time.perf_counter()
        bounds, out = property_bounds(net, box, method, time_limit_s=budget, base=base,
                                      differences=difference_bounds)
        plan = plan_pairs(query, out, -SOLVER_SLACK)
        timings["bounds_s"] = timings.get("bounds_s", 0.0) + time.perf_counter() - t0
        stats["unstable_relus"] = bounds.unstable
        stats.update(plan.stats)
        return bounds, out, plan

    at_x = check_property_witness(net, q.x, q.x, query, domain=q.domain, norm=q.norm)
    if at_x.verified:
        return finish(0.0, RhoStatus.OPTIMAL, at_x, "x itself violates the property" + (
            "" if query.ks else ": no top-k set of x fits a group"))

    # 1. Cheap bounds on the capped box: they may already keep some T_k everywhere.
    box = query_box(q, cap)
    bounds, out, plan = bound(box, "symbolic")
    if plan.impossible is not None:
        return beyond(cap, None)

    # 2. A verified PGD witness shrinks the box.
    t0 = time.perf_counter()
    best = None
    if upper_bound == "pgd" and q.norm == "linf":
        best = _pgd_bisect(net, q, query, cap, steps=8, deadline=start + time_limit_s)
        best = None if best is None else _refine_in_region(net, q, query, best)
        stats["heuristic"] = "pgd"
    timings["upper_bound_s"] = time.perf_counter() - t0
    radius = min(cap, best.distance) if best is not None else cap

    # 3. Final bounds on the (shrunk) box with the requested method.
    if radius < cap or bounds_method != "symbolic":
        box = query_box(q, radius)
        budget = max((time_limit_s - (time.perf_counter() - start)) * 0.5, 1e-3)
        bounds, out, plan = bound(box, bounds_method, budget)
    if plan.impossible is not None:
        return beyond(radius, best)

    run = MilpRun(backend, threads, solver_params, timings, stats, verbose)
    search = _PropertySearch(net, q, query, run, encoding, bound)
    deadline = end
    if relu_split > 0 and can_refute(net):
        # the MILPs stop early; a time-out then bisects the radius by ReLU splitting
        split_until = end
        deadline -= relu_split * (end - time.perf_counter())
    return close_bracket(search, best, radius, (bounds, out, plan), deadline, tolerance, 0.0,
                         stats, finish, beyond)


def _keeps_a_set(net: Network, q: Query, query: TopKQuery, radius: float, until: float | None,
                 difference_bounds: bool) -> bool:
    """Whether some certifying top-k set provably never changes within `radius` of x:
    alpha-CROWN bounds on the box, then per open k (fewest pairs first, an equal share of
    the time left each) ReLU splitting on every pair that could change T_k."""
    until = math.inf if until is None else until
    box = query_box(q, radius)
    bounds, out = property_bounds(net, box, "alpha", differences=difference_bounds,
                                  time_limit_s=max(until - time.perf_counter(), 1e-3))
    plan = plan_pairs(query, out, -SOLVER_SLACK)
    if plan.impossible is not None:
        return True
    ks = sorted(plan.ks, key=lambda k: len(plan.pairs[k]))
    for i, k in enumerate(ks):
        now = time.perf_counter()
        if now >= until:
            break
        pairs = sorted(plan.pairs[k], key=lambda p: out.upper_diff[p[1], p[0]])
        refuted, _ = refute_pairs(net, bounds, out, pairs, -SOLVER_SLACK,
                                  now + (until - now) / (len(ks) - i))
        if len(refuted) == len(pairs):
            return True
    return False


Prepared = tuple[Bounds, OutputBounds, PairPlan]


@dataclass
class _PropertySearch:
    """`core.bracket.DistanceSearch` for a relaxed property: bounds on the output
    differences and the kept pairs, the MILPs of `build_property_problem`, ray repair."""

    net: Network
    q: Query
    query: TopKQuery
    run: MilpRun
    encoding: str
    bound: Callable[..., Prepared]

    def bounds(self, box: tuple[FloatArray, FloatArray], base: Prepared) -> Prepared | None:
        prepared = self.bound(box, "symbolic", base=base[0])
        return None if prepared[2].impossible is not None else prepared

    def decide(self, prepared: Prepared, box: tuple[FloatArray, FloatArray], radius: float,
               deadline: float) -> tuple[Verdict, WitnessCheck | None, str]:
        bounds, out, plan = prepared
        return decide_at_radius(self.net, self.q, self.query, bounds, out, plan, box, radius,
                                deadline, self.run, self.encoding)

    def refine(self, found: WitnessCheck) -> WitnessCheck:
        return _refine_in_region(self.net, self.q, self.query, found)

    def distance_milp(self, prepared: Prepared, box: tuple[FloatArray, FloatArray],
                      radius: float, row_margin: float, cutoff: float, lower: float,
                      tolerance: float, deadline: float
                      ) -> tuple[SolveResult | None, WitnessCheck | None]:
        bounds, out, plan = prepared
        if row_margin > -SOLVER_SLACK:  # a strict margin keeps fewer pairs
            plan = plan_pairs(self.query, out, row_margin, plan.refuted)
            if plan.impossible is not None:
                return None, None
        t1 = time.perf_counter()
        problem = build_property_problem(self.net, self.q.x, bounds, plan, box[0], box[1],
                                         margin=row_margin, norm=self.q.norm, radius=radius,
                                         encoding=self.encoding)
        self.run.built(t1)
        self.run.stats["binaries"] = int(problem.model.n_integer)
        self.run.stats["property_binaries"] = len(problem.choice_vars)
        result = self.run.solve(problem.model, max(deadline - time.perf_counter(), 1e-3),
                                cutoff=cutoff, gap=gap_of(self.q.norm, tolerance, lower),
                                definitions=problem.encoding.definitions)
        if result.x is None or result.status == SolveStatus.ERROR:
            return result, None
        return result, _repair(self.net, self.q, self.query, result.x[problem.input_vars], box)


def decide_at_radius(net: Network, q: Query, query: TopKQuery, bounds: Bounds,
                     out: OutputBounds, plan: PairPlan, box: tuple[FloatArray, FloatArray],
                     eps: float, deadline: float, run: MilpRun, encoding: str
                     ) -> tuple[Verdict, WitnessCheck | None, str]:
    """Is there a violating point in `box` (radius `eps`)? `core.decide.decide_loop` with the
    MILPs of `build_property_problem`; the strict solve re-plans the pairs at its margin
    (none left: the violations only tie, unknown)."""
    def solve(attempt: int, row_margin: float
              ) -> tuple[SolveResult | None, WitnessCheck | None, str]:
        kept = plan_pairs(query, out, row_margin, plan.refuted) if attempt else plan
        if kept.impossible is not None:
            return None, None, TIE_MESSAGE
        t1 = time.perf_counter()
        problem = build_property_problem(net, None, bounds, kept, box[0], box[1],
                                         margin=row_margin, encoding=encoding,
                                         with_distance=False)
        run.built(t1)
        run.stats["binaries"] = int(problem.model.n_integer)
        run.stats["property_binaries"] = len(problem.choice_vars)
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            return None, None, "time limit reached before the solve"
        result = run.solve(problem.model, remaining, first_feasible=True,
                           definitions=problem.encoding.definitions)
        if result.x is None:
            return result, None, ""
        return result, _repair(net, q, query, result.x[problem.input_vars], box), ""

    d = decide_loop(solve, 0.0, eps)
    return d.verdict, d.witness, d.message


def check_options(upper_bound: str | None, encoding: str, bounds_method: str) -> None:
    if upper_bound not in ("pgd", None, "none"):
        raise InvalidInputError(f"`upper_bound`/`attack` must be 'pgd' or None; got "
                                f"{upper_bound!r}.")
    if encoding not in ENCODINGS:
        raise InvalidInputError(f"`encoding` must be one of {ENCODINGS}; got {encoding!r}.")
    if bounds_method not in METHODS:
        raise InvalidInputError(f"`bounds_method` must be one of {', '.join(METHODS)}; "
                                f"got {bounds_method!r}.")


def rho_topk(net: Network, x: npt.ArrayLike, K: int, **options: Any) -> RhoResult:
    """Exact relaxed top-K robustness radius: `rho_property(net, x, RelaxedTopK(K), ...)`.

    K = 1 is `rho` itself; the radius is non-decreasing in K. Keyword options (`eps_cap`,
    `domain`, `time_limit_s`, `backend`, ...) as in `rho_property`.

    Example
    -------
    >>> rho_topk(net, x, 3, eps_cap=8 / 255).status
    'optimal'
    """
    return rho_property(net, x, RelaxedTopK(K), **options)


def rho_affinity(net: Network, x: npt.ArrayLike, groups: Sequence[Sequence[int]] | str | Path,
                 *, semantics: str = "subset", **options: Any) -> RhoResult:
    """Exact affinity robustness radius; `groups` is a list of label lists or a JSON file.

    Example
    -------
    >>> rho_affinity(net, x, [[0, 1, 8, 9], [2, 3, 4, 5, 6, 7]]).upper
    """
    return rho_property(net, x, affinity_of(groups, semantics), **options)
