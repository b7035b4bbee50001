"""ONNX converters for layers: Gemm/MatMul, element-wise constants, Conv, pooling, BatchNorm,
shape ops (Flatten, Reshape, Transpose, Squeeze, Unsqueeze), Concat and aliases.

Each converter maps one ONNX node to canonical IR ops exactly, or raises `NodeUnsupported`.
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
    _chw,
    _const,
    _Context,
    _identity,
    _pairs,
    _tensor,
    _window_pads,
    register,
)
from milpverify.ir import ops
from milpverify.ir.ops import FloatArray, size_of

# ---------------------------------------------------------------------------- converters
_MAX_DENSE = 50_000_000   # entries of a block-diagonal MatMul map that milpverify will build


def _matmul_map(ctx: _Context, x: Tensor, c: np.ndarray, tensor_left: bool
                ) -> tuple[FloatArray, tuple[int, ...]]:
    """Dense matrix and per-sample output shape of `x @ c` (tensor_left) or `c @ x` (ONNX MatMul
    semantics: a 1-D operand is a vector, leading axes of `x` are a batch of matrices)."""
    shape = x.shape
    contracted = (shape[-1] if tensor_left else shape[-2 if len(shape) > 1 else -1]) if shape else 1
    repeat = size_of(shape) // max(contracted, 1)    # copies of the constant on the diagonal
    if repeat * repeat * c.size > _MAX_DENSE:
        raise NodeUnsupported(f"per-sample shape {list(shape)} with a constant of shape "
                              f"{list(c.shape)} needs a dense map larger than {_MAX_DENSE} entries")
    if tensor_left:
        vector = c.ndim == 1
        c2 = c.reshape(-1, 1) if vector else c
        if c2.ndim != 2 or not shape or shape[-1] != c2.shape[0]:
            raise NodeUnsupported(f"per-sample shape {list(shape)} @ constant {list(c.shape)} "
                                  "is not supported; the constant must be (k,) or (k, m)")
        out = shape[:-1] if vector else (*shape[:-1], c2.shape[1])
        return np.kron(np.eye(size_of(shape[:-1])), c2.T), out
    if c.ndim != 2:
        raise NodeUnsupported(f"constant {list(c.shape)} @ tensor: the constant must be 2-D")
    if len(shape) == 1:
        if ctx.lead:
            raise NodeUnsupported(f"constant {list(c.shape)} @ a (batch, {shape[0]}) tensor "
                                  "contracts over the batch axis (mixes samples)")
        if shape[0] != c.shape[1]:
            raise NodeUnsupported(f"constant {list(c.shape)} @ tensor {list(shape)}: sizes differ")
        return c.copy(), (c.shape[0],)
    if shape[-2] != c.shape[1]:
        raise NodeUnsupported(f"constant {list(c.shape)} @ tensor of per-sample shape "
                              f"{list(shape)}: sizes differ")
    rows, cols = size_of(shape[:-2]), shape[-1]
    return (np.kron(np.eye(rows), np.kron(c, np.eye(cols))),
            (*shape[:-2], c.shape[0], cols))


def _transposed(ctx: _Context, name: str, x: Tensor) -> Tensor:
    """`x.T` of a 2-D per-sample tensor as a Permute node."""
    if len(x.shape) != 2:
        raise NodeUnsupported(f"a transposed operand must be 2-D; got {list(x.shape)}")
    index = np.arange(size_of(x.shape), dtype=np.int64).reshape(x.shape).T
    return ctx.emit(name, ops.Permute((x.name,), tuple(index.shape), index.reshape(-1),
                                      size_of(x.shape)))


@register("Gemm", 1, 6, 7, 9, 11, 13)
def _gemm(ctx: _Context, node: Any, attrs: Mapping[str, Any], args: list[Value | None]
          ) -> list[Value]:
    """`alpha * A' B' + beta * C` with one of A, B the runtime tensor and the other a constant.

    With a batch axis only the tensor as A works (the tensor as B would mix samples); a graph
    without a batch axis may have the weight on either side (e.g. `Gemm(W, x)`, x of (k, 1)).
    """
    tensor_left = isinstance(args[0], Tensor)
    x = _tensor(args[0] if tensor_left else args[1], node, "input A or B")
    c = _const(args[1] if tensor_left else args[0], node, "other input").astype(np.float64)
    if c.ndim != 2:
        raise NodeUnsupported(f"constant operand of shape {list(c.shape)} is not 2-D")
    trans_x, trans_c = (attrs.get("transA", 0), attrs.get("transB", 0)) if tensor_left \
        else (attrs.get("transB", 0), attrs.get("transA", 0))
    if len(x.shape) + ctx.lead != 2:
        raise NodeUnsupported(f"the tensor operand must be 2-D; got per-sample shape "
                              f"{list(x.shape)}")
    if trans_x:
        if ctx.lead:
            raise NodeUnsupported("transA=1 is not supported; only transA=0 (the batched input "
                                  "cannot be transposed)")
        x = _transposed(ctx, f"{node.output[0]}/transpose", x)
    weight, out = _matmul_map(ctx, x, c.T if trans_c else c, tensor_left)
    bias = np.zeros(size_of(out))
    if len(args) > 2 and args[2] is not None:
        bias_c = _const(args[2], node, "input C").astype(np.float64)
        full = ctx.full(out)
        try:
            if np.broadcast_shapes(bias_c.shape, full) != full:
                raise ValueError
            bias = float(attrs.get("beta", 1.0)) * np.broadcast_to(bias_c, full).reshape(-1)
        except ValueError:
            raise NodeUnsupported(f"bias C of shape {list(bias_c.shape)} does not broadcast to "
                                  f"the output shape {list(full)} (or depends on the batch row)"
                                  ) from None
    weight = float(attrs.get("alpha", 1.0)) * weight
    return [ctx.emit(node.output[0], ops.Affine((x.name,), out, np.ascontiguousarray(weight),
                                                bias.copy()))]


@register("MatMul", 1, 9, 13)
def _matmul(ctx: _Context, node: Any, attrs: Mapping[str, Any], args: list[Value | None]
            ) -> list[Value]:
    """`x @ W` or `W @ x` with a constant W (see `_matmul_map` for the shapes)."""
    tensor_left = isinstance(args[0], Tensor)
    x = _tensor(args[0] if tensor_left else args[1], node, "input A or B")
    c = _const(args[1] if tensor_left else args[0], node, "other input").astype(np.float64)
    weight, out = _matmul_map(ctx, x, c, tensor_left)
    return [ctx.emit(node.output[0], ops.Affine((x.name,), out, np.ascontiguousarray(weight),
                                                np.zeros(size_of(out))))]


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
    c = _broadcast_const(c, t.shape, ctx.lead)
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
    scale = _broadcast_const(scale_c.reshape(per_channel), x.shape, ctx.lead)
    shift = _broadcast_const(shift_c.reshape(per_channel), x.shape, ctx.lead)
    return [ctx.emit(node.output[0], ops.Scale((x.name,), x.shape, scale, shift))]


@register("Flatten", 1, 9, 11, 13, 21)
def _flatten(ctx: _Context, node: Any, attrs: Mapping[str, Any], args: list[Value | None]
             ) -> list[Value]:
    if not any(isinstance(a, Tensor) for a in args):   # shape arithmetic: evaluate
        return ctx.fold(ctx, node, attrs, args)
    x = _tensor(args[0], node, "input")
    full = ctx.full(x.shape)
    axis = int(attrs.get("axis", 1))
    axis += len(full) if axis < 0 else 0
    if ctx.lead == 0:      # no batch axis: Flatten is a plain reshape to 2-D
        return [_identity(ctx, node.output[0], x, (size_of(full[:axis]), size_of(full[axis:])))]
    if axis != 1:
        raise NodeUnsupported(f"axis={attrs.get('axis')} is not supported; only axis=1 "
                              "(keep the batch axis)")
    return [_identity(ctx, node.output[0], x, (size_of(x.shape),))]


@register("Reshape", 1, 5, 13, 14, 19, 21)
def _reshape(ctx: _Context, node: Any, attrs: Mapping[str, Any], args: list[Value | None]
             ) -> list[Value]:
    if not any(isinstance(a, Tensor) for a in args):   # shape arithmetic: evaluate
        return ctx.fold(ctx, node, attrs, args)
    x = _tensor(args[0], node, "input")
    target = [int(v) for v in _const(args[1], node, "shape").reshape(-1)] if len(args) > 1 \
        else list(attrs.get("shape", []))
    full = ctx.full(x.shape)
    dims = [full[i] if (d == 0 and not attrs.get("allowzero", 0)) else d
            for i, d in enumerate(target)]
    if dims.count(-1) > 1:
        raise NodeUnsupported(f"shape {target} has more than one -1")
    if -1 in dims:
        known = int(np.prod([d for d in dims if d != -1]))
        dims[dims.index(-1)] = size_of(full) // max(known, 1)
    if ctx.lead and (not dims or dims[0] != 1):
        raise NodeUnsupported(f"target shape {target} does not keep the batch axis first")
    return [_identity(ctx, node.output[0], x, tuple(dims[ctx.lead:]))]


@register("Transpose", 1, 13, 21)
def _transpose(ctx: _Context, node: Any, attrs: Mapping[str, Any], args: list[Value | None]
               ) -> list[Value]:
    if not any(isinstance(a, Tensor) for a in args):   # shape arithmetic: evaluate
        return ctx.fold(ctx, node, attrs, args)
    x = _tensor(args[0], node, "input")
    perm = list(attrs.get("perm", range(len(x.shape) + ctx.lead)[::-1]))
    if ctx.lead and perm[0] != 0:
        raise NodeUnsupported(f"perm={perm} moves the batch axis; only perm[0] == 0 is supported")
    axes = [p - ctx.lead for p in perm[ctx.lead:]]
    index = np.arange(size_of(x.shape), dtype=np.int64).reshape(x.shape).transpose(axes)
    shape = tuple(index.shape)
    return [ctx.emit(node.output[0], ops.Permute((x.name,), shape, index.reshape(-1),
                                                 size_of(x.shape)))]


def _squeeze_like(ctx: _Context, node: Any, attrs: Mapping[str, Any], args: list[Value | None],
                  squeeze: bool) -> list[Value]:
    if not any(isinstance(a, Tensor) for a in args):
        return ctx.fold(ctx, node, attrs, args)
    x = _tensor(args[0], node, "input")
    axes = attrs.get("axes")
    if axes is None and len(args) > 1 and args[1] is not None:
        axes = [int(a) for a in _const(args[1], node, "axes").reshape(-1)]
    full = list(ctx.full(x.shape))
    if squeeze:
        rank = len(full)
        drop = {a % rank for a in axes} if axes is not None else \
            {i for i, d in enumerate(full) if d == 1 and i >= ctx.lead}
        if ctx.lead and 0 in drop:
            raise NodeUnsupported("squeezing the batch axis is not supported")
        shape = [d for i, d in enumerate(full) if i not in drop]
    else:
        rank = len(full) + len(axes or [])
        shape = list(full)
        for a in sorted(a % rank for a in axes or []):
            if ctx.lead and a == 0:
                raise NodeUnsupported("unsqueezing before the batch axis is not supported")
            shape.insert(a, 1)
    return [_identity(ctx, node.output[0], x, tuple(shape[ctx.lead:]))]


register("Squeeze", 1, 11, 13, 21)(lambda c, n, a, args: _squeeze_like(c, n, a, args, True))
register("Unsqueeze", 1, 11, 13, 21)(lambda c, n, a, args: _squeeze_like(c, n, a, args, False))


@register("Concat", 1, 4, 11, 13)
def _concat(ctx: _Context, node: Any, attrs: Mapping[str, Any], args: list[Value | None]
            ) -> list[Value]:
    if not any(isinstance(a, Tensor) for a in args):
        return ctx.fold(ctx, node, attrs, args)
    parts = [_tensor(a, node, "input") for a in args]
    rank = len(parts[0].shape) + ctx.lead
    axis = int(attrs["axis"]) % rank
    if ctx.lead and axis == 0:
        raise NodeUnsupported("concatenation along the batch axis is not supported")
    offsets = np.cumsum([0] + [size_of(p.shape) for p in parts])
    blocks = [np.arange(size_of(p.shape), dtype=np.int64).reshape(p.shape) + off
              for p, off in zip(parts, offsets)]
    try:
        index = np.concatenate(blocks, axis=axis - ctx.lead)
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



def _pad_widths(node: Any, attrs: Mapping[str, Any], args: list[Value | None], rank: int
                ) -> tuple[list[int], list[int], float]:
    """Per-axis (begin, end) widths over all `rank` axes (batch included) and the fill value."""
    if "paddings" in attrs or "pads" in attrs:            # Pad-1 / Pad-2: attributes
        pads = [int(p) for p in attrs.get("pads", attrs.get("paddings"))]
        value = float(attrs.get("value", 0.0))
        axes = list(range(rank))
    else:                                                  # Pad-11 and later: inputs
        pads = [int(p) for p in _const(args[1], node, "pads").reshape(-1)]
        value = 0.0
        if len(args) > 2 and args[2] is not None:
            fill = _const(args[2], node, "constant_value").reshape(-1)
            value = float(fill[0]) if fill.size else 0.0
        axes = list(range(rank))
        if len(args) > 3 and args[3] is not None:
            axes = [int(a) % rank for a in _const(args[3], node, "axes").reshape(-1)]
    if len(pads) != 2 * len(axes):
        raise NodeUnsupported(f"pads {pads} do not give a begin and an end for each of "
                              f"{len(axes)} axes")
    begin, end = [0] * rank, [0] * rank
    for k, axis in enumerate(axes):
        begin[axis], end[axis] = pads[k], pads[k + len(axes)]
    return begin, end, value


@register("Pad", 1, 2, 11, 13, 18, 19, 21)
def _pad(ctx: _Context, node: Any, attrs: Mapping[str, Any], args: list[Value | None]
         ) -> list[Value]:
    """Constant padding of the spatial axes of (N, C, H, W) as an exact linear op.

    Zero-width pads vanish. Otherwise the pad is a depthwise 1x1 identity `Conv` whose own zero
    padding adds the cells (`simplify.fold_pad` merges it into a following Conv/AvgPool when
    that is exact), plus a `Scale` that writes a non-zero fill value into the new cells.
    """
    x = _tensor(args[0], node, "input")
    mode = attrs.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode != "constant":
        raise NodeUnsupported(f"mode={mode!r} is not supported; only mode='constant'")
    begin, end, value = _pad_widths(node, attrs, args, len(x.shape) + ctx.lead)
    begin, end = [0] * (1 - ctx.lead) + begin, [0] * (1 - ctx.lead) + end
    if not any(begin) and not any(end):
        return [x]
    if any(w < 0 for w in begin + end):
        raise NodeUnsupported(f"negative pads (cropping) {begin + end} are not supported")
    if len(x.shape) != 3 or any(begin[:2]) or any(end[:2]):
        raise NodeUnsupported(f"only the H and W axes of an (N, C, H, W) input can be padded; "
                              f"got pads {begin + end} on per-sample shape {list(x.shape)}")
    c, h, w = x.shape
    pads = (begin[2], begin[3], end[2], end[3])
    out_shape = (c, h + pads[0] + pads[2], w + pads[1] + pads[3])
    identity = np.ones((c, 1, 1, 1))
    name = node.output[0]
    conv = ops.Conv((x.name,), out_shape, (c, h, w), identity, np.zeros(c), (1, 1), pads,
                    (1, 1), c)
    if value == 0.0:
        return [ctx.emit(name, conv)]
    padded = ctx.emit(f"{name}/zero_pad", conv)
    inside = np.zeros(out_shape[1:], dtype=bool)
    inside[pads[0]:pads[0] + h, pads[1]:pads[1] + w] = True
    fill = np.broadcast_to(np.where(inside, 0.0, value), out_shape).reshape(-1)
    return [ctx.emit(name, ops.Scale((padded.name,), out_shape, np.ones(size_of(out_shape)),
                                     fill.copy()))]
