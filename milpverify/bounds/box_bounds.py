"""Sound CROWN bounds of a chain network's last node over many input boxes at once (numpy).

Input splitting (`milpverify.vnn.input_split`) bounds thousands of small boxes of a small
network; `symbolic_bounds` costs milliseconds per box (per-node Python, sparse bookkeeping),
so this module redoes the same back-substitution for a *chain* (affine maps and ReLUs, each
node reading the one before) with a leading batch axis: one pass bounds B boxes.

Method and rounding are those of `milpverify.bounds.symbolic` (see its module docstring):
every pre-activation node and the last node are bounded by back-substitution of the rows
``[I; -I]`` through CROWN relaxations (`relax_relu`, adaptive lower slope, chord upper line
with an outward-rounded intercept) and intersected with the outward-rounded interval rule.
Each backward step adds its rounding error magnitude to ``E`` (``|L| (|M| mag + |b|)`` for an
affine map, ``|L| (|a| mag + |s| mag + |t|)`` for a relaxed ReLU, then ``|d|``), and the final
concretisation widens by ``2 gamma(N + 2) (|A| (|c| + r) + |d| + E) + eta`` with ``N`` the
largest node size + 3 and rounds outward, so the bounds hold for every real input of each box.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from milpverify.bounds.box_alpha import ITERATIONS, optimise_chain_slopes
from milpverify.bounds.interval import UNDERFLOW_SLACK, centre_radius, gamma, round_down, round_up
from milpverify.bounds.symbolic import relax_relu
from milpverify.ir import ops
from milpverify.ir.network import Network
from milpverify.ir.ops import FloatArray


@dataclass(frozen=True)
class Chain:
    """A network as a list of layers ``("affine", W, b)`` (dense W) or ``("relu",)``."""

    layers: tuple[tuple[object, ...], ...]
    input_size: int
    n_terms: float


#: Most weights (entries of the dense layer matrices) `as_chain` makes: 160 MB of float64.
#: A convolution becomes a dense matrix here, which a CIFAR-size CNN would make too large.
MAX_CHAIN_WEIGHTS = 20_000_000


def is_chain(net: Network, max_weights: int = MAX_CHAIN_WEIGHTS) -> bool:
    """Whether `as_chain` takes `net` (checked on the graph, no matrix is made)."""
    return _chain_ops(net, max_weights) is not None


def _chain_ops(net: Network, max_weights: int) -> list[ops.Op] | None:
    """The ops after the input when every one is an affine map (`LinearOp`, not a
    `Permute`) or a ReLU reading the op just before it, the last is affine and the dense
    matrices hold at most `max_weights` entries; else None."""
    order = list(net.order)
    if not order or not isinstance(net.op(order[0]), ops.Input) or order[-1] != net.output:
        return None
    chain: list[ops.Op] = []
    for prev, name in pairwise(order):
        op = net.op(name)
        if tuple(op.inputs) != (prev,):
            return None
        if isinstance(op, ops.LinearOp) and not isinstance(op, ops.Permute):
            max_weights -= op.size * net.op(prev).size
            if max_weights < 0:
                return None
        elif not isinstance(op, ops.Relu):
            return None
        chain.append(op)
    return chain if chain and not isinstance(chain[-1], ops.Relu) else None


def as_chain(net: Network, max_weights: int = MAX_CHAIN_WEIGHTS) -> Chain | None:
    """`net` as a `Chain`, or None when some node is not an affine map or a ReLU, does not
    read the node just before it (then the per-box `symbolic_bounds` must be used), or the
    dense layer matrices would hold more than `max_weights` entries."""
    chain = _chain_ops(net, max_weights)
    if chain is None:
        return None
    layers: list[tuple[object, ...]] = []
    for op in chain:
        if isinstance(op, ops.Relu):
            layers.append(("relu",))
            continue
        assert isinstance(op, ops.LinearOp)
        matrix, bias = op.linear_map
        dense = matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)
        layers.append(("affine", np.asarray(dense, dtype=np.float64),
                       np.asarray(bias, dtype=np.float64).reshape(-1)))
    sizes = [net.op(n).size for n in net.order]
    return Chain(tuple(layers), int(net.input_size), float(max(sizes) + 3))


@dataclass(frozen=True)
class BoxBounds:
    """Bounds of the chain's last node over B boxes.

    ``lower``/``upper`` are (B, m). ``coef`` (B, m, n) holds the input coefficients of the
    linear lower bound ``y_k >= coef_k x + const_k`` of each output (before concretisation):
    ``coef * width`` says how much each input dimension costs the bound (split scoring), and
    the box vertex minimising ``coef_k x`` is where the relaxation is smallest (attack starts).
    """

    lower: FloatArray
    upper: FloatArray
    coef: FloatArray


def _rows_dot(coef: FloatArray, vec: FloatArray) -> FloatArray:
    """``coef @ vec`` per box: coef (R, n) shared or (B, R, n), vec (B, n) -> (B, R)."""
    if coef.ndim == 2:
        return vec @ coef.T  # type: ignore[no-any-return]
    return np.matmul(coef, vec[:, :, None])[:, :, 0]  # type: ignore[no-any-return]


def _interval_affine(w: FloatArray, b: FloatArray, lo: FloatArray, hi: FloatArray,
                     n_terms: float) -> tuple[FloatArray, FloatArray]:
    """Outward-rounded interval image of ``W x + b`` for every box (rows of lo/hi)."""
    c, r = centre_radius(lo, hi)
    abs_w = np.abs(w)
    mid = c @ w.T + b
    spread = r @ abs_w.T
    slack = 2.0 * gamma(n_terms + 2.0) * ((np.abs(c) + r) @ abs_w.T + np.abs(b)) + UNDERFLOW_SLACK
    return round_down(mid - spread - slack), round_up(mid + spread + slack)


def _backsubstitute(chain: Chain, target: int, state: list[tuple[FloatArray, FloatArray]],
                    relax: dict[int, tuple[FloatArray, FloatArray, FloatArray]],
                    rows: FloatArray | None = None,
                    split_terms: dict[int, FloatArray] | None = None
                    ) -> tuple[FloatArray, FloatArray]:
    """Lower bounds of the rows ``[I; -I]`` of node `target` (index into `state`; layer
    ``target - 1`` computes it) over every box, and the input coefficients of those rows;
    with `rows` (B, R, m), of those rows of the node instead (one set per box).

    `split_terms[k]` (B, n_k) is added to the coefficients of ReLU layer k's input once the
    back-substitution reaches it: ``-beta * sign`` of a ReLU-split region (`Combination`),
    a term that is <= 0 on the region, so the bound holds on the region.

    Returns (low (B, 2m), coef (B or 1, 2m, n)) where ``low[:, :m]`` bounds the node below
    and ``-low[:, m:]`` above (with `rows`: low (B, R), coef (B, R, n)).
    """
    n_boxes = state[0][0].shape[0]
    m = state[target][0].shape[1]
    coef: FloatArray = np.vstack([np.eye(m), -np.eye(m)]) if rows is None else rows
    const = np.zeros((n_boxes, coef.shape[-2]))
    err = np.zeros((n_boxes, coef.shape[-2]))
    for k in range(target - 1, -1, -1):  # layer k maps node k to node k + 1
        layer = chain.layers[k]
        lo, hi = state[k]
        mag = np.maximum(np.abs(lo), np.abs(hi))
        abs_coef = np.abs(coef)
        if layer[0] == "affine":
            w, b = layer[1], layer[2]
            assert isinstance(w, np.ndarray) and isinstance(b, np.ndarray)
            err = err + _rows_dot(abs_coef, mag @ np.abs(w).T + np.abs(b))
            const = const + (coef @ b)
            coef = (coef.reshape(-1, w.shape[0]) @ w).reshape(*coef.shape[:-1], w.shape[1])
        else:
            slope_lo, slope_hi, icpt = relax[k]
            pos = np.maximum(coef, 0.0)
            neg = np.minimum(coef, 0.0)
            err = err + _rows_dot(abs_coef, (np.abs(slope_lo) + np.abs(slope_hi)) * mag
                                  + np.abs(icpt))
            const = const + _rows_dot(neg, icpt)
            coef = pos * slope_lo[:, None, :] + neg * slope_hi[:, None, :]
            if split_terms is not None and k in split_terms:
                coef = coef + split_terms[k][:, None, :]
                err = err + _rows_dot(np.abs(coef), mag)
        err = err + np.abs(const)
    c, r = centre_radius(*state[0])
    abs_coef = np.abs(coef)
    mid = _rows_dot(coef, c) + const
    spread = _rows_dot(abs_coef, r)
    magnitude = _rows_dot(abs_coef, np.abs(c) + r) + np.abs(const) + err
    slack = 2.0 * gamma(chain.n_terms + 2.0) * magnitude + UNDERFLOW_SLACK
    low = round_down(mid - spread - slack)
    return low, coef if coef.ndim == 3 else coef[None]


def chain_bounds(chain: Chain, lower: FloatArray, upper: FloatArray) -> BoxBounds:
    """CROWN bounds of the chain's last node over the boxes ``lower[i] <= x <= upper[i]``.

    Parameters
    ----------
    chain : Chain
    lower, upper : (B, n) float64 arrays, ``lower <= upper``.

    Returns
    -------
    BoxBounds
        Sound for every real point of each box (module docstring).
    """
    return chain_pass(chain, lower, upper).bounds


@dataclass(frozen=True)
class ChainPass:
    """One CROWN pass over B boxes: ``state[k]`` the (B, n_k) bounds of layer k's input
    (``state[-1]`` the last node's), ``relax[k]`` the relaxation (lower slope, upper slope,
    upper intercept) of ReLU layer k, and the last node's `BoxBounds`."""

    state: list[tuple[FloatArray, FloatArray]]
    relax: dict[int, tuple[FloatArray, FloatArray, FloatArray]]
    bounds: BoxBounds


