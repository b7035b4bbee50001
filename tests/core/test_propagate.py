"""Node propagation (`core.propagate`): exact answers with it on, and sound node bounds.

The answers of the MILPs with the propagator must equal brute-force enumeration of the
activation regions; the bounds it derives for a node (a sub-box with some ReLU phases
fixed) must contain the network's values at every sampled point of that node's region.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import brute_force_rho, random_mlp

from milpverify.bounds import symbolic_bounds
from milpverify.core.propagate import UNSAFE_ROWS_NODE, NetworkPropagator
from milpverify.encode.objective import build_robustness_problem
from milpverify.solve import get_backend
from milpverify.solve.base import SolveOptions, SolveStatus
from milpverify.verify import certify, rho


def _problem(net, x, label, lo, hi, *, with_distance=True, margin=0.0):
    bounds = symbolic_bounds(net, lo, hi)
    cands = [j for j in range(net.num_classes) if j != label]
    problem = build_robustness_problem(net, x, label, bounds, lo, hi, norm="linf",
                                       radius=float(np.max(hi - lo)), margin=margin,
                                       candidates=cands, with_distance=with_distance)
    return bounds, problem


@pytest.mark.parametrize("seed", range(8))
def test_distance_milp_with_propagator_equals_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    net, weights = random_mlp(rng, [3, 6, 6, 3])
    x = rng.uniform(0.2, 0.8, size=3)
    label = int(net.predict(x)[0])
    lo, hi = np.zeros(3), np.ones(3)
    bounds, problem = _problem(net, x, label, lo, hi)
    prop = NetworkPropagator(net, bounds, problem)
    # presolve off: the tree, and so the propagator, does the work
    result = get_backend("scip").solve(problem.model, SolveOptions(
        node_propagator=prop, solver_params={"presolving/maxrounds": 0}))
    expected = brute_force_rho(weights, x, label)
    if math.isinf(expected):
        assert result.status is SolveStatus.INFEASIBLE
    else:
        assert result.status is SolveStatus.OPTIMAL
        assert result.objective == pytest.approx(expected, abs=1e-6)
    assert "network propagation" in result.message


@pytest.mark.parametrize("seed", range(4))
def test_rho_and_certify_with_propagation_match_brute_force(seed: int) -> None:
    rng = np.random.default_rng(10 + seed)
    net, weights = random_mlp(rng, [2, 5, 4, 4])
    x = rng.uniform(0.2, 0.8, size=2)
    label = int(net.predict(x)[0])
    expected = brute_force_rho(weights, x, label)
    result = rho(net, x, time_limit_s=30, tolerance=1e-6, propagate=True,
                 upper_bound=None)
    if math.isinf(expected):
        assert result.status == "robust_at_cap"
        return
    assert result.status == "optimal", result
    assert result.lower == pytest.approx(expected, abs=1e-6)
    assert result.upper == pytest.approx(expected, abs=1e-5)
    assert certify(net, x, 0.9 * expected, propagate=True, attack=None).verdict == "robust"
    assert certify(net, x, 1.1 * expected, propagate=True,
                   attack=None).verdict == "not_robust"


def _sample_node(rng, net, problem, prop):
    """A random node: a sub-box, bounds of a few pre-activation variables, and phases of
    some ReLUs fixed (mostly those of a point in the sub-box, so the node is seldom
    empty; sometimes at random)."""
    n = net.input_size
    model = problem.model
    lower, upper = model.lower[prop.variables].copy(), model.upper[prop.variables].copy()
    a, b = rng.uniform(0, 1, n), rng.uniform(0, 1, n)
    box_lo, box_hi = np.minimum(a, b), np.maximum(a, b)
    lower[:n], upper[:n] = box_lo, box_hi
    point = rng.uniform(box_lo, box_hi)
    values = net.forward_all(point)
    for pre, p_idx, p_span, b_idx, b_span, _, _ in prop._relus:
        phases = values[pre].reshape(-1)[b_idx] >= 0
        if rng.random() < 0.3:
            phases = rng.random(len(b_idx)) < 0.5
        fix = rng.random(len(b_idx)) < 0.25
        lower[b_span] = np.where(fix & phases, 1.0, lower[b_span])
        upper[b_span] = np.where(fix & ~phases, 0.0, upper[b_span])
        if rng.random() < 0.3 and len(p_idx):  # a bound on one pre-activation variable
            k = rng.integers(len(p_idx))
            cut = values[pre].reshape(-1)[p_idx[k]] + rng.normal(scale=0.3)
            if rng.random() < 0.5:
                lower[p_span.start + k] = max(lower[p_span.start + k], cut)
            else:
                upper[p_span.start + k] = min(upper[p_span.start + k], cut)
    return lower, upper, box_lo, box_hi


def _in_node(prop, values, lower, upper):
    """Mask of sampled points (per-node values, points in rows) inside the node's region."""
    keep = np.ones(next(iter(values.values())).shape[0], dtype=bool)
    for pre, p_idx, p_span, b_idx, b_span, _, _ in prop._relus:
        v = values[pre]
        keep &= np.all(v[:, p_idx] >= lower[p_span], axis=1)
        keep &= np.all(v[:, p_idx] <= upper[p_span], axis=1)
        keep &= np.all((v[:, b_idx] >= 0) | (lower[b_span] < 0.5), axis=1)
        keep &= np.all((v[:, b_idx] <= 0) | (upper[b_span] > 0.5), axis=1)
    return keep


