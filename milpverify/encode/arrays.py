"""Array types of the MILP model and the checks `MilpModel` applies to its arguments
(indices in range, bounds that broadcast and do not cross, finite values)."""

from __future__ import annotations

from typing import Union

import numpy as np
from numpy.typing import ArrayLike, NDArray

from milpverify.errors import InvalidModelError

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
Bound = Union[float, ArrayLike]


def readonly(a: np.ndarray) -> np.ndarray:
    v = a.view()
    v.flags.writeable = False
    return v


def as_index(idx: ArrayLike, n: int, what: str) -> IntArray:
    """Validate integer indices in ``[0, n)`` and return them as a flat int64 array."""
    a = np.asarray(idx)
    if a.size == 0:
        return np.zeros(0, dtype=np.int64)
    if a.dtype.kind not in "iu":
        raise InvalidModelError(f"{what} must be integers, got dtype {a.dtype}")
    a = a.astype(np.int64, copy=False).reshape(-1)
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi >= n:
        bad = lo if lo < 0 else hi
        raise InvalidModelError(f"{what} out of range: {bad} not in [0, {n})")
    return a


def as_bounds(lower: Bound, upper: Bound, n: int, what: str) -> tuple[FloatArray, FloatArray]:
    """Broadcast and validate a pair of bound vectors of length ``n``."""
    try:
        lo = np.array(np.broadcast_to(np.asarray(lower, dtype=np.float64), (n,)))
        up = np.array(np.broadcast_to(np.asarray(upper, dtype=np.float64), (n,)))
    except (ValueError, TypeError) as exc:
        raise InvalidModelError(
            f"{what} bounds must be scalars or arrays of length {n}: {exc}") from exc
    if np.isnan(lo).any() or np.isnan(up).any():
        raise InvalidModelError(f"{what} bounds contain NaN")
    if (lo == np.inf).any():
        raise InvalidModelError(f"{what} lower bound is +inf")
    if (up == -np.inf).any():
        raise InvalidModelError(f"{what} upper bound is -inf")
    bad = np.flatnonzero(lo > up)
    if bad.size:
        k = int(bad[0])
        raise InvalidModelError(
            f"{what} lower bound > upper bound at {bad.size} position(s), "
            f"first at local index {k}: {float(lo[k])!r} > {float(up[k])!r}")
    return lo, up


def as_values(vals: ArrayLike, n: int, what: str) -> FloatArray:
    v = np.asarray(vals, dtype=np.float64).reshape(-1)
    if v.shape[0] != n:
        raise InvalidModelError(f"{what}: expected {n} values, got {v.shape[0]}")
    if not np.isfinite(v).all():
        raise InvalidModelError(f"{what} must be finite (got NaN or inf)")
    return v
