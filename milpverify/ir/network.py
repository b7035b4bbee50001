"""`Network`: the one IR, a networkx DiGraph of canonical ops, with the float64 reference forward
pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import networkx as nx
import numpy as np
import numpy.typing as npt

from milpverify.errors import InvalidInputError, InvalidModelError
from milpverify.ir import ops
from milpverify.ir.ops import FloatArray, Op

ForwardRule = Callable[[Any, list[FloatArray]], FloatArray]


def forward_linear(op: ops.LinearOp, args: list[FloatArray]) -> FloatArray:
    """`y = x M^T + b` for a batch of flat rows x."""
    matrix, bias = op.linear_map
    return np.asarray((matrix @ args[0].T).T) + bias


def forward_relu(op: ops.Relu, args: list[FloatArray]) -> FloatArray:
    """`y = max(x, 0)`."""
    return np.maximum(args[0], 0.0)


def forward_leaky_relu(op: ops.LeakyRelu, args: list[FloatArray]) -> FloatArray:
    """`y = x` where `x >= 0`, else `slope * x`."""
    return np.where(args[0] >= 0, args[0], op.slope * args[0])


def forward_maxpool(op: ops.MaxPool, args: list[FloatArray]) -> FloatArray:
    """`y_k = max_{i in window k} x_i` (padding cells excluded)."""
    padded = np.concatenate([args[0], np.full((args[0].shape[0], 1), -np.inf)], axis=1)
    return padded[:, op.windows].max(axis=-1)


def forward_add(op: ops.Add, args: list[FloatArray]) -> FloatArray:
    """`y = a + b`."""
    return args[0] + args[1]


def forward_concat(op: ops.Concat, args: list[FloatArray]) -> FloatArray:
    """`y = concatenate(args)[index]`."""
    return np.concatenate(args, axis=1)[:, op.index]


FORWARD_RULES: dict[type[Op], ForwardRule] = {
    ops.Affine: forward_linear,
    ops.Conv: forward_linear,
    ops.AvgPool: forward_linear,
    ops.Scale: forward_linear,
    ops.Permute: forward_linear,
    ops.Relu: forward_relu,
    ops.LeakyRelu: forward_leaky_relu,
    ops.MaxPool: forward_maxpool,
    ops.Add: forward_add,
    ops.Concat: forward_concat,
}


@dataclass(frozen=True)
class Origin:
    """Where a network came from, so witnesses can be re-run on the original model.

    `onnx_bytes` is the serialized original ONNX model (None for torch modules);
    `input_name` and `input_shape` (with batch axis) are what onnxruntime must be fed.
    """

    description: str
    onnx_bytes: bytes | None = None
    input_name: str | None = None
    input_shape: tuple[int, ...] | None = None


class Network:
    """A feed-forward network as a DAG of canonical ops keyed by stable string names.

    Parameters
    ----------
    nodes : iterable of (name, Op)
        Every node with its op; graph edges are derived from `op.inputs`.
    output : str
        Name of the output node.
    origin : Origin, optional
        Provenance (original ONNX bytes for reference re-runs).
    notes : iterable of str
        What the front end and simplification did (e.g. folded normalisation).
    dropped_output : str, optional
        Set when the front end dropped a trailing op that keeps the ranking of the outputs
        (Softmax, LogSoftmax, Sigmoid), e.g. ``"Softmax node 'probs'"``: the outputs are that
        op's inputs (logits). Rankings, hence argmax, top-K and rho, are unchanged; properties
        on output values (VNN-LIB) are not, and refuse such a network.

    Example
    -------
    >>> net = milpverify.load_onnx("model.onnx")
    >>> net.forward(x).argmax(axis=1)
    """

    def __init__(self, nodes: Iterable[tuple[str, Op]], output: str, *,
                 origin: Origin | None = None, notes: Iterable[str] = (),
                 dropped_output: str | None = None) -> None:
        self.graph: nx.DiGraph = nx.DiGraph()
        for name, op in nodes:
            if name in self.graph:
                raise InvalidModelError(f"Node name {name!r} is used twice.")
            self.graph.add_node(name, op=op)
        for name, op in list(self.graph.nodes(data="op")):
            for arg in op.inputs:
                if arg not in self.graph:
                    raise InvalidModelError(f"Node {name!r} reads {arg!r}, which is not a node.")
                self.graph.add_edge(arg, name)
        self.output = output
        self.origin = origin or Origin("in-memory")
        self.notes: list[str] = list(notes)
        self.dropped_output = dropped_output
        self.validate()

    # ------------------------------------------------------------------ structure
    def op(self, name: str) -> Op:
        """The op of node `name`."""
        return self.graph.nodes[name]["op"]  # type: ignore[no-any-return]

    @cached_property
    def order(self) -> tuple[str, ...]:
        """Node names in a deterministic topological order (input first)."""
        return tuple(nx.lexicographical_topological_sort(self.graph))

    def items(self) -> list[tuple[str, Op]]:
        """(name, op) pairs in topological order."""
        return [(name, self.op(name)) for name in self.order]

    @property
    def input(self) -> str:
        """Name of the input node."""
        return next(n for n in self.order if isinstance(self.op(n), ops.Input))

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input sample (without batch axis)."""
        return self.op(self.input).shape

    @property
    def input_size(self) -> int:
        """Number of scalar inputs."""
        return self.op(self.input).size

    @property
    def num_classes(self) -> int:
        """Number of outputs (logits)."""
        return self.op(self.output).size

    @property
    def relu_nodes(self) -> list[str]:
        """Names of the ReLU-like nodes (ReLU, LeakyReLU: one breakpoint at 0), in order."""
        return [n for n, op in self.items() if isinstance(op, ops.SIGN_SPLIT)]

    def layer_sizes(self) -> dict[str, int]:
        """Neurons (scalar outputs) per node, in topological order."""
        return {name: op.size for name, op in self.items()}

    @property
    def num_parameters(self) -> int:
        """Total weights and biases of the linear ops."""
        return sum(op.num_parameters for _, op in self.items() if isinstance(op, ops.LinearOp))

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Check acyclicity, one input, one output, shape consistency and finite weights.

        Raises
        ------
        InvalidModelError
            Naming the offending node and what was expected.
        """
        if not nx.is_directed_acyclic_graph(self.graph):
            cycle = " -> ".join(u for u, _ in nx.find_cycle(self.graph))
            raise InvalidModelError(f"The network graph has a cycle: {cycle}.")
        inputs = [n for n, op in self.graph.nodes(data="op") if isinstance(op, ops.Input)]
        if len(inputs) != 1:
            raise InvalidModelError(
                f"A network must have exactly one input; found {len(inputs)}: {sorted(inputs)}. "
                "Only single-input networks are supported.")
        if self.output not in self.graph:
            raise InvalidModelError(f"Output node {self.output!r} is not in the graph.")
        sinks = [n for n in self.graph if self.graph.out_degree(n) == 0]
        if sinks != [self.output]:
            raise InvalidModelError(
                f"A network must have exactly one output ({self.output!r}); "
                f"nodes without consumers: {sorted(sinks)}.")
        unreachable = set(self.graph) - nx.descendants(self.graph, inputs[0]) - {inputs[0]}
        if unreachable:
            raise InvalidModelError(
                f"Nodes not reachable from the input: {sorted(unreachable)}.")
        for name, op in self.graph.nodes(data="op"):
            self._check_node(name, op)

    def _check_node(self, name: str, op: Op) -> None:
        sizes = [self.op(a).size for a in op.inputs]
        expected_args = {ops.Input: 0, ops.Add: 2}.get(type(op), None)
        if isinstance(op, ops.Concat):
            expected_args = len(op.inputs) if op.inputs else 1
        elif expected_args is None:
            expected_args = 1
        if len(op.inputs) != expected_args:
            raise InvalidModelError(
                f"Node {name!r} ({op.kind}) has {len(op.inputs)} inputs; expected {expected_args}.")
        if type(op) not in FORWARD_RULES and not isinstance(op, ops.Input):
            raise InvalidModelError(f"Node {name!r} has unknown op type {type(op).__name__}.")
        if isinstance(op, ops.LinearOp):
            matrix, bias = op.linear_map
            if matrix.shape != (op.size, sizes[0]) or bias.shape != (op.size,):
                raise InvalidModelError(
                    f"Node {name!r} ({op.kind}) maps {matrix.shape[1]} inputs to "
                    f"{matrix.shape[0]} outputs with {bias.shape[0]} biases, but its input "
                    f"{op.inputs[0]!r} has {sizes[0]} elements and its shape {op.shape} has "
                    f"{op.size}.")
            data = matrix.data if hasattr(matrix, "data") and not isinstance(matrix, np.ndarray) \
                else matrix
            if not (np.all(np.isfinite(data)) and np.all(np.isfinite(bias))):
                raise InvalidModelError(
                    f"Node {name!r} ({op.kind}) has non-finite weights or biases (NaN or inf).")
        elif isinstance(op, ops.SIGN_SPLIT) and sizes[0] != op.size:
            raise InvalidModelError(
                f"Node {name!r} ({op.kind}) has {op.size} outputs but its input has {sizes[0]}.")
        elif isinstance(op, ops.LeakyRelu) and (op.slope.shape != (op.size,)
                                                or not np.all(np.isfinite(op.slope))):
            raise InvalidModelError(
                f"Node {name!r} (leakyrelu) needs {op.size} finite slopes; got shape "
                f"{list(op.slope.shape)}.")
        elif isinstance(op, ops.Add) and not sizes[0] == sizes[1] == op.size:
            raise InvalidModelError(
                f"Node {name!r} (add) adds tensors of {sizes[0]} and {sizes[1]} elements "
                f"into {op.size}; all three must match.")
        elif isinstance(op, ops.MaxPool) and (op.windows.shape[0] != op.size
                                              or op.windows.max() >= sizes[0]):
            raise InvalidModelError(f"Node {name!r} (maxpool) windows do not fit its input.")
        elif isinstance(op, ops.Concat) and (op.index.shape != (op.size,)
                                             or op.index.max() >= sum(sizes)):
            raise InvalidModelError(f"Node {name!r} (concat) index does not fit its inputs.")

    # ------------------------------------------------------------------ evaluation
    def as_batch(self, x: npt.ArrayLike) -> FloatArray:
        """Return `x` as float64 rows of flat inputs, shape (n, input_size).

        Accepts one sample (of the input shape, with or without a leading batch axis of 1,
        or flat), or a batch whose first axis is the batch and whose samples have
        `input_size` elements in C order (e.g. MNIST images [n, 1, 28, 28] for a [784] input).

        Raises
        ------
        InvalidInputError
            If the size does not fit the input or `x` contains NaN.
        """
        arr = np.asarray(x, dtype=np.float64)
        size = self.input_size
        if arr.ndim == 0 or arr.size == 0 or arr.size % size != 0:
            raise InvalidInputError(
                f"`x` has {arr.size} elements (shape {list(arr.shape)}) but network input "
                f"{self.input!r} expects {size} per sample (shape {list(self.input_shape)}).")
        if arr.size != size and int(np.prod(arr.shape[1:])) != size:
            raise InvalidInputError(
                f"`x` has shape {list(arr.shape)}; expected a batch of shape "
                f"[n, {', '.join(map(str, self.input_shape))}] or [n, {size}] "
                f"for network input {self.input!r}.")
        if np.isnan(arr).any():
            raise InvalidInputError("`x` contains NaN.")
        return arr.reshape(-1, size)

    def forward_all(self, x: npt.ArrayLike, *, flat: bool = False) -> dict[str, FloatArray]:
        """Activations of every node for a batch, float64.

        Returns arrays of shape (n, *node_shape), or (n, node_size) when `flat`.
        """
        values: dict[str, FloatArray] = {}
        for name, op in self.items():
            if isinstance(op, ops.Input):
                values[name] = self.as_batch(x)
            else:
                values[name] = FORWARD_RULES[type(op)](op, [values[a] for a in op.inputs])
        if flat:
            return values
        return {name: v.reshape((v.shape[0],) + self.op(name).shape) for name, v in values.items()}

    def forward(self, x: npt.ArrayLike) -> FloatArray:
        """Logits of a batch, float64, shape (n, num_classes).

        Example
        -------
        >>> net.forward(images[:5] / 255.0).argmax(axis=1)
        """
        return self.forward_all(x, flat=True)[self.output]

    def predict(self, x: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Predicted labels (argmax of the logits, lowest index on ties)."""
        return np.argmax(self.forward(x), axis=1)

    # ------------------------------------------------------------------ reporting
    def summary(self) -> list[dict[str, Any]]:
        """One row per node: name, op, shape, neurons, parameters, inputs."""
        return [
            {"name": name, "op": op.kind, "shape": list(op.shape), "neurons": op.size,
             "parameters": op.num_parameters if isinstance(op, ops.LinearOp) else 0,
             "inputs": list(op.inputs)}
            for name, op in self.items()
        ]

    def replace(self, nodes: Iterable[tuple[str, Op]], output: str | None = None,
                notes: Iterable[str] = ()) -> Network:
        """A new network with the same origin and dropped output op, new nodes, extra notes."""
        return Network(nodes, output or self.output, origin=self.origin,
                       notes=[*self.notes, *notes], dropped_output=self.dropped_output)

    def __repr__(self) -> str:
        counts: dict[str, int] = {}
        for _, op in self.items():
            counts[op.kind] = counts.get(op.kind, 0) + 1
        parts = ", ".join(f"{k}={v}" for k, v in counts.items())
        return (f"Network(input={list(self.input_shape)}, classes={self.num_classes}, "
                f"nodes: {parts})")


__all__ = ["FORWARD_RULES", "Network", "Origin"]
