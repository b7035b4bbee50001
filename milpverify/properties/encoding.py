"""MILP encodings of 'the top-K set changed' (disjunction over pairs, or one binary per pair)."""

from __future__ import annotations

import numpy as np

from milpverify.bounds.base import Bounds
from milpverify.encode.milp import Term, encode_network
from milpverify.encode.model import MilpModel
from milpverify.encode.objective import RobustnessProblem, add_distance
from milpverify.errors import InvalidInputError
from milpverify.ir.network import Network
from milpverify.ir.ops import FloatArray, IntArray
from milpverify.properties.pairs import PairPlan

#: Encodings of "every top-k set in ks changed" (see `add_topk_changed`).
ENCODINGS = ("pairs", "select")


def _terms(outputs: Term, coeffs: list[tuple[int, float]], extra: list[tuple[int, float]] = ()
           ) -> tuple[IntArray, FloatArray, float]:
    """Columns, values and constant of `sum c * y_o` (+ `sum c * var`) over output Terms."""
    cols, vals, const = [], [], 0.0
    for o, c in coeffs:
        if outputs.var[o] >= 0:
            cols.append(int(outputs.var[o]))
            vals.append(c)
        else:
            const += c * float(outputs.const[o])
    for v, c in extra:
        cols.append(int(v))
        vals.append(c)
    return np.asarray(cols, dtype=np.int64), np.asarray(vals, dtype=np.float64), const


def _row(model: MilpModel, outputs: Term, coeffs: list[tuple[int, float]], upper: float,
         name: str, extra: list[tuple[int, float]] = ()) -> None:
    """One row `sum coeffs * y (+ extra) <= upper`."""
    cols, vals, const = _terms(outputs, coeffs, extra)
    model.add_rows(np.zeros(len(cols), dtype=np.int64), cols, vals, 1, -np.inf, upper - const,
                   name=name)


def add_topk_changed(model: MilpModel, outputs: Term, plan: PairPlan, margin: float, *,
                     encoding: str = "pairs", relax: bool = False) -> IntArray:
    r"""Require every top-k set in `plan.ks` to be changed: AND_k OR_{(i,j) in P_k} y_j - y_i >= m.

    `m = margin`; `P_k = plan.pairs[k]`. A pair that is the only one left for some k is
    forced: the row `y_i - y_j <= -m` (no binary), and every k containing it is satisfied.

    ``encoding="pairs"``: one binary `z_ij` per remaining pair, shared by every k the pair
    can change (i in T_k, j not in T_k), with `M_ij = max(y_i - y_j) + m` from
    `plan.diff_*`:

        y_i - y_j + M_ij z_ij <= M_ij - m,      sum_{(i,j) in P_k} z_ij >= 1  (each k).

    ``encoding="select"``: per k, pick one insider and one outsider through a threshold
    t_k in `[T_lo, T_hi] = [min_I l_i + m, max(max_J u_j, T_lo)]` (I, J: insiders and
    outsiders of `P_k`; l, u output bounds), binaries a_j (j in J), b_i (i in I):

        t_k - y_j + (T_hi - l_j) a_j <= T_hi - l_j          (a_j = 1: y_j >= t_k)
        y_i - t_k + (u_i + m - T_lo) b_i <= u_i - T_lo      (b_i = 1: y_i + m <= t_k)
        sum_j a_j = 1,  sum_i b_i = 1,

    so some j >= t_k >= some i + m: |I| + |J| binaries per k instead of up to |I| |J|.
    Returns the binary variable indices.
    """
    if encoding not in ENCODINGS:
        raise InvalidInputError(f"`encoding` must be one of {ENCODINGS}; got {encoding!r}.")
    forced = {ps[0] for ps in plan.pairs.values() if len(ps) == 1}
    for i, j in sorted(forced):
        _row(model, outputs, [(i, 1.0), (j, -1.0)], -margin, f"topk/pair[{i},{j}]")
    open_ks = [k for k in plan.ks if not forced.intersection(plan.pairs[k])]
    binaries: list[int] = []
    if encoding == "pairs":
        used = sorted({p for k in open_ks for p in plan.pairs[k]})
        z = model.add_vars(len(used), 0.0, 1.0, integer=not relax, name="topk.pair")
        index = dict(zip(used, z))
        for (i, j), var in index.items():
            big = max(-plan.diff_lower[j, i] + margin, 0.0)
            _row(model, outputs, [(i, 1.0), (j, -1.0)], big - margin, f"topk/pair[{i},{j}]",
                 [(var, big)])
        for k in open_ks:
            cols = np.array([index[p] for p in plan.pairs[k]], dtype=np.int64)
            model.add_rows(np.zeros(len(cols), dtype=np.int64), cols, np.ones(len(cols)), 1,
                           1.0, np.inf, name=f"topk/changed[{k}]")
        return np.asarray(z, dtype=np.int64)
    lo, up = plan.out_lower, plan.out_upper
    for k in open_ks:
        inside = sorted({i for i, _ in plan.pairs[k]})
        outside = sorted({j for _, j in plan.pairs[k]})
        t_lo = float(min(lo[i] for i in inside)) + margin
        t_hi = max(float(max(up[j] for j in outside)), t_lo)
        t = int(model.add_vars(1, t_lo, t_hi, name=f"topk[{k}].threshold")[0])
        for side, members in (("out", outside), ("in", inside)):
            choose = len(members) > 1
            sel = model.add_vars(len(members) if choose else 0, 0.0, 1.0, integer=not relax,
                                 name=f"topk[{k}].{side}")
            binaries.extend(int(v) for v in sel)
            for pos, c in enumerate(members):
                if side == "out":   # t - y_j <= M (1 - a_j)
                    big = max(t_hi - float(lo[c]), 0.0)
                    coeffs, rhs = [(c, -1.0)], 0.0
                else:               # y_i - t <= -m + M (1 - b_i)
                    big = max(float(up[c]) + margin - t_lo, 0.0)
                    coeffs, rhs = [(c, 1.0)], -margin
                extra = [(t, 1.0 if side == "out" else -1.0)]
                if choose:
                    extra.append((int(sel[pos]), big))
                    rhs += big
                _row(model, outputs, coeffs, rhs, f"topk[{k}]/{side}[{c}]", extra)
            if choose:
                model.add_rows(np.zeros(len(sel), dtype=np.int64), sel, np.ones(len(sel)), 1,
                               1.0, 1.0, name=f"topk[{k}]/{side}/one")
    return np.asarray(binaries, dtype=np.int64)


def build_property_problem(net: Network, x: FloatArray | None, bounds: Bounds, plan: PairPlan,
                           box_lower: FloatArray, box_upper: FloatArray, *, margin: float,
                           norm: str = "linf", radius: float = 0.0, encoding: str = "pairs",
                           relax: bool = False, with_distance: bool = True) -> RobustnessProblem:
    """Input box + network + "every top-k set in `plan.ks` changed" (+ distance to x)."""
    model = MilpModel()
    input_vars = model.add_vars(net.input_size, box_lower, box_upper, name="input")
    used = np.zeros(net.num_classes, dtype=bool)
    for ps in plan.pairs.values():
        for i, j in ps:
            used[[i, j]] = True
    encoding_ = encode_network(net, bounds, model, Term.of_vars(input_vars), outputs=used,
                               relax=relax)
    choice = add_topk_changed(model, encoding_.terms[net.output], plan, margin,
                              encoding=encoding, relax=relax)
    t = None
    if with_distance:
        assert x is not None
        t = add_distance(model, x, input_vars, norm, radius)
    return RobustnessProblem(model, encoding_, input_vars, t, [], choice)
