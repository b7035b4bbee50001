"""LP convex restriction (Bastani et al. section 4): upper bound, region membership, lazy == full."""

from __future__ import annotations

import numpy as np
import pytest

import milpverify
from milpverify.core.restriction import VIOLATION_TOL, lp_restriction, region_of
from milpverify.core.witness import onnx_logits


def _phases_kept(net: milpverify.Network, x: np.ndarray, w: np.ndarray) -> bool:
    """Every ReLU keeps its phase at x (within the LP tolerance) and MaxPool its arg-max."""
    region, _ = region_of(net, x)
    values = net.forward_all(w, flat=True)
    for name, active in region.active.items():
        pre = values[net.op(name).inputs[0]][0]
        if np.any(np.where(active, pre < -1e-6, pre > 1e-6)):
            return False
    for name, argmax in region.argmax.items():
        op = net.op(name)
        xin = np.r_[values[op.inputs[0]][0], -np.inf]
        if np.any(xin[op.windows].max(axis=1) - xin[argmax] > 1e-6):
            return False
    return True


@pytest.fixture(scope="module")
def wk17a(shared_data):
    net = milpverify.load_onnx(shared_data / "nets/mnist/wk17a_linf0.1.onnx")
    images = np.load(shared_data / "mnist/mnist_test.npz")["images"][:100] / 255.0
    return net, images


@pytest.mark.shared
@pytest.mark.parametrize("index", [92, pytest.param(8, marks=pytest.mark.slow),
                                   pytest.param(18, marks=pytest.mark.slow)])
def test_wk17a_lazy_equals_full_and_witness_in_region(wk17a, index: int) -> None:
    net, images = wk17a
    x = images[index]
    lazy = lp_restriction(net, x, target="all", lazy=True)
    full = lp_restriction(net, x, target="all", lazy=False)
    assert lazy.status == full.status == "upper_bound"
    assert lazy.upper == pytest.approx(full.upper, abs=1e-6)
    assert lazy.stats["rows_added"] < full.stats["rows_added"]
    for result in (lazy, full):
        assert result.witness_verified
        assert _phases_kept(net, x, result.witness)
        logits = onnx_logits(net, result.witness)[0]
        assert logits[result.adversarial_label] >= logits[result.label]
        assert np.max(np.abs(result.witness - x)) == pytest.approx(result.upper, abs=1e-12)


@pytest.mark.shared
def test_convsmall_lazy_equals_full(shared_data) -> None:
    """ERAN convSmall image 4, label 9: the lazy LP used to stop 6e-8 outside rows it never
    added and report 0.580 against the full LP's 0.893 (see VIOLATION_TOL)."""
    net = milpverify.load_onnx(shared_data / "nets/mnist/eran/convSmallRELU__Point.onnx")
    x = np.load(shared_data / "mnist/mnist_test.npz")["images"][4] / 255.0
    lazy = lp_restriction(net, x, target=9, lazy=True)
    full = lp_restriction(net, x, target=9, lazy=False)
    assert lazy.status == full.status == "upper_bound"
    assert lazy.upper == pytest.approx(full.upper, abs=1e-6)
    assert lazy.upper == pytest.approx(0.892917, abs=1e-5)
    assert _phases_kept(net, x, lazy.witness)


@pytest.mark.shared
@pytest.mark.parametrize("index, exact", [(8, 0.094006), (92, 0.036519)])
def test_wk17a_restriction_is_above_exact_rho(wk17a, index: int, exact: float) -> None:
    """MIPVerify's exact values (reference/mipverify_wk17a) lower-bound every rho_hat."""
    net, images = wk17a
    for target in ("all", "second"):
        result = lp_restriction(net, images[index], target=target)
        if result.status == "upper_bound":
            assert result.upper >= exact - 1e-5


@pytest.mark.shared
def test_margin_gives_a_strict_witness(wk17a) -> None:
    net, images = wk17a
    result = lp_restriction(net, images[92], target="all", margin=0.5)
    assert result.status == "upper_bound"
    logits = net.forward(result.witness)[0]
    assert logits[result.adversarial_label] - logits[result.label] >= 0.5 - 1e-9
    assert result.upper > lp_restriction(net, images[92], target="all").upper


def test_bad_arguments_are_reported() -> None:
    rng = np.random.default_rng(0)
    from milpverify.ir import ops
    from milpverify.ir.network import Network
    net = Network([("x", ops.Input((), (2,))),
                   ("fc", ops.Affine(("x",), (3,), rng.normal(size=(3, 2)), np.zeros(3)))], "fc")
    x = np.array([0.5, 0.5])
    with pytest.raises(milpverify.InvalidInputError, match="`target` must be 'all', 'second'"):
        lp_restriction(net, x, target="third")
    with pytest.raises(milpverify.InvalidInputError, match="`margin` must be a finite number"):
        lp_restriction(net, x, margin=-1.0)
    with pytest.raises(milpverify.InvalidInputError, match="outside the domain"):
        lp_restriction(net, np.array([1.5, 0.5]))
    assert VIOLATION_TOL < 1e-6
