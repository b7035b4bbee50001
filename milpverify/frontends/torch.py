"""`from_torch`: a torch `nn.Module` -> milpverify `Network`, through `torch.fx`.

torch is imported only inside the functions of this module. The module is traced with
`torch.fx.symbolic_trace`, then run once on a zero batch of two samples to record the
concrete value of every fx node (shapes, constant sub-expressions such as `x.size(0)`).
Each fx node is then converted by one handler, looked up by module type (for `call_module`),
by function object (`call_function`) or by method name (`call_method`):

- `nn.Linear`, `F.linear` -> `Affine`; `nn.Conv2d`, `F.conv2d` -> `Conv` (zero padding only);
- `nn.ReLU`, `F.relu`, `torch.relu`, `Tensor.relu`, `clamp(min=0)` -> `Relu`;
- `nn.MaxPool2d`, `F.max_pool2d` -> `MaxPool`; `nn.AvgPool2d`, `F.avg_pool2d`,
  `nn.AdaptiveAvgPool2d` (divisible sizes) -> `AvgPool` (plus a `Scale` when torch's divisor
  differs from the IR's, e.g. `ceil_mode` with `count_include_pad`, or `divisor_override`);
- `nn.BatchNorm1d/2d`, `F.batch_norm` in eval mode -> `Scale`;
- data movement (`nn.Flatten`, `nn.Unflatten`, `flatten`, `view`, `reshape`, `permute`,
  `transpose`, `squeeze`, `unsqueeze`, slicing) -> `Permute`, and `torch.cat` -> `Concat`: the
  index is obtained by running the same call on a tensor of element indices;
- `+`/`-` of two tensors -> `Add`; `+ - * /` by a number or constant tensor -> `Scale`;
- `nn.Identity`, dropout in eval mode, `contiguous`, `float`, `double`, `to`, `detach`,
  `clone` -> aliases.

Every unsupported node is collected first, then one `UnsupportedModelError` names them all.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np

from milpverify.errors import InvalidInputError, InvalidModelError, UnsupportedModelError
from milpverify.frontends.torch_layers import (
    _BATCH,
    _POISON,
    Handler,
    _broadcast_const,
    _chw,
    _function_name,
    _numpy,
    _pair,
    _Poison,
    _recorded_shape,
    _Runtime,
    _tables,
    _Unsupported,
    supported_torch,
)
from milpverify.ir import ops
from milpverify.ir.network import Network, Origin
from milpverify.ir.ops import FloatArray, size_of
from milpverify.ir.simplify import simplify


# ---------------------------------------------------------------------------- converter
class _Converter:
    """Walks the fx graph, emitting IR nodes and collecting problems."""

    def __init__(self, gm: Any, recorded: dict[str, Any]) -> None:
        self.gm = gm
        self.recorded = recorded
        self.nodes: list[tuple[str, ops.Op]] = []
        self.used: set[str] = set()
        self.problems: list[str] = []

    def name_for(self, kind: str, fx_name: str) -> str:
        base = fx_name if fx_name.startswith(kind) else f"{kind}_{fx_name.lstrip('_') or fx_name}"
        name, k = base, 1
        while name in self.used:
            name, k = f"{base}_{k}", k + 1
        self.used.add(name)
        return name

    def emit(self, fx_name: str, op: ops.Op, kind: str | None = None) -> _Runtime:
        name = self.name_for(kind or op.kind, fx_name)
        self.nodes.append((name, op))
        return _Runtime(name, op.shape)

    # --------------------------------------------------------------- shared converters
    def affine(self, n: Any, x: _Runtime, weight: Any, bias: Any) -> _Runtime:
        if not isinstance(x, _Runtime) or isinstance(weight, _Runtime) \
                or isinstance(bias, _Runtime):
            raise _Unsupported("only a runtime input with constant weight and bias is supported")
        w = _numpy(weight)
        if w.ndim != 2:
            raise _Unsupported(f"weight of shape {list(w.shape)} is not a matrix")
        if x.shape != (w.shape[1],):
            raise _Unsupported(f"only 1-D per-sample inputs of {w.shape[1]} features are "
                               f"supported; got per-sample shape {list(x.shape)}")
        b = np.zeros(w.shape[0]) if bias is None else _numpy(bias).reshape(-1)
        return self.emit(n.name, ops.Affine((x.name,), (w.shape[0],), w, b), "affine")

    def conv(self, n: Any, x: _Runtime, weight: Any, bias: Any, stride: Any, padding: Any,
             dilation: Any, groups: Any) -> _Runtime:
        if not isinstance(x, _Runtime) or isinstance(weight, _Runtime) \
                or isinstance(bias, _Runtime):
            raise _Unsupported("only a runtime input with constant weight and bias is supported")
        c, h, w_in = _chw(x)
        w = _numpy(weight)
        if w.ndim != 4:
            raise _Unsupported(f"only 2-D convolutions are supported; weight shape {list(w.shape)}")
        group = int(groups)
        if w.shape[1] * group != c or w.shape[0] % group:
            raise _Unsupported(f"weight {list(w.shape)} with groups={group} does not fit {c} "
                               "input channels")
        kernel = (w.shape[2], w.shape[3])
        strides, dilations = _pair(stride), _pair(dilation)
        if isinstance(padding, str):
            if padding == "valid":
                pads = (0, 0, 0, 0)
            elif padding == "same":
                total = [dilations[a] * (kernel[a] - 1) for a in range(2)]
                pads = (total[0] // 2, total[1] // 2, total[0] - total[0] // 2,
                        total[1] - total[1] // 2)
            else:
                raise _Unsupported(f"padding={padding!r} is not supported")
        else:
            ph, pw = _pair(padding)
            pads = (ph, pw, ph, pw)
        b = np.zeros(w.shape[0]) if bias is None else _numpy(bias).reshape(-1)
        oh, ow = ops.conv_output_hw((h, w_in), kernel, strides, pads, dilations)
        op = ops.Conv((x.name,), (w.shape[0], oh, ow), (c, h, w_in), w, b, strides, pads,
                      dilations, group)
        return self.emit(n.name, op, "conv")

    def maxpool(self, n: Any, x: _Runtime, p: dict[str, Any], out_shape: tuple[int, ...]
                ) -> _Runtime:
        if p.get("return_indices"):
            raise _Unsupported("return_indices=True is not supported")
        in_shape = _chw(x)
        kernel = _pair(p["kernel_size"])
        stride = p.get("stride")
        strides = kernel if stride is None or stride == [] or stride == () else _pair(stride)
        ph, pw = _pair(p.get("padding", 0))
        op = ops.MaxPool((x.name,), out_shape, in_shape, kernel, strides, (ph, pw, ph, pw),
                         _pair(p.get("dilation", 1)))
        if np.any((op.windows < 0).all(axis=1)):
            raise _Unsupported("a pooling window lies entirely in the padding")
        return self.emit(n.name, op, "maxpool")

    def avgpool(self, n: Any, x: _Runtime, p: dict[str, Any], out_shape: tuple[int, ...]
                ) -> _Runtime:
        c, h, w = _chw(x)
        kernel = _pair(p["kernel_size"])
        stride = p.get("stride")
        strides = kernel if stride is None or stride == [] or stride == () else _pair(stride)
        ph, pw = _pair(p.get("padding", 0))
        include = bool(p.get("count_include_pad", True))
        override = p.get("divisor_override")
        op = ops.AvgPool((x.name,), out_shape, (c, h, w), kernel, strides, (ph, pw, ph, pw),
                         include)
        # torch's divisor per output cell (aten avg_pool2d): the window clipped to the
        # padded input when counting padding, else clipped to the input.
        _, oh, ow = out_shape
        divisors = np.empty((oh, ow))
        ir_divisors = np.empty((oh, ow))
        for i in range(oh):
            for j in range(ow):
                hs, ws = i * strides[0] - ph, j * strides[1] - pw
                he, we = min(hs + kernel[0], h + ph), min(ws + kernel[1], w + pw)
                pool = (he - hs) * (we - ws)
                inside = (min(he, h) - max(hs, 0)) * (min(we, w) - max(ws, 0))
                if inside <= 0:
                    raise _Unsupported("a pooling window lies entirely in the padding")
                divisors[i, j] = override if override else (pool if include else inside)
                ir_divisors[i, j] = kernel[0] * kernel[1] if include else inside
        out = self.emit(n.name, op, "avgpool")
        if not np.array_equal(divisors, ir_divisors):
            ratio = np.broadcast_to(ir_divisors / divisors, out_shape).reshape(-1).copy()
            out = self.emit(f"{out.name}/divisor", ops.Scale((out.name,), out_shape, ratio,
                                                             np.zeros(ratio.size)), "scale")
        return out

    def adaptive_avgpool(self, n: Any, x: _Runtime, out_shape: tuple[int, ...]) -> _Runtime:
        c, h, w = _chw(x)
        _, oh, ow = out_shape
        if h % oh or w % ow:
            raise _Unsupported(f"output size {[oh, ow]} does not divide the input size {[h, w]}")
        kernel = (h // oh, w // ow)
        return self.emit(n.name, ops.AvgPool((x.name,), out_shape, (c, h, w), kernel, kernel,
                                             (0, 0, 0, 0), True), "avgpool")

    def scale(self, n: Any, x: _Runtime, scale: FloatArray, shift: FloatArray,
              suffix: str = "") -> _Runtime:
        return self.emit(n.name + suffix, ops.Scale((x.name,), x.shape, scale, shift), "scale")

    def arith(self, n: Any, kind: str, a: Any, b: Any) -> _Runtime:
        """`a <kind> b` for kind in add/sub/mul/div, at least one operand runtime."""
        if isinstance(a, _Runtime) and isinstance(b, _Runtime):
            if a.shape != b.shape:
                raise _Unsupported(f"tensor operands of shapes {list(a.shape)} and "
                                   f"{list(b.shape)} differ; only equal shapes are supported")
            if kind == "add":
                return self.emit(n.name, ops.Add((a.name, b.name), a.shape), "add")
            if kind == "sub":
                size = size_of(b.shape)
                neg = self.scale(n, b, -np.ones(size), np.zeros(size), "/negate")
                return self.emit(n.name, ops.Add((a.name, neg.name), a.shape), "add")
            raise _Unsupported(f"{kind} of two runtime tensors is not piecewise linear")
        tensor_first = isinstance(a, _Runtime)
        t, c = (a, b) if tensor_first else (b, a)
        const = _broadcast_const(_numpy(c), t.shape)
        one, zero = np.ones_like(const), np.zeros_like(const)
        if kind == "add":
            scale, shift = one, const
        elif kind == "sub":
            scale, shift = (one, -const) if tensor_first else (-one, const)
        elif kind == "mul":
            scale, shift = const, zero
        else:
            if not tensor_first:
                raise _Unsupported("constant / tensor is not piecewise linear")
            if np.any(const == 0):
                raise _Unsupported("division by a constant containing 0")
            scale, shift = 1.0 / const, zero
        return self.scale(n, t, scale, shift)

    def index_op(self, n: Any, fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any],
                 concat: bool = False) -> _Runtime:
        """A pure data-movement call, converted by running it on element indices."""
        import torch
        from torch.fx.node import map_aggregate
        parts: list[_Runtime] = []

        def collect(v: Any) -> Any:
            if isinstance(v, _Runtime):
                parts.append(v)
            return v
        map_aggregate((args, kwargs), collect)
        total = sum(size_of(p.shape) for p in parts)
        offsets = np.cumsum([0] + [size_of(p.shape) for p in parts])
        position = iter(range(len(parts)))

        def substitute(v: Any) -> Any:
            if isinstance(v, _Runtime):
                k = next(position)
                base = torch.arange(size_of(v.shape), dtype=torch.int64) + int(offsets[k])
                batch = torch.arange(_BATCH, dtype=torch.int64) * total
                return base.reshape(1, *v.shape) + batch.reshape(_BATCH, *([1] * len(v.shape)))
            if isinstance(v, (_Poison,)):
                raise _Unsupported("an input is unsupported")
            return v
        sub_args, sub_kwargs = map_aggregate((args, kwargs), substitute)
        try:
            out = fn(*sub_args, **sub_kwargs)
        except Exception as exc:  # torch raises RuntimeError, IndexError, TypeError, ...
            raise _Unsupported(f"could not be replayed on an index tensor "
                               f"({type(exc).__name__}: {exc})") from exc
        if not isinstance(out, torch.Tensor) or out.dim() < 1 or out.shape[0] != _BATCH \
                or not bool(torch.equal(out[1] - out[0], torch.full_like(out[0], total))):
            raise _Unsupported("it mixes or drops the batch axis (only per-sample data movement "
                               "keeping axis 0 as the batch is supported)")
        index = out[0].reshape(-1).numpy().astype(np.int64)
        shape = tuple(int(d) for d in out.shape[1:])
        if concat:
            return self.emit(n.name, ops.Concat(tuple(p.name for p in parts), shape, index),
                             "concat")
        if len(parts) != 1:
            raise _Unsupported("expected exactly one runtime tensor operand")
        return self.emit(n.name, ops.Permute((parts[0].name,), shape, index, total), "permute")


# ---------------------------------------------------------------------------- driver
def _record(gm: Any, input_shape: tuple[int, ...], dtype: Any) -> dict[str, Any]:
    """Concrete value of every fx node for a zero batch of `_BATCH` samples."""
    import torch
    import torch.fx

    recorded: dict[str, Any] = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n: Any) -> Any:
            try:
                result = super().run_node(n)
            except Exception as exc:  # name the failing node; whatever the module raises
                raise RuntimeError(f"node {n.name!r}: {type(exc).__name__}: {exc}") from exc
            recorded[n.name] = result
            return result

    clone = copy.deepcopy(gm).eval()  # eval: a training-mode BatchNorm must not update stats
    recorder = Recorder(clone)
    recorder.extra_traceback = False  # its error path imports torch._dynamo (seconds)
    with torch.no_grad():
        recorder.run(torch.zeros((_BATCH, *input_shape), dtype=dtype))
    return recorded


def _describe(gm: Any, n: Any) -> str:
    if n.op == "call_module":
        return f"{n.target!r} ({type(gm.get_submodule(n.target)).__name__})"
    if n.op == "call_method":
        return f"{n.name!r} (method Tensor.{n.target})"
    return f"{n.name!r} (function {_function_name(n.target)})"


def _handler(gm: Any, n: Any, tables: tuple[dict[type, Handler], dict[Any, Handler],
                                              dict[str, Handler]]) -> Handler | None:
    modules, functions, methods = tables
    if n.op == "call_module":
        return modules.get(type(gm.get_submodule(n.target)))
    if n.op == "call_method":
        return methods.get(n.target)
    try:
        return functions.get(n.target)
    except TypeError:  # unhashable target
        return None


def _live(nodes: list[tuple[str, ops.Op]], output: str) -> list[tuple[str, ops.Op]]:
    by_name = dict(nodes)
    live, stack = set(), [output]
    while stack:
        name = stack.pop()
        if name not in live:
            live.add(name)
            stack.extend(by_name[name].inputs)
    live.update(n for n, op in nodes if isinstance(op, ops.Input))
    return [(n, op) for n, op in nodes if n in live]


def from_torch(module: Any, input_shape: tuple[int, ...], *,
               simplify_graph: bool = True) -> Network:
    """Convert a torch `nn.Module` (eval mode) to a `Network`.

    Parameters
    ----------
    module : torch.nn.Module
        A module traceable by `torch.fx.symbolic_trace` (nn.Sequential, residual blocks
        `x + f(x)`, `torch.cat`, ...). BatchNorm and Dropout must be in eval mode.
    input_shape : tuple of int
        Shape of one sample, without the batch axis, e.g. ``(1, 28, 28)``.
    simplify_graph : bool
        Fold normalisation/BatchNorm/permutations into neighbouring linear ops (default).

    Returns
    -------
    Network
        Float64 copy of the module's parameters; `origin` has no ONNX bytes.

    Raises
    ------
    InvalidInputError
        `module` is not an `nn.Module`, `input_shape` is not a tuple of positive ints, or
        the module fails on a zero input of that shape.
    UnsupportedModelError
        One message naming every unsupported module/function (name and type), e.g. Sigmoid,
        Tanh, LSTM, training-mode BatchNorm, and listing the supported set.

    Example
    -------
    >>> net = from_torch(model.eval(), (1, 28, 28))
    """
    import torch

    if not isinstance(module, torch.nn.Module):
        raise InvalidInputError(
            f"from_torch expects a torch.nn.Module; got {type(module).__name__}.")
    shape = _input_shape(input_shape)
    kind = type(module).__name__
    gm, recorded = _trace(module, shape, kind)
    cv, output = _convert(gm, recorded, shape)
    if cv.problems:
        k = len(cv.problems)
        raise UnsupportedModelError(
            f"{k} node{'s' if k > 1 else ''} of torch module {kind} cannot be encoded: "
            f"{'; '.join(cv.problems)}. Supported: {', '.join(supported_torch())} "
            "(arithmetic only with a constant operand, except + and - of two tensors; "
            "only piecewise-linear ReLU/MaxPool networks can be encoded as a MILP).")
    if output is None:
        raise InvalidModelError(f"The output of torch module {kind} does not depend on its input.")
    nodes = _live(cv.nodes, output)
    net = Network(nodes, output, origin=Origin(description=f"torch module {kind}"),
                  notes=[f"converted from torch module {kind} with torch.fx"])
    return simplify(net) if simplify_graph else net



def _input_shape(input_shape: Any) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise InvalidInputError(f"input_shape must be a tuple of ints; got {input_shape!r}.") \
            from None
    if not shape or any(d <= 0 for d in shape):
        raise InvalidInputError(f"input_shape must be a non-empty tuple of positive ints (one "
                                f"sample, without the batch axis); got {input_shape!r}.")
    return shape


def _trace(module: Any, shape: tuple[int, ...], kind: str) -> tuple[Any, dict[str, Any]]:
    """The fx graph of `module` and the value of each of its nodes on a zero batch."""
    import torch
    import torch.fx

    traced = module
    if torch.fx.Tracer().is_leaf_module(module, ""):
        traced = torch.nn.Sequential(module)  # a bare nn.Conv2d, nn.BatchNorm2d, ...
    try:
        gm = torch.fx.symbolic_trace(traced)
    except Exception as exc:  # fx raises TraceError, TypeError, NotImplementedError, ...
        raise UnsupportedModelError(
            f"torch.fx could not trace torch module {kind} ({type(exc).__name__}: {exc}); "
            "data-dependent control flow is not supported.") from exc
    floating = [t for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]
    dtype = floating[0].dtype if floating else torch.float32
    try:
        recorded = _record(gm, shape, dtype)
    except Exception as exc:  # whatever the module raises on a wrong shape
        raise InvalidInputError(
            f"torch module {kind} failed on a zero input of shape {[_BATCH, *shape]} "
            f"({exc}); is input_shape={list(shape)} right?") from exc
    return gm, recorded


def _convert(gm: Any, recorded: dict[str, Any], shape: tuple[int, ...]
             ) -> tuple[_Converter, str | None]:
    """Every fx node through its handler; the converter (IR nodes, problems) and the IR name
    of the output (None when the output does not depend on the input)."""
    import torch
    import torch.fx
    from torch.fx.node import map_aggregate

    tables = _tables()
    cv = _Converter(gm, recorded)
    env: dict[str, Any] = {}
    output: str | None = None
    placeholder_seen = False
    for n in gm.graph.nodes:
        if n.op == "placeholder":
            if placeholder_seen:
                if n.args:  # an argument with a default value: a constant
                    env[n.name] = n.args[0]
                    continue
                cv.problems.append(f"{n.name!r} (extra input): only single-input modules are "
                                   "supported")
                env[n.name] = _POISON
                continue
            placeholder_seen = True
            cv.used.add("input")
            cv.nodes.append(("input", ops.Input((), shape)))
            env[n.name] = _Runtime("input", shape)
            continue
        if n.op == "get_attr":
            env[n.name] = recorded[n.name]
            continue
        args = list(map_aggregate(n.args, lambda a: env[a.name] if isinstance(a, torch.fx.Node)
                                  else a))
        kwargs = dict(map_aggregate(dict(n.kwargs), lambda a: env[a.name]
                                    if isinstance(a, torch.fx.Node) else a))
        flat: list[Any] = []
        map_aggregate((args, kwargs), lambda v: flat.append(v) or v)
        if n.op == "output":
            result = args[0]
            if isinstance(result, _Runtime):
                output = result.name
            elif not isinstance(result, _Poison):
                cv.problems.append(f"output ({type(result).__name__}): the module must return "
                                   "one tensor that depends on its input")
            continue
        handler = _handler(gm, n, tables)
        poisoned = any(isinstance(v, _Poison) for v in flat)
        runtime = any(isinstance(v, _Runtime) for v in flat)
        if poisoned:
            if handler is None:
                cv.problems.append(_describe(gm, n))
            env[n.name] = _POISON
            continue
        out = recorded[n.name]
        if not runtime or (n.op in ("call_method", "call_function")
                           and (n.target in ("size", "dim", "numel") or n.target is getattr)
                           and not isinstance(out, torch.Tensor)):
            env[n.name] = out  # a constant (sub-)expression, e.g. a buffer or x.size(0)
            continue
        if handler is None:
            cv.problems.append(_describe(gm, n))
            env[n.name] = _POISON
            continue
        try:
            value = handler(cv, n, args, kwargs, out)
            if isinstance(value, _Runtime) and value.shape != _recorded_shape(out):
                raise _Unsupported(f"converted shape {list(value.shape)} differs from torch's "
                                   f"{list(_recorded_shape(out))}")
        except _Unsupported as exc:
            cv.problems.append(f"{_describe(gm, n)}: {exc}")
            value = _POISON
        env[n.name] = value
    return cv, output

__all__ = ["from_torch", "supported_torch"]