def chain_pass(chain: Chain, lower: FloatArray, upper: FloatArray,
               inherit: dict[int, tuple[FloatArray, FloatArray]] | None = None,
               crown: npt.NDArray[np.bool_] | None = None, lower_only: bool = False
               ) -> ChainPass:
    """`chain_bounds` with the intermediate bounds and relaxations kept (`optimised_margins`
    starts from them).

    `inherit` gives, per ReLU layer k, (B, n_k) bounds of its input known to hold on each box
    (those of a box containing it: a sub-box's range lies in its parent's); they are
    intersected with the bounds computed here. With `crown` (B,) only the boxes where it is
    True get CROWN back-substitution for the ReLU inputs, the others the (inherited and)
    interval bounds alone; the last node is always bounded by CROWN. With `lower_only`, only
    its lower bound is (the upper one stays the interval rule's: half the last step's cost).
    """
    lower = np.atleast_2d(np.asarray(lower, dtype=np.float64))
    upper = np.atleast_2d(np.asarray(upper, dtype=np.float64))
    state: list[tuple[FloatArray, FloatArray]] = [(lower, upper)]
    relax: dict[int, tuple[FloatArray, FloatArray, FloatArray]] = {}
    last = len(chain.layers)
    coef = np.zeros((lower.shape[0], 0, lower.shape[1]))
    for k, layer in enumerate(chain.layers):
        lo, hi = state[k]
        if layer[0] == "relu":
            relax[k] = relu_relaxation(lo, hi)
            state.append((np.maximum(lo, 0.0), np.maximum(hi, 0.0)))
            continue
        w, b = layer[1], layer[2]
        assert isinstance(w, np.ndarray) and isinstance(b, np.ndarray)
        new_lo, new_hi = _interval_affine(w, b, lo, hi, chain.n_terms)
        if inherit is not None and k + 1 in inherit:
            new_lo = np.maximum(new_lo, inherit[k + 1][0])
            new_hi = np.minimum(new_hi, inherit[k + 1][1])
        state.append((new_lo, new_hi))
        if k + 1 == last or chain.layers[k + 1][0] == "relu":
            if k == 0:  # an affine map of the input: the interval rule is its exact range
                coef = np.broadcast_to(w, (lower.shape[0], *w.shape))
                continue
            m = new_lo.shape[1]
            if k + 1 == last and lower_only:
                eye = np.broadcast_to(np.eye(m), (lower.shape[0], m, m))
                low, coef = _backsubstitute(chain, k + 1, state, relax, rows=eye)
                state[k + 1] = (np.maximum(new_lo, low), new_hi)
            elif k + 1 == last:
                low, rows = _backsubstitute(chain, k + 1, state, relax)
                state[k + 1] = (np.maximum(new_lo, low[:, :m]), np.minimum(new_hi, -low[:, m:]))
                coef = rows[:, :m]
            else:
                state[k + 1] = _crown_unstable(chain, k + 1, state, relax, crown)
    out_lo, out_hi = state[-1]
    coef = np.broadcast_to(coef, (lower.shape[0], *coef.shape[1:]))
    return ChainPass(state, relax, BoxBounds(out_lo, out_hi, coef))


