"""Decide one VNN-LIB property in stages.

The pipeline (spec layer -> symbolic bounds -> falsifier -> input splitting on networks
with few inputs -> optimised-slope bounds -> falsifier -> feasibility MILP -> bound tightening -> optimised
slopes on the tightened bounds -> feasibility MILP -> counterexample re-check; the
falsifier also starts from the vertices where the bounds' relaxation of each spec row is
smallest).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from milpverify.bounds import alpha_bounds
from milpverify.bounds.box_bounds import as_chain
from milpverify.bounds.relu_split import refute_disjuncts, root_bounds
from milpverify.bounds.tighten import compute_bounds
from milpverify.core.decide import counted_solve, decide_loop
from milpverify.core.query import SOLVER_SLACK, WITNESS_MARGIN
from milpverify.core.results import Verdict
from milpverify.core.spec_bounds import SPEC_NODE, with_output_rows
from milpverify.core.witness import WitnessCheck
from milpverify.encode.ideal import relu_cut_separators
from milpverify.encode.milp import NetworkEncoding, Term, encode_network
from milpverify.encode.model import MilpModel
from milpverify.encode.objective import add_unsafe_set, build_unsafe_problem
from milpverify.errors import InvalidInputError
from milpverify.ir.constraints import OutputConstraint
from milpverify.ir.network import Network
from milpverify.ir.ops import FloatArray
from milpverify.solve import get_backend
from milpverify.solve.base import SolveOptions, SolveResult, SolveStatus
from milpverify.vnn.check import check_counterexample, property_rows
from milpverify.vnn.falsify import FalsifierOptions, _attack, falsify
from milpverify.vnn.input_split import split_search
from milpverify.vnn.options import VnnlibOptions
from milpverify.vnn.spec import VnnlibProperty


def spec_network(net: Network, a: FloatArray, b: FloatArray) -> Network:
    """`net` with one more node, `SPEC_NODE`, computing ``s = A y - b`` (y the outputs;
    `core.spec_bounds.with_output_rows`). A row is satisfied (``A_r y <= b_r``) exactly
    when ``s_r <= 0``; bounding ``s`` through the whole network keeps the correlation
    between the outputs that intervals on ``A y`` would lose."""
    note = f"VNN-LIB spec layer: {np.atleast_2d(a).shape[0]} output rows A y - b"
    return with_output_rows(net, a, -np.asarray(b, dtype=np.float64), notes=(note,))


# ---------------------------------------------------------------------------- one property
@dataclass
class _PropertyOutcome:
    result: str                                # sat / unsat / timeout / unknown / error
    check: WitnessCheck | None = None
    decided_by: str = ""
    message: str = ""


def possible_disjuncts(bounds_lower: FloatArray, groups: list[npt.NDArray[np.int64]],
              alive: list[int]) -> list[int]:
    """Disjuncts not refuted by the bounds: every row can still reach ``s_r <= 0``."""
    return [d for d in alive if np.all(bounds_lower[groups[d]] <= 0.0)]


def _nearest_refuted_first(bounds: Any, groups: list[npt.NDArray[np.int64]],
                           alive: list[int]) -> list[int]:
    """`alive` ordered by how close the bounds come to refuting each disjunct: the largest
    ``max_r lower(s_r)`` (a disjunct falls when one of its rows is positive) first."""
    lower = bounds.flat(SPEC_NODE)[0]
    return sorted(alive, key=lambda d: -float(np.max(lower[groups[d]])))


def milp_solvers(backend: str) -> tuple[str, ...]:
    """The solvers named by `backend`: one name, or several joined by ``+`` (e.g.
    ``"scip+highs"``), each checked by `get_backend`."""
    solvers = tuple(part.strip().lower() for part in str(backend).split("+"))
    if not all(solvers):
        raise InvalidInputError(f"backend {backend!r}: give one solver name or several joined "
                                "by '+', e.g. 'scip+highs'")
    for name in solvers:
        get_backend(name)
    return solvers


def _solve_disjuncts(aug: Network, bounds: Any, prop: VnnlibProperty,
                     groups: list[npt.NDArray[np.int64]], alive: list[int], net: Network,
                     deadline: float, backend: str, opts: VnnlibOptions,
                     timings: dict[str, float], stats: dict[str, Any], split: bool = False
                     ) -> tuple[_PropertyOutcome, list[int]]:
    """Feasibility MILP(s) over the spec outputs; returns the outcome and the disjuncts
    still open (those not proven impossible).

    With `split`, one MILP per disjunct in `_nearest_refuted_first` order, else one MILP
    for all. ``max(opts.threads, solvers)`` workers share them (`milp_solvers`; with
    several workers each solver runs one thread): worker k runs solver ``k % solvers``
    and starts the next MILP nobody has started, even workers from the front of the
    order and odd ones from the back, so that with two the hardest MILP gets a solver at
    once. With nothing left to start, a worker joins a MILP only other solvers are
    running: a race, the first proof cancels the rest. A counterexample cancels
    everything.
    """
    solvers = milp_solvers(backend)
    n_rows = aug.num_classes
    batches = ([[d] for d in _nearest_refuted_first(bounds, groups, alive)] if split
               else [list(alive)])
    workers = max(opts.threads, len(solvers))
    solve_opts = replace(opts, threads=1) if workers > 1 else opts
    lock = threading.Lock()
    running: list[set[str]] = [set() for _ in batches]
    tried: list[set[str]] = [set() for _ in batches]
    cancels = [threading.Event() for _ in batches]
    decided: dict[int, _PropertyOutcome] = {}
    undecided: dict[int, _PropertyOutcome] = {}
    found_sat = threading.Event()

    def pick(solver: str, backwards: bool) -> int | None:
        order = range(len(batches) - 1, -1, -1) if backwards else range(len(batches))
        open_ = [i for i in order if i not in decided and solver not in running[i] | tried[i]]
        free = [i for i in open_ if not running[i]]
        return (free or open_ or [None])[0]

    def work(k: int) -> None:
        solver = solvers[k % len(solvers)]
        while True:
            with lock:
                if found_sat.is_set() or time.perf_counter() >= deadline:
                    return
                i = pick(solver, backwards=k % 2 == 1)
                if i is None:
                    return
                running[i].add(solver)
            own_timings: dict[str, float] = {}
            own_stats: dict[str, Any] = {}
            outcome = _solve_batch(aug, bounds, prop, groups, batches[i], n_rows, net,
                                   deadline, solver, solve_opts, own_timings, own_stats,
                                   cancels[i])
            with lock:
                running[i].discard(solver)
                tried[i].add(solver)
                for key, value in own_timings.items():
                    timings[key] = timings.get(key, 0.0) + value
                stats["nodes"] = stats.get("nodes", 0) + own_stats.get("nodes", 0)
                stats["binaries"] = max(stats.get("binaries", 0), own_stats.get("binaries", 0))
                if i in decided:
                    continue  # another solver proved it first (this one was cancelled)
                if outcome.result in ("sat", "unsat"):
                    decided[i] = outcome
                    cancels[i].set()
                    if outcome.result == "sat":
                        found_sat.set()
                        for event in cancels:
                            event.set()
                else:
                    undecided[i] = outcome

    if workers > 1:
        with ThreadPoolExecutor(workers, thread_name_prefix="milp") as pool:
            list(pool.map(work, range(workers)))
    else:
        work(0)
    for i, outcome in decided.items():
        if outcome.result == "sat":
            return outcome, batches[i]
    still_open = [d for i, batch in enumerate(batches) if i not in decided for d in batch]
    if not still_open:
        return _PropertyOutcome("unsat", decided_by="milp"), []
    left = [undecided.get(i, _PropertyOutcome("timeout", message="time limit reached"))
            for i in range(len(batches)) if i not in decided]
    for word in ("error", "timeout", "unknown"):
        hit = [o for o in left if o.result == word]
        if hit:
            message = "; ".join(dict.fromkeys(o.message for o in hit))
            return _PropertyOutcome(word, message=message), still_open
    return left[0], still_open  # unreachable: outcomes are the words above


def _selection(groups: list[npt.NDArray[np.int64]], batch: list[int], n_rows: int,
               rhs: float) -> list[OutputConstraint]:
    out = []
    for d in batch:
        sel = np.zeros((len(groups[d]), n_rows))
        sel[np.arange(len(groups[d])), groups[d]] = 1.0
        out.append(OutputConstraint(sel, np.full(len(groups[d]), rhs), str(d)))
    return out


def build_unsafe_milp(aug: Network, bounds: Any, prop: VnnlibProperty,
                groups: list[npt.NDArray[np.int64]], batch: list[int], n_rows: int, rhs: float,
                objective: bool, ideal_cuts: bool = False
                ) -> tuple[Any, npt.NDArray[np.int64], NetworkEncoding]:
    """The unsafe-set MILP over the spec outputs ``s``: ``OR_d AND_{r in d} s_r <= rhs``
    (`_unsafe_model`), carrying the ReLU cut separators with `ideal_cuts`; its input
    variables and the network's encoding (whose `definitions` let `counted_solve`
    substitute the stable neurons out)."""
    model, input_vars, encoding = _unsafe_model(aug, bounds, prop, groups, batch, n_rows, rhs,
                                                objective)
    if ideal_cuts:
        for separator in relu_cut_separators(aug, bounds, encoding):
            model.add_separator(separator)
    return model, input_vars, encoding


def _unsafe_model(aug: Network, bounds: Any, prop: VnnlibProperty,
                  groups: list[npt.NDArray[np.int64]], batch: list[int], n_rows: int,
                  rhs: float, objective: bool
                  ) -> tuple[MilpModel, npt.NDArray[np.int64], NetworkEncoding]:
    """The unsafe-set MILP, its input variables and the network's encoding.

    With `objective`: a variable ``t in [t_lo, rhs]``, ``u = s - t`` and the disjunction
    ``OR_d AND_r u_r <= 0``, minimising t. ``t_lo = min_d max_r lower(s_r)`` is a valid
    lower bound, and ``t <= rhs`` keeps the feasible inputs exactly those of the
    feasibility form.
    """
    if not objective:
        problem = build_unsafe_problem(aug, None, bounds, prop.input_lower, prop.input_upper,
                                       _selection(groups, batch, n_rows, rhs),
                                       with_distance=False)
        return problem.model, problem.input_vars, problem.encoding
    model = MilpModel()
    xv = model.add_vars(aug.input_size, prop.input_lower, prop.input_upper, name="input")
    used = np.zeros(n_rows, dtype=bool)
    for d in batch:
        used[groups[d]] = True
    enc = encode_network(aug, bounds, model, Term.of_vars(xv), outputs=used)
    s_lo, s_hi = bounds.flat(SPEC_NODE)
    t_lo = min(float(np.max(s_lo[groups[d]])) for d in batch)
    t_lo = min(t_lo, rhs)
    t = int(model.add_vars(1, t_lo, rhs, name="unsafe.t")[0])
    rows = np.flatnonzero(used)
    u = model.add_vars(len(rows), s_lo[rows] - rhs, s_hi[rows] - t_lo, name="unsafe.u")
    term = enc.terms[SPEC_NODE]
    for k, r in enumerate(rows):  # u_k - s_r + t = 0 (s_r constant: u_k + t = s_r)
        if term.var[r] >= 0:
            model.add_rows(np.zeros(3, dtype=np.int64), np.array([u[k], term.var[r], t]),
                           np.array([1.0, -1.0, 1.0]), 1, 0.0, 0.0, name=f"unsafe.u[{r}]")
        else:
            model.add_rows(np.zeros(2, dtype=np.int64), np.array([u[k], t]),
                           np.array([1.0, 1.0]), 1, term.const[r], term.const[r],
                           name=f"unsafe.u[{r}]")
    position = {int(r): k for k, r in enumerate(rows)}
    u_lo, u_hi = s_lo[rows] - rhs, s_hi[rows] - t_lo
    disjuncts = []
    for d in batch:
        sel = np.zeros((len(groups[d]), len(rows)))
        sel[np.arange(len(groups[d])), [position[int(r)] for r in groups[d]]] = 1.0
        disjuncts.append(OutputConstraint(sel, np.zeros(len(groups[d])), str(d)))
    add_unsafe_set(model, Term.of_vars(u), disjuncts, u_lo, u_hi)
    model.set_objective(np.array([t]), np.array([1.0]))
    return model, xv, enc


def _milp_params(backend: str, opts: VnnlibOptions) -> dict[str, object]:
    """Solver parameters of the decision MILPs: `root_cut_rounds` (SCIP), then
    ``opts.solver_params``."""
    params: dict[str, object] = {}
    if backend == "scip" and opts.root_cut_rounds is not None:
        params["separating/maxroundsroot"] = int(opts.root_cut_rounds)
    return {**params, **opts.solver_params}


def _solve_batch(aug: Network, bounds: Any, prop: VnnlibProperty,
                 groups: list[npt.NDArray[np.int64]], batch: list[int], n_rows: int,
                 net: Network, deadline: float, backend: str, opts: VnnlibOptions,
                 timings: dict[str, float], stats: dict[str, Any],
                 cancel: threading.Event | None = None) -> _PropertyOutcome:
    solver = get_backend(backend)
    if len(batch) == 1 and opts.disjunct_tighten_fraction > 0:
        bounds = _disjunct_bounds(aug, bounds, prop, _selection(groups, batch, n_rows,
                                                                SOLVER_SLACK)[0], deadline,
                                  opts, timings)
        if bounds is None:
            return _PropertyOutcome("unsat", decided_by="bounds")
    # The spec rows are s <= 0 with s = A y - b: `decide_loop`'s relaxed solve puts them at
    # s <= SOLVER_SLACK (infeasible proves unsat although SCIP accepts ~1e-6 violations),
    # its strict one at s <= -WITNESS_MARGIN (a point that survives float32 rounding and
    # onnxruntime).
    def solve(attempt: int, row_margin: float
              ) -> tuple[SolveResult | None, WitnessCheck | None, str]:
        t0 = time.perf_counter()
        model, input_vars, encoding = build_unsafe_milp(aug, bounds, prop, groups, batch,
                                                        n_rows, -row_margin,
                                                        opts.milp_objective,
                                                        opts.ideal_cuts and backend == "scip")
        timings["build_s"] = timings.get("build_s", 0.0) + time.perf_counter() - t0
        stats["binaries"] = max(stats.get("binaries", 0), int(model.n_integer))
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            return None, None, "time limit reached before the solve"
        options = SolveOptions(time_limit_s=remaining, threads=opts.threads,
                               stop_at_first_feasible=True, cancel=cancel, verbose=opts.verbose,
                               solver_params=_milp_params(backend, opts))
        result = counted_solve(solver, model, options, timings, stats, encoding.definitions)
        if result.x is None or result.status == SolveStatus.ERROR:
            return result, None, ""
        point = result.x[input_vars]
        check = check_counterexample(net, prop, point)
        if check.verified:
            return result, check, ""
        # A few falsifier steps from the solver point usually cross the boundary.
        polish = FalsifierOptions(time_limit_s=min(2.0, max(deadline - time.perf_counter(), 0)),
                                  restarts=1, steps=20, step_start=1e-3, step_end=1e-5)
        found = falsify(net, prop, options=polish, disjuncts=batch, starts=point[None])
        return result, found, ("" if found is not None else
                               f"the solver's points failed the re-check: {check.message}")

    decision = decide_loop(solve, 0.0)
    if decision.verdict == Verdict.ROBUST:
        return _PropertyOutcome("unsat", decided_by="milp")
    if decision.verdict == Verdict.NOT_ROBUST:
        return _PropertyOutcome("sat", decision.witness, "milp")
    word = {"time": "timeout", "error": "error"}.get(decision.stopped, "unknown")
    return _PropertyOutcome(word, message=decision.message)


def _disjunct_bounds(aug: Network, bounds: Any, prop: VnnlibProperty, disjunct: OutputConstraint,
                     deadline: float, opts: VnnlibOptions, timings: dict[str, float]) -> Any:
    """`bounds` LP-tightened over the inputs whose spec outputs satisfy `disjunct` (at
    ``SOLVER_SLACK``, so valid for its MILP at either right-hand side), for
    `disjunct_tighten_fraction` of the time left; None if they prove no input does."""
    budget = opts.disjunct_tighten_fraction * (deadline - time.perf_counter())
    if budget <= 0:
        return bounds
    t0 = time.perf_counter()
    out = compute_bounds(aug, prop.input_lower, prop.input_upper, method="lp", base=bounds,
                         time_limit_s=budget, threads=opts.threads,
                         output_constraint=disjunct)
    timings["disjunct_tighten_s"] = (timings.get("disjunct_tighten_s", 0.0)
                                     + time.perf_counter() - t0)
    lower = out.flat(SPEC_NODE)[0]  # A selects rows (0/1): A @ lower bounds A s below
    if out.details["empty"] or np.any(disjunct.A @ lower > disjunct.b):
        return None
    return out


def _optimised_slopes(aug: Network, prop: VnnlibProperty, bounds: Any, deadline: float,
                      opts: VnnlibOptions, timings: dict[str, float]) -> Any:
    """`alpha_bounds` on top of `bounds` (inside them) within `alpha_fraction` of the time
    left, its seconds added to ``timings["alpha_s"]``."""
    t0 = time.perf_counter()
    out = alpha_bounds(aug, prop.input_lower, prop.input_upper, base=bounds,
                       time_limit_s=max(opts.alpha_fraction * (deadline - t0), 1e-3),
                       threads=opts.threads)
    timings["alpha_s"] = timings.get("alpha_s", 0.0) + time.perf_counter() - t0
    return out


def _input_split(net: Network, aug: Network, prop: VnnlibProperty, a: FloatArray, b: FloatArray,
                 groups: list[npt.NDArray[np.int64]], alive: list[int], deadline: float,
                 opts: VnnlibOptions, timings: dict[str, float], stats: dict[str, Any]
                 ) -> _PropertyOutcome | None:
    """The input-splitting stage (`split_search`) when it applies (`VnnlibOptions.input_split`:
    few inputs, `aug` a chain), for `input_split_fraction` of the time left; its sat / unsat,
    or None to go on with the later stages."""
    if not opts.input_split or net.input_size > opts.input_split_max_inputs:
        return None
    chain = as_chain(aug)
    if chain is None:
        return None
    t0 = time.perf_counter()
    until = t0 + opts.input_split_fraction * (deadline - t0)
    found = split_search(net, chain, prop, a, b, groups, alive, until, opts.splitter)
    timings["input_split_s"] = timings.get("input_split_s", 0.0) + time.perf_counter() - t0
    for key, value in found.stats.items():
        if key in ("split_boxes", "split_batches", "split_stuck", "split_open"):
            stats[key] = stats.get(key, 0) + value
    if found.result in ("sat", "unsat"):
        return _PropertyOutcome(found.result, found.check, "input_split")
    if opts.input_split_fraction >= 1:
        return _PropertyOutcome(found.result, message=found.message)
    return None


def _relu_split(aug: Network, bounds: Any, groups: list[npt.NDArray[np.int64]], alive: list[int],
                deadline: float, opts: VnnlibOptions, timings: dict[str, float],
                stats: dict[str, Any]) -> list[int]:
    """The ReLU-splitting stage (`refute_disjuncts`) on a chain `aug` for
    `relu_split_fraction` of the time left, the disjunct the bounds come nearest to refuting
    first, each with an equal share of what is left of the stage's time; the disjuncts it
    did not refute."""
    chain = as_chain(aug)
    if chain is None:
        return alive
    t0 = time.perf_counter()
    until = t0 + opts.relu_split_fraction * (deadline - t0)
    root = root_bounds(aug, bounds)
    s_lo = bounds.flat(SPEC_NODE)[0]
    queue = sorted(alive, key=lambda d: -float(np.max(s_lo[groups[d]])))
    masks = [np.isin(np.arange(len(s_lo)), groups[d]) for d in queue]
    left, found = refute_disjuncts(chain, root, masks, until, opts.relu_splitter, start=s_lo)
    for key in ("relu_domains", "relu_batches"):
        stats[key] = stats.get(key, 0) + found[key]
    timings["relu_split_s"] = timings.get("relu_split_s", 0.0) + time.perf_counter() - t0
    return sorted(queue[i] for i in left)


def _decide_property(net: Network, prop: VnnlibProperty, deadline: float, backend: str,
                     opts: VnnlibOptions, attack_s: float, timings: dict[str, float],
                     stats: dict[str, Any]) -> _PropertyOutcome:
    a, b, groups = property_rows(prop)
    stats["disjuncts"] = stats.get("disjuncts", 0) + len(groups)
    if any(len(g) == 0 for g in groups):  # a disjunct without rows: the whole box is unsafe
        check = check_counterexample(net, prop, 0.5 * (prop.input_lower + prop.input_upper))
        if check.verified:
            return _PropertyOutcome("sat", check, "bounds")
        return _PropertyOutcome("unknown", message=check.message)
    aug = spec_network(net, a, b)
    t0 = time.perf_counter()
    bounds = compute_bounds(aug, prop.input_lower, prop.input_upper, method="symbolic")
    timings["bounds_s"] = timings.get("bounds_s", 0.0) + time.perf_counter() - t0
    stats["unstable_symbolic"] = stats.get("unstable_symbolic", 0) + bounds.unstable
    alive = possible_disjuncts(bounds.flat(SPEC_NODE)[0], groups, list(range(len(groups))))
    if not alive:
        return _PropertyOutcome("unsat", decided_by="bounds")
    s_upper = bounds.flat(SPEC_NODE)[1]
    for d in alive:  # every row of d holds on the whole box: any point is a counterexample
        if np.all(s_upper[groups[d]] <= -WITNESS_MARGIN):
            check = check_counterexample(net, prop, 0.5 * (prop.input_lower + prop.input_upper))
            if check.verified:
                return _PropertyOutcome("sat", check, "bounds")
    if opts.input_split and net.input_size <= opts.input_split_max_inputs and as_chain(aug):
        attack_s = min(attack_s, opts.input_split_attack_s)  # the split search attacks too
    if opts.attack and attack_s > 0:
        found = _attack(net, prop, bounds, groups, alive, opts.falsifier, attack_s, deadline,
                        timings)
        if found is not None:
            return _PropertyOutcome("sat", found, "attack")
    split = _input_split(net, aug, prop, a, b, groups, alive, deadline, opts, timings, stats)
    if split is not None:
        return split
    # Optimised slopes after the (cheap) falsifier: what it answers never pays for them.
    if opts.alpha and bounds.unstable:
        bounds = _optimised_slopes(aug, prop, bounds, deadline, opts, timings)
        stats["unstable_alpha"] = stats.get("unstable_alpha", 0) + bounds.unstable
        alive = possible_disjuncts(bounds.flat(SPEC_NODE)[0], groups, alive)
        if not alive:
            return _PropertyOutcome("unsat", decided_by="bounds")
        if opts.attack and attack_s > 0:  # again from where the optimised bounds point
            found = _attack(net, prop, bounds, groups, alive,
                            replace(opts.falsifier, restarts=1), attack_s, deadline, timings)
            if found is not None:
                return _PropertyOutcome("sat", found, "attack")
    remaining = deadline - time.perf_counter()
    if remaining <= 0:
        return _PropertyOutcome("timeout", message="time limit reached after the bounds")
    if opts.first_milp_fraction > 0 and opts.tighten:
        outcome, alive = _solve_disjuncts(
            aug, bounds, prop, groups, alive, net,
            time.perf_counter() + opts.first_milp_fraction * remaining, backend, opts,
            timings, stats)
        if outcome.result in ("sat", "unsat", "error") or not alive:
            return outcome
        remaining = deadline - time.perf_counter()
    if opts.tighten and bounds.unstable >= opts.tighten_min_unstable and remaining > 0:
        t0 = time.perf_counter()
        bounds = compute_bounds(aug, prop.input_lower, prop.input_upper, method="progressive",
                                time_limit_s=max(remaining * opts.tighten_fraction, 1e-3),
                                base=bounds, threads=opts.threads)
        timings["tighten_s"] = timings.get("tighten_s", 0.0) + time.perf_counter() - t0
        if opts.alpha and opts.alpha_after_tighten and bounds.unstable:
            bounds = _optimised_slopes(aug, prop, bounds, deadline, opts, timings)
        stats["unstable_tightened"] = stats.get("unstable_tightened", 0) + bounds.unstable
        alive = possible_disjuncts(bounds.flat(SPEC_NODE)[0], groups, alive)
        if not alive:
            return _PropertyOutcome("unsat", decided_by="bounds")
    if opts.relu_split_fraction > 0 and len(alive) and deadline > time.perf_counter():
        alive = _relu_split(aug, bounds, groups, alive, deadline, opts, timings, stats)
        if not alive:
            return _PropertyOutcome("unsat", decided_by="relu_split")
    stats["disjuncts_left"] = stats.get("disjuncts_left", 0) + len(alive)
    if deadline - time.perf_counter() <= 0:
        return _PropertyOutcome("timeout", message="time limit reached before the MILP")
    outcome, _ = _solve_disjuncts(aug, bounds, prop, groups, alive, net, deadline, backend,
                                  opts, timings, stats, split=opts.split_disjuncts)
    return outcome
