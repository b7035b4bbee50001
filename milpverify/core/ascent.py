"""The one loop every attack runs: projected gradient ascent, and bisection of the radius.

`milpverify.core.attacks` (torch gradients: `pgd`), `milpverify.properties.query.pgd_topk`
and `milpverify.vnn.falsify.falsify` (numpy gradients, `core.region.input_gradient`) each
say what they raise, where they start, how they step and which points they re-check; the
loop, its deadline and the radius bisection are written here once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from milpverify.core.witness import WitnessCheck
from milpverify.ir.ops import FloatArray

Objective = Callable[[FloatArray, bool], tuple[FloatArray, "FloatArray | None"]]
"""(value per row, its gradient per row, or None when not asked) of what an attack raises."""

Accept = Callable[[FloatArray, FloatArray], "WitnessCheck | None"]
"""A verified witness among the rows (given with their values), or None."""

Step = Callable[[FloatArray, FloatArray, int], FloatArray]
"""The next rows from the rows, their gradients and the round: move, then project."""


def ascend(z: FloatArray, objective: Objective, step: Step, steps: int, accept: Accept,
           deadline: float = math.inf) -> WitnessCheck | None:
    """Projected gradient ascent from every row of `z`.

    Each of at most ``steps + 1`` rounds evaluates `objective` at the rows (with gradients
    unless it is the last round), lets `accept` re-check the promising rows, and moves the
    rows with `step`. The last round is the one after `steps` moves, or the first one that
    starts past `deadline`. What is maximised, where the rows start, how they move and which
    rows are re-checked belong to each attack (`pgd`, `properties.query.pgd_topk`,
    `vnn.falsify.falsify`); the loop is theirs in common.
    """
    for it in range(steps + 1):
        last = it == steps or time.perf_counter() >= deadline
        value, grad = objective(z, not last)
        found = accept(z, value)
        if found is not None or last:
            return found
        assert grad is not None
        z = step(z, grad, it)
    return None


def signed_step(low: FloatArray, high: FloatArray, size: Callable[[int], Any]) -> Step:
    """The L-inf step: `size(round)` times the gradient's sign, clipped into [low, high]."""
    def step(z: FloatArray, grad: FloatArray, it: int) -> FloatArray:
        return np.clip(z + size(it) * np.sign(grad), low, high)
    return step


def bisect_radius(run: Callable[[float], WitnessCheck | None], eps: float, steps: int,
                  deadline: float = math.inf
                  ) -> tuple[WitnessCheck | None, float, float, int]:
    """The closest witness an attack at a radius finds: `run(eps)`, then `steps` bisections
    of [0, best distance] (none past `deadline`).

    Returns (best or None, lo, hi, runs): `run` found nothing at `lo` (which proves
    nothing) and the best witness lies at distance `hi`.
    """
    best, runs = run(eps), 1
    if best is None:
        return None, 0.0, eps, runs
    lo, hi = 0.0, float(best.distance)
    for _ in range(steps):
        if time.perf_counter() >= deadline:
            break
        mid = 0.5 * (lo + hi)
        check = run(mid)
        runs += 1
        if check is not None:  # the radius is attackable, even if this witness is farther
            best = check if check.distance < best.distance else best
            hi = min(mid, float(best.distance))
        else:
            lo = mid
    return best, lo, hi, runs


__all__ = ["Accept", "Objective", "Step", "ascend", "bisect_radius", "signed_step"]
