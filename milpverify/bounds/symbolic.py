"""Symbolic (CROWN-style) bounds by backward linear relaxation, sound under float64 rounding.

Method
------
Nodes are visited in `net.order`. Each node first gets the interval rule on its
inputs' (already tightened) bounds, intersected with `base`. Every *target* node
(input of a ReLU/MaxPool, and the output) is then bounded by back-substitution:
starting from the coefficient rows `Lambda = [I; -I]` on the target `t`, a lower
bound of `Lambda y_t` is pushed backwards through the DAG (reverse topological
order over the ancestors of `t`) until it is a linear function of the input,
`Lambda y_t >= A x + d`, which is minimised over the box:
`A c - |A| r + d`. Rows `m..2m` give upper bounds via `u = -lower(-y_t)`.

Backward rules for a node `v` holding coefficients `Lambda_v` (rows x size(v)):

* Linear `y = M x + b`: `Lambda_x += Lambda_v M`, `d += Lambda_v b`.
* Add `y = a + b`: `Lambda_a += Lambda_v`, `Lambda_b += Lambda_v`.
* Concat: `Lambda_v` scattered back to the inputs' columns.
* ReLU / MaxPool, relaxed by `P_lo x + c_lo <= y <= P_hi x + c_hi` on the input's
  bounds: with `Lambda+ = max(Lambda_v, 0)`, `Lambda- = min(Lambda_v, 0)`,
  `Lambda_x += Lambda+ P_lo + Lambda- P_hi`, `d += Lambda+ c_lo + Lambda- c_hi`.

Relaxations (`relax_relu`, `relax_maxpool`):

* ReLU with bounds `[l, u]`: active (`l >= 0`) `y = x`; inactive (`u <= 0`) `y = 0`;
  unstable: `alpha x <= y <= s x + t` with `alpha = 1 if u > -l else 0` (CROWN's
  adaptive choice), `s = u / (u - l)` and `t = -s l` (the chord).
* MaxPool window `W` with input bounds `[l_i, u_i]`: let `j = argmax_W l_i`. If
  `l_j >= u_i` for every other `i in W`, `y = x_j` exactly; otherwise
  `x_j <= y <= max_W u_i`.

The result is intersected with the interval bounds, so symbolic is never looser.

Soundness against rounding
--------------------------
The claim is about exact reals: for every real `x` in the box, the true value of
`y_t` lies in the returned interval. Write `|y_x| <= mag_x = max(|l_x|, |u_x|)`
(from sound bounds computed earlier) and `gamma(k) = k u / (1 - k u)`.

1. *Relaxation lines are valid for their float coefficients.* `alpha` is 0 or 1;
   the upper line uses the computed float `s` and an intercept
   `t >= max(-s l, u - s u)` rounded upward, so `s x + t >= relu(x)` holds at both
   ends of `[l, u]` exactly, hence on all of it. MaxPool lines have 0/1
   coefficients and a float constant.
2. *Each backward step is exact up to a tracked error.* The invariant is
   `Lambda y_t >= sum_v Lambda~_v y_v + d~ - E` for all inputs in the box, with
   computed `Lambda~`, `d~` and a vector `E` of non-negative error terms. A step
   replaces `Lambda~_v y_v` by the exactly valid `Lambda~_v M y_x + Lambda~_v b`
   (or the relaxation), but stores `fl(Lambda~_v M)` and `fl(Lambda~_v b)`. For an
   inner dimension `n`, `|fl(Lambda~_v M) - Lambda~_v M| <= gamma(n) |Lambda~_v| |M|`
   entry-wise (any summation order, with or without FMA), so the value error is at
   most `gamma(n) |Lambda~_v| (|M| mag_x + |b|)`. Relaxation steps give
   `gamma(n + 1) |Lambda~_v| (|P_lo| mag_x + |P_hi| mag_x + |c_lo| + |c_hi|)`.
   Merging coefficients of a node read twice (`fl(a + b)`) adds at most
   `gamma(1) |sum| mag_x`, and each update `fl(d + inc)` at most `gamma(1) |d_new|`.
   The pass accumulates the bracketed magnitudes in `E~` (computed in float).
3. *Concretisation.* `A~ c - |A~| r + d~` is evaluated with `sound_affine_range`
   using `gamma(N + 2)` for every term, `N` = the largest node size + 3 (which
   bounds every inner dimension above), with `E~` added to the magnitude:
   slack `= 2 gamma(N + 2) (|A~| (|c| + r) + |d~| + E~) + eta`, then `nextafter`
   outward. Since every step's `gamma(n) <= gamma(N + 2)`, the slack covers both
   the concretisation and all back-substitution errors; the factor 2 covers the
   relative error of computing `E~` and the magnitudes in float (sums of
   non-negative terms, relative error far below 1), and `eta` covers underflow.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from milpverify.bounds.base import Bounds
from milpverify.bounds.interval import (
    Interval,
    absolute,
    centre_radius,
    check_box,
    interval_bounds,
    make_bounds,
    matvec,
    propagate,
    round_down,
    round_up,
    sound_affine_range,
)
from milpverify.errors import InvalidInputError
from milpverify.ir import ops
from milpverify.ir.network import Network
from milpverify.ir.ops import FloatArray

Coef = Union[FloatArray, sp.csr_array]
"""Backward coefficient rows: dense ndarray or sparse CSR, shape (rows, size of node)."""

DENSE_FRACTION = 0.25
"""Sparse coefficient matrices denser than this are converted to dense arrays."""

DENSE_START = 64
"""Targets of at most this many elements start back-substitution from a dense `[I; -I]`:
building the sparse one cost more than the whole pass on small layers (node propagation
runs thousands of passes on layers of tens of neurons)."""


# ---------------------------------------------------------------------------- relaxations
@dataclass(frozen=True)
class LinearRelaxation:
    """`P_lo x + c_lo <= y <= P_hi x + c_hi` for a nonlinear node `y = f(x)` on its input box.

    `lo` / `hi` are either 1-D arrays (diagonal `P`, element-wise ops) or sparse
    (size, in_size) matrices; `c_lo` / `c_hi` have the node's size.
    """

    lo: FloatArray | sp.csr_array
    c_lo: FloatArray
    hi: FloatArray | sp.csr_array
    c_hi: FloatArray


def relax_relu(op: ops.Relu, lower: FloatArray, upper: FloatArray) -> LinearRelaxation:
    """CROWN relaxation of `y = max(x, 0)` for `x in [l, u]` = (`lower`, `upper`).

    Active (`l >= 0`): `y = x`. Inactive (`u <= 0`): `y = 0`. Unstable:
    `alpha x <= y <= s x + t`, `alpha = 1 if u > -l else 0`, `s = fl(u / (u - l))`
    and `t = up(max(up(-s l), up(u - down(s u))))` so that the line lies above
    `relu` at `x = l` and `x = u` in exact arithmetic (`up`/`down` = `nextafter`).
    """
    active = lower >= 0
    unstable = ~active & (upper > 0)
    alpha = np.where(active | (unstable & (upper > -lower)), 1.0, 0.0)
    slope = active.astype(np.float64)
    icpt = np.zeros_like(lower)
    lu, uu = lower[unstable], upper[unstable]
    s = uu / (uu - lu)
    slope[unstable] = s
    icpt[unstable] = round_up(np.maximum(round_up(-s * lu), round_up(uu - round_down(s * uu))))
    return LinearRelaxation(alpha, np.zeros_like(lower), slope, icpt)


def relax_leaky_relu(op: ops.LeakyRelu, lower: FloatArray, upper: FloatArray
                     ) -> LinearRelaxation:
    """Relaxation of `y = x` (x >= 0) / `a x` (x < 0), per-neuron slope `a`, on `[l, u]`.

    Active: `y = x`; inactive: `y = a x`. Unstable: the chord through `(l, a l)` and `(u, u)`,
    `s = fl((u - a l) / (u - l))`, bounds from above where `f` is convex (`a <= 1`) and from
    below where it is concave (`a > 1`); its intercept is rounded outward so the line is on
    the right side of `f` at both ends in exact arithmetic. The other side is a line through
    the origin with slope `a` or 1 (any slope between them is valid; CROWN's choice: 1 if
    `u > -l`). With `a = 0` this is `relax_relu`.
    """
    a = np.asarray(op.slope, dtype=np.float64)
    active = lower >= 0
    unstable = ~active & (upper > 0)
    lo = np.where(active, 1.0, a)
    hi, c_lo, c_hi = lo.copy(), np.zeros_like(lower), np.zeros_like(lower)
    lu, uu, au = lower[unstable], upper[unstable], a[unstable]
    s = (uu - au * lu) / (uu - lu)
    t_up = round_up(np.maximum(round_up(round_up(au * lu) - round_down(s * lu)),
                               round_up(uu - round_down(s * uu))))
    t_down = round_down(np.minimum(round_down(round_down(au * lu) - round_up(s * lu)),
                                   round_down(uu - round_up(s * uu))))
    through_origin = np.where(uu > -lu, 1.0, au)
    convex = au <= 1.0
    lo[unstable] = np.where(convex, through_origin, s)
    c_lo[unstable] = np.where(convex, 0.0, t_down)
    hi[unstable] = np.where(convex, s, through_origin)
    c_hi[unstable] = np.where(convex, t_up, 0.0)
    return LinearRelaxation(lo, c_lo, hi, c_hi)


def relax_maxpool(op: ops.MaxPool, lower: FloatArray, upper: FloatArray) -> LinearRelaxation:
    """Relaxation of `y_k = max_{i in W_k} x_i` for `x in [l, u]`.

    With `j = argmax_{W_k} l_i`: if `l_j >= max_{i in W_k, i != j} u_i` then `y_k = x_j`
    (lower and upper line); else `x_j <= y_k <= max_{W_k} u_i` (constant upper bound).
    """
    windows = op.windows
    rows = np.arange(windows.shape[0])
    low_w = np.concatenate([lower, [-np.inf]])[windows]
    up_w = np.concatenate([upper, [-np.inf]])[windows]
    pos = np.argmax(low_w, axis=1)
    best = windows[rows, pos]
    others = up_w.copy()
    others[rows, pos] = -np.inf
    decided = low_w[rows, pos] >= others.max(axis=1)
    n_in = lower.size
    pick = sp.csr_array((np.ones(rows.size), (rows, best)), shape=(rows.size, n_in))
    pick_hi = sp.csr_array((np.ones(int(decided.sum())), (rows[decided], best[decided])),
                           shape=(rows.size, n_in))
    c_hi = np.where(decided, 0.0, up_w.max(axis=1))
    return LinearRelaxation(pick, np.zeros(rows.size), pick_hi, c_hi)


RELAXATIONS: dict[type[ops.Op], Callable[[Any, FloatArray, FloatArray], LinearRelaxation]] = {
    ops.Relu: relax_relu,
    ops.LeakyRelu: relax_leaky_relu,
    ops.MaxPool: relax_maxpool,
}
"""One linear relaxation rule per nonlinear op class."""


# ---------------------------------------------------------------------------- coefficient algebra
def _compact(coef: Coef) -> Coef:
    """CSR if sparse enough, else a dense ndarray."""
    if not sp.issparse(coef):
        return np.asarray(coef, dtype=np.float64)
    coef = sp.csr_array(coef)
    if coef.nnz > DENSE_FRACTION * coef.shape[0] * coef.shape[1]:
        return coef.toarray()
    return coef


def _split_sign(coef: Coef) -> tuple[Coef, Coef]:
    """`(max(coef, 0), min(coef, 0))`, exact, keeping sparsity."""
    if not sp.issparse(coef):
        return np.maximum(coef, 0.0), np.minimum(coef, 0.0)
    pos, neg = coef.copy(), coef.copy()
    pos.data = np.maximum(pos.data, 0.0)
    neg.data = np.minimum(neg.data, 0.0)
    return pos, neg


def _times(coef: Coef, matrix: FloatArray | sp.csr_array) -> Coef:
    """`coef @ P`; a 1-D `matrix` means `diag(matrix)` (column scaling)."""
    if isinstance(matrix, np.ndarray) and matrix.ndim == 1:
        if sp.issparse(coef):
            out = coef.copy()
            out.data = out.data * matrix[out.indices]
            return out
        return coef * matrix
    return _compact(coef @ matrix)


def _abs_times(matrix: FloatArray | sp.csr_array, vector: FloatArray) -> FloatArray:
    """`|P| v` (element-wise product for a diagonal `P` given as 1-D array)."""
    if isinstance(matrix, np.ndarray) and matrix.ndim == 1:
        return np.abs(matrix) * vector  # type: ignore[no-any-return]
    return matvec(absolute(matrix), vector)


def _plus(a: Coef, b: Coef) -> Coef:
    """`a + b`, sparse only if both are."""
    if sp.issparse(a) and sp.issparse(b):
        return _compact(a + b)
    as_dense = [x.toarray() if sp.issparse(x) else x for x in (a, b)]
    return as_dense[0] + as_dense[1]  # type: ignore[no-any-return]


def magnitude(interval: Interval) -> FloatArray:
    """`max(|l|, |u|)`: an upper bound of `|x|` over the interval."""
    return np.maximum(np.abs(interval[0]), np.abs(interval[1]))  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------- backward rules
@dataclass(frozen=True)
class SymbolicContext:
    """Shared state of one symbolic pass: bounds so far and relaxations of nonlinear nodes.

    `row_slopes` (set per target by `backsubstitute`) maps a ReLU node to a dense
    (rows, size) array of lower-line slopes in [0, 1], one line `y >= a_ik x` per
    coefficient row `i` (optimised slopes, `milpverify.bounds.alpha`); ReLUs not in it
    use their shared relaxation.

    `output_vertices` collects, for every back-substitution of the network's output,
    the input box vertices at which its linear bounds are attained (see
    `bound_vertices`).
    """

    state: dict[str, Interval]
    relaxations: dict[str, LinearRelaxation]
    row_slopes: dict[str, FloatArray] = field(default_factory=dict)
    output_vertices: list[FloatArray] = field(default_factory=list)


Step = tuple[list[tuple[str, Coef]], FloatArray, FloatArray]
"""(coefficients per input node, constant increment, error magnitude) of one backward step."""


def back_linear(name: str, op: ops.LinearOp, coef: Coef, ctx: SymbolicContext) -> Step:
    """`y = M x + b`: `Lambda_x = Lambda_v M`, `d += Lambda_v b`.

    Error magnitude `|Lambda_v| (|M| mag_x + |b|)`.
    """
    matrix, bias = op.linear_map
    mag_x = magnitude(ctx.state[op.inputs[0]])
    err = matvec(absolute(coef), _abs_times(matrix, mag_x) + np.abs(bias))
    return [(op.inputs[0], _times(coef, matrix))], matvec(coef, bias), err


def back_relaxed(name: str, op: ops.Op, coef: Coef, ctx: SymbolicContext) -> Step:
    """ReLU/MaxPool: `Lambda_x = Lambda+ P_lo + Lambda- P_hi`, `d += Lambda+ c_lo + Lambda- c_hi`.

    Error magnitude `|Lambda_v| (|P_lo| mag_x + |P_hi| mag_x + |c_lo| + |c_hi|)`.
    """
    relax = ctx.relaxations[name]
    pos, neg = _split_sign(coef)
    mag_x = magnitude(ctx.state[op.inputs[0]])
    rows_lo = ctx.row_slopes.get(name)
    if rows_lo is None:
        lower_part, lo_weight = _times(pos, relax.lo), _abs_times(relax.lo, mag_x)
    else:  # per-row slopes: |a_ik| <= max_i |a_ik| bounds every row's error term
        dense_pos = pos.toarray() if sp.issparse(pos) else pos
        lower_part = dense_pos * rows_lo
        lo_weight = np.max(np.abs(rows_lo), axis=0) * mag_x
    new = _plus(lower_part, _times(neg, relax.hi))
    const = matvec(pos, relax.c_lo) + matvec(neg, relax.c_hi)
    weight = (lo_weight + _abs_times(relax.hi, mag_x)
              + np.abs(relax.c_lo) + np.abs(relax.c_hi))
    return [(op.inputs[0], new)], const, matvec(absolute(coef), weight)


def back_add(name: str, op: ops.Add, coef: Coef, ctx: SymbolicContext) -> Step:
    """`y = a + b`: `Lambda_a = Lambda_b = Lambda_v` (exact)."""
    zero = np.zeros(coef.shape[0])
    return [(op.inputs[0], coef), (op.inputs[1], coef)], zero, zero


def back_concat(name: str, op: ops.Concat, coef: Coef, ctx: SymbolicContext) -> Step:
    """`y = z[index]`, `z` = the concatenated inputs: `Lambda_z = Lambda_v S`, `S[k, index_k] = 1`.

    Columns of `Lambda_z` are split back to the inputs. Error magnitude
    `|Lambda_v| mag_z[index]` (repeated indices sum coefficients).
    """
    sizes = [ctx.state[a][0].size for a in op.inputs]
    total = int(sum(sizes))
    select = sp.csr_array((np.ones(op.index.size), (np.arange(op.index.size), op.index)),
                          shape=(op.index.size, total))
    spread = _times(coef, select)
    mag_z = np.concatenate([magnitude(ctx.state[a]) for a in op.inputs])
    edges = np.cumsum([0, *sizes])
    parts = [(a, _compact(spread[:, edges[i]:edges[i + 1]])) for i, a in enumerate(op.inputs)]
    return parts, np.zeros(coef.shape[0]), matvec(absolute(coef), mag_z[op.index])


BackwardRule = Callable[[str, Any, Coef, SymbolicContext], Step]

BACKWARD_RULES: dict[type[ops.Op], BackwardRule] = {
    ops.Affine: back_linear,
    ops.Conv: back_linear,
    ops.AvgPool: back_linear,
    ops.Scale: back_linear,
    ops.Permute: back_linear,
    ops.Relu: back_relaxed,
    ops.LeakyRelu: back_relaxed,
    ops.MaxPool: back_relaxed,
    ops.Add: back_add,
    ops.Concat: back_concat,
}
"""One backward (back-substitution) rule per op class."""


# ---------------------------------------------------------------------------- one target
def _accumulate(coefs: dict[str, Coef], name: str, new: Coef, mag: FloatArray,
                err: FloatArray) -> FloatArray:
    """Add `new` to `coefs[name]`; a merge costs `|merged| mag` more error magnitude."""
    if name not in coefs:
        coefs[name] = new
        return err
    merged = _plus(coefs[name], new)
    coefs[name] = merged
    return err + matvec(absolute(merged), mag)


def ancestors(net: Network, target: str) -> set[str]:
    """`target` and every node it (transitively) reads."""
    seen, stack = {target}, [target]
    while stack:
        for arg in net.op(stack.pop()).inputs:
            if arg not in seen:
                seen.add(arg)
                stack.append(arg)
    return seen


def backsubstitute(net: Network, target: str, ctx: SymbolicContext, n_terms: float,
                   row_slopes: dict[str, FloatArray] | None = None,
                   elements: npt.NDArray[np.int64] | None = None) -> Interval:
    """Sound lower/upper bounds of node `target` by back-substitution to the input box.

    `row_slopes` (optional) gives per-row ReLU lower slopes for the `2 * size` rows
    `[I; -I]` (see `SymbolicContext`); any values in [0, 1] give sound bounds.
    `elements` (optional, without `row_slopes`) bounds only those elements of the target
    (rows `[E; -E]` of the identity's rows `E`, cheaper when few are wanted); the others
    get `(-inf, inf)`.

    Returns
    -------
    (lower, upper) : flat vectors of the target's size, rounded outward with slack
    `2 gamma(n_terms + 2) (|A| (|c| + r) + |d| + E) + eta` (module docstring).
    """
    size = net.op(target).size
    ctx.row_slopes.clear()
    ctx.row_slopes.update(row_slopes or {})
    if elements is not None:
        if row_slopes:
            raise InvalidInputError("backsubstitute: `elements` and `row_slopes` exclude "
                                    "each other")
        m = len(elements)
        pick = np.zeros((m, size))
        pick[np.arange(m), elements] = 1.0
        start: Coef = _compact(sp.csr_array(np.vstack([pick, -pick])))
    elif size <= DENSE_START:
        eye = np.eye(size)
        start = np.vstack([eye, -eye])
    else:
        sparse_eye = sp.identity(size, format="csr", dtype=np.float64)
        start = sp.csr_array(sp.vstack([sparse_eye, -sparse_eye]))
    rows = start.shape[0]
    coefs: dict[str, Coef] = {target: start}
    const = np.zeros(rows)
    err = np.zeros(rows)
    keep = ancestors(net, target)
    for name in reversed([n for n in net.order if n in keep]):
        op = net.op(name)
        if isinstance(op, ops.Input) or name not in coefs:
            continue
        parts, inc, step_err = BACKWARD_RULES[type(op)](name, op, coefs.pop(name), ctx)
        const = const + inc
        err = err + step_err + np.abs(const)
        for arg, new in parts:
            err = _accumulate(coefs, arg, new, magnitude(ctx.state[arg]), err)
    final = coefs.get(net.input, sp.csr_array((rows, net.input_size)))
    centre, radius = centre_radius(*ctx.state[net.input])
    low, _ = sound_affine_range(final, const, centre, radius, n_terms, extra=err)
    ctx.row_slopes.clear()
    if elements is not None:
        lower, upper = np.full(size, -np.inf), np.full(size, np.inf)
        lower[elements], upper[elements] = low[:rows // 2], -low[rows // 2:]
        return lower, upper
    if target == net.output:
        ctx.output_vertices.append(bound_vertices(final, *ctx.state[net.input]))
    return low[:size], -low[size:]


def bound_vertices(coef: Coef, lower: FloatArray, upper: FloatArray) -> FloatArray:
    """Per row of `coef`, the box vertex minimising `coef_i x` (the lower corner where 0).

    For the rows `[I; -I]` of a back-substitution these are the inputs at which the
    relaxation's lower, then upper, bound of each element is attained: where the network
    itself is most likely to be smallest (largest). Attacks start there (`vnncomp`).
    """
    dense = coef.toarray() if sp.issparse(coef) else np.asarray(coef)
    return np.where(dense < 0, upper, lower)  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------- traversal
def symbolic_targets(net: Network) -> list[str]:
    """Nodes bounded by back-substitution: inputs of ReLU/MaxPool nodes, and the output.

    Input, ReLU and MaxPool nodes are skipped (their interval rule is exact given
    their inputs' bounds, or they are the box itself).
    """
    nonlinear = (*ops.SIGN_SPLIT, ops.MaxPool)
    wanted = {op.inputs[0] for _, op in net.items() if isinstance(op, nonlinear)}
    wanted.add(net.output)
    return [n for n in net.order if n in wanted
            and not isinstance(net.op(n), (ops.Input, *nonlinear))]


def _intersect(name: str, a: Interval, b: Interval) -> Interval:
    lower, upper = np.maximum(a[0], b[0]), np.minimum(a[1], b[1])
    bad = np.flatnonzero(lower > upper)
    if bad.size:
        i = int(bad[0])
        raise InvalidInputError(
            f"Bounds at node {name!r} do not intersect (index {i}: "
            f"[{float(a[0][i])!r}, {float(a[1][i])!r}] vs "
            f"[{float(b[0][i])!r}, {float(b[1][i])!r}]); "
            "is `base` computed for the same input box?")
    return lower, upper


SlopeHook = Callable[[str, SymbolicContext, Interval], "dict[str, FloatArray] | None"]
"""Per-row ReLU lower slopes for one target, given its bounds so far (`backsubstitute`'s
`row_slopes`), or None to keep the CROWN bound."""


def symbolic_pass(net: Network, lo: FloatArray, hi: FloatArray, base: Bounds | None,
                  method: str, slopes: SlopeHook | None = None) -> Bounds:
    """The symbolic traversal shared by `symbolic_bounds` and optimised-slope bounds.

    Every target gets the CROWN back-substitution; with `slopes`, also one with the
    hook's per-row slopes, and the intersection of both is kept.
    """
    started = time.perf_counter()
    base = base if base is not None else interval_bounds(net, lo, hi)
    targets = set(symbolic_targets(net))
    ctx = SymbolicContext(state={}, relaxations={})
    n_terms = float(max(op.size for _, op in net.items()) + 3)

    def refine(name: str, op: ops.Op, interval: Interval, state: dict[str, Interval]) -> Interval:
        ctx.state.update(state)
        if name in base.pre:
            interval = _intersect(name, interval, base.flat(name))
        if type(op) in RELAXATIONS:
            ctx.relaxations[name] = RELAXATIONS[type(op)](op, *state[op.inputs[0]])
        if name in targets:
            interval = _intersect(name, interval, backsubstitute(net, name, ctx, n_terms))
            rows = slopes(name, ctx, interval) if slopes is not None else None
            if rows:
                interval = _intersect(name, interval,
                                      backsubstitute(net, name, ctx, n_terms, rows))
        return interval

    state = propagate(net, lo, hi, refine)
    return make_bounds(net, state, method, started,
                       {"symbolic_nodes": [n for n in net.order if n in targets],
                        "output_vertices": np.vstack(ctx.output_vertices or
                                                     [np.empty((0, net.input_size))])})


def symbolic_bounds(net: Network, lower: npt.ArrayLike, upper: npt.ArrayLike, *,
                    base: Bounds | None = None) -> Bounds:
    """CROWN-style bounds of every node over the box `lower <= x <= upper`.

    Parameters
    ----------
    net : Network
    lower, upper : array_like
        The input box, of the input's shape or flat.
    base : Bounds, optional
        Sound bounds over the same box (e.g. from a tighter method) to intersect
        with at every node; defaults to `interval_bounds(net, lower, upper)`, so the
        result is always inside the interval bounds.

    Returns
    -------
    Bounds
        `method="symbolic"`; `details["symbolic_nodes"]` lists the back-substituted nodes;
        `details["output_vertices"]` (2 * outputs, input_size) holds the `bound_vertices`
        of the output's lower then upper bounds (no rows when the output is a ReLU or
        MaxPool node, which is not back-substituted).

    Raises
    ------
    InvalidInputError
        Bad box (see `check_box`), or `base` disjoint from the computed bounds.
    UnboundedError
        If a bound is not finite, naming the node.
    """
    lo, hi = check_box(net, lower, upper)
    return symbolic_pass(net, lo, hi, base, "symbolic")


# ---------------------------------------------------------------------------- dispatch
BoundMethod = Callable[[Network, npt.ArrayLike, npt.ArrayLike], Bounds]

def _alpha_bounds(net: Network, lower: npt.ArrayLike, upper: npt.ArrayLike) -> Bounds:
    from milpverify.bounds.alpha import alpha_bounds  # torch loads slowly: only when asked

    return alpha_bounds(net, lower, upper)


BOUND_METHODS: dict[str, BoundMethod] = {
    "interval": interval_bounds,
    "symbolic": symbolic_bounds,
    "alpha": _alpha_bounds,
}
"""The solver-free bound methods by name (`compute_bounds` adds the LP and MILP ones)."""


def bounds_for_box(net: Network, lower: npt.ArrayLike, upper: npt.ArrayLike,
                   method: str = "symbolic") -> Bounds:
    """Bounds of every node over a box with the named method (see `BOUND_METHODS`).

    Raises
    ------
    InvalidInputError
        If `method` is unknown (the message lists the known ones).
    """
    try:
        rule = BOUND_METHODS[method]
    except KeyError:
        raise InvalidInputError(
            f"Unknown bounds method {method!r}; choose one of {sorted(BOUND_METHODS)}.") from None
    return rule(net, lower, upper)


__all__ = [
    "BACKWARD_RULES",
    "BOUND_METHODS",
    "RELAXATIONS",
    "LinearRelaxation",
    "SlopeHook",
    "SymbolicContext",
    "ancestors",
    "backsubstitute",
    "bound_vertices",
    "bounds_for_box",
    "relax_maxpool",
    "relax_relu",
    "symbolic_bounds",
    "symbolic_pass",
    "symbolic_targets",
]
