"""Bad models and bad inputs: each raises one clear milpverify error (asserted with `match`)."""

from __future__ import annotations

import gzip
import re

import numpy as np
import pytest
from helpers import make_onnx, node

from milpverify import (
    InvalidInputError,
    InvalidModelError,
    MilpVerifyError,
    UnsupportedModelError,
    load_onnx,
)
from milpverify.frontends.onnx import supported_ops


def _gemm_model(rng, **attrs):
    return make_onnx([node("Gemm", ["x", "W", "B"], "y", **attrs)],
                     {"W": rng.standard_normal((4, 3)), "B": rng.standard_normal(3)},
                     [("x", ("N", 4))], [("y", None)], 13)


# ---------------------------------------------------------------------------- files
def test_missing_file(tmp_path):
    with pytest.raises(InvalidInputError, match=r"ONNX file not found: .*nope\.onnx"):
        load_onnx(tmp_path / "nope.onnx")


def test_directory_is_not_a_file(tmp_path):
    with pytest.raises(InvalidInputError, match="not found"):
        load_onnx(tmp_path)


def test_wrong_source_type():
    with pytest.raises(InvalidInputError, match="expects a path or an onnx.ModelProto; got int"):
        load_onnx(123)


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.02])
def test_truncated_file(tmp_path, rng, keep):
    data = _gemm_model(rng).SerializeToString()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(InvalidModelError, match=r"truncated\.onnx"):
        load_onnx(path)


@pytest.mark.parametrize("content", [b"", b"hello, this is not ONNX\n", bytes(range(256)) * 4],
                         ids=["empty", "text", "binary"])
def test_garbled_file(tmp_path, content):
    path = tmp_path / "garbled.onnx"
    path.write_bytes(content)
    with pytest.raises(InvalidModelError,
                       match=r"garbled\.onnx.*(not a readable ONNX|empty graph)"):
        load_onnx(path)


def test_garbled_gzip(tmp_path, rng):
    data = gzip.compress(_gemm_model(rng).SerializeToString())
    path = tmp_path / "model.onnx.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidModelError, match="not a readable ONNX model"):
        load_onnx(path)


def test_gzip_model_loads(tmp_path, rng):
    model = _gemm_model(rng)
    path = tmp_path / "model.onnx.gz"
    path.write_bytes(gzip.compress(model.SerializeToString()))
    x = rng.standard_normal((2, 4))
    np.testing.assert_allclose(load_onnx(path).forward(x), load_onnx(model).forward(x))


# ---------------------------------------------------------------------------- unsupported ops
def test_two_unsupported_nodes_are_both_named(rng):
    hidden = 3
    nodes = [node("Sigmoid", ["x"], "act1"),
             node("Unsqueeze", ["act1", "axes"], "seq"),
             node("LSTM", ["seq", "W", "R"], ["lstm_y"], name="lstm1", hidden_size=hidden),
             node("Flatten", ["lstm_y"], "y")]
    inits = {"axes": np.array([0]), "W": rng.standard_normal((1, 4 * hidden, 4)),
             "R": rng.standard_normal((1, 4 * hidden, hidden))}
    model = make_onnx(nodes, inits, [("x", ("N", 4))], [("y", ("N", 3))], 13, check=False)
    with pytest.raises(UnsupportedModelError) as info:
        load_onnx(model)
    message = str(info.value)
    assert "2 nodes" in message
    assert "'act1' (Sigmoid, opset 13)" in message
    assert "'lstm1' (LSTM, opset 13)" in message
    assert "Supported ONNX ops: " in message
    for op in ("Conv", "Gemm", "MaxPool", "Relu"):
        assert op in message.split("Supported ONNX ops: ")[1]
    assert "Sigmoid" not in supported_ops() and "LSTM" not in supported_ops()
    # The error is also the builtin it stands for.
    assert isinstance(info.value, NotImplementedError)
    assert isinstance(info.value, MilpVerifyError)


