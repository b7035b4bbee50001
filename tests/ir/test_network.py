"""`Network`: validation errors, topological order, forward vs hand arithmetic, batching."""

from __future__ import annotations

import numpy as np
import pytest

from milpverify import InvalidInputError, InvalidModelError
from milpverify.ir import ops
from milpverify.ir.network import FORWARD_RULES, Network


def _affine(inputs, w, b=None):
    w = np.asarray(w, dtype=np.float64)
    b = np.zeros(w.shape[0]) if b is None else np.asarray(b, dtype=np.float64)
    return ops.Affine(tuple(inputs), (w.shape[0],), w, b)


# ---------------------------------------------------------------------------- forward by hand
def test_tiny_net_forward_by_hand(tiny_net):
    """The net of conftest's docstring::

        x0 ──┐ W = [[1, -1],     h = W x + b,  b = [0, 1]
             ├─    [2,  1]]  ──> r = relu(h)  ──> y = [1, 1] r + (-1)
        x1 ──┘

    x = (1, 2): h = (-1, 5), r = (0, 5), y = 4;  x = (3, 1): h = (2, 8), r = (2, 8), y = 9.
    """
    y = tiny_net.forward(np.array([[1.0, 2.0], [3.0, 1.0]]))
    np.testing.assert_array_equal(y, [[4.0], [9.0]])
    assert y.dtype == np.float64
    np.testing.assert_array_equal(tiny_net.predict([[1.0, 2.0]]), [0])


def test_tiny_net_forward_all(tiny_net):
    values = tiny_net.forward_all(np.array([[1.0, 2.0], [3.0, 1.0]]))
    assert list(values) == ["x", "h", "r", "y"]
    assert {k: v.shape for k, v in values.items()} == {"x": (2, 2), "h": (2, 2), "r": (2, 2),
                                                       "y": (2, 1)}
    np.testing.assert_array_equal(values["h"], [[-1.0, 5.0], [2.0, 8.0]])
    np.testing.assert_array_equal(values["r"], [[0.0, 5.0], [2.0, 8.0]])


def test_structure_queries(tiny_net):
    assert tiny_net.order == ("x", "h", "r", "y")
    assert tiny_net.input == "x" and tiny_net.output == "y"
    assert tiny_net.input_shape == (2,) and tiny_net.input_size == 2
    assert tiny_net.num_classes == 1
    assert tiny_net.relu_nodes == ["r"]
    assert tiny_net.layer_sizes() == {"x": 2, "h": 2, "r": 2, "y": 1}
    assert tiny_net.num_parameters == 4 + 2 + 2 + 1
    rows = tiny_net.summary()
    assert [r["op"] for r in rows] == ["input", "affine", "relu", "affine"]
    assert rows[1] == {"name": "h", "op": "affine", "shape": [2], "neurons": 2, "parameters": 6,
                       "inputs": ["x"]}
    assert "relu=1" in repr(tiny_net)


def test_residual_forward_all_shapes():
    """A (2, 2, 2) input through a 1x1 conv, relu, residual add, maxpool, flatten, affine::

        x ─> conv(1x1, w=2, b=-1) ─> relu ─┐
        └──────────────────────────────────add ─> maxpool(2x2) ─> permute(flat) ─> affine
    """
    conv = ops.Conv(("x",), (1, 2, 2), (1, 2, 2), np.full((1, 1, 1, 1), 2.0), np.array([-1.0]),
                    (1, 1), (0, 0, 0, 0), (1, 1), 1)
    pool = ops.MaxPool(("s",), (1, 1, 1), (1, 2, 2), (2, 2), (2, 2), (0, 0, 0, 0), (1, 1))
    net = Network([
        ("x", ops.Input((), (1, 2, 2))), ("c", conv), ("r", ops.Relu(("c",), (1, 2, 2))),
        ("s", ops.Add(("r", "x"), (1, 2, 2))), ("p", pool),
        ("f", ops.Permute(("p",), (1,), np.array([0]), 1)),
        ("y", _affine(["f"], [[1.0], [-1.0]], [0.5, 0.0])),
    ], "y")
    x = np.array([[0.0, 1.0, 2.0, -3.0]])
    values = net.forward_all(x)
    assert values["c"].shape == (1, 1, 2, 2) and values["p"].shape == (1, 1, 1, 1)
    # c = 2x - 1 = (-1, 1, 3, -7); r = (0, 1, 3, 0); s = r + x = (0, 2, 5, -3); max = 5
    np.testing.assert_array_equal(values["s"].reshape(-1), [0.0, 2.0, 5.0, -3.0])
    np.testing.assert_array_equal(net.forward(x), [[5.5, -5.0]])
    flat = net.forward_all(x, flat=True)
    assert flat["c"].shape == (1, 4)


