"""Input-splitting branch and bound: batched chain bounds (agreement with `symbolic_bounds`,
soundness on sampled points), decisions checked by brute force on a seeded 2-input network,
and real VNN-COMP 2022 ``reach_prob_density`` instances against their ground truth."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import random_mlp

from milpverify.bounds import symbolic_bounds
from milpverify.bounds.box_bounds import (
    as_chain,
    chain_bounds,
    chain_pass,
    combined_lower,
    is_chain,
    optimised_margins,
)
from milpverify.errors import InvalidInputError
from milpverify.frontends.onnx import load_onnx
from milpverify.ir import ops
from milpverify.ir.constraints import OutputConstraint
from milpverify.ir.network import Network
from milpverify.vnn.check import check_counterexample, property_rows
from milpverify.vnn.decide import SPEC_NODE, spec_network
from milpverify.vnn.input_split import SplitOptions, _disjunct_margins, _optimise_open, split_search
from milpverify.vnn.options import VnnlibOptions
from milpverify.vnn.pattern_lp import polish, region_affine
from milpverify.vnn.spec import VnnlibProperty, VnnlibSpec, read_vnnlib
from milpverify.vnn.verify import verify_vnnlib

REACH = ("vnncomp", "reach_prob_density_2022")


def _truth(folder: Path) -> dict[str, str]:
    with open(folder / "results_vnncomp2022_consensus.csv", newline="") as fh:
        return {Path(r["vnnlib"]).stem: r["ground_truth"] for r in csv.DictReader(fh)}


def _search(net, prop, seconds=20.0, **options):
    a, b, groups = property_rows(prop)
    chain = as_chain(spec_network(net, a, b))
    assert chain is not None
    return split_search(net, chain, prop, a, b, groups, list(range(len(groups))),
                        time.perf_counter() + seconds, SplitOptions(**options))


# ---------------------------------------------------------------------------- a seeded 2-input net
def _seeded():
    """A seeded 2-16-16-1 network on [-1, 1]^2, a dense grid maximum of its output and a
    rigorous bound of how far the true maximum can exceed it: the output is Lipschitz
    with constant ``L = prod ||W_k||_inf`` in the inf-norm, and every point lies within
    ``h / 2`` of a grid point."""
    net, weights = random_mlp(np.random.default_rng(7), [2, 16, 16, 1])
    lipschitz = float(np.prod([np.abs(w).sum(axis=1).max() for w, _ in weights]))
    ticks = np.linspace(-1.0, 1.0, 401)
    grid = np.stack(np.meshgrid(ticks, ticks), axis=-1).reshape(-1, 2)
    values = net.forward(grid)[:, 0]
    return net, float(values.max()), lipschitz * (ticks[1] - ticks[0]) / 2


def _above(t: float) -> VnnlibProperty:
    """Unsafe: ``y >= t`` over [-1, 1]^2."""
    return VnnlibProperty(np.full(2, -1.0), np.full(2, 1.0),
                          (OutputConstraint(A=np.array([[-1.0]]), b=np.array([-t])),))


def test_split_proves_what_one_bound_cannot():
    net, top, err = _seeded()
    t = top + err + 1e-6  # above the true maximum: the property holds
    global_upper = symbolic_bounds(net, -np.ones(2), np.ones(2)).flat(net.output)[1][0]
    assert global_upper > t  # symbolic bounds over the whole box cannot prove it
    out = _search(net, _above(t), branching="lookahead")
    assert out.result == "unsat"
    assert out.stats["split_boxes"] > 1


@pytest.mark.parametrize("branching", ["lookahead", "widest", "gradient"])
def test_split_finds_a_checked_counterexample(branching):
    net, top, _ = _seeded()
    prop = _above(top - 0.05)  # a grid point is unsafe by 0.05
    out = _search(net, prop, branching=branching)
    assert out.result == "sat"
    assert out.check is not None and out.check.verified
    assert check_counterexample(net, prop, out.check.x).verified


def test_split_times_out_honestly():
    net, top, err = _seeded()
    out = _search(net, _above(top + err + 1e-6), seconds=0.0)
    assert out.result == "timeout"


# ---------------------------------------------------------------------------- batched bounds
def test_chain_bounds_agree_with_symbolic_and_contain_samples():
    rng = np.random.default_rng(3)
    net, _ = random_mlp(rng, [3, 12, 10, 4])
    a = rng.normal(size=(2, 4))
    aug = spec_network(net, a, rng.normal(size=2))
    chain = as_chain(aug)
    centre = rng.uniform(-1, 1, size=(40, 3))
    radius = rng.uniform(0.01, 1.0, size=(40, 3))
    lo, hi = centre - radius, centre + radius
    got = chain_bounds(chain, lo, hi)
    for k in range(len(lo)):
        want = symbolic_bounds(aug, lo[k], hi[k]).flat(SPEC_NODE)
        np.testing.assert_allclose(got.lower[k], want[0], rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(got.upper[k], want[1], rtol=1e-9, atol=1e-9)
        points = rng.uniform(lo[k], hi[k], size=(200, 3))
        points[:8] = np.where(rng.random((8, 3)) < 0.5, lo[k], hi[k])  # vertices too
        values = aug.forward(points)
        assert np.all(values >= got.lower[k]) and np.all(values <= got.upper[k])


def test_chain_bounds_sound_on_reach_sub_boxes(shared_data):
    folder = shared_data.joinpath(*REACH)
    rng = np.random.default_rng(0)
    for name in ("vdp", "robot", "gcas"):
        net = load_onnx(folder / "onnx" / f"{name}.onnx")
        prop = read_vnnlib(folder / "vnnlib" / f"{name}_0.vnnlib").properties[0]
        a, b, _ = property_rows(prop)
        aug = spec_network(net, a, b)
        width = prop.input_upper - prop.input_lower
        lo = rng.uniform(prop.input_lower, prop.input_upper - width / 8, size=(30, width.size))
        hi = lo + width / 8 * rng.uniform(0.05, 1.0, size=lo.shape)
        got = chain_bounds(as_chain(aug), lo, hi)
        for k in range(len(lo)):
            values = aug.forward(rng.uniform(lo[k], hi[k], size=(300, width.size)))
            assert np.all(values >= got.lower[k]) and np.all(values <= got.upper[k])


def test_chain_pass_with_inherited_bounds_is_sound_and_tighter():
    """Sub-boxes bounded with their parent's ReLU input bounds intersected in (and CROWN for
    the ReLU inputs on only some of them) still contain the network's values; inheriting
    never loosens the first ReLU layer's input bounds (later ones may move either way: other
    relaxation lines), and the lower-only last step gives the same lower bounds."""
    rng = np.random.default_rng(4)
    net, _ = random_mlp(rng, [3, 14, 12, 10, 4])
    aug = spec_network(net, rng.normal(size=(3, 4)), rng.normal(size=3))
    chain = as_chain(aug)
    centre = rng.uniform(-1, 1, size=(30, 3))
    radius = rng.uniform(0.05, 0.8, size=(30, 3))
    parent = chain_pass(chain, centre - radius, centre + radius)
    relus = [k for k, layer in enumerate(chain.layers) if layer[0] == "relu"]
    sub_lo = centre - radius * rng.uniform(0.0, 1.0, size=radius.shape)
    sub_hi = np.minimum(sub_lo + radius, centre + radius)
    inherit = {k: parent.state[k] for k in relus}
    some = rng.random(30) < 0.5
    alone = chain_pass(chain, sub_lo, sub_hi)
    got = chain_pass(chain, sub_lo, sub_hi, inherit, some)
    full = chain_pass(chain, sub_lo, sub_hi, inherit)
    lower_only = chain_pass(chain, sub_lo, sub_hi, inherit, lower_only=True)
    np.testing.assert_allclose(lower_only.bounds.lower, full.bounds.lower, rtol=0, atol=1e-12)
    first = relus[0]  # before any relaxation: inheriting can only tighten
    assert np.all(full.state[first][0] >= alone.state[first][0])
    assert np.all(full.state[first][1] <= alone.state[first][1])
    for i in range(30):
        points = rng.uniform(sub_lo[i], sub_hi[i], size=(300, 3))
        points[:8] = np.where(rng.random((8, 3)) < 0.5, sub_lo[i], sub_hi[i])
        values = aug.forward(points)
        for bounds in (got.bounds, full.bounds):
            assert np.all(values >= bounds.lower[i]) and np.all(values <= bounds.upper[i])


def _min_max_row(aug: Network, lo, hi, rows, rng, n=400):
    """The smallest ``max_{r in rows} s_r`` seen at `n` samples and the vertices of the box."""
    points = rng.uniform(lo, hi, size=(n, lo.size))
    points[:16] = np.where(rng.random((16, lo.size)) < 0.5, lo, hi)
    return float(aug.forward(points)[:, rows].max(axis=1).min())


def test_optimised_margins_sound_and_never_looser_than_crown():
    """The combined-row bound with searched slopes and weights is below ``max_r s_r`` at every
    sampled point of each box (soundness), and the margins `_optimise_open` keeps are never
    below CROWN's per-row ones and higher on most (box, disjunct) pairs."""
    rng = np.random.default_rng(11)
    net, _ = random_mlp(rng, [3, 16, 16, 12, 4])
    a = rng.normal(size=(5, 4))
    aug = spec_network(net, a, rng.normal(size=5))
    chain = as_chain(aug)
    groups = [np.array([0, 1, 2]), np.array([3, 4])]
    centre = rng.uniform(-1, 1, size=(60, 3))
    radius = rng.uniform(0.01, 0.6, size=(60, 3))
    lo, hi = centre - radius, centre + radius
    crown = chain_pass(chain, lo, hi)
    boxes = np.repeat(np.arange(len(lo)), 2)
    mask = np.zeros((len(boxes), 5), dtype=bool)
    mask[0::2, groups[0]] = True
    mask[1::2, groups[1]] = True
    got, _ = optimised_margins(chain, crown, boxes, mask, iterations=20)
    for i, k in enumerate(boxes):
        assert got[i] <= _min_max_row(aug, lo[k], hi[k], np.flatnonzero(mask[i]), rng)
    plain = _disjunct_margins(crown.bounds.lower, groups)
    both, *_ = _optimise_open(chain, crown, np.ones_like(plain, dtype=bool), plain, groups, 20)
    assert np.all(both >= plain)
    assert np.mean(both > plain) > 0.5


