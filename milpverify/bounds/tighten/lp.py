"""LP bound tightening: one LP per neuron bound over the relaxation, with a rigorous dual bound."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from milpverify.bounds.interval import UNDERFLOW_SLACK, gamma, round_down
from milpverify.bounds.tighten.state import (
    TRUSTED_STATUSES,
    _Cone,
    _in_shares,
    _LevelStats,
    _options,
    _run_neurons,
    _State,
    _widen,
)
from milpverify.encode.model import MilpModel
from milpverify.ir.ops import FloatArray, IntArray
from milpverify.solve import get_backend
from milpverify.solve.base import SolveResult, SolveStatus
from milpverify.solve.highs import HIGHS_INT_MAX

#: Widening of an LP bound when the backend returns no row duals (SCIP sessions).
LP_FALLBACK_SLACK = 1e-6


#: HiGHS options of the first LP of a session: interior point (with crossover, for a basis)
#: is 5-10x faster than dual simplex from scratch on WK17a's layer LPs.
LP_HIGHS_FIRST = {"solver": "ipm", "presolve": "choose"}


#: HiGHS options of the re-solves after a cost change: the basis stays primal feasible, so
#: primal simplex without presolve (which would drop the basis); 2-75 ms each on WK17a.
LP_HIGHS_RESOLVE = {"solver": "simplex", "simplex_strategy": 4, "presolve": "off"}


#: Simplex iterations a re-solve may take, per row and column of its LP; one that reaches
#: the limit is solved again with `LP_HIGHS_FIRST` (from scratch, a fresh basis for the
#: next ones). Scratch, eran 9x200 `idx_3539`: re-solves took at most 1,033 iterations on
#: LPs of 1,167-6,261 rows and columns, while one (two threads, so warm-started from another
#: neuron's basis) ran 1.6 million iterations (66 s) on a 209-row LP until its time limit.
LP_RESOLVE_ITERATIONS_PER_DIM = 10


#: HiGHS options of a re-solve of an infeasible LP: dual simplex without presolve returns a
#: dual ray (interior point, presolve and primal simplex do not), checked by `proves_empty`.
LP_HIGHS_RAY = {"solver": "simplex", "simplex_strategy": 1, "presolve": "off"}


# ---------------------------------------------------------------------------- safe LP bound
@dataclass(frozen=True)
class DualBounder:
    """`safe_dual_bound` for one LP with the matrix products prepared once (many objectives).

    Attributes are the LP's data: `A` (CSR), its transpose and `|A|^T`, row bounds `rl`,
    `ru`, column bounds `lo`, `up`, and `k` = largest column length + 1.
    """

    A: sp.csr_array
    at: sp.csr_array
    abs_at: sp.csr_array
    rl: FloatArray
    ru: FloatArray
    lo: FloatArray
    up: FloatArray
    k: float

    @staticmethod
    def of(A: sp.csr_array | FloatArray, row_lower: npt.ArrayLike, row_upper: npt.ArrayLike,
           col_lower: npt.ArrayLike, col_upper: npt.ArrayLike) -> DualBounder:
        a = sp.csr_array(A, dtype=np.float64)
        at = sp.csr_array(a.T)
        col_nnz = np.diff(at.indptr)
        return DualBounder(a, at, abs(at), *(np.asarray(v, dtype=np.float64).reshape(-1) for v in
                                             (row_lower, row_upper, col_lower, col_upper)),
                           float(col_nnz.max(initial=0) + 1))

    @staticmethod
    def of_model(model: MilpModel) -> DualBounder:
        return DualBounder.of(model.A, model.row_lower, model.row_upper, model.lower, model.upper)

    def proves_empty(self, ray: npt.ArrayLike) -> bool:
        """Whether `ray` (or its negative) rigorously proves the LP infeasible: a positive
        `bound` of ``min 0``."""
        zero = np.zeros(self.lo.size)
        y = np.asarray(ray, dtype=np.float64)
        return bool(self.bound(zero, y) > 0 or self.bound(zero, -y) > 0)

    def bound(self, cost: npt.ArrayLike, row_dual: npt.ArrayLike) -> float:
        """The rigorous lower bound of `min cost^T x` given by `row_dual` (see `safe_dual_bound`)."""
        c = np.asarray(cost, dtype=np.float64).reshape(-1)
        y = np.array(row_dual, dtype=np.float64).reshape(-1)
        y[~np.isfinite(y) | ((y > 0) & ~np.isfinite(self.rl))
          | ((y < 0) & ~np.isfinite(self.ru))] = 0.0
        used = y != 0.0
        row_terms = np.zeros_like(y)
        row_terms[used] = y[used] * np.where(y[used] > 0, self.rl[used], self.ru[used])
        red = c - self.at @ y
        err = 2.0 * gamma(self.k + 2.0) * (np.abs(c) + self.abs_at @ np.abs(y))
        active = red != 0.0
        at = np.where(red > 0, self.lo, self.up)
        mag = np.maximum(np.abs(self.lo), np.abs(self.up))
        if np.any(active & ~np.isfinite(at)) or np.any((err > 0) & ~np.isfinite(mag)):
            return -np.inf  # a reduced cost pushes towards an infinite variable bound
        col_terms = np.zeros_like(red)
        col_terms[active] = red[active] * at[active]
        e_total = float(np.sum(err[err > 0] * mag[err > 0]))
        terms = np.concatenate([row_terms, col_terms])
        slack = e_total + 2.0 * gamma(terms.size + 2.0) * (
            float(np.sum(np.abs(terms))) + e_total) + UNDERFLOW_SLACK
        return float(round_down(np.float64(np.sum(terms)) - slack))


def safe_dual_bound(A: sp.csr_array | FloatArray, row_lower: npt.ArrayLike,
                    row_upper: npt.ArrayLike, col_lower: npt.ArrayLike, col_upper: npt.ArrayLike,
                    cost: npt.ArrayLike, row_dual: npt.ArrayLike) -> float:
    """A rigorous lower bound of `min c^T x s.t. row_lower <= A x <= row_upper, l <= x <= u`.

    Neumaier & Shcherbina (2004). For *any* `y`, with `r = c - A^T y`, every feasible `x`
    satisfies, in exact arithmetic,
    `c^T x = y^T (A x) + r^T x >= sum_i min(y_i rl_i, y_i ru_i) + sum_j min(r_j l_j, r_j u_j)`.
    Non-finite `y_i`, and `y_i` whose row side is infinite (`y_i > 0` with `rl_i = -inf`,
    `y_i < 0` with `ru_i = +inf`), are set to 0 first.

    Rounding: `fl(r_j)` is within `e_j = 2 gamma(K + 2) (|c_j| + (|A|^T |y|)_j)` of `r_j`
    (`K` = largest column length + 1), so `r_j x_j >= fl(r_j) x_j - e_j m_j` with
    `m_j = max(|l_j|, |u_j|)`. The float sum `S` of the `N` = rows + columns products is
    within `gamma(N + 2) T` of exact (`T` = the sum of their absolute values). The result
    is `down(fl(S) - E - 2 gamma(N + 2) (T + E) - eta)` with `E = sum_j e_j m_j`; the factor 2
    also covers computing `T`, `E` and `e` in float, `eta` underflow, and `down` (one ulp
    towards -inf) the last subtraction, as in `milpverify.bounds.interval`.

    Parameters
    ----------
    A : sparse or dense matrix, shape (m, n)
    row_lower, row_upper : array_like, shape (m,)
        Row bounds (infinite sides allowed).
    col_lower, col_upper : array_like, shape (n,)
        Variable bounds (infinite ones give `-inf` when the reduced cost points at them).
    cost : array_like, shape (n,)
    row_dual : array_like, shape (m,)
        Any vector, e.g. the LP solver's row duals (HiGHS: `c - A^T y` = reduced costs).

    Returns
    -------
    float
        A lower bound of the LP's exact optimum (`-inf` if this `y` gives none).

    Example
    -------
    >>> a = sp.csr_array([[1.0, 1.0]])       # min x0 + 2 x1  s.t.  x0 + x1 >= 1,  0 <= x <= 5
    >>> safe_dual_bound(a, [1.0], [np.inf], [0, 0], [5, 5], [1.0, 2.0], [1.0])  # optimum 1
    0.9999999999999766
    """
    return DualBounder.of(A, row_lower, row_upper, col_lower, col_upper).bound(cost, row_dual)


def _lp_level(state: _State, node: str, neurons: IntArray, stoppable: npt.NDArray[np.bool_],
              stats: _LevelStats, decide_only: bool) -> list[FloatArray]:
    """LP-tighten `neurons` of `node`: one relaxed model of the cone, warm-started re-solves
    (HiGHS: `LP_HIGHS_FIRST`, then `LP_HIGHS_RESOLVE` with at most
    `LP_RESOLVE_ITERATIONS_PER_DIM` iterations per row and column, else again from scratch).

    Each bound is `safe_dual_bound` of the returned row duals (or, without duals, the
    solver's bound widened by `LP_FALLBACK_SLACK`).
    """
    if decide_only:
        proven = state.evidence.unstable(node, state.pre[node][0].size)[neurons] & stoppable[neurons]
        stats.skipped_proven_unstable += int(proven.sum())
        neurons = neurons[~proven]
    if not len(neurons):
        return []
    cone = _Cone.build(state, node, neurons, exact=False)
    bounder = DualBounder.of_model(cone.model)
    highs = state.backend == "highs"
    resolve = {**LP_HIGHS_RESOLVE, "simplex_iteration_limit": int(min(
        LP_RESOLVE_ITERATIONS_PER_DIM * (cone.model.n_vars + cone.model.n_rows), HIGHS_INT_MAX))}

    def tighten_share(share: IntArray, share_stats: _LevelStats) -> list[FloatArray]:
        """`share` of the neurons in a session of its own (warm starts stay per session)."""
        solved = [0]
        with get_backend(state.backend).session(cone.model) as session:

            def solve(j: int, sense: float) -> tuple[float, FloatArray | None] | None:
                if state.empty:
                    return None
                var = int(cone.var[j])

                def run(params: dict[str, object]) -> SolveResult:
                    return session.minimize(np.array([var]), np.array([sense]), _options(
                        state, state.per_neuron_s, solver_params=params))

                params = (resolve if solved[0] else LP_HIGHS_FIRST) if highs else {}
                solved[0] += 1
                res = run(params)
                if params is resolve and res.status is SolveStatus.OTHER_LIMIT:  # stalled
                    share_stats.restarts += 1
                    res = run(LP_HIGHS_FIRST)
                if highs and res.status is SolveStatus.INFEASIBLE and res.dual_ray is None:
                    res = run(LP_HIGHS_RAY)
                if res.dual_ray is not None and bounder.proves_empty(res.dual_ray):
                    state.empty = True  # the region is empty: crossed bounds, `_tighten` stops
                    return sense * np.inf, None
                duals = res.row_duals
                point = None if res.x is None else res.x[cone.inputs]
                if duals is not None:
                    cost = np.zeros(cone.model.n_vars)
                    cost[var] = sense
                    return sense * bounder.bound(cost, duals), point
                if res.status in TRUSTED_STATUSES and np.isfinite(res.dual_bound):
                    return _widen(res.dual_bound, sense, LP_FALLBACK_SLACK), point
                return None

            return _run_neurons(state, node, share, stoppable, share_stats, decide_only, solve)

    return _in_shares(state, neurons[cone.var[neurons] >= 0], stats, tighten_share)
