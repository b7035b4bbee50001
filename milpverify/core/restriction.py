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
(`RESTRICTION_RULES`), so only the rows needed are ever computed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from milpverify.core.results import RhoResult, RhoStatus
from milpverify.core.witness import repair_witness
from milpverify.encode.model import MilpModel
from milpverify.errors import InvalidInputError
from milpverify.ir import ops
from milpverify.ir.network import Network
from milpverify.ir.ops import FloatArray, IntArray, Op
from milpverify.solve import get_backend
from milpverify.solve.base import SolveOptions, SolveStatus

#: A region row counts as violated when it is off by more than this. Zero: on ERAN convSmall
#: a tolerance of 1e-7 let the lazy LP stop at points up to 6e-8 outside rows it never
#: added, which on those nearly degenerate regions is worth a lot of distance (image 4:
#: 0.580 lazy vs 0.893 full, both verified witnesses); with 0 the two agree.
#: Norms of the restriction: an LP for L-inf/L1; for L2 a convex quadratic program (the
#: squared distance under a `MilpModel.add_sum_squares` row), which SCIP solves.
RESTRICTION_NORMS = ("linf", "l1", "l2")


VIOLATION_TOL = 0.0
#: The lazy LP with HiGHS appends rows to one model instead of rebuilding it each round.
WARM_START = True


@dataclass(frozen=True)
class Region:
    """The activation region of a point: ReLU phases and MaxPool arg-maxes."""

    active: dict[str, npt.NDArray[np.bool_]]  # ReLU node -> pre > 0 at x
    argmax: dict[str, IntArray]               # MaxPool node -> flat input index of the max


def region_of(net: Network, x: FloatArray) -> tuple[Region, dict[str, FloatArray]]:
    """The activation region of `x` and all activations (flat) at x."""
    values = net.forward_all(x, flat=True)
    active, argmax = {}, {}
    for name, op in net.items():
        if isinstance(op, ops.SIGN_SPLIT):
            active[name] = values[op.inputs[0]][0] > 0
        elif isinstance(op, ops.MaxPool):
            padded = np.r_[values[op.inputs[0]][0], -np.inf]
            argmax[name] = op.windows[np.arange(op.size),
                                      np.argmax(padded[op.windows], axis=1)]
    return Region(active, argmax), {k: v[0] for k, v in values.items()}


# ------------------------------------------------------------------ back-substitution rules
Coeffs = dict[str, Any]  # node -> (k x node_size) coefficient matrix (dense ndarray)
RestrictionRule = Callable[[Op, str, FloatArray, Region, Coeffs, list[FloatArray]], None]


def _accumulate(coeffs: Coeffs, name: str, g: FloatArray) -> None:
    coeffs[name] = g if name not in coeffs else coeffs[name] + g


def restriction_linear(op: ops.LinearOp, name: str, g: FloatArray, region: Region,
                       coeffs: Coeffs, const: list[FloatArray]) -> None:
    """`y = M x + b`: G_x += G M, constant += G b."""
    matrix, bias = op.linear_map
    gm = g @ matrix if isinstance(matrix, np.ndarray) else (op.transposed @ g.T).T
    _accumulate(coeffs, op.inputs[0], np.asarray(gm))
    const[0] = const[0] + g @ bias


def restriction_relu(op: ops.Relu, name: str, g: FloatArray, region: Region, coeffs: Coeffs,
                     const: list[FloatArray]) -> None:
    """Fixed phase: `post = pre` where active at x, else `post = 0`: G_pre += G diag(active)."""
    _accumulate(coeffs, op.inputs[0], g * region.active[name])


def restriction_leaky_relu(op: ops.LeakyRelu, name: str, g: FloatArray, region: Region,
                           coeffs: Coeffs, const: list[FloatArray]) -> None:
    """Fixed phase: `post = pre` where active at x, else `slope * pre`."""
    _accumulate(coeffs, op.inputs[0], g * np.where(region.active[name], 1.0, op.slope))


