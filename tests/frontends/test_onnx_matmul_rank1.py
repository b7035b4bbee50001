"""Rank-1 inputs (one sample `[n]`, no batch axis) and MatMul/Gemm with the weight on either side.

Every model is compared with onnxruntime sample by sample; a weight-first product that would
contract over a batch axis is one clear error.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import make_onnx, node, run_ort

from milpverify import UnsupportedModelError, load_onnx

SIMPLIFY = pytest.mark.parametrize("simplify_graph", [True, False], ids=["simplified", "raw"])


def _w(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def _check(model, x, simplify_graph=True, per_sample=None):
    """forward == onnxruntime, fed one sample at a time when the model has no batch axis."""
    expected = run_ort(model, x, per_sample_shape=per_sample)
    got = load_onnx(model, simplify_graph=simplify_graph).forward(x.astype(np.float64))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * max(1, abs(expected).max()))


@SIMPLIFY
def test_rank1_mlp_weight_first_and_last(rng, simplify_graph):
    """x[6] -> W1 @ x + b1 -> Relu -> h @ W2 -> + b2 (vector semantics on both sides)."""
    nodes = [node("MatMul", ["W1", "x"], "h"), node("Add", ["h", "b1"], "a"),
             node("Relu", ["a"], "r"), node("MatMul", ["r", "W2"], "m"),
             node("Add", ["m", "b2"], "y")]
    model = make_onnx(nodes, {"W1": _w(rng, 5, 6), "b1": _w(rng, 5), "W2": _w(rng, 5, 3),
                              "b2": _w(rng, 3)}, [("x", (6,))], [("y", None)])
    net = load_onnx(model, simplify_graph=simplify_graph)
    assert net.input_shape == (6,)
    _check(model, _w(rng, 4, 6), simplify_graph, per_sample=[6])


@pytest.mark.parametrize("case", ["unsqueeze-gemm-weight-first", "reshape-gemm-transB",
                                  "gemm-weight-first-transB", "flatten-transpose-concat"])
def test_rank1_shape_ops_and_gemm(rng, case):
    inits = {"W": _w(rng, 4, 6), "C": _w(rng, 4, 1)}
    if case == "unsqueeze-gemm-weight-first":           # (6,1); W (4,6) @ x + C (4,1)
        inits["ax"] = np.array([1])
        nodes = [node("Unsqueeze", ["x", "ax"], "u"), node("Gemm", ["W", "u", "C"], "g",
                                                           alpha=0.5, beta=2.0),
                 node("Squeeze", ["g"], "y")]
    elif case == "reshape-gemm-transB":                  # (1,6) @ W^T -> (1,4) -> [4]
        inits.update(s1=np.array([1, 6]), s2=np.array([-1]), C=_w(rng, 4))
        nodes = [node("Reshape", ["x", "s1"], "r"), node("Gemm", ["r", "W", "C"], "g", transB=1),
                 node("Reshape", ["g", "s2"], "y")]
    elif case == "gemm-weight-first-transB":             # W (4,6) @ (x as (1,6))^T -> (4,1)
        inits["s1"] = np.array([1, 6])
        nodes = [node("Reshape", ["x", "s1"], "r"), node("Gemm", ["W", "r", "C"], "y", transB=1)]
    else:                                                # Flatten [6] -> (1,6), Transpose (6,1)
        nodes = [node("Flatten", ["x"], "f", axis=0), node("Transpose", ["f"], "t"),
                 node("Concat", ["t", "t"], "c", axis=0), node("MatMul", ["c", "Wt"], "y")]
        inits = {"Wt": _w(rng, 1, 3)}
    model = make_onnx(nodes, inits, [("x", (6,))], [("y", None)])
    _check(model, _w(rng, 3, 6), per_sample=[6])


@SIMPLIFY
@pytest.mark.parametrize("case", ["weight-first-(k,1)", "batched-matrices", "vector-weight"])
def test_batched_matmul_shapes(rng, simplify_graph, case):
    """With a batch axis: W @ x for per-sample (k, p), x @ W for (r, k), x @ v (1-D weight)."""
    if case == "weight-first-(k,1)":       # the mnist_fc layout [N, 784, 1], weight first
        model = make_onnx([node("MatMul", ["W", "x"], "y")], {"W": _w(rng, 4, 6)},
                          [("x", ("N", 6, 1))], [("y", None)])
        x = _w(rng, 3, 6, 1)
    elif case == "batched-matrices":
        model = make_onnx([node("MatMul", ["x", "W"], "y")], {"W": _w(rng, 6, 4)},
                          [("x", ("N", 3, 6))], [("y", None)])
        x = _w(rng, 3, 3, 6)
    else:
        model = make_onnx([node("MatMul", ["x", "v"], "y")], {"v": _w(rng, 6)},
                          [("x", ("N", 2, 6))], [("y", None)])
        x = _w(rng, 3, 2, 6)
    expected = run_ort(model, x)
    got = load_onnx(model, simplify_graph=simplify_graph).forward(x.astype(np.float64))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", ["MatMul", "Gemm"])
def test_weight_first_over_the_batch_axis_is_named(rng, op):
    """`W @ x` with x of (batch, k) contracts over the batch axis: rejected, not mis-read."""
    model = make_onnx([node(op, ["W", "x"], "y")], {"W": _w(rng, 4, 4)}, [("x", ("N", 4))],
                      [("y", None)], check=False)
    with pytest.raises(UnsupportedModelError,
                       match=rf"'y' \({op}, opset 13\):.*(contracts over the batch axis|mixes)"):
        load_onnx(model)


def test_rank1_input_must_be_fixed():
    model = make_onnx([node("Relu", ["x"], "y")], {}, [("x", ("n",))], [("y", None)])
    with pytest.raises(Exception, match=r"one fixed axis \[n\] without a batch"):
        load_onnx(model)


def test_dubinsrejoin_without_batch_axis(shared_data):
    """The tf2onnx MatMul+Add control net, re-declared with a rank-1 input [8] (same weights)."""
    path = shared_data / "vnncomp/rl_benchmarks_2022/onnx/dubinsrejoin.onnx"
    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    del dims[0]
    for out in model.graph.output:
        del out.type.tensor_type.shape.dim[0]
    for info in list(model.graph.value_info):
        model.graph.value_info.remove(info)
    x = np.random.default_rng(0).uniform(-1, 1, (5, 8)).astype(np.float32)
    net = load_onnx(model)
    assert net.input_shape == (8,)
    expected = run_ort(model, x, per_sample_shape=[8])
    np.testing.assert_allclose(net.forward(x.astype(np.float64)), expected, rtol=1e-5, atol=1e-5)
    batched = load_onnx(path).forward(x.astype(np.float64))
    np.testing.assert_allclose(net.forward(x.astype(np.float64)), batched, rtol=1e-12)
