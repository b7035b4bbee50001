"""Branch and bound on ReLU phases (`milpverify.bounds.relu_split`): its domain bounds hold on
every sampled point of the domain, and it refutes a disjunct exactly when enumerating the
activation regions says no point satisfies it."""

from __future__ import annotations

import time

import numpy as np
import pytest
from helpers import activation_regions, random_mlp
from scipy.optimize import linprog

from milpverify.bounds.box_bounds import as_chain
from milpverify.bounds.relu_split import (
    ReluSplitOptions,
    bound_domains,
    refute_by_relu_splits,
    root_bounds,
)
from milpverify.bounds.tighten import compute_bounds
from milpverify.errors import InvalidInputError
from milpverify.ir.constraints import OutputConstraint
from milpverify.vnn.decide import SPEC_NODE, spec_network
from milpverify.vnn.options import VnnlibOptions
from milpverify.vnn.spec import VnnlibProperty, VnnlibSpec
from milpverify.vnn.verify import verify_vnnlib


def _root(aug, lo, hi):
    bounds = compute_bounds(aug, lo, hi, method="symbolic")
    return root_bounds(aug, bounds), bounds


def _forward(weights, x):
    """Pre-activations of every hidden layer and the outputs, rows of x."""
    pre, a = [], x
    for w, b in weights[:-1]:
        z = a @ w.T + b
        pre.append(z)
        a = np.maximum(z, 0.0)
    w, b = weights[-1]
    return pre, a @ w.T + b


@pytest.mark.parametrize("seed", range(4))
def test_domain_bounds_hold_on_sampled_points_of_the_domain(seed):
    rng = np.random.default_rng(seed)
    net, weights = random_mlp(rng, [3, 10, 10, 4])
    a = rng.normal(size=(2, 4))
    b = rng.normal(size=2)
    aug = spec_network(net, a, b)
    chain = as_chain(aug)
    lo, hi = np.full(3, -1.0), np.full(3, 1.0)
    root, _ = _root(aug, lo, hi)
    relu_layers = [k for k, layer in enumerate(chain.layers) if layer[0] == "relu"]
    # 16 domains: random phases on a few unstable neurons of each layer
    signs = {}
    for k in relu_layers:
        unstable = (root[k][0][0] < 0) & (root[k][1][0] > 0)
        s = np.zeros((16, len(unstable)), dtype=np.int8)
        for d in range(16):
            pick = rng.permutation(np.flatnonzero(unstable))[:1]
            s[d, pick] = rng.choice([-1, 1], size=len(pick))
        signs[k] = s
    out = bound_domains(chain, root, signs, np.ones(2, dtype=bool), iterations=10)
    x = rng.uniform(lo, hi, size=(40_000, 3))
    pre, y = _forward(weights, x)
    s_val = y @ a.T - b
    checked = 0
    for d in range(16):
        inside = np.ones(len(x), dtype=bool)
        for layer_no, k in enumerate(relu_layers):
            sg = signs[k][d]
            inside &= np.all((pre[layer_no] * sg) >= 0, axis=1)
        if not inside.any():
            continue
        checked += 1
        value = s_val[inside] @ out.weights[d]
        assert out.lower[d] <= value.min() + 1e-9
    assert checked >= 8


def _exact_min(weights, row, lo, hi):
    """min of row . f(x) over the box, by LP over every activation region."""
    best = np.inf
    for a_ub, b_ub, fa, fc in activation_regions(weights, len(lo), (lo[0], hi[0])):
        res = linprog(row @ fa, A_ub=a_ub, b_ub=b_ub, bounds=list(zip(lo, hi, strict=True)),
                      method="highs")
        if res.status == 0:
            best = min(best, res.fun + row @ fc)
    return best


@pytest.mark.parametrize("seed", range(3))
def test_refutes_exactly_what_region_enumeration_proves(seed):
    """s = y0 - y1 - t with t just below / above the exact minimum of y0 - y1: the
    disjunct s <= 0 is impossible / possible. Symbolic bounds alone cannot refute it; the
    branch and bound must, and must never refute the possible one."""
    rng = np.random.default_rng(100 + seed)
    net, weights = random_mlp(rng, [2, 6, 6, 2])
    lo, hi = np.zeros(2), np.ones(2)
    row = np.array([1.0, -1.0])
    exact = _exact_min(weights, row, lo, hi)
    gap = 0.02 * (1.0 + abs(exact))
    for t, possible in ((exact - gap, False), (exact + gap, True)):
        aug = spec_network(net, row[None], np.array([t]))
        root, bounds = _root(aug, lo, hi)
        chain = as_chain(aug)
        found = refute_by_relu_splits(chain, root, np.ones(1, dtype=bool),
                                      time.perf_counter() + 20,
                                      ReluSplitOptions(batch=8, iterations=30),
                                      start=bounds.flat(SPEC_NODE)[0])
        if possible:
            assert not found.refuted, found.stats
        else:
            assert bounds.flat(SPEC_NODE)[0][0] <= 0  # the root bound alone does not refute
            assert found.refuted, (found.message, found.stats)
            assert found.stats["relu_domains"] > 1


def test_verify_vnnlib_decides_by_relu_splitting():
    """In the pipeline (input splitting, the MILP and the other bound stages off), the stage
    answers unsat just above the exact maximum and never below it."""
    rng = np.random.default_rng(101)
    net, weights = random_mlp(rng, [2, 6, 6, 2])
    row = np.array([1.0, -1.0])
    exact = _exact_min(weights, row, np.zeros(2), np.ones(2))
    only = VnnlibOptions(attack=False, alpha=False, tighten=False, first_milp_fraction=0.0,
                         input_split=False, relu_split_fraction=0.9)
    for t, want in ((exact - 0.05, "unsat"), (exact + 0.05, None)):
        prop = VnnlibProperty(np.zeros(2), np.ones(2),
                              (OutputConstraint(A=row[None], b=np.array([t])),))
        result = verify_vnnlib(net, VnnlibSpec(n_inputs=2, n_outputs=2, properties=(prop,),
                                               path=None), timeout_s=20, options=only)
        if want == "unsat":
            assert (result.result, result.decided_by) == ("unsat", "relu_split")
            assert result.stats["relu_domains"] > 1
        else:  # a point with y0 - y1 <= t exists: the MILP after the stage finds it
            assert result.result == "sat"


@pytest.mark.parametrize("kwargs, message", [
    ({"batch": 0}, r"`batch` must be an integer >= 1; got 0"),
    ({"iterations": 2.5}, r"`iterations` must be an integer >= 1; got 2.5"),
    ({"max_domains": -1}, r"`max_domains` must be an integer >= 1; got -1"),
    ({"beta_rate": 0.0}, r"`beta_rate` must be > 0; got 0.0"),
])
def test_bad_relu_split_options_are_named(kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        ReluSplitOptions(**kwargs)
