"""`load_onnx`: ONNX model -> milpverify `Network` (the only module that imports onnx).

Converters are registered per (op_type, schema since_version) in `onnx_base`; the model's
opset picks the schema version with `onnx.defs.get_schema(op, max_inclusive_version=opset)`.
Layer converters live in `onnx_layers`, piecewise-linear activations in `onnx_activations`;
this module holds the constant ops (which need onnx to read or evaluate), the dropping of a
trailing Softmax/LogSoftmax/Sigmoid, and the driver. Every unsupported node is collected
first, then one error names them all.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from milpverify.errors import InvalidInputError, InvalidModelError, UnsupportedModelError
from milpverify.frontends import onnx_activations, onnx_layers  # noqa: F401  (register their converters)
from milpverify.frontends.embedded import default_name, embedded_net
from milpverify.frontends.onnx_base import (
    _REGISTRY,
    Converter,
    NodeUnsupported,
    Tensor,
    Value,
    _Context,
    register,
    supported_ops,
)
from milpverify.ir import ops
from milpverify.ir.network import Network, Origin
from milpverify.ir.ops import size_of
from milpverify.ir.simplify import simplify

__all__ = ["load_onnx", "supported_ops"]


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
    full = np.array(ctx.full(args[0].shape), dtype=np.int64) if isinstance(args[0], Tensor) \
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
    name = default_name(source) if isinstance(source, str) else None
    path = embedded_net(name).path if name is not None else Path(source)
    if not path.is_file():
        raise InvalidInputError(f"ONNX file not found: {str(path)!r}; pass an .onnx file or "
                                "'default' for the bundled network.")
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


def load_onnx(source: str | os.PathLike[str] | Any, *, simplify_graph: bool = True,
              drop_trailing_monotone: bool = True) -> Network:
    """Load an ONNX model (path, `.onnx.gz` path or `onnx.ModelProto`) as a `Network`.

    Parameters
    ----------
    source : path, "default" or onnx.ModelProto
        The model. The first input axis is the batch axis; all other dims must be fixed. A
        rank-1 input `[n]` is one sample without a batch axis. The string ``"default"`` is
        the bundled 784-32-16-10 MNIST MLP and ``"default:NAME"`` another bundled network
        (`milpverify.frontends.embedded.EMBEDDED_NETS`), as for the CLI's ``MODEL``; their
        inputs are pixels / 255 (``planet_lenet``: / 256), and `load_default` also returns
        10 test images.
    simplify_graph : bool
        Fold normalisation/BatchNorm/permutations into neighbouring linear ops (default).
    drop_trailing_monotone : bool
        A classifier ending in Softmax or LogSoftmax (over all outputs) or Sigmoid keeps the
        ranking of its logits, so argmax, top-K, `rho` and `certify` do not change when that
        last op is dropped, and it is not piecewise linear. By default (True) it is dropped:
        the network outputs the logits, `net.notes` says so and `net.dropped_output` names the
        node, and `verify_vnnlib` (properties on output values, which do change) refuses the
        network with an error naming the node. False: such a node is unsupported like any
        other non-piecewise-linear op.

    Returns
    -------
    Network

    Raises
    ------
    InvalidInputError
        The file does not exist, or ``"default:NAME"`` names no bundled network.
    InvalidModelError
        The file is not a readable ONNX model, or its graph is malformed (NaN weights,
        several inputs or outputs, unknown dimensions).
    UnsupportedModelError
        One message naming every node whose op or attributes cannot be encoded.

    Example
    -------
    >>> net = load_onnx("mnist_relu_3_50.onnx")
    >>> net = load_onnx("default")
    """
    model, description = _read_model(source)
    original = model
    dropped: list[Any] = []
    if drop_trailing_monotone:
        model, dropped = _cut_trailing_monotone(model)
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    ctx = _Context(opset, fold=_fold_constant)
    import onnx.numpy_helper as nph
    for init in graph.initializer:
        ctx.values[init.name] = nph.to_array(init)
    inp, dims = _runtime_input(graph, ctx, description)
    _convert_nodes(ctx, graph, description)
    out = ctx.values.get(graph.output[0].name)
    if not isinstance(out, Tensor):
        raise InvalidModelError(f"The output of {description} does not depend on its input.")
    notes = [f"loaded from {description}"]
    dropped_output = None
    if dropped:
        labels = [f"{n.op_type} node {n.name or n.output[0]!r}" for n in dropped]
        for n in dropped:
            _check_covers_all_outputs(ctx, n, _attributes(n), out, description)
        dropped_output = ", ".join(reversed(labels))
        notes.append(f"dropped trailing {dropped_output}: it keeps the ranking of the outputs "
                     "(argmax, top-K, rho unchanged); the network outputs its input logits, and "
                     "VNN-LIB properties on output values are refused")
    # `original` when nothing was cut keeps the bytes of the source model untouched.
    origin = Origin(description, (model if dropped else original).SerializeToString(), inp.name,
                    tuple(1 if d is None else d for d in dims))
    net = Network(_live_nodes(ctx.nodes, out.name), out.name, origin=origin, notes=notes,
                  dropped_output=dropped_output)
    return simplify(net) if simplify_graph else net


def _runtime_input(graph: Any, ctx: _Context, description: str
                   ) -> tuple[Any, list[int | None]]:
    """The single runtime input and its dims; sets `ctx.lead` and emits the Input node."""
    runtime_inputs = [i for i in graph.input if i.name not in ctx.values]
    if len(runtime_inputs) != 1:
        raise InvalidModelError(
            f"{description} has {len(runtime_inputs)} runtime inputs "
            f"({[i.name for i in runtime_inputs]}); only single-input networks are supported.")
    if len(graph.output) != 1:
        raise InvalidModelError(f"{description} has {len(graph.output)} outputs "
                                f"({[o.name for o in graph.output]}); exactly one is supported.")
    inp = runtime_inputs[0]
    dims = [d.dim_value if d.HasField("dim_value") else None
            for d in inp.type.tensor_type.shape.dim]
    # A rank-1 input [n] is one sample without a batch axis; otherwise the first axis is the batch.
    ctx.lead = 0 if len(dims) == 1 else 1
    if not dims or any(d is None or d <= 0 for d in dims[ctx.lead:]):
        raise InvalidModelError(
            f"Input {inp.name!r} has shape {dims}; milpverify needs a leading batch axis and "
            "fixed positive sizes for every other axis (or one fixed axis [n] without a batch).")
    in_shape = tuple(int(d) for d in dims[ctx.lead:])
    ctx.values[inp.name] = ctx.emit(inp.name, ops.Input((), in_shape))
    return inp, dims


def _convert_nodes(ctx: _Context, graph: Any, description: str) -> None:
    """Run every node's converter; one `UnsupportedModelError` names all that fail."""
    opset = ctx.opset
    problems: list[str] = []
    for node in graph.node:
        label = f"{node.name or node.output[0]!r} ({node.op_type}, opset {opset})"
        args = [ctx.values.get(n) if n else None for n in node.input]
        if any(n and n not in ctx.values for n in node.input):
            # An input was produced by an unsupported node; that node is reported already.
            if _converter_for(node.op_type, node.domain, opset) is None:
                problems.append(label)
            continue
        converter = _converter_for(node.op_type, node.domain, opset)
        if converter is None:
            trailing_only = node.op_type in MONOTONE_TRAILING and node.domain in ("", "ai.onnx")
            problems.append(f"{label}: {MONOTONE_ELSEWHERE}" if trailing_only else label)
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
            "(Add/Sub/Mul/Div with a constant operand; Softmax/LogSoftmax/Sigmoid only as the "
            "last op of a classifier; only piecewise-linear networks can be encoded as a MILP).")


