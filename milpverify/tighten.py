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
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from milpverify.bounds import alpha_bounds, interval_bounds, symbolic_bounds
from milpverify.bounds.base import Bounds, relu_case_counts
from milpverify.bounds.interval import UNDERFLOW_SLACK, check_box, gamma, round_down
from milpverify.encode.milp import Term, encode_network
from milpverify.encode.model import MilpModel
from milpverify.errors import InvalidInputError
from milpverify.ir import ops
from milpverify.ir.network import Network
from milpverify.ir.ops import FloatArray, IntArray
from milpverify.solve import get_backend
from milpverify.solve.base import SolveOptions, SolveResult, SolveStatus
from milpverify.solve.highs import HIGHS_INT_MAX

METHODS = ("interval", "symbolic", "alpha", "lp", "mip", "progressive")
LEVELS = ("lp", "mip")
#: Outward widening `slack * (1 + |bound|)` of a MILP solver's dual bound (module docstring).
MIP_BOUND_SLACK = 1e-6
#: Widening of an LP bound when the backend returns no row duals (SCIP sessions).
LP_FALLBACK_SLACK = 1e-6
#: A MILP asked whether `pre >= 0` uses the cutoff `2 * MIP_BOUND_SLACK`, so that a proof
#: survives the widening: `2 s - s (1 + 2 s) >= 0`.
MIP_SIGN_CUTOFF = 2.0 * MIP_BOUND_SLACK
#: Statuses whose dual bound is used (MILPs; LPs without duals). Not INFEASIBLE (every cone
#: model contains the true network, so infeasibility is a numerical failure), never ERROR.
TRUSTED_STATUSES = frozenset({SolveStatus.OPTIMAL, SolveStatus.CUTOFF, SolveStatus.TIME_LIMIT,
                                  SolveStatus.SOLUTION_LIMIT, SolveStatus.OTHER_LIMIT})
#: Default time limit of one neuron's MILP in `"progressive"` (`per_neuron_s` overrides it).
PROGRESSIVE_MIP_NEURON_S = 0.5
#: Solver parameters of `"progressive"`'s sign MILPs, per MILP backend: no presolve and no
#: primal heuristics. In a half-second solve that asks "can this neuron cross zero?", both
#: took about half the time (SCIP, eran 9x200 `idx_3539`: presolve 27%, heuristics 29%),
#: while a crossing point is what the box samples and LP points already look for. With
#: 60 s of tightening on `idx_3539` 62 of 128 sign MILPs stabilised their neuron and 379
#: ReLUs stayed unstable (of 753), against 31 of 103 and 499 with SCIP's defaults
#: (`python benchmarks/sign_milps.py --idx 3539 2697 --budget 60`,
#: `benchmarks/results/sign_milps.md`).
SIGN_MILP_PARAMS: dict[str, dict[str, object]] = {
    "scip": {"presolving/emphasis": "off", "heuristics/emphasis": "off"},
    "highs": {"presolve": "off", "mip_heuristic_effort": 0.0},
}
#: Random box vertices evaluated up front as evidence of truly unstable neurons.
EVIDENCE_SAMPLES = 256
#: HiGHS options of the first LP of a session: interior point (with crossover, for a basis)
#: is 5-10x faster than dual simplex from scratch on WK17a's layer LPs.
LP_HIGHS_FIRST = {"solver": "ipm", "presolve": "choose"}
#: HiGHS options of the re-solves after a cost change: the basis stays primal feasible, so
#: primal simplex without presolve (which would drop the basis); 2-75 ms each on WK17a.
LP_HIGHS_RESOLVE = {"solver": "simplex", "simplex_strategy": 4, "presolve": "off"}
#: Simplex iterations a re-solve may take, per row and column of its LP; one that reaches
#: the limit is solved again with `LP_HIGHS_FIRST` (from scratch, a fresh basis for the
#: next ones). Scratch, eran 9x200 `idx_3539`: re-solves took at most 1,033 iterations on
#: LPs of 1,167-6,261 rows and columns, while one (two threads, so warm-started from another
#: neuron's basis) ran 1.6 million iterations (66 s) on a 209-row LP until its time limit.
LP_RESOLVE_ITERATIONS_PER_DIM = 10
#: HiGHS options of a re-solve of an infeasible LP: dual simplex without presolve returns a
#: dual ray (interior point, presolve and primal simplex do not), checked by `proves_empty`.
LP_HIGHS_RAY = {"solver": "simplex", "simplex_strategy": 1, "presolve": "off"}
#: A forward-pass value counts as a sign only beyond this (float64 forward pass is inexact).
EVIDENCE_TOL = 1e-9