def restriction_maxpool(op: ops.MaxPool, name: str, g: FloatArray, region: Region,
                        coeffs: Coeffs, const: list[FloatArray]) -> None:
    """Fixed arg-max: `y_k = x_{a_k}`: G_x[:, a_k] += G[:, k]."""
    gx = np.zeros((g.shape[0], coeffs["__sizes__"][op.inputs[0]]))
    np.add.at(gx.T, region.argmax[name], g.T)
    _accumulate(coeffs, op.inputs[0], gx)


def restriction_add(op: ops.Add, name: str, g: FloatArray, region: Region, coeffs: Coeffs,
                    const: list[FloatArray]) -> None:
    """`y = a + b`: both inputs receive G."""
    for arg in op.inputs:
        _accumulate(coeffs, arg, g)


def restriction_concat(op: ops.Concat, name: str, g: FloatArray, region: Region,
                       coeffs: Coeffs, const: list[FloatArray]) -> None:
    """`y = concat(inputs)[index]`: scatter G's columns back to the inputs."""
    sizes = coeffs["__sizes__"]
    bounds = np.cumsum([0] + [sizes[a] for a in op.inputs])
    joined = np.zeros((g.shape[0], bounds[-1]))
    np.add.at(joined.T, op.index, g.T)
    for arg, lo, hi in zip(op.inputs, bounds[:-1], bounds[1:]):
        _accumulate(coeffs, arg, joined[:, lo:hi])


RESTRICTION_RULES: dict[type[Op], RestrictionRule] = {
    ops.Affine: restriction_linear, ops.Conv: restriction_linear,
    ops.AvgPool: restriction_linear, ops.Scale: restriction_linear,
    ops.Permute: restriction_linear, ops.Relu: restriction_relu,
    ops.LeakyRelu: restriction_leaky_relu,
    ops.MaxPool: restriction_maxpool, ops.Add: restriction_add, ops.Concat: restriction_concat,
}


def affine_rows(net: Network, region: Region, node: str, g: FloatArray
                ) -> tuple[FloatArray, FloatArray]:
    """`(A, c)` with `g @ value(node)(x') = A x' + c` for every x' in `region`.

    `g` is (k, node_size): k linear functionals of the node's output.
    """
    order = net.order[: net.order.index(node) + 1]
    coeffs: Coeffs = {node: np.asarray(g, dtype=np.float64),
                      "__sizes__": {n: net.op(n).size for n in order}}
    const = [np.zeros(g.shape[0])]
    for name in reversed(order):
        op = net.op(name)
        if name not in coeffs or isinstance(op, ops.Input):
            continue
        RESTRICTION_RULES[type(op)](op, name, coeffs.pop(name), region, coeffs, const)
    return coeffs.get(net.input, np.zeros((g.shape[0], net.input_size))), const[0]


# ------------------------------------------------------------------ region rows
def violated_rows(net: Network, region: Region, x_new: FloatArray) -> list[tuple[str, IntArray]]:
    """Region inequalities that `x_new` violates, grouped by node."""
    values = net.forward_all(x_new, flat=True)
    out = []
    for name, op in net.items():
        if isinstance(op, ops.SIGN_SPLIT):
            pre = values[op.inputs[0]][0]
            act = region.active[name]
            bad = np.flatnonzero(np.where(act, pre < -VIOLATION_TOL, pre > VIOLATION_TOL))
            if len(bad):
                out.append((name, bad))
        elif isinstance(op, ops.MaxPool):
            xin = np.r_[values[op.inputs[0]][0], -np.inf]
            best = xin[region.argmax[name]]
            bad = np.flatnonzero((xin[op.windows] - best[:, None] > VIOLATION_TOL).any(axis=1))
            if len(bad):
                out.append((name, bad))
    return out


def all_rows(net: Network, region: Region) -> list[tuple[str, IntArray]]:
    """Every region inequality, grouped by node (the full LP)."""
    out = []
    for name, op in net.items():
        if isinstance(op, (*ops.SIGN_SPLIT, ops.MaxPool)):
            out.append((name, np.arange(op.size)))
    return out


