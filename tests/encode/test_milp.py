"""`milpverify.encode.milp.encode_network`: the big-M MILP is exact for sound bounds.

Checked on seeded random MLPs against an independent reference (`helpers.activation_regions`,
which enumerates the affine pieces with scipy): pinning the input reproduces the forward
pass, the MILP's maximum of an output over the box equals the brute-force maximum, only
unstable ReLUs get a binary, and the LP relaxation bounds the MILP from the right side.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import activation_regions, random_mlp
from scipy.optimize import linprog

from milpverify.bounds import interval_bounds, symbolic_bounds
from milpverify.encode.milp import Term, encode_network, needed_elements
from milpverify.encode.model import MilpModel
from milpverify.ir import ops
from milpverify.ir.network import Network
from milpverify.solve import get_backend
from milpverify.solve.base import SolveOptions, SolveStatus

SIZES = [3, 5, 4, 2]


def encoded(net: Network, lower: np.ndarray, upper: np.ndarray, *, relax: bool = False,
            bounds=None):
    bounds = bounds if bounds is not None else symbolic_bounds(net, lower, upper)
    model = MilpModel()
    x = model.add_vars(net.input_size, lower, upper, name="x")
    enc = encode_network(net, bounds, model, Term.of_vars(x), relax=relax)
    return model, x, enc


def maximise(model: MilpModel, enc, net: Network, j: int) -> float:
    out = enc.terms[net.output]
    assert out.var[j] >= 0
    model.set_objective([out.var[j]], [-1.0])
    result = get_backend("highs").solve(model, SolveOptions(mip_gap=0.0))
    assert result.status == SolveStatus.OPTIMAL
    return -float(result.objective)


def brute_force_max(weights, n: int, j: int) -> float:
    best = -np.inf
    for a_ub, b_ub, fa, fc in activation_regions(weights, n):
        res = linprog(-fa[j], A_ub=a_ub, b_ub=b_ub, bounds=[(0.0, 1.0)] * n, method="highs")
        assert res.status == 0
        best = max(best, -res.fun + fc[j])
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pinned_input_reproduces_the_forward_pass(seed: int) -> None:
    rng = np.random.default_rng(seed)
    net, _ = random_mlp(rng, SIZES)
    lower, upper = np.zeros(3), np.ones(3)
    model, x_vars, enc = encoded(net, lower, upper)
    for point in rng.uniform(0, 1, size=(4, 3)):
        pinned = model.copy()
        pinned.fix_vars(x_vars, point)
        out = enc.terms[net.output]
        pinned.set_objective([out.var[0]], [1.0])
        result = get_backend("highs").solve(pinned, SolveOptions(mip_gap=0.0))
        assert result.status == SolveStatus.OPTIMAL
        got = np.where(out.var >= 0, result.x[np.maximum(out.var, 0)], out.const)
        np.testing.assert_allclose(got, net.forward(point).reshape(-1), atol=1e-6)


@pytest.mark.parametrize("seed", [3, 4])
def test_milp_maximum_equals_brute_force_over_activation_regions(seed: int) -> None:
    rng = np.random.default_rng(seed)
    net, weights = random_mlp(rng, SIZES)
    model, _, enc = encoded(net, np.zeros(3), np.ones(3))
    for j in range(2):
        assert maximise(model.copy(), enc, net, j) == pytest.approx(
            brute_force_max(weights, 3, j), abs=1e-6)


def test_lp_relaxation_is_an_outer_bound() -> None:
    rng = np.random.default_rng(5)
    net, _ = random_mlp(rng, SIZES)
    lower, upper = np.zeros(3), np.ones(3)
    model, _, enc = encoded(net, lower, upper)
    relaxed, _, renc = encoded(net, lower, upper, relax=True)
    assert relaxed.n_integer == 0 and model.n_integer == enc.stats.binaries > 0
    for j in range(2):
        assert maximise(relaxed.copy(), renc, net, j) >= maximise(model.copy(), enc, net, j) - 1e-7


def test_only_unstable_relus_get_a_binary() -> None:
    rng = np.random.default_rng(6)
    net, _ = random_mlp(rng, SIZES)
    lower, upper = np.full(3, 0.4), np.full(3, 0.6)
    bounds = interval_bounds(net, lower, upper)
    _, _, enc = encoded(net, lower, upper, bounds=bounds)
    unstable = 0
    for name, op in net.items():
        if isinstance(op, ops.Relu):
            lo, hi = bounds.flat(op.inputs[0])
            unstable += int(((lo < 0) & (hi > 0)).sum())
            active = enc.relu_active[name]
            assert np.all((active >= 0) == ((lo < 0) & (hi > 0)))
    assert enc.stats.binaries == unstable


def test_inactive_relu_inputs_are_not_needed(tiny_net: Network) -> None:
    """x0 = 0, x1 in [0.1, 0.5]: h0 = x0 - x1 < 0 is always off, so its pre-activation is not
    needed; h1 = 2 x0 + x1 + 1 > 0 is always on and is."""
    lower, upper = np.array([0.0, 0.1]), np.array([0.0, 0.5])
    need = needed_elements(tiny_net, interval_bounds(tiny_net, lower, upper))
    np.testing.assert_array_equal(need["h"], [False, True])
    np.testing.assert_array_equal(need["r"], [True, True])
