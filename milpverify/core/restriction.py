"""The LP convex restriction of Bastani et al. (NIPS 2016, section 4): a fast upper bound on rho.

Fix every ReLU to its phase at x (pre(x) > 0: post = pre and pre >= 0; otherwise post = 0
and pre <= 0; a LeakyReLU likewise, with post = slope * pre in the second phase) and every
MaxPool to its arg-max at x (x_a >= x_i over the window). In that activation region the network is affine, `f(x') = A x' + c`, and

    minimise t  s.t.  |x'_i - x_i| <= t,  x' in domain,
                      (A_j - A_label) x' + (c_j - c_label) >= margin,
                      region rows: s_n (a_n x' + b_n) >= 0 for every ReLU neuron n,
                      x'_a - x'_i >= 0 (as affine rows) for every MaxPool window

is an LP whose optimum rho_hat >= rho comes with a point that is adversarial (a
*restriction*: a subset of the adversarial region, hence an upper bound). "Iterative
constraint solving" (`lazy=True`) starts without region rows and adds the rows the
current LP point violates until none is violated; `lazy=False` adds them all at once.

Rows are obtained by back-substituting through the IR with the phases fixed
(`core.region.RESTRICTION_RULES`), so only the rows needed are ever computed; rows of single neurons
stay sparse (scipy CSR) through convolutions, whose receptive fields they cover.

With HiGHS (L-inf and L1) the LP lives in one model per input size and thread
(`RestrictionLP`): the distance rows are built once, a new centre changes their bounds, and
each label's LP only swaps the misclassification and region rows. Under L-inf the first
round (no region rows) is solved in closed form (`linf_nearest`), whose basis warm-starts
HiGHS; later rounds add the most violated rows (`ROW_BUDGET`) and re-solve from the last
basis. Other backends and the L2 program build each round afresh.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from milpverify.core.region import (
    Region,
    _dense,
    affine_rows,
    all_rows,
    region_of,
    region_rows,
    violated_rows,
    violations,
)
from milpverify.core.results import RhoResult, RhoStatus
from milpverify.core.witness import repair_witness
from milpverify.encode.model import MilpModel
from milpverify.errors import InvalidInputError
from milpverify.ir.network import Network
from milpverify.ir.ops import FloatArray, IntArray
from milpverify.solve import get_backend
from milpverify.solve.base import SolveOptions, SolveStatus

#: Norms of the restriction: an LP for L-inf/L1; for L2 a convex quadratic program (the
#: squared distance under a `MilpModel.add_sum_squares` row), which SCIP solves.
RESTRICTION_NORMS = ("linf", "l1", "l2")


# ------------------------------------------------------------------ the LP
def _base_lp(x: FloatArray, domain: tuple[float, float],
             objective_rows: tuple[FloatArray, FloatArray], margin: float, norm: str
             ) -> tuple[MilpModel, IntArray, IntArray]:
    """The LP without region rows: box, misclassification row, distance; (model, x vars,
    distance vars)."""
    n = len(x)
    model = MilpModel()
    xv = model.add_vars(n, domain[0], domain[1], name="input")
    a, c = objective_rows
    model.add_matrix_rows(a[None, :], xv, margin - c, np.inf, name="misclassified")
    k = np.arange(n)
    if norm == "linf":
        t = model.add_vars(1, 0.0, np.inf, name="distance")
        model.add_rows(np.r_[k, k], np.r_[xv, np.full(n, t[0])], np.r_[np.ones(n), -np.ones(n)],
                       n, -np.inf, x, name="distance/upper")
        model.add_rows(np.r_[k, k], np.r_[xv, np.full(n, t[0])], np.r_[np.ones(n), np.ones(n)],
                       n, x, np.inf, name="distance/lower")
        return model, xv, t
    if norm == "l2":
        # Offsets d = x' - x keep the constant x out of the quadratic row (see
        # `encode.objective._offsets`); the objective t is the squared distance.
        d = model.add_vars(n, domain[0] - x, domain[1] - x, name="distance.offset")
        model.add_rows(np.r_[k, k], np.r_[xv, d], np.r_[np.ones(n), -np.ones(n)], n, x, x,
                       name="distance/offset")
        t = model.add_vars(1, 0.0, np.inf, name="distance.squared")
        model.add_sum_squares(d, 0.0, int(t[0]))
        return model, xv, t
    p = model.add_vars(n, 0.0, np.inf, name="distance.plus")
    m = model.add_vars(n, 0.0, np.inf, name="distance.minus")
    model.add_rows(np.r_[k, k, k], np.r_[xv, p, m], np.r_[np.ones(n), -np.ones(n), np.ones(n)],
                   n, x, x, name="distance/split")
    return model, xv, np.r_[p, m]


def _solve_lp(x: FloatArray, domain: tuple[float, float], objective_rows: tuple[FloatArray, FloatArray],
              margin: float, region_a: list[FloatArray], region_c: list[FloatArray],
              norm: str, backend: str, deadline: float = math.inf
              ) -> tuple[SolveStatus, FloatArray | None, float]:
    model, xv, dist = _base_lp(x, domain, objective_rows, margin, norm)
    if region_a:
        model.add_matrix_rows(np.vstack(region_a), xv, -np.concatenate(region_c), np.inf,
                              name="region")
    model.set_objective(dist, np.ones(len(dist)))
    limit = None if math.isinf(deadline) else max(deadline - time.perf_counter(), 1e-3)
    result = get_backend(backend).solve(model, SolveOptions(time_limit_s=limit))
    point = None if result.x is None else result.x[xv]
    return result.status, point, math.inf if result.objective is None else result.objective


@dataclass
class _TargetRun:
    status: SolveStatus
    point: FloatArray | None
    rounds: int
    rows_added: int


# ------------------------------------------------------------------ the LP kept in HiGHS
#: HiGHS settings of the restriction's LPs. Each round re-solves from the last basis after a
#: few new rows; with dual steepest edge pricing (HiGHS's default) a re-solve first
#: recomputes the edge weights of the whole basis, which costs more than its few
#: iterations, while Devex weights start afresh for free. (Scaling stays on: without it the
#: ERAN convSmall LP of `tests/core/test_restriction.py` stops at points outside region rows
#: by more than their distance is worth.)
HIGHS_PARAMS: dict[str, Any] = {"simplex_dual_edge_weight_strategy": 1}


class RestrictionLP:
    """The restriction's LP for one input size and norm ("linf" or "l1"), kept in one HiGHS
    model and reused for every centre, label and region (one per thread, `reusable_lp`).

    The model holds the input variables, the distance variables and the distance rows (the
    centre is in their bounds). `start` sets the centre and the domain, drops the rows of the
    previous LP and adds the misclassification row; `add` appends region rows; `solve`
    re-solves from HiGHS's current basis, or from the basis given to `warm_start`.
    """

    def __init__(self, n: int, norm: str) -> None:
        if norm not in ("linf", "l1"):
            raise InvalidInputError(f"RestrictionLP is for 'linf' or 'l1'; got {norm!r}.")
        from milpverify.solve.highs import HighsSession

        self.n, self.norm = n, norm
        model = MilpModel()
        self.xv = model.add_vars(n, 0.0, 1.0, name="input")
        zero, k = np.zeros(n), np.arange(n)
        if norm == "linf":
            t = model.add_vars(1, 0.0, np.inf, name="distance")
            tt = np.full(n, t[0])
            model.add_rows(np.r_[k, k], np.r_[self.xv, tt], np.r_[np.ones(n), -np.ones(n)],
                           n, -np.inf, zero, name="distance/upper")
            model.add_rows(np.r_[k, k], np.r_[self.xv, tt], np.r_[np.ones(n), np.ones(n)],
                           n, zero, np.inf, name="distance/lower")
            self.dist = t
            # rows (upper, lower) of the centre: x'_i - t <= x_i and x'_i + t >= x_i
            self._centre_rows = (np.arange(n), np.arange(n, 2 * n))
        else:
            p = model.add_vars(n, 0.0, np.inf, name="distance.plus")
            m = model.add_vars(n, 0.0, np.inf, name="distance.minus")
            model.add_rows(np.r_[k, k, k], np.r_[self.xv, p, m],
                           np.r_[np.ones(n), -np.ones(n), np.ones(n)], n, zero, zero,
                           name="distance/split")
            self.dist = np.r_[p, m]
            self._centre_rows = (np.arange(n),)
        self.base_rows = model.n_rows
        self.session = HighsSession(model)
        self._x: FloatArray | None = None
        self._domain: tuple[float, float] = (0.0, 1.0)
        self.rows = 0  # region rows of the current LP

    def start(self, x: FloatArray, domain: tuple[float, float], a: FloatArray,
              rhs: float) -> None:
        """A new LP: centre `x`, `domain`, misclassification row `a x' >= rhs`, no region rows."""
        s = self.session
        if self._x is None or not np.array_equal(self._x, x):
            if self.norm == "linf":
                up, lo = self._centre_rows
                s.set_row_bounds(up, -np.inf, x)
                s.set_row_bounds(lo, x, np.inf)
            else:
                s.set_row_bounds(self._centre_rows[0], x, x)
            self._x = np.array(x, dtype=np.float64)
        if self._domain != tuple(domain):
            s.set_bounds(self.xv, domain[0], domain[1])
            self._domain = (float(domain[0]), float(domain[1]))
        s.truncate_rows(self.base_rows)
        s.add_rows(self.xv, a[None, :], rhs, np.inf)
        self.rows = 0

    def add(self, a: Any, c: FloatArray) -> None:
        """Append region rows `a x' + c >= 0`."""
        self.session.add_rows(self.xv, a, -c, np.inf)
        self.rows += a.shape[0]

    def warm_start(self, col_status: IntArray, row_status: IntArray) -> bool:
        """Start the next solve from this basis of the LP without region rows (every region
        row added since is basic: the basis stays dual feasible); False if HiGHS rejects it."""
        from milpverify.solve.highs import BASIS_BASIC

        rows = np.r_[row_status, np.full(self.rows, BASIS_BASIC)]
        return self.session.set_basis(col_status, rows)

    def solve(self) -> tuple[SolveStatus, FloatArray | None]:
        """Re-solve from the current basis; where HiGHS ends without a verdict (numerical
        trouble, seen on nearly degenerate regions of ERAN convSmall), once more from scratch
        with HiGHS's defaults, as a freshly built LP would be solved."""
        cost = np.ones(len(self.dist))
        result = self.session.minimize(self.dist, cost, SolveOptions(solver_params=HIGHS_PARAMS))
        if result.status not in (SolveStatus.OPTIMAL, SolveStatus.INFEASIBLE):
            self.session.clear_basis()
            result = self.session.minimize(self.dist, cost, SolveOptions())
        return result.status, None if result.x is None else result.x[self.xv]

    def release(self) -> None:
        """Drop the LP's own rows (the model keeps only its distance rows)."""
        self.session.truncate_rows(self.base_rows)
        self.rows = 0

    def close(self) -> None:
        self.session.close()


