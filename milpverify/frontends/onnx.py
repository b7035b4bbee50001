"""`load_onnx`: ONNX model -> milpverify `Network` (the only module that imports onnx).

Converters are registered per (op_type, schema since_version); the model's opset picks the
schema version with `onnx.defs.get_schema(op, max_inclusive_version=opset)`. Every
unsupported node is collected first, then one error names them all.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

from milpverify.errors import (
    InvalidInputError,
    InvalidModelError,
    UnsupportedModelError,
)
from milpverify.ir import ops
from milpverify.ir.network import Network, Origin
from milpverify.ir.ops import FloatArray, size_of
from milpverify.ir.simplify import simplify


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
    opset: int
    values: dict[str, Value] = field(default_factory=dict)
    nodes: list[tuple[str, ops.Op]] = field(default_factory=list)

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


def _broadcast_const(c: np.ndarray, shape: tuple[int, ...]) -> FloatArray:
    """Broadcast a constant against a tensor of per-sample `shape` (batch axis 1)."""
    full = (1, *shape)
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


# ---------------------------------------------------------------------------- converters
@register("Gemm", 1, 6, 7, 9, 11, 13)
def _gemm(ctx: _Context, node: Any, attrs: Mapping[str, Any], args: list[Value | None]
          ) -> list[Value]:
    x = _tensor(args[0], node, "input A")
    b = _const(args[1], node, "input B").astype(np.float64)
    if attrs.get("transA", 0):
        raise NodeUnsupported("transA=1 is not supported; only transA=0")
    if len(x.shape) != 1:
        raise NodeUnsupported(f"input A must be 2-D (batch, features); got per-sample shape "
                              f"{list(x.shape)}")
    weight = float(attrs.get("alpha", 1.0)) * (b if attrs.get("transB", 0) else b.T)
    bias = np.zeros(weight.shape[0])
    if len(args) > 2 and args[2] is not None:
        c = _const(args[2], node, "input C").astype(np.float64)
        if c.ndim > 2 or (c.ndim == 2 and c.shape[0] != 1):
            raise NodeUnsupported(f"bias C of shape {list(c.shape)} depends on the batch row")
        try:
            bias = float(attrs.get("beta", 1.0)) * np.broadcast_to(
                c.reshape(-1) if c.ndim == 2 else c, (weight.shape[0],))
        except ValueError:
            raise NodeUnsupported(f"bias C of shape {list(c.shape)} does not broadcast to "
                                  f"{weight.shape[0]} outputs") from None
    if weight.shape[1] != x.shape[0]:
        raise NodeUnsupported(f"weight has {weight.shape[1]} columns but the input has {x.shape[0]}")
    return [ctx.emit(node.output[0], ops.Affine((x.name,), (weight.shape[0],),
                                                np.ascontiguousarray(weight), bias.copy()))]


@register("MatMul", 1, 9, 13)
def _matmul(ctx: _Context, node: Any, attrs: Mapping[str, Any], args: list[Value | None]
            ) -> list[Value]:
    x = _tensor(args[0], node, "input A")
    b = _const(args[1], node, "input B").astype(np.float64)
    if b.ndim != 2 or len(x.shape) != 1 or b.shape[0] != x.shape[0]:
        raise NodeUnsupported(f"only (batch, k) @ constant (k, m) is supported; got per-sample "
                              f"shape {list(x.shape)} @ {list(b.shape)}")
    return [ctx.emit(node.output[0], ops.Affine((x.name,), (b.shape[1],),
                                                np.ascontiguousarray(b.T), np.zeros(b.shape[1])))]


def _elementwise(ctx: _Context, node: Any, args: list[Value | None], kind: str) -> list[Value]:
    a, b = args[0], args[1]
    out = node.output[0]
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        if a.shape != b.shape:
            raise NodeUnsupported(f"tensor operands of shapes {list(a.shape)} and {list(b.shape)} "
                                  "differ; only equal shapes are supported")
        if kind == "Add":
            return [ctx.emit(out, ops.Add((a.name, b.name), a.shape))]
        if kind == "Sub":
            neg = ctx.emit(f"{out}/negate", ops.Scale((b.name,), b.shape, -np.ones(size_of(b.shape)),
                                                      np.zeros(size_of(b.shape))))
            return [ctx.emit(out, ops.Add((a.name, neg.name), a.shape))]
        raise NodeUnsupported(f"{kind} of two runtime tensors is not piecewise linear")
    if isinstance(a, Tensor):
        t, c, tensor_first = a, _const(b, node, "second input"), True
    else:
        t, c, tensor_first = _tensor(b, node, "an input"), _const(a, node, "first input"), False
    c = _broadcast_const(c, t.shape)
    one, zero = np.ones_like(c), np.zeros_like(c)
    scale, shift = {
        ("Add", True): (one, c), ("Add", False): (one, c),
        ("Sub", True): (one, -c), ("Sub", False): (-one, c),
        ("Mul", True): (c, zero), ("Mul", False): (c, zero),
    }.get((kind, tensor_first), (None, None))
    if kind == "Div":
        if not tensor_first:
            raise NodeUnsupported("constant / tensor is not piecewise linear")
        if np.any(c == 0):
            raise NodeUnsupported("division by a constant containing 0")
        scale, shift = 1.0 / c, zero
    assert scale is not None and shift is not None
    return [ctx.emit(out, ops.Scale((t.name,), t.shape, scale, shift))]


for _kind in ("Add", "Sub", "Mul", "Div"):
    register(_kind, 1, 6, 7, 13, 14)(
        lambda ctx, node, attrs, args, _k=_kind: _elementwise(ctx, node, args, _k))


@register("Relu", 1, 6, 13, 14)
def _relu(ctx: _Context, node: Any, attrs: Mapping[str, Any], args: list[Value | None]
          ) -> list[Value]:
    x = _tensor(args[0], node, "input")
    return [ctx.emit(node.output[0], ops.Relu((x.name,), x.shape))]


@register("Conv", 1, 11)
def _conv(ctx: _Context, node: Any, attrs: Mapping[str, Any], args: list[Value | None]
          ) -> list[Value]:
    x = _tensor(args[0], node, "input X")
    w = _const(args[1], node, "weight W").astype(np.float64)
    c, h, wid = _chw(x, node)
    if w.ndim != 4:
        raise NodeUnsupported(f"only 2-D convolutions are supported; weight shape {list(w.shape)}")
    group = int(attrs.get("group", 1))
    kernel = (w.shape[2], w.shape[3])
    strides = _pairs(attrs.get("strides"), 1)
    dilations = _pairs(attrs.get("dilations"), 1)
    if w.shape[1] * group != c or w.shape[0] % group:
        raise NodeUnsupported(f"weight {list(w.shape)} with group={group} does not fit {c} input "
                              "channels")
    pads = _window_pads(attrs, (h, wid), kernel, strides, dilations)  # type: ignore[arg-type]
    bias = np.zeros(w.shape[0])
    if len(args) > 2 and args[2] is not None:
        bias = _const(args[2], node, "bias B").astype(np.float64).reshape(-1)
    oh, ow = ops.conv_output_hw((h, wid), kernel, strides, pads, dilations)  # type: ignore[arg-type]
    op = ops.Conv((x.name,), (w.shape[0], oh, ow), (c, h, wid), w, bias, strides,  # type: ignore[arg-type]
                  pads, dilations, group)  # type: ignore[arg-type]
    return [ctx.emit(node.output[0], op)]


def _pool_geometry(x: Tensor, node: Any, attrs: Mapping[str, Any]
                   ) -> tuple[tuple[int, int, int], tuple[int, int], tuple[int, int],
                              tuple[int, int, int, int], tuple[int, int], tuple[int, int, int]]:
    c, h, w = _chw(x, node)
    kernel = _pairs(attrs.get("kernel_shape"), 1)
    strides = _pairs(attrs.get("strides"), 1)
    dilations = _pairs(attrs.get("dilations"), 1)
    pads = _window_pads(attrs, (h, w), kernel, strides, dilations)  # type: ignore[arg-type]
    oh, ow = ops.conv_output_hw((h, w), kernel, strides, pads, dilations,  # type: ignore[arg-type]
                                bool(attrs.get("ceil_mode", 0)))
    return ((c, h, w), kernel, strides, pads, dilations, (c, oh, ow))  # type: ignore[return-value]


@register("MaxPool", 1, 8, 10, 11, 12)
def _maxpool(ctx: _Context, node: Any, attrs: Mapping[str, Any], args: list[Value | None]
             ) -> list[Value]:
    x = _tensor(args[0], node, "input")
    if len(node.output) > 1 and node.output[1]:
        raise NodeUnsupported("the Indices output is not supported")
    in_shape, kernel, strides, pads, dilations, out_shape = _pool_geometry(x, node, attrs)
    return [ctx.emit(node.output[0], ops.MaxPool((x.name,), out_shape, in_shape, kernel, strides,
                                                 pads, dilations))]


@register("AveragePool", 1, 7, 10, 11, 19)
def _avgpool(ctx: _Context, node: Any, attrs: Mapping[str, Any], args: list[Value | None]
             ) -> list[Value]:
    x = _tensor(args[0], node, "input")
    in_shape, kernel, strides, pads, dilations, out_shape = _pool_geometry(x, node, attrs)
    if dilations != (1, 1):
        raise NodeUnsupported("dilations other than 1 are not supported")
    return [ctx.emit(node.output[0], ops.AvgPool((x.name,), out_shape, in_shape, kernel, strides,
                                                 pads, bool(attrs.get("count_include_pad", 0))))]


@register("GlobalAveragePool", 1)
def _global_avgpool(ctx: _Context, node: Any, attrs: Mapping[str, Any], args: list[Value | None]
                    ) -> list[Value]:
    x = _tensor(args[0], node, "input")
    c, h, w = _chw(x, node)
    return [ctx.emit(node.output[0], ops.AvgPool((x.name,), (c, 1, 1), (c, h, w), (h, w), (1, 1),
                                                 (0, 0, 0, 0), True))]


@register("BatchNormalization", 1, 6, 7, 9, 14, 15)
def _batchnorm(ctx: _Context, node: Any, attrs: Mapping[str, Any], args: list[Value | None]
               ) -> list[Value]:
    x = _tensor(args[0], node, "input X")
    if attrs.get("training_mode", 0) or (len(node.output) > 1 and any(node.output[1:])):
        raise NodeUnsupported("training mode is not supported; export the model in eval mode")
    gamma, beta, mean, var = (_const(a, node, "parameter").astype(np.float64).reshape(-1)
                              for a in args[1:5])
    scale_c = gamma / np.sqrt(var + float(attrs.get("epsilon", 1e-5)))
    shift_c = beta - mean * scale_c
    per_channel = (1, x.shape[0]) + (1,) * (len(x.shape) - 1)
    scale = _broadcast_const(scale_c.reshape(per_channel), x.shape)
    shift = _broadcast_const(shift_c.reshape(per_channel), x.shape)
    return [ctx.emit(node.output[0], ops.Scale((x.name,), x.shape, scale, shift))]


@register("Flatten", 1, 9, 11, 13, 21)
def _flatten(ctx: _Context, node: Any, attrs: Mapping[str, Any], args: list[Value | None]
             ) -> list[Value]:
    x = _tensor(args[0], node, "input")
    axis = int(attrs.get("axis", 1))
    if axis < 0:
        axis += len(x.shape) + 1
    if axis != 1:
        raise NodeUnsupported(f"axis={attrs.get('axis')} is not supported; only axis=1 "
                              "(keep the batch axis)")
    return [_identity(ctx, node.output[0], x, (size_of(x.shape),))]


@register("Reshape", 1, 5, 13, 14, 19, 21)
def _reshape(ctx: _Context, node: Any, attrs: Mapping[str, Any], args: list[Value | None]
             ) -> list[Value]:
    x = _tensor(args[0], node, "input")
    target = [int(v) for v in _const(args[1], node, "shape").reshape(-1)] if len(args) > 1 \
        else list(attrs.get("shape", []))
    full = (1, *x.shape)
    dims = [full[i] if (d == 0 and not attrs.get("allowzero", 0)) else d
            for i, d in enumerate(target)]
    if dims.count(-1) > 1:
        raise NodeUnsupported(f"shape {target} has more than one -1")
    if -1 in dims:
        known = int(np.prod([d for d in dims if d != -1]))
        dims[dims.index(-1)] = size_of(full) // max(known, 1)
    if not dims or dims[0] != 1:
        raise NodeUnsupported(f"target shape {target} does not keep the batch axis first")
    return [_identity(ctx, node.output[0], x, tuple(dims[1:]))]


@register("Transpose", 1, 13, 21)
def _transpose(ctx: _Context, node: Any, attrs: Mapping[str, Any], args: list[Value | None]
               ) -> list[Value]:
    x = _tensor(args[0], node, "input")
    perm = list(attrs.get("perm", range(len(x.shape) + 1)[::-1]))
    if perm[0] != 0:
        raise NodeUnsupported(f"perm={perm} moves the batch axis; only perm[0] == 0 is supported")
    axes = [p - 1 for p in perm[1:]]
    index = np.arange(size_of(x.shape), dtype=np.int64).reshape(x.shape).transpose(axes)
    shape = tuple(index.shape)
    return [ctx.emit(node.output[0], ops.Permute((x.name,), shape, index.reshape(-1),
                                                 size_of(x.shape)))]


def _squeeze_like(ctx: _Context, node: Any, attrs: Mapping[str, Any], args: list[Value | None],
                  squeeze: bool) -> list[Value]:
    if not any(isinstance(a, Tensor) for a in args):
        return _fold_constant(ctx, node, attrs, args)
    x = _tensor(args[0], node, "input")
    axes = attrs.get("axes")
    if axes is None and len(args) > 1 and args[1] is not None:
        axes = [int(a) for a in _const(args[1], node, "axes").reshape(-1)]
    full = [1, *x.shape]
    if squeeze:
        rank = len(full)
        drop = {a % rank for a in axes} if axes is not None else \
            {i for i, d in enumerate(full) if d == 1 and i > 0}
        if 0 in drop:
            raise NodeUnsupported("squeezing the batch axis is not supported")
        shape = [d for i, d in enumerate(full) if i not in drop]
    else:
        rank = len(full) + len(axes or [])
        shape = list(full)
        for a in sorted(a % rank for a in axes or []):
            if a == 0:
                raise NodeUnsupported("unsqueezing before the batch axis is not supported")
            shape.insert(a, 1)
    return [_identity(ctx, node.output[0], x, tuple(shape[1:]))]


register("Squeeze", 1, 11, 13, 21)(lambda c, n, a, args: _squeeze_like(c, n, a, args, True))
register("Unsqueeze", 1, 11, 13, 21)(lambda c, n, a, args: _squeeze_like(c, n, a, args, False))


@register("Concat", 1, 4, 11, 13)
def _concat(ctx: _Context, node: Any, attrs: Mapping[str, Any], args: list[Value | None]
            ) -> list[Value]:
    if not any(isinstance(a, Tensor) for a in args):
        return _fold_constant(ctx, node, attrs, args)
    parts = [_tensor(a, node, "input") for a in args]
    rank = len(parts[0].shape) + 1
    axis = int(attrs["axis"]) % rank
    if axis == 0:
        raise NodeUnsupported("concatenation along the batch axis is not supported")
    offsets = np.cumsum([0] + [size_of(p.shape) for p in parts])
    blocks = [np.arange(size_of(p.shape), dtype=np.int64).reshape(p.shape) + off
              for p, off in zip(parts, offsets)]
    try:
        index = np.concatenate(blocks, axis=axis - 1)
    except ValueError as exc:
        raise NodeUnsupported(f"inputs of shapes {[list(p.shape) for p in parts]} cannot be "
                              f"concatenated along axis {axis}") from exc
    return [ctx.emit(node.output[0], ops.Concat(tuple(p.name for p in parts), tuple(index.shape),
                                                index.reshape(-1)))]


def _alias(ctx: _Context, node: Any, attrs: Mapping[str, Any], args: list[Value | None]
           ) -> list[Value]:
    if node.op_type == "Dropout" and len(node.output) > 1 and node.output[1]:
        raise NodeUnsupported("the mask output is not supported")
    if node.op_type == "Dropout" and len(args) > 2 and isinstance(args[2], np.ndarray) \
            and bool(args[2]):
        raise NodeUnsupported("training_mode=True is not supported")
    assert args[0] is not None
    return [args[0]]


register("Identity", 1, 13, 14, 16, 19, 21)(_alias)
register("Dropout", 1, 6, 7, 10, 12, 13, 22)(_alias)


@register("Constant", 1, 9, 11, 12, 13, 19, 21)
def _constant(ctx: _Context, node: Any, attrs: Mapping[str, Any], args: list[Value | None]
              ) -> list[Value]:
    import onnx.numpy_helper as nph
    for key, value in attrs.items():
        if key == "value":
            return [nph.to_array(value)]
        if key in ("value_float", "value_int"):
            return [np.array(value)]
        if key in ("value_floats", "value_ints"):
            return [np.array(list(value))]
    raise NodeUnsupported(f"attributes {sorted(attrs)} are not supported; use 'value'")


@register("Shape", 1, 13, 15, 19, 21)
def _shape(ctx: _Context, node: Any, attrs: Mapping[str, Any], args: list[Value | None]
           ) -> list[Value]:
    full = np.array((1, *args[0].shape), dtype=np.int64) if isinstance(args[0], Tensor) \
        else np.array(np.shape(args[0]), dtype=np.int64)
    start, end = int(attrs.get("start", 0)), attrs.get("end")
    return [full[start:None if end is None else int(end)]]


# Ops that are only ever evaluated on constants (shape arithmetic of exported graphs).
_CONSTANT_ONLY = ("Gather", "Cast", "Slice", "ConstantOfShape", "Range", "Equal", "Where",
                  "ReduceProd", "Floor", "Ceil", "Sqrt", "Pow", "Neg", "Abs", "Min", "Max")


def _fold_constant(ctx: _Context, node: Any, attrs: Mapping[str, Any], args: list[Value | None]
                   ) -> list[Value]:
    """Evaluate a node whose inputs are all constants with onnx's reference evaluator."""
    if any(isinstance(a, Tensor) for a in args):
        raise NodeUnsupported("it is only supported on constant inputs (shape arithmetic)")
    from onnx import helper
    from onnx.reference import ReferenceEvaluator
    names = [f"in{i}" for i in range(len(args))]
    inputs = [helper.make_tensor_value_info(n, 0, None) for n in names]
    outputs = [helper.make_tensor_value_info(o, 0, None) for o in node.output]
    clone = helper.make_node(node.op_type, names, list(node.output), domain=node.domain,
                             **{k: v for k, v in attrs.items()})
    graph = helper.make_graph([clone], "fold", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ctx.opset)])
    feeds = {n: a for n, a in zip(names, args) if a is not None}
    return list(ReferenceEvaluator(model).run(None, feeds))


