"""Shared fixtures: seeded `rng`, the `../shared/data` folder (skipped when absent), MNIST, the
manifest of shared networks, and a tiny hand-built network.

`tiny_net` (checked by hand in `ir/test_network.py`)::

    x0 ──┐ W = [[1, -1],     h = W x + b,  b = [0, 1]
         ├─    [2,  1]]  ──> r = relu(h)  ──> y = [1, 1] r + (-1)
    x1 ──┘

    x = (1, 2): h = (-1, 5), r = (0, 5), y = 4
    x = (3, 1): h = (2, 8),  r = (2, 8), y = 9
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

# Small matrix products are ~100x slower when OpenBLAS spins threads on a busy 2-CPU host;
# set before numpy is first imported (an explicit setting in the environment wins).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_DIR = TESTS_DIR.parent
SHARED_DATA = REPO_DIR.parent / "shared" / "data"
SHARED_REASON = "needs ../shared/data beside the repository"

# `from helpers import ...` works from every test folder (package or not).
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))


def shared_path(*parts: str) -> Path:
    """Path inside ../shared/data; skips the calling test with a clear reason when absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not SHARED_DATA.is_dir():
        pytest.skip(SHARED_REASON)
    if not path.exists():
        pytest.skip(f"{SHARED_REASON} (missing {'/'.join(parts)})")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The ../shared/data folder; skips with "needs ../shared/data beside the repository"."""
    return shared_path()


@pytest.fixture(scope="session")
def manifest(shared_data: Path) -> dict[str, Any]:
    """`shared/data/manifest.json` parsed (datasets, preprocessing, one entry per network)."""
    with open(shared_data / "manifest.json", encoding="utf-8") as fh:
        return json.load(fh)  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def mnist(shared_data: Path) -> dict[str, np.ndarray]:
    """The MNIST test set: `images` uint8 [10000, 1, 28, 28], `labels` int64 [10000]."""
    with np.load(shared_path("mnist", "mnist_test.npz")) as data:
        return {"images": data["images"], "labels": data["labels"]}


@pytest.fixture(scope="session")
def cifar10(shared_data: Path) -> dict[str, np.ndarray]:
    """The first 932 CIFAR-10 test images: `images` uint8 [932, 3, 32, 32], `labels` int64."""
    with np.load(shared_path("cifar10", "cifar10_test_first932.npz")) as data:
        return {"images": data["images"], "labels": data["labels"]}


@pytest.fixture
def rng() -> np.random.Generator:
    """A freshly seeded generator, so every test sees the same data in any order."""
    return np.random.default_rng(20240611)


@pytest.fixture
def tiny_net():
    """The 2-2-1 network drawn in this module's docstring (simplification not applied)."""
    from milpverify.ir import ops
    from milpverify.ir.network import Network
    return Network([
        ("x", ops.Input((), (2,))),
        ("h", ops.Affine(("x",), (2,), np.array([[1.0, -1.0], [2.0, 1.0]]), np.array([0.0, 1.0]))),
        ("r", ops.Relu(("h",), (2,))),
        ("y", ops.Affine(("r",), (1,), np.array([[1.0, 1.0]]), np.array([-1.0]))),
    ], "y")