#: Region rows the lazy LP adds in its first round at most (the most violated), doubling each
#: round; None adds every violated row at once.
ROW_BUDGET: int | None = 64


_REUSABLE = threading.local()


def reusable_lp(n: int, norm: str) -> RestrictionLP:
    """This thread's `RestrictionLP` for inputs of size `n` under `norm` (built on first use)."""
    cache = _REUSABLE.__dict__.setdefault("lps", {})
    lp = cache.get((n, norm))
    if lp is None:
        lp = cache[(n, norm)] = RestrictionLP(n, norm)
    return lp


def _forget_lp(n: int, norm: str) -> None:
    lp = _REUSABLE.__dict__.get("lps", {}).pop((n, norm), None)
    if lp is not None:
        lp.close()


def linf_nearest(a: FloatArray, rhs: float, x: FloatArray, domain: tuple[float, float]
                 ) -> tuple[FloatArray, IntArray, IntArray] | str:
    """The L-inf restriction's LP without region rows, solved in closed form.

    minimise t s.t. a x' >= rhs, |x' - x| <= t, x' in domain. The largest `a x'` within
    distance t is `a x + sum_i |a_i| min(t, cap_i)`, with `cap_i` how far coordinate i can
    move in the direction of `a_i` before the domain stops it: concave, piecewise linear and
    nondecreasing in t, so the smallest t is found on its sorted breakpoints.

    Returns "infeasible" (no point of the domain reaches `rhs`), "at_centre" (x itself does;
    t = 0 is degenerate: left to the LP solver), or `(point, column statuses, row statuses)`:
    an optimal vertex and its basis in `RestrictionLP`'s layout (columns x', t; rows
    distance/upper, distance/lower, misclassification), every coordinate with two basic
    variables among its column and its two distance rows, t basic.
    """
    from milpverify.solve.highs import BASIS_BASIC, BASIS_LOWER, BASIS_UPPER

    lo, hi = domain
    n = len(x)
    need = rhs - float(a @ x)
    if need <= 0:
        return "at_centre"
    live = np.flatnonzero(a)
    cap = np.where(a[live] > 0, hi - x[live], x[live] - lo)
    order = np.argsort(cap, kind="stable")
    caps, gain = cap[order], np.abs(a[live][order])
    suffix = np.cumsum(gain[::-1])[::-1]           # sum of gains from each breakpoint on
    done = np.cumsum(gain * np.where(np.isfinite(caps), caps, 0.0))
    rest = np.r_[suffix[1:], 0.0]
    reach = done + np.where(rest > 0, caps * rest, 0.0)  # a x' - a x at each breakpoint
    if not len(reach) or not reach[-1] >= need:
        return "infeasible"
    k = int(np.searchsorted(reach, need))
    before = done[k - 1] if k else 0.0
    t = (need - before) / suffix[k]
    t = float(np.clip(t, caps[k - 1] if k else 0.0, caps[k]))
    # columns: x' then t; rows: upper (x'_i - t <= x_i), lower (x'_i + t >= x_i), misclassified
    cols = np.full(n + 1, BASIS_BASIC)
    upper = np.full(n, BASIS_BASIC)
    lower = np.full(n, BASIS_BASIC)
    step = np.zeros(n)
    direction = np.zeros(n)
    direction[live] = np.sign(a[live])
    room = np.full(n, np.inf)
    room[live] = cap
    free = np.flatnonzero(a == 0)
    # a coordinate without gain: x' = x + t (or x - t, or the upper end) keeps two basics
    fits_up, fits_down = x[free] + t <= hi, x[free] - t >= lo
    direction[free] = np.where(fits_up, 1.0, np.where(fits_down, -1.0, 1.0))
    room[free] = np.where(fits_up | fits_down, np.inf, hi - x[free])
    clipped = room < t
    step = direction * np.where(clipped, room, t)
    point = x + step
    pos, neg = direction > 0, direction < 0
    upper[~clipped & pos] = BASIS_UPPER
    lower[~clipped & neg] = BASIS_LOWER
    cols[:n][clipped & pos] = BASIS_UPPER
    cols[:n][clipped & neg] = BASIS_LOWER
    point[clipped & pos] = hi
    point[clipped & neg] = lo
    rows = np.r_[upper, lower, BASIS_LOWER]
    return point, cols, rows


