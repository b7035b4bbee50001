r"""Cuts of the ideal ReLU formulation (Anderson et al., "Strong mixed-integer programming
formulations for trained neural networks", Math. Programming 2020), separated on demand.

For one unstable neuron ``y = max(0, w^T x + b)`` with binary ``z`` (active) and box inputs
``L <= x <= U``, write ``L'_i, U'_i`` for the bound of ``x_i`` that minimises (maximises)
``w_i x_i``. Every subset ``I`` of the inputs gives a valid inequality

.. math::

    y \le \sum_{i \in I} w_i \bigl(x_i - L'_i (1 - z)\bigr)
          + \Bigl(b + \sum_{i \notin I} w_i U'_i\Bigr) z ,

and together with ``y >= w^T x + b`` and ``y >= 0`` they describe the convex hull of the
neuron's graph over the box. ``I = {}`` and ``I = all`` are the big-M rows built with
interval bounds; the encoder's big-M rows use tighter bounds, so only the others are new.
There are exponentially many, but the most violated one at a point ``(x*, y*, z*)`` is
found in linear time: put ``i`` in ``I`` exactly when
``w_i (x*_i - L'_i (1 - z*)) < w_i U'_i z*``.

`ReluCutSeparator` does this for every neuron of a ReLU layer whose input is a linear map
of encoded variables (`relu_cut_separators` builds them from an encoding); a solver
backend that supports separation (SCIP) calls `ReluCutSeparator.separate` on LP points.
The cuts are valid for every point of the big-M model, so a backend may equally ignore
them. Each cut's right-hand side is relaxed by ``CUT_SLACK`` times its magnitude so
that float rounding of the coefficients cannot cut off a true point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from milpverify.bounds.base import Bounds
from milpverify.encode.milp import NetworkEncoding
from milpverify.encode.model import Cuts
from milpverify.ir import ops
from milpverify.ir.network import Network
from milpverify.ir.ops import FloatArray, IntArray

CUT_SLACK = 1e-9
"""Relative outward slack of each cut's right-hand side (covers coefficient rounding)."""

MIN_VIOLATION = 1e-4
"""A cut is returned only when the point violates it by more than this (absolute)."""


@dataclass(frozen=True)
class ReluCutSeparator:
    """Ideal-formulation cuts for the unstable neurons of one ReLU node.

    Attributes
    ----------
    node : str
        The ReLU node.
    post, active : int arrays (n,)
        Model variables of ``relu(pre)`` and of the binary, per unstable neuron.
    inputs : int array (m,)
        Model variables the neurons' linear map reads.
    weight : float array (n, m)
    bias : float array (n,)
        Including the contribution of inputs that are constants in the encoding.
    low, high : float arrays (n, m)
        ``L'`` and ``U'``: the input bound minimising / maximising ``w_ij x_j``.
    """

    node: str
    post: IntArray
    active: IntArray
    inputs: IntArray
    weight: FloatArray
    bias: FloatArray
    low: FloatArray
    high: FloatArray

    @property
    def variables(self) -> IntArray:
        """Every model variable whose value `separate` reads."""
        return np.unique(np.r_[self.post, self.active, self.inputs])

    def separate(self, values: FloatArray, *, max_cuts: int | None = None) -> Cuts:
        """The most violated ideal cut of each neuron at the point ``values`` (indexed by
        model variable), for the neurons it violates by more than `MIN_VIOLATION`; at
        most `max_cuts`, most violated first."""
        z = values[self.active]
        frac = np.flatnonzero((z > 1e-9) & (z < 1.0 - 1e-9))  # integral z: big-M is exact
        empty = Cuts(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros(0),
                     np.zeros(0))
        if frac.size == 0:
            return empty
        x = values[self.inputs]
        zf = z[frac][:, None]
        w, lo, hi = self.weight[frac], self.low[frac], self.high[frac]
        with_x = w * (x[None, :] - lo * (1.0 - zf))    # term if i in I
        without = w * hi * zf                          # term if i not in I
        in_set = with_x < without
        bound = np.minimum(with_x, without).sum(axis=1) + self.bias[frac] * zf[:, 0]
        violation = values[self.post[frac]] - bound
        hit = np.flatnonzero(violation > MIN_VIOLATION)
        if hit.size == 0:
            return empty
        hit = hit[np.argsort(-violation[hit], kind="stable")][:max_cuts]
        rows, cols, vals, rhs = [], [], [], []
        for r, k in enumerate(hit):
            w_k, lo_k, hi_k, take = w[k], lo[k], hi[k], in_set[k] & (w[k] != 0.0)
            rest = ~in_set[k] & (w[k] != 0.0)
            shift = float(w_k[take] @ lo_k[take])
            z_coef = shift + float(self.bias[frac[k]]) + float(w_k[rest] @ hi_k[rest])
            scale = (np.abs(w_k * lo_k).sum() + np.abs(w_k * hi_k).sum()
                     + abs(float(self.bias[frac[k]])) + 1.0)
            n_take = int(take.sum())
            # y - sum_I w_i x_i - z_coef z <= -shift
            rows.append(np.full(n_take + 2, r))
            cols.append(np.r_[self.post[frac[k]], self.inputs[take], self.active[frac[k]]])
            vals.append(np.r_[1.0, -w_k[take], -z_coef])
            rhs.append(-shift + CUT_SLACK * scale)
        return Cuts(np.concatenate(rows), np.concatenate(cols).astype(np.int64),
                    np.concatenate(vals), np.array(rhs), violation[hit])


def relu_cut_separators(net: Network, bounds: Bounds,
                        encoding: NetworkEncoding) -> list[ReluCutSeparator]:
    """One `ReluCutSeparator` per ReLU node with unstable neurons whose input is a linear
    op (Affine, Conv, ...) of encoded values; input bounds come from `bounds` (sound over
    the encoded region)."""
    out = []
    for name, op in net.items():
        if not isinstance(op, ops.Relu):
            continue
        active = encoding.relu_active.get(name)
        linear = net.op(op.inputs[0])
        if active is None or not isinstance(linear, ops.LinearOp):
            continue
        neurons = np.flatnonzero(active >= 0)
        if neurons.size == 0:
            continue
        source = linear.inputs[0]
        term = encoding.terms[source]
        matrix, bias = linear.linear_map
        rows = matrix[neurons]
        weight = np.asarray(rows.toarray() if sp.issparse(rows) else rows, dtype=np.float64)
        is_var = term.var >= 0
        used = is_var & np.any(weight != 0.0, axis=0)
        lower, upper = bounds.flat(source)
        bias_k = bias[neurons] + weight[:, ~is_var] @ term.const[~is_var]
        weight = weight[:, used]
        out.append(ReluCutSeparator(
            name, encoding.terms[name].var[neurons], active[neurons], term.var[used], weight,
            bias_k, np.where(weight >= 0, lower[used], upper[used]),
            np.where(weight >= 0, upper[used], lower[used])))
    return out


__all__ = ["CUT_SLACK", "MIN_VIOLATION", "ReluCutSeparator", "relu_cut_separators"]
