"""Attack baselines (FGSM scan, PGD with bisection, L-BFGS-B): verified witnesses and soundness.

An attack's upper bound is the distance of a verified adversarial example, so it can never be
below the exact rho: on WK17a, MNIST test image 8 has rho = 0.094006 (MIPVerify, proven).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import pytest
from conftest import SHARED_DATA

pytest.importorskip("torch")

import milpverify  # noqa: E402
from milpverify.core.attacks import fgsm, lbfgs, pgd
from milpverify.core.results import RhoResult, RhoStatus
from milpverify.core.witness import check_witness, onnx_logits
from milpverify.errors import InvalidInputError  # noqa: E402

WK17A = SHARED_DATA / "nets" / "mnist" / "wk17a_linf0.1.onnx"
MNIST = SHARED_DATA / "mnist" / "mnist_test.npz"
RHO_IMAGE_8 = 0.094006  # MIPVerify.jl, WK17a, sample 9 (1-based) = test image 8
FAST_PGD = {"steps": 50, "restarts": 3, "bisection_steps": 8}


def _need_data() -> None:
    if not (WK17A.is_file() and MNIST.is_file()):
        pytest.skip("needs ../shared/data beside the repository (WK17a and the MNIST test set)")


@lru_cache(maxsize=1)
def _net() -> milpverify.Network:
    return milpverify.load_onnx(WK17A)


@lru_cache(maxsize=1)
def _images() -> tuple[np.ndarray, np.ndarray]:
    with np.load(MNIST) as data:
        return data["images"][:10] / 255.0, data["labels"][:10]


@lru_cache(maxsize=None)
def _attack(method: str, index: int) -> RhoResult:
    """Cached so several tests can look at the same run."""
    x = _images()[0][index]
    if method == "fgsm":
        return fgsm(_net(), x)
    if method == "pgd":
        return pgd(_net(), x, **FAST_PGD)
    if method == "lbfgs_second":
        return lbfgs(_net(), x, targets="second", maxiter=100, bisection_steps=3)
    if method == "lbfgs":
        return lbfgs(_net(), x)
    raise ValueError(method)


def _assert_verified(result: RhoResult, method: str, index: int, eps_max: float = 1.0) -> None:
    net = _net()
    x = _images()[0][index]
    label = int(net.predict(x)[0])
    assert result.method == method.split("_")[0]
    assert result.status == RhoStatus.UPPER_BOUND, result.message
    assert result.lower == 0.0 and result.label == label
    assert result.witness_verified and result.witness is not None
    assert result.witness.shape == net.input_shape
    assert 0.0 < result.upper <= eps_max
    check = check_witness(net, x, result.witness, label=label)
    assert check.verified, check.message
    assert check.distance == pytest.approx(result.upper, abs=1e-12)
    ort = onnx_logits(net, result.witness)
    assert ort is not None and int(np.argmax(ort[0])) != label
    assert result.adversarial_label == check.adversarial_label != label
    assert result.timings["total_s"] > 0
    assert result.stats["gradient_evaluations"] >= 1 and result.stats["iterations"] >= 1


@pytest.mark.shared
@pytest.mark.parametrize("index", range(5))
@pytest.mark.parametrize("method", ["fgsm", "pgd"])
def test_attacks_return_verified_witnesses(method, index):
    _need_data()
    _assert_verified(_attack(method, index), method, index)


@pytest.mark.shared
def test_pgd_is_typically_closer_than_fgsm():
    _need_data()
    pairs = [(_attack("pgd", i).upper, _attack("fgsm", i).upper) for i in range(5)]
    assert sum(p <= f for p, f in pairs) >= 4, pairs


@pytest.mark.shared
@pytest.mark.parametrize("method", ["fgsm", "pgd", "lbfgs_second"])
def test_upper_bounds_never_below_exact_rho(method):
    """Image 8 has proven rho = 0.094006; a verified upper bound below it would be unsound."""
    _need_data()
    result = _attack(method, 8)
    _assert_verified(result, method, 8)
    assert result.upper >= RHO_IMAGE_8 - 1e-6
    if method == "pgd":  # and PGD gets reasonably close
        assert result.upper <= 0.11


@pytest.mark.shared
def test_lbfgs_second_label_on_one_image():
    _need_data()
    _assert_verified(_attack("lbfgs_second", 1), "lbfgs_second", 1)


@pytest.mark.shared
def test_pgd_is_deterministic_given_seed():
    _need_data()
    x = _images()[0][8]
    kw = {"steps": 20, "restarts": 3, "bisection_steps": 4, "seed": 3}
    a, b = pgd(_net(), x, **kw), pgd(_net(), x, **kw)
    assert a.upper == b.upper
    np.testing.assert_array_equal(a.witness, b.witness)
    assert a.stats["gradient_evaluations"] == b.stats["gradient_evaluations"]


@pytest.mark.shared
def test_targeted_attacks_reach_the_target():
    _need_data()
    x = _images()[0][8]
    for result in (pgd(_net(), x, target=6, **FAST_PGD),
                   lbfgs(_net(), x, target=6, maxiter=100, bisection_steps=2)):
        assert result.status == RhoStatus.UPPER_BOUND and result.witness_verified
        assert result.adversarial_label == 6
        assert result.upper >= RHO_IMAGE_8 - 1e-6


@pytest.mark.shared
def test_required_margin_is_respected():
    _need_data()
    net, x = _net(), _images()[0][8]
    for result in (pgd(net, x, margin=1.0, **FAST_PGD), fgsm(net, x, margin=1.0)):
        assert result.status == RhoStatus.UPPER_BOUND and result.witness_verified
        check = check_witness(net, x, result.witness, label=result.label, required_margin=1.0)
        assert check.verified and check.margin_numpy >= 1.0
        assert result.upper >= _attack(result.method, 8).upper - 1e-3
    with pytest.raises(InvalidInputError, match="margin"):
        pgd(net, x, margin=-1.0)


@pytest.mark.shared
def test_nothing_found_is_not_found():
    _need_data()
    net, x = _net(), _images()[0][0]
    for result in (pgd(net, x, eps_max=0.01, steps=10, restarts=2),
                   fgsm(net, x, eps_grid=[0.001, 0.002])):
        assert result.status == RhoStatus.NOT_FOUND
        assert result.lower == 0.0 and math.isinf(result.upper)
        assert result.witness is None and not result.witness_verified
        assert result.adversarial_label is None and result.message


@pytest.mark.shared
def test_misclassified_input_has_distance_zero():
    _need_data()
    net, x = _net(), _images()[0][0]
    wrong = (int(net.predict(x)[0]) + 1) % 10
    for attack in (fgsm, pgd, lbfgs):
        result = attack(net, x, label=wrong)
        assert result.status == RhoStatus.UPPER_BOUND and result.upper < 1e-7  # float32 x
        assert result.witness_verified and result.label == wrong


def test_attacks_on_a_torch_network_without_onnx_origin():
    """No ONNX origin: witnesses are checked in numpy only, still verified."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(),
                                torch.nn.Linear(16, 3)).double().eval()
    net = milpverify.from_torch(model, (6,))
    x = np.random.default_rng(0).random(6)
    for result in (fgsm(net, x), pgd(net, x, steps=30, restarts=2, bisection_steps=6),
                   lbfgs(net, x, maxiter=50, bisection_steps=2)):
        assert result.status == RhoStatus.UPPER_BOUND, result.message
        check = check_witness(net, x, result.witness, label=result.label)
        assert check.verified and check.distance == pytest.approx(result.upper)
        assert int(net.predict(result.witness)[0]) != result.label or check.margin_numpy == 0