def _restrict_target(net: Network, region: Region, x: FloatArray, label: int, target: int,
                     margin: float, domain: tuple[float, float], lazy: bool, norm: str,
                     backend: str, max_rounds: int, deadline: float = math.inf) -> _TargetRun:
    g = np.zeros((1, net.num_classes))
    g[0, target], g[0, label] = 1.0, -1.0
    a, c = affine_rows(net, region, net.output, g)
    objective = (_dense(a)[0], float(c[0]))
    if backend == "highs" and norm in ("linf", "l1"):
        try:
            return _restrict_reused(net, region, x, objective, margin, domain, lazy, norm,
                                    max_rounds)
        except BaseException:
            _forget_lp(len(x), norm)  # its state is unknown: the next call builds afresh
            raise
    # Other solvers (and the L2 program): every round is built and solved afresh.
    region_a: list[Any] = []
    region_c: list[FloatArray] = []
    added = _Added(net)
    pending = [] if lazy else all_rows(net, region)
    rounds = 0
    while True:
        for name, idx in pending:
            fresh = added.take(name, idx)
            if len(fresh):
                ra, rc = region_rows(net, region, name, fresh)
                region_a.append(ra)
                region_c.append(rc)
        rounds += 1
        status, point, _ = _solve_lp(x, domain, objective, margin, region_a, region_c, norm,
                                     backend, deadline)
        if point is None or not lazy or rounds >= max_rounds or time.perf_counter() >= deadline:
            break
        pending = violated_rows(net, region, point)
        if not added.any_new(pending):
            break
    return _TargetRun(status, point, rounds, sum(r.shape[0] for r in region_a))