# ---------------------------------------------------------------------------- safe LP bound
@dataclass(frozen=True)
class DualBounder:
    """`safe_dual_bound` for one LP with the matrix products prepared once (many objectives).

    Attributes are the LP's data: `A` (CSR), its transpose and `|A|^T`, row bounds `rl`,
    `ru`, column bounds `lo`, `up`, and `k` = largest column length + 1.
    """

    A: sp.csr_array
    at: sp.csr_array
    abs_at: sp.csr_array
    rl: FloatArray
    ru: FloatArray
    lo: FloatArray
    up: FloatArray
    k: float

    @staticmethod
    def of(A: sp.csr_array | FloatArray, row_lower: npt.ArrayLike, row_upper: npt.ArrayLike,
           col_lower: npt.ArrayLike, col_upper: npt.ArrayLike) -> DualBounder:
        a = sp.csr_array(A, dtype=np.float64)
        at = sp.csr_array(a.T)
        col_nnz = np.diff(at.indptr)
        return DualBounder(a, at, abs(at), *(np.asarray(v, dtype=np.float64).reshape(-1) for v in
                                             (row_lower, row_upper, col_lower, col_upper)),
                           float(col_nnz.max(initial=0) + 1))

    @staticmethod
    def of_model(model: MilpModel) -> DualBounder:
        return DualBounder.of(model.A, model.row_lower, model.row_upper, model.lower, model.upper)

    def proves_empty(self, ray: npt.ArrayLike) -> bool:
        """Whether `ray` (or its negative) rigorously proves the LP infeasible: a positive
        `bound` of ``min 0``."""
        zero = np.zeros(self.lo.size)
        y = np.asarray(ray, dtype=np.float64)
        return bool(self.bound(zero, y) > 0 or self.bound(zero, -y) > 0)

    def bound(self, cost: npt.ArrayLike, row_dual: npt.ArrayLike) -> float:
        """The rigorous lower bound of `min cost^T x` given by `row_dual` (see `safe_dual_bound`)."""
        c = np.asarray(cost, dtype=np.float64).reshape(-1)
        y = np.array(row_dual, dtype=np.float64).reshape(-1)
        y[~np.isfinite(y) | ((y > 0) & ~np.isfinite(self.rl))
          | ((y < 0) & ~np.isfinite(self.ru))] = 0.0
        used = y != 0.0
        row_terms = np.zeros_like(y)
        row_terms[used] = y[used] * np.where(y[used] > 0, self.rl[used], self.ru[used])
        red = c - self.at @ y
        err = 2.0 * gamma(self.k + 2.0) * (np.abs(c) + self.abs_at @ np.abs(y))
        active = red != 0.0
        at = np.where(red > 0, self.lo, self.up)
        mag = np.maximum(np.abs(self.lo), np.abs(self.up))
        if np.any(active & ~np.isfinite(at)) or np.any((err > 0) & ~np.isfinite(mag)):
            return -np.inf  # a reduced cost pushes towards an infinite variable bound
        col_terms = np.zeros_like(red)
        col_terms[active] = red[active] * at[active]
        e_total = float(np.sum(err[err > 0] * mag[err > 0]))
        terms = np.concatenate([row_terms, col_terms])
        slack = e_total + 2.0 * gamma(terms.size + 2.0) * (
            float(np.sum(np.abs(terms))) + e_total) + UNDERFLOW_SLACK
        return float(round_down(np.float64(np.sum(terms)) - slack))


