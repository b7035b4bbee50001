"""Interval arithmetic bounds, sound under float64 rounding.

One forward traversal in `net.order` applies one rule per op class
(`INTERVAL_RULES`) to flat `(lower, upper)` vectors.

Soundness against rounding
--------------------------
Every bound this module returns contains the *exact real* value of the node for
every real input in the box. Let `u = 2**-53` (unit roundoff) and
`gamma(k) = k u / (1 - k u)`.

* Input box. The centre `c = fl(l/2 + u/2)` is rounded, so the radius is taken as
  `r = nextafter(max(fl(u - c), fl(c - l)), +inf)`, which is at least the exact
  `max(u - c, c - l)`; hence `[l, u]` is inside `[c - r, c + r]` in real arithmetic.
* Linear ops `y = M x + b`. Exactly, `y` lies in `[M c + b - |M| r, M c + b + |M| r]`.
  Each row of `fl(M c + b)` and `fl(|M| r)`, and their difference/sum, is a sum of
  at most `2 n + 1` terms in which every term passes through at most `n + 2`
  roundings (its product, at most `n` additions, the final `c' -/+ r'`), where
  `n` = stored entries in the row + 1 for the bias. By the standard bound for
  any summation order and with or without FMA (Higham, *Accuracy and Stability*,
  sec. 3.1-3.5), the computed value is within `gamma(n + 2) * S` of the exact one,
  with `S = |M| (|c| + r) + |b|` (the sum of the absolute terms). `S` is computed
  in float too (its relative error is at most `gamma(n + 2)`), and so are
  `gamma` and the product; we therefore widen by `slack = 2 gamma(n + 2) S~ + eta`,
  where the factor 2 covers all these relative errors (each below 1e-10 for
  any row length under 1e5) and `eta = 2**-900` covers underflow (at most one
  subnormal-sized error per operation; harmless unless magnitudes exceed 2**100).
  Finally `nextafter` moves the result of `c' - r' - slack` (itself rounded)
  one ulp outward, which makes the last subtraction/addition safe.
* `Permute`, `Relu` and `MaxPool` are exact in float (indexing, `max`).
* `LeakyRelu`: the range over `[l, u]` is spanned by `f(l)`, `f(u)` and `f(0) = 0` when
  `l < 0 < u` (piecewise linear, breakpoint 0); each product `slope * x` is one rounding,
  undone by one `nextafter` outward.
* `Add`: `fl(l1 + l2)` and `fl(u1 + u2)` are each one rounding, undone by one
  `nextafter` outward.
* `Concat` is indexing, exact.

The assumption is IEEE-754 binary64 with round-to-nearest and a BLAS that
implements the classical (non-Strassen) product, which holds for NumPy/OpenBLAS/MKL.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from milpverify.bounds.base import Bounds, relu_case_counts
from milpverify.errors import InvalidInputError, UnboundedError
from milpverify.ir import ops
from milpverify.ir.network import Network
from milpverify.ir.ops import FloatArray, Matrix

Interval = tuple[FloatArray, FloatArray]
"""`(lower, upper)` flat float64 vectors of one node."""

IntervalRule = Callable[[Any, list[Interval]], Interval]

UNIT_ROUNDOFF = 2.0 ** -53
"""`u`: the relative rounding error of one float64 operation (round to nearest)."""

UNDERFLOW_SLACK = 2.0 ** -900
"""`eta`: absolute slack covering subnormal/underflow errors of a dot product."""


# ---------------------------------------------------------------------------- rounding
def gamma(n: npt.ArrayLike) -> FloatArray:
    """`gamma(n) = n u / (1 - n u)`: relative error bound of an `n`-rounding sum of products."""
    nu = np.asarray(n, dtype=np.float64) * UNIT_ROUNDOFF
    return nu / (1.0 - nu)  # type: ignore[no-any-return]


def round_down(x: FloatArray) -> FloatArray:
    """The next float below `x` (one ulp towards -inf)."""
    return np.nextafter(x, -np.inf)  # type: ignore[no-any-return]


def round_up(x: FloatArray) -> FloatArray:
    """The next float above `x` (one ulp towards +inf)."""
    return np.nextafter(x, np.inf)  # type: ignore[no-any-return]


def centre_radius(lower: FloatArray, upper: FloatArray) -> tuple[FloatArray, FloatArray]:
    """`(c, r)` with `[lower, upper]` inside `[c - r, c + r]` exactly.

    `c = fl(lower/2 + upper/2)` (halving is exact, no overflow) and
    `r = nextafter(max(upper - c, c - lower), +inf)`, which rounds the radius up.
    """
    centre = 0.5 * lower + 0.5 * upper
    radius = round_up(np.maximum(upper - centre, centre - lower))
    return centre, radius


def row_terms(matrix: Matrix) -> FloatArray:
    """Number of stored terms per row of `matrix` (all columns for a dense matrix)."""
    if sp.issparse(matrix):
        csr = sp.csr_array(matrix)
        return np.diff(csr.indptr).astype(np.float64)  # type: ignore[no-any-return]
    return np.full(matrix.shape[0], float(matrix.shape[1]))


def absolute(matrix: Matrix) -> Matrix:
    """`|M|` entry-wise, keeping sparse matrices sparse."""
    return abs(matrix) if sp.issparse(matrix) else np.abs(matrix)


def matvec(matrix: Matrix, vector: FloatArray) -> FloatArray:
    """`M v` as a flat float64 vector for dense or sparse `M`."""
    return np.asarray(matrix @ vector, dtype=np.float64).reshape(-1)


def sound_affine_range(matrix: Matrix, bias: FloatArray, centre: FloatArray,
                       radius: FloatArray, n_terms: npt.ArrayLike,
                       extra: FloatArray | float = 0.0) -> Interval:
    """Outward-rounded `[M c + b - |M| r - s, M c + b + |M| r + s]`.

    The slack is `s = 2 gamma(n_terms + 2) (|M| (|c| + r) + |b| + extra) + eta`;
    `extra` is a non-negative error magnitude the caller wants covered by the same
    `gamma` (used by the symbolic pass); see the module docstring for the argument.
    The result bounds `M x + b` (exact reals) for every real `x` in `[c - r, c + r]`.
    """
    abs_m = absolute(matrix)
    mid = matvec(matrix, centre) + bias
    spread = matvec(abs_m, radius)
    magnitude = matvec(abs_m, np.abs(centre) + radius) + np.abs(bias) + extra
    slack = 2.0 * gamma(np.asarray(n_terms, dtype=np.float64) + 2.0) * magnitude \
        + UNDERFLOW_SLACK
    return round_down(mid - spread - slack), round_up(mid + spread + slack)


# ---------------------------------------------------------------------------- rules
def interval_linear(op: ops.LinearOp, args: list[Interval]) -> Interval:
    """Linear ops `y = M x + b` (Affine, Conv, AvgPool, Scale).

    With `c, r = centre_radius(l, u)`: `y in [M c + b - |M| r, M c + b + |M| r]`,
    widened by the rounding slack `2 gamma(n + 2) (|M| (|c| + r) + |b|)`,
    `n` = terms per row + 1 (bias), then rounded outward with `nextafter`.
    """
    matrix, bias = op.linear_map
    centre, radius = centre_radius(*args[0])
    return sound_affine_range(matrix, bias, centre, radius, row_terms(matrix) + 1.0)


def interval_permute(op: ops.Permute, args: list[Interval]) -> Interval:
    """Re-indexing `y_k = x_{index_k}`: `[l_{index_k}, u_{index_k}]`, exact."""
    lower, upper = args[0]
    return lower[op.index], upper[op.index]


def interval_relu(op: ops.Relu, args: list[Interval]) -> Interval:
    """`y = max(x, 0)` is monotone: `[max(l, 0), max(u, 0)]`, exact."""
    lower, upper = args[0]
    return np.maximum(lower, 0.0), np.maximum(upper, 0.0)


def _leaky(slope: FloatArray, x: FloatArray, outward: Callable[[FloatArray], FloatArray]
           ) -> FloatArray:
    """`f(x)` of a LeakyRelu, products rounded by `outward`; `0 * inf` counts as 0."""
    with np.errstate(invalid="ignore", over="ignore"):
        product = np.where(slope == 0.0, 0.0, outward(slope * x))
    return np.where(x >= 0, x, product)  # type: ignore[no-any-return]


def interval_leaky_relu(op: ops.LeakyRelu, args: list[Interval]) -> Interval:
    """`y = x` (x >= 0) or `slope x`: extremes among `f(l)`, `f(u)` and `f(0) = 0` if
    `l < 0 < u` (any slope sign), exact up to one outward ulp per product."""
    lower, upper = args[0]
    ends_lo = np.minimum(_leaky(op.slope, lower, round_down), _leaky(op.slope, upper, round_down))
    ends_hi = np.maximum(_leaky(op.slope, lower, round_up), _leaky(op.slope, upper, round_up))
    straddle = (lower < 0) & (upper > 0)
    return (np.where(straddle, np.minimum(ends_lo, 0.0), ends_lo),
            np.where(straddle, np.maximum(ends_hi, 0.0), ends_hi))


def interval_maxpool(op: ops.MaxPool, args: list[Interval]) -> Interval:
    """`y_k = max_{i in W_k} x_i` is monotone: `[max_{W_k} l_i, max_{W_k} u_i]`, exact.

    Padding cells (`windows == -1`) are excluded (they read a `-inf` column).
    """
    lower, upper = args[0]
    return window_max(lower, op.windows), window_max(upper, op.windows)


def interval_add(op: ops.Add, args: list[Interval]) -> Interval:
    """`y = a + b`: `[l_a + l_b, u_a + u_b]`, each sum moved one ulp outward."""
    (la, ua), (lb, ub) = args
    return round_down(la + lb), round_up(ua + ub)


def interval_concat(op: ops.Concat, args: list[Interval]) -> Interval:
    """`y = concatenate(x_1, ..., x_k)[index]`: the same indexing of the bounds, exact."""
    lower = np.concatenate([a[0] for a in args])
    upper = np.concatenate([a[1] for a in args])
    return lower[op.index], upper[op.index]


INTERVAL_RULES: dict[type[ops.Op], IntervalRule] = {
    ops.Affine: interval_linear,
    ops.Conv: interval_linear,
    ops.AvgPool: interval_linear,
    ops.Scale: interval_linear,
    ops.Permute: interval_permute,
    ops.Relu: interval_relu,
    ops.LeakyRelu: interval_leaky_relu,
    ops.MaxPool: interval_maxpool,
    ops.Add: interval_add,
    ops.Concat: interval_concat,
}
"""One interval rule per op class, `rule(op, [(l, u) of each input]) -> (l, u)`."""


def window_max(values: FloatArray, windows: npt.NDArray[np.int64]) -> FloatArray:
    """`max_{i in W_k} values_i` per row of `windows` (-1 = padding, ignored)."""
    padded = np.concatenate([values, [-np.inf]])
    return padded[windows].max(axis=-1)  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------- traversal
Refine = Callable[[str, ops.Op, Interval, dict[str, Interval]], Interval]
"""Hook `refine(name, op, interval, state) -> tightened interval` used by tighter methods."""


def check_box(net: Network, lower: npt.ArrayLike, upper: npt.ArrayLike) -> Interval:
    """Validate an input box and return it as flat float64 vectors.

    Raises
    ------
    InvalidInputError
        Wrong number of elements, NaN, or `lower > upper` somewhere.
    """
    size = net.input_size
    flat = []
    for label, arr in (("lower", lower), ("upper", upper)):
        vec = np.asarray(arr, dtype=np.float64)
        if vec.size != size:
            raise InvalidInputError(
                f"`{label}` has {vec.size} elements (shape {list(vec.shape)}) but network input "
                f"{net.input!r} expects {size} (shape {list(net.input_shape)}).")
        vec = vec.reshape(-1)
        if np.isnan(vec).any():
            raise InvalidInputError(
                f"`{label}` contains NaN (index {int(np.flatnonzero(np.isnan(vec))[0])}).")
        flat.append(vec)
    bad = np.flatnonzero(flat[0] > flat[1])
    if bad.size:
        i = int(bad[0])
        raise InvalidInputError(
            f"lower > upper at {bad.size} input element(s), e.g. index {i}: "
            f"{float(flat[0][i])!r} > {float(flat[1][i])!r}.")
    return flat[0], flat[1]


def check_finite(name: str, interval: Interval) -> None:
    """Raise `UnboundedError` naming the node and the first non-finite index."""
    lower, upper = interval
    bad = np.flatnonzero(~(np.isfinite(lower) & np.isfinite(upper)))
    if bad.size:
        i = int(bad[0])
        raise UnboundedError(
            f"Bounds at node {name!r} are not finite "
            f"(index {i}: [{float(lower[i])!r}, {float(upper[i])!r}]). "
            "The big-M encoding needs a bounded input region.")


def propagate(net: Network, lower: FloatArray, upper: FloatArray,
              refine: Refine | None = None) -> dict[str, Interval]:
    """Run `INTERVAL_RULES` in `net.order`; `refine` may tighten each node's interval.

    Parameters
    ----------
    lower, upper : ndarray
        Validated flat input box (see `check_box`).
    refine : callable, optional
        Called after the interval rule of every non-input node with the current
        state (bounds of all earlier nodes); must return a sound sub-interval.

    Raises
    ------
    UnboundedError
        At the first node whose bounds are not finite.
    """
    state: dict[str, Interval] = {}
    with np.errstate(over="ignore", invalid="ignore"):
        for name, op in net.items():
            if isinstance(op, ops.Input):
                interval = (lower, upper)
            else:
                interval = INTERVAL_RULES[type(op)](op, [state[a] for a in op.inputs])
                if refine is not None:
                    check_finite(name, interval)
                    interval = refine(name, op, interval, state)
            check_finite(name, interval)
            state[name] = interval
    return state


def make_bounds(net: Network, state: dict[str, Interval], method: str, started: float,
                details: dict[str, object] | None = None) -> Bounds:
    """Package flat per-node intervals as `Bounds` (node shapes, ReLU case counts)."""
    pre = {name: (state[name][0].reshape(op.shape), state[name][1].reshape(op.shape))
           for name, op in net.items()}
    cases = {name: relu_case_counts(*state[net.op(name).inputs[0]]) for name in net.relu_nodes}
    return Bounds(pre=pre, relu_cases=cases, method=method,
                  time_s=time.perf_counter() - started, details=dict(details or {}))


def interval_bounds(net: Network, lower: npt.ArrayLike, upper: npt.ArrayLike) -> Bounds:
    """Interval-arithmetic bounds of every node over the box `lower <= x <= upper`.

    Parameters
    ----------
    net : Network
    lower, upper : array_like
        The input box, of the input's shape or flat (`net.input_size` elements).

    Returns
    -------
    Bounds
        `method="interval"`; sound for exact real arithmetic despite float rounding.

    Raises
    ------
    InvalidInputError
        Wrong size, NaN, or `lower > upper`.
    UnboundedError
        If a bound is not finite (infinite box or overflow), naming the node.

    Example
    -------
    >>> b = interval_bounds(net, np.clip(x - 0.1, 0, 1), np.clip(x + 0.1, 0, 1))
    >>> b.unstable
    """
    started = time.perf_counter()
    lo, hi = check_box(net, lower, upper)
    return make_bounds(net, propagate(net, lo, hi), "interval", started)


__all__ = [
    "INTERVAL_RULES", "Interval", "centre_radius", "check_box", "check_finite", "gamma",
    "interval_add", "interval_bounds", "interval_concat", "interval_linear", "interval_maxpool",
    "interval_permute", "interval_relu", "make_bounds", "propagate", "sound_affine_range",
]