class _Added:
    """Which region rows (neurons of each ReLU / MaxPool node) an LP already holds."""

    def __init__(self, net: Network) -> None:
        self.net = net
        self.mask: dict[str, npt.NDArray[np.bool_]] = {}

    def take(self, name: str, idx: IntArray) -> IntArray:
        """The neurons of `idx` not added yet, now marked as added."""
        mask = self.mask.setdefault(name, np.zeros(self.net.op(name).size, dtype=bool))
        idx = np.asarray(idx, dtype=np.int64)
        fresh = np.unique(idx[~mask[idx]])
        mask[fresh] = True
        return fresh

    def any_new(self, pending: list[tuple[str, IntArray]]) -> bool:
        return any(name not in self.mask or not self.mask[name][idx].all()
                   for name, idx in pending)

    def worst(self, found: list[tuple[str, IntArray, FloatArray]], budget: float
              ) -> list[tuple[str, IntArray]]:
        """The violated rows not added yet, at most `budget` of them, the most violated first."""
        fresh = []
        for name, idx, amount in found:
            keep = ~self.mask[name][idx] if name in self.mask else np.ones(len(idx), bool)
            fresh.append((name, idx[keep], amount[keep]))
        total = sum(len(idx) for _, idx, _ in fresh)
        if total > budget:
            cut = np.sort(np.concatenate([amount for _, _, amount in fresh]))[-int(budget)]
            fresh = [(name, idx[amount >= cut], amount) for name, idx, amount in fresh]
        return [(name, idx) for name, idx, _ in fresh if len(idx)]