def safe_dual_bound(A: sp.csr_array | FloatArray, row_lower: npt.ArrayLike,
                    row_upper: npt.ArrayLike, col_lower: npt.ArrayLike, col_upper: npt.ArrayLike,
                    cost: npt.ArrayLike, row_dual: npt.ArrayLike) -> float:
    """A rigorous lower bound of `min c^T x s.t. row_lower <= A x <= row_upper, l <= x <= u`.

    Neumaier & Shcherbina (2004). For *any* `y`, with `r = c - A^T y`, every feasible `x`
    satisfies, in exact arithmetic,
    `c^T x = y^T (A x) + r^T x >= sum_i min(y_i rl_i, y_i ru_i) + sum_j min(r_j l_j, r_j u_j)`.
    Non-finite `y_i`, and `y_i` whose row side is infinite (`y_i > 0` with `rl_i = -inf`,
    `y_i < 0` with `ru_i = +inf`), are set to 0 first.

    Rounding: `fl(r_j)` is within `e_j = 2 gamma(K + 2) (|c_j| + (|A|^T |y|)_j)` of `r_j`
    (`K` = largest column length + 1), so `r_j x_j >= fl(r_j) x_j - e_j m_j` with
    `m_j = max(|l_j|, |u_j|)`. The float sum `S` of the `N` = rows + columns products is
    within `gamma(N + 2) T` of exact (`T` = the sum of their absolute values). The result
    is `down(fl(S) - E - 2 gamma(N + 2) (T + E) - eta)` with `E = sum_j e_j m_j`; the factor 2
    also covers computing `T`, `E` and `e` in float, `eta` underflow, and `down` (one ulp
    towards -inf) the last subtraction, as in `milpverify.bounds.interval`.

    Parameters
    ----------
    A : sparse or dense matrix, shape (m, n)
    row_lower, row_upper : array_like, shape (m,)
        Row bounds (infinite sides allowed).
    col_lower, col_upper : array_like, shape (n,)
        Variable bounds (infinite ones give `-inf` when the reduced cost points at them).
    cost : array_like, shape (n,)
    row_dual : array_like, shape (m,)
        Any vector, e.g. the LP solver's row duals (HiGHS: `c - A^T y` = reduced costs).

    Returns
    -------
    float
        A lower bound of the LP's exact optimum (`-inf` if this `y` gives none).

    Example
    -------
    >>> a = sp.csr_array([[1.0, 1.0]])       # min x0 + 2 x1  s.t.  x0 + x1 >= 1,  0 <= x <= 5
    >>> safe_dual_bound(a, [1.0], [np.inf], [0, 0], [5, 5], [1.0, 2.0], [1.0])  # optimum 1
    0.9999999999999766
    """
    return DualBounder.of(A, row_lower, row_upper, col_lower, col_upper).bound(cost, row_dual)


# ---------------------------------------------------------------------------- evidence
@dataclass
class _Evidence:
    """Per ReLU-input node: which neurons some concrete input drove below / above zero."""

    net: Network
    negative: dict[str, npt.NDArray[np.bool_]] = field(default_factory=dict)
    positive: dict[str, npt.NDArray[np.bool_]] = field(default_factory=dict)
    points: int = 0

    def add(self, points: FloatArray) -> None:
        """Record the signs of every tracked node at each row of `points` (flat inputs)."""
        if len(points) == 0:
            return
        values = self.net.forward_all(np.asarray(points), flat=True)
        self.points += len(points)
        for name in self.net.relu_nodes:
            pre = self.net.op(name).inputs[0]
            v = values[pre]
            neg, pos = (v < -EVIDENCE_TOL).any(axis=0), (v > EVIDENCE_TOL).any(axis=0)
            self.negative[pre] = self.negative.get(pre, np.zeros_like(neg)) | neg
            self.positive[pre] = self.positive.get(pre, np.zeros_like(pos)) | pos

    def unstable(self, node: str, size: int) -> npt.NDArray[np.bool_]:
        """Neurons of `node` proven truly unstable (both signs seen)."""
        if node not in self.negative:
            return np.zeros(size, dtype=bool)
        return self.negative[node] & self.positive[node]


def _box_samples(lo: FloatArray, hi: FloatArray, n: int, seed: int = 0) -> FloatArray:
    """The centre and `n - 1` random vertices of the box."""
    rng = np.random.default_rng(seed)
    vertices = np.where(rng.random((max(n - 1, 0), lo.size)) < 0.5, lo, hi)
    return np.vstack([0.5 * lo + 0.5 * hi, vertices])


