"""Shared machinery of the ONNX front end: runtime values, the converter registry, helpers.

Converters are registered per (op_type, schema since_version) with `register`; the loader in
`frontends.onnx` picks the schema version for the model's opset. A converter raises
`NodeUnsupported` for an op/attribute combination it cannot express exactly; the loader
collects those into one error. This module does not import onnx (only `frontends.onnx` may).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np

from milpverify.ir import ops
from milpverify.ir.ops import FloatArray, size_of


@dataclass(frozen=True)
class Tensor:
    """A runtime value: IR node `name` with per-sample `shape` (batch axis dropped)."""

    name: str
    shape: tuple[int, ...]


Value = Union[Tensor, np.ndarray]


class NodeUnsupported(Exception):
    """Raised by a converter for an op/attribute combination it cannot express."""


@dataclass
class _Context:
    """Conversion state. `lead` is 1 when the graph has a leading batch axis, 0 when its input
    is one sample without one (e.g. shape [n]); `Tensor.shape` never includes the batch axis."""

    opset: int
    fold: Callable[[_Context, Any, Mapping[str, Any], list[Value | None]], list[Value]]
    lead: int = 1
    values: dict[str, Value] = field(default_factory=dict)
    nodes: list[tuple[str, ops.Op]] = field(default_factory=list)

    def full(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The ONNX shape of a per-sample `shape` (batch axis of 1 first when there is one)."""
        return (1,) * self.lead + tuple(shape)

    def emit(self, name: str, op: ops.Op) -> Tensor:
        self.nodes.append((name, op))
        return Tensor(name, op.shape)


Converter = Callable[[_Context, Any, Mapping[str, Any], list[Value | None]], list[Value]]
_REGISTRY: dict[str, dict[int, Converter]] = {}


def register(op_type: str, *since_versions: int) -> Callable[[Converter], Converter]:
    """Register a converter for `op_type` schema versions; registering twice is an error."""
    def wrap(fn: Converter) -> Converter:
        table = _REGISTRY.setdefault(op_type, {})
        for version in since_versions:
            if version in table:
                raise RuntimeError(f"converter for {op_type} v{version} registered twice")
            table[version] = fn
        return fn
    return wrap


def supported_ops() -> list[str]:
    """ONNX op types milpverify can read (some only with constant operands)."""
    return sorted(_REGISTRY)


# ---------------------------------------------------------------------------- helpers
def _tensor(v: Value | None, node: Any, what: str) -> Tensor:
    if not isinstance(v, Tensor):
        raise NodeUnsupported(f"its {what} must be a runtime tensor, not a constant")
    return v


def _const(v: Value | None, node: Any, what: str) -> np.ndarray:
    if isinstance(v, Tensor) or v is None:
        raise NodeUnsupported(f"its {what} must be a constant (initializer)")
    return v


def _pairs(values: Any, default: int, n: int = 2) -> tuple[int, ...]:
    return tuple(int(v) for v in values) if values is not None else (default,) * n


def _chw(t: Tensor, node: Any) -> tuple[int, int, int]:
    if len(t.shape) != 3:
        raise NodeUnsupported(f"only 2-D (N, C, H, W) inputs are supported; got per-sample shape "
                              f"{list(t.shape)}")
    return t.shape[0], t.shape[1], t.shape[2]


def _window_pads(attrs: Mapping[str, Any], in_hw: tuple[int, int], kernel: tuple[int, int],
                 strides: tuple[int, int], dilations: tuple[int, int]) -> tuple[int, int, int, int]:
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad in ("NOTSET", ""):
        pads = _pairs(attrs.get("pads"), 0, 4)
        return pads[0], pads[1], pads[2], pads[3]
    if auto_pad == "VALID":
        return 0, 0, 0, 0
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        raise NodeUnsupported(f"auto_pad={auto_pad!r} is not supported")
    begin, end = [], []
    for axis in range(2):
        out = -(-in_hw[axis] // strides[axis])
        total = max(0, (out - 1) * strides[axis] + dilations[axis] * (kernel[axis] - 1) + 1
                    - in_hw[axis])
        small, large = total // 2, total - total // 2
        begin.append(small if auto_pad == "SAME_UPPER" else large)
        end.append(large if auto_pad == "SAME_UPPER" else small)
    return begin[0], begin[1], end[0], end[1]


def _broadcast_const(c: np.ndarray, shape: tuple[int, ...], lead: int = 1) -> FloatArray:
    """Broadcast a constant against a tensor of per-sample `shape` (`lead` batch axes of 1)."""
    full = (1,) * lead + tuple(shape)
    try:
        if np.broadcast_shapes(c.shape, full) != full:
            raise ValueError
        return np.broadcast_to(c.astype(np.float64), full).reshape(-1)
    except ValueError:
        raise NodeUnsupported(f"constant of shape {list(c.shape)} would broadcast the tensor "
                              f"of shape {list(full)} to a larger shape") from None


def _identity(ctx: _Context, name: str, t: Tensor, shape: tuple[int, ...]) -> Tensor:
    if size_of(shape) != size_of(t.shape):
        raise NodeUnsupported(f"cannot reshape {list(t.shape)} to {list(shape)}")
    index = np.arange(size_of(shape), dtype=np.int64)
    return ctx.emit(name, ops.Permute((t.name,), shape, index, size_of(t.shape)))


