"""Re-check a VNN-LIB counterexample: round it to float32 inside the box and run it in numpy
float64 and onnxruntime.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from milpverify.core.witness import WitnessCheck, check_point
from milpverify.ir.network import Network
from milpverify.ir.ops import FloatArray
from milpverify.vnn.spec import VnnlibProperty


# ---------------------------------------------------------------------------- helpers
def property_rows(prop: VnnlibProperty
                  ) -> tuple[FloatArray, FloatArray, list[npt.NDArray[np.int64]]]:
    """All rows of a property stacked (``prop.unsafe`` is never empty), and the row indices
    of each disjunct."""
    a = np.vstack([c.A for c in prop.unsafe])
    b = np.concatenate([c.b for c in prop.unsafe])
    starts = np.cumsum([0] + [c.A.shape[0] for c in prop.unsafe])
    return a, b, [np.arange(s, e) for s, e in zip(starts[:-1], starts[1:])]


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
                         ) -> WitnessCheck:
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
    WitnessCheck
        ``verified`` iff the rounded point lies in the box and both numpy float64 and
        onnxruntime outputs satisfy some disjunct ``A y <= b`` (no tolerance): margins
        ``max_d min_r (b - A y) >= 0`` (``+inf`` for a disjunct without rows).

    Example
    -------
    >>> check_counterexample(net, spec.properties[0], x).verified
    True
    """
    a, b, groups = property_rows(prop)

    def margin(y: FloatArray) -> tuple[float, int]:
        return float(_unsafe_margin(a, b, groups, y[None])[0]), int(np.argmax(y))

    return check_point(net, x, margin, box=(prop.input_lower, prop.input_upper),
                       what="counterexample")