# ---------------------------------------------------------------------------- bookkeeping
@dataclass
class _LevelStats:
    """What one level did (reported in `Bounds.details["levels"]`)."""

    neurons: int = 0
    solves: int = 0
    stabilized: int = 0
    skipped_proven_unstable: int = 0
    restarts: int = 0  # LP re-solves that stalled and were solved again from scratch
    time_s: float = 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {"neurons": self.neurons, "solves": self.solves, "stabilized": self.stabilized,
                "skipped_proven_unstable": self.skipped_proven_unstable,
                "restarts": self.restarts, "time_s": round(self.time_s, 6)}

    def add_counts(self, other: _LevelStats) -> None:
        """Add `other`'s neuron, solve, stabilised and restart counts (a thread's share)."""
        self.neurons += other.neurons
        self.solves += other.solves
        self.stabilized += other.stabilized
        self.restarts += other.restarts


@dataclass
class _State:
    """Mutable state of one tightening run."""

    net: Network
    box: tuple[FloatArray, FloatArray]
    pre: dict[str, tuple[FloatArray, FloatArray]]  # flat (lower, upper) per node
    deadline: float
    per_neuron_s: float | None
    backend: str
    mip_backend: str
    evidence: _Evidence
    stats: dict[str, _LevelStats]
    symbolic_s: float = 0.0
    layer_deadline: float = np.inf
    threads: int = 1  # neurons of a layer solved at once, each thread with its own sessions
    cut_short: bool = False  # some neuron was not reached for lack of time
    constraint: OutputConstraint | None = None  # rows `C y <= d` on the network output
    empty: bool = False  # some bounds crossed: no input of the box satisfies `constraint`

    def bounds(self, method: str) -> Bounds:
        shapes = {n: op.shape for n, op in self.net.items()}
        pre = {n: (lo.reshape(shapes[n]), hi.reshape(shapes[n])) for n, (lo, hi) in self.pre.items()}
        return Bounds(pre, _cases(self.net, self.pre), method)

    def left(self) -> float:
        """Seconds left for the current layer (its share of the overall budget)."""
        return min(self.deadline, self.layer_deadline) - time.perf_counter()


def _cases(net: Network, pre: dict[str, tuple[FloatArray, FloatArray]]
           ) -> dict[str, dict[str, int]]:
    return {r: relu_case_counts(pre[net.op(r).inputs[0]][0].reshape(-1),
                                pre[net.op(r).inputs[0]][1].reshape(-1)) for r in net.relu_nodes}


def _flat(b: Bounds) -> dict[str, tuple[FloatArray, FloatArray]]:
    return {n: (b.flat(n)[0].copy(), b.flat(n)[1].copy()) for n in b.pre}


def _intersect(net: Network, bounds: Bounds, base: Bounds | None) -> Bounds:
    """`bounds` intersected node by node with `base` (if given).

    Raises
    ------
    InvalidInputError
        If some node's intervals are disjoint (`base` is for another box).
    """
    if base is None:
        return bounds
    flat: dict[str, tuple[FloatArray, FloatArray]] = {}
    for name in bounds.pre:
        (lo, hi), (blo, bhi) = bounds.flat(name), base.flat(name)
        flat[name] = (np.maximum(lo, blo), np.minimum(hi, bhi))
        bad = np.flatnonzero(flat[name][0] > flat[name][1])
        if bad.size:
            raise InvalidInputError(
                f"Bounds at node {name!r} do not intersect `base` (index {int(bad[0])}); "
                "is `base` computed for the same input box?")
    pre = {n: (lo.reshape(bounds.pre[n][0].shape), hi.reshape(bounds.pre[n][0].shape))
           for n, (lo, hi) in flat.items()}
    return Bounds(pre, _cases(net, flat), bounds.method, bounds.time_s, dict(bounds.details))


def _subnetwork(net: Network, node: str) -> Network:
    """The ancestors of `node` with `node` as output."""
    keep = nx.ancestors(net.graph, node) | {node}
    return net.replace([(n, net.op(n)) for n in net.order if n in keep], node)


def _solver_targets(net: Network, constrained: bool = False) -> list[str]:
    """Inputs of ReLU/MaxPool nodes with a ReLU/MaxPool among their ancestors, in order.

    Without one, a node is affine in the input and its interval/symbolic bounds over the
    box are exact; under an output constraint (`constrained`) every such input counts.
    """
    wanted = {op.inputs[0] for _, op in net.items() if isinstance(op, (ops.Relu, ops.MaxPool))}
    return [n for n in net.order if n in wanted and (constrained or any(
        isinstance(net.op(a), (ops.Relu, ops.MaxPool)) for a in nx.ancestors(net.graph, n)))]


