"""`encode.reduce.eliminate_definitions`: the reduced MILP has the full one's optimum, and its
points map back to points of the full model that are true computations of the network."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import brute_force_rho, random_mlp

from milpverify.bounds import symbolic_bounds
from milpverify.encode.milp import Term, encode_network
from milpverify.encode.model import MilpModel
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
    """Network rows only (no unsafe row reads the outputs, so they are eliminated too): the
    reduced model with the input fixed expands to the network's values."""
    rng = np.random.default_rng(seed)
    net, _ = random_mlp(rng, SIZES)
    x = rng.uniform(0.2, 0.8, size=3)
    lo, hi = np.clip(x - 0.1, 0, 1), np.clip(x + 0.1, 0, 1)
    model = MilpModel()
    inputs = model.add_vars(3, lo, hi, name="x")
    enc = encode_network(net, symbolic_bounds(net, lo, hi), model, Term.of_vars(inputs))
    reduction = eliminate_definitions(model, enc.definitions)
    assert reduction is not None and reduction.eliminated > 0
    out = enc.terms[net.output]
    assert np.all(out.var >= 0)
    cols = reduction.expand_matrix[inputs].indices  # the inputs stay: identity rows
    for point in np.clip(x + rng.uniform(-0.1, 0.1, size=(4, 3)), 0, 1):
        pinned = reduction.model.copy()
        pinned.fix_vars(cols, point)
        result = get_backend("scip").solve(pinned, SolveOptions())
        assert result.status == SolveStatus.OPTIMAL
        full = reduction.expand(result.x)
        np.testing.assert_allclose(full[out.var], net.forward(point).reshape(-1), atol=1e-6)
        assert model.max_violation(full) <= 1e-6