# ---------------------------------------------------------------------------- trailing ops
#: Ops that keep the ranking of the outputs; a classifier may end in them (see `load_onnx`).
MONOTONE_TRAILING = ("Softmax", "LogSoftmax", "Sigmoid")


MONOTONE_ELSEWHERE = ("it is not piecewise linear; only as the last op of a classifier is it "
                      "accepted (dropped: it keeps the ranking of the outputs, see "
                      "load_onnx(..., drop_trailing_monotone=True))")


def _cut_trailing_monotone(model: Any) -> tuple[Any, list[Any]]:
    """The model with its trailing Softmax/LogSoftmax/Sigmoid chain removed, and those nodes
    (last first). The cut model's output is the chain's input, so onnxruntime re-runs of
    witnesses compare logits with logits. A chain that starts at the graph input is kept."""
    import onnx
    from onnx import TensorProto, helper
    producers = {o: n for n in model.graph.node for o in n.output}
    out = model.graph.output[0].name if len(model.graph.output) == 1 else None
    dropped = []
    while out in producers and producers[out].op_type in MONOTONE_TRAILING \
            and producers[out].domain in ("", "ai.onnx") and producers[out].input:
        dropped.append(producers[out])
        out = producers[out].input[0]
    if not dropped or out not in producers:   # nothing left but the input: keep (and reject)
        return model, []
    cut = onnx.ModelProto()
    cut.CopyFrom(model)
    gone = {d.output[0] for d in dropped}
    keep = [n for n in cut.graph.node if not (n.output and n.output[0] in gone)]
    del cut.graph.node[:]
    cut.graph.node.extend(keep)
    del cut.graph.output[:]
    elem = model.graph.output[0].type.tensor_type.elem_type or TensorProto.FLOAT
    cut.graph.output.append(helper.make_tensor_value_info(out, elem, None))
    return cut, dropped


def _check_covers_all_outputs(ctx: _Context, node: Any, attrs: Mapping[str, Any], out: Tensor,
                              description: str) -> None:
    """A Softmax/LogSoftmax keeps the ranking of all outputs only if it normalises them together."""
    if node.op_type == "Sigmoid":
        return
    full = ctx.full(out.shape)
    axis = int(attrs.get("axis", -1 if ctx.opset >= 13 else 1)) % len(full)
    # Before opset 13 the input is flattened to 2-D at `axis`; from 13 on one axis is normalised.
    others = size_of(full[:axis]) if ctx.opset < 13 else size_of(full) // full[axis]
    if others != 1:
        raise UnsupportedModelError(
            f"Node {node.name or node.output[0]!r} ({node.op_type}, opset {ctx.opset}) in "
            f"{description} normalises axis {axis} of the output shape {list(full)} separately "
            "per group, so dropping it would change the ranking; only a Softmax/LogSoftmax over "
            "all outputs can be dropped.")


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