def _restrict_reused(net: Network, region: Region, x: FloatArray,
                     objective: tuple[FloatArray, float], margin: float,
                     domain: tuple[float, float], lazy: bool, norm: str, max_rounds: int
                     ) -> _TargetRun:
    """One label's restriction in this thread's `RestrictionLP` (HiGHS).

    Under L-inf the first LP (no region rows) is solved in closed form (`linf_nearest`); its
    basis warm-starts HiGHS once region rows are needed. Each later round appends rows the
    last point violates and re-solves from HiGHS's basis (dual simplex): the most violated
    ones first, at most `ROW_BUDGET` in the first round and twice as many each round after
    (the loop still ends only when the point violates no row it lacks).
    """
    lp = reusable_lp(len(x), norm)
    a, c = objective
    lp.start(x, domain, a, margin - c)
    added = _Added(net)
    pending = [] if lazy else all_rows(net, region)
    rounds, basis = 0, None
    budget = math.inf if ROW_BUDGET is None else ROW_BUDGET
    try:
        if norm == "linf":
            first = linf_nearest(a, margin - c, x, domain)
            if isinstance(first, str) and first == "infeasible":
                return _TargetRun(SolveStatus.INFEASIBLE, None, 1, 0)
            if not isinstance(first, str):
                point, *basis = first
                if lazy:  # the closed form is the first round
                    rounds = 1
                    pending = added.worst(violations(net, region, point), budget)
                    if not pending or rounds >= max_rounds:
                        return _TargetRun(SolveStatus.OPTIMAL, point, 1, 0)
        while True:
            for name, idx in pending:
                fresh = added.take(name, idx)
                if len(fresh):
                    lp.add(*region_rows(net, region, name, fresh))
            if basis is not None:
                lp.warm_start(*basis)
                basis = None
            rounds += 1
            status, point = lp.solve()
            if point is None or not lazy or rounds >= max_rounds:
                break
            budget *= 2
            pending = added.worst(violations(net, region, point), budget)
            if not pending:
                break
        return _TargetRun(status, point, rounds, lp.rows)
    finally:
        lp.release()


