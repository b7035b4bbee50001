"""Every shared ONNX network loads and `Network.forward` matches onnxruntime on real inputs.

The check: on the first 100 test images of the network's data set, preprocessed as
`manifest.json` says (for the control networks that have no data set, `"dataset": null`, on
100 points of the input boxes of their VNN-LIB specs), `|forward - onnxruntime| <= 1e-5 * max(1, max_j |logit_j|)` per sample.
The scale is the sample's largest logit, not each logit's own magnitude: onnxruntime runs in
float32, so its error grows with the size of the intermediate values, and a logit near 0 can
carry an absolute error ~1e-5 (CIFAR convSmall with its in-graph 1/std ~ 5 scaling).
Run with `-s` to print a table of differences and load times.
"""

from __future__ import annotations

import gzip
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import SHARED_DATA
from helpers import run_ort, vnnlib_box_points

from milpverify import load_onnx

pytestmark = pytest.mark.shared

N_IMAGES = 100
TOL = 1e-5
NET_DIRS = ("nets", "vnncomp")


def _onnx_files() -> list[str]:
    if not SHARED_DATA.is_dir():
        return ["<shared data absent>"]
    return sorted(str(p.relative_to(SHARED_DATA)) for d in NET_DIRS
                  for p in (SHARED_DATA / d).rglob("*.onnx"))