def _pending(net: Network, node: str, lower: FloatArray, upper: FloatArray
             ) -> tuple[IntArray, npt.NDArray[np.bool_]]:
    """Neurons of `node` worth tightening (most promising first), and which may stop early.

    ReLU inputs: unstable ones (`l < 0 < u`); they may stop once stable. MaxPool inputs:
    those that can still be the maximum of a window with more than one such candidate
    (both sides are always tightened: they set the window's big-Ms).
    """
    relu = np.zeros(lower.size, dtype=bool)
    pool = np.zeros(lower.size, dtype=bool)
    for _, op in net.items():
        if op.inputs and op.inputs[0] == node and isinstance(op, ops.Relu):
            relu |= (lower < 0) & (upper > 0)
        elif op.inputs and op.inputs[0] == node and isinstance(op, ops.MaxPool):
            pad_lo = np.concatenate([lower, [-np.inf]])
            pad_hi = np.concatenate([upper, [-np.inf]])
            best = pad_lo[op.windows].max(axis=1, keepdims=True)
            alive = (pad_hi[op.windows] >= best) & (op.windows >= 0)
            undecided = alive.sum(axis=1) > 1
            pool[op.windows[undecided][alive[undecided]]] = True
    idx = np.flatnonzero(relu | pool)
    # Most promising first (smallest side relative to the width), so that a budget cut
    # leaves out the neurons least likely to become stable.
    width = upper[idx] - lower[idx]
    closeness = np.minimum(-lower[idx], upper[idx]) / np.where(width > 0, width, 1.0)
    return idx[np.argsort(closeness, kind="stable")], relu & ~pool


# ---------------------------------------------------------------------------- one cone
@dataclass(frozen=True)
class OutputConstraint:
    """Rows ``C y <= d`` on the flat network output ``y``: `compute_bounds` then bounds
    only the inputs of the box whose outputs satisfy them (e.g. one disjunct of an unsafe
    set)."""

    C: FloatArray  # (k, outputs)
    d: FloatArray  # (k,)

    @staticmethod
    def of(net: Network, value: tuple[npt.ArrayLike, npt.ArrayLike]) -> OutputConstraint:
        """Check ``(C, d)`` against `net`'s output size.

        Raises
        ------
        InvalidInputError
            Wrong shapes or non-finite entries.
        """
        try:
            c_raw, d_raw = value
            C = np.array(c_raw, dtype=np.float64, ndmin=2)
            d = np.array(d_raw, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"`output_constraint` must be a pair (C, d) of numeric "
                                    f"arrays: {exc}") from exc
        if C.ndim != 2 or C.shape[1] != net.num_classes or d.shape != (C.shape[0],):
            raise InvalidInputError(
                f"`output_constraint` (C, d) needs C of shape (k, {net.num_classes}) (the "
                f"network's outputs) and d of shape (k,); got {C.shape} and {d.shape}.")
        if not (np.all(np.isfinite(C)) and np.all(np.isfinite(d))):
            raise InvalidInputError("`output_constraint` has NaN or infinite entries.")
        return OutputConstraint(C, d)


@dataclass
class _Cone:
    """A node's ancestors encoded in a `MilpModel`, with only `neurons` of it as outputs;
    with an output constraint, the whole network and the constraint's rows."""

    model: MilpModel
    var: IntArray  # model variable of each neuron of the node (-1 if not encoded)
    inputs: IntArray  # model variables of the network input

    @staticmethod
    def build(state: _State, node: str, neurons: IntArray, exact: bool) -> _Cone:
        net = state.net
        model = MilpModel()
        xv = model.add_vars(net.input_size, state.box[0], state.box[1], name="input")
        if state.constraint is None:
            sub = _subnetwork(net, node)
            outputs = np.zeros(sub.num_classes, dtype=bool)
            outputs[neurons] = True
        else:
            sub = net
            outputs = np.any(state.constraint.C != 0, axis=0)
        enc = encode_network(sub, state.bounds("tighten"), model, Term.of_vars(xv),
                             outputs=outputs, relax=not exact)
        if state.constraint is not None:
            _add_output_rows(model, enc.terms[net.output], state.constraint)
        return _Cone(model, enc.terms[node].var, xv)


