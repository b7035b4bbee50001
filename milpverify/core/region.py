"""Activation regions and their rows: the ReLU phases and MaxPool arg-maxes of a point, and
the inequalities over the input that keep a point in that region (`region_rows`), obtained
by back-substituting through the IR with the phases fixed (`RESTRICTION_RULES`).

Used by the LP restriction (`core.restriction`), the region repair of solver points
(`core.decide`) and the relaxed-property attacks (`properties.query`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from milpverify.errors import InvalidInputError
from milpverify.ir import ops
from milpverify.ir.network import Network
from milpverify.ir.ops import FloatArray, IntArray, Op

#: A region row counts as violated when it is off by more than this. Zero: on ERAN convSmall
#: a tolerance of 1e-7 let the lazy LP stop at points up to 6e-8 outside rows it never
#: added, which on those nearly degenerate regions is worth a lot of distance (image 4:
#: 0.580 lazy vs 0.893 full, both verified witnesses); with 0 the two agree.
VIOLATION_TOL = 0.0


@dataclass(frozen=True)
class Region:
    """The activation region of a point: ReLU phases and MaxPool arg-maxes."""

    active: dict[str, npt.NDArray[np.bool_]]  # ReLU node -> pre > 0 at x
    argmax: dict[str, IntArray]               # MaxPool node -> flat input index of the max


def region_of(net: Network, x: FloatArray) -> tuple[Region, dict[str, FloatArray]]:
    """The activation region of `x` and all activations (flat) at x."""
    values = net.forward_all(x, flat=True)
    active, argmax = {}, {}
    for name, op in net.items():
        if isinstance(op, ops.SIGN_SPLIT):
            active[name] = values[op.inputs[0]][0] > 0
        elif isinstance(op, ops.MaxPool):
            padded = np.r_[values[op.inputs[0]][0], -np.inf]
            argmax[name] = op.windows[np.arange(op.size),
                                      np.argmax(padded[op.windows], axis=1)]
    return Region(active, argmax), {k: v[0] for k, v in values.items()}


# ------------------------------------------------------------------ back-substitution rules
Coeffs = dict[str, Any]  # node -> (k x node_size) coefficients (ndarray or scipy CSR)
RestrictionRule = Callable[[Op, str, Any, Region, Coeffs, list[FloatArray]], None]


#: A sparse coefficient matrix (scipy CSR) becomes dense once this fraction of it is filled.
DENSE_FILL = 0.25


def _dense(g: Any) -> FloatArray:
    return g.toarray() if sp.issparse(g) else g


def _accumulate(coeffs: Coeffs, name: str, g: Any) -> None:
    if name not in coeffs:
        coeffs[name] = g
    elif sp.issparse(coeffs[name]) and sp.issparse(g):
        coeffs[name] = coeffs[name] + g
    else:
        coeffs[name] = _dense(coeffs[name]) + _dense(g)


def restriction_linear(op: ops.LinearOp, name: str, g: Any, region: Region,
                       coeffs: Coeffs, const: list[FloatArray]) -> None:
    """`y = M x + b`: G_x += G M, constant += G b. A sparse G (rows of single neurons) stays
    sparse through sparse M (convolutions: the receptive field) until it fills up."""
    matrix, bias = op.linear_map
    if sp.issparse(g):
        gm = g @ matrix
        if sp.issparse(gm) and gm.nnz > DENSE_FILL * gm.shape[0] * gm.shape[1]:
            gm = gm.toarray()
    elif isinstance(matrix, np.ndarray):
        gm = g @ matrix
    else:
        gm = (op.transposed @ g.T).T
    _accumulate(coeffs, op.inputs[0], gm if sp.issparse(gm) else np.asarray(gm))
    const[0] = const[0] + g @ bias


def _scale_columns(g: Any, factor: FloatArray) -> Any:
    return sp.csr_array(g.multiply(factor[None, :])) if sp.issparse(g) else g * factor


def restriction_relu(op: ops.Relu, name: str, g: Any, region: Region, coeffs: Coeffs,
                     const: list[FloatArray]) -> None:
    """Fixed phase: `post = pre` where active at x, else `post = 0`: G_pre += G diag(active)."""
    _accumulate(coeffs, op.inputs[0], _scale_columns(g, region.active[name].astype(np.float64)))


def restriction_leaky_relu(op: ops.LeakyRelu, name: str, g: Any, region: Region,
                           coeffs: Coeffs, const: list[FloatArray]) -> None:
    """Fixed phase: `post = pre` where active at x, else `slope * pre`."""
    factor = np.broadcast_to(np.where(region.active[name], 1.0, op.slope), (op.size,))
    _accumulate(coeffs, op.inputs[0], _scale_columns(g, np.asarray(factor, dtype=np.float64)))


def restriction_maxpool(op: ops.MaxPool, name: str, g: Any, region: Region,
                        coeffs: Coeffs, const: list[FloatArray]) -> None:
    """Fixed arg-max: `y_k = x_{a_k}`: G_x[:, a_k] += G[:, k]."""
    g = _dense(g)
    gx = np.zeros((g.shape[0], coeffs["__sizes__"][op.inputs[0]]))
    np.add.at(gx.T, region.argmax[name], g.T)
    _accumulate(coeffs, op.inputs[0], gx)


def restriction_add(op: ops.Add, name: str, g: Any, region: Region, coeffs: Coeffs,
                    const: list[FloatArray]) -> None:
    """`y = a + b`: both inputs receive G."""
    for arg in op.inputs:
        _accumulate(coeffs, arg, g)


def restriction_concat(op: ops.Concat, name: str, g: Any, region: Region,
                       coeffs: Coeffs, const: list[FloatArray]) -> None:
    """`y = concat(inputs)[index]`: scatter G's columns back to the inputs."""
    g = _dense(g)
    sizes = coeffs["__sizes__"]
    bounds = np.cumsum([0] + [sizes[a] for a in op.inputs])
    joined = np.zeros((g.shape[0], bounds[-1]))
    np.add.at(joined.T, op.index, g.T)
    for arg, lo, hi in zip(op.inputs, bounds[:-1], bounds[1:]):
        _accumulate(coeffs, arg, joined[:, lo:hi])


