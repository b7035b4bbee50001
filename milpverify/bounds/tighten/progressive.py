"""Progressive tightening: LP then MIP levels, each spending its share of the time on the neurons
that matter.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from milpverify.bounds import symbolic_bounds
from milpverify.bounds.tighten.lp import _lp_level
from milpverify.bounds.tighten.mip import _mip_level
from milpverify.bounds.tighten.state import _flat, _pending, _solver_targets, _State
from milpverify.errors import InvalidInputError
from milpverify.ir.ops import FloatArray

#: Random box vertices evaluated up front as evidence of truly unstable neurons.
EVIDENCE_SAMPLES = 256


def _box_samples(lo: FloatArray, hi: FloatArray, n: int, seed: int = 0) -> FloatArray:
    """The centre and `n - 1` random vertices of the box."""
    rng = np.random.default_rng(seed)
    vertices = np.where(rng.random((max(n - 1, 0), lo.size)) < 0.5, lo, hi)
    return np.vstack([0.5 * lo + 0.5 * hi, vertices])


LEVEL_RULES: dict[str, Callable[..., list[FloatArray]]] = {"lp": _lp_level, "mip": _mip_level}
"""One tightening rule per level: `rule(state, node, neurons, stoppable, stats, decide_only)`."""


def _refresh(state: _State) -> None:
    """Symbolic pass intersected with the current bounds (carries gains to later layers).

    Under an output constraint, a pass disjoint from the current bounds (both hold for
    the inputs that satisfy it) shows there are none: `state.empty`, bounds unchanged.
    """
    t0 = time.perf_counter()
    try:
        fresh = symbolic_bounds(state.net, state.box[0], state.box[1],
                                base=state.bounds("tighten"))
    except InvalidInputError:
        if state.constraint is None:
            raise
        state.empty = True
        return
    finally:
        state.symbolic_s += time.perf_counter() - t0
    state.pre = _flat(fresh)


def _tighten(state: _State, levels: Sequence[str], decide_only: bool) -> None:
    """Run the solver levels layer by layer (see the module docstring)."""
    dirty = False
    targets = _solver_targets(state.net, constrained=state.constraint is not None)
    for k, node in enumerate(targets):
        now = time.perf_counter()
        if now >= state.deadline:
            state.cut_short = True
            break
        if dirty:
            _refresh(state)
            dirty = False
            if state.empty:
                break
        # A front-loaded share of what is left, 2 / (layers left + 1): early layers matter
        # most (their gains reach every later layer) but cannot starve the later ones;
        # time a layer does not use passes on to the next.
        state.layer_deadline = now + 2.0 * (state.deadline - now) / (len(targets) - k + 1)
        for level in levels:
            lower, upper = state.pre[node]
            neurons, stoppable = _pending(state.net, node, lower, upper)
            if not len(neurons):
                break
            if state.left() <= 0:
                state.cut_short = True
                break
            stats = state.stats[level]
            t0 = time.perf_counter()
            before = (lower.copy(), upper.copy())
            points = LEVEL_RULES[level](state, node, neurons, stoppable, stats, decide_only)
            if state.constraint is None:  # solver points need not satisfy the constraint
                state.evidence.add(np.asarray(points).reshape(-1, state.net.input_size))
            stats.time_s += time.perf_counter() - t0
            if np.any(lower > upper):  # rigorous bounds crossed: the region is empty
                state.empty = True
                state.layer_deadline = np.inf
                return
            dirty |= bool(np.any(lower > before[0]) or np.any(upper < before[1]))
    state.layer_deadline = np.inf
    if dirty:
        _refresh(state)
