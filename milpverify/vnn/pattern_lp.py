"""Counterexample polishing by linear programming on one ReLU activation region of a chain.

On the set of inputs where every ReLU keeps the sign it has at a point ``x0`` (its activation
region), a chain network is affine. The point of that region and of the input box that
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

from milpverify.ir.ops import FloatArray
from milpverify.vnn.box_bounds import Chain


def region_affine(chain: Chain, x0: FloatArray
                  ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """The chain on ``x0``'s activation region as affine maps of the input.

    Returns (G, g, J, c): the region is ``G x + g <= 0`` (one row per ReLU input neuron: its
    pre-activation is kept on the side it has at ``x0``) and the last node is ``J x + c``.
    """
    n = x0.size
    jac, off = np.eye(n), np.zeros(n)
    value = x0.astype(np.float64)
    rows, consts = [], []
    for layer in chain.layers:
        if layer[0] == "affine":
            w, b = layer[1], layer[2]
            assert isinstance(w, np.ndarray) and isinstance(b, np.ndarray)
            jac, off, value = w @ jac, w @ off + b, w @ value + b
            continue
        active = value > 0
        sign = np.where(active, -1.0, 1.0)  # active: -z <= 0; inactive: z <= 0
        rows.append(sign[:, None] * jac)
        consts.append(sign * off)
        jac, off, value = jac * active[:, None], off * active, np.maximum(value, 0.0)
    g_mat = np.vstack(rows) if rows else np.zeros((0, n))
    g_vec = np.concatenate(consts) if consts else np.zeros(0)
    return g_mat, g_vec, jac, off


def polish(chain: Chain, x0: FloatArray, rows: npt.NDArray[np.int64], lower: FloatArray,
           upper: FloatArray) -> tuple[FloatArray, float] | None:
    """The point of ``x0``'s activation region within ``lower..upper`` where the rows `rows` of
    the chain's last node (``s = A y - b``: unsafe when all are ``<= 0``) are most negative,
    and that slack (``-max_r s_r`` by the LP; > 0 means unsafe in exact arithmetic). None when
    the LP fails."""
    g_mat, g_vec, jac, off = region_affine(chain, x0)
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
