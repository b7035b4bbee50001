"""LeakyRelu, PRelu and Clip (ReLU6): forward vs onnxruntime per attribute that matters, the
IR they become, and clear errors for what cannot be encoded."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_matches_ort, make_onnx, node

from milpverify import UnsupportedModelError, load_onnx
from milpverify.ir import ops

SIMPLIFY = pytest.mark.parametrize("simplify_graph", [True, False], ids=["simplified", "raw"])


def _x(rng, *shape, scale=3.0):
    return (scale * rng.standard_normal((5, *shape))).astype(np.float32)


def _gemm_then(rng, act_nodes, inits=None, opset=13):
    """x (N, 4) -> Gemm (6) -> activation nodes reading 'h' and writing 'y'."""
    nodes = [node("Gemm", ["x", "W", "b"], "h", transB=1), *act_nodes]
    all_inits = {"W": rng.standard_normal((6, 4)), "b": rng.standard_normal(6), **(inits or {})}
    return make_onnx(nodes, all_inits, [("x", ("N", 4))], [("y", None)], opset)


@SIMPLIFY
@pytest.mark.parametrize("opset", [7, 16])
@pytest.mark.parametrize("alpha", [None, 0.2, -0.5, 1.5], ids=["default", "0.2", "-0.5", "1.5"])
def test_leaky_relu(rng, simplify_graph, opset, alpha):
    attrs = {} if alpha is None else {"alpha": alpha}
    model = _gemm_then(rng, [node("LeakyRelu", ["h"], "y", **attrs)], opset=opset)
    assert_matches_ort(model, _x(rng, 4), simplify_graph=simplify_graph)
    leaky = [op for _, op in load_onnx(model).items() if isinstance(op, ops.LeakyRelu)]
    assert len(leaky) == 1
    np.testing.assert_allclose(leaky[0].slope, 0.01 if alpha is None else alpha, rtol=1e-6)


@SIMPLIFY
@pytest.mark.parametrize("opset", [9, 16])
@pytest.mark.parametrize("slope_shape", [(3, 1, 1), (1,), (5,), (3, 4, 5)],
                         ids=["per-channel", "scalar", "per-column", "full"])
def test_prelu_after_conv(rng, simplify_graph, opset, slope_shape):
    nodes = [node("Conv", ["x", "W"], "h", pads=[1, 1, 1, 1]), node("PRelu", ["h", "s"], "y")]
    inits = {"W": rng.standard_normal((3, 2, 3, 3)), "s": rng.normal(0.2, 0.5, slope_shape)}
    model = make_onnx(nodes, inits, [("x", ("N", 2, 4, 5))], [("y", None)], opset)
    assert_matches_ort(model, _x(rng, 2, 4, 5), simplify_graph=simplify_graph)


def test_prelu_opset6_per_channel_vector(rng):
    """PRelu-6 takes a (C,) slope per channel of an (N, C, H, W) input."""
    nodes = [node("Conv", ["x", "W"], "h"), node("PRelu", ["h", "s"], "y")]
    inits = {"W": rng.standard_normal((3, 2, 1, 1)), "s": np.array([0.1, -0.3, 0.7])}
    model = make_onnx(nodes, inits, [("x", ("N", 2, 3, 3))], [("y", ("N", 3, 3, 3))], 6,
                      check=False)
    net = load_onnx(model, simplify_graph=False)
    x = _x(rng, 2, 3, 3).astype(np.float64)
    h = net.forward_all(x)["h"].reshape(5, 3, 3, 3)
    slope = inits["s"].astype(np.float32).astype(np.float64).reshape(1, 3, 1, 1)
    expected = np.where(h >= 0, h, slope * h).reshape(5, -1)
    np.testing.assert_allclose(net.forward(x), expected, rtol=1e-12)


@SIMPLIFY
@pytest.mark.parametrize("opset,limits", [
    (13, (0.0, 6.0)), (11, (-1.0, 2.5)), (13, (0.5, None)), (13, (None, 1.5)),
    (13, (0.0, None)), (13, (None, None)), (13, (2.0, 2.0)), (13, (3.0, -1.0)),
    (7, (0.0, 6.0)), (10, (-0.5, None)),
], ids=["relu6", "lo-hi", "min", "max", "relu", "none", "equal", "crossed", "attr-relu6",
        "attr-min"])
def test_clip(rng, simplify_graph, opset, limits):
    lo, hi = limits
    if opset < 11:
        attrs = {k: v for k, v in (("min", lo), ("max", hi)) if v is not None}
        act, inits = node("Clip", ["h"], "y", **attrs), {}
    else:
        inits = {k: np.array(v, dtype=np.float32) for k, v in (("lo", lo), ("hi", hi))
                 if v is not None}
        act = node("Clip", ["h", "lo" if lo is not None else "", "hi" if hi is not None else ""],
                   "y")
    model = _gemm_then(rng, [act], inits, opset)
    assert_matches_ort(model, _x(rng, 4), simplify_graph=simplify_graph)


def test_relu6_uses_two_relus_and_keeps_tight_interval_bounds(rng):
    """Nested monotone pieces: interval bounds are [0, 6] up to outward rounding."""
    from milpverify.bounds import interval_bounds
    model = _gemm_then(rng, [node("Clip", ["h", "lo", "hi"], "y")],
                       {"lo": np.array(0.0, np.float32), "hi": np.array(6.0, np.float32)})
    net = load_onnx(model)
    assert sum(isinstance(op, ops.Relu) for _, op in net.items()) == 2
    lo, hi = interval_bounds(net, np.full(4, -10.0), np.full(4, 10.0)).flat(net.output)
    assert np.all(lo >= -1e-12) and np.all(hi <= 6.0 + 1e-12)


def test_clip_with_runtime_limit_is_named(rng):
    nodes = [node("Gemm", ["x", "W"], "h", transB=1), node("Clip", ["h", "x"], "y")]
    model = make_onnx(nodes, {"W": rng.standard_normal((4, 4))}, [("x", ("N", 4))],
                      [("y", None)], 13, check=False)
    with pytest.raises(UnsupportedModelError, match=r"'y' \(Clip, opset 13\): its min must be "
                                                    r"a constant.*Supported ONNX ops:.*Clip"):
        load_onnx(model)