def test_add_same_node_twice():
    net = Network([("x", ops.Input((), (3,))), ("y", ops.Add(("x", "x"), (3,)))], "y")
    np.testing.assert_array_equal(net.forward([1.0, -2.0, 3.0]), [[2.0, -4.0, 6.0]])


def test_concat_forward():
    net = Network([("x", ops.Input((), (2,))), ("r", ops.Relu(("x",), (2,))),
                   ("y", ops.Concat(("x", "r"), (4,), np.array([2, 0, 3, 1])))], "y")
    np.testing.assert_array_equal(net.forward([[-1.0, 2.0]]), [[0.0, -1.0, 2.0, 2.0]])


def test_every_op_has_a_forward_rule():
    missing = [op.__name__ for op in ops.ALL_OPS if op is not ops.Input and op not in FORWARD_RULES]
    assert missing == []


# ---------------------------------------------------------------------------- as_batch
@pytest.mark.parametrize("shape,rows", [((1, 2, 3), 1), ((1, 1, 2, 3), 1), ((4, 1, 2, 3), 4),
                                        ((6,), 1), ((4, 6), 4), ((1, 6), 1)],
                         ids=["shape", "1xshape", "nxshape", "flat", "nxsize", "1xsize"])
def test_as_batch_accepts(shape, rows):
    net = Network([("x", ops.Input((), (1, 2, 3))), ("y", ops.Relu(("x",), (1, 2, 3)))], "y")
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    batch = net.as_batch(x)
    assert batch.shape == (rows, 6) and batch.dtype == np.float64
    np.testing.assert_array_equal(batch.reshape(-1), x.reshape(-1))
    assert net.forward(x).shape == (rows, 6)


@pytest.mark.parametrize("x,pattern", [
    (np.zeros(5), r"has 5 elements \(shape \[5\]\) but network input 'x' expects 6 per sample "
                  r"\(shape \[1, 2, 3\]\)"),
    (np.zeros((2, 4, 3)), r"expected a batch of shape \[n, 1, 2, 3\] or \[n, 6\]"),
    (np.zeros((0, 6)), r"has 0 elements"),
    (np.float64(1.0), r"has 1 elements"),
    (np.array([[0.0] * 5 + [np.nan]]), r"`x` contains NaN"),
])
def test_as_batch_rejects(x, pattern):
    net = Network([("x", ops.Input((), (1, 2, 3))), ("y", ops.Relu(("x",), (1, 2, 3)))], "y")
    with pytest.raises(InvalidInputError, match=pattern):
        net.as_batch(x)


# ---------------------------------------------------------------------------- validate()
def test_cycle():
    with pytest.raises(InvalidModelError, match=r"cycle: .*a.*b"):
        Network([("x", ops.Input((), (2,))), ("a", ops.Add(("x", "b"), (2,))),
                 ("b", ops.Relu(("a",), (2,))), ("y", ops.Relu(("b",), (2,)))], "y")


@pytest.mark.parametrize("count", [0, 2])
def test_number_of_inputs(count):
    nodes = [(f"x{i}", ops.Input((), (2,))) for i in range(count)]
    if count == 0:
        nodes.append(("x0", _affine([], np.eye(2))))
    nodes.append(("y", ops.Add(("x0", "x1"), (2,)) if count == 2 else ops.Relu(("x0",), (2,))))
    with pytest.raises(InvalidModelError, match=f"exactly one input; found {count}"):
        Network(nodes, "y")