def test_single_unsupported_node(rng):
    model = make_onnx([node("Sigmoid", ["x"], "act")], {}, [("x", ("N", 4))], [("y", None)], 13)
    model.graph.output[0].name = "act"
    with pytest.raises(UnsupportedModelError,
                       match=r"^1 node in ModelProto cannot be encoded: "
                             r"'act' \(Sigmoid, opset 13\)"):
        load_onnx(model)


def test_custom_domain_is_unsupported():
    model = make_onnx([node("Relu", ["x"], "y", domain="com.example")], {},
                      [("x", ("N", 4))], [("y", ("N", 4))], 13, check=False)
    model.opset_import.append(__import__("onnx").helper.make_opsetid("com.example", 1))
    with pytest.raises(UnsupportedModelError, match=r"'y' \(Relu, opset 13\)"):
        load_onnx(model)


def test_gemm_trans_a(rng):
    model = make_onnx([node("Gemm", ["x", "W"], "y", transA=1)], {"W": rng.standard_normal((4, 3))},
                      [("x", ("N", 4))], [("y", None)], 13, check=False)
    with pytest.raises(UnsupportedModelError, match=r"'y' \(Gemm, opset 13\): transA=1 is not "
                                                    r"supported; only transA=0"):
        load_onnx(model)


def test_mul_of_two_tensors():
    model = make_onnx([node("Relu", ["x"], "r"), node("Mul", ["x", "r"], "y")], {},
                      [("x", ("N", 4))], [("y", None)], 13)
    with pytest.raises(UnsupportedModelError,
                       match=r"'y' \(Mul, opset 13\): Mul of two runtime tensors is not piecewise "
                             "linear"):
        load_onnx(model)


def test_constant_divided_by_tensor(rng):
    model = make_onnx([node("Div", ["c", "x"], "y")], {"c": rng.standard_normal(4)},
                      [("x", ("N", 4))], [("y", None)], 13)
    with pytest.raises(UnsupportedModelError, match=r"constant / tensor is not piecewise linear"):
        load_onnx(model)


def test_division_by_zero_constant():
    model = make_onnx([node("Div", ["x", "c"], "y")], {"c": np.array([1.0, 0.0, 2.0, 3.0])},
                      [("x", ("N", 4))], [("y", None)], 13)
    with pytest.raises(UnsupportedModelError, match="division by a constant containing 0"):
        load_onnx(model)


def test_add_of_tensors_with_different_shapes():
    model = make_onnx([node("Flatten", ["x"], "f"), node("Add", ["x", "f"], "y")], {},
                      [("x", ("N", 2, 2))], [("y", None)], 13, check=False)
    with pytest.raises(UnsupportedModelError, match=r"shapes \[2, 2\] and \[4\] differ"):
        load_onnx(model)


def test_constant_broadcasting_the_tensor_larger(rng):
    model = make_onnx([node("Add", ["x", "c"], "y")], {"c": rng.standard_normal((3, 4))},
                      [("x", ("N", 1, 4))], [("y", None)], 13)
    with pytest.raises(UnsupportedModelError, match=r"would broadcast the tensor"):
        load_onnx(model)


@pytest.mark.parametrize("build,pattern", [
    (lambda: make_onnx([node("Transpose", ["x"], "y", perm=[1, 0])], {}, [("x", ("N", 4))],
                       [("y", None)], 13), r"perm=\[1, 0\] moves the batch axis"),
    (lambda: make_onnx([node("Flatten", ["x"], "y", axis=2)], {}, [("x", ("N", 2, 3))],
                       [("y", None)], 13), r"axis=2 is not supported"),
    (lambda: make_onnx([node("Conv", ["x", "W"], "y")], {"W": np.ones((2, 1, 3))},
                       [("x", ("N", 1, 8))], [("y", None)], 13), r"only 2-D"),
    (lambda: make_onnx([node("MaxPool", ["x"], ["y", "idx"], kernel_shape=[2, 2])], {},
                       [("x", ("N", 1, 4, 4))], [("y", None)], 13, check=False),
     r"Indices output is not supported"),
    (lambda: make_onnx([node("BatchNormalization", ["x", "s", "b", "m", "v"], "y",
                             training_mode=1)],
                       {k: np.ones(2) for k in "sbmv"}, [("x", ("N", 2, 2, 2))], [("y", None)],
                       15, check=False), r"training mode is not supported"),
    (lambda: make_onnx([node("Unsqueeze", ["x", "axes"], "y")], {"axes": np.array([0])},
                       [("x", ("N", 4))], [("y", None)], 13),
     r"unsqueezing before the batch axis"),
], ids=["transpose_batch", "flatten_axis2", "conv1d", "maxpool_indices", "bn_training",
        "unsqueeze_batch"])
