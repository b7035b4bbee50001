"""Input normalisation that a network expects but does not contain (`--mean` / `--std`).

Some published networks (e.g. the OVAL21 CIFAR ``cifar_base_kw``) were trained on
``(x - mean) / std`` with the normalisation done by the data loader, not in the ONNX graph.
Fed pixels in [0, 1] they classify almost nothing correctly. The distance rho must still be
measured in pixel space, so the normalisation is prepended to the ONNX graph as
``Sub`` / ``Div`` nodes: the verifier folds them into the first layer, and witnesses are
re-checked by onnxruntime on that same extended model.
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from milpverify.errors import InvalidInputError, InvalidModelError

#: Suffix of the graph value that carries the normalised input.
_SUFFIX = "__milpverify_normalised"


def parse_channels(name: str, value: str | float | Sequence[float] | None
                   ) -> tuple[float, ...] | None:
    """`"0.485,0.456,0.406"`, a number or a sequence as a tuple of finite floats (None: none).

    Raises
    ------
    InvalidInputError
        Text that is not comma-separated numbers, or non-finite values.
    """
    if value is None:
        return None
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",") if v.strip()]
        try:
            values = tuple(float(v) for v in items)
        except ValueError:
            raise InvalidInputError(f"`{name}` must be numbers separated by commas, one per "
                                    f"channel (e.g. 0.485,0.456,0.406); got {value!r}.") from None
    elif isinstance(value, (int, float)):
        values = (float(value),)
    else:
        values = tuple(float(v) for v in value)
    if not values or not all(math.isfinite(v) for v in values):
        raise InvalidInputError(f"`{name}` must be finite numbers; got {value!r}.")
    return values


def check_normalisation(mean: tuple[float, ...] | None, std: tuple[float, ...] | None
                        ) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """Both or neither; `std` > 0. Returns `(mean, std)` (a missing one as identity) or None."""
    if mean is None and std is None:
        return None
    mean = mean if mean is not None else (0.0,)
    std = std if std is not None else (1.0,)
    if any(s <= 0 for s in std):
        raise InvalidInputError(f"`std` must be > 0 per channel; got {list(std)}.")
    return mean, std


def _load(path: str) -> Any:
    import onnx
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return onnx.load_model_from_string(f.read())
        return onnx.load(path)
    except (OSError, ValueError) as exc:  # the front end reports unreadable models fully
        raise InvalidModelError(f"{path!r} is not a readable ONNX model ({exc}).") from exc


def _channel_shape(model: Any, n: int, path: str) -> list[int]:
    """Broadcast shape of the per-channel constants for the model's single runtime input."""
    graph = model.graph
    initialised = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initialised]
    if len(inputs) != 1:
        raise InvalidModelError(f"{path!r} has {len(inputs)} runtime inputs; expected 1.")
    dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim]
    channels = dims[1] if len(dims) >= 3 else 1
    if n not in (1, channels):
        raise InvalidInputError(
            f"`mean`/`std` have {n} values, but the input {inputs[0].name!r} of shape "
            f"{dims} has {channels} channel(s); give 1 value or {channels}.")
    return [1, n, *([1] * (len(dims) - 2))] if len(dims) >= 3 else [1]


def normalised_model(path: str | Path, mean: Sequence[float], std: Sequence[float]) -> Any:
    """The ONNX model at `path` with `(x - mean) / std` (per channel) before its graph.

    The returned `onnx.ModelProto` keeps the input's name and shape; `load_onnx` accepts it.
    """
    import onnx
    from onnx import helper, numpy_helper
    path = str(path)
    model = _load(path)
    n = max(len(mean), len(std))
    if len(mean) not in (1, n) or len(std) not in (1, n):
        raise InvalidInputError(f"`mean` has {len(mean)} values and `std` {len(std)}; give "
                                "the same number (or 1 for all channels).")
    shape = _channel_shape(model, n, path)
    graph = model.graph
    initialised = {i.name for i in graph.initializer}
    name = next(i.name for i in graph.input if i.name not in initialised)
    inner = name + _SUFFIX
    for node in graph.node:
        node.input[:] = [inner if v == name else v for v in node.input]
    consts = {
        name + "__mean": np.broadcast_to(np.asarray(mean, np.float32), (n,)).reshape(shape),
        name + "__std": np.broadcast_to(np.asarray(std, np.float32), (n,)).reshape(shape),
    }
    graph.initializer.extend(numpy_helper.from_array(np.ascontiguousarray(v), k)
                             for k, v in consts.items())
    centred = name + "__centred"
    new_nodes = [helper.make_node("Sub", [name, name + "__mean"], [centred]),
                 helper.make_node("Div", [centred, name + "__std"], [inner])]
    nodes = [*new_nodes, *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    return model


def load_network(path: str, mean: Sequence[float] | None, std: Sequence[float] | None) -> Any:
    """`load_onnx(path)`, with the normalisation prepended when `mean`/`std` are given."""
    from milpverify.frontends.onnx import load_onnx
    if mean is None and std is None:
        return load_onnx(path)
    return load_onnx(normalised_model(path, mean or (0.0,), std or (1.0,)))


__all__ = ["check_normalisation", "load_network", "normalised_model", "parse_channels"]
