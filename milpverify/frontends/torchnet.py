"""Compile a `Network` to a torch module, write trained parameters back, export ONNX.

This module imports torch at import time; nothing in `milpverify` imports it eagerly
(`import milpverify` never imports torch).

- `to_torch(net)` -> `TorchNet`: one small `nn.Module` per IR node, built by the rule for its
  op class in `TORCH_RULES`. Values flow as flat C-order batches `(n, size)` like the IR;
  `Affine`/`Conv` weights and biases are trainable `nn.Parameter`s.
- `to_network(module)` -> `Network` with the same nodes and the module's current parameters.
- `export_onnx(net_or_module, path)` writes a float32 ONNX graph directly from the IR with
  `onnx.helper` (Gemm, Conv, MaxPool, AveragePool, Relu, Add, Mul, Reshape, Flatten,
  Transpose, MatMul, Concat), loadable by `milpverify.load_onnx` and onnxruntime.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from milpverify.errors import InvalidInputError, UnsupportedModelError
from milpverify.ir import ops
from milpverify.ir.network import Network, Origin
from milpverify.ir.ops import FloatArray, size_of


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run with `threads` intra-op torch threads (None: keep the current setting), restoring
    the previous setting afterwards.

    Small networks are 10-100x faster with one thread than with several contending ones.
    """
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# ---------------------------------------------------------------------------- layers
def _tensor(array: Any, dtype: torch.dtype) -> torch.Tensor:
    return torch.as_tensor(np.array(array, dtype=np.float64), dtype=dtype)


class AffineLayer(nn.Module):
    """`y = x W^T + b` with trainable W (out, in) and b."""

    def __init__(self, op: ops.Affine, dtype: torch.dtype) -> None:
        super().__init__()
        self.weight = nn.Parameter(_tensor(op.weight, dtype))
        self.bias = nn.Parameter(_tensor(op.bias, dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class ConvLayer(nn.Module):
    """2-D convolution on flat (n, C*H*W) rows; explicit `F.pad` for asymmetric pads."""

    def __init__(self, op: ops.Conv, dtype: torch.dtype) -> None:
        super().__init__()
        self.weight = nn.Parameter(_tensor(op.weight, dtype))
        self.bias = nn.Parameter(_tensor(op.bias, dtype))
        self.in_shape = op.in_shape
        self.strides, self.dilations, self.group = op.strides, op.dilations, op.group
        top, left, bottom, right = op.pads
        self.symmetric = top == bottom and left == right
        self.padding = (top, left) if self.symmetric else (0, 0)
        self.pad = (left, right, top, bottom)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], *self.in_shape)
        if not self.symmetric:
            x = F.pad(x, self.pad)
        y = F.conv2d(x, self.weight, self.bias, self.strides, self.padding, self.dilations,
                     self.group)
        return y.reshape(y.shape[0], -1)


class MaxPoolLayer(nn.Module):
    """Max pooling: pad with -inf (also past the bottom/right edge for ceil-mode shapes)."""

    def __init__(self, op: ops.MaxPool, dtype: torch.dtype) -> None:
        super().__init__()
        c, h, w = op.in_shape
        _, oh, ow = op.shape
        top, left, bottom, right = op.pads
        need_h = (oh - 1) * op.strides[0] + op.dilations[0] * (op.kernel[0] - 1) + 1
        need_w = (ow - 1) * op.strides[1] + op.dilations[1] * (op.kernel[1] - 1) + 1
        bottom = max(bottom, need_h - h - top)
        right = max(right, need_w - w - left)
        self.in_shape, self.out_hw = op.in_shape, (oh, ow)
        self.pad = (left, right, top, bottom)
        self.kernel, self.strides, self.dilations = op.kernel, op.strides, op.dilations

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x.reshape(x.shape[0], *self.in_shape), self.pad, value=-float("inf"))
        y = F.max_pool2d(x, self.kernel, self.strides, 0, self.dilations)
        y = y[:, :, :self.out_hw[0], :self.out_hw[1]]
        return y.reshape(y.shape[0], -1)