def lp_restriction(net: Network, x: npt.ArrayLike, *, target: str | int | list[int] = "all",
                   lazy: bool = True,
                   margin: float = 0.0, domain: tuple[float, float] = (0.0, 1.0),
                   norm: str = "linf", label: int | None = None, backend: str = "highs",
                   max_rounds: int = 50, region_point: npt.ArrayLike | None = None,
                   region: Region | None = None, time_limit_s: float | None = None
                   ) -> RhoResult:
    """Upper bound rho_hat >= rho from the LP convex restriction around x (Bastani et al. 4).

    Parameters
    ----------
    net : Network
    x : array
        One input inside `domain`.
    target : "all" | "second" | int | list of int
        "second": only the second most likely label (the paper's choice); "all": the
        minimum over every other label; an int or a list: those labels.
    lazy : bool
        Iterative constraint solving (True) or the full LP with every region row (False).
    margin : float
        Require `f_target >= f_label + margin`.
    norm : {"linf", "l1", "l2"}
        "l2" makes each round a convex quadratic program, always solved by SCIP.
    backend : str
        LP solver backend ("highs" default, "scip").
    region_point : array, optional
        Fix the phases at this point instead of at x (distances are still measured from x).
        Seeded with an attack's adversarial point, the LP finds the nearest point of that
        point's activation region: a local refinement of the attack.
    region : Region, optional
        The activation region itself (e.g. read off a MILP solution's binaries, which
        is unambiguous where a pre-activation is exactly 0).
    time_limit_s : float, optional
        Wall-clock budget: no label's LP and no round starts after it, and a solve that
        would run past it is stopped (an L2 program can take seconds). Default: none.

    Returns
    -------
    RhoResult
        status "upper_bound" with `upper` = rho_hat and a verified witness, or "not_found"
        (`upper = inf`) if no label is reachable inside the region. `lower` is 0.
        `stats`: rounds, region rows added, LPs solved.

    Example
    -------
    >>> lp_restriction(net, images[0], target="second").upper
    """
    start = time.perf_counter()
    batch = net.as_batch(x)
    if batch.shape[0] != 1:
        raise InvalidInputError(f"`x` must be one sample; got a batch of {batch.shape[0]}.")
    x0 = batch[0]
    if norm not in RESTRICTION_NORMS:
        raise InvalidInputError(f"`norm` must be one of {', '.join(map(repr, RESTRICTION_NORMS))}"
                                f"; got {norm!r}.")
    if norm == "l2":
        backend = "scip"  # a quadratic program: HiGHS' MIP/LP interface here is linear only
    if not (math.isfinite(margin) and margin >= 0):
        raise InvalidInputError(f"`margin` must be a finite number >= 0; got {margin}.")
    if time_limit_s is not None and not time_limit_s > 0:
        raise InvalidInputError(f"`time_limit_s` must be > 0 seconds (or None: no limit); "
                                f"got {time_limit_s}.")
    if np.any(x0 < domain[0]) or np.any(x0 > domain[1]):
        raise InvalidInputError(f"`x` lies outside the domain [{domain[0]:g}, {domain[1]:g}].")
    logits = net.forward(x0)[0]
    lab = int(np.argmax(logits)) if label is None else int(label)
    if region is None:
        anchor = x0 if region_point is None else net.as_batch(region_point)[0]
        region, _ = region_of(net, anchor)
    order = [j for j in np.argsort(-logits, kind="stable") if j != lab]
    if target == "all":
        targets = order
    elif target == "second":
        targets = order[:1]
    else:
        targets = [int(target)] if isinstance(target, (int, np.integer)) else list(target) \
            if isinstance(target, (list, tuple)) else []
        if not targets or any(not 0 <= int(t) < net.num_classes or int(t) == lab
                              for t in targets):
            raise InvalidInputError(f"`target` must be 'all', 'second', a label other than {lab} "
                                    f"or a list of such labels; got {target!r}.")
    best = None
    stats: dict[str, Any] = {"rounds": 0, "rows_added": 0, "lps": 0, "lazy": lazy}
    deadline = math.inf if time_limit_s is None else start + time_limit_s
    for j in targets:
        if time.perf_counter() >= deadline:
            stats["stopped"] = "time limit"
            break
        run = _restrict_target(net, region, x0, lab, int(j), margin, domain, lazy, norm, backend,
                               max_rounds, deadline)
        stats["rounds"] += run.rounds
        stats["lps"] += run.rounds
        stats["rows_added"] += run.rows_added
        if run.point is None:
            continue
        check = repair_witness(net, x0, run.point, label=lab, domain=domain, norm=norm,
                               required_margin=margin, target=int(j))
        if check is not None and (best is None or check.distance < best.distance):
            best = check
    timings = {"total_s": time.perf_counter() - start}
    if best is None:
        return RhoResult(0.0, math.inf, RhoStatus.NOT_FOUND, lab, timings=timings, stats=stats,
                         method="lp", norm=norm,
                         message="no other label is reachable inside the activation region")
    return RhoResult(0.0, best.distance, RhoStatus.UPPER_BOUND, lab, best.adversarial_label,
                     best.witness, True, timings, stats, "lp", norm)
