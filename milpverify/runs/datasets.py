"""Test images: the embedded default (784-32-16-10 MLP + 10 MNIST images; also the Planet
LeNet) and `.npz` data files.

Files live in `milpverify/data/` (sources and licences in its README.md). Images come back as
float64 arrays already divided by the network's pixel divisor, labels as int64.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Union

import numpy as np
import numpy.typing as npt

from milpverify.errors import InvalidInputError
from milpverify.frontends.embedded import (  # noqa: F401  (re-exported: the run layer's names)
    DATA_DIR,
    DEFAULT_NET,
    EMBEDDED_NETS,
    EmbeddedNet,
    default_name,
    embedded_net,
)
from milpverify.ir.network import Network

DEFAULT_IMAGES = "mnist_test_first10.npz"

Indices = Union[str, int, Sequence[int], npt.NDArray[np.integer], slice, None]


def load_default(name: str = DEFAULT_NET) -> tuple[Network, npt.NDArray[np.float64],
                                                   npt.NDArray[np.int64]]:
    """The embedded network and the first 10 MNIST test images, ready to use.

    Parameters
    ----------
    name : str
        `"mnist_mlp_32_16"` (default; pixels/255; exact rho of all 10 images in about
        30 s) or `"planet_lenet"` (pixels/256; its MaxPool makes exact rho slow).

    Returns
    -------
    net : Network
    images : ndarray, float64 [10, 1, 28, 28], divided by the network's pixel divisor
    labels : ndarray, int64 [10]

    Example
    -------
    >>> net, images, labels = load_default()
    >>> (net.predict(images) == labels).mean()
    """
    from milpverify.frontends.onnx import load_onnx
    entry = embedded_net(name)
    images, labels = load_npz(DATA_DIR / DEFAULT_IMAGES, pixel_divisor=entry.pixel_divisor)
    return load_onnx(entry.path), images, labels


def parse_indices(text: str, n: int | None = None) -> list[int]:
    """Parse `"0:100"`, `"0:100:5"`, `"3,5,8"` or `"7"` into a list of indices.

    `n` (the number of items) is needed only for open slices such as `"5:"` and for
    negative indices.

    Raises
    ------
    InvalidInputError
        Text that is not one of these forms.

    Example
    -------
    >>> parse_indices("3,5,8")
    [3, 5, 8]
    """
    text = str(text).strip()
    if re.fullmatch(r"-?\d+(\s*,\s*-?\d+)*", text):
        values = [int(v) for v in text.split(",")]
    elif m := re.fullmatch(r"(-?\d*)\s*:\s*(-?\d*)(\s*:\s*(-?\d+))?", text):
        start, stop, step = m.group(1), m.group(2), m.group(4)
        if step is not None and int(step) == 0:
            raise InvalidInputError(f"Index range {text!r} has step 0.")
        if n is None and (stop == "" or any(v.startswith("-") for v in (start, stop) if v)):
            raise InvalidInputError(
                f"Index range {text!r} needs an explicit non-negative start and stop "
                "(e.g. '0:100').")
        sl = slice(int(start) if start else None, int(stop) if stop else None,
                   int(step) if step else None)
        if n is not None and any(v is not None and not -n <= v <= n for v in (sl.start, sl.stop)):
            # Python slicing would clip silently; a range past the data is a mistake.
            raise InvalidInputError(f"Index range {text!r} is out of range for {n} items.")
        values = list(range(*sl.indices(n if n is not None else sl.stop)))
    else:
        raise InvalidInputError(f"Cannot parse indices {text!r}; use 'START:STOP', "
                                "'START:STOP:STEP', 'I,J,K' or 'I'.")
    if n is not None:
        values = [v + n if v < 0 else v for v in values]
    return values


def _resolve_indices(indices: Indices, n: int) -> npt.NDArray[np.int64]:
    if indices is None:
        return np.arange(n, dtype=np.int64)
    if isinstance(indices, slice):
        return np.arange(n, dtype=np.int64)[indices]
    if isinstance(indices, str):
        idx = np.asarray(parse_indices(indices, n), dtype=np.int64)
    else:
        arr = np.asarray(indices)
        if arr.dtype.kind not in "iu" and not (arr.size == 0 and arr.dtype.kind == "f"):
            raise InvalidInputError(f"`indices` must be integers; got {arr.dtype} values.")
        idx = arr.astype(np.int64).reshape(-1)
    if idx.size == 0:
        raise InvalidInputError("`indices` selects no images.")
    bad = idx[(idx < -n) | (idx >= n)]
    if bad.size:
        raise InvalidInputError(f"`indices` {bad[:5].tolist()} out of range for {n} images "
                                f"(valid: 0..{n - 1}).")
    return np.where(idx < 0, idx + n, idx)


def load_npz(path: str | Path, *, pixel_divisor: float = 255.0, indices: Indices = None
             ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Images and labels from an `.npz` file with arrays `images` and `labels`.

    Parameters
    ----------
    path : path
        The `.npz` file (e.g. `shared/data/mnist/mnist_test.npz`).
    pixel_divisor : float
        Images are returned as `images / pixel_divisor` (255 for most nets, 256 for Planet).
    indices : str, int, sequence of int, slice or None
        Which images (`"0:100"`, `"3,5,8"`, `[1, 2]`, ...); all when None.

    Returns
    -------
    images : ndarray, float64, first axis the sample
    labels : ndarray, int64

    Raises
    ------
    InvalidInputError
        Missing or unreadable file, missing arrays, mismatched lengths, bad indices or divisor.

    Example
    -------
    >>> images, labels = load_npz("mnist_test.npz", indices="0:100")
    """
    if not (isinstance(pixel_divisor, (int, float)) and math.isfinite(pixel_divisor)
            and pixel_divisor > 0):
        raise InvalidInputError(f"`pixel_divisor` must be a finite number > 0; got "
                                f"{pixel_divisor!r}.")
    file = Path(path)
    if not file.is_file():
        raise InvalidInputError(f"Data file not found: {str(file)!r}.")
    try:
        with np.load(file, allow_pickle=False) as data:
            keys = set(data.files)
            if not {"images", "labels"} <= keys:
                raise InvalidInputError(
                    f"{str(file)!r} needs arrays 'images' and 'labels'; it has "
                    f"{sorted(keys)}.")
            images, labels = data["images"], data["labels"]
    except InvalidInputError:
        raise
    except Exception as exc:  # zipfile.BadZipFile, ValueError (pickled arrays), OSError
        raise InvalidInputError(f"{str(file)!r} is not a readable .npz file "
                                f"({type(exc).__name__}: {exc}).") from exc
    if images.ndim < 2 or labels.ndim != 1 or len(images) != len(labels):
        raise InvalidInputError(
            f"{str(file)!r}: 'images' {list(images.shape)} and 'labels' {list(labels.shape)} "
            "must have the same number of samples (first axis).")
    idx = _resolve_indices(indices if not isinstance(indices, int) else [indices], len(labels))
    return (images[idx].astype(np.float64) / float(pixel_divisor),
            labels[idx].astype(np.int64))


__all__ = ["DATA_DIR", "DEFAULT_NET", "EMBEDDED_NETS", "EmbeddedNet", "embedded_net",
           "load_default", "load_npz", "parse_indices"]
