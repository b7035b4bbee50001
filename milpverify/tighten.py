"""`bounds()`: interval, symbolic, LP, MIP and progressive bound tightening over an input box.

Interval and symbolic bounds live in `milpverify.bounds` (no solver). LP/MIP tightening
solves, per still-unstable neuron, `min`/`max pre_j` over the LP relaxation (or the exact
MILP) of the layers before it, built by the same encoder as the robustness MILP.

Solver tolerances: an LP/MIP bound is the solver's proven dual bound, widened outward by
`SOLVER_BOUND_SLACK * (1 + |bound|)` to absorb the solver's feasibility and optimality
tolerances (1e-6 / 1e-9 relative by default); a neuron whose solve fails or times out
without a dual bound keeps its previous (sound) bound. Bounds only ever shrink.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import networkx as nx
import numpy as np
import numpy.typing as npt

from milpverify.bounds.base import Bounds, relu_case_counts
from milpverify.encode.milp import Term, encode_network
from milpverify.encode.model import MilpModel
from milpverify.errors import InvalidInputError
from milpverify.ir import ops
from milpverify.ir.network import Network
from milpverify.ir.ops import FloatArray
from milpverify.solve import get_backend
from milpverify.solve.base import SolveOptions

METHODS = ("interval", "symbolic", "lp", "mip", "progressive")
#: Relative + absolute outward widening of every LP/MIP bound (see module docstring).
SOLVER_BOUND_SLACK = 1e-6


def _solver_free(net: Network, lower: FloatArray, upper: FloatArray, method: str,
                 base: Bounds | None = None) -> Bounds:
    from milpverify.bounds import interval_bounds, symbolic_bounds
    if method == "interval":
        return interval_bounds(net, lower, upper)
    return symbolic_bounds(net, lower, upper, base=base)


def _with(bounds: Bounds, name: str, lower: FloatArray, upper: FloatArray, net: Network,
          method: str) -> Bounds:
    pre = dict(bounds.pre)
    shape = net.op(name).shape
    pre[name] = (lower.reshape(shape), upper.reshape(shape))
    return Bounds(pre, _cases(net, pre), method, bounds.time_s, dict(bounds.details))


def _cases(net: Network, pre: dict[str, tuple[FloatArray, FloatArray]]) -> dict[str, dict[str, int]]:
    return {r: relu_case_counts(pre[net.op(r).inputs[0]][0].reshape(-1),
                                pre[net.op(r).inputs[0]][1].reshape(-1)) for r in net.relu_nodes}


def _subnetwork(net: Network, node: str) -> Network:
    """The ancestors of `node` with `node` as output."""
    keep = nx.ancestors(net.graph, node) | {node}
    return net.replace([(n, net.op(n)) for n in net.order if n in keep], node)


def _tighten_node(net: Network, bounds: Bounds, box: tuple[FloatArray, FloatArray], node: str,
                  targets: npt.NDArray[np.int64], exact: bool, deadline: float,
                  per_neuron_s: float | None, backend: str) -> tuple[FloatArray, FloatArray, int]:
    """Minimise and maximise `node[j]` for j in targets; returns new (lower, upper), solves."""
    sub = _subnetwork(net, node)
    model = MilpModel()
    xv = model.add_vars(net.input_size, box[0], box[1], name="input")
    outputs = np.zeros(sub.num_classes, dtype=bool)
    outputs[targets] = True
    enc = encode_network(sub, bounds, model, Term.of_vars(xv), outputs=outputs, relax=not exact)
    y = enc.terms[node]
    lower, upper = (a.copy() for a in bounds.flat(node))
    solves = 0
    with get_backend(backend).session(model) as session:
        for j in targets:
            var = int(y.var[j])
            if var < 0:
                continue
            for sense in (1.0, -1.0):
                # Skip the second solve once the neuron is proven stable.
                if (sense < 0 and lower[j] >= 0) or (sense > 0 and upper[j] <= 0):
                    continue
                left = deadline - time.perf_counter()
                if left <= 0:
                    return lower, upper, solves
                limit = left if per_neuron_s is None else min(left, per_neuron_s)
                res = session.minimize(np.array([var]), np.array([sense]),
                                       SolveOptions(time_limit_s=limit))
                solves += 1
                if not np.isfinite(res.dual_bound):
                    continue
                bound = sense * res.dual_bound
                slack = SOLVER_BOUND_SLACK * (1.0 + abs(bound))
                if sense > 0:
                    lower[j] = max(lower[j], bound - slack)
                else:
                    upper[j] = min(upper[j], bound + slack)
    return lower, upper, solves


def _behind_activation(net: Network, node: str) -> bool:
    """True if a ReLU/MaxPool lies between the input and `node` (else bounds are already exact)."""
    return any(isinstance(net.op(a), (ops.Relu, ops.MaxPool)) for a in nx.ancestors(net.graph, node))


def _unstable_inputs(net: Network, bounds: Bounds) -> list[tuple[str, npt.NDArray[np.int64]]]:
    """(node, indices) of still-unstable ReLU pre-activations and MaxPool inputs, in order."""
    out = []
    for name, op in net.items():
        if isinstance(op, (ops.Relu, ops.MaxPool)):
            l, u = bounds.flat(op.inputs[0])
            idx = np.flatnonzero((l < 0) & (u > 0)) if isinstance(op, ops.Relu) \
                else np.flatnonzero(u > l)
            if len(idx) and _behind_activation(net, op.inputs[0]):
                out.append((op.inputs[0], idx))
    return out


def _solver_tighten(net: Network, bounds: Bounds, box: tuple[FloatArray, FloatArray],
                    levels: Sequence[str], deadline: float, per_neuron_s: float | None,
                    backend: str) -> Bounds:
    """Escalate layer by layer: tighten unstable neurons, re-propagate symbolically."""
    solves = 0
    for level in levels:
        exact = level == "mip"
        layer = 0
        while True:
            pending = _unstable_inputs(net, bounds)
            if layer >= len(pending) or time.perf_counter() >= deadline:
                break
            node, idx = pending[layer]
            lower, upper, n = _tighten_node(net, bounds, box, node, idx, exact, deadline,
                                            per_neuron_s, backend)
            solves += n
            bounds = _with(bounds, node, lower, upper, net, level)
            bounds = _solver_free(net, box[0], box[1], "symbolic", base=bounds)
            layer += 1
    bounds.details["solves"] = solves
    return bounds


def compute_bounds(net: Network, lower: npt.ArrayLike, upper: npt.ArrayLike, *,
                   method: str = "progressive", time_limit_s: float | None = None,
                   per_neuron_s: float | None = None, backend: str = "highs",
                   levels: Sequence[str] = ("lp",)) -> Bounds:
    """Sound bounds of every node over the input box `[lower, upper]`.

    Parameters
    ----------
    net : Network
    lower, upper : array
        The input box (input shape or flat).
    method : {"interval", "symbolic", "lp", "mip", "progressive"}
        interval < symbolic < lp < mip in tightness and cost. "progressive" (default)
        runs interval, then symbolic, then the solver `levels` (default LP only; add
        "mip" to escalate further) on still-unstable neurons until `time_limit_s`.
    time_limit_s : float, optional
        Budget for solver-based tightening; neurons not reached keep their bounds.
    per_neuron_s : float, optional
        Limit for one neuron's solve (a timed-out solve keeps the best proven bound).
    backend : str
        Solver for the LP/MIP solves ("highs" default: fastest LP re-solves).

    Returns
    -------
    Bounds

    Example
    -------
    >>> b = compute_bounds(net, x - 0.1, x + 0.1, method="symbolic")
    >>> b.relu_cases
    """
    if method not in METHODS:
        raise InvalidInputError(f"`method` must be one of {', '.join(METHODS)}; got {method!r}.")
    if time_limit_s is not None and not time_limit_s > 0:
        raise InvalidInputError(f"`time_limit_s` must be > 0 or None; got {time_limit_s!r}.")
    start = time.perf_counter()
    lo = np.asarray(lower, dtype=np.float64).reshape(-1)
    hi = np.asarray(upper, dtype=np.float64).reshape(-1)
    first = "interval" if method == "interval" else "symbolic"
    bounds = _solver_free(net, lo, hi, first)
    if method in ("lp", "mip", "progressive"):
        deadline = start + (time_limit_s if time_limit_s is not None else np.inf)
        chosen = {"lp": ("lp",), "mip": ("mip",), "progressive": tuple(levels)}[method]
        bounds = _solver_tighten(net, bounds, (lo, hi), chosen, deadline, per_neuron_s, backend)
    return Bounds(bounds.pre, _cases(net, bounds.pre), method, time.perf_counter() - start,
                  dict(bounds.details))


bounds = compute_bounds
