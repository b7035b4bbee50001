"""`compute_bounds` (public as `milpverify.bounds`): interval, symbolic, LP, MIP and progressive bounds.

Interval and symbolic bounds come from `milpverify.bounds` (no solver). The solver methods
tighten, layer by layer, the pre-activations of still-unstable ReLUs (and the inputs of
undecided MaxPool windows) by minimising and maximising each one over the LP relaxation
(`"lp"`) or the exact MILP (`"mip"`) of the layers before it, built by the same encoder
as the robustness MILP; after each tightened layer a symbolic pass (intersected with the
bounds so far) carries the gain to the later layers. Bounds only ever shrink: interval ⊇
symbolic ⊇ any solver method, and "mip" runs the whole "lp" pass first, so it is inside
"lp" (guaranteed across calls with `base=` the "lp" result, since time limits make
solves non-deterministic). "progressive" is inside symbolic, not comparable with lp.

Solver tolerances
-----------------
* LP: the solver's answer is never trusted. From the row duals `y` it returns (any `y`
  will do, optimal or not, even after a time-out) `safe_dual_bound` computes a lower bound of
  `min c^T x` over the LP in exact real arithmetic (Neumaier & Shcherbina 2004), rounding
  outward. The LP's rows are the encoder's, with the network's float64 weights as exact
  coefficients and sound bounds as big-Ms, so every real input in the box maps to an LP
  point; the bound therefore holds for the exact network. If a backend returns no duals
  (SCIP sessions), the LP's dual bound is widened by `LP_FALLBACK_SLACK * (1 + |b|)` instead.
* MIP: there is no rigorous MILP bound without exact arithmetic. The dual bound of the
  MILP solver (feasibility tolerance 1e-6) is widened by `MIP_BOUND_SLACK * (1 + |b|)`; this
  is an allowance for the tolerances, not a proof.
* A solve that fails, or times out without a finite bound, leaves the neuron's bound as it
  was. Points returned by solvers only serve as evidence that a neuron is truly unstable
  (see below); they never enter a bound.

Progressive
-----------
Cheapest first, escalating only what is still undecided. 256 random box vertices (and,
later, the input part of every LP/MILP solution) are run through the network: a neuron
seen both below and above zero is *proven unstable* and no solver touches it, and a side
some input already crossed is never solved. Layer by layer, each remaining unstable
neuron gets an LP on the side nearer to zero, then on the other side unless it became
stable (each LP warm-starts from the previous one's basis; one that stalls is solved
again from scratch, `LP_RESOLVE_ITERATIONS_PER_DIM`); then (level "mip") a MILP for those
still undecided, asking only whether the neuron can cross zero (objective cutoff
`MIP_SIGN_CUTOFF`, stop at the first solution, `PROGRESSIVE_MIP_NEURON_S` per solve, no
presolve and no primal heuristics: `SIGN_MILP_PARAMS`). Under `time_limit_s` each layer
may use `2 / (layers left + 1)` of the time left, the most promising neurons (smallest
side relative to the width) first.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from milpverify.bounds import BOUND_METHODS, alpha_bounds, interval_bounds, symbolic_bounds
from milpverify.bounds.base import Bounds
from milpverify.bounds.interval import check_box
from milpverify.bounds.tighten.progressive import EVIDENCE_SAMPLES, _box_samples, _tighten
from milpverify.bounds.tighten.state import _Evidence, _flat, _intersect, _LevelStats, _State
from milpverify.errors import InvalidInputError
from milpverify.ir.constraints import OutputConstraint
from milpverify.ir.network import Network

METHODS = (*BOUND_METHODS, "lp", "mip", "progressive")


LEVELS = ("lp", "mip")


# ---------------------------------------------------------------------------- entry point
def compute_bounds(net: Network, lower: npt.ArrayLike, upper: npt.ArrayLike, *,
                   method: str = "progressive", time_limit_s: float | None = None,
                   per_neuron_s: float | None = None, backend: str = "highs",
                   mip_backend: str = "scip", levels: Sequence[str] = ("lp", "mip"),
                   base: Bounds | None = None, threads: int = 1,
                   output_constraint: OutputConstraint | tuple[npt.ArrayLike, npt.ArrayLike] | None = None
                   ) -> Bounds:
    """Sound bounds of every node over the input box `[lower, upper]`.

    Parameters
    ----------
    net : Network
    lower, upper : array_like
        The input box (input shape or flat).
    method : {"interval", "symbolic", "alpha", "lp", "mip", "progressive"}
        Tightness and cost increase in this order ("alpha": CROWN with optimised slopes,
        `milpverify.bounds.alpha`; not comparable with "lp"). "lp": symbolic, then LP
        tightening of every unstable neuron. "mip": the "lp" result, then a second pass
        with a MILP for every neuron still unstable (bounds to optimality). "progressive"
        (default): symbolic, then the solver `levels` on neurons still unstable; the MILP
        only decides the sign of neurons not proven unstable by a concrete input (module
        docstring).
    time_limit_s : float, optional
        Overall budget (default: none). Each layer may use `2 / (layers left + 1)` of what
        is left; neurons not reached keep their (sound) bounds.
    per_neuron_s : float, optional
        Time limit of one solve (default: none for LPs and "mip", `PROGRESSIVE_MIP_NEURON_S`
        for progressive MILPs); a timed-out solve keeps its proven bound.
    backend : str
        Solver of the LPs. "highs" (default) gives row duals, so LP bounds are rigorous
        (`safe_dual_bound`); other backends fall back to a widened dual bound.
    mip_backend : str
        Solver of the MILPs ("scip" default; HiGHS 1.15 sometimes ends a per-neuron MILP
        with "Solve error", which then leaves that bound unchanged).
    levels : sequence of {"lp", "mip"}
        Solver levels of "progressive", cheapest first.
    base : Bounds, optional
        Sound bounds over the same box (or a larger one) to start from: every node is
        intersected with them, so the result is inside `base` (e.g. "mip" from an "lp"
        result, or bounds of a larger box).

    threads : int
        Neurons of a layer solved at once, at every level (default 1): each thread takes
        every `threads`-th neuron, with its own solver sessions. highspy and pyscipopt's
        ``optimizeNogil`` release the GIL while they solve.
    output_constraint : OutputConstraint or (A, b), optional
        Bound only the inputs of the box whose outputs ``y`` satisfy ``A y <= b`` (A of
        shape (k, outputs)), e.g. one disjunct of an unsafe set: every solve (a solver
        method is required) runs on the whole network with these rows added, so the
        bounds hold for those inputs only. If they cross (some lower > upper, or a symbolic
        pass disjoint from them) no input of the box satisfies the rows:
        ``details["empty"]`` is True and the bounds are returned as they were when that
        was found. An infeasible LP is solved again by dual simplex for HiGHS's dual ray,
        which flags the region empty once `DualBounder.proves_empty` confirms it
        rigorously (backend "scip": no ray, an infeasible LP only gives no bound). Solver
        points are not used as evidence (they need not satisfy the rows).

    Returns
    -------
    Bounds
        `details` has `"levels"` (per level: neurons, solves, stabilized,
        skipped_proven_unstable, time_s), `"proven_unstable"` (ReLUs some inputs drove
        both below and above zero: a floor for any method), `"symbolic_s"`, `"solves"` and
        `"timed_out"` (some neuron was not reached within `time_limit_s`); with
        `output_constraint` also `"empty"`.

    Raises
    ------
    InvalidInputError
        Unknown `method` or level, non-positive limits, `threads` < 1, a bad box, or a
        bad `output_constraint` (or one with a method that uses no solver).
    UnboundedError
        If the box gives non-finite bounds.

    Example
    -------
    >>> b = compute_bounds(net, np.clip(x - 0.1, 0, 1), np.clip(x + 0.1, 0, 1))
    >>> b.unstable, b.details["levels"]["lp"]["stabilized"]
    """
    if method not in METHODS:
        raise InvalidInputError(f"`method` must be one of {', '.join(METHODS)}; got {method!r}.")
    for name, value in (("time_limit_s", time_limit_s), ("per_neuron_s", per_neuron_s)):
        if value is not None and not value > 0:
            raise InvalidInputError(f"`{name}` must be > 0 or None; got {value!r}.")
    if not isinstance(threads, (int, np.integer)) or threads < 1:
        raise InvalidInputError(f"`threads` must be an integer >= 1; got {threads!r}.")
    bad = [lv for lv in levels if lv not in LEVELS]
    if bad or not len(levels):
        raise InvalidInputError(
            f"`levels` must be a non-empty sequence of {', '.join(map(repr, LEVELS))}; "
            f"got {list(levels)!r}.")
    constraint = None
    if output_constraint is not None:
        if method not in ("lp", "mip", "progressive"):
            raise InvalidInputError(f"`output_constraint` needs a solver method (lp, mip, "
                                    f"progressive); got method {method!r}.")
        constraint = OutputConstraint.of(output_constraint, net.num_classes)
    start = time.perf_counter()
    lo, hi = check_box(net, lower, upper)
    if method == "interval":
        first = _intersect(net, interval_bounds(net, lo, hi), base)
    elif method == "alpha":
        first = alpha_bounds(net, lo, hi, base=base, time_limit_s=time_limit_s)
    else:
        first = symbolic_bounds(net, lo, hi, base=base)
    if method in ("interval", "symbolic", "alpha"):
        return Bounds(first.pre, first.relu_cases, method, time.perf_counter() - start,
                      dict(first.details))
    chosen = {"lp": ("lp",), "mip": ("lp", "mip"), "progressive": tuple(levels)}[method]
    evidence = _Evidence(net)
    if method == "progressive" and constraint is None:
        evidence.add(_box_samples(lo, hi, EVIDENCE_SAMPLES))
    state = _State(net, (lo, hi), _flat(first), start + (np.inf if time_limit_s is None
                                                          else time_limit_s),
                   per_neuron_s, backend, mip_backend, evidence,
                   {lv: _LevelStats() for lv in chosen},
                   symbolic_s=first.time_s, threads=threads, constraint=constraint)
    if method == "mip":
        # Two passes, so that the result is inside what "lp" returns: every LP first, then
        # the MILPs starting from those bounds (bounds only ever shrink).
        _tighten(state, ("lp",), decide_only=False)
        if not state.empty:
            _tighten(state, ("mip",), decide_only=False)
    else:
        _tighten(state, chosen, decide_only=method == "progressive")
    out = state.bounds(method)
    proven = sum(int(evidence.unstable(net.op(r).inputs[0], net.op(r).size).sum())
                 for r in net.relu_nodes) if evidence.points else 0
    details: dict[str, object] = {
        "levels": {lv: s.as_dict() for lv, s in state.stats.items()},
        "solves": sum(s.solves for s in state.stats.values()),
        "symbolic_s": round(state.symbolic_s, 6), "proven_unstable": proven,
        "timed_out": state.cut_short}
    if constraint is not None:
        details["empty"] = state.empty
    return Bounds(out.pre, out.relu_cases, method, time.perf_counter() - start, details)


bounds = compute_bounds
"""Alias exported as `milpverify.bounds` (issue 3's public entry point)."""
