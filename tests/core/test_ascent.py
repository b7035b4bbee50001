"""The one ascent loop (`core.ascent`) that pgd, pgd_topk and the VNN-LIB falsifier share."""

from __future__ import annotations

import time

import numpy as np
import pytest
from helpers import random_mlp

from milpverify.core.ascent import ascend, bisect_radius, signed_step
from milpverify.core.witness import WitnessCheck


class _Calls:
    """An objective (-|z - goal|^2 per row) that records which rounds asked for a gradient."""

    def __init__(self, goal: float | np.ndarray = 0.7) -> None:
        self.goal = goal
        self.with_grad: list[bool] = []

    def __call__(self, z: np.ndarray, with_grad: bool) -> tuple[np.ndarray, np.ndarray | None]:
        self.with_grad.append(with_grad)
        value = -((z - self.goal) ** 2).sum(axis=1)
        return value, (-2.0 * (z - self.goal) if with_grad else None)


def _at(distance: float) -> WitnessCheck:
    return WitnessCheck(verified=True, witness=np.zeros(1), distance=distance, in_domain=True,
                        margin_numpy=0.0, margin_onnx=None, adversarial_label=1, message="")


def _never(z: np.ndarray, value: np.ndarray) -> None:
    return None


def test_ascend_runs_steps_plus_one_rounds_and_skips_the_last_gradient() -> None:
    calls = _Calls()
    step = signed_step(np.zeros(2), np.ones(2), lambda it: 0.1)
    assert ascend(np.zeros((3, 2)), calls, step, 5, _never) is None
    assert calls.with_grad == [True] * 5 + [False]


def test_ascend_moves_by_signed_steps_inside_the_box() -> None:
    seen: list[np.ndarray] = []

    def accept(z: np.ndarray, value: np.ndarray) -> None:
        seen.append(z.copy())

    step = signed_step(np.zeros(2), np.ones(2), lambda it: 0.1 * (it + 1))
    ascend(np.array([[0.0, 0.95]]), _Calls(np.array([0.7, 2.0])), step, 3, accept)
    # Steps of 0.1, 0.2, 0.3 along the gradient's sign: the first coordinate climbs to 0.6,
    # the second (its goal beyond the box) is clipped at 1 after the first step.
    np.testing.assert_allclose(np.vstack(seen), [[0.0, 0.95], [0.1, 1.0], [0.3, 1.0],
                                                 [0.6, 1.0]], atol=1e-12)
    assert all(np.all((z >= 0) & (z <= 1)) for z in seen)


def test_ascend_stops_at_the_first_accepted_round() -> None:
    calls = _Calls()
    marker = _at(0.0)

    def accept(z: np.ndarray, value: np.ndarray) -> WitnessCheck | None:
        return marker if len(calls.with_grad) == 3 else None

    step = signed_step(np.zeros(1), np.ones(1), lambda it: 0.1)
    assert ascend(np.zeros((1, 1)), calls, step, 10, accept) is marker
    assert len(calls.with_grad) == 3


def test_ascend_past_its_deadline_evaluates_once_without_gradient() -> None:
    calls = _Calls()
    step = signed_step(np.zeros(1), np.ones(1), lambda it: 0.1)
    ascend(np.zeros((2, 1)), calls, step, 100, _never, deadline=time.perf_counter() - 1.0)
    assert calls.with_grad == [False]


def test_bisect_radius_brackets_an_attack_with_a_threshold() -> None:
    """An attack that succeeds exactly at radii >= 0.3 (its witness at distance 0.3): the
    bracket closes on 0.3 from below and the best witness is the one at 0.3."""
    def run(eps: float) -> WitnessCheck | None:
        return _at(0.3) if eps >= 0.3 else None

    best, lo, hi, runs = bisect_radius(run, 1.0, 20)
    assert best is not None and best.distance == 0.3
    assert lo < 0.3 <= hi and hi - lo < 1e-6 and runs == 21


def test_bisect_radius_keeps_hi_when_a_run_finds_a_farther_witness() -> None:
    """A hit at radius r whose witness lies farther than the best (e.g. an L1 distance of a
    box attack) still shows r is attackable: hi moves down, the best witness stays."""
    def run(eps: float) -> WitnessCheck | None:
        return _at(0.5) if eps >= 0.1 else None

    best, lo, hi, _ = bisect_radius(run, 0.5, 10)
    assert best is not None and best.distance == 0.5
    assert lo < 0.1 <= hi < 0.5


def test_bisect_radius_reports_nothing_found() -> None:
    assert bisect_radius(lambda eps: None, 1.0, 5) == (None, 0.0, 1.0, 1)


def test_pgd_time_limit_is_kept() -> None:
    """`pgd(time_limit_s=)` starts no round after its budget: on a net whose PGD runs
    thousands of rounds, a 50 ms budget ends within a few rounds' time."""
    pytest.importorskip("torch")
    from milpverify.core.attacks import pgd

    net, _ = random_mlp(np.random.default_rng(3), [20, 64, 64, 3])
    x = np.random.default_rng(4).uniform(0.3, 0.7, size=20)
    unlimited = pgd(net, x, steps=400, restarts=2, bisection_steps=12)
    t0 = time.perf_counter()
    limited = pgd(net, x, steps=400, restarts=2, bisection_steps=12, time_limit_s=0.05)
    elapsed = time.perf_counter() - t0
    assert elapsed < 0.05 + 1.0
    assert limited.stats["gradient_evaluations"] < unlimited.stats["gradient_evaluations"]
    assert limited.witness is None or limited.witness_verified