def _crown_unstable(chain: Chain, target: int, state: list[tuple[FloatArray, FloatArray]],
                    relax: dict[int, tuple[FloatArray, FloatArray, FloatArray]],
                    crown: npt.NDArray[np.bool_] | None) -> tuple[FloatArray, FloatArray]:
    """The bounds of ReLU input node `target` with CROWN's intersected in, for the boxes where
    `crown` is True (all when None) and only for the neurons the bounds so far leave unstable:
    a stable neuron's relaxation is exact already, and back-substituting only the unstable
    rows (padded to the batch's largest count) costs a fraction of ``[I; -I]``."""
    new_lo, new_hi = state[target]
    unstable = (new_lo < 0) & (new_hi > 0)
    if crown is not None:
        unstable &= crown[:, None]
    count = unstable.sum(axis=1)
    boxes = np.flatnonzero(count)
    if boxes.size == 0:
        return new_lo, new_hi
    width = int(count.max())
    # per box, its unstable neurons first (stable sort keeps index order), then padding
    order = np.argsort(~unstable[boxes], axis=1, kind="stable")[:, :width]
    valid = np.arange(width)[None, :] < count[boxes][:, None]
    m = new_lo.shape[1]
    rows = np.zeros((boxes.size, 2 * width, m))
    at = np.arange(boxes.size)[:, None]
    rows[at, np.arange(width)[None, :], order] = np.where(valid, 1.0, 0.0)
    rows[at, width + np.arange(width)[None, :], order] = np.where(valid, -1.0, 0.0)
    sub_state = [(lo[boxes], hi[boxes]) for lo, hi in state]
    sub_relax = {j: (p[0][boxes], p[1][boxes], p[2][boxes]) for j, p in relax.items()}
    low, _ = _backsubstitute(chain, target, sub_state, sub_relax, rows=rows)
    new_lo, new_hi = new_lo.copy(), new_hi.copy()
    sel_b, sel_u = np.nonzero(valid)
    neuron = order[sel_b, sel_u]
    box = boxes[sel_b]
    new_lo[box, neuron] = np.maximum(new_lo[box, neuron], low[sel_b, sel_u])
    new_hi[box, neuron] = np.minimum(new_hi[box, neuron], -low[sel_b, width + sel_u])
    return new_lo, new_hi


