"""The per-node rules of `from_torch`: the values the recording run sees (`_Runtime`), the
helpers that read them, and one handler per module type, function or method (`_tables`).

torch is imported only inside the functions of this module.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from milpverify.ir import ops
from milpverify.ir.ops import FloatArray, size_of

if TYPE_CHECKING:
    from milpverify.frontends.torch import _Converter

_BATCH = 2  # batch size of the recording run; 2 so that batch-mixing reshapes are detected


@dataclass(frozen=True)
class _Runtime:
    """A value that depends on the network input: IR node `name`, per-sample `shape`."""

    name: str
    shape: tuple[int, ...]


class _Poison:
    """The output of an unsupported node (already reported)."""


_POISON = _Poison()


class _Unsupported(Exception):
    """Raised by a handler for a call it cannot express; the message says why."""


Handler = Callable[["_Converter", Any, list[Any], dict[str, Any], Any], Any]


# ---------------------------------------------------------------------------- helpers
def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        if len(value) == 1:
            return int(value[0]), int(value[0])
        if len(value) != 2:
            raise _Unsupported(f"expected an int or a pair, got {value!r}")
        return int(value[0]), int(value[1])
    return int(value), int(value)


def _numpy(value: Any) -> FloatArray:
    """A constant (torch tensor, number, array) as float64 numpy."""
    import torch
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().to(torch.float64).numpy().copy()
    if isinstance(value, (bool, int, float, np.ndarray, np.number)):
        return np.asarray(value, dtype=np.float64)
    raise _Unsupported(f"operand of type {type(value).__name__} is not a constant tensor or number")


def _broadcast_const(c: FloatArray, shape: tuple[int, ...]) -> FloatArray:
    """Broadcast a constant against a tensor of per-sample `shape` (batch axis 1), flat."""
    full = (1, *shape)
    try:
        if np.broadcast_shapes(c.shape, full) != full:
            raise ValueError
    except ValueError:
        raise _Unsupported(f"constant of shape {list(c.shape)} would broadcast the tensor of "
                           f"shape {list(full)} to another shape") from None
    return np.broadcast_to(c, full).reshape(-1).copy()


def _chw(x: _Runtime) -> tuple[int, int, int]:
    if len(x.shape) != 3:
        raise _Unsupported(f"only 2-D (N, C, H, W) inputs are supported; got per-sample shape "
                           f"{list(x.shape)}")
    return x.shape[0], x.shape[1], x.shape[2]


def _recorded_shape(out: Any) -> tuple[int, ...]:
    import torch
    if not isinstance(out, torch.Tensor) or out.dim() < 1 or out.shape[0] != _BATCH:
        raise _Unsupported("its output is not a batched tensor")
    return tuple(int(d) for d in out.shape[1:])


def _bind(args: list[Any], kwargs: dict[str, Any], names: tuple[str, ...],
          defaults: dict[str, Any]) -> dict[str, Any]:
    """Positional `args` (after the input) and `kwargs` as one dict with defaults."""
    bound = dict(defaults)
    bound.update(dict(zip(names, args)))
    bound.update(kwargs)
    return bound


# ---------------------------------------------------------------------------- handlers
def _first_runtime(args: list[Any]) -> _Runtime:
    if not args or not isinstance(args[0], _Runtime):
        raise _Unsupported("its first operand must be the runtime tensor")
    return args[0]


def _h_alias(cv: _Converter, n: Any, args: list[Any], kwargs: dict[str, Any], out: Any) -> Any:
    return _first_runtime(args)


def _h_relu(cv: _Converter, n: Any, args: list[Any], kwargs: dict[str, Any], out: Any) -> Any:
    x = _first_runtime(args)
    return cv.emit(n.name, ops.Relu((x.name,), x.shape), "relu")


def _h_clamp(cv: _Converter, n: Any, args: list[Any], kwargs: dict[str, Any], out: Any) -> Any:
    x = _first_runtime(args)
    p = _bind(args[1:], kwargs, ("min", "max"), {"min": None, "max": None})
    low = p["min"]
    is_zero = low is not None and not isinstance(low, _Runtime) \
        and _numpy(low).size == 1 and float(_numpy(low).reshape(-1)[0]) == 0.0
    if p["max"] is not None or not is_zero:
        raise _Unsupported("only clamp(min=0) (a ReLU) is supported")
    return cv.emit(n.name, ops.Relu((x.name,), x.shape), "relu")


def _h_arith(kind: str) -> Handler:
    def handler(cv: _Converter, n: Any, args: list[Any], kwargs: dict[str, Any], out: Any) -> Any:
        a = args[0] if args else kwargs.get("input")
        b = args[1] if len(args) > 1 else kwargs.get("other")
        alpha = kwargs.get("alpha", 1)
        if kwargs.get("rounding_mode") is not None:
            raise _Unsupported("rounding_mode is not piecewise linear")
        if alpha != 1:
            if isinstance(b, _Runtime):
                size = size_of(b.shape)
                b = cv.scale(n, b, np.full(size, float(alpha)), np.zeros(size), "/alpha")
            else:
                b = _numpy(b) * float(alpha)
        return cv.arith(n, kind, a, b)
    return handler


def _h_neg(cv: _Converter, n: Any, args: list[Any], kwargs: dict[str, Any], out: Any) -> Any:
    x = _first_runtime(args)
    size = size_of(x.shape)
    return cv.scale(n, x, -np.ones(size), np.zeros(size))


def _h_index_function(cv: _Converter, n: Any, args: list[Any], kwargs: dict[str, Any],
                      out: Any) -> Any:
    return cv.index_op(n, n.target, args, kwargs)


def _h_index_method(cv: _Converter, n: Any, args: list[Any], kwargs: dict[str, Any],
                    out: Any) -> Any:
    _first_runtime(args)
    return cv.index_op(n, lambda x, *a, **k: getattr(x, n.target)(*a, **k), args, kwargs)


def _h_cat(cv: _Converter, n: Any, args: list[Any], kwargs: dict[str, Any], out: Any) -> Any:
    tensors = args[0] if args else kwargs.get("tensors")
    if not isinstance(tensors, (list, tuple)) or not all(isinstance(t, _Runtime) for t in tensors):
        raise _Unsupported("every concatenated tensor must depend on the input (no constants)")
    return cv.index_op(n, n.target, args, kwargs, concat=True)


def _h_linear_fn(cv: _Converter, n: Any, args: list[Any], kwargs: dict[str, Any],
                 out: Any) -> Any:
    p = _bind(args[1:], kwargs, ("weight", "bias"), {"bias": None})
    return cv.affine(n, _first_runtime(args), p["weight"], p["bias"])


def _h_conv_fn(cv: _Converter, n: Any, args: list[Any], kwargs: dict[str, Any], out: Any) -> Any:
    p = _bind(args[1:], kwargs, ("weight", "bias", "stride", "padding", "dilation", "groups"),
              {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1})
    return cv.conv(n, _first_runtime(args), p["weight"], p["bias"], p["stride"], p["padding"],
                   p["dilation"], p["groups"])


def _h_maxpool_fn(cv: _Converter, n: Any, args: list[Any], kwargs: dict[str, Any],
                  out: Any) -> Any:
    p = _bind(args[1:], kwargs, ("kernel_size", "stride", "padding", "dilation", "ceil_mode",
                                 "return_indices"), {})
    return cv.maxpool(n, _first_runtime(args), p, _recorded_shape(out))


def _h_avgpool_fn(cv: _Converter, n: Any, args: list[Any], kwargs: dict[str, Any],
                  out: Any) -> Any:
    p = _bind(args[1:], kwargs, ("kernel_size", "stride", "padding", "ceil_mode",
                                 "count_include_pad", "divisor_override"), {})
    return cv.avgpool(n, _first_runtime(args), p, _recorded_shape(out))


def _h_adaptive_fn(cv: _Converter, n: Any, args: list[Any], kwargs: dict[str, Any],
                   out: Any) -> Any:
    return cv.adaptive_avgpool(n, _first_runtime(args), _recorded_shape(out))


def _h_dropout_fn(cv: _Converter, n: Any, args: list[Any], kwargs: dict[str, Any],
                  out: Any) -> Any:
    p = _bind(args[1:], kwargs, ("p", "training", "inplace"), {"p": 0.5, "training": True})
    if p["training"] and p["p"] > 0:
        raise _Unsupported("dropout in training mode is random; pass training=False / call "
                           ".eval()")
    return _first_runtime(args)


# --- modules (args are the call arguments; the module is `cv.gm.get_submodule(n.target)`)
def _module(cv: _Converter, n: Any) -> Any:
    return cv.gm.get_submodule(n.target)


def _m_linear(cv: _Converter, n: Any, args: list[Any], kwargs: dict[str, Any], out: Any) -> Any:
    mod = _module(cv, n)
    return cv.affine(n, _first_runtime(args), mod.weight, mod.bias)


def _m_conv(cv: _Converter, n: Any, args: list[Any], kwargs: dict[str, Any], out: Any) -> Any:
    mod = _module(cv, n)
    if mod.padding_mode != "zeros":
        raise _Unsupported(f"padding_mode={mod.padding_mode!r} is not supported; only 'zeros'")
    return cv.conv(n, _first_runtime(args), mod.weight, mod.bias, mod.stride, mod.padding,
                   mod.dilation, mod.groups)


def _m_maxpool(cv: _Converter, n: Any, args: list[Any], kwargs: dict[str, Any], out: Any) -> Any:
    mod = _module(cv, n)
    p = {k: getattr(mod, k) for k in ("kernel_size", "stride", "padding", "dilation",
                                      "return_indices")}
    return cv.maxpool(n, _first_runtime(args), p, _recorded_shape(out))


def _m_avgpool(cv: _Converter, n: Any, args: list[Any], kwargs: dict[str, Any], out: Any) -> Any:
    mod = _module(cv, n)
    p = {k: getattr(mod, k) for k in ("kernel_size", "stride", "padding", "count_include_pad",
                                      "divisor_override")}
    return cv.avgpool(n, _first_runtime(args), p, _recorded_shape(out))


def _m_adaptive(cv: _Converter, n: Any, args: list[Any], kwargs: dict[str, Any], out: Any) -> Any:
    return cv.adaptive_avgpool(n, _first_runtime(args), _recorded_shape(out))


def _batchnorm(cv: _Converter, n: Any, x: _Runtime, mean_t: Any, var_t: Any, weight: Any,
               bias: Any, eps: float) -> _Runtime:
    if any(isinstance(v, _Runtime) for v in (mean_t, var_t, weight, bias)):
        raise _Unsupported("statistics and affine parameters must be constants")
    mean, var = _numpy(mean_t).reshape(-1), _numpy(var_t).reshape(-1)
    gamma = _numpy(weight).reshape(-1) if weight is not None else np.ones_like(mean)
    beta = _numpy(bias).reshape(-1) if bias is not None else np.zeros_like(mean)
    if not x.shape or x.shape[0] != mean.size:
        raise _Unsupported(f"{mean.size} channels do not fit per-sample shape {list(x.shape)}")
    scale_c = gamma / np.sqrt(var + float(eps))
    shift_c = beta - mean * scale_c
    per_channel = (1, mean.size) + (1,) * (len(x.shape) - 1)
    return cv.scale(n, x, _broadcast_const(scale_c.reshape(per_channel), x.shape),
                    _broadcast_const(shift_c.reshape(per_channel), x.shape))


def _m_batchnorm(cv: _Converter, n: Any, args: list[Any], kwargs: dict[str, Any], out: Any
                 ) -> Any:
    mod = _module(cv, n)
    if mod.training:
        raise _Unsupported("training mode normalises with batch statistics; call .eval()")
    if mod.running_mean is None or mod.running_var is None:
        raise _Unsupported("track_running_stats=False normalises with batch statistics")
    return _batchnorm(cv, n, _first_runtime(args), mod.running_mean, mod.running_var,
                      mod.weight, mod.bias, mod.eps)


def _h_batchnorm_fn(cv: _Converter, n: Any, args: list[Any], kwargs: dict[str, Any],
                    out: Any) -> Any:
    p = _bind(args[1:], kwargs, ("running_mean", "running_var", "weight", "bias", "training",
                                 "momentum", "eps"),
              {"weight": None, "bias": None, "training": False, "eps": 1e-5})
    if p["training"] or p["running_mean"] is None or p["running_var"] is None:
        raise _Unsupported("batch statistics (training mode or no running stats); call .eval()")
    return _batchnorm(cv, n, _first_runtime(args), p["running_mean"], p["running_var"],
                      p["weight"], p["bias"], p["eps"])


def _m_dropout(cv: _Converter, n: Any, args: list[Any], kwargs: dict[str, Any], out: Any) -> Any:
    mod = _module(cv, n)
    if mod.training and mod.p > 0:
        raise _Unsupported("dropout in training mode is random; call .eval()")
    return _first_runtime(args)


def _m_index(cv: _Converter, n: Any, args: list[Any], kwargs: dict[str, Any], out: Any) -> Any:
    return cv.index_op(n, _module(cv, n), args, kwargs)


def _tables() -> tuple[dict[type, Handler], dict[Any, Handler], dict[str, Handler]]:
    import torch
    import torch.nn.functional as F
    nn = torch.nn
    modules: dict[type, Handler] = {
        nn.Linear: _m_linear, nn.Conv2d: _m_conv, nn.ReLU: _h_relu, nn.MaxPool2d: _m_maxpool,
        nn.AvgPool2d: _m_avgpool, nn.AdaptiveAvgPool2d: _m_adaptive,
        nn.BatchNorm1d: _m_batchnorm, nn.BatchNorm2d: _m_batchnorm,
        nn.Flatten: _m_index, nn.Unflatten: _m_index, nn.Identity: _h_alias,
        nn.Dropout: _m_dropout, nn.Dropout1d: _m_dropout, nn.Dropout2d: _m_dropout,
        nn.Dropout3d: _m_dropout, nn.AlphaDropout: _m_dropout,
        nn.FeatureAlphaDropout: _m_dropout,
    }
    functions: dict[Any, Handler] = {
        F.relu: _h_relu, torch.relu: _h_relu, F.relu_: _h_relu, torch.relu_: _h_relu,
        torch.clamp: _h_clamp, torch.clamp_min: _h_clamp,
        F.linear: _h_linear_fn, F.conv2d: _h_conv_fn, F.max_pool2d: _h_maxpool_fn,
        F.avg_pool2d: _h_avgpool_fn, F.adaptive_avg_pool2d: _h_adaptive_fn,
        F.dropout: _h_dropout_fn, F.batch_norm: _h_batchnorm_fn,
        torch.flatten: _h_index_function, torch.reshape: _h_index_function,
        torch.squeeze: _h_index_function, torch.unsqueeze: _h_index_function,
        torch.permute: _h_index_function, torch.transpose: _h_index_function,
        operator.getitem: _h_index_function,
        torch.cat: _h_cat, torch.concat: _h_cat, torch.concatenate: _h_cat,
        operator.neg: _h_neg, torch.neg: _h_neg,
    }
    for kind, fns in {"add": (operator.add, operator.iadd, torch.add),
                      "sub": (operator.sub, operator.isub, torch.sub),
                      "mul": (operator.mul, operator.imul, torch.mul),
                      "div": (operator.truediv, operator.itruediv, torch.div)}.items():
        for fn in fns:
            functions[fn] = _h_arith(kind)
    methods: dict[str, Handler] = {
        "relu": _h_relu, "relu_": _h_relu, "clamp": _h_clamp, "clamp_min": _h_clamp,
        "neg": _h_neg,
        "add": _h_arith("add"), "add_": _h_arith("add"), "sub": _h_arith("sub"),
        "sub_": _h_arith("sub"), "mul": _h_arith("mul"), "mul_": _h_arith("mul"),
        "div": _h_arith("div"), "div_": _h_arith("div"),
    }
    for name in ("view", "reshape", "flatten", "permute", "transpose", "squeeze", "unsqueeze"):
        methods[name] = _h_index_method
    for name in ("contiguous", "float", "double", "to", "detach", "clone"):
        methods[name] = _h_alias
    return modules, functions, methods


def supported_torch() -> list[str]:
    """Names of the torch modules, functions and Tensor methods `from_torch` converts."""
    modules, functions, methods = _tables()
    names = [f"nn.{m.__name__}" for m in modules]
    names += sorted({_function_name(f) for f in functions})
    names += sorted(f"Tensor.{m}" for m in methods)
    return names


def _function_name(fn: Any) -> str:
    import torch
    import torch.nn.functional as F
    name = getattr(fn, "__name__", repr(fn))
    if getattr(F, name, None) is fn:
        return f"F.{name}"
    if getattr(operator, name, None) is fn:
        return f"operator.{name}"
    return f"torch.{name}" if getattr(torch, name, None) is fn else name
