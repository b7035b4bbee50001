"""Interval bounds: exact answers on hand-built nets, outward rounding, errors, real nets."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

import milpverify
from milpverify.bounds import Bounds, bounds_for_box, interval_bounds, relu_case_counts
from milpverify.bounds.interval import INTERVAL_RULES, centre_radius, gamma
from milpverify.errors import InvalidInputError, UnboundedError
from milpverify.ir import ops
from milpverify.ir.network import Network

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def needs_shared(test: Callable[..., None]) -> Callable[..., None]:
    """Mark `shared` and skip with a clear reason when ../shared/data is absent."""
    skip = pytest.mark.skipif(not SHARED.is_dir(),
                              reason=f"needs ../shared/data beside the repository ({SHARED})")
    return pytest.mark.shared(skip(test))  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------- builders
def affine(src: str, weight: list[list[float]] | np.ndarray, bias: list[float] | np.ndarray
           ) -> ops.Affine:
    w = np.asarray(weight, dtype=np.float64)
    return ops.Affine((src,), (w.shape[0],), w, np.asarray(bias, dtype=np.float64))


def ones_net() -> Network:
    """All-ones 2-2-1 net::

        x0 ─┬─> h0 = x0 + x1 ─> r0 = relu(h0) ─┐
            ╳                                    ├─> y = r0 + r1
        x1 ─┴─> h1 = x0 + x1 ─> r1 = relu(h1) ─┘

    On [-1, 1]^2: h in [-2, 2], r in [0, 2], y in [0, 4] (all exact ranges).
    """
    return Network([
        ("x", ops.Input((), (2,))),
        ("h", affine("x", np.ones((2, 2)), [0, 0])),
        ("r", ops.Relu(("h",), (2,))),
        ("y", affine("r", np.ones((1, 2)), [0])),
    ], "y")


def maxpool_net() -> Network:
    """A 2x2 image, one 2x2 max-pool window, then `out = m - x[1]`::

        x (1,2,2) ─> m = max(x0, x1, x2, x3) ─┐
           └──────────────────────────────────┴─> c = concat(m, x) ─> out = c0 - c2
    """
    return Network([
        ("x", ops.Input((), (1, 2, 2))),
        ("m", ops.MaxPool(("x",), (1, 1, 1), (1, 2, 2), (2, 2), (2, 2), (0, 0, 0, 0), (1, 1))),
        ("c", ops.Concat(("m", "x"), (5,), np.arange(5))),
        ("out", affine("c", [[1, 0, -1, 0, 0]], [0])),
    ], "out")


def approx(bounds: Bounds, name: str, lower: list[float], upper: list[float]) -> None:
    """Bounds equal the expected ones up to the rounding slack, and contain them."""
    lo, hi = bounds.flat(name)
    assert np.all(lo <= np.asarray(lower)) and np.all(hi >= np.asarray(upper))
    np.testing.assert_allclose(lo, lower, atol=1e-12)
    np.testing.assert_allclose(hi, upper, atol=1e-12)


@lru_cache(maxsize=None)
def load(rel: str) -> Network:
    return milpverify.load_onnx(SHARED / rel)


@lru_cache(maxsize=1)
def mnist() -> np.ndarray:
    return np.load(SHARED / "mnist" / "mnist_test.npz")["images"][:20] / 255.0


# ---------------------------------------------------------------------------- exact answers
def test_ones_net_exact() -> None:
    b = interval_bounds(ones_net(), [-1, -1], [1, 1])
    approx(b, "h", [-2, -2], [2, 2])
    approx(b, "r", [0, 0], [2, 2])
    approx(b, "y", [0], [4])
    assert b.method == "interval"
    assert b.relu_cases == {"r": {"active": 0, "inactive": 0, "unstable": 2}}
    assert b.unstable == 2


def test_maxpool_and_concat() -> None:
    lo = np.array([0, 2, -1, 0.5]).reshape(1, 2, 2)
    hi = np.array([1, 3, 0, 2.5]).reshape(1, 2, 2)
    b = interval_bounds(maxpool_net(), lo, hi)
    approx(b, "m", [2], [3])
    assert b.pre["m"][0].shape == (1, 1, 1)
    approx(b, "c", [2, 0, 2, -1, 0.5], [3, 1, 3, 0, 2.5])
    approx(b, "out", [-1], [1])


def test_maxpool_padding_ignored() -> None:
    """A padded window only reads its real cells (padding is -inf, not 0)."""
    op = ops.MaxPool(("x",), (1, 1, 1), (1, 1, 1), (2, 2), (1, 1), (0, 0, 1, 1), (1, 1))
    lo, hi = INTERVAL_RULES[ops.MaxPool](op, [(np.array([-3.0]), np.array([-2.0]))])
    assert lo[0] == -3.0 and hi[0] == -2.0


def test_add_permute_scale_rules() -> None:
    add = ops.Add(("a", "b"), (1,))
    lo, hi = INTERVAL_RULES[ops.Add](add, [(np.array([0.1]), np.array([0.1])),
                                         (np.array([0.2]), np.array([0.2]))])
    exact = Fraction(0.1) + Fraction(0.2)
    assert Fraction(lo[0]) <= exact <= Fraction(hi[0]) and hi[0] > lo[0]
    perm = ops.Permute(("a",), (2,), np.array([2, 0]), 3)
    lo, hi = INTERVAL_RULES[ops.Permute](perm, [(np.arange(3.0), np.arange(3.0) + 1)])
    assert lo.tolist() == [2, 0] and hi.tolist() == [3, 1]
    scale = ops.Scale(("a",), (2,), np.array([-2.0, 0.5]), np.array([1.0, 0.0]))
    lo, hi = INTERVAL_RULES[ops.Scale](scale, [(np.array([0.0, -4.0]), np.array([1.0, 4.0]))])
    np.testing.assert_allclose(lo, [-1, -2], atol=1e-14)
    np.testing.assert_allclose(hi, [1, 2], atol=1e-14)


# ---------------------------------------------------------------------------- rounding
def test_linear_rounding_is_outward() -> None:
    """fl(0.1 * 3) = 0.30000000000000004 is *above* the exact 0.1 * 3; the lower bound is not."""
    net = Network([("x", ops.Input((), (1,))), ("y", affine("x", [[0.1]], [0.0]))], "y")
    lo, hi = interval_bounds(net, [3.0], [3.0]).flat("y")
    exact = Fraction(0.1) * 3
    assert 0.1 * 3 > exact  # the naive float answer would be unsound
    assert Fraction(lo[0]) <= exact <= Fraction(hi[0])
    assert hi[0] - lo[0] < 1e-14


def test_centre_radius_covers_box() -> None:
    rng = np.random.default_rng(0)
    lo = rng.normal(size=1000) * 10.0 ** rng.integers(-8, 8, size=1000)
    hi = lo + np.abs(rng.normal(size=1000)) * 10.0 ** rng.integers(-16, 4, size=1000)
    c, r = centre_radius(lo, hi)
    for i in range(lo.size):
        assert Fraction(c[i]) - Fraction(r[i]) <= Fraction(lo[i])
        assert Fraction(hi[i]) <= Fraction(c[i]) + Fraction(r[i])


def test_random_affine_sound_in_exact_arithmetic() -> None:
    """A 3-layer *linear* net: the exact range is attained at vertices; check against Fractions."""
    rng = np.random.default_rng(1)
    sizes = [3, 4, 3, 2]
    weights = [rng.normal(size=(sizes[i + 1], sizes[i])) / 3 for i in range(3)]
    biases = [rng.normal(size=sizes[i + 1]) / 7 for i in range(3)]
    nodes: list[tuple[str, ops.Op]] = [("x", ops.Input((), (3,)))]
    for i, (w, b) in enumerate(zip(weights, biases)):
        nodes.append((f"l{i}", affine(nodes[-1][0], w, b)))
    net = Network(nodes, "l2")
    lo_in, hi_in = np.array([0.1, -0.3, 1 / 3]), np.array([0.7, 0.2, 0.9])
    lo, hi = interval_bounds(net, lo_in, hi_in).flat("l0")
    wf = [[Fraction(v) for v in row] for row in weights[0]]
    for k in range(sizes[1]):
        terms = [(min(wf[k][j] * Fraction(lo_in[j]), wf[k][j] * Fraction(hi_in[j])),
                  max(wf[k][j] * Fraction(lo_in[j]), wf[k][j] * Fraction(hi_in[j])))
                 for j in range(3)]
        exact_lo = sum(t[0] for t in terms) + Fraction(biases[0][k])
        exact_hi = sum(t[1] for t in terms) + Fraction(biases[0][k])
        assert Fraction(lo[k]) <= exact_lo and exact_hi <= Fraction(hi[k])
        assert float(exact_lo - Fraction(lo[k])) < 1e-14


def test_gamma() -> None:
    assert gamma(0) == 0
    assert gamma(1) == pytest.approx(2.0 ** -53, rel=1e-12)
    assert np.all(np.diff(gamma(np.arange(1, 100))) > 0)


# ---------------------------------------------------------------------------- errors
def test_lower_above_upper() -> None:
    with pytest.raises(InvalidInputError,
                       match=r"lower > upper at 1 input element\(s\), e.g. index 1"):
        interval_bounds(ones_net(), [0, 1], [1, 0.5])


def test_nan_input() -> None:
    with pytest.raises(InvalidInputError, match=r"`upper` contains NaN \(index 0\)"):
        interval_bounds(ones_net(), [0, 0], [np.nan, 1])


def test_wrong_size() -> None:
    with pytest.raises(InvalidInputError,
                       match=r"`lower` has 3 elements \(shape \[3\]\) but network input 'x' "
                             r"expects 2"):
        interval_bounds(ones_net(), [0, 0, 0], [1, 1])


def test_infinite_box() -> None:
    with pytest.raises(UnboundedError,
                       match=r"Bounds at node 'x' are not finite \(index 1: \[0.0, inf\]\)\. "
                             r"The big-M encoding needs a bounded input region\."):
        interval_bounds(ones_net(), [0, 0], [1, np.inf])


def test_overflow_names_node() -> None:
    net = Network([
        ("x", ops.Input((), (2,))),
        ("fc1", affine("x", [[1e300, 1e300], [1, 1]], [0, 0])),
        ("fc2", affine("fc1", [[1e300, 0], [0, 1]], [0, 0])),
    ], "fc2")
    with pytest.raises(UnboundedError, match=r"Bounds at node 'fc2' are not finite \(index 0: "):
        interval_bounds(net, [0, 0], [1, 1])


def test_unknown_method() -> None:
    with pytest.raises(InvalidInputError, match=r"Unknown bounds method 'magic'; choose one of"):
        bounds_for_box(ones_net(), [0, 0], [1, 1], "magic")


def test_shapes_and_cases_match_network() -> None:
    net = maxpool_net()
    b = bounds_for_box(net, np.zeros(4), np.ones(4), "interval")
    assert set(b.pre) == set(net.order)
    for name, op in net.items():
        assert b.pre[name][0].shape == op.shape == b.pre[name][1].shape
    b = interval_bounds(ones_net(), [0.5, 0], [1, 1])
    assert b.relu_cases["r"] == relu_case_counts(*b.flat("h")) == {
        "active": 2, "inactive": 0, "unstable": 0}


# ---------------------------------------------------------------------------- real nets
@pytest.mark.parametrize("rel", ["nets/mnist/wk17a_linf0.1.onnx",
                                 "nets/mnist/eran/mnist_relu_6_100.onnx",
                                 "nets/mnist/planet/lenet.onnx"])
@needs_shared
def test_interval_contains_clean_image(rel: str) -> None:
    """The bounds of the degenerate box [x, x] contain the forward pass at x and are tight."""
    net = load(rel)
    x = mnist()[0]
    b = interval_bounds(net, x, x)
    values = net.forward_all(x[None], flat=True)
    for name in net.order:
        lo, hi = b.flat(name)
        assert np.all(lo <= values[name][0]) and np.all(values[name][0] <= hi)
        assert np.all(hi - lo <= 1e-9 * (1 + np.abs(values[name][0])))
