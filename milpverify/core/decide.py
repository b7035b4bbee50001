"""Decide one robustness query at one radius: MILP feasibility with a relaxed row (infeasible =
proof), then a strict re-solve and a verified witness.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from milpverify.core.propagate import NetworkPropagator
from milpverify.core.query import SOLVER_SLACK, WITNESS_MARGIN, Query
from milpverify.core.region import Region
from milpverify.core.results import Verdict
from milpverify.core.spec_bounds import QueryBounds
from milpverify.core.witness import WitnessCheck, check_witness, repair_witness
from milpverify.encode.model import MilpModel
from milpverify.encode.objective import RobustnessProblem, build_robustness_problem
from milpverify.encode.reduce import eliminate_definitions
from milpverify.ir.network import Network
from milpverify.ir.ops import FloatArray, IntArray
from milpverify.solve import get_backend
from milpverify.solve.base import SolveOptions, SolveResult, SolveStatus

#: SCIP parameters used by default (measured in benchmarks/wk17a_first100.py and by the
#: backend benchmark: the aggregation separator spent most of the time on ReLU big-M rows).
SCIP_DEFAULTS: dict[str, object] = {"separating/aggregation/freq": -1}


#: Whether the MILPs of `rho` and `certify` run the network-aware node propagator
#: (`core.propagate.NetworkPropagator`) by default. Off: measured in
#: benchmarks/results/propagator.md, it lowered nodes per second 1.4-4x (its 3-10 ms per
#: node against SCIP's 2-30 ms) and decided nothing more on eran_3x100 / mnist_fc 256x2
#: (rho on mnist_fc: 1.66x slower on the images both solve).
PROPAGATE = False


#: Whether the MILPs of `MilpRun.solve` (rho, certify, the relaxed properties) are solved
#: with the stable neurons' variables substituted out (`encode.reduce.eliminate_definitions`).
#: On: on WK17a (conv, most neurons stable) it made single MILPs 7-20x faster.
ELIMINATE = True


#: ... but only when it removes at least this share of the model's variables: removing a
#: few (the outputs and a handful of stable neurons of mnist_fc 256x2, uncapped: 9-11 of
#: ~900) leaves the same model with a different SCIP path (image 1: 565 nodes, 3.0 s
#: against 243 nodes, 1.3 s).
ELIMINATE_MIN_SHARE = 0.25


#: Whether the node propagator also chooses the branching variable (BaBSR-style scores,
#: `NetworkPropagator.branch_scores`). Off: no better than SCIP's own branching in
#: benchmarks/results/propagator.md.
BRANCHING = False


#: How much the second solve of `_decide` shrinks an L2 ball's squared radius, so that a
#: solver point, which may overshoot the quadratic row by SCIP's feasibility tolerance
#: (1e-6 on the row scaled by `solve.scip.QUAD_SCALE`, 1e-9 of squared distance), still
#: lies inside the ball; a wide margin.
L2_BALL_SHRINK = 2e-6


def solver_parameters(backend: str, given: dict[str, object] | None, tolerance: float | None
                   ) -> dict[str, object]:
    """SCIP defaults (+ an absolute gap of half the tolerance for rho) under the user's params.

    The absolute gap only stops the search once `primal - dual <= tolerance / 2`; the dual
    bound stays proven, so the reported bracket is still sound.
    """
    params: dict[str, object] = {}
    if backend == "scip":
        params.update(SCIP_DEFAULTS)
        if tolerance is not None:
            params["limits/absgap"] = tolerance / 2
    params.update(given or {})
    return params


def counted_solve(solver: Any, model: MilpModel, options: SolveOptions,
                  timings: dict[str, float], stats: dict[str, Any],
                  definitions: Sequence[tuple[IntArray, IntArray]] | None = None
                  ) -> SolveResult:
    """`solver.solve(model, options)`, its time added to ``timings["solve_s"]`` and its
    branch-and-bound nodes to ``stats["nodes"]`` (a query's totals over all its MILPs).

    With the encoder's `definitions` (and `ELIMINATE`, and no node propagator, which reads
    the pre-activation variables), the stable neurons' variables are substituted out first
    (`encode.reduce`, its time added to ``timings["build_s"]``); the result's point is
    mapped back to the full model's variables.
    """
    reduction = None
    if definitions and ELIMINATE and options.node_propagator is None:
        t0 = time.perf_counter()
        reduction = eliminate_definitions(model, definitions, ELIMINATE_MIN_SHARE)
        timings["build_s"] = timings.get("build_s", 0.0) + time.perf_counter() - t0
    t0 = time.perf_counter()
    result = solver.solve(model if reduction is None else reduction.model, options)
    timings["solve_s"] = timings.get("solve_s", 0.0) + time.perf_counter() - t0
    stats["nodes"] = stats.get("nodes", 0) + result.nodes
    if reduction is not None:
        stats["eliminated"] = reduction.eliminated
        if result.x is not None:
            result = dataclasses.replace(result, x=reduction.expand(result.x))
    return result


@dataclass
class MilpRun:
    """How one query's MILPs are solved, and where their cost is summed.

    `solve` runs a model on `backend` with the query's threads, log and solver parameters
    (`solver_parameters`: SCIP's defaults under the user's) and adds its time to
    ``timings["solve_s"]``, its nodes to ``stats["nodes"]`` and the node propagator's
    counters to `stats`; `built` adds a model's build time to ``timings["build_s"]``.
    """

    backend: str
    threads: int = 1
    solver_params: dict[str, object] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    verbose: bool = False
    propagate: bool = PROPAGATE
    solver: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.solver = get_backend(self.backend)  # a bad name fails before any work

    def built(self, since: float) -> None:
        self.timings["build_s"] = self.timings.get("build_s", 0.0) + time.perf_counter() - since

    def propagator(self, net: Network, qb: QueryBounds, problem: RobustnessProblem
                   ) -> NetworkPropagator | None:
        """The node propagator of a robustness MILP, or None (not asked, or a backend
        without node callbacks)."""
        if not self.propagate or self.backend != "scip":
            return None
        return NetworkPropagator(net, qb.bounds, problem, branching=BRANCHING)

    def solve(self, model: MilpModel, time_limit_s: float, *, first_feasible: bool = False,
              cutoff: float | None = None, gap: float | None = None,
              propagator: NetworkPropagator | None = None,
              definitions: Sequence[tuple[IntArray, IntArray]] | None = None) -> SolveResult:
        """Solve `model` in `time_limit_s`: to the first feasible point (a decision), or to
        optimality under `cutoff` with an absolute `gap` (a distance). With the encoder's
        `definitions`, `counted_solve` may substitute the stable neurons out first."""
        options = SolveOptions(time_limit_s=time_limit_s, threads=self.threads,
                               verbose=self.verbose, stop_at_first_feasible=first_feasible,
                               objective_cutoff=cutoff, node_propagator=propagator,
                               solver_params=solver_parameters(self.backend,
                                                               self.solver_params, gap))
        result = counted_solve(self.solver, model, options, self.timings, self.stats,
                               definitions)
        if propagator is not None:
            for key, value in (("prop_calls", propagator.calls),
                               ("prop_cutoffs", propagator.cutoffs),
                               ("prop_fixed", propagator.fixed),
                               ("prop_s", propagator.seconds)):
                self.stats[key] = self.stats.get(key, 0) + value
        return result


def _check_point(net: Network, q: Query, point: npt.ArrayLike) -> WitnessCheck:
    """`check_witness` of a candidate point against the query (label, domain, norm, margin)."""
    return check_witness(net, q.x, np.asarray(point, dtype=np.float64).reshape(-1),
                         label=q.label, domain=q.domain, norm=q.norm,
                         required_margin=q.margin, target=q.target)


def _solution_region(net: Network, problem: RobustnessProblem, solution: FloatArray,
                     point: FloatArray) -> Region:
    """The activation region the MILP solution chose: its binaries, else the point's signs.

    At an optimum a pre-activation is often exactly 0 (a kink), where the sign of the
    float64 value picks an arbitrary neighbouring region; the binaries do not.
    """
    from milpverify.core.region import Region, region_of
    region, _ = region_of(net, point)
    active = {k: v.copy() for k, v in region.active.items()}
    for name, binaries in problem.encoding.relu_active.items():
        chosen = binaries >= 0
        active[name][chosen] = solution[binaries[chosen]] > 0.5
    argmax = {k: v.copy() for k, v in region.argmax.items()}
    for name, choices in problem.encoding.maxpool_choice.items():
        for k, inputs, binaries in choices:
            argmax[name][k] = inputs[int(np.argmax(solution[binaries]))]
    return Region(active, argmax)


def _region_repair(net: Network, q: Query, point: FloatArray,
                   region: Region | None = None) -> WitnessCheck | None:
    """Nearest verified adversarial point of an activation region (default: the point's)."""
    from milpverify.core.restriction import lp_restriction
    targets = [q.target] if q.target is not None else [j for j in range(net.num_classes)
                                                       if j != q.label]
    local = lp_restriction(net, q.x, target=targets, margin=q.margin, domain=q.domain,
                           label=q.label, norm=q.norm, region_point=point, region=region)
    if local.witness is None:
        return None
    check = _check_point(net, q, local.witness)
    return check if check.verified else None


#: One feasibility solve of `decide_loop`: (attempt, row margin) -> the solver's result and
#: its repaired, verified point, or (None, None, reason) when no solve ran.
FeasibilitySolve = Callable[[int, float],
                            "tuple[SolveResult | None, WitnessCheck | None, str]"]


#: The message of a strict solve that has no unsafe rows left (`decide_loop`'s "tie").
TIE_MESSAGE = (f"unsafe points exist only within {WITNESS_MARGIN:g} of the boundary "
               "(not resolved)")


@dataclass(frozen=True)
class Decision:
    """What `decide_loop` found: the verdict, a verified witness for NOT_ROBUST, and why an
    UNKNOWN stopped (`stopped`: "time", "error", "tie" or "recheck"; "" otherwise)."""

    verdict: Verdict
    witness: WitnessCheck | None
    message: str
    stopped: str = ""


def decide_loop(solve: FeasibilitySolve, margin: float, radius: float | None = None
                ) -> Decision:
    """The one decision at a radius: is there an unsafe point in the box?

    First with the unsafe rows relaxed by SOLVER_SLACK (`margin - SOLVER_SLACK`): infeasible
    proves the box safe. A point found that way may only tie within tolerance; then a second
    solve asks for a strict margin (`margin + WITNESS_MARGIN`) so the witness survives the
    float64/onnxruntime re-check. With a `radius`, a witness farther than it (up to
    rounding) does not count.
    """
    message = "time limit reached"
    for attempt, row_margin in enumerate((margin - SOLVER_SLACK, margin + WITNESS_MARGIN)):
        result, found, reason = solve(attempt, row_margin)
        if result is None:
            stopped = "tie" if reason == TIE_MESSAGE else "time"
            return Decision(Verdict.UNKNOWN, None, reason or message, stopped)
        if result.status == SolveStatus.ERROR:
            return Decision(Verdict.UNKNOWN, None, f"solver error: {result.message}", "error")
        if result.status.no_solution_proven:
            if attempt == 0:
                return Decision(Verdict.ROBUST, None, "MILP infeasible")
            return Decision(Verdict.UNKNOWN, None, TIE_MESSAGE, "tie")
        if result.x is None:
            return Decision(Verdict.UNKNOWN, None, f"solver stopped: {result.status.value}",
                            "time")
        if found is not None and (radius is None or found.distance is None
                                  or found.distance <= radius * (1 + 1e-12)):
            return Decision(Verdict.NOT_ROBUST, found, "")
        message = reason or "the solver's point failed the witness re-check"
    return Decision(Verdict.UNKNOWN, None, message, "recheck")


def _decide(net: Network, q: Query, qb: QueryBounds, box: tuple[FloatArray, FloatArray],
            eps: float, deadline: float, run: MilpRun
            ) -> tuple[Verdict, WitnessCheck | None, str]:
    """`decide_loop` for misclassification: the MILPs of `build_robustness_problem`, ray then
    region repair. Under L2 the ball is a quadratic row: exact in the first solve (so
    infeasibility is a proof), shrunk by `L2_BALL_SHRINK` in the second so the solver's
    point, which may overshoot the row by SCIP's feasibility tolerance, lands inside the
    ball.
    """
    def solve(attempt: int, row_margin: float
              ) -> tuple[SolveResult | None, WitnessCheck | None, str]:
        t1 = time.perf_counter()
        problem = build_robustness_problem(net, q.x, q.label, qb.bounds, box[0], box[1],
                                           norm=q.norm, radius=eps, margin=row_margin,
                                           candidates=qb.candidates, with_distance=False,
                                           margin_lower=qb.margin_lower,
                                           ball_shrink=attempt * L2_BALL_SHRINK)
        run.built(t1)
        run.stats["binaries"] = int(problem.model.n_integer)
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            return None, None, ""
        result = run.solve(problem.model, remaining, first_feasible=True,
                           propagator=run.propagator(net, qb, problem),
                           definitions=problem.encoding.definitions)
        if result.x is None:
            return result, None, ""
        point = result.x[problem.input_vars]
        found = repair_witness(net, q.x, point, label=q.label, domain=q.domain, norm=q.norm,
                               required_margin=q.margin, target=q.target, box=box)
        if found is None or found.distance > eps:
            # Row tolerances add up through the layers; the exact LP in the activation
            # region the solver chose gives a verified point if that region holds one.
            found = _region_repair(net, q, point, _solution_region(net, problem, result.x, point))
        return result, found, ""

    d = decide_loop(solve, q.margin, eps)
    return d.verdict, d.witness, d.message