def _add_output_rows(model: MilpModel, out: Term, constraint: OutputConstraint) -> None:
    """``C y <= d`` with the constant outputs moved to the right-hand side."""
    is_var = out.var >= 0
    C = constraint.C
    moved = C[:, ~is_var] @ out.const[~is_var]
    # rounded up, so the LP's region contains every real point with C y <= d
    slack = 4 * np.finfo(np.float64).eps * (np.abs(constraint.d) + np.abs(C[:, ~is_var])
                                            @ np.abs(out.const[~is_var]))
    rhs = np.nextafter(constraint.d - moved + slack, np.inf)
    coo = sp.coo_array(C[:, is_var])
    model.add_rows(coo.row, out.var[is_var][coo.col], coo.data, C.shape[0], -np.inf, rhs,
                   name="output_constraint")


def _widen(bound: float, sense: float, slack: float) -> float:
    """A solver bound `b` of `min sense * y`, as a bound of `y` moved out by `slack (1 + |b|)`."""
    return sense * bound - sense * slack * (1.0 + abs(bound))


# ---------------------------------------------------------------------------- levels
SideSolver = Callable[[int, float], "tuple[float, FloatArray | None] | None"]
"""`solve(j, sense)` -> (bound of neuron j on that side, input point or None), or None if the
solve gave no usable bound."""


def _run_neurons(state: _State, node: str, neurons: IntArray, stoppable: npt.NDArray[np.bool_],
                 stats: _LevelStats, decide_only: bool, solve: SideSolver) -> list[FloatArray]:
    """Bound both sides of each neuron (the side nearer to zero first), shrinking `state.pre`.

    A neuron that feeds only ReLUs (`stoppable`) stops as soon as it is stable. With
    `decide_only`, a side some concrete input already crossed is skipped (a solve there
    could tighten the big-M but never stabilise the neuron). Returns the solvers' points.
    """
    lower, upper = state.pre[node]
    negative = state.evidence.negative.get(node, np.zeros(lower.size, dtype=bool))
    positive = state.evidence.positive.get(node, np.zeros(lower.size, dtype=bool))
    points: list[FloatArray] = []
    for j in neurons:
        was_unstable = lower[j] < 0 < upper[j]
        first = 1.0 if -lower[j] <= upper[j] else -1.0
        counted = False
        for sense in (first, -first):
            if stoppable[j] and not lower[j] < 0 < upper[j]:
                break
            if decide_only and stoppable[j] and (negative[j] if sense > 0 else positive[j]):
                continue
            if state.left() <= 0:
                state.cut_short = True
                return points
            if not counted:
                stats.neurons, counted = stats.neurons + 1, True
            outcome = solve(int(j), sense)
            stats.solves += 1
            if outcome is None:
                continue
            bound, point = outcome
            if sense > 0:
                lower[j] = max(lower[j], bound)
            else:
                upper[j] = min(upper[j], bound)
            if point is not None:
                points.append(point)
        if was_unstable and not lower[j] < 0 < upper[j]:
            stats.stabilized += 1
    return points


def _options(state: _State, limit: float | None, **kw: Any) -> SolveOptions:
    """Options with the time limit `min(limit, time left)` (None if both are unbounded)."""
    left = state.left() if limit is None else min(state.left(), limit)
    return SolveOptions(time_limit_s=max(left, 1e-3) if np.isfinite(left) else None, **kw)


