"""`milpverify.runs.datasets`: the embedded default, `.npz` loading and index parsing."""

from __future__ import annotations

import numpy as np
import pytest

from milpverify import InvalidInputError, Network
from milpverify.runs.datasets import (
    DATA_DIR,
    EMBEDDED_NETS,
    embedded_net,
    load_default,
    load_npz,
    parse_indices,
)


def test_load_default_is_the_mlp():
    net, _, _ = load_default()
    assert [op.kind for _, op in net.items()] == ["input", "affine", "relu", "affine", "relu",
                                                 "affine"]


def test_load_planet():
    net, images, labels = load_default("planet_lenet")
    assert isinstance(net, Network)
    assert images.shape == (10, 1, 28, 28) and images.dtype == np.float64
    assert labels.dtype == np.int64 and labels.tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    # Planet LeNet wants pixels/256: the brightest pixel 255 becomes 255/256.
    assert images.max() == 255 / 256 and images.min() == 0.0
    assert [op.kind for _, op in net.items()] == ["input", "conv", "maxpool", "affine", "relu",
                                                 "affine"]
    assert (net.predict(images) == labels).all()


def test_load_default_mlp():
    net, images, labels = load_default("mnist_mlp_32_16")
    assert images.max() == 1.0
    assert [op.kind for _, op in net.items()] == ["input", "affine", "relu", "affine", "relu",
                                                 "affine"]
    assert net.num_parameters == 784 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10
    assert (net.predict(images) == labels).sum() == 9


def test_embedded_files_match_onnxruntime():
    """The float64 IR and onnxruntime agree on the embedded nets and images."""
    from helpers import run_ort
    for name, entry in EMBEDDED_NETS.items():
        net, images, _ = load_default(name)
        x = images.astype(np.float32)
        expected = run_ort(net.origin.onnx_bytes, x, per_sample_shape=net.origin.input_shape)
        np.testing.assert_allclose(net.forward(x.astype(np.float64)), expected, rtol=1e-5,
                                   atol=1e-5 * max(1.0, np.abs(expected).max()))
        assert entry.path.parent == DATA_DIR


def test_unknown_embedded_net():
    with pytest.raises(InvalidInputError, match=r"Unknown embedded network 'x'; choose one of "
                                                r"\['mnist_mlp_32_16', 'planet_lenet'\]"):
        embedded_net("x")


@pytest.mark.parametrize("text,expected", [("0:5", [0, 1, 2, 3, 4]), ("3,5,8", [3, 5, 8]),
                                           ("7", [7]), ("2:10:3", [2, 5, 8]), (" 1 , 2 ", [1, 2]),
                                           (":3", [0, 1, 2])])
def test_parse_indices(text, expected):
    assert parse_indices(text) == expected


def test_parse_indices_with_length():
    assert parse_indices("7:", 10) == [7, 8, 9]
    assert parse_indices("-2:", 10) == [8, 9]
    assert parse_indices("-1,0", 10) == [9, 0]


@pytest.mark.parametrize("text,pattern", [("abc", "Cannot parse indices 'abc'"),
                                          ("1-3", "Cannot parse"), ("", "Cannot parse"),
                                          ("5:", "needs an explicit non-negative start and stop"),
                                          ("0:10:0", "step 0")])
def test_parse_indices_errors(text, pattern):
    with pytest.raises(InvalidInputError, match=pattern):
        parse_indices(text)


def test_parse_indices_out_of_range():
    with pytest.raises(InvalidInputError, match=r"'0:100' is out of range for 10 items"):
        parse_indices("0:100", 10)


@pytest.fixture
def npz_path(tmp_path):
    path = tmp_path / "data.npz"
    images = np.arange(6 * 4, dtype=np.uint8).reshape(6, 1, 2, 2) * 10
    np.savez(path, images=images, labels=np.arange(6) % 3)
    return path


@pytest.mark.parametrize("indices,expected", [(None, [0, 1, 2, 3, 4, 5]), ("1:3", [1, 2]),
                                              ("4,0", [4, 0]), ([5], [5]), (2, [2]),
                                              (np.array([3, 1]), [3, 1]),
                                              (slice(0, 6, 2), [0, 2, 4]),
                                              ("-1", [5])])
def test_load_npz_indices(npz_path, indices, expected):
    images, labels = load_npz(npz_path, indices=indices, pixel_divisor=10.0)
    assert images.dtype == np.float64 and labels.dtype == np.int64
    assert images.shape == (len(expected), 1, 2, 2)
    np.testing.assert_array_equal(images[:, 0, 0, 0], [4 * i for i in expected])
    np.testing.assert_array_equal(labels, [i % 3 for i in expected])


def test_load_npz_default_divisor(npz_path):
    images, _ = load_npz(npz_path)
    assert images.max() == 230 / 255


@pytest.mark.parametrize("indices,pattern", [([6], r"\[6\] out of range for 6 images"),
                                             ([-7], "out of range"), ("0:7", "out of range"),
                                             ([], "selects no images"),
                                             ([1.5], "must be integers"), ("x", "Cannot parse")])
def test_load_npz_bad_indices(npz_path, indices, pattern):
    with pytest.raises(InvalidInputError, match=pattern):
        load_npz(npz_path, indices=indices)


def test_load_npz_missing_file(tmp_path):
    with pytest.raises(InvalidInputError, match=r"Data file not found: .*nope\.npz"):
        load_npz(tmp_path / "nope.npz")


def test_load_npz_missing_keys(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, x=np.zeros((2, 3)), labels=np.zeros(2))
    with pytest.raises(InvalidInputError, match=r"needs arrays 'images' and 'labels'; it has "
                                                r"\['labels', 'x'\]"):
        load_npz(path)


def test_load_npz_not_npz(tmp_path):
    path = tmp_path / "text.npz"
    path.write_text("hello")
    with pytest.raises(InvalidInputError, match="not a readable .npz file"):
        load_npz(path)


def test_load_npz_length_mismatch(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, images=np.zeros((3, 4)), labels=np.zeros(2))
    with pytest.raises(InvalidInputError, match="same number of samples"):
        load_npz(path)


@pytest.mark.parametrize("divisor", [0.0, -1.0, float("nan"), "255"])
def test_load_npz_bad_divisor(npz_path, divisor):
    with pytest.raises(InvalidInputError, match="`pixel_divisor` must be a finite number > 0"):
        load_npz(npz_path, pixel_divisor=divisor)


@pytest.mark.shared
def test_load_shared_mnist(shared_data):
    images, labels = load_npz(shared_data / "mnist/mnist_test.npz", indices="0:100")
    assert images.shape == (100, 1, 28, 28) and labels[:3].tolist() == [7, 2, 1]
