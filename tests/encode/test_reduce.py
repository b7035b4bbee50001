"""`encode.reduce.eliminate_definitions`: the reduced MILP has the full one's optimum, and its
points map back to points of the full model that are true computations of the network."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import brute_force_rho, random_mlp

from milpverify.bounds import symbolic_bounds
from milpverify.encode.objective import build_robustness_problem
from milpverify.encode.reduce import eliminate_definitions
from milpverify.solve import get_backend
from milpverify.solve.base import SolveOptions, SolveStatus

SIZES = [3, 5, 5, 3]


def problem_at(seed: int, radius: float, with_distance: bool = True):
    rng = np.random.default_rng(seed)
    net, weights = random_mlp(rng, SIZES)
    x = rng.uniform(0.2, 0.8, size=3)
    label = int(np.argmax(net.forward(x)))
    lo, hi = np.clip(x - radius, 0, 1), np.clip(x + radius, 0, 1)
    bounds = symbolic_bounds(net, lo, hi)
    problem = build_robustness_problem(net, x, label, bounds, lo, hi, norm="linf",
                                       radius=radius, margin=0.0,
                                       candidates=[j for j in range(3) if j != label],
                                       with_distance=with_distance)
    return net, weights, x, label, problem


@pytest.mark.parametrize("seed", [0, 2, 3, 15])  # 2 and 15 have rho < 0.2
def test_reduced_milp_has_the_full_optimum_and_brute_force_rho(seed: int) -> None:
    net, weights, x, label, problem = problem_at(seed, 0.2)
    reduction = eliminate_definitions(problem.model, problem.encoding.definitions)
    assert reduction is not None and reduction.eliminated > 0
    assert reduction.model.n_vars < problem.model.n_vars
    scip = get_backend("scip")
    full = scip.solve(problem.model, SolveOptions(mip_gap=0.0))
    small = scip.solve(reduction.model, SolveOptions(mip_gap=0.0))
    assert full.status == small.status
    if full.status == SolveStatus.OPTIMAL:
        assert small.objective == pytest.approx(full.objective, abs=1e-6)
        assert small.objective == pytest.approx(brute_force_rho(weights, x, label),
                                                abs=1e-6)
        # The reduced optimum maps back to a point of the full model ...
        point = reduction.expand(small.x)
        assert problem.model.max_violation(point) <= 1e-6
        # ... whose input is misclassified (up to the solver's tolerance).
        logits = net.forward(point[problem.input_vars]).reshape(-1)
        assert max(logits[j] for j in range(3) if j != label) >= logits[label] - 1e-5


@pytest.mark.parametrize("seed", range(3))
def test_pinned_input_expands_to_the_forward_pass(seed: int) -> None:
    net, _, x, label, problem = problem_at(seed, 0.05, with_distance=False)
    reduction = eliminate_definitions(problem.model, problem.encoding.definitions)
    assert reduction is not None
    out = problem.encoding.terms[net.output]
    keep_inputs = reduction.expand_matrix[problem.input_vars]  # rows of the inputs: identity
    cols = keep_inputs.indices
    rng = np.random.default_rng(seed)
    for point in np.clip(x + rng.uniform(-0.05, 0.05, size=(4, 3)), 0, 1):
        pinned = reduction.model.copy()
        pinned.fix_vars(cols, point)
        # no unsafe row needed: drop nothing, just find any feasible completion
        result = get_backend("scip").solve(pinned, SolveOptions())
        if result.status == SolveStatus.INFEASIBLE:
            # the input is not misclassified: the unsafe row cuts it off
            continue
        full = reduction.expand(result.x)
        got = np.where(out.var >= 0, full[np.maximum(out.var, 0)], out.const)
        np.testing.assert_allclose(got, net.forward(point).reshape(-1), atol=1e-6)
