"""Network-aware node propagation for the MILP's branch and bound (`NetworkPropagator`).

SCIP's generic branch and bound knows nothing of the network: inside the tree the big-M
constants and variable bounds stay those of the root box. At a node, the branching has
fixed some ReLU phases (binaries at 0 or 1) and SCIP's own propagation may have shrunk the
input box and other bounds. `NetworkPropagator.propagate` re-derives the bounds of every
pre-activation over the node's region, by the symbolic (CROWN-style) back-substitution of
`milpverify.bounds.symbolic`, with

* the input box = the node's local bounds of the input variables;
* each pre-activation interval = root bounds, intersected with the node's local bounds of
  its variable, and with `[0, inf)` (phase fixed active) or `(-inf, 0]` (fixed inactive);

so fixed ReLUs are relaxed exactly (`y = x` or `y = 0`) and the unstable ones by chords of
the node's (smaller) intervals. From the result it

* tightens the local bounds of the pre-activation and ReLU output variables;
* fixes the binary of every ReLU that became stable;
* bounds each row of the unsafe set (`A_d y <= b_d`, one disjunct per label for
  misclassification) from below by the same back-substitution; a disjunct whose row
  cannot reach its right-hand side has its choice binary fixed to 0, and the node is cut
  off when no disjunct remains possible.

Two more uses of the node's bounds, through the solver's plugins:

* `local_cuts`: the big-M rows of each unstable ReLU rewritten with the node's bounds
  (``post <= u a``, ``post <= pre - l (1 - a)``), added as rows local to the node's
  subtree, so the LP inside the tree uses the node's big-M constants, not the root's;
* `branch_scores` (optional): BaBSR-style scores of the unstable ReLUs, from one backward
  pass of the unsafe rows through the node's relaxations.

Soundness: every feasible point of the MILP inside the node is a true computation of the
network with the node's fixed phases, inside the node's bounds, so the intervals above
contain its values; the symbolic pass is sound under float64 rounding (its bounds are
rounded outward). Intervals that do not intersect therefore prove that the node holds no
feasible point. A target's back-substitution is skipped while nothing it depends on
differs from the root (the input box and every earlier ReLU's input interval), where it
would only give the root's bounds again.
"""

from __future__ import annotations

import time

import numpy as np

from milpverify.bounds.base import Bounds
from milpverify.bounds.interval import Interval
from milpverify.bounds.interval import propagate as interval_pass
from milpverify.bounds.symbolic import (
    BACKWARD_RULES,
    RELAXATIONS,
    SymbolicContext,
    backsubstitute,
    symbolic_targets,
)
from milpverify.encode.model import Cuts
from milpverify.encode.objective import RobustnessProblem
from milpverify.ir import ops
from milpverify.ir.network import Network
from milpverify.ir.ops import FloatArray, IntArray

#: Smallest violation of a local big-M row by the LP point for it to be added as a cut.
CUT_VIOLATION = 1e-6

#: Name of the node appended to the network: the rows of every disjunct of the unsafe set.
UNSAFE_ROWS_NODE = "milpverify/unsafe_rows"


class _Empty(Exception):
    """Raised inside the pass when a node's intervals do not intersect (node infeasible)."""