def _lp_level(state: _State, node: str, neurons: IntArray, stoppable: npt.NDArray[np.bool_],
              stats: _LevelStats, decide_only: bool) -> list[FloatArray]:
    """LP-tighten `neurons` of `node`: one relaxed model of the cone, warm-started re-solves
    (HiGHS: `LP_HIGHS_FIRST`, then `LP_HIGHS_RESOLVE` with at most
    `LP_RESOLVE_ITERATIONS_PER_DIM` iterations per row and column, else again from scratch).

    Each bound is `safe_dual_bound` of the returned row duals (or, without duals, the
    solver's bound widened by `LP_FALLBACK_SLACK`).
    """
    if decide_only:
        proven = state.evidence.unstable(node, state.pre[node][0].size)[neurons] & stoppable[neurons]
        stats.skipped_proven_unstable += int(proven.sum())
        neurons = neurons[~proven]
    if not len(neurons):
        return []
    cone = _Cone.build(state, node, neurons, exact=False)
    bounder = DualBounder.of_model(cone.model)
    highs = state.backend == "highs"
    resolve = {**LP_HIGHS_RESOLVE, "simplex_iteration_limit": int(min(
        LP_RESOLVE_ITERATIONS_PER_DIM * (cone.model.n_vars + cone.model.n_rows), HIGHS_INT_MAX))}

    def tighten_share(share: IntArray, share_stats: _LevelStats) -> list[FloatArray]:
        """`share` of the neurons in a session of its own (warm starts stay per session)."""
        solved = [0]
        with get_backend(state.backend).session(cone.model) as session:

            def solve(j: int, sense: float) -> tuple[float, FloatArray | None] | None:
                if state.empty:
                    return None
                var = int(cone.var[j])

                def run(params: dict[str, object]) -> SolveResult:
                    return session.minimize(np.array([var]), np.array([sense]), _options(
                        state, state.per_neuron_s, solver_params=params))

                params = (resolve if solved[0] else LP_HIGHS_FIRST) if highs else {}
                solved[0] += 1
                res = run(params)
                if params is resolve and res.status is SolveStatus.OTHER_LIMIT:  # stalled
                    share_stats.restarts += 1
                    res = run(LP_HIGHS_FIRST)
                if highs and res.status is SolveStatus.INFEASIBLE and res.dual_ray is None:
                    res = run(LP_HIGHS_RAY)
                if res.dual_ray is not None and bounder.proves_empty(res.dual_ray):
                    state.empty = True  # the region is empty: crossed bounds, `_tighten` stops
                    return sense * np.inf, None
                duals = res.row_duals
                point = None if res.x is None else res.x[cone.inputs]
                if duals is not None:
                    cost = np.zeros(cone.model.n_vars)
                    cost[var] = sense
                    return sense * bounder.bound(cost, duals), point
                if res.status in TRUSTED_STATUSES and np.isfinite(res.dual_bound):
                    return _widen(res.dual_bound, sense, LP_FALLBACK_SLACK), point
                return None

            return _run_neurons(state, node, share, stoppable, share_stats, decide_only, solve)

    return _in_shares(state, neurons[cone.var[neurons] >= 0], stats, tighten_share)


def _mip_level(state: _State, node: str, neurons: IntArray, stoppable: npt.NDArray[np.bool_],
               stats: _LevelStats, decide_only: bool) -> list[FloatArray]:
    """MILP-tighten `neurons` of `node`, one exact model of each neuron's own cone.

    A model per neuron keeps binaries outside the neuron's cone out of the branching.
    Bounds are the solver's dual bound widened by `MIP_BOUND_SLACK`. `decide_only`
    (progressive) skips neurons proven unstable and only asks whether the neuron can reach
    the far side of zero: objective cutoff `MIP_SIGN_CUTOFF`, stop at the first solution,
    `SIGN_MILP_PARAMS`.
    """
    if decide_only:
        proven = state.evidence.unstable(node, state.pre[node][0].size)[neurons] & stoppable[neurons]
        stats.skipped_proven_unstable += int(proven.sum())
        neurons = neurons[~proven]
    backend = get_backend(state.mip_backend)
    limit = state.per_neuron_s
    if decide_only and limit is None:
        limit = PROGRESSIVE_MIP_NEURON_S
    extra: dict[str, Any] = ({"objective_cutoff": MIP_SIGN_CUTOFF, "stop_at_first_feasible": True,
                              "solver_params": SIGN_MILP_PARAMS.get(state.mip_backend, {})}
                             if decide_only else {})

    def tighten_share(share: IntArray, share_stats: _LevelStats) -> list[FloatArray]:
        points: list[FloatArray] = []
        for j in share:
            if state.left() <= 0:
                state.cut_short = True
                break
            cone = _Cone.build(state, node, np.array([j]), exact=True)
            if cone.var[j] < 0:
                continue
            with backend.session(cone.model) as session:

                def solve(k: int, sense: float) -> tuple[float, FloatArray | None] | None:
                    res = session.minimize(np.array([cone.var[k]]), np.array([sense]),
                                           _options(state, limit, **extra))
                    point = None if res.x is None else res.x[cone.inputs]
                    if res.status not in TRUSTED_STATUSES or not np.isfinite(res.dual_bound):
                        return None  # e.g. HiGHS "Solve error" reports a dual bound of 0.0
                    return _widen(res.dual_bound, sense, MIP_BOUND_SLACK), point

                points += _run_neurons(state, node, np.array([j]), stoppable, share_stats,
                                       decide_only, solve)
        return points

    return _in_shares(state, neurons, stats, tighten_share)


