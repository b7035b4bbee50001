"""Optimised-slope (alpha-CROWN style) bounds: CROWN with the ReLU lower lines chosen by gradient.

Method
------
CROWN (`symbolic`) relaxes an unstable ReLU `y = max(x, 0)` on `[l, u]` from below by
`y >= a x` with a fixed `a` in {0, 1}. Every `a` in [0, 1] is valid, and the best one
differs per bounded quantity. Following alpha-CROWN (Xu et al., "Fast and Complete",
ICLR 2021), each row `i` of each target (a ReLU input's lower and upper bound, or the
output's) gets its own slopes `a_ik` for every unstable ReLU `k` before it; they are
optimised with projected Adam on the back-substituted bound, layer by layer, so later
targets start from the tighter bounds of earlier ones.

Only the search runs in torch (float64, gradients). The bound that is kept is the one
the sound float64 back-substitution of `symbolic` computes with the optimised slopes
(`backsubstitute(..., row_slopes=...)`), intersected with CROWN's: projection onto
[0, 1] makes every slope valid, and the rounding analysis of `symbolic` covers
per-row slopes, so the result is sound whatever the optimiser did.

A LeakyReLU `y = max(x, a x)` with `a <= 1` is handled the same way with slopes in `[a, 1]`
(projection onto that range); one with `a > 1` is concave and keeps CROWN's lines.

Rows optimised: both sides of every ReLU input neuron still unstable after CROWN, and
both sides of every neuron of the other targets (the output, MaxPool inputs). A time
limit stops the optimisation; targets not reached keep CROWN's bound.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
import torch

from milpverify.bounds.base import Bounds
from milpverify.bounds.interval import Interval, centre_radius, check_box
from milpverify.bounds.symbolic import (
    BACKWARD_RULES,
    BackwardRule,
    SymbolicContext,
    ancestors,
    back_add,
    back_concat,
    back_linear,
    back_relaxed,
    symbolic_bounds,
    symbolic_pass,
)
from milpverify.errors import InvalidInputError
from milpverify.frontends.torchnet import torch_threads
from milpverify.ir import ops
from milpverify.ir.network import Network
from milpverify.ir.ops import FloatArray

ITERATIONS = 30
"""Adam steps per target. Measured on mnist_fc 256x4 prop_6_0.03 (spec rows): CROWN's
lower bounds about -12.6 become -2.9 after 30 steps and -2.8 after 100."""

LEARNING_RATE = 0.1
"""Adam step size on the slopes (which live in [0, 1])."""

DENSE_LIMIT = 4_000_000
"""Linear maps with at most this many entries are used as dense torch matrices."""

Tensor = torch.Tensor


# ---------------------------------------------------------------------------- torch operands
def _as_torch(matrix: Any) -> Tensor:
    """A linear map (dense, 1-D diagonal or scipy sparse) as a torch float64 tensor."""
    if sp.issparse(matrix):
        if matrix.shape[0] * matrix.shape[1] <= DENSE_LIMIT:
            return torch.from_numpy(matrix.toarray().astype(np.float64))
        csr = sp.csr_array(matrix, dtype=np.float64)
        with warnings.catch_warnings():  # "sparse CSR support is in beta": used for matmul only
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(torch.from_numpy(csr.indptr.astype(np.int64)),
                                           torch.from_numpy(csr.indices.astype(np.int64)),
                                           torch.from_numpy(csr.data), size=csr.shape,
                                           check_invariants=False)
    return torch.from_numpy(np.asarray(matrix, dtype=np.float64))


def _right_times(coef: Tensor, matrix: Tensor) -> Tensor:
    """`coef @ P` for a dense, diagonal (1-D) or sparse CSR `P`."""
    if matrix.ndim == 1:
        return coef * matrix
    if matrix.layout == torch.sparse_csr:
        return (matrix.t() @ coef.t()).t()
    return coef @ matrix


# ---------------------------------------------------------------------------- backward rules
@dataclass
class _Pass:
    """One differentiable back-substitution: the symbolic context and the slope parameters."""

    ctx: SymbolicContext
    slopes: dict[str, tuple[Tensor, Tensor]]   # relu -> (unstable columns, (rows, k) param)
    operands: Callable[[str, Any], Tensor]     # cached torch form of a node's matrix


TorchStep = tuple[list[tuple[str, Tensor]], Tensor]
"""(coefficients per input node, constant increment) of one backward step."""


def _back_linear(name: str, op: ops.LinearOp, coef: Tensor, run: _Pass) -> TorchStep:
    matrix, bias = op.linear_map
    return ([(op.inputs[0], _right_times(coef, run.operands(name, matrix)))],
            coef @ torch.from_numpy(np.asarray(bias, dtype=np.float64)))


def _back_relaxed(name: str, op: ops.Op, coef: Tensor, run: _Pass) -> TorchStep:
    """ReLU/LeakyReLU/MaxPool, as `symbolic.back_relaxed`; a (leaky) ReLU's optimised slopes
    replace the shared lower slope on its unstable convex columns."""
    relax = run.ctx.relaxations[name]
    pos, neg = coef.clamp(min=0.0), coef.clamp(max=0.0)
    lower = _right_times(pos, run.operands(name + "/lo", relax.lo))
    if name in run.slopes:
        columns, alpha = run.slopes[name]
        lower[:, columns] = pos[:, columns] * alpha
    upper = _right_times(neg, run.operands(name + "/hi", relax.hi))
    const = pos @ torch.from_numpy(relax.c_lo) + neg @ torch.from_numpy(relax.c_hi)
    return [(op.inputs[0], lower + upper)], const


def _back_add(name: str, op: ops.Add, coef: Tensor, run: _Pass) -> TorchStep:
    return [(op.inputs[0], coef), (op.inputs[1], coef)], coef.new_zeros(coef.shape[0])


def _back_concat(name: str, op: ops.Concat, coef: Tensor, run: _Pass) -> TorchStep:
    sizes = [run.ctx.state[a][0].size for a in op.inputs]
    spread = coef.new_zeros(coef.shape[0], int(sum(sizes)))
    spread = spread.index_add(1, torch.from_numpy(op.index.astype(np.int64)), coef)
    edges = np.cumsum([0, *sizes])
    return ([(a, spread[:, edges[i]:edges[i + 1]]) for i, a in enumerate(op.inputs)],
            coef.new_zeros(coef.shape[0]))


TorchRule = Callable[[str, Any, Tensor, _Pass], TorchStep]

_TWINS: dict[BackwardRule, TorchRule] = {
    back_linear: _back_linear, back_relaxed: _back_relaxed, back_add: _back_add,
    back_concat: _back_concat,
}

TORCH_BACKWARD_RULES: dict[type[ops.Op], TorchRule] = {
    op_class: _TWINS[rule] for op_class, rule in BACKWARD_RULES.items()}
"""The differentiable twin of `symbolic.BACKWARD_RULES`, derived from it (same op classes,
same rules), so an op class added there fails here until its twin exists."""


def _lower_rows(net: Network, target: str, start: Tensor, order: list[str], run: _Pass,
                centre: Tensor, radius: Tensor) -> Tensor:
    """Lower bound of `start @ y_target` over the input box (float64, not rounded)."""
    coefs: dict[str, Tensor] = {target: start}
    const = start.new_zeros(start.shape[0])
    for name in order:
        op = net.op(name)
        if isinstance(op, ops.Input) or name not in coefs:
            continue
        parts, inc = TORCH_BACKWARD_RULES[type(op)](name, op, coefs.pop(name), run)
        const = const + inc
        for arg, new in parts:
            coefs[arg] = coefs[arg] + new if arg in coefs else new
    final = coefs.get(net.input)
    if final is None:
        return const
    return final @ centre - final.abs() @ radius + const


# ---------------------------------------------------------------------------- optimiser
@dataclass
class SlopeOptimizer:
    """The `SlopeHook` of `symbolic_pass`: optimises per-row slopes target by target.

    Attributes
    ----------
    net : Network
    centre, radius : ndarray
        The input box.
    deadline : float
        `time.perf_counter()` value after which targets keep CROWN's bound.
    iterations, learning_rate : int, float
    stats : dict
        Per run: ``targets`` optimised, ``rows`` optimised, ``skipped`` (deadline).
    """

    net: Network
    centre: FloatArray
    radius: FloatArray
    deadline: float
    iterations: int = ITERATIONS
    learning_rate: float = LEARNING_RATE

    def __post_init__(self) -> None:
        self.stats: dict[str, int] = {"targets": 0, "rows": 0, "skipped": 0}
        self._operands: dict[str, Tensor] = {}
        self._centre = torch.from_numpy(self.centre)
        self._radius = torch.from_numpy(self.radius)

    def _operand(self, key: str, matrix: Any) -> Tensor:
        if key not in self._operands:
            self._operands[key] = _as_torch(matrix)
        return self._operands[key]

    def __call__(self, target: str, ctx: SymbolicContext,
                 interval: Interval) -> dict[str, FloatArray] | None:
        net = self.net
        keep = ancestors(net, target)
        order = list(reversed([n for n in net.order if n in keep]))
        unstable, floors = {}, {}
        for name in order:
            op = net.op(name)
            if isinstance(op, ops.SIGN_SPLIT) and name != target:
                low, up = ctx.state[op.inputs[0]]
                # Lower slopes in [a, 1] are valid where the op is convex (slope a <= 1).
                floor = op.slope if isinstance(op, ops.LeakyRelu) else np.zeros(op.size)
                columns = np.flatnonzero((low < 0) & (up > 0) & (floor <= 1.0))
                if columns.size:
                    unstable[name] = columns
                    floors[name] = torch.from_numpy(np.asarray(floor[columns], np.float64))
        if not unstable:
            return None
        if time.perf_counter() >= self.deadline:
            self.stats["skipped"] += 1
            return None
        low, up = interval
        size = low.size
        readers = [net.op(n) for n in net.order if target in net.op(n).inputs]
        if readers and all(isinstance(r, ops.SIGN_SPLIT) for r in readers):
            neurons = np.flatnonzero((low < 0) & (up > 0))
        else:
            neurons = np.flatnonzero(low < up)
        if not neurons.size:
            return None
        rows = np.concatenate([neurons, neurons + size])
        start = torch.zeros(rows.size, size, dtype=torch.float64)
        picked = torch.from_numpy(neurons)
        start[torch.arange(neurons.size), picked] = 1.0
        start[torch.arange(neurons.size, rows.size), picked] = -1.0
        params = {}
        for name, columns in unstable.items():
            init = torch.from_numpy(np.asarray(ctx.relaxations[name].lo, np.float64)[columns])
            params[name] = (torch.from_numpy(columns),
                            init.expand(rows.size, -1).clone().requires_grad_(True))
        run = _Pass(ctx, params, self._operand)
        optimizer = torch.optim.Adam([p for _, p in params.values()], lr=self.learning_rate)
        best = torch.full((rows.size,), -torch.inf, dtype=torch.float64)
        best_slopes = {name: p.detach().clone() for name, (_, p) in params.items()}
        for _ in range(self.iterations):
            bound = _lower_rows(net, target, start, order, run, self._centre, self._radius)
            with torch.no_grad():
                better = bound.detach() > best
                best = torch.where(better, bound.detach(), best)
                for name, (_, p) in params.items():
                    best_slopes[name][better] = p.detach()[better]
            if time.perf_counter() >= self.deadline:
                break
            optimizer.zero_grad()
            (-bound.sum()).backward()
            optimizer.step()
            with torch.no_grad():
                for name, (_, p) in params.items():
                    p.copy_(torch.maximum(p.clamp(max=1.0), floors[name]))
        self.stats["targets"] += 1
        self.stats["rows"] += int(rows.size)
        out = {}
        for name, columns in unstable.items():
            full = np.tile(np.asarray(ctx.relaxations[name].lo, np.float64), (2 * size, 1))
            full[np.ix_(rows, columns)] = best_slopes[name].numpy()
            out[name] = full
        return out


def alpha_bounds(net: Network, lower: npt.ArrayLike, upper: npt.ArrayLike, *,
                 base: Bounds | None = None, time_limit_s: float | None = None,
                 iterations: int = ITERATIONS, threads: int | None = 1) -> Bounds:
    """Optimised-slope CROWN bounds of every node over the box `lower <= x <= upper`.

    Parameters
    ----------
    net : Network
    lower, upper : array_like
        The input box, of the input's shape or flat.
    base : Bounds, optional
        Sound bounds over the same box to intersect with; the symbolic bounds always are
        (computed first, on top of `base`, unless `base` is itself symbolic).
    time_limit_s : float, optional
        Budget of the optimisation; targets after it keep CROWN's bound (the pass itself
        always completes, so expect a small overrun of one target).
    iterations : int
        Adam steps per target.
    threads : int or None
        torch threads during the call (restored afterwards); None keeps torch's setting.

    Returns
    -------
    Bounds
        `method="alpha"`, inside `symbolic_bounds` of the same box (sound, see the module
        docstring). `details["alpha"]` has the optimiser's counts;
        `details["output_vertices"]` the `bound_vertices` of the output's CROWN rows, then
        of its optimised rows where the output was optimised (see `symbolic_bounds`).

    Raises
    ------
    InvalidInputError
        Bad box or parameters.
    """
    if not (isinstance(iterations, int) and iterations >= 1):
        raise InvalidInputError(f"`iterations` must be an integer >= 1; got {iterations!r}.")
    if time_limit_s is not None and not time_limit_s > 0:
        raise InvalidInputError(f"`time_limit_s` must be > 0 or None; got {time_limit_s!r}.")
    lo, hi = check_box(net, lower, upper)
    # CROWN is not monotone in earlier bounds (its slope choice u > -l can flip), so the
    # plain symbolic bounds are intersected too: the result is inside them. A symbolic
    # `base` already is (recomputing it would give the same bounds).
    if base is None or base.method != "symbolic":
        base = symbolic_bounds(net, lo, hi, base=base)
    centre, radius = centre_radius(lo, hi)
    deadline = time.perf_counter() + (np.inf if time_limit_s is None else time_limit_s)
    hook = SlopeOptimizer(net, centre, radius, deadline, iterations)
    with torch_threads(threads):
        out = symbolic_pass(net, lo, hi, base, "alpha", hook)
    out.details["alpha"] = dict(hook.stats)
    return out


__all__ = ["ITERATIONS", "TORCH_BACKWARD_RULES", "SlopeOptimizer", "alpha_bounds"]
