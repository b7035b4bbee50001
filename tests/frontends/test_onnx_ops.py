"""Every supported ONNX op, attribute and opset: `load_onnx(model).forward(x)` == onnxruntime.

Each test builds a one-node or few-node graph with `onnx.helper` (batch axis symbolic "N",
three samples of seeded random data) and checks it with and without simplification. Cases
cover every pair of attribute values (`helpers.pairwise`), not the full product.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_matches_ort, make_onnx, node, pairwise

SIMPLIFY = pytest.mark.parametrize("simplify_graph", [True, False], ids=["simplified", "raw"])
BATCH = 3

def _x(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal((BATCH, *shape)).astype(np.float32)


def _w(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


# ---------------------------------------------------------------------------- Gemm / MatMul
@pytest.mark.parametrize("simplify_graph,opset,trans_b,alpha,beta,c_shape", pairwise(
    simplify_graph=[True, False], opset=[9, 11, 13, 17], trans_b=[0, 1],
    **{"alpha,beta": [(1.0, 1.0), (0.5, 2.0), (-1.5, 0.25)]},
    c_shape=[(4,), (1, 4), (), (1,), (1, 1), None],
    valid=lambda c: c["c_shape"] is not None or c["opset"] >= 11))  # C optional from Gemm-11
def test_gemm(rng, simplify_graph, opset, trans_b, alpha, beta, c_shape):
    b = _w(rng, 4, 6) if trans_b else _w(rng, 6, 4)
    inits = {"B": b}
    inputs = ["x", "B"]
    if c_shape is not None:
        inits["C"] = _w(rng, *c_shape)
        inputs.append("C")
    model = make_onnx([node("Gemm", inputs, "y", transB=trans_b, alpha=alpha, beta=beta)],
                      inits, [("x", ("N", 6))], [("y", None)], opset)
    assert_matches_ort(model, _x(rng, 6), simplify_graph=simplify_graph)


def test_gemm_bias_of_shape_1x1(rng):
    """C of shape (1, 1) broadcasts to (batch, out) in ONNX. BUG in `frontends/onnx.py::_gemm`:
    `np.broadcast_to(c, (out,))` raises a raw ValueError for a 2-D C. Fix: require
    `c.ndim <= 1 or c.shape[0] == 1` (else NodeUnsupported: C depends on the batch), then
    broadcast `c.reshape(-1) if c.ndim == 2 else c` to (out,) inside try/except ValueError ->
    NodeUnsupported."""
    model = make_onnx([node("Gemm", ["x", "B", "C"], "y", transB=1)],
                      {"B": _w(rng, 4, 6), "C": _w(rng, 1, 1)}, [("x", ("N", 6))], [("y", None)],
                      13)
    assert_matches_ort(model, _x(rng, 6), simplify_graph=True)


@SIMPLIFY
@pytest.mark.parametrize("opset", [9, 13])
@pytest.mark.parametrize("with_bias", [False, True])
def test_matmul(rng, simplify_graph, opset, with_bias):
    nodes = [node("MatMul", ["x", "W"], "h" if with_bias else "y")]
    inits = {"W": _w(rng, 6, 5)}
    if with_bias:
        nodes.append(node("Add", ["h", "b"], "y"))
        inits["b"] = _w(rng, 5)
    model = make_onnx(nodes, inits, [("x", ("N", 6))], [("y", None)], opset)
    assert_matches_ort(model, _x(rng, 6), simplify_graph=simplify_graph)


@SIMPLIFY
def test_mlp_gemm_relu_chain(rng, simplify_graph):
    nodes = [node("Flatten", ["x"], "f"), node("Gemm", ["f", "W1", "b1"], "h1", transB=1),
             node("Relu", ["h1"], "r1"), node("Gemm", ["r1", "W2", "b2"], "h2", transB=1),
             node("Relu", ["h2"], "r2"), node("Gemm", ["r2", "W3", "b3"], "y", transB=1)]
    inits = {"W1": _w(rng, 8, 12), "b1": _w(rng, 8), "W2": _w(rng, 6, 8), "b2": _w(rng, 6),
             "W3": _w(rng, 3, 6), "b3": _w(rng, 3)}
    model = make_onnx(nodes, inits, [("x", ("N", 3, 2, 2))], [("y", None)], 13)
    assert_matches_ort(model, _x(rng, 3, 2, 2), simplify_graph=simplify_graph)


# ---------------------------------------------------------------------------- element-wise
CONST_SHAPES = [(), (1,), (4,), (3, 4), (2, 1, 1), (1, 2, 3, 4), (2, 3, 4), (1, 1, 1, 4)]


# constant / tensor is not piecewise linear (see test_onnx_errors)
@pytest.mark.parametrize("simplify_graph,opset,op,tensor_first,c_shape", pairwise(
    simplify_graph=[True, False], opset=[11, 13, 14], op=["Add", "Sub", "Mul", "Div"],
    tensor_first=[True, False], c_shape=CONST_SHAPES,
    valid=lambda c: c["op"] != "Div" or c["tensor_first"]))
def test_elementwise_with_constant(rng, simplify_graph, opset, op, tensor_first, c_shape):
    c = _w(rng, *c_shape)
    if op == "Div":
        c = np.where(np.abs(c) < 0.1, 0.5, c).astype(np.float32)
    args = ["x", "c"] if tensor_first else ["c", "x"]
    # A Relu after the op makes the folded Scale meet a non-linear consumer.
    model = make_onnx([node(op, args, "h"), node("Relu", ["h"], "y")], {"c": c},
                      [("x", ("N", 2, 3, 4))], [("y", None)], opset)
    assert_matches_ort(model, _x(rng, 2, 3, 4), simplify_graph=simplify_graph)


@SIMPLIFY
@pytest.mark.parametrize("op,order", [("Add", "x,r"), ("Add", "r,x"), ("Sub", "x,r"),
                                      ("Sub", "r,x"), ("Add", "r,r"), ("Sub", "x,x")])
def test_two_tensor_add_sub(rng, simplify_graph, op, order):
    """Residual: x -> Relu -> Add/Sub(x, relu), including one node feeding both operands."""
    names = {"x": "x", "r": "r"}
    a, b = (names[k] for k in order.split(","))
    model = make_onnx([node("Relu", ["x"], "r"), node(op, [a, b], "y")], {},
                      [("x", ("N", 2, 3, 3))], [("y", None)], 13)
    assert_matches_ort(model, _x(rng, 2, 3, 3), simplify_graph=simplify_graph)


@SIMPLIFY
def test_residual_block_with_affine(rng, simplify_graph):
    """x -> Gemm -> Relu -> Gemm -> Add(., x) -> Relu."""
    nodes = [node("Gemm", ["x", "W1", "b1"], "h", transB=1), node("Relu", ["h"], "r"),
             node("Gemm", ["r", "W2", "b2"], "g", transB=1), node("Add", ["g", "x"], "s"),
             node("Relu", ["s"], "y")]
    inits = {"W1": _w(rng, 7, 5), "b1": _w(rng, 7), "W2": _w(rng, 5, 7), "b2": _w(rng, 5)}
    model = make_onnx(nodes, inits, [("x", ("N", 5))], [("y", None)], 13)
    assert_matches_ort(model, _x(rng, 5), simplify_graph=simplify_graph)


@SIMPLIFY
@pytest.mark.parametrize("opset", [6, 13, 14])
def test_relu(rng, simplify_graph, opset):
    model = make_onnx([node("Relu", ["x"], "y")], {}, [("x", ("N", 2, 3, 3))], [("y", None)],
                      opset)
    assert_matches_ort(model, _x(rng, 2, 3, 3), simplify_graph=simplify_graph)


# ---------------------------------------------------------------------------- Conv
CONV_CASES = {
    # id: (in_shape (C,H,W), weight shape (O, C/g, kh, kw), attributes)
    "plain": ((3, 6, 6), (4, 3, 3, 3), {}),
    "stride2": ((3, 7, 7), (4, 3, 3, 3), {"strides": [2, 2]}),
    "stride2x1": ((2, 7, 6), (3, 2, 3, 2), {"strides": [2, 1]}),
    "pads_sym": ((2, 5, 5), (3, 2, 3, 3), {"pads": [1, 1, 1, 1]}),
    "pads_asym": ((2, 5, 6), (3, 2, 3, 3), {"pads": [0, 1, 2, 0]}),
    "pads_asym_stride": ((1, 28, 28), (3, 1, 4, 4), {"pads": [0, 0, 1, 1], "strides": [2, 2]}),
    "dilation2": ((2, 8, 8), (3, 2, 3, 3), {"dilations": [2, 2]}),
    "dilation1x2_pad": ((2, 6, 8), (3, 2, 2, 3), {"dilations": [1, 2], "pads": [1, 0, 0, 2]}),
    "group2": ((4, 6, 6), (6, 2, 3, 3), {"group": 2}),
    "depthwise": ((3, 6, 6), (3, 1, 3, 3), {"group": 3, "pads": [1, 1, 1, 1]}),
    "depthwise_x2": ((3, 6, 6), (6, 1, 3, 3), {"group": 3, "strides": [2, 2]}),
    "same_upper": ((2, 7, 6), (3, 2, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    "same_lower": ((2, 7, 6), (3, 2, 3, 3), {"auto_pad": "SAME_LOWER", "strides": [2, 2]}),
    "same_upper_even_k": ((2, 6, 6), (3, 2, 2, 4), {"auto_pad": "SAME_UPPER"}),
    "same_lower_even_k": ((2, 6, 6), (3, 2, 2, 4), {"auto_pad": "SAME_LOWER"}),
    "valid": ((2, 7, 6), (3, 2, 3, 3), {"auto_pad": "VALID", "strides": [2, 2]}),
    "kernel_shape_attr": ((2, 5, 5), (3, 2, 3, 3), {"kernel_shape": [3, 3]}),
    "1x1": ((3, 4, 4), (5, 3, 1, 1), {}),
}


@pytest.mark.parametrize("simplify_graph,opset,with_bias,case", pairwise(
    simplify_graph=[True, False], opset=[10, 11, 13], with_bias=[True, False],
    case=list(CONV_CASES)))
def test_conv(rng, simplify_graph, opset, with_bias, case):
    in_shape, w_shape, attrs = CONV_CASES[case]
    inits = {"W": _w(rng, *w_shape)}
    inputs = ["x", "W"]
    if with_bias:
        inits["B"] = _w(rng, w_shape[0])
        inputs.append("B")
    model = make_onnx([node("Conv", inputs, "y", **attrs)], inits,
                      [("x", ("N", *in_shape))], [("y", None)], opset)
    assert_matches_ort(model, _x(rng, *in_shape), simplify_graph=simplify_graph)


@SIMPLIFY
def test_conv_relu_conv_flatten_gemm(rng, simplify_graph):
    nodes = [node("Conv", ["x", "W1", "B1"], "c1", strides=[2, 2], pads=[1, 1, 1, 1]),
             node("Relu", ["c1"], "r1"), node("Conv", ["r1", "W2", "B2"], "c2", strides=[2, 2]),
             node("Relu", ["c2"], "r2"), node("Flatten", ["r2"], "f"),
             node("Gemm", ["f", "W3", "B3"], "y", transB=1)]
    inits = {"W1": _w(rng, 4, 1, 3, 3), "B1": _w(rng, 4), "W2": _w(rng, 5, 4, 2, 2),
             "B2": _w(rng, 5), "W3": _w(rng, 10, 5 * 2 * 2), "B3": _w(rng, 10)}
    model = make_onnx(nodes, inits, [("x", ("N", 1, 9, 9))], [("y", None)], 13)
    assert_matches_ort(model, _x(rng, 1, 9, 9), simplify_graph=simplify_graph)


@SIMPLIFY
@pytest.mark.parametrize("pads", [[0, 0, 0, 0], [1, 1, 1, 1], [0, 0, 1, 1]], ids=str)
def test_normalisation_before_conv(rng, simplify_graph, pads):
    """(x - mean) / std before a conv: with padding the shift must not fold into the bias."""
    nodes = [node("Sub", ["x", "mean"], "centred"), node("Div", ["centred", "std"], "normed"),
             node("Conv", ["normed", "W", "B"], "c", pads=pads), node("Relu", ["c"], "y")]
    inits = {"mean": np.array([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1),
             "std": np.array([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1),
             "W": _w(rng, 4, 3, 3, 3), "B": _w(rng, 4)}
    model = make_onnx(nodes, inits, [("x", ("N", 3, 5, 5))], [("y", None)], 13)
    x = rng.uniform(0, 1, (BATCH, 3, 5, 5)).astype(np.float32)
    assert_matches_ort(model, x, simplify_graph=simplify_graph)


# ---------------------------------------------------------------------------- pooling
MAXPOOL_CASES = {
    "k2s2": ((2, 6, 6), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    "k3s1p1": ((2, 5, 5), {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
    "k2_default_stride": ((2, 4, 5), {"kernel_shape": [2, 2]}),
    "k3x2s2x1": ((1, 7, 6), {"kernel_shape": [3, 2], "strides": [2, 1]}),
    "planet_asym": ((3, 13, 13), {"kernel_shape": [4, 4], "strides": [3, 3],
                                  "pads": [0, 0, 1, 1]}),
    "asym_pads": ((2, 6, 7), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 0, 0, 2]}),
    "dilation2": ((2, 7, 7), {"kernel_shape": [2, 2], "dilations": [2, 2]}),
    "ceil_mode": ((2, 7, 7), {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}),
    "ceil_mode_k3s2": ((1, 6, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    "ceil_mode_pads": ((1, 5, 5), {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1,
                                   "pads": [1, 1, 1, 1]}),
    "same_upper": ((2, 7, 6), {"kernel_shape": [3, 3], "strides": [2, 2],
                               "auto_pad": "SAME_UPPER"}),
    "same_lower": ((2, 6, 7), {"kernel_shape": [2, 2], "strides": [2, 2],
                               "auto_pad": "SAME_LOWER"}),
}


# dilations and ceil_mode exist from MaxPool-10 on
@pytest.mark.parametrize("simplify_graph,opset,case", pairwise(
    simplify_graph=[True, False], opset=[8, 10, 11, 12, 13], case=list(MAXPOOL_CASES),
    valid=lambda c: c["opset"] >= 10 or not {"dilations", "ceil_mode"} & set(
        MAXPOOL_CASES[c["case"]][1])))
def test_maxpool(rng, simplify_graph, opset, case):
    in_shape, attrs = MAXPOOL_CASES[case]
    model = make_onnx([node("MaxPool", ["x"], "y", **attrs)], {},
                      [("x", ("N", *in_shape))], [("y", None)], opset)
    assert_matches_ort(model, _x(rng, *in_shape), simplify_graph=simplify_graph)


AVGPOOL_CASES = {
    "k2s2": ((2, 6, 6), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    "k3s1p1": ((2, 5, 5), {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
    "asym_pads": ((2, 6, 7), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 0, 0, 2]}),
    "k3x2s2x1": ((1, 7, 6), {"kernel_shape": [3, 2], "strides": [2, 1]}),
    "ceil_mode": ((2, 7, 7), {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}),
    "ceil_mode_pads": ((1, 6, 6), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1,
                                   "pads": [1, 1, 1, 1]}),
    "same_upper": ((2, 7, 6), {"kernel_shape": [3, 3], "strides": [2, 2],
                               "auto_pad": "SAME_UPPER"}),
    "same_lower": ((2, 6, 7), {"kernel_shape": [2, 2], "strides": [1, 1],
                               "auto_pad": "SAME_LOWER"}),
}


# ceil_mode exists from AveragePool-10 on
@pytest.mark.parametrize("simplify_graph,opset,count_include_pad,case", pairwise(
    simplify_graph=[True, False], opset=[7, 10, 11, 19], count_include_pad=[0, 1],
    case=list(AVGPOOL_CASES),
    valid=lambda c: c["opset"] >= 10 or "ceil_mode" not in AVGPOOL_CASES[c["case"]][1]))
def test_average_pool(rng, simplify_graph, opset, count_include_pad, case):
    in_shape, attrs = AVGPOOL_CASES[case]
    model = make_onnx([node("AveragePool", ["x"], "y", count_include_pad=count_include_pad,
                            **attrs)], {}, [("x", ("N", *in_shape))], [("y", None)], opset)
    assert_matches_ort(model, _x(rng, *in_shape), simplify_graph=simplify_graph)


def test_maxpool_ceil_mode_window_starting_in_padding(rng):
    """5x5, kernel 2, stride 2, pads 1, ceil_mode: onnxruntime (like torch) gives 3x3, because a
    4th window would start in the bottom/right padding. milpverify makes it 4x4 (BUG in
    `ir.ops.conv_output_hw`: with ceil_mode, drop the last window when
    `(out - 1) * stride >= in + pad_begin`)."""
    model = make_onnx([node("MaxPool", ["x"], "y", kernel_shape=[2, 2], strides=[2, 2],
                            pads=[1, 1, 1, 1], ceil_mode=1)], {}, [("x", ("N", 1, 5, 5))],
                      [("y", None)], 13)
    from milpverify import load_onnx
    assert load_onnx(model).op(load_onnx(model).output).shape == (1, 3, 3)
    assert_matches_ort(model, _x(rng, 1, 5, 5), simplify_graph=False)


def test_average_pool_ceil_mode_count_include_pad(rng):
    """7x7, kernel 2, stride 2, ceil_mode, count_include_pad=1: the last row/column windows
    hang over the input *and* its padding; onnxruntime (like torch) divides by the cells
    inside the padded input (here 2 or 1), milpverify by the full kernel (4). BUG in
    `ir.ops.AvgPool._build_map`: the divisor must count the window cells with
    `-pad_top <= iy < H + pad_bottom` and `-pad_left <= ix < W + pad_right`."""
    model = make_onnx([node("AveragePool", ["x"], "y", kernel_shape=[2, 2], strides=[2, 2],
                            ceil_mode=1, count_include_pad=1)], {}, [("x", ("N", 1, 7, 7))],
                      [("y", None)], 13)
    x = np.ones((1, 1, 7, 7), dtype=np.float32)
    from milpverify import load_onnx
    np.testing.assert_array_equal(load_onnx(model).forward(x), np.ones((1, 16)))
    assert_matches_ort(model, _x(rng, 1, 7, 7), simplify_graph=False)


@SIMPLIFY
@pytest.mark.parametrize("in_shape", [(3, 4, 5), (2, 1, 1), (1, 7, 3)])
def test_global_average_pool(rng, simplify_graph, in_shape):
    model = make_onnx([node("GlobalAveragePool", ["x"], "y")], {},
                      [("x", ("N", *in_shape))], [("y", None)], 13)
    assert_matches_ort(model, _x(rng, *in_shape), simplify_graph=simplify_graph)


# ---------------------------------------------------------------------------- BatchNorm
@pytest.mark.parametrize("simplify_graph,opset,in_shape,epsilon,after", pairwise(
    simplify_graph=[True, False], opset=[7, 9, 14, 15], in_shape=[(3, 4, 4), (5,)],
    epsilon=[1e-5, 0.1], after=["none", "conv", "gemm"],
    valid=lambda c: {"conv": 3, "gemm": 1}.get(c["after"], len(c["in_shape"]))
    == len(c["in_shape"])))
def test_batch_normalization(rng, simplify_graph, opset, in_shape, epsilon, after):
    c = in_shape[0]
    inits = {"scale": _w(rng, c), "bias": _w(rng, c), "mean": _w(rng, c),
             "var": (np.abs(_w(rng, c)) + 0.1).astype(np.float32)}
    nodes = []
    src = "x"
    if after == "conv":
        nodes.append(node("Conv", ["x", "W", "B"], "h", pads=[1, 1, 1, 1]))
        inits |= {"W": _w(rng, c, c, 3, 3), "B": _w(rng, c)}
        src = "h"
    elif after == "gemm":
        nodes.append(node("Gemm", ["x", "W", "B"], "h", transB=1))
        inits |= {"W": _w(rng, c, c), "B": _w(rng, c)}
        src = "h"
    nodes.append(node("BatchNormalization", [src, "scale", "bias", "mean", "var"], "bn",
                      epsilon=epsilon))
    nodes.append(node("Relu", ["bn"], "y"))
    model = make_onnx(nodes, inits, [("x", ("N", *in_shape))], [("y", None)], opset)
    assert_matches_ort(model, _x(rng, *in_shape), simplify_graph=simplify_graph)


@SIMPLIFY
def test_batch_normalization_before_gemm(rng, simplify_graph):
    c = 6
    inits = {"scale": _w(rng, c), "bias": _w(rng, c), "mean": _w(rng, c),
             "var": (np.abs(_w(rng, c)) + 0.1).astype(np.float32),
             "W": _w(rng, 4, c), "B": _w(rng, 4)}
    nodes = [node("BatchNormalization", ["x", "scale", "bias", "mean", "var"], "bn"),
             node("Gemm", ["bn", "W", "B"], "y", transB=1)]
    model = make_onnx(nodes, inits, [("x", ("N", c))], [("y", None)], 15)
    assert_matches_ort(model, _x(rng, c), simplify_graph=simplify_graph)


# ---------------------------------------------------------------------------- shape ops
@SIMPLIFY
@pytest.mark.parametrize("opset", [9, 11, 13])
@pytest.mark.parametrize("axis", [1, -3])
def test_flatten(rng, simplify_graph, opset, axis):
    if axis < 0 and opset < 11:
        pytest.skip("negative axis exists from Flatten-11 on")
    nodes = [node("Flatten", ["x"], "f", axis=axis),
             node("Gemm", ["f", "W", "B"], "y", transB=1)]
    model = make_onnx(nodes, {"W": _w(rng, 4, 24), "B": _w(rng, 4)}, [("x", ("N", 2, 3, 4))],
                      [("y", None)],
                      opset)
    assert_matches_ort(model, _x(rng, 2, 3, 4), simplify_graph=simplify_graph)


@SIMPLIFY
@pytest.mark.parametrize("opset", [6, 13, 14])
@pytest.mark.parametrize("target", [[0, -1], [-1, 24], [0, 4, -1], [0, 2, 12], [0, 0, -1],
                                    [0, 0, 12, 1]], ids=str)
def test_reshape(rng, simplify_graph, opset, target):
    model = make_onnx([node("Reshape", ["x", "shape"], "r"), node("Relu", ["r"], "y")],
                      {"shape": np.array(target, dtype=np.int64)},
                      [("x", ("N", 2, 3, 4))], [("y", None)], opset)
    assert_matches_ort(model, _x(rng, 2, 3, 4), simplify_graph=simplify_graph)


@SIMPLIFY
@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("perm", [[0, 2, 3, 1], [0, 3, 1, 2], [0, 1, 3, 2], [0, 1, 2, 3]], ids=str)
@pytest.mark.parametrize("then_gemm", [False, True], ids=["alone", "then_gemm"])
def test_transpose(rng, simplify_graph, opset, perm, then_gemm):
    nodes = [node("Transpose", ["x"], "t", perm=perm)]
    inits = {}
    if then_gemm:
        nodes += [node("Flatten", ["t"], "f"), node("Gemm", ["f", "W", "B"], "y", transB=1)]
        inits = {"W": _w(rng, 5, 24), "B": _w(rng, 5)}
    else:
        nodes.append(node("Relu", ["t"], "y"))
    model = make_onnx(nodes, inits, [("x", ("N", 2, 3, 4))], [("y", None)], opset)
    assert_matches_ort(model, _x(rng, 2, 3, 4), simplify_graph=simplify_graph)


@SIMPLIFY
@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("axes", [[1, 3], [-1, 1], [3], None], ids=str)
def test_squeeze(rng, simplify_graph, opset, axes):
    if axes is None:
        nodes = [node("Squeeze", ["x"], "s")]
        inits = {}
    elif opset >= 13:
        nodes = [node("Squeeze", ["x", "axes"], "s")]
        inits = {"axes": np.array(axes, dtype=np.int64)}
    else:
        nodes = [node("Squeeze", ["x"], "s", axes=axes)]
        inits = {}
    nodes.append(node("Relu", ["s"], "y"))
    model = make_onnx(nodes, inits, [("x", ("N", 1, 4, 1))], [("y", None)], opset)
    assert_matches_ort(model, _x(rng, 1, 4, 1), simplify_graph=simplify_graph)


@SIMPLIFY
@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("axes", [[1], [-1], [1, 3], [2]], ids=str)
def test_unsqueeze(rng, simplify_graph, opset, axes):
    if opset >= 13:
        nodes = [node("Unsqueeze", ["x", "axes"], "u")]
        inits = {"axes": np.array(axes, dtype=np.int64)}
    else:
        nodes = [node("Unsqueeze", ["x"], "u", axes=axes)]
        inits = {}
    nodes.append(node("Relu", ["u"], "y"))
    model = make_onnx(nodes, inits, [("x", ("N", 3, 4))], [("y", None)], opset)
    assert_matches_ort(model, _x(rng, 3, 4), simplify_graph=simplify_graph)


@SIMPLIFY
@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("axis", [1, 3, -1, 2])
def test_concat(rng, simplify_graph, opset, axis):
    """x -> Relu and x -> Mul(c) concatenated along channels / rows / the last axis."""
    nodes = [node("Relu", ["x"], "a"), node("Mul", ["x", "c"], "b"),
             node("Concat", ["a", "b", "x"], "y", axis=axis)]
    model = make_onnx(nodes, {"c": _w(rng, 2, 1, 1)}, [("x", ("N", 2, 3, 4))], [("y", None)],
                      opset)
    assert_matches_ort(model, _x(rng, 2, 3, 4), simplify_graph=simplify_graph)


@SIMPLIFY
def test_concat_then_gemm(rng, simplify_graph):
    nodes = [node("Gemm", ["x", "W1"], "a", transB=1), node("Relu", ["x"], "b"),
             node("Concat", ["a", "b"], "c", axis=1), node("Gemm", ["c", "W2", "B2"], "y",
                                                            transB=1)]
    inits = {"W1": _w(rng, 3, 5), "W2": _w(rng, 4, 8), "B2": _w(rng, 4)}
    model = make_onnx(nodes, inits, [("x", ("N", 5))], [("y", None)], 13)
    assert_matches_ort(model, _x(rng, 5), simplify_graph=simplify_graph)


# ---------------------------------------------------------------------------- aliases, constants
@SIMPLIFY
@pytest.mark.parametrize("opset", [11, 13, 16])
def test_identity(rng, simplify_graph, opset):
    nodes = [node("Identity", ["x"], "i"), node("Relu", ["i"], "r"), node("Identity", ["r"], "y")]
    model = make_onnx(nodes, {}, [("x", ("N", 2, 3))], [("y", None)], opset)
    assert_matches_ort(model, _x(rng, 2, 3), simplify_graph=simplify_graph)


@SIMPLIFY
@pytest.mark.parametrize("opset", [7, 10, 12, 13])
def test_dropout(rng, simplify_graph, opset):
    if opset >= 12:
        nodes = [node("Dropout", ["x", "ratio", "training"], "d")]
        inits = {"ratio": np.array(0.3, dtype=np.float32), "training": np.array(False)}
    else:
        nodes = [node("Dropout", ["x"], "d", ratio=0.3)]
        inits = {}
    nodes += [node("Gemm", ["d", "W", "B"], "y", transB=1)]
    inits |= {"W": _w(rng, 3, 5), "B": _w(rng, 3)}
    if opset >= 12:  # the boolean initializer must stay a bool
        from onnx import numpy_helper
        model = make_onnx(nodes, {k: v for k, v in inits.items() if k != "training"},
                          [("x", ("N", 5))], [("y", None)], opset, check=False)
        model.graph.initializer.append(numpy_helper.from_array(np.array(False), "training"))
    else:
        model = make_onnx(nodes, inits, [("x", ("N", 5))], [("y", None)], opset)
    assert_matches_ort(model, _x(rng, 5), simplify_graph=simplify_graph)


@SIMPLIFY
@pytest.mark.parametrize("opset", [11, 13])
def test_constant_nodes_feed_gemm_and_add(rng, simplify_graph, opset):
    from onnx import numpy_helper
    w, c = _w(rng, 4, 3), _w(rng, 3)
    nodes = [node("Constant", [], "W", value=numpy_helper.from_array(w, "W")),
             node("Constant", [], "c", value=numpy_helper.from_array(c, "c")),
             node("Constant", [], "s", value_float=2.5) if opset >= 12 else
             node("Constant", [], "s", value=numpy_helper.from_array(np.float32(2.5), "s")),
             node("Gemm", ["x", "W"], "h"), node("Add", ["h", "c"], "a"),
             node("Mul", ["s", "a"], "y")]
    model = make_onnx(nodes, {}, [("x", ("N", 4))], [("y", None)], opset)
    assert_matches_ort(model, _x(rng, 4), simplify_graph=simplify_graph)


@SIMPLIFY
@pytest.mark.parametrize("opset", [11, 13])
def test_torch_flatten_pattern(rng, simplify_graph, opset):
    """Shape -> Gather(0) -> Unsqueeze -> Concat(., [-1]) -> Reshape: torch's x.view(x.size(0), -1).

    BUG in `frontends/onnx.py`: `_squeeze_like` and `_concat` demand runtime tensors, so the
    Unsqueeze/Concat of *constants* (shape arithmetic) is reported unsupported. Fix: in both
    converters, when no argument is a `Tensor`, return `_fold_constant(ctx, node, attrs, args)`.
    """
    unsq = (node("Unsqueeze", ["g", "axes0"], "u") if opset >= 13
            else node("Unsqueeze", ["g"], "u", axes=[0]))
    nodes = [node("Conv", ["x", "W"], "c"), node("Relu", ["c"], "r"),
             node("Shape", ["r"], "s"), node("Gather", ["s", "idx"], "g", axis=0), unsq,
             node("Concat", ["u", "minus1"], "shape", axis=0), node("Reshape", ["r", "shape"], "f"),
             node("Gemm", ["f", "W2", "B2"], "y", transB=1)]
    inits = {"W": _w(rng, 2, 1, 2, 2), "idx": np.array(0, dtype=np.int64),
             "minus1": np.array([-1], dtype=np.int64), "W2": _w(rng, 3, 2 * 3 * 3),
             "B2": _w(rng, 3)}
    if opset >= 13:
        inits["axes0"] = np.array([0], dtype=np.int64)
    model = make_onnx(nodes, inits, [("x", ("N", 1, 4, 4))], [("y", None)], opset)
    assert_matches_ort(model, _x(rng, 1, 4, 4), simplify_graph=simplify_graph)


@SIMPLIFY
def test_fixed_batch_one_input(rng, simplify_graph):
    """A model whose batch axis is fixed to 1 (as in most shared nets) run sample by sample."""
    nodes = [node("Flatten", ["x"], "f"), node("Gemm", ["f", "W", "B"], "y", transB=1)]
    model = make_onnx(nodes, {"W": _w(rng, 3, 6), "B": _w(rng, 3)},
                      [("x", (1, 1, 2, 3))], [("y", None)], 13)
    from helpers import run_ort

    from milpverify import load_onnx
    x = _x(rng, 1, 2, 3)
    expected = run_ort(model, x, per_sample_shape=(1, 1, 2, 3))
    got = load_onnx(model, simplify_graph=simplify_graph).forward(x.astype(np.float64))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