for _op in _CONSTANT_ONLY:
    _REGISTRY[_op] = {0: _fold_constant}  # version 0: any schema version


# ---------------------------------------------------------------------------- driver
def _read_model(source: Any) -> tuple[Any, str]:
    import onnx
    if isinstance(source, onnx.ModelProto):
        return source, "ModelProto"
    if not isinstance(source, (str, os.PathLike)):
        raise InvalidInputError(f"load_onnx expects a path or an onnx.ModelProto; got "
                                f"{type(source).__name__}.")
    path = Path(source)
    if not path.is_file():
        raise InvalidInputError(f"ONNX file not found: {str(path)!r}.")
    try:
        data = path.read_bytes()
        if path.suffix == ".gz" or data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # onnx raises DecodeError, OSError, EOFError, ...
        raise InvalidModelError(f"{str(path)!r} is not a readable ONNX model "
                                f"({type(exc).__name__}: {exc}).") from exc
    if not model.graph.node:
        raise InvalidModelError(f"{str(path)!r} has an empty graph; it is not a usable ONNX model "
                                "(truncated or not ONNX?).")
    return model, str(path)


def _attributes(node: Any) -> dict[str, Any]:
    from onnx import helper
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _converter_for(op_type: str, domain: str, opset: int) -> Converter | None:
    import onnx
    table = _REGISTRY.get(op_type)
    if table is None or domain not in ("", "ai.onnx"):
        return None
    if 0 in table:
        return table[0]
    try:
        since = onnx.defs.get_schema(op_type, max_inclusive_version=opset).since_version
    except Exception:  # onnx.defs.SchemaError: op not defined at this opset
        return None
    return table.get(since)