RESTRICTION_RULES: dict[type[Op], RestrictionRule] = {
    ops.Affine: restriction_linear, ops.Conv: restriction_linear,
    ops.AvgPool: restriction_linear, ops.Scale: restriction_linear,
    ops.Permute: restriction_linear, ops.Relu: restriction_relu,
    ops.LeakyRelu: restriction_leaky_relu,
    ops.MaxPool: restriction_maxpool, ops.Add: restriction_add, ops.Concat: restriction_concat,
}


def affine_rows(net: Network, region: Region, node: str, g: Any
                ) -> tuple[Any, FloatArray]:
    """`(A, c)` with `g @ value(node)(x') = A x' + c` for every x' in `region`.

    `g` is (k, node_size): k linear functionals of the node's output, a dense array (then
    `A` is dense) or scipy sparse (then `A` is CSR while it stays sparse, else dense).
    """
    order = net.order[: net.order.index(node) + 1]
    start = sp.csr_array(g, dtype=np.float64) if sp.issparse(g) else np.asarray(g, np.float64)
    coeffs: Coeffs = {node: start, "__sizes__": {n: net.op(n).size for n in order}}
    const = [np.zeros(g.shape[0])]
    for name in reversed(order):
        op = net.op(name)
        if name not in coeffs or isinstance(op, ops.Input):
            continue
        RESTRICTION_RULES[type(op)](op, name, coeffs.pop(name), region, coeffs, const)
    a = coeffs.get(net.input)
    if a is None:
        a = sp.csr_array((g.shape[0], net.input_size)) if sp.issparse(g) else \
            np.zeros((g.shape[0], net.input_size))
    return a, np.asarray(const[0], dtype=np.float64)


# ------------------------------------------------------------------ region rows
def violated_rows(net: Network, region: Region, x_new: FloatArray) -> list[tuple[str, IntArray]]:
    """Region inequalities that `x_new` violates, grouped by node."""
    return [(name, idx) for name, idx, _ in violations(net, region, x_new)]


def violations(net: Network, region: Region, x_new: FloatArray
               ) -> list[tuple[str, IntArray, FloatArray]]:
    """`violated_rows` with by how much each is violated (a ReLU's pre-activation on the wrong
    side of 0; how far a MaxPool window's largest input exceeds the region's arg-max)."""
    values = net.forward_all(x_new, flat=True)
    out = []
    for name, op in net.items():
        if isinstance(op, ops.SIGN_SPLIT):
            pre = values[op.inputs[0]][0]
            act = region.active[name]
            bad = np.flatnonzero(np.where(act, pre < -VIOLATION_TOL, pre > VIOLATION_TOL))
            if len(bad):
                out.append((name, bad, np.abs(pre[bad])))
        elif isinstance(op, ops.MaxPool):
            xin = np.r_[values[op.inputs[0]][0], -np.inf]
            excess = (xin[op.windows] - xin[region.argmax[name]][:, None]).max(axis=1)
            bad = np.flatnonzero(excess > VIOLATION_TOL)
            if len(bad):
                out.append((name, bad, excess[bad]))
    return out


def all_rows(net: Network, region: Region) -> list[tuple[str, IntArray]]:
    """Every region inequality, grouped by node (the full LP)."""
    out = []
    for name, op in net.items():
        if isinstance(op, (*ops.SIGN_SPLIT, ops.MaxPool)):
            out.append((name, np.arange(op.size)))
    return out