def test_unsupported_attributes(build, pattern):
    with pytest.raises(UnsupportedModelError, match=pattern):
        load_onnx(build())


# ---------------------------------------------------------------------------- malformed models
@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("where", ["weight", "bias"])
def test_non_finite_weights(rng, bad, where):
    w, b = rng.standard_normal((3, 4)), rng.standard_normal(3)
    (w if where == "weight" else b).flat[1] = bad
    model = make_onnx([node("Gemm", ["x", "W", "B"], "y", transB=1)], {"W": w, "B": b},
                      [("x", ("N", 4))], [("y", None)], 13)
    with pytest.raises(InvalidModelError, match=r"'y' \(affine\) has non-finite weights"):
        load_onnx(model)


def test_non_finite_conv_weights(rng):
    w = rng.standard_normal((2, 1, 3, 3))
    w[1, 0, 2, 2] = np.nan
    model = make_onnx([node("Conv", ["x", "W"], "y")], {"W": w}, [("x", ("N", 1, 5, 5))],
                      [("y", None)], 13)
    with pytest.raises(InvalidModelError, match=r"non-finite weights"):
        load_onnx(model, simplify_graph=False)


def test_two_inputs():
    model = make_onnx([node("Add", ["a", "b"], "y")], {}, [("a", ("N", 4)), ("b", ("N", 4))],
                      [("y", None)], 13)
    with pytest.raises(InvalidModelError, match=r"2 runtime inputs \(\['a', 'b'\]\); only "
                                                r"single-input networks are supported"):
        load_onnx(model)


def test_two_outputs():
    model = make_onnx([node("Relu", ["x"], "y"), node("Relu", ["y"], "z")], {},
                      [("x", ("N", 4))], [("y", None), ("z", None)], 13)
    with pytest.raises(InvalidModelError, match=r"2 outputs \(\['y', 'z'\]\); exactly one"):
        load_onnx(model)


def test_symbolic_feature_axis():
    model = make_onnx([node("Relu", ["x"], "y")], {}, [("x", ("N", "F"))], [("y", None)], 13)
    with pytest.raises(InvalidModelError, match=r"fixed positive sizes for every other axis"):
        load_onnx(model)


def test_output_independent_of_input(rng):
    model = make_onnx([node("Relu", ["x"], "r"), node("Identity", ["c"], "y")],
                      {"c": rng.standard_normal(3)}, [("x", ("N", 4))], [("y", None)], 13)
    with pytest.raises(InvalidModelError, match=r"does not depend on its input"):
        load_onnx(model)


# ---------------------------------------------------------------------------- forward inputs
@pytest.mark.parametrize("shape", [(3,), (5,), (2, 3), (1, 2, 2, 2), (2, 5), (2, 2, 3)])
def test_forward_wrong_x_shape(rng, shape):
    net = load_onnx(_gemm_model(rng))
    with pytest.raises(InvalidInputError, match=re.escape("network input 'x' expects 4")
                       + "|" + re.escape("[n, 4]")):
        net.forward(rng.standard_normal(shape))


def test_forward_nan_in_x(rng):
    net = load_onnx(_gemm_model(rng))
    x = rng.standard_normal((2, 4))
    x[1, 2] = np.nan
    with pytest.raises(InvalidInputError, match="`x` contains NaN"):
        net.forward(x)


def test_forward_empty_x(rng):
    net = load_onnx(_gemm_model(rng))
    with pytest.raises(InvalidInputError, match="has 0 elements"):
        net.forward(np.zeros((0, 4)))
