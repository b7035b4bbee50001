"""Big-M MILP encoding of a network from per-node bounds (`MILP_RULES`, one rule per op).

A node's encoded value is a `Term`: per element either a model variable (`var[k] >= 0`) or
the constant `const[k]` (`var[k] == -1`), e.g. the output of an always-off ReLU. Only
elements some consumer needs are encoded (`needed_elements`): the pre-activation of an
inactive ReLU gets no variable and no row.

The encoding is exact for the given bounds: every input in the box maps to a feasible
point with the true activations, and every feasible point (up to solver tolerance) is a
true computation of the network, provided the bounds are sound (see `milpverify.bounds`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from milpverify.bounds.base import Bounds
from milpverify.encode.model import MilpModel
from milpverify.errors import UnboundedError
from milpverify.ir import ops
from milpverify.ir.network import Network
from milpverify.ir.ops import FloatArray, IntArray, Op


@dataclass(frozen=True)
class Term:
    """Per-element value of a node: variable index, or -1 and a constant."""

    var: IntArray
    const: FloatArray

    @staticmethod
    def of_vars(var: IntArray) -> Term:
        return Term(np.asarray(var, dtype=np.int64), np.zeros(len(var)))

    def take(self, index: IntArray) -> Term:
        return Term(self.var[index], self.const[index])


@dataclass
class EncodingStats:
    """What the encoder created, per ReLU/LeakyReLU/MaxPool node and in total."""

    binaries: int = 0
    relu_cases: dict[str, dict[str, int]] = field(default_factory=dict)
    maxpool_binaries: int = 0


@dataclass
class NetworkEncoding:
    """Variables of an encoded network inside a `MilpModel`."""

    model: MilpModel
    terms: dict[str, Term]
    stats: EncodingStats
    relu_active: dict[str, IntArray]  # binary var per neuron, -1 where the ReLU is stable
    maxpool_choice: dict[str, list[tuple[int, IntArray, IntArray]]]  # (output, inputs, binaries)
    # (variables, rows): each variable defined by its equality row `y = M x + b`, in the
    # order they were built (`encode.reduce` may substitute them out)
    definitions: list[tuple[IntArray, IntArray]] = field(default_factory=list)


@dataclass
class _Ctx:
    model: MilpModel
    net: Network
    bounds: Bounds
    needed: dict[str, np.ndarray]
    terms: dict[str, Term]
    stats: EncodingStats
    relu_active: dict[str, IntArray]
    relax: bool
    maxpool_choice: dict[str, list[tuple[int, IntArray, IntArray]]] = field(default_factory=dict)
    definitions: list[tuple[IntArray, IntArray]] = field(default_factory=list)


def _linear_rows(ctx: _Ctx, name: str, matrix: sp.csr_array | FloatArray,
                 bias: FloatArray, arg: Term, out_idx: IntArray, lower: FloatArray,
                 upper: FloatArray) -> Term:
    """Variables y (bounds [lower, upper]) with rows `y_k - sum_j M_kj x_j = b_k + sum_j M_kj c_j`.

    Only rows `out_idx` of M are encoded; constant inputs `c_j` (var == -1) move to the
    right-hand side. The pairs (y, row) are recorded in `ctx.definitions`.
    """
    model = ctx.model
    n_out = len(out_idx)
    y = model.add_vars(n_out, lower[out_idx], upper[out_idx], name=f"{name}")
    sub = sp.csr_array(matrix[out_idx]) if not isinstance(matrix, np.ndarray) \
        else sp.csr_array(matrix[out_idx])
    is_var = arg.var >= 0
    rhs = bias[out_idx] + (sub @ np.where(is_var, 0.0, arg.const))
    coo = sp.coo_array(sub[:, np.flatnonzero(is_var)])
    var_cols = arg.var[is_var]
    rows = np.concatenate([coo.row, np.arange(n_out)])
    cols = np.concatenate([var_cols[coo.col], y])
    vals = np.concatenate([-coo.data, np.ones(n_out)])
    ctx.definitions.append((y, model.add_rows(rows, cols, vals, n_out, rhs, rhs,
                                              name=f"{name}/def")))
    var = np.full(matrix.shape[0], -1, dtype=np.int64)
    var[out_idx] = y
    return Term(var, np.zeros(matrix.shape[0]))


def milp_linear(ctx: _Ctx, name: str, op: ops.LinearOp) -> Term:
    """`y = M x + b` as equality rows over the needed outputs (bounds of y from `Bounds`)."""
    lower, upper = ctx.bounds.flat(name)
    need = np.flatnonzero(ctx.needed[name])
    matrix, bias = op.linear_map
    return _linear_rows(ctx, name, matrix, bias, ctx.terms[op.inputs[0]], need, lower, upper)


def milp_relu(ctx: _Ctx, name: str, op: ops.Relu) -> Term:
    """ReLU `post = max(pre, 0)` with pre-activation bounds `l <= pre <= u`, four cases.

    - inactive (u <= 0): post = 0 (a constant, no variable);
    - active (l >= 0): post = pre (the same variable);
    - unstable (l < 0 < u), binary `active`:
      post >= pre, post <= pre - l (1 - active), post <= u active, 0 <= post <= u.
      With `relax=True` the binary is continuous in [0, 1] (the LP relaxation).
    """
    pre = ctx.terms[op.inputs[0]]
    l, u = ctx.bounds.flat(op.inputs[0])
    need = ctx.needed[name]
    inactive = u <= 0
    active = (l >= 0) & ~inactive
    unstable = ~inactive & ~active & need
    var = np.where(active, pre.var, -1)
    const = np.where(active, pre.const, 0.0)
    idx = np.flatnonzero(unstable)
    ctx.stats.relu_cases[name] = {"active": int(active.sum()), "inactive": int(inactive.sum()),
                                  "unstable": int((~inactive & ~active).sum())}
    binaries = np.full(op.size, -1, dtype=np.int64)
    if len(idx):
        if not (np.all(np.isfinite(l[idx])) and np.all(np.isfinite(u[idx]))):
            raise UnboundedError(f"Bounds at node {op.inputs[0]!r} are not finite; the big-M "
                                 "encoding needs a bounded input region.")
        x = pre.var[idx]
        lo, up = l[idx], u[idx]
        n = len(idx)
        post = ctx.model.add_vars(n, 0.0, up, name=f"{name}.post")
        a = ctx.model.add_vars(n, 0.0, 1.0, integer=not ctx.relax, name=f"{name}.active")
        k = np.arange(n)
        # post - pre >= 0
        ctx.model.add_rows(np.r_[k, k], np.r_[post, x], np.r_[np.ones(n), -np.ones(n)], n,
                           0.0, np.inf, name=f"{name}/ge_pre")
        # post - pre - l*active <= -l
        ctx.model.add_rows(np.r_[k, k, k], np.r_[post, x, a],
                           np.r_[np.ones(n), -np.ones(n), -lo], n, -np.inf, -lo,
                           name=f"{name}/le_pre")
        # post - u*active <= 0
        ctx.model.add_rows(np.r_[k, k], np.r_[post, a], np.r_[np.ones(n), -up], n, -np.inf, 0.0,
                           name=f"{name}/le_active")
        var[idx] = post
        binaries[idx] = a
        ctx.stats.binaries += 0 if ctx.relax else n
    ctx.relu_active[name] = binaries
    return Term(var, const)


def milp_leaky_relu(ctx: _Ctx, name: str, op: ops.LeakyRelu) -> Term:
    """LeakyReLU as `y = a x + (1 - a) max(x, 0)`, an identity for every slope `a`.

    The ReLU part is `milp_relu`'s encoding (one binary per unstable neuron, registered
    under this node in `relu_active` and the stats: its phase is the sign of x as for a
    ReLU); `y` is one equality row per needed neuron with the node's own bounds.
    """
    relu = milp_relu(ctx, name, ops.Relu(op.inputs, op.shape))
    pre = ctx.terms[op.inputs[0]]
    slope = np.asarray(op.slope, dtype=np.float64)
    matrix = sp.csr_array(sp.hstack([sp.diags_array(slope), sp.diags_array(1.0 - slope)]))
    joined = Term(np.r_[pre.var, relu.var], np.r_[pre.const, relu.const])
    lower, upper = ctx.bounds.flat(name)
    return _linear_rows(ctx, name, matrix, np.zeros(op.size), joined,
                        np.flatnonzero(ctx.needed[name]), lower, upper)


def milp_maxpool(ctx: _Ctx, name: str, op: ops.MaxPool) -> Term:
    """`y = max_{i in W} x_i` over each window W, with input bounds `l_i <= x_i <= u_i`.

    Inputs with `u_i < max_W l` can never be the maximum and are pruned. One survivor:
    y = x_i. Otherwise binaries `a_i` (sum 1) and `y >= x_i`,
    `y <= x_i + (u_max - l_i)(1 - a_i)`, `y <= u_max` where u_max = max_W u.
    """
    arg = ctx.terms[op.inputs[0]]
    l, u = ctx.bounds.flat(op.inputs[0])
    lo_out, up_out = ctx.bounds.flat(name)
    var = np.full(op.size, -1, dtype=np.int64)
    const = np.zeros(op.size)
    model = ctx.model
    for k in np.flatnonzero(ctx.needed[name]):
        window = op.windows[k][op.windows[k] >= 0]
        keep = window[u[window] >= l[window].max()]
        if len(keep) == 1:
            var[k], const[k] = arg.var[keep[0]], arg.const[keep[0]]
            continue
        u_max = float(u[keep].max())
        y = model.add_vars(1, lo_out[k], up_out[k], name=f"{name}[{k}]")[0]
        xs, cs = arg.var[keep], arg.const[keep]
        a = model.add_vars(len(keep), 0.0, 1.0, integer=not ctx.relax, name=f"{name}[{k}].arg")
        m = len(keep)
        r = np.arange(m)
        is_var = xs >= 0
        # y - x_i >= c_i   (x_i constant: y >= c_i)
        model.add_rows(np.r_[r, r[is_var]], np.r_[np.full(m, y), xs[is_var]],
                       np.r_[np.ones(m), -np.ones(int(is_var.sum()))], m, cs, np.inf,
                       name=f"{name}[{k}]/ge")
        # y - x_i + (u_max - l_i) a_i <= u_max - l_i + c_i
        big = np.nextafter(u_max - l[keep], np.inf)  # rounded outward: never too small
        model.add_rows(np.r_[r, r[is_var], r], np.r_[np.full(m, y), xs[is_var], a],
                       np.r_[np.ones(m), -np.ones(int(is_var.sum())), big], m, -np.inf,
                       big + cs, name=f"{name}[{k}]/le")
        model.add_rows(np.zeros(m, dtype=np.int64), a, np.ones(m), 1, 1.0, 1.0,
                       name=f"{name}[{k}]/one")
        var[k] = y
        ctx.maxpool_choice.setdefault(name, []).append((int(k), keep, a))
        ctx.stats.maxpool_binaries += 0 if ctx.relax else m
        ctx.stats.binaries += 0 if ctx.relax else m
    return Term(var, const)


def milp_add(ctx: _Ctx, name: str, op: ops.Add) -> Term:
    """`y = a + b` as the linear map [I I] on the concatenation of both inputs."""
    a, b = (ctx.terms[i] for i in op.inputs)
    n = op.size
    matrix = sp.csr_array(sp.hstack([sp.eye_array(n), sp.eye_array(n)]))
    joined = Term(np.r_[a.var, b.var], np.r_[a.const, b.const])
    lower, upper = ctx.bounds.flat(name)
    return _linear_rows(ctx, name, matrix, np.zeros(n), joined,
                        np.flatnonzero(ctx.needed[name]), lower, upper)


def milp_concat(ctx: _Ctx, name: str, op: ops.Concat) -> Term:
    """`y = concat(inputs)[index]`: an index map, no rows."""
    parts = [ctx.terms[i] for i in op.inputs]
    joined = Term(np.concatenate([p.var for p in parts]), np.concatenate([p.const for p in parts]))
    return joined.take(op.index)


MilpRule = Callable[[_Ctx, str, Op], Term]
MILP_RULES: dict[type[Op], MilpRule] = {
    ops.Affine: milp_linear, ops.Conv: milp_linear, ops.AvgPool: milp_linear,
    ops.Scale: milp_linear, ops.Permute: milp_linear,
    ops.Relu: milp_relu, ops.LeakyRelu: milp_leaky_relu, ops.MaxPool: milp_maxpool,
    ops.Add: milp_add, ops.Concat: milp_concat,
}


def needed_elements(net: Network, bounds: Bounds, outputs: np.ndarray | None = None
                    ) -> dict[str, np.ndarray]:
    """Boolean mask per node of the elements some needed consumer reads.

    The output elements in `outputs` (default: all) are needed; an inactive ReLU does not
    need its input (a LeakyReLU does unless its slope is 0); a linear op needs the inputs
    with a nonzero weight in a needed row; a
    MaxPool needs the window inputs that can still be the maximum.
    """
    need: dict[str, np.ndarray] = {n: np.zeros(net.op(n).size, dtype=bool) for n in net.order}
    need[net.output] = np.ones(net.num_classes, dtype=bool) if outputs is None else outputs
    for name in reversed(net.order):
        op = net.op(name)
        mask = need[name]
        if not mask.any() or isinstance(op, ops.Input):
            continue
        if isinstance(op, ops.Relu):
            _, u = bounds.flat(op.inputs[0])
            need[op.inputs[0]] |= mask & (u > 0)
        elif isinstance(op, ops.LeakyRelu):
            _, u = bounds.flat(op.inputs[0])
            need[op.inputs[0]] |= mask & ((u > 0) | (op.slope != 0))
        elif isinstance(op, ops.LinearOp):
            matrix, _ = op.linear_map
            used = abs(matrix[np.flatnonzero(mask)]).sum(axis=0)
            need[op.inputs[0]] |= np.asarray(used).reshape(-1) > 0
        elif isinstance(op, ops.MaxPool):
            l, u = bounds.flat(op.inputs[0])
            for k in np.flatnonzero(mask):
                window = op.windows[k][op.windows[k] >= 0]
                need[op.inputs[0]][window[u[window] >= l[window].max()]] = True
        elif isinstance(op, ops.Add):
            for arg in op.inputs:
                need[arg] |= mask
        elif isinstance(op, ops.Concat):
            sizes = np.cumsum([0] + [net.op(a).size for a in op.inputs])
            joined = np.zeros(sizes[-1], dtype=bool)
            joined[op.index[mask]] = True
            for arg, start, stop in zip(op.inputs, sizes[:-1], sizes[1:]):
                need[arg] |= joined[start:stop]
    return need


def encode_network(net: Network, bounds: Bounds, model: MilpModel, input_term: Term, *,
                   outputs: np.ndarray | None = None, relax: bool = False) -> NetworkEncoding:
    """Add the network's constraints to `model`, reading the input from `input_term`.

    Parameters
    ----------
    net : Network
    bounds : Bounds
        Sound bounds over the input region the caller constrains `input_term` to.
    model : MilpModel
        Receives variables and rows.
    input_term : Term
        The input's variables (flat, `net.input_size`).
    outputs : bool mask, optional
        Output elements that must be encoded (default all).
    relax : bool
        Continuous binaries (the LP relaxation, a lower bound on the distance).

    Returns
    -------
    NetworkEncoding
        `terms[node]` gives each node's variables; `terms[net.output]` the logits.
    """
    ctx = _Ctx(model, net, bounds, needed_elements(net, bounds, outputs), {}, EncodingStats(),
               {}, relax)
    for name, op in net.items():
        if isinstance(op, ops.Input):
            ctx.terms[name] = input_term
        else:
            ctx.terms[name] = MILP_RULES[type(op)](ctx, name, op)
    return NetworkEncoding(model, ctx.terms, ctx.stats, ctx.relu_active, ctx.maxpool_choice,
                           ctx.definitions)
