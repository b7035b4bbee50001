"""Each simplification pass preserves `forward` (to 1e-12) and yields the expected op sequence."""

from __future__ import annotations

import numpy as np
import pytest

from milpverify.ir import ops
from milpverify.ir.network import Network
from milpverify.ir.simplify import simplify


def _kinds(net: Network) -> list[str]:
    return [op.kind for _, op in net.items()]


def _check(net: Network, expected_kinds: list[str], rng: np.random.Generator) -> Network:
    """Simplify, compare op sequences and forward on random inputs; returns the result."""
    simple = simplify(net)
    assert _kinds(simple) == expected_kinds
    x = rng.standard_normal((7, net.input_size))
    np.testing.assert_allclose(simple.forward(x), net.forward(x), rtol=1e-12, atol=1e-12)
    assert simple.input_shape == net.input_shape and simple.num_classes == net.num_classes
    return simple


def _affine(src, w, b):
    return ops.Affine((src,), (w.shape[0],), w, b)


def _conv(src, in_shape, w, b, *, strides=(1, 1), pads=(0, 0, 0, 0), group=1):
    from milpverify.ir.ops import conv_output_hw
    oh, ow = conv_output_hw(in_shape[1:], w.shape[2:], strides, pads, (1, 1))
    return ops.Conv((src,), (w.shape[0], oh, ow), in_shape, w, b, strides, pads, (1, 1), group)


def _per_channel_scale(src, shape, s, t):
    hw = int(np.prod(shape[1:]))
    return ops.Scale((src,), shape, np.repeat(s, hw), np.repeat(t, hw))


def _flat_identity(src, in_shape):
    n = int(np.prod(in_shape))
    return ops.Permute((src,), (n,), np.arange(n), n)


# ---------------------------------------------------------------------------- drop_identity
def test_identity_permutes_are_dropped(rng):
    net = Network([("x", ops.Input((), (2, 3))), ("f", _flat_identity("x", (2, 3))),
                   ("r", ops.Relu(("f",), (6,))), ("g", _flat_identity("r", (6,))),
                   ("y", ops.Relu(("g",), (6,)))], "y")
    simple = _check(net, ["input", "relu", "relu"], rng)
    assert simple.op("r").inputs == ("x",)


def test_identity_output_after_input_is_kept(rng):
    net = Network([("x", ops.Input((), (2, 3))), ("y", _flat_identity("x", (2, 3)))], "y")
    _check(net, ["input", "permute"], rng)


def test_identity_as_output_is_dropped_and_output_renamed(rng):
    net = Network([("x", ops.Input((), (2, 3))), ("r", ops.Relu(("x",), (2, 3))),
                   ("y", _flat_identity("r", (2, 3)))], "y")
    simple = _check(net, ["input", "relu"], rng)
    assert simple.output == "r"


# ---------------------------------------------------------------------------- diagonal 1x1 conv
@pytest.mark.parametrize("group", [1, 3])
def test_diagonal_1x1_conv_becomes_scale(rng, group):
    diag = np.array([2.0, -0.5, 3.0])
    w = (np.diag(diag) if group == 1 else diag[:, None])[:, :, None, None]
    net = Network([("x", ops.Input((), (3, 2, 2))),
                   ("c", _conv("x", (3, 2, 2), w, np.array([0.1, 0.2, 0.3]), group=group)),
                   ("y", ops.Relu(("c",), (3, 2, 2)))], "y")
    simple = _check(net, ["input", "scale", "relu"], rng)
    assert any("per-channel scale" in n for n in simple.notes)


@pytest.mark.parametrize("case", ["mixing", "strided", "padded"])
def test_other_1x1_convs_stay(rng, case):
    w = rng.standard_normal((3, 3, 1, 1)) if case == "mixing" else \
        np.diag([1.0, 2.0, 3.0])[:, :, None, None]
    kwargs = {"strided": {"strides": (2, 2)}, "padded": {"pads": (1, 0, 0, 0)}}.get(case, {})
    conv = _conv("x", (3, 4, 4), w, np.zeros(3), **kwargs)
    net = Network([("x", ops.Input((), (3, 4, 4))), ("c", conv),
                   ("y", ops.Relu(("c",), conv.shape))], "y")
    _check(net, ["input", "conv", "relu"], rng)