def region_constraints(net: Network, region: Region, name: str, idx: IntArray
                       ) -> tuple[FloatArray, FloatArray]:
    """Rows `(A, c)` meaning `A x' + c >= 0` for the given neurons of a (leaky) ReLU or MaxPool."""
    op = net.op(name)
    src = op.inputs[0]
    size = net.op(src).size
    if isinstance(op, ops.SIGN_SPLIT):
        sign = np.where(region.active[name][idx], 1.0, -1.0)
        g = np.zeros((len(idx), size))
        g[np.arange(len(idx)), idx] = sign
        return affine_rows(net, region, src, g)
    assert isinstance(op, ops.MaxPool)
    rows = []
    for k in idx:
        window = op.windows[k][op.windows[k] >= 0]
        a = region.argmax[name][k]
        for i in window[window != a]:
            rows.append((a, i))
    g = np.zeros((len(rows), size))
    for r, (a, i) in enumerate(rows):
        g[r, a] += 1.0
        g[r, i] -= 1.0
    return affine_rows(net, region, src, g)


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
              norm: str, backend: str) -> tuple[SolveStatus, FloatArray | None, float]:
    model, xv, dist = _base_lp(x, domain, objective_rows, margin, norm)
    if region_a:
        model.add_matrix_rows(np.vstack(region_a), xv, -np.concatenate(region_c), np.inf,
                              name="region")
    model.set_objective(dist, np.ones(len(dist)))
    result = get_backend(backend).solve(model, SolveOptions())
    point = None if result.x is None else result.x[xv]
    return result.status, point, math.inf if result.objective is None else result.objective


@dataclass
class _TargetRun:
    status: SolveStatus
    point: FloatArray | None
    rounds: int
    rows_added: int


def _restrict_target(net: Network, region: Region, x: FloatArray, label: int, target: int,
                     margin: float, domain: tuple[float, float], lazy: bool, norm: str,
                     backend: str, max_rounds: int) -> _TargetRun:
    g = np.zeros((1, net.num_classes))
    g[0, target], g[0, label] = 1.0, -1.0
    a, c = affine_rows(net, region, net.output, g)
    region_a: list[FloatArray] = []
    region_c: list[FloatArray] = []
    added: set[tuple[str, int]] = set()
    pending = [] if lazy else all_rows(net, region)
    # The lazy LP with HiGHS keeps one model and appends rows (warm-started dual simplex);
    # otherwise every round is built and solved afresh.
    session = None
    if lazy and backend == "highs" and WARM_START:
        model, xv, dist = _base_lp(x, domain, (a[0], c[0]), margin, norm)
        session = get_backend(backend).session(model)
    rounds = 0
    try:
        while True:
            for name, idx in pending:
                fresh = np.array([i for i in idx if (name, int(i)) not in added], dtype=np.int64)
                if len(fresh) == 0:
                    continue
                ra, rc = region_constraints(net, region, name, fresh)
                region_a.append(ra)
                region_c.append(rc)
                added.update((name, int(i)) for i in fresh)
                if session is not None:
                    session.add_rows(xv, ra, -rc, np.inf)
            rounds += 1
            if session is not None:
                result = session.minimize(dist, np.ones(len(dist)))
                status, point = result.status, None if result.x is None else result.x[xv]
            else:
                status, point, _ = _solve_lp(x, domain, (a[0], c[0]), margin, region_a,
                                             region_c, norm, backend)
            if point is None or not lazy or rounds >= max_rounds:
                break
            pending = violated_rows(net, region, point)
            if not pending or all((n, int(i)) in added for n, idx in pending for i in idx):
                break
    finally:
        if session is not None:
            session.close()
    n_rows = sum(len(r) for r in region_a)
    return _TargetRun(status, point, rounds, n_rows)


def lp_restriction(net: Network, x: npt.ArrayLike, *, target: str | int | list[int] = "all",
                   lazy: bool = True,
                   margin: float = 0.0, domain: tuple[float, float] = (0.0, 1.0),
                   norm: str = "linf", label: int | None = None, backend: str = "highs",
                   max_rounds: int = 50, region_point: npt.ArrayLike | None = None,
                   region: Region | None = None) -> RhoResult:
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
    for j in targets:
        run = _restrict_target(net, region, x0, lab, int(j), margin, domain, lazy, norm, backend,
                               max_rounds)
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