def load_onnx(source: str | os.PathLike[str] | Any, *, simplify_graph: bool = True) -> Network:
    """Load an ONNX model (path, `.onnx.gz` path or `onnx.ModelProto`) as a `Network`.

    Parameters
    ----------
    source : path or onnx.ModelProto
        The model. The first input axis is the batch axis; all other dims must be fixed.
    simplify_graph : bool
        Fold normalisation/BatchNorm/permutations into neighbouring linear ops (default).

    Returns
    -------
    Network

    Raises
    ------
    InvalidInputError
        The file does not exist.
    InvalidModelError
        The file is not a readable ONNX model, or its graph is malformed (NaN weights,
        several inputs or outputs, unknown dimensions).
    UnsupportedModelError
        One message naming every node whose op or attributes cannot be encoded.

    Example
    -------
    >>> net = load_onnx("mnist_relu_3_50.onnx")
    """
    model, description = _read_model(source)
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    ctx = _Context(opset)
    import onnx.numpy_helper as nph
    for init in graph.initializer:
        ctx.values[init.name] = nph.to_array(init)
    runtime_inputs = [i for i in graph.input if i.name not in ctx.values]
    if len(runtime_inputs) != 1:
        raise InvalidModelError(
            f"{description} has {len(runtime_inputs)} runtime inputs "
            f"({[i.name for i in runtime_inputs]}); only single-input networks are supported.")
    if len(graph.output) != 1:
        raise InvalidModelError(f"{description} has {len(graph.output)} outputs "
                                f"({[o.name for o in graph.output]}); exactly one is supported.")
    inp = runtime_inputs[0]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
    if len(dims) < 2 or any(d is None or d <= 0 for d in dims[1:]):
        raise InvalidModelError(
            f"Input {inp.name!r} has shape {dims}; milpverify needs a leading batch axis and "
            "fixed positive sizes for every other axis.")
    in_shape = tuple(int(d) for d in dims[1:])
    ctx.values[inp.name] = ctx.emit(inp.name, ops.Input((), in_shape))

    problems: list[str] = []
    for position, node in enumerate(graph.node):
        label = f"{node.name or node.output[0]!r} ({node.op_type}, opset {opset})"
        args = [ctx.values.get(n) if n else None for n in node.input]
        if any(n and n not in ctx.values for n in node.input):
            # An input was produced by an unsupported node; that node is reported already.
            if _converter_for(node.op_type, node.domain, opset) is None:
                problems.append(label)
            continue
        converter = _converter_for(node.op_type, node.domain, opset)
        if converter is None:
            problems.append(label)
            continue
        try:
            outputs = converter(ctx, node, _attributes(node), args)
        except NodeUnsupported as exc:
            problems.append(f"{label}: {exc}")
            continue
        for name, value in zip(node.output, outputs):
            ctx.values[name] = value
    if problems:
        raise UnsupportedModelError(
            f"{len(problems)} node{'s' if len(problems) > 1 else ''} in {description} cannot be "
            f"encoded: {'; '.join(problems)}. Supported ONNX ops: {', '.join(supported_ops())} "
            "(Add/Sub/Mul/Div with a constant operand; only piecewise-linear ReLU/MaxPool "
            "networks can be encoded as a MILP).")
    out = ctx.values.get(graph.output[0].name)
    if not isinstance(out, Tensor):
        raise InvalidModelError(f"The output of {description} does not depend on its input.")
    nodes = _live_nodes(ctx.nodes, out.name)
    origin = Origin(description, model.SerializeToString(), inp.name,
                    tuple(1 if d is None else d for d in dims))
    net = Network(nodes, out.name, origin=origin, notes=[f"loaded from {description}"])
    return simplify(net) if simplify_graph else net


def _live_nodes(nodes: list[tuple[str, ops.Op]], output: str) -> list[tuple[str, ops.Op]]:
    """Drop nodes that do not feed the output (e.g. shape-only branches)."""
    by_name = dict(nodes)
    live, stack = set(), [output]
    while stack:
        name = stack.pop()
        if name not in live:
            live.add(name)
            stack.extend(by_name[name].inputs)
    inputs = [n for n, op in nodes if isinstance(op, ops.Input)]
    live.update(inputs)
    return [(n, op) for n, op in nodes if n in live]