def test_normalising_1x1_conv_folds_into_next_conv(rng):
    """ERAN convSmall: 1x1 conv (x - mean)/std, then an unpadded conv: one conv remains."""
    norm = _conv("x", (1, 6, 6), np.full((1, 1, 1, 1), 3.2457), np.array([-0.4242]))
    conv = _conv("n", (1, 6, 6), rng.standard_normal((4, 1, 3, 3)), rng.standard_normal(4),
                 strides=(2, 2))
    net = Network([("x", ops.Input((), (1, 6, 6))), ("n", norm), ("c", conv),
                   ("y", ops.Relu(("c",), conv.shape))], "y")
    simple = _check(net, ["input", "conv", "relu"], rng)
    assert any("input normalisation" in n for n in simple.notes)


# ---------------------------------------------------------------------------- fold_scale
def test_scale_after_affine(rng):
    net = Network([("x", ops.Input((), (4,))),
                   ("a", _affine("x", rng.standard_normal((3, 4)), rng.standard_normal(3))),
                   ("s", ops.Scale(("a",), (3,), rng.standard_normal(3), rng.standard_normal(3))),
                   ("y", ops.Relu(("s",), (3,)))], "y")
    simple = _check(net, ["input", "affine", "relu"], rng)
    assert simple.op("y").inputs == ("a",)


def test_scale_before_affine(rng):
    net = Network([("x", ops.Input((), (4,))),
                   ("s", ops.Scale(("x",), (4,), rng.standard_normal(4), rng.standard_normal(4))),
                   ("a", _affine("s", rng.standard_normal((3, 4)), rng.standard_normal(3))),
                   ("y", ops.Relu(("a",), (3,)))], "y")
    simple = _check(net, ["input", "affine", "relu"], rng)
    assert any("folded input normalisation 's' into affine 'a'" in n for n in simple.notes)


def test_scale_pair_merges(rng):
    net = Network([("x", ops.Input((), (4,))),
                   ("s1", ops.Scale(("x",), (4,), rng.standard_normal(4), rng.standard_normal(4))),
                   ("s2", ops.Scale(("s1",), (4,), rng.standard_normal(4), rng.standard_normal(4))),
                   ("y", ops.Relu(("s2",), (4,)))], "y")
    _check(net, ["input", "scale", "relu"], rng)


def test_per_channel_scale_after_conv(rng):
    conv = _conv("x", (2, 5, 5), rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3),
                 pads=(1, 1, 1, 1))
    net = Network([("x", ops.Input((), (2, 5, 5))), ("c", conv),
                   ("s", _per_channel_scale("c", conv.shape, rng.standard_normal(3),
                                            rng.standard_normal(3))),
                   ("y", ops.Relu(("s",), conv.shape))], "y")
    _check(net, ["input", "conv", "relu"], rng)


def test_spatially_varying_scale_after_conv_stays(rng):
    conv = _conv("x", (2, 5, 5), rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3))
    n = conv.size
    net = Network([("x", ops.Input((), (2, 5, 5))), ("c", conv),
                   ("s", ops.Scale(("c",), conv.shape, rng.standard_normal(n),
                                   rng.standard_normal(n))),
                   ("y", ops.Relu(("s",), conv.shape))], "y")
    _check(net, ["input", "conv", "scale", "relu"], rng)


