"""A relaxed top-K query at a point, its witness check, and the gradient search that seeds its
upper bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from milpverify.core.ascent import ascend, bisect_radius, signed_step
from milpverify.core.query import Query, query_box
from milpverify.core.region import (
    affine_rows,
    input_gradient,
    region_constraints,
    region_of,
    violated_rows,
)
from milpverify.core.witness import WitnessCheck, along_ray, check_point
from milpverify.encode.model import MilpModel
from milpverify.encode.objective import add_distance
from milpverify.errors import InvalidInputError
from milpverify.ir.network import Network
from milpverify.ir.ops import FloatArray, IntArray
from milpverify.properties.spec import Affinity, Property, RelaxedTopK
from milpverify.solve import get_backend
from milpverify.solve.base import SolveOptions


# ============================================================================ the query at x
@dataclass(frozen=True)
class TopKQuery:
    """`order` (labels by logit at x, descending, stable) and the certifying `ks`."""

    order: tuple[int, ...]
    ks: tuple[int, ...]
    name: str

    @property
    def rank(self) -> IntArray:
        r = np.empty(len(self.order), dtype=np.int64)
        r[list(self.order)] = np.arange(len(self.order))
        return r

    def violation(self, logits: FloatArray) -> float:
        """`min_{k in ks} (max_{j not in T_k} y_j - min_{i in T_k} y_i)`: >= 0 iff violated.

        `+inf` when `ks` is empty (nothing certifies); `-inf` when k = #classes is in ks.
        """
        y = np.asarray(logits, dtype=np.float64).reshape(-1)[list(self.order)]
        best = math.inf
        for k in self.ks:
            outside = y[k:].max() if k < len(y) else -math.inf
            best = min(best, float(outside - y[:k].min()))
        return best

    def active_pair(self, logits: FloatArray) -> tuple[int, int]:
        """(i, j) attaining the violation: the pair whose `y_j - y_i` an attack should raise."""
        y = np.asarray(logits, dtype=np.float64).reshape(-1)
        best, pair = math.inf, (self.order[0], self.order[-1])
        for k in self.ks:
            if k >= len(self.order):
                continue
            inside, outside = list(self.order[:k]), list(self.order[k:])
            i = inside[int(np.argmin(y[inside]))]
            j = outside[int(np.argmax(y[outside]))]
            if y[j] - y[i] < best:
                best, pair = y[j] - y[i], (i, j)
        return pair


def topk_query(net: Network, x: npt.ArrayLike, prop: Property) -> TopKQuery:
    """The labels ordered by their logit at x and the certifying k's of `prop` there.

    Raises
    ------
    InvalidInputError
        `prop` is not a RelaxedTopK/Affinity or does not fit the network's classes.

    Example
    -------
    >>> topk_query(net, x, RelaxedTopK(2)).ks
    (1, 2)
    """
    x = net.as_batch(x)[0]
    if not isinstance(prop, (RelaxedTopK, Affinity)):
        raise InvalidInputError(f"`prop` must be a RelaxedTopK or Affinity; got "
                                f"{type(prop).__name__}.")
    prop.validate(net.num_classes)
    logits = net.forward(x)[0]
    order = tuple(int(c) for c in np.argsort(-logits, kind="stable"))
    return TopKQuery(order, prop.certifying_ks(order), prop.name)


# ============================================================================ witnesses
def check_property_witness(net: Network, x: npt.ArrayLike, witness: npt.ArrayLike,
                           prop: Property | TopKQuery, *,
                           domain: tuple[float, float] | None = (0.0, 1.0), norm: str = "linf",
                           required_margin: float = 0.0) -> WitnessCheck:
    """Re-run `witness` and decide whether it violates `prop` at x.

    The witness is rounded to float32 toward x and checked as `check_witness` does
    (`witness.check_point`). Verified iff it lies in `domain` and `violation >=
    required_margin` both in numpy float64 and in onnxruntime on the original model (when
    the network has an ONNX origin): every certifying top-k set of x is changed.
    `margin_numpy` / `margin_onnx` of the returned `WitnessCheck` hold the two violations,
    `adversarial_label` the witness's top-1 label.

    Example
    -------
    >>> check_property_witness(net, x, r.witness, RelaxedTopK(3)).verified
    True
    """
    x0 = net.as_batch(x)[0]
    query = prop if isinstance(prop, TopKQuery) else topk_query(net, x0, prop)

    def violation(y: FloatArray) -> tuple[float, int]:
        return query.violation(y), int(np.argmax(y))

    return check_point(net, witness, violation, centre=x0, box=domain, norm=norm,
                       required_margin=required_margin, what=f"{query.name} witness")


def _repair(net: Network, q: Query, query: TopKQuery, point: FloatArray,
            box: tuple[FloatArray, FloatArray]) -> WitnessCheck | None:
    """`witness.along_ray` for a property: the first verified point of the ray from x
    through `point`, clipped to `box`, or None."""
    return along_ray(q.x, net.as_batch(point)[0], box, lambda cand: check_property_witness(
        net, q.x, cand, query, domain=q.domain, norm=q.norm))


# ============================================================================ attack
def pgd_topk(net: Network, q: Query, query: TopKQuery, eps: float, *, steps: int = 30,
             restarts: int = 2, seed: int = 0, deadline: float = math.inf
             ) -> WitnessCheck | None:
    """L-inf PGD on the violation in the eps-box (`core.ascent.ascend` with numpy gradients:
    `core.region.input_gradient`, the gradient of the local affine map, for all restarts
    at once).

    Restart 0 starts at x, the others uniformly in the box; each step raises `y_j - y_i` of
    the pair attaining the violation by a signed step `2.5 eps / steps`. Returns the first
    candidate that passes `check_property_witness`, or None (also when `deadline` passes).
    """
    if not query.ks:
        return None
    low, high = query_box(q, eps)
    rng = np.random.default_rng(seed)
    z = np.repeat(q.x[None], restarts, axis=0)
    if restarts > 1:
        z[1:] = rng.uniform(low, high, size=(restarts - 1, q.x.size))

    def violation(z: FloatArray, with_grad: bool) -> tuple[FloatArray, FloatArray | None]:
        logits = net.forward(z)
        value = np.array([query.violation(row) for row in logits])
        if not with_grad:
            return value, None
        out_grad = np.zeros((len(z), net.num_classes))
        for r, row in enumerate(logits):
            i, j = query.active_pair(row)
            out_grad[r, j], out_grad[r, i] = 1.0, -1.0
        return value, input_gradient(net, z, out_grad)

    def accept(z: FloatArray, value: FloatArray) -> WitnessCheck | None:
        for r in np.flatnonzero(value >= 0):
            check = check_property_witness(net, q.x, z[r], query, domain=q.domain, norm=q.norm)
            if check.verified:
                return check
        return None

    return ascend(z, violation, signed_step(low, high, lambda it: 2.5 * eps / steps), steps,
                  accept, deadline)


def _pgd_bisect(net: Network, q: Query, query: TopKQuery, eps: float, steps: int,
                deadline: float = math.inf) -> WitnessCheck | None:
    """PGD at `eps`, then `steps` bisections on [0, best distance] (none past `deadline`);
    the closest witness."""
    return bisect_radius(lambda r: pgd_topk(net, q, query, r, deadline=deadline), eps, steps,
                         deadline)[0]


def _refine_in_region(net: Network, q: Query, query: TopKQuery, found: WitnessCheck, *,
                     max_rounds: int = 30) -> WitnessCheck:
    """The nearest violating point of `found`'s activation region, if it is closer.

    `verify._refine` for a property: in the region the network is affine, `y = A x' + c`;
    keeping, for each certifying k, the pair (i, j) that changes T_k most at the witness,

        minimise ||x' - x||  s.t.  (A_j - A_i) x' + c_j - c_i >= 0 (each kept pair),
                                   region rows, x' in domain

    is an LP (region rows added lazily, as in `restriction.lp_restriction`). Its point is
    re-checked (`_repair`); `found` is returned unless a verified closer point results.
    """
    w = net.as_batch(found.witness)[0]
    region, values = region_of(net, w)
    y = values[net.output]
    pairs = set()
    for k in query.ks:
        inside, outside = list(query.order[:k]), list(query.order[k:])
        if not outside:
            return found
        pairs.add((inside[int(np.argmin(y[inside]))], outside[int(np.argmax(y[outside]))]))
    g = np.zeros((len(pairs), net.num_classes))
    for r, (i, j) in enumerate(sorted(pairs)):
        g[r, j], g[r, i] = 1.0, -1.0
    a, c = affine_rows(net, region, net.output, g)
    model = MilpModel()
    xv = model.add_vars(net.input_size, q.domain[0], q.domain[1], name="input")
    model.add_matrix_rows(a, xv, -c, np.inf, name="topk/kept_pairs")
    add_distance(model, q.x, xv, q.norm, found.distance)
    added: set[tuple[str, int]] = set()
    point = None
    for _ in range(max_rounds):
        result = get_backend("highs").solve(model, SolveOptions())
        if result.x is None:
            return found
        point = result.x[xv]
        fresh = []
        for name, idx in violated_rows(net, region, point):
            new = np.array([i for i in idx if (name, int(i)) not in added], dtype=np.int64)
            if len(new):
                fresh.append((name, new))
        if not fresh:
            break
        for name, idx in fresh:
            ra, rc = region_constraints(net, region, name, idx)
            model.add_matrix_rows(ra, xv, -rc, np.inf, name="region")
            added.update((name, int(i)) for i in idx)
    if point is None:
        return found
    check = _repair(net, q, query, point, query_box(q, found.distance))
    return check if check is not None and check.distance < found.distance else found