def test_a_box_combination_bounds_its_sub_boxes():
    """Weights and slopes searched on a box, reused on its sub-boxes (the lookahead does),
    give bounds below ``max_r s_r`` at sampled points of every sub-box."""
    rng = np.random.default_rng(8)
    net, _ = random_mlp(rng, [3, 14, 12, 4])
    aug = spec_network(net, rng.normal(size=(3, 4)), rng.normal(size=3))
    chain = as_chain(aug)
    centre = rng.uniform(-1, 1, size=(20, 3))
    radius = rng.uniform(0.1, 0.8, size=(20, 3))
    parent = chain_pass(chain, centre - radius, centre + radius)
    _, combo = optimised_margins(chain, parent, np.arange(20), np.ones((20, 3), dtype=bool))
    sub_lo = centre - radius * rng.uniform(0.0, 1.0, size=radius.shape)
    sub_hi = np.minimum(sub_lo + radius, centre + radius)
    child = chain_pass(chain, sub_lo, sub_hi)
    got = combined_lower(chain, child, np.arange(20), combo)
    for i in range(20):
        assert got[i] <= _min_max_row(aug, sub_lo[i], sub_hi[i], np.arange(3), rng)


def test_optimised_margins_sound_on_robot_sub_boxes(shared_data):
    folder = shared_data.joinpath(*REACH)
    net = load_onnx(folder / "onnx" / "robot.onnx")
    prop = read_vnnlib(folder / "vnnlib" / "robot_3.vnnlib").properties[0]
    a, b, groups = property_rows(prop)
    aug = spec_network(net, a, b)
    chain = as_chain(aug)
    rng = np.random.default_rng(5)
    width = prop.input_upper - prop.input_lower
    lo = rng.uniform(prop.input_lower, prop.input_upper - width / 4, size=(40, width.size))
    hi = lo + width / 4 * rng.uniform(0.3, 1.0, size=lo.shape)
    crown = chain_pass(chain, lo, hi)
    mask = np.ones((len(lo), len(b)), dtype=bool)
    got, _ = optimised_margins(chain, crown, np.arange(len(lo)), mask)
    plain = _disjunct_margins(crown.bounds.lower, groups)[:, 0]
    for k in range(len(lo)):
        assert got[k] <= _min_max_row(aug, lo[k], hi[k], np.arange(len(b)), rng)
    open_ = plain <= 0
    assert open_.sum() >= 5 and np.mean(got[open_] > plain[open_]) > 0.5  # tighter on most


