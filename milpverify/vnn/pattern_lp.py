"""Counterexample polishing by linear programming on one ReLU activation region.

On the set of inputs where every ReLU keeps the sign it has at a point ``x0`` (its activation
region), the network is affine. The point of that region and of the input box that
satisfies a disjunct's rows ``s_r <= 0`` with the largest slack ``t`` is then one small LP
(``max t`` s.t. ``s_r(x) + t <= 0``, the region's sign constraints, the box). Gradient attacks
stall near such points when the unsafe set is a thin sliver (VNN-COMP 2022
``reach_prob_density`` robot instances: counterexamples with slack 5e-4); the LP moves a
nearby point into the sliver's middle when the sliver meets ``x0``'s region.

The LP's answer is only a candidate: callers re-check it with `check_counterexample`.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy.optimize import linprog

from milpverify.core.region import affine_rows, all_rows, region_constraints, region_of
from milpverify.ir.network import Network
from milpverify.ir.ops import FloatArray


def region_affine(net: Network, a: FloatArray, b: FloatArray, x0: FloatArray
                  ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """The spec rows ``s = A f(x) - b`` on ``x0``'s activation region as affine maps of the
    input (`core.region`, the maps the LP restriction uses).

    Returns (G, g, J, c): the region is ``G x + g <= 0`` (one row per ReLU input neuron: its
    pre-activation is kept on the side it has at ``x0``) and ``s = J x + c`` on it.
    """
    region, _ = region_of(net, x0)
    jac, off = affine_rows(net, region, net.output, np.asarray(a, dtype=np.float64))
    parts = [region_constraints(net, region, name, idx) for name, idx in all_rows(net, region)]
    n = net.input_size
    g_mat = np.vstack([-m for m, _ in parts]) if parts else np.zeros((0, n))
    g_vec = np.concatenate([-c for _, c in parts]) if parts else np.zeros(0)
    return g_mat, g_vec, np.asarray(jac), off - np.asarray(b, dtype=np.float64)


def polish(net: Network, a: FloatArray, b: FloatArray, x0: FloatArray,
           rows: npt.NDArray[np.int64], lower: FloatArray, upper: FloatArray
           ) -> tuple[FloatArray, float] | None:
    """The point of ``x0``'s activation region within ``lower..upper`` where the spec rows
    `rows` (``s = A y - b``: unsafe when all are ``<= 0``) are most negative, and that slack
    (``-max_r s_r`` by the LP; > 0 means unsafe in exact arithmetic). None when the LP
    fails."""
    g_mat, g_vec, jac, off = region_affine(net, a, b, x0)
    n = x0.size
    # variables (x, t): maximise t s.t. J_r x + c_r + t <= 0, G x + g <= 0, lower <= x <= upper
    a_ub = np.vstack([np.c_[jac[rows], np.ones(len(rows))], np.c_[g_mat, np.zeros(len(g_mat))]])
    b_ub = np.r_[-off[rows], -g_vec]
    cost = np.r_[np.zeros(n), -1.0]
    bounds = [(float(lo), float(hi)) for lo, hi in zip(lower, upper, strict=True)] + [(None, 1.0)]
    res = linprog(cost, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs")
    if res.status != 0 or res.x is None:
        return None
    return np.clip(res.x[:n], lower, upper), float(res.x[n])
