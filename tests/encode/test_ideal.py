"""Ideal-formulation ReLU cuts: valid at every true network point, they cut off LP points,
and SCIP with them gives the same optima as without."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import random_mlp

from milpverify.bounds import symbolic_bounds
from milpverify.encode.ideal import relu_cut_separators
from milpverify.encode.milp import Term, encode_network
from milpverify.encode.model import MilpModel
from milpverify.errors import InvalidModelError
from milpverify.ir.network import Network
from milpverify.solve import get_backend
from milpverify.solve.base import SolveOptions


def encoded(net: Network, lo: np.ndarray, hi: np.ndarray, relax: bool = False):
    bounds = symbolic_bounds(net, lo, hi)
    model = MilpModel()
    xv = model.add_vars(net.input_size, lo, hi, name="x")
    enc = encode_network(net, bounds, model, Term.of_vars(xv), relax=relax)
    return model, enc, relu_cut_separators(net, bounds, enc)


def true_values(net: Network, enc, model: MilpModel, x: np.ndarray) -> np.ndarray:
    """The model variables of the exact computation at input x (binaries = pre > 0)."""
    acts = net.forward_all(x[None], flat=True)
    values = np.zeros(model.n_vars)
    for name in net.order:
        term = enc.terms[name]
        values[term.var[term.var >= 0]] = acts[name][0][term.var >= 0]
    for name, active in enc.relu_active.items():
        pre = acts[net.op(name).inputs[0]][0]
        values[active[active >= 0]] = (pre[active >= 0] > 0).astype(float)
    return values


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(7)
    net = random_mlp(rng, [4, 8, 8, 3])[0]
    lo, hi = np.zeros(4), np.ones(4)
    return net, lo, hi, *encoded(net, lo, hi)


def test_cuts_hold_at_every_true_point(case):
    net, lo, hi, model, enc, seps = case
    assert seps and sum(len(s.post) for s in seps) > 4
    rng = np.random.default_rng(0)
    points = np.r_[rng.uniform(lo, hi, size=(400, 4)), np.array(list(np.ndindex(2, 2, 2, 2)),
                                                                 dtype=float)]
    truth = np.array([true_values(net, enc, model, p) for p in points])
    assert model.max_violation(truth[0]) < 1e-9  # the assignment is a feasible MILP point
    n_cuts = 0
    for trial in range(200):  # cuts separated at random fractional points
        values = truth[trial % len(truth)].copy()
        for s in seps:
            values[s.active] = rng.uniform(0.05, 0.95, size=len(s.active))
            values[s.post] = rng.uniform(0, 3, size=len(s.post))
        for s in seps:
            cuts = s.separate(values)
            n_cuts += cuts.count
            lhs = np.zeros((len(truth), cuts.count))
            for r, c, v in zip(cuts.rows, cuts.cols, cuts.vals):
                lhs[:, r] += v * truth[:, c]
            assert np.all(lhs <= cuts.rhs + 1e-9)
            at_point = np.zeros(cuts.count)
            np.add.at(at_point, cuts.rows, cuts.vals * values[cuts.cols])
            np.testing.assert_allclose(at_point - cuts.rhs, cuts.violation, atol=1e-6)
            assert np.all(cuts.violation > 0)
    assert n_cuts > 50


def test_cuts_tighten_the_lp_relaxation(case):
    """Minimise each output over the LP relaxation; the cuts separated at the LP point are
    violated there, and adding them raises the LP value without passing the MILP's."""
    net, lo, hi, _, _, _ = case
    highs = get_backend("highs")
    gained = 0
    for j in range(net.num_classes):
        lp, enc, seps = encoded(net, lo, hi, relax=True)
        milp, enc_i, _ = encoded(net, lo, hi)
        out, out_i = enc.terms[net.output], enc_i.terms[net.output]
        lp.set_objective([out.var[j]], [1.0])
        milp.set_objective([out_i.var[j]], [1.0])
        exact = highs.solve(milp, SolveOptions()).objective
        before = highs.solve(lp, SolveOptions())
        value, x = before.objective, before.x
        for _ in range(5):
            added = 0
            for s in seps:
                cuts = s.separate(x)
                if cuts.count:
                    lp.add_rows(cuts.rows, cuts.cols, cuts.vals, cuts.count, -np.inf, cuts.rhs,
                                name="cut")
                    added += cuts.count
            if not added:
                break
            res = highs.solve(lp, SolveOptions())
            assert res.objective >= value - 1e-7 and res.objective <= exact + 1e-6
            value, x = res.objective, res.x
        gained += value > before.objective + 1e-6
    assert gained >= 1


@pytest.mark.parametrize("seed", range(4))
def test_scip_with_cuts_same_optimum(seed):
    rng = np.random.default_rng(100 + seed)
    net = random_mlp(rng, [5, 10, 10, 2])[0]
    lo, hi = -np.ones(5), np.ones(5)
    scip = get_backend("scip")
    answers = []
    for with_cuts in (False, True):
        model, enc, seps = encoded(net, lo, hi)
        if with_cuts:
            for s in seps:
                model.add_separator(s)
        out = enc.terms[net.output]
        model.set_objective([out.var[0], out.var[1]], [1.0, -1.0])
        res = scip.solve(model, SolveOptions())
        answers.append(res.objective)
        if with_cuts:
            assert "separator cuts" in res.message
    assert answers[0] == pytest.approx(answers[1], abs=1e-6)


def test_separator_outside_the_model_is_rejected(case):
    _, _, _, model, _, seps = case
    small = MilpModel()
    small.add_vars(3)
    with pytest.raises(InvalidModelError, match="outside the model"):
        small.add_separator(seps[0])
    copy = model.copy()
    copy.add_separator(seps[0])
    assert copy.separators == (seps[0],) and model.separators == ()
    assert copy.copy().separators == (seps[0],)