def test_as_chain_takes_chains_only(tiny_net):
    chain = as_chain(tiny_net)
    assert chain is not None and [layer[0] for layer in chain.layers] == ["affine", "relu",
                                                                          "affine"]
    eye = np.eye(2)
    branching = Network([("x", ops.Input((), (2,))),
                         ("h", ops.Affine(("x",), (2,), eye, np.zeros(2))),
                         ("r", ops.Relu(("h",), (2,))),
                         ("y", ops.Add(("r", "x"), (2,)))], "y")
    assert as_chain(branching) is None  # a skip connection: not a chain
    assert is_chain(tiny_net) and not is_chain(branching)
    weights = sum(layer[1].size for layer in chain.layers if layer[0] == "affine")
    assert as_chain(tiny_net, max_weights=weights) is not None
    assert as_chain(tiny_net, max_weights=weights - 1) is None  # too large to make dense
    assert not is_chain(tiny_net, max_weights=weights - 1)


@pytest.mark.parametrize("value", [0.0, 1.5, "0.5", float("nan")])
def test_input_split_fraction_is_checked(value):
    with pytest.raises(InvalidInputError, match="`input_split_fraction` must be a number in"):
        VnnlibOptions(input_split_fraction=value)


@pytest.mark.parametrize("value", [-1.0, "0.2", float("nan")])
def test_input_split_attack_s_is_checked(value):
    with pytest.raises(InvalidInputError, match="`input_split_attack_s` must be a number"):
        VnnlibOptions(input_split_attack_s=value)