@dataclass(frozen=True)
class Combination:
    """Per (box, disjunct) pair: non-negative weights (P, R) of the last node's rows and the
    lower slopes ``slopes[k]`` (P, n_k) in [0, 1] of every ReLU layer k (used where the
    bounds leave a neuron unstable); over ReLU-split regions also the multipliers
    ``betas[k]`` (P, n_k) >= 0 of the splits ``signs[k]`` (+1: ``z >= 0``, -1: ``z <= 0``,
    0: not split)."""

    weights: FloatArray
    slopes: dict[int, FloatArray]
    betas: dict[int, FloatArray] = field(default_factory=dict)
    signs: dict[int, FloatArray] = field(default_factory=dict)

    def take(self, index: npt.NDArray[np.int64]) -> Combination:
        """The pairs ``index`` (e.g. repeated for sub-boxes)."""
        return Combination(self.weights[index], {k: v[index] for k, v in self.slopes.items()},
                           {k: v[index] for k, v in self.betas.items()},
                           {k: v[index] for k, v in self.signs.items()})


def combined_lower(chain: Chain, crown: ChainPass, boxes: npt.NDArray[np.int64],
                   combo: Combination) -> FloatArray:
    """Sound lower bounds of ``weights[i] . s`` over box ``boxes[i]`` of the pass `crown`,
    with ``combo.slopes`` as the unstable ReLUs' lower lines (any slope in [0, 1] is valid,
    so a combination searched on a box also bounds its sub-boxes). Outward-rounded
    back-substitution as in `chain_bounds` (module docstring)."""
    state = [(lo[boxes], hi[boxes]) for lo, hi in crown.state]
    relax = {k: (p[0][boxes], p[1][boxes], p[2][boxes]) for k, p in crown.relax.items()}
    return region_lower(chain, state, relax, combo)


