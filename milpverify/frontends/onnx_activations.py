"""ONNX converters for piecewise-linear activations: LeakyRelu, PRelu and Clip (ReLU6).

LeakyRelu and PRelu become the IR op `LeakyRelu` with one slope per element (a PRelu slope
broadcast as ONNX broadcasts it). Clip has two breakpoints; it is written exactly with the
existing ReLU, `min(max(x, lo), hi) = hi - relu((hi - lo) - relu(x - lo))`, so every bound
method, the MILP encoding (one binary per breakpoint) and the LP restriction cover it, and
interval bounds stay exact (a composition of monotone maps). Relu itself is in `onnx_layers`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from milpverify.frontends.onnx_base import (
    NodeUnsupported,
    Tensor,
    Value,
    _broadcast_const,
    _const,
    _Context,
    _tensor,
    register,
)
from milpverify.ir import ops
from milpverify.ir.ops import size_of


@register("LeakyRelu", 1, 6, 16)
def _leaky_relu(ctx: _Context, node: Any, attrs: Mapping[str, Any], args: list[Value | None]
                ) -> list[Value]:
    x = _tensor(args[0], node, "input")
    slope = np.full(size_of(x.shape), float(attrs.get("alpha", 0.01)))
    return [ctx.emit(node.output[0], ops.LeakyRelu((x.name,), x.shape, slope))]


@register("PRelu", 1, 6, 7, 9, 16)
def _prelu(ctx: _Context, node: Any, attrs: Mapping[str, Any], args: list[Value | None]
           ) -> list[Value]:
    x = _tensor(args[0], node, "input X")
    slope = _const(args[1], node, "slope")
    if ctx.opset < 7 and slope.ndim == 1 and len(x.shape) == 3 and slope.size == x.shape[0]:
        slope = slope.reshape(-1, 1, 1)   # PRelu-1/6: a (C,) slope is per channel
    flat = _broadcast_const(slope, x.shape, ctx.lead)
    return [ctx.emit(node.output[0], ops.LeakyRelu((x.name,), x.shape, flat.copy()))]


def _clip_limits(node: Any, attrs: Mapping[str, Any], args: list[Value | None]
                 ) -> tuple[float | None, float | None]:
    """(min, max) of a Clip; None where unbounded. Clip-1/6 use attributes, 11+ inputs."""
    if "min" in attrs or "max" in attrs or len(args) == 1:
        lo, hi = attrs.get("min"), attrs.get("max")
        return (None if lo is None else float(lo)), (None if hi is None else float(hi))
    limits: list[float | None] = []
    for k, what in ((1, "min"), (2, "max")):
        if len(args) > k and args[k] is not None:
            value = _const(args[k], node, what).reshape(-1)
            if value.size != 1:
                raise NodeUnsupported(f"{what} must be a scalar; got shape {list(value.shape)}")
            limits.append(float(value[0]))
        else:
            limits.append(None)
    return limits[0], limits[1]


def _scale(ctx: _Context, name: str, x: Tensor, scale: float, shift: float) -> Tensor:
    n = size_of(x.shape)
    return ctx.emit(name, ops.Scale((x.name,), x.shape, np.full(n, scale), np.full(n, shift)))


@register("Clip", 1, 6, 11, 12, 13)
def _clip(ctx: _Context, node: Any, attrs: Mapping[str, Any], args: list[Value | None]
          ) -> list[Value]:
    """`min(max(x, lo), hi)` with ReLUs and per-element scales (see the module docstring)."""
    x = _tensor(args[0], node, "input")
    lo, hi = _clip_limits(node, attrs, args)
    out = node.output[0]
    if lo is None and hi is None:
        return [x]
    if lo is not None and hi is not None and lo >= hi:    # ONNX: every value becomes max
        return [_scale(ctx, out, x, 0.0, hi)]
    if hi is None:                                        # lo + relu(x - lo)
        if lo == 0.0:
            return [ctx.emit(out, ops.Relu((x.name,), x.shape))]
        shifted = _scale(ctx, f"{out}/minus_min", x, 1.0, -lo)
        relu = ctx.emit(f"{out}/relu", ops.Relu((shifted.name,), x.shape))
        return [_scale(ctx, out, relu, 1.0, lo)]
    # hi - relu(hi - y) with y = x (no min) or y = lo + relu(x - lo)
    if lo is None:
        inner = _scale(ctx, f"{out}/max_minus", x, -1.0, hi)
    else:
        shifted = x if lo == 0.0 else _scale(ctx, f"{out}/minus_min", x, 1.0, -lo)
        low_relu = ctx.emit(f"{out}/relu_min", ops.Relu((shifted.name,), x.shape))
        inner = _scale(ctx, f"{out}/max_minus", low_relu, -1.0, hi - lo)
    high_relu = ctx.emit(f"{out}/relu_max", ops.Relu((inner.name,), x.shape))
    return [_scale(ctx, out, high_relu, -1.0, hi)]