def _in_shares(state: _State, neurons: IntArray, stats: _LevelStats,
               tighten_share: Callable[[IntArray, _LevelStats], list[FloatArray]]
               ) -> list[FloatArray]:
    """Run `tighten_share` on `neurons`, split over ``state.threads`` threads.

    Each thread owns every `threads`-th neuron (all start with promising ones) and its own
    counters, merged into `stats`; they write disjoint entries of the layer's bounds.
    """
    workers = min(state.threads, len(neurons))
    if workers <= 1:
        return tighten_share(neurons, stats)
    shares = [(neurons[k::workers], _LevelStats()) for k in range(workers)]
    with ThreadPoolExecutor(workers) as pool:
        found = list(pool.map(lambda share: tighten_share(*share), shares))
    for _, share_stats in shares:
        stats.add_counts(share_stats)
    return [point for points in found for point in points]


LEVEL_RULES: dict[str, Callable[..., list[FloatArray]]] = {"lp": _lp_level, "mip": _mip_level}
"""One tightening rule per level: `rule(state, node, neurons, stoppable, stats, decide_only)`."""


def _refresh(state: _State) -> None:
    """Symbolic pass intersected with the current bounds (carries gains to later layers).

    Under an output constraint, a pass disjoint from the current bounds (both hold for
    the inputs that satisfy it) shows there are none: `state.empty`, bounds unchanged.
    """
    t0 = time.perf_counter()
    try:
        fresh = symbolic_bounds(state.net, state.box[0], state.box[1],
                                base=state.bounds("tighten"))
    except InvalidInputError:
        if state.constraint is None:
            raise
        state.empty = True
        return
    finally:
        state.symbolic_s += time.perf_counter() - t0
    state.pre = _flat(fresh)


def _tighten(state: _State, levels: Sequence[str], decide_only: bool) -> None:
    """Run the solver levels layer by layer (see the module docstring)."""
    dirty = False
    targets = _solver_targets(state.net, constrained=state.constraint is not None)
    for k, node in enumerate(targets):
        now = time.perf_counter()
        if now >= state.deadline:
            state.cut_short = True
            break
        if dirty:
            _refresh(state)
            dirty = False
            if state.empty:
                break
        # A front-loaded share of what is left, 2 / (layers left + 1): early layers matter
        # most (their gains reach every later layer) but cannot starve the later ones;
        # time a layer does not use passes on to the next.
        state.layer_deadline = now + 2.0 * (state.deadline - now) / (len(targets) - k + 1)
        for level in levels:
            lower, upper = state.pre[node]
            neurons, stoppable = _pending(state.net, node, lower, upper)
            if not len(neurons):
                break
            if state.left() <= 0:
                state.cut_short = True
                break
            stats = state.stats[level]
            t0 = time.perf_counter()
            before = (lower.copy(), upper.copy())
            points = LEVEL_RULES[level](state, node, neurons, stoppable, stats, decide_only)
            if state.constraint is None:  # solver points need not satisfy the constraint
                state.evidence.add(np.asarray(points).reshape(-1, state.net.input_size))
            stats.time_s += time.perf_counter() - t0
            if np.any(lower > upper):  # rigorous bounds crossed: the region is empty
                state.empty = True
                state.layer_deadline = np.inf
                return
            dirty |= bool(np.any(lower > before[0]) or np.any(upper < before[1]))
    state.layer_deadline = np.inf
    if dirty:
        _refresh(state)


# ---------------------------------------------------------------------------- entry point
def compute_bounds(net: Network, lower: npt.ArrayLike, upper: npt.ArrayLike, *,
                   method: str = "progressive", time_limit_s: float | None = None,
                   per_neuron_s: float | None = None, backend: str = "highs",
                   mip_backend: str = "scip", levels: Sequence[str] = ("lp", "mip"),
                   base: Bounds | None = None, threads: int = 1,
                   output_constraint: tuple[npt.ArrayLike, npt.ArrayLike] | None = None
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
    output_constraint : (C, d), optional
        Bound only the inputs of the box whose outputs ``y`` satisfy ``C y <= d`` (C of
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
        constraint = OutputConstraint.of(net, output_constraint)
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