def test_bad_arguments(tiny_net):
    torch = pytest.importorskip("torch")
    net = milpverify.from_torch(torch.nn.Linear(2, 3).double(), (2,))
    x = np.array([0.25, 0.5])
    with pytest.raises(InvalidInputError, match="2 classes"):
        pgd(tiny_net, x)
    with pytest.raises(InvalidInputError):
        pgd(net, x, eps_max=0.0)
    with pytest.raises(InvalidInputError):
        lbfgs(net, x, targets="bogus")
    with pytest.raises(InvalidInputError):
        fgsm(net, x, label=5)
    with pytest.raises(InvalidInputError):
        fgsm(net, x, eps_grid=[-1.0])
    with pytest.raises(InvalidInputError):
        pgd(net, x, domain=(1.0, 0.0))
    with pytest.raises(InvalidInputError):
        pgd(net, x, target=int(net.predict(x)[0]))
    with pytest.raises(InvalidInputError):
        fgsm(net, np.zeros((2, 2)))
    with pytest.raises(InvalidInputError, match="time_limit_s must be > 0"):
        pgd(net, x, time_limit_s=-1.0)


@pytest.mark.slow
@pytest.mark.shared
@pytest.mark.parametrize("index", [0, 1, 2, 3, 4, 8])
def test_full_attacks_default_settings(index):
    """Default settings of all three attacks (L-BFGS over every target label): ~1-3 min/image."""
    _need_data()
    x = _images()[0][index]
    for method, result in (("pgd", pgd(_net(), x)), ("fgsm", _attack("fgsm", index)),
                           ("lbfgs", _attack("lbfgs", index))):
        _assert_verified(result, method, index)
        if index == 8:
            assert result.upper >= RHO_IMAGE_8 - 1e-6
