"""ONNX `Pad`: forward vs onnxruntime, what folds into the next op, and clear errors.

Zero-width pads vanish; a zero constant pad folds into the padding of a following Conv or
AvgPool; before a MaxPool (which pads with -inf) it stays an explicit op; a non-zero fill
value is an explicit op everywhere; reflect/edge modes are named in one error line.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_matches_ort, make_onnx, node

from milpverify import UnsupportedModelError, load_onnx
from milpverify.ir import ops

SIMPLIFY = pytest.mark.parametrize("simplify_graph", [True, False], ids=["simplified", "raw"])
X = ("x", ("N", 2, 5, 6))


def _x(rng, shape=(2, 5, 6)):
    return rng.standard_normal((3, *shape)).astype(np.float32)


def _pad_model(widths, then=None, value=None, opset=13, mode=None, **then_attrs):
    """x -> Pad(pads as input, optional constant_value) -> optional `then` op -> y."""
    inits = {"pads": np.array(widths)}
    inputs = ["x", "pads"]
    if value is not None:
        inits["v"] = np.array(value, dtype=np.float32)
        inputs.append("v")
    attrs = {"mode": mode} if mode else {}
    nodes = [node("Pad", inputs, "p" if then else "y", **attrs)]
    if then == "Conv":
        inits["W"] = np.random.default_rng(1).standard_normal((3, 2, 3, 3))
        nodes.append(node("Conv", ["p", "W"], "y", **then_attrs))
    elif then:
        nodes.append(node(then, ["p"], "y", **then_attrs))
    return make_onnx(nodes, inits, [X], [("y", None)], opset)


@SIMPLIFY
@pytest.mark.parametrize("pads,value", [
    ([0, 0, 1, 2, 0, 0, 3, 0], None),
    ([0, 0, 1, 1, 0, 0, 1, 1], 0.0),
    ([0, 0, 2, 0, 0, 0, 0, 1], -1.5),
], ids=["zero-asym", "zero-given", "fill-1.5"])
def test_pad_alone(rng, simplify_graph, pads, value):
    assert_matches_ort(_pad_model(pads, value=value), _x(rng), simplify_graph=simplify_graph)


@pytest.mark.parametrize("opset", [7, 11, 18])
def test_pad_opsets(rng, opset):
    """Pad-2 (opset 7) takes pads/value as attributes, Pad-11 inputs, Pad-18 an axes input."""
    if opset == 7:
        model = make_onnx([node("Pad", ["x"], "y", pads=[0, 0, 1, 0, 0, 0, 0, 2], value=0.5)],
                          {}, [X], [("y", None)], opset)
    elif opset == 11:
        model = _pad_model([0, 0, 1, 0, 0, 0, 0, 2], value=0.5, opset=11)
    else:
        model = make_onnx([node("Pad", ["x", "pads", "", "axes"], "y")],
                          {"pads": np.array([1, 2, 0, 1]), "axes": np.array([-1, 2])},
                          [X], [("y", None)], opset)
    assert_matches_ort(model, _x(rng), simplify_graph=True)


def test_zero_width_pad_vanishes(rng):
    """A Keras-style zero-width Pad before an average pool is an identity."""
    model = _pad_model([0] * 8, then="AveragePool", kernel_shape=[2, 2], strides=[2, 2])
    net = load_onnx(model, simplify_graph=False)
    assert [type(op) for _, op in net.items()] == [ops.Input, ops.AvgPool]
    assert_matches_ort(model, _x(rng), simplify_graph=False)


@SIMPLIFY
@pytest.mark.parametrize("then,attrs,folds", [
    ("Conv", {"pads": [1, 0, 0, 1]}, True),
    ("Conv", {"strides": [2, 1], "dilations": [1, 2]}, True),
    ("AveragePool", {"kernel_shape": [3, 3]}, True),
    ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1}, True),
    ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, False),
    ("AveragePool", {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}, True),
    ("MaxPool", {"kernel_shape": [2, 2]}, False),
], ids=["conv-padded", "conv-strided", "avg", "avg-include", "avg-exclude", "avg-ceil", "max"])
def test_zero_pad_before_window_op(rng, simplify_graph, then, attrs, folds):
    """Folded exactly when the consumer pads with zeros that count; MaxPool keeps the pad."""
    model = _pad_model([0, 0, 1, 2, 0, 0, 2, 1], then=then, **attrs)
    x = _x(rng) - 3.0        # negative inputs: a -inf (MaxPool) padding would differ from 0
    assert_matches_ort(model, x, simplify_graph=simplify_graph)
    if simplify_graph:
        kinds = [op.kind for _, op in load_onnx(model).items()]
        assert (kinds.count("conv") == (1 if then == "Conv" else 0)) == folds, kinds


def test_fill_value_before_conv_stays_explicit(rng):
    model = _pad_model([0, 0, 1, 1, 0, 0, 1, 1], then="Conv", value=2.0)
    assert_matches_ort(model, _x(rng), simplify_graph=True)


@pytest.mark.parametrize("mode", ["reflect", "edge"])
def test_non_constant_mode_is_named(mode):
    with pytest.raises(UnsupportedModelError,
                       match=rf"'y' \(Pad, opset 13\): mode='{mode}' is not supported; only "
                             r"mode='constant'.*Supported ONNX ops:.*Pad"):
        load_onnx(_pad_model([0, 0, 1, 1, 0, 0, 1, 1], mode=mode))


@pytest.mark.parametrize("pads,what", [
    ([0, 1, 0, 0, 0, 0, 0, 0], "only the H and W axes"),
    ([0, 0, -1, 0, 0, 0, 0, 0], "negative pads"),
])
def test_unsupported_pads_are_named(pads, what):
    with pytest.raises(UnsupportedModelError, match=rf"'y' \(Pad, opset 13\): {what}"):
        load_onnx(_pad_model(pads))
