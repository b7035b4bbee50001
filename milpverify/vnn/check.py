"""Re-check a VNN-LIB counterexample: round it to float32 inside the box and run it in numpy
float64 and onnxruntime.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from milpverify.core.witness import onnx_logits
from milpverify.ir.network import Network
from milpverify.ir.ops import FloatArray
from milpverify.vnn.spec import VnnlibProperty


@dataclass(frozen=True)
class CounterexampleCheck:
    """A candidate input re-run on the original network against one property.

    ``margin_* = max_d min_r (b_dr - (A_d y)_r)``: the point is unsafe when it is ``>= 0``
    (``+inf`` for a disjunct without rows). `verified` requires the rounded point inside
    the box and both margins ``>= 0``.
    """

    verified: bool
    x: FloatArray
    y_numpy: FloatArray
    y_onnx: FloatArray | None
    in_box: bool
    margin_numpy: float
    margin_onnx: float | None
    message: str

    @property
    def y(self) -> FloatArray:
        """The outputs to report: onnxruntime's when available, else numpy's."""
        return self.y_onnx if self.y_onnx is not None else self.y_numpy


# ---------------------------------------------------------------------------- helpers
def _rows(prop: VnnlibProperty) -> tuple[FloatArray, FloatArray, list[npt.NDArray[np.int64]]]:
    """All rows of a property stacked (``prop.unsafe`` is never empty), and the row indices
    of each disjunct."""
    a = np.vstack([c.A for c in prop.unsafe])
    b = np.concatenate([c.b for c in prop.unsafe])
    starts = np.cumsum([0] + [c.A.shape[0] for c in prop.unsafe])
    return a, b, [np.arange(s, e) for s, e in zip(starts[:-1], starts[1:])]


def _float32_in_box(x: FloatArray, lower: FloatArray, upper: FloatArray) -> FloatArray:
    """Nearest float32 values to `x` clipped into the box, nudged inward where rounding left it.

    The ONNX model runs in float32 and VNN-COMP re-runs the written X values as float32, so
    the checked point must be float32 and inside the (float64) box. A coordinate whose box
    holds no float32 value stays outside (and the check rejects the point).
    """
    x32 = np.clip(np.asarray(x, dtype=np.float64).reshape(-1), lower, upper).astype(np.float32)
    high = x32.astype(np.float64) > upper
    x32[high] = np.nextafter(x32[high], np.float32(-np.inf))
    low = x32.astype(np.float64) < lower
    x32[low] = np.nextafter(x32[low], np.float32(np.inf))
    return x32.astype(np.float64)


def _unsafe_margin(a: FloatArray, b: FloatArray, groups: list[npt.NDArray[np.int64]],
                   y: FloatArray) -> FloatArray:
    """``max_d min_{r in d} (b_r - (A y)_r)`` per row of the batch `y` (n, outputs)."""
    slack = b[None, :] - y @ a.T
    out = np.full(y.shape[0], -np.inf)
    for g in groups:
        value = slack[:, g].min(axis=1) if len(g) else np.full(y.shape[0], np.inf)
        out = np.maximum(out, value)
    return out


def check_counterexample(net: Network, prop: VnnlibProperty, x: npt.ArrayLike
                         ) -> CounterexampleCheck:
    """Round `x` to float32 inside the property's box and re-run it on the original model.

    Parameters
    ----------
    net : Network
        The network; when it has an ONNX origin the point is also run by onnxruntime on the
        original file (`milpverify.core.witness.onnx_logits`).
    prop : VnnlibProperty
    x : array
        A flat input (C order of the ONNX input) or anything `net.as_batch` accepts.

    Returns
    -------
    CounterexampleCheck
        ``verified`` iff the rounded point lies in the box and both numpy float64 and
        onnxruntime outputs satisfy some disjunct ``A y <= b`` (no tolerance).

    Example
    -------
    >>> check_counterexample(net, spec.properties[0], x).verified
    True
    """
    point = _float32_in_box(net.as_batch(x)[0], prop.input_lower, prop.input_upper)
    in_box = bool(np.all(point >= prop.input_lower) and np.all(point <= prop.input_upper))
    a, b, groups = _rows(prop)
    y_np = net.forward(point)[0]
    margin_np = float(_unsafe_margin(a, b, groups, y_np[None])[0])
    ref = onnx_logits(net, point)
    y_ort = None if ref is None else ref[0]
    margin_ort = None if y_ort is None else float(_unsafe_margin(a, b, groups, y_ort[None])[0])
    verified = in_box and margin_np >= 0 and (margin_ort is None or margin_ort >= 0)
    message = "" if verified else (
        f"counterexample rejected: in_box={in_box}, numpy margin {margin_np:.3g}, "
        f"onnxruntime margin {'n/a' if margin_ort is None else f'{margin_ort:.3g}'} "
        "(need >= 0)")
    return CounterexampleCheck(verified, point, y_np, y_ort, in_box, margin_np, margin_ort,
                               message)