def test_two_outputs():
    with pytest.raises(InvalidModelError, match=r"nodes without consumers: \['a', 'b'\]"):
        Network([("x", ops.Input((), (2,))), ("a", ops.Relu(("x",), (2,))),
                 ("b", ops.Relu(("x",), (2,)))], "a")


def test_output_not_in_graph():
    with pytest.raises(InvalidModelError, match=r"Output node 'zz' is not in the graph"):
        Network([("x", ops.Input((), (2,))), ("y", ops.Relu(("x",), (2,)))], "zz")


def test_unknown_input_name():
    with pytest.raises(InvalidModelError, match=r"Node 'y' reads 'q', which is not a node"):
        Network([("x", ops.Input((), (2,))), ("y", ops.Relu(("q",), (2,)))], "y")


def test_duplicate_name():
    with pytest.raises(InvalidModelError, match=r"Node name 'x' is used twice"):
        Network([("x", ops.Input((), (2,))), ("x", ops.Relu(("x",), (2,)))], "x")


def test_affine_shape_mismatch():
    with pytest.raises(InvalidModelError,
                       match=r"Node 'y' \(affine\) maps 3 inputs to 2 outputs .* input 'x' has 4 "
                             r"elements"):
        Network([("x", ops.Input((), (4,))), ("y", _affine(["x"], np.ones((2, 3))))], "y")


def test_affine_bias_mismatch():
    with pytest.raises(InvalidModelError, match=r"with 3 biases"):
        Network([("x", ops.Input((), (2,))),
                 ("y", ops.Affine(("x",), (2,), np.ones((2, 2)), np.ones(3)))], "y")


def test_relu_size_mismatch():
    with pytest.raises(InvalidModelError, match=r"'y' \(relu\) has 3 outputs but its input has 2"):
        Network([("x", ops.Input((), (2,))), ("y", ops.Relu(("x",), (3,)))], "y")


def test_add_size_mismatch():
    with pytest.raises(InvalidModelError, match=r"'y' \(add\) adds tensors of 2 and 3 elements"):
        Network([("x", ops.Input((), (2,))), ("a", _affine(["x"], np.ones((3, 2)))),
                 ("y", ops.Add(("x", "a"), (2,)))], "y")


def test_wrong_argument_count():
    with pytest.raises(InvalidModelError, match=r"'y' \(add\) has 1 inputs; expected 2"):
        Network([("x", ops.Input((), (2,))), ("y", ops.Add(("x",), (2,)))], "y")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["weight", "bias"])
def test_non_finite_weight(bad, where):
    w, b = np.ones((2, 2)), np.zeros(2)
    (w if where == "weight" else b)[1] = bad
    with pytest.raises(InvalidModelError, match=r"'y' \(affine\) has non-finite weights"):
        Network([("x", ops.Input((), (2,))), ("y", _affine(["x"], w, b))], "y")


def test_non_finite_scale():
    with pytest.raises(InvalidModelError, match=r"'y' \(scale\) has non-finite"):
        Network([("x", ops.Input((), (2,))),
                 ("y", ops.Scale(("x",), (2,), np.array([1.0, np.nan]), np.zeros(2)))], "y")


def test_unreachable_node():
    with pytest.raises(InvalidModelError, match=r"exactly one input|not reachable"):
        Network([("x", ops.Input((), (2,))), ("c", _affine([], np.ones((2, 0)))),
                 ("y", ops.Add(("x", "c"), (2,)))], "y")


def test_replace_keeps_origin_and_appends_notes(tiny_net):
    other = tiny_net.replace(tiny_net.items(), notes=["hello"])
    assert other.origin is tiny_net.origin
    assert other.notes == [*tiny_net.notes, "hello"]
    np.testing.assert_array_equal(other.forward([[1.0, 2.0]]), tiny_net.forward([[1.0, 2.0]]))