def test_splitter_branching_is_checked():
    with pytest.raises(InvalidInputError):
        VnnlibOptions(splitter=SplitOptions(branching="random"))


# ---------------------------------------------------------------------------- real instances
@pytest.mark.parametrize("instance", ["vdp_0", "vdp_3", "gcas_5"])
def test_reach_instances_decided_by_splitting(shared_data, instance):
    folder = shared_data.joinpath(*REACH)
    net = load_onnx(folder / "onnx" / f"{instance.split('_')[0]}.onnx")
    prop = read_vnnlib(folder / "vnnlib" / f"{instance}.vnnlib").properties[0]
    out = _search(net, prop, seconds=20.0)
    want = {"holds": "unsat", "violated": "sat"}[_truth(folder)[instance]]
    assert out.result == want
    if want == "sat":
        assert check_counterexample(net, prop, out.check.x).verified


def test_verify_vnnlib_uses_the_split_stage(shared_data):
    folder = shared_data.joinpath(*REACH)
    result = verify_vnnlib(folder / "onnx" / "vdp.onnx", folder / "vnnlib" / "vdp_0.vnnlib",
                           timeout_s=30)
    assert (result.result, result.decided_by) == ("unsat", "input_split")
    assert result.stats["split_boxes"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("k", range(12))
def test_every_vdp_instance(shared_data, k):
    folder = shared_data.joinpath(*REACH)
    result = verify_vnnlib(folder / "onnx" / "vdp.onnx", folder / "vnnlib" / f"vdp_{k}.vnnlib",
                           timeout_s=60)
    want = {"holds": "unsat", "violated": "sat"}[_truth(folder)[f"vdp_{k}"]]
    assert result.result == want


def test_stage_skipped_when_it_does_not_apply():
    net, top, err = _seeded()
    spec = VnnlibSpec(n_inputs=2, n_outputs=1, properties=(_above(top + err + 1e-6),), path=None)
    quick = {"attack": False, "alpha": False}  # the stages that cost seconds here
    few = verify_vnnlib(net, spec, timeout_s=30,
                        options=VnnlibOptions(input_split_max_inputs=1, **quick))
    assert (few.result, few.decided_by) == ("unsat", "milp")  # 2 inputs > 1: no splitting
    assert "split_boxes" not in few.stats
    used = verify_vnnlib(net, spec, timeout_s=30, options=VnnlibOptions(**quick))
    assert (used.result, used.decided_by) == ("unsat", "input_split")


# ---------------------------------------------------------------------------- region LP polish
def test_region_affine_matches_the_network_on_the_region():
    rng = np.random.default_rng(2)
    net, _ = random_mlp(rng, [4, 10, 8, 3])
    a, b = rng.normal(size=(2, 3)), rng.normal(size=2)
    aug = spec_network(net, a, b)
    x0 = rng.uniform(-1, 1, size=4)
    g_mat, g_vec, jac, off = region_affine(net, a, b, x0)
    assert np.all(g_mat @ x0 + g_vec <= 1e-12)  # x0 lies in its own region
    near = x0 + rng.normal(size=(200, 4)) * 1e-3
    inside = np.all(near @ g_mat.T + g_vec <= 0, axis=1)
    assert inside.sum() > 0
    np.testing.assert_allclose(near[inside] @ jac.T + off, aug.forward(near[inside]),
                               rtol=1e-9, atol=1e-9)


def test_polish_finds_the_robot_11_counterexample(shared_data):
    """robot_11's unsafe set is a sliver (best known slack 5e-4); the LP on the region of a
    nearby point reaches it, and the point passes `check_counterexample`."""
    folder = shared_data.joinpath(*REACH)
    net = load_onnx(folder / "onnx" / "robot.onnx")
    prop = read_vnnlib(folder / "vnnlib" / "robot_11.vnnlib").properties[0]
    a, b, groups = property_rows(prop)
    x0 = np.array([-1.2, -1.2, 0.92, 1.5, 0.70])  # near the known counterexample, not unsafe
    assert not check_counterexample(net, prop, x0).verified
    lo, hi = prop.input_lower.astype(np.float64), prop.input_upper.astype(np.float64)
    x, slack = polish(net, a, b, x0, groups[0], lo, hi)
    assert slack > 0
    assert check_counterexample(net, prop, x).verified


@pytest.mark.parametrize("instance", ["robot_4", "robot_10"])
def test_robot_violated_instances_found_by_splitting(shared_data, instance):
    folder = shared_data.joinpath(*REACH)
    net = load_onnx(folder / "onnx" / "robot.onnx")
    prop = read_vnnlib(folder / "vnnlib" / f"{instance}.vnnlib").properties[0]
    out = _search(net, prop, seconds=20.0)
    assert out.result == "sat"
    assert check_counterexample(net, prop, out.check.x).verified