class AvgPoolLayer(nn.Module):
    """Average pooling as a depthwise ones-convolution times a per-output reciprocal divisor."""

    def __init__(self, op: ops.AvgPool, dtype: torch.dtype) -> None:
        super().__init__()
        c, h, w = op.in_shape
        _, oh, ow = op.shape
        top, left, bottom, right = op.pads
        need_h = (oh - 1) * op.strides[0] + op.kernel[0]
        need_w = (ow - 1) * op.strides[1] + op.kernel[1]
        self.pad = (left, max(right, need_w - w - left), top, max(bottom, need_h - h - top))
        self.in_shape, self.out_hw, self.strides, self.channels = op.in_shape, (oh, ow), \
            op.strides, c
        self.register_buffer("kernel", torch.ones((c, 1, *op.kernel), dtype=dtype))
        matrix = op.linear_map[0]
        self.register_buffer("factor", _tensor(matrix.max(axis=1).toarray().reshape(-1), dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x.reshape(x.shape[0], *self.in_shape), self.pad)
        y = F.conv2d(x, self.kernel, None, self.strides, 0, 1, self.channels)
        y = y[:, :, :self.out_hw[0], :self.out_hw[1]]
        return y.reshape(y.shape[0], -1) * self.factor


class ScaleLayer(nn.Module):
    """Element-wise `y = scale * x + shift` (constant buffers)."""

    def __init__(self, op: ops.Scale, dtype: torch.dtype) -> None:
        super().__init__()
        self.register_buffer("scale", _tensor(op.scale, dtype))
        self.register_buffer("shift", _tensor(op.shift, dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


class PermuteLayer(nn.Module):
    """`y = x[:, index]` via `index_select`."""

    def __init__(self, op: ops.Permute, dtype: torch.dtype) -> None:
        super().__init__()
        self.register_buffer("index", torch.as_tensor(np.asarray(op.index, dtype=np.int64)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(1, self.index)


class ReluLayer(nn.Module):
    """`y = max(x, 0)`."""

    def __init__(self, op: ops.Relu, dtype: torch.dtype) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x)


class LeakyReluLayer(nn.Module):
    """`y = x` where `x >= 0`, else `slope * x` (per-neuron slope on flat rows)."""

    def __init__(self, op: ops.LeakyRelu, dtype: torch.dtype) -> None:
        super().__init__()
        self.register_buffer("slope", torch.as_tensor(np.asarray(op.slope), dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x >= 0, x, self.slope * x)


class AddLayer(nn.Module):
    """`y = a + b`."""

    def __init__(self, op: ops.Add, dtype: torch.dtype) -> None:
        super().__init__()

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


class ConcatLayer(nn.Module):
    """`y = cat(inputs, 1)[:, index]`."""

    def __init__(self, op: ops.Concat, dtype: torch.dtype) -> None:
        super().__init__()
        self.register_buffer("index", torch.as_tensor(np.asarray(op.index, dtype=np.int64)))

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=1).index_select(1, self.index)


TorchRule = Callable[[Any, torch.dtype], nn.Module]

TORCH_RULES: dict[type[ops.Op], TorchRule] = {
    ops.Affine: AffineLayer,
    ops.Conv: ConvLayer,
    ops.MaxPool: MaxPoolLayer,
    ops.AvgPool: AvgPoolLayer,
    ops.Scale: ScaleLayer,
    ops.Permute: PermuteLayer,
    ops.Relu: ReluLayer,
    ops.LeakyRelu: LeakyReluLayer,
    ops.Add: AddLayer,
    ops.Concat: ConcatLayer,
}


class TorchNet(nn.Module):
    """A `Network` compiled to torch; `forward` maps (n, *input_shape) to logits (n, classes).

    Attributes
    ----------
    net : Network
        The source network (structure and non-trainable ops).
    layers : nn.ModuleList
        One module per non-input node, in `names` order (topological).
    """

    def __init__(self, net: Network, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        self.net = net
        self.dtype = dtype
        self.input_name = net.input
        self.input_size = net.input_size
        self.output_name = net.output
        items = [(n, op) for n, op in net.items() if not isinstance(op, ops.Input)]
        missing = sorted({type(op).__name__ for _, op in items if type(op) not in TORCH_RULES})
        if missing:
            raise UnsupportedModelError(f"No torch rule for op types {missing}.")
        self.names = [n for n, _ in items]
        self.arguments = [op.inputs for _, op in items]
        self.layers = nn.ModuleList(TORCH_RULES[type(op)](op, dtype) for _, op in items)
        self._last_use: dict[str, int] = {}
        for k, args in enumerate(self.arguments):
            for a in args:
                self._last_use[a] = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch (any shape whose trailing elements are `input_size` per sample)."""
        x = x.to(self.dtype).reshape(-1, self.input_size)
        values: dict[str, torch.Tensor] = {self.input_name: x}
        for k, (name, args, layer) in enumerate(zip(self.names, self.arguments, self.layers)):
            values[name] = layer(*[values[a] for a in args])
            for a in set(args):  # free activations nobody reads any more
                if self._last_use.get(a) == k and a != self.output_name:
                    del values[a]
        return values[self.output_name]


def to_torch(net: Network, dtype: torch.dtype = torch.float64) -> TorchNet:
    """Compile `net` to a torch module (trainable Affine/Conv parameters).

    Parameters
    ----------
    net : Network
    dtype : torch.dtype
        Parameter and computation dtype (default float64, which matches `Network.forward`).

    Returns
    -------
    TorchNet
        ``module(x)`` takes (n, *input_shape) or (n, input_size) and returns (n, classes).

    Example
    -------
    >>> module = to_torch(load_onnx("wk17a_linf0.1.onnx"))
    >>> module(torch.rand(4, 1, 28, 28, dtype=torch.float64)).shape
    torch.Size([4, 10])
    """
    if not isinstance(net, Network):
        raise InvalidInputError(f"to_torch expects a Network; got {type(net).__name__}.")
    return TorchNet(net, dtype)


def _numpy(t: torch.Tensor) -> FloatArray:
    return t.detach().cpu().to(torch.float64).numpy().copy()


def to_network(module: TorchNet, *, onnx_origin: bool = True) -> Network:
    """A new `Network` with the structure of `module.net` and the module's current parameters.

    Parameters
    ----------
    module : TorchNet
        Made by `to_torch` (possibly trained since).
    onnx_origin : bool
        Give the result an `Origin` holding a float32 ONNX export of the new parameters, so
        `check_witness` re-runs witnesses in onnxruntime on the trained network (default).
        Otherwise the origin has no ONNX bytes (numpy checks only). The original origin is
        never kept: its ONNX bytes hold the old weights.

    Returns
    -------
    Network
    """
    if not isinstance(module, TorchNet):
        raise InvalidInputError(f"to_network expects a TorchNet made by to_torch; got "
                                f"{type(module).__name__}.")
    src = module.net
    layers = dict(zip(module.names, module.layers))
    nodes: list[tuple[str, ops.Op]] = []
    for name, op in src.items():
        if isinstance(op, (ops.Affine, ops.Conv)):
            layer = layers[name]
            op = dataclasses.replace(op, weight=_numpy(layer.weight).reshape(op.weight.shape),
                                     bias=_numpy(layer.bias).reshape(op.bias.shape))
        nodes.append((name, op))
    description = f"parameters of a torch module trained from {src.origin.description}"
    notes = [*src.notes, "parameters written back from a torch module"]
    net = Network(nodes, src.output, origin=Origin(description), notes=notes,
                  dropped_output=src.dropped_output)
    if onnx_origin:
        data = onnx_model(net).SerializeToString()
        net = Network(nodes, src.output, notes=notes, dropped_output=src.dropped_output,
                      origin=Origin(description, data, "input", (1, *net.input_shape)))
    return net


# ---------------------------------------------------------------------------- ONNX export
class _OnnxBuilder:
    """Accumulates ONNX nodes and float32 initializers; every value is a flat (N, size) tensor."""

    def __init__(self, net: Network) -> None:
        self.net = net
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.names: set[str] = set()

    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.names:
            name, k = f"{base}_{k}", k + 1
        self.names.add(name)
        return name

    def const(self, base: str, array: Any, dtype: Any = np.float32) -> str:
        from onnx import numpy_helper
        name = self.fresh(base)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=dtype), name))
        return name

    def node(self, op_type: str, inputs: list[str], base: str, **attrs: Any) -> str:
        from onnx import helper
        out = self.fresh(base)
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def unflatten(self, x: str, shape: tuple[int, ...], base: str) -> str:
        return self.node("Reshape", [x, self.const(f"{base}/shape", [-1, *shape], np.int64)],
                         f"{base}/unflatten")

    def flatten(self, x: str, base: str) -> str:
        return self.node("Flatten", [x], f"{base}/flatten", axis=1)

    def index(self, x: str, index: np.ndarray, source_size: int,
              source_shape: tuple[int, ...] | None, out_shape: tuple[int, ...], base: str) -> str:
        """`x[:, index]` as Identity, Reshape+Transpose, or a 0/1 MatMul."""
        if source_size == index.size and np.array_equal(index, np.arange(index.size)):
            return x
        if source_shape is not None and size_of(source_shape) == source_size \
                and index.size == source_size and len(source_shape) <= 5:
            base_index = np.arange(source_size).reshape(source_shape)
            for perm in itertools.permutations(range(len(source_shape))):
                if np.array_equal(base_index.transpose(perm).reshape(-1), index):
                    y = self.unflatten(x, source_shape, base)
                    y = self.node("Transpose", [y], f"{base}/transpose",
                                  perm=[0, *(p + 1 for p in perm)])
                    return self.flatten(y, base)
        matrix = np.zeros((source_size, index.size), dtype=np.float32)
        matrix[index, np.arange(index.size)] = 1.0
        return self.node("MatMul", [x, self.const(f"{base}/select", matrix)], f"{base}/select")


def _window_pads(op: Any) -> tuple[int, int, int, int]:
    """Pads whose floor-mode output is exactly `op.shape` (extra bottom/right cells absent)."""
    _, h, w = op.in_shape
    _, oh, ow = op.shape
    top, left, bottom, right = op.pads
    dil = getattr(op, "dilations", (1, 1))
    need_h = (oh - 1) * op.strides[0] + dil[0] * (op.kernel[0] - 1) + 1
    need_w = (ow - 1) * op.strides[1] + dil[1] * (op.kernel[1] - 1) + 1
    return top, left, max(bottom, need_h - h - top), max(right, need_w - w - left)


def _export_op(b: _OnnxBuilder, name: str, op: ops.Op, args: list[str]) -> str:
    if isinstance(op, ops.Affine):
        return b.node("Gemm", [args[0], b.const(f"{name}/weight", op.weight),
                               b.const(f"{name}/bias", op.bias)], name, transB=1)
    if isinstance(op, ops.Conv):
        x = b.unflatten(args[0], op.in_shape, name)
        y = b.node("Conv", [x, b.const(f"{name}/weight", op.weight),
                            b.const(f"{name}/bias", op.bias)], name,
                   kernel_shape=list(op.weight.shape[2:]), strides=list(op.strides),
                   pads=list(op.pads), dilations=list(op.dilations), group=op.group)
        return b.flatten(y, name)
    if isinstance(op, ops.MaxPool):
        pads = _window_pads(op)
        if any(p >= k for p, k in zip(pads, op.kernel * 2)):
            raise UnsupportedModelError(
                f"MaxPool {name!r} needs pads {list(pads)} not smaller than its kernel "
                f"{list(op.kernel)}; onnxruntime cannot run that.")
        x = b.unflatten(args[0], op.in_shape, name)
        y = b.node("MaxPool", [x], name, kernel_shape=list(op.kernel), strides=list(op.strides),
                   pads=list(pads), dilations=list(op.dilations))
        return b.flatten(y, name)
    if isinstance(op, ops.AvgPool):
        c = op.in_shape[0]
        x = b.unflatten(args[0], op.in_shape, name)
        pads = _window_pads(op)
        if pads == op.pads and all(p < k for p, k in zip(pads, op.kernel * 2)):
            y = b.node("AveragePool", [x], name, kernel_shape=list(op.kernel),
                       strides=list(op.strides), pads=list(pads),
                       count_include_pad=int(op.count_include_pad))
            return b.flatten(y, name)
        # Windows past the padding: a depthwise ones-convolution, then the exact divisors.
        ones = np.ones((c, 1, *op.kernel))
        y = b.node("Conv", [x, b.const(f"{name}/ones", ones)], name, kernel_shape=list(op.kernel),
                   strides=list(op.strides), pads=list(pads), group=c)
        factor = op.linear_map[0].max(axis=1).toarray().reshape(1, -1)
        return b.node("Mul", [b.flatten(y, name), b.const(f"{name}/divisor", factor)],
                      f"{name}/divide")
    if isinstance(op, ops.Scale):
        y = args[0]
        if not np.all(op.scale == 1.0):
            y = b.node("Mul", [y, b.const(f"{name}/scale", op.scale.reshape(1, -1))],
                       f"{name}/mul")
        if np.any(op.shift != 0.0) or y == args[0]:
            y = b.node("Add", [y, b.const(f"{name}/shift", op.shift.reshape(1, -1))], name)
        return y
    if isinstance(op, ops.Permute):
        source_shape = b.net.op(op.inputs[0]).shape
        return b.index(args[0], op.index, op.source_size, source_shape, op.shape, name)
    if isinstance(op, ops.Relu):
        return b.node("Relu", args, name)
    if isinstance(op, ops.LeakyRelu):
        return b.node("PRelu", [args[0], b.const(f"{name}/slope", op.slope.reshape(1, -1))],
                      name)
    if isinstance(op, ops.Add):
        return b.node("Add", args, name)
    if isinstance(op, ops.Concat):
        y = b.node("Concat", args, name, axis=1)
        total = sum(b.net.op(a).size for a in op.inputs)
        return b.index(y, op.index, total, None, op.shape, name)
    raise UnsupportedModelError(f"No ONNX export rule for op {type(op).__name__} ({name!r}).")


def onnx_model(net: Network, *, opset: int = 13, input_name: str = "input",
               output_name: str = "logits") -> Any:
    """The float32 `onnx.ModelProto` of `net` (input [N, *input_shape], output [N, classes])."""
    import onnx
    from onnx import TensorProto, helper
    b = _OnnxBuilder(net)
    b.names.update({input_name, output_name})
    values: dict[str, str] = {}
    for name, op in net.items():
        if isinstance(op, ops.Input):
            values[name] = input_name if len(op.shape) == 1 else b.flatten(input_name, "input")
        else:
            values[name] = _export_op(b, name, op, [values[a] for a in op.inputs])
    b.nodes.append(helper.make_node("Identity", [values[net.output]], [output_name],
                                    name=output_name))
    graph = helper.make_graph(
        b.nodes, "milpverify",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", *net.input_shape])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", net.num_classes])],
        initializer=b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="milpverify", doc_string=net.origin.description)
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def export_onnx(net_or_module: Network | nn.Module, path: str | os.PathLike[str], *,
                input_shape: tuple[int, ...] | None = None, opset: int = 13) -> Path:
    """Write a float32 ONNX file of a `Network`, a `TorchNet`, or a convertible torch module.

    The graph is written from the IR with `onnx.helper` (no torch exporter), so it loads back
    with `milpverify.load_onnx` and runs in onnxruntime. Weights are rounded to float32.

    Parameters
    ----------
    net_or_module : Network, TorchNet or torch.nn.Module
        A plain module is converted with `from_torch(module, input_shape)` first.
    path : path
        Output file.
    input_shape : tuple of int, optional
        Per-sample input shape; needed only for a plain torch module.
    opset : int
        ONNX opset (default 13).

    Returns
    -------
    Path
        The written file.

    Example
    -------
    >>> export_onnx(to_torch(net), "trained.onnx")
    """
    if isinstance(net_or_module, Network):
        net = net_or_module
    elif isinstance(net_or_module, TorchNet):
        net = to_network(net_or_module, onnx_origin=False)
    elif isinstance(net_or_module, nn.Module):
        if input_shape is None:
            raise InvalidInputError("export_onnx needs input_shape for a plain torch module.")
        from milpverify.frontends.torch import from_torch
        net = from_torch(net_or_module, input_shape)
    else:
        raise InvalidInputError(f"export_onnx expects a Network or a torch module; got "
                                f"{type(net_or_module).__name__}.")
    out = Path(path)
    out.write_bytes(onnx_model(net, opset=opset).SerializeToString())
    return out


__all__ = ["TORCH_RULES", "TorchNet", "export_onnx", "onnx_model", "to_network", "to_torch"]
