"""`load_onnx("default")`: the bundled networks by the names the CLI's MODEL accepts."""

from __future__ import annotations

import numpy as np
import pytest

import milpverify
from milpverify import InvalidInputError
from milpverify.frontends.embedded import EMBEDDED_NETS, default_name


@pytest.mark.parametrize(
    "model,name",
    [
        ("default", "mnist_mlp_32_16"),
        ("default:mnist_mlp_32_16", "mnist_mlp_32_16"),
        ("default:planet_lenet", "planet_lenet"),
    ],
)
def test_load_onnx_default_is_load_defaults_network(model, name):
    net = milpverify.load_onnx(model)
    reference, images, _ = milpverify.load_default(name)
    assert net.origin.description == str(EMBEDDED_NETS[name].path)
    np.testing.assert_array_equal(net.forward(images), reference.forward(images))


def test_load_onnx_unknown_default_names_the_choices():
    with pytest.raises(
        InvalidInputError,
        match=r"Unknown embedded network 'nope'; choose one "
        r"of \['mnist_mlp_32_16', 'planet_lenet'\]",
    ):
        milpverify.load_onnx("default:nope")


def test_missing_file_mentions_default(tmp_path):
    with pytest.raises(InvalidInputError, match="'default' for the bundled network"):
        milpverify.load_onnx(tmp_path / "absent.onnx")


def test_default_name():
    assert default_name("default") == "mnist_mlp_32_16"
    assert default_name("default:planet_lenet") == "planet_lenet"
    assert default_name("defaults.onnx") is None and default_name("net.onnx") is None
