"""MIP bound tightening and the sign MILPs ('can this neuron cross zero?') of the progressive
method.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

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
from milpverify.ir.ops import FloatArray, IntArray
from milpverify.solve import get_backend

#: Outward widening `slack * (1 + |bound|)` of a MILP solver's dual bound (module docstring).
MIP_BOUND_SLACK = 1e-6


#: A MILP asked whether `pre >= 0` uses the cutoff `2 * MIP_BOUND_SLACK`, so that a proof
#: survives the widening: `2 s - s (1 + 2 s) >= 0`.
MIP_SIGN_CUTOFF = 2.0 * MIP_BOUND_SLACK


#: Default time limit of one neuron's MILP in `"progressive"` (`per_neuron_s` overrides it).
PROGRESSIVE_MIP_NEURON_S = 0.5


#: Solver parameters of `"progressive"`'s sign MILPs, per MILP backend: no presolve and no
#: primal heuristics. In a half-second solve that asks "can this neuron cross zero?", both
#: took about half the time (SCIP, eran 9x200 `idx_3539`: presolve 27%, heuristics 29%),
#: while a crossing point is what the box samples and LP points already look for. With
#: 60 s of tightening on `idx_3539` 62 of 128 sign MILPs stabilised their neuron and 379
#: ReLUs stayed unstable (of 753), against 31 of 103 and 499 with SCIP's defaults
#: (`python benchmarks/sign_milps.py --idx 3539 2697 --budget 60`,
#: `benchmarks/results/sign_milps.md`).
SIGN_MILP_PARAMS: dict[str, dict[str, object]] = {
    "scip": {"presolving/emphasis": "off", "heuristics/emphasis": "off"},
    "highs": {"presolve": "off", "mip_heuristic_effort": 0.0},
}


def _mip_level(state: _State, node: str, neurons: IntArray, stoppable: npt.NDArray[np.bool_],
               stats: _LevelStats, decide_only: bool) -> list[FloatArray]:
    """MILP-tighten `neurons` of `node`, one exact model of each neuron's own cone.

    A model per neuron keeps binaries outside the neuron's cone out of the branching.
    Bounds are the solver's dual bound widened by `MIP_BOUND_SLACK`. `decide_only`
    (progressive) skips neurons proven unstable and only asks whether the neuron can reach
    the far side of zero: objective cutoff `MIP_SIGN_CUTOFF`, stop at the first solution,
    `SIGN_MILP_PARAMS`.
    """
    if decide_only:
        proven = state.evidence.unstable(node, state.pre[node][0].size)[neurons] & stoppable[neurons]
        stats.skipped_proven_unstable += int(proven.sum())
        neurons = neurons[~proven]
    backend = get_backend(state.mip_backend)
    limit = state.per_neuron_s
    if decide_only and limit is None:
        limit = PROGRESSIVE_MIP_NEURON_S
    extra: dict[str, Any] = ({"objective_cutoff": MIP_SIGN_CUTOFF, "stop_at_first_feasible": True,
                              "solver_params": SIGN_MILP_PARAMS.get(state.mip_backend, {})}
                             if decide_only else {})

    def tighten_share(share: IntArray, share_stats: _LevelStats) -> list[FloatArray]:
        points: list[FloatArray] = []
        for j in share:
            if state.left() <= 0:
                state.cut_short = True
                break
            cone = _Cone.build(state, node, np.array([j]), exact=True)
            if cone.var[j] < 0:
                continue
            with backend.session(cone.model) as session:

                def solve(k: int, sense: float) -> tuple[float, FloatArray | None] | None:
                    res = session.minimize(np.array([cone.var[k]]), np.array([sense]),
                                           _options(state, limit, **extra))
                    point = None if res.x is None else res.x[cone.inputs]
                    if res.status not in TRUSTED_STATUSES or not np.isfinite(res.dual_bound):
                        return None  # e.g. HiGHS "Solve error" reports a dual bound of 0.0
                    return _widen(res.dual_bound, sense, MIP_BOUND_SLACK), point

                points += _run_neurons(state, node, np.array([j]), stoppable, share_stats,
                                       decide_only, solve)
        return points

    return _in_shares(state, neurons, stats, tighten_share)