class NetworkPropagator:
    """`milpverify.solve.base.NodePropagator` for a robustness/unsafe-set MILP.

    Parameters
    ----------
    net : Network
    bounds : Bounds
        The root bounds the MILP was encoded with (valid over its input box); may hold
        extra nodes (e.g. the margin node of `core.spec_bounds`), which are ignored.
    problem : RobustnessProblem
        The MILP built from `bounds` (its encoding names the variables).
    local_rows : bool
        Offer `local_cuts` (the big-M rows with the node's bounds) to the solver.
    branching : bool
        Offer `branch_scores` (BaBSR-style scores of the unstable ReLUs at the last
        propagated node) to the solver's branching; False: leave branching to the solver.

    Attributes
    ----------
    calls, cutoffs, fixed, symbolic_targets, seconds
        Counters over all `propagate` calls: calls, nodes proven infeasible, ReLU binaries
        fixed, back-substitutions run, and time spent.
    """

    def __init__(self, net: Network, bounds: Bounds, problem: RobustnessProblem, *,
                 branching: bool = False, local_rows: bool = True) -> None:
        self.branching = branching
        self.local_rows = local_rows
        self._scores: FloatArray | None = None
        self._last: tuple[FloatArray, FloatArray, dict[str, Interval] | None] | None = None
        self.cuts = 0
        rows = np.vstack([d.A for d in problem.disjuncts])
        self._rhs = np.concatenate([d.b for d in problem.disjuncts])
        self._owner = np.repeat(np.arange(len(problem.disjuncts)),
                                [d.A.shape[0] for d in problem.disjuncts])
        self.net = net.replace([*net.items(), (UNSAFE_ROWS_NODE, ops.Affine(
            (net.output,), (rows.shape[0],), rows, np.zeros(rows.shape[0])))],
            UNSAFE_ROWS_NODE)
        enc = problem.encoding
        self._root = {name: tuple(np.array(b, dtype=np.float64) for b in bounds.flat(name))
                      for name in net.order}
        self._targets = set(symbolic_targets(self.net))
        self._n_terms = float(max(op.size for _, op in self.net.items()) + 3)
        cols: list[IntArray] = [np.asarray(problem.input_vars, dtype=np.int64)]
        self._input = slice(0, len(cols[0]))
        at = len(cols[0])

        def take(var: IntArray) -> tuple[IntArray, slice]:
            nonlocal at
            idx = np.flatnonzero(var >= 0)
            cols.append(var[idx])
            span = slice(at, at + len(idx))
            at += len(idx)
            return idx, span

        # per ReLU/LeakyReLU node: (pre node, pre elements with a variable and their slice,
        # elements with a binary and their slice, ReLU outputs with a variable and slice)
        self._relus: list[tuple[str, IntArray, slice, IntArray, slice, IntArray, slice]] = []
        self._cut_cols: list[tuple[IntArray, IntArray, IntArray]] = []
        for name, binaries in enc.relu_active.items():
            op = net.op(name)
            pre = op.inputs[0]
            p_idx, p_span = take(enc.terms[pre].var)
            b_idx, b_span = take(binaries)
            post = np.full(op.size, -1, dtype=np.int64)
            if isinstance(op, ops.Relu):
                post[b_idx] = enc.terms[name].var[b_idx]
            o_idx, o_span = take(post)
            self._relus.append((pre, p_idx, p_span, b_idx, b_span, o_idx, o_span))
            self._cut_cols.append((enc.terms[pre].var[b_idx], post[b_idx], binaries[b_idx]))
        self._relu_nodes = list(enc.relu_active)
        self._relu_inputs = {net.op(r).inputs[0] for r in self._relu_nodes
                             if isinstance(net.op(r), ops.Relu)}
        choice = np.asarray(problem.choice_vars, dtype=np.int64)
        self._choice = slice(at, at + len(choice))
        cols.append(choice)
        self._variables = np.concatenate(cols)
        self.calls = self.cutoffs = self.fixed = self.symbolic_targets = 0
        self.seconds = 0.0

    @property
    def variables(self) -> IntArray:
        return self._variables

    def report(self) -> str:
        return (f"network propagation: {self.calls} calls, {self.cutoffs} cut off, "
                f"{self.fixed} ReLUs fixed, {self.symbolic_targets} back-substitutions, "
                f"{self.cuts} local cuts, {self.seconds:.3f} s")

    # ------------------------------------------------------------------ one node
    def node_bounds(self, lower: FloatArray, upper: FloatArray) -> dict[str, Interval] | None:
        """Bounds of every node of the extended network over the node's region (flat
        intervals by node name), or None if they prove the region holds no feasible point."""
        base: dict[str, Interval] = {}
        for pre, p_idx, p_span, b_idx, b_span, _, _ in self._relus:
            lo, hi = (a.copy() for a in self._root[pre])
            lo[p_idx] = np.maximum(lo[p_idx], lower[p_span])
            hi[p_idx] = np.minimum(hi[p_idx], upper[p_span])
            lo[b_idx[lower[b_span] > 0.5]] = np.maximum(lo[b_idx[lower[b_span] > 0.5]], 0.0)
            hi[b_idx[upper[b_span] < 0.5]] = np.minimum(hi[b_idx[upper[b_span] < 0.5]], 0.0)
            if np.any(lo > hi):
                return None
            base[pre] = (lo, hi)
        in_root = self._root[self.net.input]
        in_lo = np.maximum(lower[self._input], in_root[0])
        in_hi = np.minimum(upper[self._input], in_root[1])
        if np.any(in_lo > in_hi):
            return None
        ctx = SymbolicContext(state={}, relaxations={})
        dirty = [bool(np.any(in_lo > in_root[0]) or np.any(in_hi < in_root[1]))]

        def refine(name: str, op: ops.Op, interval: Interval, state: dict[str, Interval]
                   ) -> Interval:
            ctx.state.update(state)
            fixed = base.get(name, self._root.get(name))
            if fixed is not None:
                interval = _meet(interval, fixed)
            if type(op) in RELAXATIONS:
                arg = op.inputs[0]
                ctx.relaxations[name] = RELAXATIONS[type(op)](op, *state[arg])
                root = self._root.get(arg)
                if root is None or not (np.array_equal(state[arg][0], root[0])
                                        and np.array_equal(state[arg][1], root[1])):
                    dirty[0] = True
            if name in self._targets and dirty[0]:
                # a ReLU input needs tighter bounds only where it is unstable: a stable
                # neuron is relaxed exactly already
                wanted = None
                if name in self._relu_inputs:
                    wanted = np.flatnonzero((interval[0] < 0) & (interval[1] > 0))
                    if not len(wanted):
                        return interval
                self.symbolic_targets += 1
                interval = _meet(interval, backsubstitute(self.net, name, ctx, self._n_terms,
                                                          elements=wanted))
            return interval

        try:
            return interval_pass(self.net, in_lo, in_hi, refine)
        except _Empty:
            return None

    def propagate(self, lower: FloatArray, upper: FloatArray
                  ) -> tuple[FloatArray, FloatArray] | None:
        """Tightened bounds of `variables`, or None if the node holds no feasible point."""
        t0 = time.perf_counter()
        self.calls += 1
        try:
            out = self._propagate(np.asarray(lower, dtype=np.float64),
                                  np.asarray(upper, dtype=np.float64))
        finally:
            self.seconds += time.perf_counter() - t0
        if out is None:
            self.cutoffs += 1
        return out

    def _propagate(self, lower: FloatArray, upper: FloatArray
                   ) -> tuple[FloatArray, FloatArray] | None:
        state = self.node_bounds(lower, upper)
        self._last = (lower, upper, state)
        if state is None:
            return None
        if self.branching:
            self._scores = self._branch_scores(state, lower, upper)
        new_lo, new_hi = lower.copy(), upper.copy()
        for pre, p_idx, p_span, b_idx, b_span, o_idx, o_span in self._relus:
            lo, hi = state[pre]
            new_lo[p_span] = np.maximum(new_lo[p_span], lo[p_idx])
            new_hi[p_span] = np.minimum(new_hi[p_span], hi[p_idx])
            # A phase fixed by branching that the bounds contradict made node_bounds
            # return None already; here free binaries of stable ReLUs are fixed.
            free = (lower[b_span] < 0.5) & (upper[b_span] > 0.5)
            on = free & (lo[b_idx] >= 0)
            off = free & ~on & (hi[b_idx] <= 0)
            self.fixed += int(on.sum() + off.sum())
            new_lo[b_span] = np.where(on, 1.0, new_lo[b_span])
            new_hi[b_span] = np.where(off, 0.0, new_hi[b_span])
            new_lo[o_span] = np.maximum(new_lo[o_span], np.maximum(lo[o_idx], 0.0))
            new_hi[o_span] = np.minimum(new_hi[o_span], np.maximum(hi[o_idx], 0.0))
        if np.any(new_lo > new_hi):
            return None
        row_lo = state[UNSAFE_ROWS_NODE][0]
        impossible = np.zeros(self._owner.max() + 1, dtype=bool)
        np.logical_or.at(impossible, self._owner, row_lo > self._rhs)
        choice = self._choice
        if choice.stop > choice.start:
            still = (upper[choice] > 0.5) & ~impossible
            if not still.any():
                return None
            new_hi[choice] = np.where(impossible, 0.0, new_hi[choice])
            if np.any(new_lo[choice] > new_hi[choice]):
                return None
        elif impossible.any():
            return None
        return new_lo, new_hi

    # ------------------------------------------------------------------ local cuts
    def local_cuts(self, lower: FloatArray, upper: FloatArray, values: FloatArray,
                   max_cuts: int | None = None) -> Cuts | None:
        """The big-M rows of each unstable ReLU with the node's bounds `[l, u]` of its
        pre-activation instead of the root's, where the LP point `values` violates them:

            post <= u a,        post <= pre - l (1 - a).

        Both hold at every point of the node whose pre-activation lies in `[l, u]`, i.e.
        at every feasible point of the node (so the rows are local to the node's subtree).
        `lower`/`upper` are the node's bounds of `variables`; the bounds of the last
        propagated node are reused when the node is inside it, else recomputed.
        """
        if not self.local_rows:
            return Cuts(*(np.zeros(0, dtype=np.int64),) * 2, *(np.zeros(0),) * 3)
        last = self._last
        if last is not None and np.all(lower >= last[0]) and np.all(upper <= last[1]):
            state = last[2]
        else:
            state = self.node_bounds(lower, upper)
        if state is None:
            return None
        rows: list[FloatArray] = []
        parts: list[tuple[IntArray, IntArray, IntArray, FloatArray, FloatArray, FloatArray]] = []
        for (pre, _, _, b_idx, b_span, _, _), (pre_col, post_col, bin_col) in zip(
                self._relus, self._cut_cols):
            if not len(b_idx):
                continue
            lo, hi = state[pre]
            l, u = lo[b_idx], hi[b_idx]
            root_l, root_u = (a[b_idx] for a in self._root[pre])
            free = (lower[b_span] < 0.5) & (upper[b_span] > 0.5) & (pre_col >= 0) \
                & (post_col >= 0) & (l < 0) & (u > 0)
            a = values[np.where(bin_col >= 0, bin_col, 0)]
            post = values[np.where(post_col >= 0, post_col, 0)]
            pre_v = values[np.where(pre_col >= 0, pre_col, 0)]
            v1 = post - u * a
            v2 = post - pre_v - l * a + l
            c1 = free & (u < root_u) & (v1 > CUT_VIOLATION)
            c2 = free & (l > root_l) & (v2 > CUT_VIOLATION)
            parts.append((pre_col, post_col, bin_col, np.where(c1, v1, 0.0),
                          np.where(c2, v2, 0.0), np.stack([l, u])))
            rows.append(np.r_[v1[c1], v2[c2]])
        if not rows or not sum(len(r) for r in rows):
            return Cuts(*(np.zeros(0, dtype=np.int64),) * 2, *(np.zeros(0),) * 3)
        r_, c_, v_, rhs, viol = [], [], [], [], []
        k = 0
        for pre_col, post_col, bin_col, v1, v2, (l, u) in parts:
            for j in np.flatnonzero(v1 > 0):
                r_ += [k, k]; c_ += [post_col[j], bin_col[j]]; v_ += [1.0, -u[j]]
                rhs.append(0.0); viol.append(v1[j]); k += 1
            for j in np.flatnonzero(v2 > 0):
                r_ += [k, k, k]; c_ += [post_col[j], pre_col[j], bin_col[j]]
                v_ += [1.0, -1.0, -l[j]]; rhs.append(-l[j]); viol.append(v2[j]); k += 1
        cuts = Cuts(np.array(r_, dtype=np.int64), np.array(c_, dtype=np.int64),
                    np.array(v_), np.array(rhs), np.array(viol))
        self.cuts += cuts.count
        return cuts

    # ------------------------------------------------------------------ branching
    def branch_scores(self) -> FloatArray | None:
        """Scores of `variables` at the last propagated node (higher: branch there
        first; 0 for anything but an unstable ReLU's binary), or None without branching."""
        return self._scores if self.branching else None

    def _branch_scores(self, state: dict[str, Interval], lower: FloatArray,
                       upper: FloatArray) -> FloatArray:
        """BaBSR-style: how much splitting each unstable ReLU removes from the lower bounds
        of the unsafe rows.

        One backward pass of the rows (`[I]` on the rows node) through the node's
        relaxations gives each ReLU output's coefficient `lambda_rk` in the bound; a negative
        coefficient takes the chord `s x + t` of an unstable ReLU, whose intercept
        `t = u (-l) / (u - l)` a split removes, so the score is
        `sum_r max(-lambda_rk, 0) t_k`. Only used to choose a branching variable, so its
        rounding does not matter.
        """
        ctx = SymbolicContext(state=state, relaxations={})
        for name, op in self.net.items():
            if type(op) in RELAXATIONS:
                ctx.relaxations[name] = RELAXATIONS[type(op)](op, *state[op.inputs[0]])
        n_rows = len(self._rhs)
        coefs: dict[str, object] = {UNSAFE_ROWS_NODE: np.eye(n_rows)}
        at_relu: dict[str, FloatArray] = {}
        for name in reversed(self.net.order):
            op = self.net.op(name)
            if isinstance(op, ops.Input) or name not in coefs:
                continue
            coef = coefs.pop(name)
            if name in self._relu_nodes:
                at_relu[name] = coef.toarray() if hasattr(coef, "toarray") else np.asarray(coef)
            parts, _, _ = BACKWARD_RULES[type(op)](name, op, coef, ctx)
            for arg, new in parts:
                if arg in coefs:
                    old = coefs[arg]
                    old = old.toarray() if hasattr(old, "toarray") else old
                    new = new.toarray() if hasattr(new, "toarray") else new
                    coefs[arg] = old + new
                else:
                    coefs[arg] = new
        scores = np.zeros(len(self._variables))
        for relu, (pre, _, _, b_idx, b_span, _, _) in zip(self._relu_nodes, self._relus):
            lo, hi = state[pre]
            l, u = lo[b_idx], hi[b_idx]
            unstable = (l < 0) & (u > 0) & (lower[b_span] < 0.5) & (upper[b_span] > 0.5)
            icpt = np.where(unstable, u * -l / np.where(unstable, u - l, 1.0), 0.0)
            weight = np.maximum(-at_relu[relu][:, b_idx], 0.0).sum(axis=0) \
                if relu in at_relu else np.zeros(len(b_idx))
            scores[b_span] = weight * icpt
        return scores


def _meet(a: Interval, b: Interval) -> Interval:
    lo, hi = np.maximum(a[0], b[0]), np.minimum(a[1], b[1])
    if np.any(lo > hi):
        raise _Empty
    return lo, hi
