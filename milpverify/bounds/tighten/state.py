"""Shared state of solver-based tightening: per-neuron bounds, the cone of a neuron, level
statistics.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from milpverify.bounds.base import Bounds, relu_case_counts
from milpverify.encode.milp import Term, encode_network
from milpverify.encode.model import MilpModel
from milpverify.errors import InvalidInputError
from milpverify.ir import ops
from milpverify.ir.constraints import OutputConstraint
from milpverify.ir.network import Network
from milpverify.ir.ops import FloatArray, IntArray
from milpverify.solve.base import SolveOptions, SolveStatus

#: Statuses whose dual bound is used (MILPs; LPs without duals). Not INFEASIBLE (every cone
#: model contains the true network, so infeasibility is a numerical failure), never ERROR.
TRUSTED_STATUSES = frozenset({SolveStatus.OPTIMAL, SolveStatus.CUTOFF, SolveStatus.TIME_LIMIT,
                                  SolveStatus.SOLUTION_LIMIT, SolveStatus.OTHER_LIMIT})


#: A forward-pass value counts as a sign only beyond this (float64 forward pass is inexact).
EVIDENCE_TOL = 1e-9


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
    constraint: OutputConstraint | None = None  # rows `A y <= b` on the network output
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
    nonlinear = (*ops.SIGN_SPLIT, ops.MaxPool)
    wanted = {op.inputs[0] for _, op in net.items() if isinstance(op, nonlinear)}
    return [n for n in net.order if n in wanted and (constrained or any(
        isinstance(net.op(a), nonlinear) for a in nx.ancestors(net.graph, n)))]


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
        if op.inputs and op.inputs[0] == node and isinstance(op, ops.SIGN_SPLIT):
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
            outputs = np.any(state.constraint.A != 0, axis=0)
        enc = encode_network(sub, state.bounds("tighten"), model, Term.of_vars(xv),
                             outputs=outputs, relax=not exact)
        if state.constraint is not None:
            _add_output_rows(model, enc.terms[net.output], state.constraint)
        return _Cone(model, enc.terms[node].var, xv)


def _add_output_rows(model: MilpModel, out: Term, constraint: OutputConstraint) -> None:
    """``A y <= b`` with the constant outputs moved to the right-hand side."""
    is_var = out.var >= 0
    A = constraint.A
    moved = A[:, ~is_var] @ out.const[~is_var]
    # rounded up, so the LP's region contains every real point with A y <= b
    slack = 4 * np.finfo(np.float64).eps * (np.abs(constraint.b) + np.abs(A[:, ~is_var])
                                            @ np.abs(out.const[~is_var]))
    rhs = np.nextafter(constraint.b - moved + slack, np.inf)
    coo = sp.coo_array(A[:, is_var])
    model.add_rows(coo.row, out.var[is_var][coo.col], coo.data, A.shape[0], -np.inf, rhs,
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