@pytest.mark.parametrize("seed", range(6))
def test_propagated_bounds_contain_every_sampled_point_of_the_node(seed: int) -> None:
    rng = np.random.default_rng(seed)
    net, _ = random_mlp(rng, [4, 8, 8, 3])
    x = rng.uniform(0.2, 0.8, size=4)
    label = int(net.predict(x)[0])
    lo, hi = np.zeros(4), np.ones(4)
    _, problem = _problem(net, x, label, lo, hi, with_distance=False, margin=-0.5)
    prop = NetworkPropagator(net, symbolic_bounds(net, lo, hi), problem)
    checked = cut = local_cuts = 0
    for _ in range(60):
        lower, upper, box_lo, box_hi = _sample_node(rng, net, problem, prop)
        points = rng.uniform(box_lo, box_hi, size=(4000, 4))
        values = {k: np.asarray(v).reshape(len(points), -1)
                  for k, v in prop.net.forward_all(points).items()}
        inside = _in_node(prop, values, lower, upper)
        state = prop.node_bounds(lower, upper)
        out = prop.propagate(lower, upper)
        if state is None or out is None:
            cut += 1
            # a node cut off holds no point of its region that meets the unsafe set
            rows = values[UNSAFE_ROWS_NODE][inside]
            meets = np.zeros(len(rows), dtype=bool)
            for d, disjunct in enumerate(problem.disjuncts):
                sel = prop._owner == d
                meets |= np.all(rows[:, sel] <= prop._rhs[sel], axis=1)
            assert not meets.any()
            continue
        new_lo, new_hi = out
        assert np.all(new_lo >= lower) and np.all(new_hi <= upper)
        for name, (l, u) in state.items():
            v = values[name][inside]
            assert np.all(v >= l) and np.all(v <= u), name
        for pre, p_idx, p_span, b_idx, b_span, o_idx, o_span in prop._relus:
            v = values[pre][inside]
            assert np.all(v[:, p_idx] >= new_lo[p_span]) and np.all(v[:, p_idx] <= new_hi[p_span])
            assert np.all((v[:, b_idx] >= 0) | (new_lo[b_span] < 0.5))  # fixed on: pre >= 0
            assert np.all((v[:, b_idx] <= 0) | (new_hi[b_span] > 0.5))  # fixed off: pre <= 0
            post = np.maximum(v[:, o_idx], 0.0)
            assert np.all(post >= new_lo[o_span]) and np.all(post <= new_hi[o_span])
        # a choice binary fixed to 0 belongs to a disjunct no point of the node meets
        rows = values[UNSAFE_ROWS_NODE][inside]
        for d, z in enumerate(new_hi[prop._choice]):
            if z < 0.5 <= upper[prop._choice][d]:
                sel = prop._owner == d
                assert not np.all(rows[:, sel] <= prop._rhs[sel], axis=1).any()
        # the local big-M rows hold at every point of the node (an LP point that violates
        # every candidate row asks for all of them)
        lp = np.zeros(problem.model.n_vars)
        points_x = np.zeros((int(inside.sum()), problem.model.n_vars))
        for (pre, _, _, b_idx, _, _, _), (pre_col, post_col, bin_col) in zip(prop._relus,
                                                                            prop._cut_cols):
            v = values[pre][inside][:, b_idx]
            ok = (pre_col >= 0) & (post_col >= 0)
            lp[pre_col[ok]], lp[post_col[ok]], lp[bin_col[ok]] = -1e3, 1e3, 0.0
            points_x[:, pre_col[ok]] = v[:, ok]
            points_x[:, post_col[ok]] = np.maximum(v[:, ok], 0.0)
            points_x[:, bin_col[ok]] = (v[:, ok] > 0).astype(float)
        cuts = prop.local_cuts(lower, upper, lp)
        assert cuts is not None
        for r in range(cuts.count):
            sel = cuts.rows == r
            lhs = points_x[:, cuts.cols[sel]] @ cuts.vals[sel]
            assert np.all(lhs <= cuts.rhs[r] + 1e-9)
        local_cuts += cuts.count
        checked += int(inside.sum() > 0)
    assert checked > 5
    assert local_cuts > 0
