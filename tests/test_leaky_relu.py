"""LeakyReLU/PReLU (IR op `LeakyRelu`) and Clip through every analysis.

* the CROWN relaxation is valid in exact arithmetic (fractions) for every slope sign/size;
* interval, symbolic, alpha, LP and MIP bounds contain sampled values of every node;
* exact rho equals an independent brute force over activation regions (each region an LP
  with scipy's HiGHS), the witness is verified, and the LP restriction is an upper bound;
* the MILP has one binary per unstable LeakyReLU neuron.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from helpers import rho_over_regions
from scipy.optimize import linprog

from milpverify.bounds.symbolic import relax_leaky_relu
from milpverify.bounds.tighten import compute_bounds
from milpverify.core.restriction import lp_restriction
from milpverify.core.witness import check_witness
from milpverify.ir import ops
from milpverify.ir.network import Network
from milpverify.verify import rho

# A neuron's phases: (sign of "pre - breakpoint" region row, post = m * pre + c).
LEAKY = "leaky"
CLIP = "clip"


def _net(weights, kind, params) -> Network:
    """x -> Affine -> act -> ... -> Affine; act = LeakyRelu(slopes) or Clip(lo, hi)."""
    nodes: list[tuple[str, ops.Op]] = [("x", ops.Input((), (weights[0][0].shape[1],)))]
    prev = "x"
    for k, (w, b) in enumerate(weights):
        nodes.append((f"fc{k}", ops.Affine((prev,), (w.shape[0],), w, b)))
        prev = f"fc{k}"
        if k == len(weights) - 1:
            break
        n = w.shape[0]
        if kind == LEAKY:
            nodes.append((f"act{k}", ops.LeakyRelu((prev,), (n,), params[k])))
            prev = f"act{k}"
        else:   # the loader's Clip lowering, built with the same ops
            lo, hi = params
            chain = [("s1", ops.Scale, (np.ones(n), np.full(n, -lo))), ("r1", ops.Relu, ()),
                     ("s2", ops.Scale, (-np.ones(n), np.full(n, hi - lo))), ("r2", ops.Relu, ()),
                     ("s3", ops.Scale, (-np.ones(n), np.full(n, hi)))]
            for tag, cls, extra in chain:
                nodes.append((f"{tag}_{k}", cls((prev,), (n,), *extra)))
                prev = f"{tag}_{k}"
    return Network(nodes, prev)


def _phases(kind, params, layer, neuron):
    """[(region, m, c)]: region = [(sign, t)] meaning sign * (pre - t) >= 0; post = m pre + c."""
    if kind == LEAKY:
        a = params[layer][neuron]
        return [([(1.0, 0.0)], 1.0, 0.0), ([(-1.0, 0.0)], a, 0.0)]
    lo, hi = params
    return [([(-1.0, lo)], 0.0, lo), ([(1.0, lo), (-1.0, hi)], 1.0, 0.0), ([(1.0, hi)], 0.0, hi)]


def _regions(weights, kind, params, n):
    """Every activation pattern as (A_ub, b_ub, fa, fc): region `A_ub x <= b_ub`, on which
    the network is `fa x + fc` (empty regions included; the LPs find them infeasible)."""
    hidden = [w.shape[0] for w, _ in weights[:-1]]
    choices = [_phases(kind, params, li, j) for li, h in enumerate(hidden) for j in range(h)]
    for pattern in itertools.product(*[range(len(c)) for c in choices]):
        a, c = np.eye(n), np.zeros(n)
        rows, rhs, pos = [], [], 0
        for w, b in weights[:-1]:
            a, c = w @ a, w @ c + b
            m, k = np.zeros(len(b)), np.zeros(len(b))
            for j in range(len(b)):
                region, m[j], k[j] = choices[pos][pattern[pos]]
                for sign, t in region:          # sign * (a_j x + c_j - t) >= 0
                    rows.append(-sign * a[j])
                    rhs.append(sign * (c[j] - t))
                pos += 1
            a, c = m[:, None] * a, m * c + k
        w, b = weights[-1]
        yield np.array(rows), np.array(rhs), w @ a, w @ c + b


def brute_force_rho(weights, kind, params, x, label, domain=(0.0, 1.0)) -> float:
    """min over activation regions and labels of the L-inf LP inside the region (HiGHS)."""
    return rho_over_regions(_regions(weights, kind, params, len(x)), x, label, domain)


def brute_force_max(weights, kind, params, n, output, domain=(0.0, 1.0)) -> float:
    """max of one output over the box: the best LP over all activation regions."""
    best = -math.inf
    for a_ub, b_ub, fa, fc in _regions(weights, kind, params, n):
        res = linprog(-fa[output], A_ub=a_ub, b_ub=b_ub, bounds=[domain] * n, method="highs")
        if res.status == 0:
            best = max(best, -res.fun + fc[output])
    return best


def _random(seed, kind, sizes=(2, 4, 3, 3)):
    rng = np.random.default_rng(seed)
    weights = [(rng.normal(size=(o, i)), rng.normal(size=o) * 0.5)
               for i, o in itertools.pairwise(sizes)]
    if kind == LEAKY:
        params = [rng.choice([-0.4, 0.0, 0.1, 0.5, 1.8], size=h) for h in sizes[1:-1]]
    else:
        params = (-0.3, 0.6)
    return _net(weights, kind, params), weights, params, rng


def test_relaxation_valid_in_exact_arithmetic() -> None:
    rng = np.random.default_rng(4)
    n = 600
    lower = -np.abs(rng.normal(size=n)) * 10.0 ** rng.integers(-6, 6, size=n)
    upper = np.abs(rng.normal(size=n)) * 10.0 ** rng.integers(-6, 6, size=n)
    slope = rng.choice([-2.0, -0.3, 0.0, 0.01, 0.7, 1.0, 1.3, 4.0], size=n)
    relax = relax_leaky_relu(ops.LeakyRelu(("h",), (n,), slope), lower, upper)
    for i in range(n):
        a = Fraction(slope[i])
        for point in (Fraction(lower[i]), Fraction(0), Fraction(upper[i])):
            f = point if point >= 0 else a * point
            assert Fraction(relax.lo[i]) * point + Fraction(relax.c_lo[i]) <= f
            assert Fraction(relax.hi[i]) * point + Fraction(relax.c_hi[i]) >= f
    stable = relax_leaky_relu(ops.LeakyRelu(("h",), (2,), np.array([0.2, 0.2])),
                              np.array([0.0, -2.0]), np.array([1.0, 0.0]))
    assert stable.lo.tolist() == stable.hi.tolist() == [1.0, 0.2]


@pytest.mark.parametrize("method", ["interval", "symbolic", "alpha", "lp", "mip"])
@pytest.mark.parametrize("kind", [LEAKY, CLIP])
def test_bounds_contain_sampled_values(method, kind) -> None:
    net, _, _, rng = _random(7, kind, sizes=(3, 6, 5, 4))
    lo, hi = np.full(3, -1.0), np.full(3, 1.0)
    bounds = compute_bounds(net, lo, hi, method=method)
    points = np.vstack([rng.uniform(lo, hi, size=(3000, 3)),
                        np.array(list(itertools.product(*zip(lo, hi))))])
    values = net.forward_all(points, flat=True)
    for name in net.order:
        if name in bounds.pre:
            b_lo, b_hi = bounds.flat(name)
            assert np.all(values[name] >= b_lo - 1e-9), (method, name)
            assert np.all(values[name] <= b_hi + 1e-9), (method, name)
    if method != "interval":
        loose = compute_bounds(net, lo, hi, method="interval").flat(net.output)
        tight = bounds.flat(net.output)
        assert np.all(tight[0] >= loose[0] - 1e-9) and np.all(tight[1] <= loose[1] + 1e-9)


DOMAIN = (-3.0, 3.0)
CLIP_SIZES = (2, 3, 3, 3)     # 3^6 regions for the brute force


@pytest.mark.parametrize("kind,seed", [(LEAKY, s) for s in (0, 1, 3, 6, 7, 9)]
                         + [(CLIP, s) for s in (0, 2, 11)])
def test_rho_matches_brute_force(kind, seed) -> None:
    """Seeds 0 (leaky) and 11 (clip) are robust on the whole domain; the others are not."""
    net, weights, params, rng = _random(seed, kind, CLIP_SIZES if kind == CLIP else (2, 4, 3, 3))
    x = rng.uniform(-0.5, 0.5, size=2)
    label = int(net.predict(x)[0])
    expected = brute_force_rho(weights, kind, params, x, label, DOMAIN)
    result = rho(net, x, time_limit_s=60, tolerance=1e-6, domain=DOMAIN)
    if math.isinf(expected):
        assert result.status == "robust_at_cap" and math.isinf(result.lower)
        return
    assert result.status == "optimal", result
    assert result.lower == pytest.approx(expected, abs=1e-6)
    assert result.upper == pytest.approx(expected, abs=1e-5)
    check = check_witness(net, x, result.witness, label=label, domain=DOMAIN)
    assert check.verified
    # The LP restriction to the optimal witness's activation region reaches rho itself.
    restricted = lp_restriction(net, x, target="all", domain=DOMAIN, region_point=result.witness)
    assert restricted.witness_verified
    assert restricted.upper == pytest.approx(expected, abs=1e-5)


def test_one_binary_per_unstable_leaky_neuron() -> None:
    from milpverify.encode.milp import encode_network
    from milpverify.encode.model import MilpModel
    net, _, _, _ = _random(3, LEAKY)
    lo, hi = np.zeros(2), np.ones(2)
    bounds = compute_bounds(net, lo, hi, method="interval")
    model = MilpModel()
    inputs = model.add_vars(2, lo, hi, name="x")
    from milpverify.encode.milp import Term
    enc = encode_network(net, bounds, model, Term.of_vars(inputs))
    unstable = 0
    for name, op in net.items():
        if isinstance(op, ops.LeakyRelu):
            l, u = bounds.flat(op.inputs[0])
            unstable += int(((l < 0) & (u > 0)).sum())
            assert enc.stats.relu_cases[name]["unstable"] == int(((l < 0) & (u > 0)).sum())
    assert unstable > 0 and enc.stats.binaries == unstable


def test_torch_compile_and_onnx_export_match_forward() -> None:
    """The attack/fine-tune paths: `to_torch` and the ONNX export (PRelu) agree with numpy."""
    import torch
    from helpers import run_ort

    from milpverify.frontends.torchnet import onnx_model, to_torch
    net, _, _, rng = _random(5, LEAKY, sizes=(3, 6, 5, 4))
    x = rng.uniform(-2, 2, size=(50, 3))
    expected = net.forward(x)
    with torch.no_grad():
        np.testing.assert_allclose(to_torch(net)(torch.from_numpy(x)).numpy(), expected,
                                   rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(run_ort(onnx_model(net), x), expected, rtol=1e-5, atol=1e-5)


def test_interval_rule_is_exact_for_any_slope() -> None:
    from milpverify.bounds.interval import interval_leaky_relu
    op = ops.LeakyRelu(("h",), (4,), np.array([-0.5, 2.0, 0.3, -1.0]))
    lower, upper = np.array([-4.0, -1.0, -2.0, 1.0]), np.array([1.0, 3.0, -1.0, 2.0])
    lo, hi = interval_leaky_relu(op, [(lower, upper)])
    np.testing.assert_allclose(lo, [0.0, -2.0, -0.6, 1.0], atol=1e-15)
    np.testing.assert_allclose(hi, [2.0, 3.0, -0.3, 2.0], atol=1e-15)


@pytest.mark.parametrize("expect", ["sat", "unsat"])
def test_vnnlib_on_a_leaky_network(tmp_path, expect) -> None:
    """VNN-LIB output properties stay exact (unlike a dropped Softmax): `Y_0 >= max -+ 0.01`
    around the brute-force maximum is sat/unsat, through the falsifier, the spec network and
    the MILP with the LeakyRelu rules."""
    from milpverify.vnn.verify import verify_vnnlib
    net, weights, params, _ = _random(8, LEAKY, sizes=(3, 6, 5, 4))
    top = brute_force_max(weights, LEAKY, params, 3, 0)
    threshold = float(top - 0.01 if expect == "sat" else top + 0.01)
    spec = tmp_path / "p.vnnlib"
    spec.write_text("".join(f"(declare-const X_{i} Real)\n" for i in range(3))
                    + "".join(f"(declare-const Y_{j} Real)\n" for j in range(4))
                    + "".join(f"(assert (>= X_{i} 0.0))\n(assert (<= X_{i} 1.0))\n"
                              for i in range(3))
                    + f"(assert (>= Y_0 {threshold!r}))\n")
    result = verify_vnnlib(net, spec, timeout_s=60)
    assert result.result == expect, result
    if expect == "sat":
        assert net.forward(result.x)[0, 0] >= threshold - 1e-6