def region_lower(chain: Chain, state: list[tuple[FloatArray, FloatArray]],
                 relax: dict[int, tuple[FloatArray, FloatArray, FloatArray]],
                 combo: Combination) -> FloatArray:
    """`combined_lower` on explicit per-box node bounds `state` and CROWN relaxations
    `relax`; with ``combo.signs``, a bound of ``weights[i] . s`` over the points of box i
    whose ReLU inputs satisfy the splits (``state`` clipped to them), by the Lagrangian term
    ``beta * (-sign * z) <= 0`` that any ``beta >= 0`` makes sound."""
    tuned: dict[int, tuple[FloatArray, FloatArray, FloatArray]] = {}
    for k, (slope_lo, slope_hi, icpt) in relax.items():
        lo, hi = state[k]
        slopes = np.clip(combo.slopes[k], 0.0, 1.0)
        tuned[k] = (np.where((lo < 0) & (hi > 0), slopes, slope_lo), slope_hi, icpt)
    terms = {k: -np.maximum(combo.betas[k], 0.0) * sign for k, sign in combo.signs.items()}
    weights = np.maximum(combo.weights, 0.0)
    low, _ = _backsubstitute(chain, len(chain.layers), state, tuned, rows=weights[:, None, :],
                             split_terms=terms)
    return low[:, 0]  # type: ignore[no-any-return]


def optimised_margins(chain: Chain, crown: ChainPass, boxes: npt.NDArray[np.int64],
                      row_mask: npt.NDArray[np.bool_], iterations: int = ITERATIONS
                      ) -> tuple[FloatArray, Combination]:
    """Sound lower bounds of ``lambda . s`` over the boxes ``boxes`` of the CROWN pass `crown`
    (`chain_pass`), with the row weights ``lambda`` (zero outside ``row_mask[i]``) and the
    unstable ReLUs' lower slopes searched per box by `optimise_chain_slopes`, and the
    weights and slopes found.

    A positive value proves that on box ``boxes[i]`` no point satisfies all the rows of
    ``row_mask[i]`` (the weights are non-negative, so at every point some masked row is
    positive). The value is `combined_lower`'s: the search's own float arithmetic is never
    trusted.
    """
    state = [(lo[boxes], hi[boxes]) for lo, hi in crown.state]
    slopes, weights = optimise_chain_slopes(chain.layers, {k: state[k] for k in crown.relax},
                                            state[0][0], state[0][1], row_mask, iterations,
                                            start=crown.bounds.lower[boxes])
    combo = Combination(weights, slopes)
    return combined_lower(chain, crown, boxes, combo), combo


def relu_relaxation(lo: FloatArray, hi: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """`relax_relu` on (B, n) bounds: (lower slope, upper slope, upper intercept)."""
    relaxation = relax_relu(None, lo, hi)  # type: ignore[arg-type]
    assert isinstance(relaxation.lo, np.ndarray) and isinstance(relaxation.hi, np.ndarray)
    return relaxation.lo, relaxation.hi, relaxation.c_hi