def region_constraints(net: Network, region: Region, name: str, idx: IntArray
                       ) -> tuple[FloatArray, FloatArray]:
    """Rows `(A, c)` meaning `A x' + c >= 0` for the given neurons of a (leaky) ReLU or MaxPool
    (`A` dense)."""
    a, c = region_rows(net, region, name, idx)
    return _dense(a), c


def region_rows(net: Network, region: Region, name: str, idx: IntArray) -> tuple[Any, FloatArray]:
    """`region_constraints` with `A` as scipy CSR where the rows stay sparse (a neuron behind
    convolutions depends on its receptive field only), else dense."""
    op = net.op(name)
    src = op.inputs[0]
    size = net.op(src).size
    idx = np.asarray(idx, dtype=np.int64)
    if isinstance(op, ops.SIGN_SPLIT):
        sign = np.where(region.active[name][idx], 1.0, -1.0)
        g = sp.csr_array((sign, (np.arange(len(idx)), idx)), shape=(len(idx), size))
        return affine_rows(net, region, src, g)
    assert isinstance(op, ops.MaxPool)
    pairs = [(region.argmax[name][k], i) for k in idx
             for i in op.windows[k][op.windows[k] >= 0] if i != region.argmax[name][k]]
    rows = np.repeat(np.arange(len(pairs)), 2)
    cols = np.array([j for pair in pairs for j in pair], dtype=np.int64)
    vals = np.tile([1.0, -1.0], len(pairs))
    g = sp.csr_array((vals, (rows, cols)), shape=(len(pairs), size))
    return affine_rows(net, region, src, g)


def input_gradient(net: Network, x: FloatArray, out_grad: FloatArray) -> FloatArray:
    """``d (sum_k out_grad[k] . f(x_k)) / d x`` by reverse mode through the IR (numpy), one
    row per point of the batch `x`: the gradient of the network's affine map in each
    point's activation region (the numpy attacks' one gradient: the VNN-LIB falsifier,
    input splitting, relaxed-property PGD).

    Piecewise-linear ops only: linear ops pass ``g M``; ReLU passes g where its input is
    positive (LeakyReLU passes ``slope * g`` elsewhere); MaxPool routes g to the first
    maximal window entry; Add copies g to both arguments; Concat scatters g back to its
    inputs.
    """
    values = net.forward_all(x, flat=True)
    grads: dict[str, FloatArray] = {net.output: out_grad}
    for name in reversed(net.order):
        op = net.op(name)
        g = grads.pop(name, None)
        if g is None or isinstance(op, ops.Input):
            if isinstance(op, ops.Input):
                return g if g is not None else np.zeros_like(values[name])
            continue
        parts: list[tuple[str, FloatArray]]
        if isinstance(op, ops.LinearOp):
            matrix, _ = op.linear_map
            back = g @ matrix if isinstance(matrix, np.ndarray) else (matrix.T @ g.T).T
            parts = [(op.inputs[0], np.asarray(back))]
        elif isinstance(op, ops.Relu):
            parts = [(op.inputs[0], g * (values[op.inputs[0]] > 0))]
        elif isinstance(op, ops.LeakyRelu):
            parts = [(op.inputs[0], g * np.where(values[op.inputs[0]] > 0, 1.0, op.slope))]
        elif isinstance(op, ops.MaxPool):
            src = values[op.inputs[0]]
            padded = np.concatenate([src, np.full((src.shape[0], 1), -np.inf)], axis=1)
            win = op.windows
            arg = np.take_along_axis(np.broadcast_to(win, (src.shape[0], *win.shape)),
                                     padded[:, win].argmax(axis=-1)[..., None], axis=-1)[..., 0]
            back = np.zeros_like(src)
            rows = np.repeat(np.arange(src.shape[0]), win.shape[0])
            np.add.at(back, (rows, arg.reshape(-1)), g.reshape(-1))
            parts = [(op.inputs[0], back)]
        elif isinstance(op, ops.Add):
            parts = [(op.inputs[0], g), (op.inputs[1], g)]
        elif isinstance(op, ops.Concat):
            joined = np.zeros((g.shape[0], sum(net.op(i).size for i in op.inputs)))
            np.add.at(joined, (slice(None), op.index), g)
            sizes = np.cumsum([0] + [net.op(i).size for i in op.inputs])
            parts = [(i, joined[:, s:e]) for i, s, e in zip(op.inputs, sizes[:-1], sizes[1:])]
        else:  # every IR op is listed above; a new op must get a rule here
            raise InvalidInputError(f"no gradient rule for {type(op).__name__}")
        for arg_name, back in parts:
            grads[arg_name] = grads[arg_name] + back if arg_name in grads else back
    raise InvalidInputError("network has no input node")  # unreachable for a valid Network