def preprocess(images: np.ndarray, entry: dict[str, Any]) -> np.ndarray:
    """float32 `(images / pixel_divisor - mean[c]) / std[c]`, exactly as manifest.json says."""
    x = images.astype(np.float32) / np.float32(entry["pixel_divisor"])
    mean = np.asarray(entry["mean"], dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(entry["std"], dtype=np.float32).reshape(1, -1, 1, 1)
    return ((x - mean) / std).astype(np.float32)


@pytest.fixture(scope="module")
def table():
    """Rows of the forward-check table; printed at the end of the module (visible with -s)."""
    rows: list[tuple[str, float, float, float, float]] = []
    yield rows
    if rows:
        print(f"\n{'network':55s} {'max|diff|':>10s} {'rel(sample)':>11s} {'rel(elem)':>10s} "
              f"{'load s':>7s}")
        for name, diff, rel, rel_elem, load_s in sorted(rows):
            print(f"{name:55s} {diff:10.2e} {rel:11.2e} {rel_elem:10.2e} {load_s:7.3f}")


@pytest.fixture(scope="module")
def entries(manifest) -> dict[str, dict[str, Any]]:
    return {e["file"]: e for e in manifest["networks"]}


@pytest.fixture(scope="module")
def datasets(mnist, cifar10) -> dict[str, dict[str, np.ndarray]]:
    return {"mnist": mnist, "cifar10": cifar10}


@pytest.mark.parametrize("rel_path", _onnx_files())
def test_shared_net_forward_matches_onnxruntime(rel_path, shared_data, entries, datasets, table):
    assert rel_path in entries, f"{rel_path} has no entry in manifest.json"
    entry = entries[rel_path]
    start = time.perf_counter()
    net = load_onnx(shared_data / rel_path)
    load_s = time.perf_counter() - start

    if entry["dataset"] is None:
        x = vnnlib_box_points(shared_data, rel_path, N_IMAGES)
    else:
        x = preprocess(datasets[entry["dataset"]]["images"][:N_IMAGES], entry)
    assert net.origin.onnx_bytes is not None and net.origin.input_shape is not None
    # Several nets fix the batch size to 1, so onnxruntime runs image by image.
    expected = run_ort(net.origin.onnx_bytes, x, per_sample_shape=net.origin.input_shape)
    got = net.forward(x.astype(np.float64))
    assert got.shape == expected.shape == (N_IMAGES, net.num_classes)

    diff = np.abs(got - expected)
    per_sample = np.maximum(1.0, np.abs(expected).max(axis=1, keepdims=True))
    rel = float((diff / per_sample).max())
    rel_elem = float((diff / np.maximum(1.0, np.abs(expected))).max())
    table.append((rel_path, float(diff.max()), rel, rel_elem, load_s))
    assert rel <= TOL, f"max |diff| {diff.max():.3g}, relative {rel:.3g} > {TOL}"
    assert load_s < 5.0


@pytest.mark.parametrize("rel_path", _onnx_files())
def test_shared_net_accuracy_matches_manifest(rel_path, shared_data, entries, datasets):
    """Our float64 forward classifies the stored test images exactly as the manifest measured."""
    entry = entries[rel_path]
    if entry["dataset"] is None:
        pytest.skip(f"{rel_path} has no data set (a control network); its forward pass is "
                    "checked on points of its VNN-LIB boxes")
    data = datasets[entry["dataset"]]
    measured = entry["measured"]
    count = 1000 if "correct_first_1000" in measured else len(data["labels"])
    want = measured.get("correct_first_1000", measured.get(f"correct_first_{count}"))
    net = load_onnx(shared_data / rel_path)
    pred = net.predict(preprocess(data["images"][:count], entry).astype(np.float64))
    assert int((pred == data["labels"][:count]).sum()) == want


@pytest.mark.parametrize("simplify_graph", [True, False])
def test_shared_net_unsimplified_equals_simplified(shared_data, entries, datasets,
                                                   simplify_graph):
    """Simplification changes no logit (beyond float64 rounding) on the real nets."""
    for rel_path in ("nets/mnist/eran/convSmallRELU__Point.onnx", "nets/mnist/planet/lenet.onnx",
                     "nets/cifar10/eran/convSmallRELU__Point.onnx",
                     "nets/mnist/eran/mnist_relu_3_50.onnx"):
        entry = entries[rel_path]
        x = preprocess(datasets[entry["dataset"]]["images"][:20], entry).astype(np.float64)
        simple = load_onnx(shared_data / rel_path)
        raw = load_onnx(shared_data / rel_path, simplify_graph=False)
        np.testing.assert_allclose(simple.forward(x), raw.forward(x), rtol=1e-12, atol=1e-10)
        assert len(simple.order) <= len(raw.order)


def test_gzipped_shared_net(shared_data, tmp_path, mnist, entries):
    rel_path = "nets/mnist/planet/lenet.onnx"
    source = shared_data / rel_path
    gz = tmp_path / "lenet.onnx.gz"
    gz.write_bytes(gzip.compress(source.read_bytes()))
    x = preprocess(mnist["images"][:N_IMAGES], entries[rel_path]).astype(np.float64)
    net_gz, net = load_onnx(gz), load_onnx(source)
    np.testing.assert_array_equal(net_gz.forward(x), net.forward(x))
    assert net_gz.origin.onnx_bytes == net.origin.onnx_bytes
    assert Path(net_gz.origin.description).name == "lenet.onnx.gz"


def test_shared_nets_structure(shared_data, entries):
    """Spot checks of what simplification makes of the shared nets."""
    planet = load_onnx(shared_data / "nets/mnist/planet/lenet.onnx")
    assert [op.kind for _, op in planet.items()] == ["input", "conv", "maxpool", "affine", "relu",
                                                    "affine"]
    assert planet.input_shape == (1, 28, 28) and planet.num_classes == 10
    conv_small = load_onnx(shared_data / "nets/mnist/eran/convSmallRELU__Point.onnx")
    assert any("1x1 conv" in n for n in conv_small.notes)
    assert [op.kind for _, op in conv_small.items()] == ["input", "conv", "relu", "conv", "relu",
                                                        "affine", "relu", "affine"]
    fc = load_onnx(shared_data / "vnncomp/mnist_fc_2022/onnx/mnist-net_256x2.onnx")
    assert fc.input_shape == (784, 1)
    assert [op.kind for _, op in fc.items()].count("relu") == 2