@pytest.mark.parametrize("pads", [(0, 0, 0, 0), (1, 1, 1, 1), (0, 1, 2, 0)])
@pytest.mark.parametrize("shift", ["zero", "nonzero"])
@pytest.mark.parametrize("group", [1, 2])
def test_scale_before_conv(rng, pads, shift, group):
    """Folded unless the conv pads *and* the scale shifts (zero padding follows the shift)."""
    s = rng.uniform(0.5, 2.0, 4)
    t = np.zeros(4) if shift == "zero" else rng.standard_normal(4)
    conv = _conv("s", (4, 5, 5), rng.standard_normal((6, 4 // group, 3, 3)),
                 rng.standard_normal(6), pads=pads, group=group)
    net = Network([("x", ops.Input((), (4, 5, 5))),
                   ("s", _per_channel_scale("x", (4, 5, 5), s, t)), ("c", conv),
                   ("y", ops.Relu(("c",), conv.shape))], "y")
    folds = shift == "zero" or not any(pads)
    _check(net, ["input", "conv", "relu"] if folds else ["input", "scale", "conv", "relu"], rng)


def test_scale_with_two_consumers_stays(rng):
    net = Network([("x", ops.Input((), (3,))),
                   ("s", ops.Scale(("x",), (3,), rng.standard_normal(3), rng.standard_normal(3))),
                   ("a", ops.Relu(("s",), (3,))), ("b", ops.Relu(("s",), (3,))),
                   ("y", ops.Add(("a", "b"), (3,)))], "y")
    _check(net, ["input", "scale", "relu", "relu", "add"], rng)


def test_scale_before_relu_stays(rng):
    net = Network([("x", ops.Input((), (3,))), ("r", ops.Relu(("x",), (3,))),
                   ("s", ops.Scale(("r",), (3,), rng.standard_normal(3), rng.standard_normal(3))),
                   ("y", ops.Relu(("s",), (3,)))], "y")
    _check(net, ["input", "relu", "scale", "relu"], rng)


# ---------------------------------------------------------------------------- fold_permute
def test_permute_folds_into_affine(rng):
    index = np.arange(24).reshape(2, 3, 4).transpose(1, 2, 0).reshape(-1)
    net = Network([("x", ops.Input((), (2, 3, 4))),
                   ("t", ops.Permute(("x",), (3, 4, 2), index, 24)),
                   ("f", _flat_identity("t", (3, 4, 2))),
                   ("a", _affine("f", rng.standard_normal((5, 24)), rng.standard_normal(5))),
                   ("y", ops.Relu(("a",), (5,)))], "y")
    simple = _check(net, ["input", "affine", "relu"], rng)
    assert simple.op("a").inputs == ("x",)


def test_selecting_permute_folds_into_affine(rng):
    """A permute that reads some inputs twice and skips others (index not a bijection)."""
    net = Network([("x", ops.Input((), (5,))),
                   ("p", ops.Permute(("x",), (4,), np.array([4, 0, 0, 2]), 5)),
                   ("a", _affine("p", rng.standard_normal((3, 4)), rng.standard_normal(3))),
                   ("y", ops.Relu(("a",), (3,)))], "y")
    _check(net, ["input", "affine", "relu"], rng)


def test_permute_before_relu_stays(rng):
    index = np.array([2, 0, 1])
    net = Network([("x", ops.Input((), (3,))), ("p", ops.Permute(("x",), (3,), index, 3)),
                   ("y", ops.Relu(("p",), (3,)))], "y")
    _check(net, ["input", "permute", "relu"], rng)


# ---------------------------------------------------------------------------- fold_affine_pair
def test_affine_pair_merges(rng):
    net = Network([("x", ops.Input((), (4,))),
                   ("a", _affine("x", rng.standard_normal((3, 4)), rng.standard_normal(3))),
                   ("b", _affine("a", rng.standard_normal((2, 3)), rng.standard_normal(2))),
                   ("y", ops.Relu(("b",), (2,)))], "y")
    simple = _check(net, ["input", "affine", "relu"], rng)
    assert any("merged consecutive affine 'a' into 'b'" in n for n in simple.notes)


def test_affine_pair_through_a_bottleneck_stays(rng):
    """W2 W1 (10x10) would have more entries than W1 (2x10) and W2 (10x2) together."""
    net = Network([("x", ops.Input((), (10,))),
                   ("a", _affine("x", rng.standard_normal((2, 10)), rng.standard_normal(2))),
                   ("b", _affine("a", rng.standard_normal((10, 2)), rng.standard_normal(10))),
                   ("y", ops.Relu(("b",), (10,)))], "y")
    _check(net, ["input", "affine", "affine", "relu"], rng)


def test_chain_scale_permute_affine_affine_collapses(rng):
    """Normalisation, flatten, two affine layers: one affine layer is left."""
    net = Network([("x", ops.Input((), (1, 2, 3))),
                   ("s", ops.Scale(("x",), (1, 2, 3), np.full(6, 1 / 0.3081), np.full(6, -0.4242))),
                   ("f", _flat_identity("s", (1, 2, 3))),
                   ("a", _affine("f", rng.standard_normal((4, 6)), rng.standard_normal(4))),
                   ("b", _affine("a", rng.standard_normal((3, 4)), rng.standard_normal(3)))], "b")
    _check(net, ["input", "affine"], rng)


def test_simplify_is_idempotent_and_keeps_origin(rng, tiny_net):
    once = simplify(tiny_net)
    twice = simplify(once)
    assert _kinds(once) == _kinds(twice) == ["input", "affine", "relu", "affine"]
    assert once.origin is tiny_net.origin
    np.testing.assert_array_equal(twice.forward([[1.0, 2.0]]), [[4.0]])
