r"""`MilpModel`: a solver-neutral mixed-integer linear program, built fast from numpy arrays.

The model is

.. math::

    \min_x \; c^\top x + c_0 \quad\text{s.t.}\quad
    r^L \le A x \le r^U,\qquad l \le x \le u,\qquad x_j \in \mathbb{Z} \;\; (j \in I),

with :math:`A` sparse. Bounds may be infinite (``-inf``/``+inf``); there is no maximisation
(negate the objective to maximise).

Performance notes: networks give :math:`10^5`--:math:`10^6` nonzeros, so nothing here creates
one Python object per coefficient or per variable. Rows are stored as blocks of COO arrays
and assembled into a ``scipy.sparse.csr_array`` only when `MilpModel.A` is read; the result
is cached until the next `add_vars`/`add_rows`. Names are generated lazily from one prefix
per block: block ``name="fc1/relu"`` of 3 variables yields ``fc1/relu[0]``, ``fc1/relu[1]``,
``fc1/relu[2]``. A later block with the same prefix continues the numbering, so names are
always unique. Names are *not* sanitised here; file writers (`milpverify.solve.scip.write_model`)
map them to what each file format accepts.

A model may also carry convex quadratic rows ``sum_k x_{cols[k]}^2 <= rhs + x_t``
(`MilpModel.add_sum_squares`, the L2 distance): only the SCIP backend solves those, the
others refuse such a model.

A model may also carry cut `Separator`s (`MilpModel.add_separator`): valid inequalities
found on demand, which backends with cut callbacks (SCIP) add during the solve.

This module imports only numpy, scipy, `milpverify.errors` and its own helpers (`encode.arrays`,
`encode.names`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike

from milpverify.encode.arrays import (
    BoolArray,
    Bound,
    FloatArray,
    IntArray,
    as_bounds,
    as_index,
    as_values,
    readonly,
)
from milpverify.encode.names import NameBlock, NameTable
from milpverify.errors import InvalidModelError

#: Coefficients smaller than this times their row's largest are dropped (`MilpModel.add_rows`).
TINY_COEFFICIENT = 1e-12


@dataclass(frozen=True)
class Cuts:
    """Valid inequalities ``sum_k vals[k] x[cols[k]] <= rhs[rows[k]]`` (one per `rhs` entry),
    with the amount by which the separated point violates each."""

    rows: IntArray
    cols: IntArray
    vals: FloatArray
    rhs: FloatArray
    violation: FloatArray

    @property
    def count(self) -> int:
        return len(self.rhs)


@dataclass(frozen=True)
class SumSquares:
    """Convex quadratic row ``sum_k x[cols[k]]^2 <= rhs (+ x[bound] if bound >= 0)``."""

    cols: IntArray
    bound: int
    rhs: float


class Separator(Protocol):
    """Finds valid inequalities that a point (e.g. an LP solution) violates.

    `variables` lists the model variables `separate` reads; `separate(values)` gets a
    full-length vector (only those entries are meaningful). Every inequality must hold for
    every feasible point of the model, so backends that cannot separate may ignore it.
    """

    @property
    def variables(self) -> IntArray: ...

    def separate(self, values: FloatArray, *, max_cuts: int | None = None) -> Cuts: ...


class MilpModel:
    r"""A mixed-integer linear program (minimisation).

    .. math::

        \min\{c^\top x + c_0 : r^L \le Ax \le r^U,\ l \le x \le u,\ x_I \in \mathbb{Z}\}

    Build it with `add_vars`, `add_rows` / `add_matrix_rows` and `set_objective`; read it
    through the read-only properties (`A`, `lower`, `upper`, ...). Solve it with a backend
    from `milpverify.solve.get_backend`.

    Examples
    --------
    >>> m = MilpModel()
    >>> x = m.add_vars(2, 0.0, 1.0, integer=True, name="x")
    >>> m.add_rows([0, 0], x, [1.0, 1.0], 1, -np.inf, 1.0, name="cap")  # x0 + x1 <= 1
    array([0])
    >>> m.set_objective(x, [-1.0, -2.0])
    """

    def __init__(self) -> None:
        self._n_vars = 0
        self._lower_parts: list[FloatArray] = []
        self._upper_parts: list[FloatArray] = []
        self._int_parts: list[BoolArray] = []
        self._var_names = NameTable()

        self._n_rows = 0
        self._coo_rows: list[IntArray] = []
        self._coo_cols: list[IntArray] = []
        self._coo_vals: list[FloatArray] = []
        self._rlo_parts: list[FloatArray] = []
        self._rup_parts: list[FloatArray] = []
        self._row_names = NameTable()

        self._obj_cols: IntArray = np.zeros(0, dtype=np.int64)
        self._obj_vals: FloatArray = np.zeros(0)
        self._c0 = 0.0
        self._A_cache: sp.csr_array | None = None
        self._separators: list[Separator] = []
        self._quadratic: list[SumSquares] = []

    # ------------------------------------------------------------------ building
    def add_vars(self, n: int, lower: Bound = 0.0, upper: Bound = np.inf, *,
                 integer: bool | ArrayLike = False, name: str = "x") -> IntArray:
        r"""Add ``n`` variables :math:`l_k \le x_k \le u_k`.

        Parameters
        ----------
        n : int
            Number of variables (may be 0).
        lower, upper : float or array_like of shape (n,)
            Bounds; ``-inf``/``+inf`` allowed. Must satisfy ``lower <= upper``.
        integer : bool or array_like of bool, shape (n,)
            Integrality of the new variables.
        name : str
            Name prefix; variable ``k`` of the block is named ``f"{name}[{i}]"`` where ``i``
            continues the numbering of earlier blocks with the same prefix.

        Returns
        -------
        ndarray of int64, shape (n,)
            Global indices of the new variables.

        Raises
        ------
        InvalidModelError
            On NaN bounds, ``lower > upper``, ``lower == +inf``/``upper == -inf`` or a bad name.
        """
        n = int(n)
        if n < 0:
            raise InvalidModelError(f"number of variables must be >= 0, got {n}")
        lo, up = as_bounds(lower, upper, n, "variable")
        try:
            isint = np.array(np.broadcast_to(np.asarray(integer, dtype=bool), (n,)))
        except ValueError as exc:
            raise InvalidModelError(f"integer must be a bool or an array of length {n}") from exc
        start = self._n_vars
        self._var_names.add(start, n, name)
        self._lower_parts.append(lo)
        self._upper_parts.append(up)
        self._int_parts.append(isint)
        self._n_vars += n
        self._A_cache = None
        return np.arange(start, start + n, dtype=np.int64)

    def add_rows(self, rows: ArrayLike, cols: ArrayLike, vals: ArrayLike, n_rows: int,
                 lower: Bound = -np.inf, upper: Bound = np.inf, *, name: str = "c") -> IntArray:
        r"""Add ``n_rows`` rows :math:`r^L_i \le \sum_k a_{ik} x_k \le r^U_i` from COO triplets.

        Parameters
        ----------
        rows : array_like of int
            Local row of each coefficient, in ``[0, n_rows)``.
        cols : array_like of int
            Global variable index of each coefficient, in ``[0, n_vars)``.
        vals : array_like of float
            Coefficients (finite). Duplicate ``(row, col)`` pairs are summed.
        n_rows : int
            Number of new rows (rows without coefficients are allowed).
        lower, upper : float or array_like of shape (n_rows,)
            Row bounds; ``-inf``/``+inf`` allowed. Equality rows have ``lower == upper``.
        name : str
            Row name prefix (see `add_vars`).

        Returns
        -------
        ndarray of int64, shape (n_rows,)
            Global indices of the new rows.

        Raises
        ------
        InvalidModelError
            On out-of-range rows/cols, non-finite coefficients, length mismatches or bad bounds.
        """
        n_rows = int(n_rows)
        if n_rows < 0:
            raise InvalidModelError(f"number of rows must be >= 0, got {n_rows}")
        r = as_index(rows, n_rows, "row indices")
        c = as_index(cols, self._n_vars, "column (variable) indices")
        if r.shape[0] != c.shape[0]:
            raise InvalidModelError(
                f"rows and cols must have the same length, got {r.shape[0]} and {c.shape[0]}")
        v = as_values(vals, r.shape[0], "coefficients")
        lo, up = as_bounds(lower, upper, n_rows, "row")
        r, c, v, lo, up = self._drop_tiny(r, c, v, lo, up, n_rows)
        start = self._n_rows
        self._row_names.add(start, n_rows, name)
        self._coo_rows.append(r + start)
        self._coo_cols.append(c)
        self._coo_vals.append(v)
        self._rlo_parts.append(lo)
        self._rup_parts.append(up)
        self._n_rows += n_rows
        self._A_cache = None
        return np.arange(start, start + n_rows, dtype=np.int64)

    def _drop_tiny(self, r: IntArray, c: IntArray, v: FloatArray, lo: FloatArray,
                   up: FloatArray, n_rows: int
                   ) -> tuple[IntArray, IntArray, FloatArray, FloatArray, FloatArray]:
        """Drop coefficients below `TINY_COEFFICIENT` times their row's largest, soundly.

        Such coefficients (trained weights that decayed to ~1e-20, products of scalings) add
        nothing a solver can resolve at its 1e-6 feasibility tolerance but cost nnz and
        numerics. A dropped term ``a_k x_k`` lies in ``[-|a_k| m_k, |a_k| m_k]`` with
        ``m_k = max(|lower_k|, |upper_k|)`` over the variable's bounds, so widening the row's
        bounds by the sum of those (rounded up) keeps every point of the exact row feasible:
        the model is a relaxation, never a restriction. Terms on variables with an infinite
        bound are kept.
        """
        size = np.abs(v)
        # A coefficient tiny within its row is tiny against the largest of all: most calls
        # have none and stop here, before the per-row maxima (rows are built in a hot loop).
        if not size.size or not (size < TINY_COEFFICIENT * size.max()).any():
            return r, c, v, lo, up
        row_max = np.zeros(n_rows)
        np.maximum.at(row_max, r, size)
        tiny = size < TINY_COEFFICIENT * row_max[r]
        reach = np.maximum(np.abs(self.lower[c[tiny]]), np.abs(self.upper[c[tiny]]))
        tiny[tiny] = np.isfinite(reach)
        reach = reach[np.isfinite(reach)]
        if not tiny.any():
            return r, c, v, lo, up
        slack = np.zeros(n_rows)
        np.add.at(slack, r[tiny], size[tiny] * reach)
        slack = slack * (1.0 + 1e-12) + np.where(slack > 0, 1e-300, 0.0)
        keep = ~tiny
        return r[keep], c[keep], v[keep], lo - slack, up + slack

    def add_matrix_rows(self, M: sp.sparray | sp.spmatrix | ArrayLike, col_index: ArrayLike,
                        lower: Bound = -np.inf, upper: Bound = np.inf, *,
                        name: str = "c") -> IntArray:
        r"""Add rows :math:`r^L \le M\, x_{J} \le r^U` where ``J = col_index``.

        Parameters
        ----------
        M : scipy sparse matrix/array or ndarray, shape (k, len(col_index))
            Coefficients; zeros are dropped.
        col_index : array_like of int, shape (len(col_index),)
            Variable index of each column of ``M``.
        lower, upper : float or array_like of shape (k,)
            Row bounds.
        name : str
            Row name prefix.

        Returns
        -------
        ndarray of int64, shape (k,)
            Global indices of the new rows.
        """
        J = as_index(col_index, self._n_vars, "col_index")
        if sp.issparse(M):
            coo = sp.coo_array(M)
            shape = coo.shape
            r, c, v = coo.row, coo.col, coo.data
        else:
            D = np.asarray(M, dtype=np.float64)
            if D.ndim != 2:
                raise InvalidModelError(f"M must be 2-D, got shape {D.shape}")
            shape = D.shape
            r, c = np.nonzero(D)
            v = D[r, c]
        if shape[1] != J.shape[0]:
            raise InvalidModelError(
                f"M has {shape[1]} columns but col_index has {J.shape[0]} entries")
        return self.add_rows(r.astype(np.int64), J[c.astype(np.int64)], v, shape[0],
                             lower, upper, name=name)

    def set_objective(self, cols: ArrayLike, vals: ArrayLike, constant: float = 0.0) -> None:
        r"""Set the objective to :math:`\min \sum_k v_k x_{j_k} + c_0` (replacing the old one).

        Parameters
        ----------
        cols : array_like of int
            Variable indices; duplicates are summed.
        vals : array_like of float
            Finite coefficients, same length as ``cols``.
        constant : float
            The finite offset :math:`c_0`.
        """
        c = as_index(cols, self._n_vars, "objective column indices")
        v = as_values(vals, c.shape[0], "objective coefficients")
        if not np.isfinite(constant):
            raise InvalidModelError(f"objective constant must be finite, got {constant!r}")
        self._obj_cols, self._obj_vals, self._c0 = c.copy(), v.copy(), float(constant)

    def tighten_bounds(self, idx: ArrayLike, lower: Bound | None = None,
                       upper: Bound | None = None) -> None:
        r"""Intersect variable bounds with new ones.

        :math:`l_j \gets \max(l_j, \text{lower})` and :math:`u_j \gets \min(u_j, \text{upper})`.

        Parameters
        ----------
        idx : array_like of int
            Variable indices (duplicates allowed: the tightest value wins).
        lower, upper : float or array_like matching ``idx``, or None
            New bounds; None leaves that side unchanged.

        Raises
        ------
        InvalidModelError
            If a bound is NaN or a domain becomes empty (lower > upper).
        """
        j = as_index(idx, self._n_vars, "variable indices")
        lo, up = self._consolidate_vars()
        lo, up = lo.copy(), up.copy()
        if lower is not None:
            lv = np.broadcast_to(np.asarray(lower, dtype=np.float64), j.shape)
            if np.isnan(lv).any():
                raise InvalidModelError("new lower bounds contain NaN")
            np.maximum.at(lo, j, lv)
        if upper is not None:
            uv = np.broadcast_to(np.asarray(upper, dtype=np.float64), j.shape)
            if np.isnan(uv).any():
                raise InvalidModelError("new upper bounds contain NaN")
            np.minimum.at(up, j, uv)
        bad = np.flatnonzero(lo[j] > up[j])
        if bad.size:
            k = int(j[bad[0]])
            raise InvalidModelError(
                f"tightening makes the domain of {self.var_name(k)} empty: "
                f"lower {float(lo[k])!r} > upper {float(up[k])!r}")
        self._lower_parts, self._upper_parts = [lo], [up]

    def fix_vars(self, idx: ArrayLike, values: Bound) -> None:
        """Fix variables to values: ``lower = upper = value``.

        Raises
        ------
        InvalidModelError
            If a value is not finite or lies outside the variable's current bounds.
        """
        j = as_index(idx, self._n_vars, "variable indices")
        v = np.broadcast_to(np.asarray(values, dtype=np.float64), j.shape)
        if not np.isfinite(v).all():
            raise InvalidModelError("fixed values must be finite")
        lo, up = self._consolidate_vars()
        bad = np.flatnonzero((v < lo[j]) | (v > up[j]))
        if bad.size:
            k = int(bad[0])
            jj = int(j[k])
            raise InvalidModelError(
                f"cannot fix {self.var_name(jj)} to {float(v[k])!r}: outside its bounds "
                f"[{float(lo[jj])!r}, {float(up[jj])!r}]")
        self.tighten_bounds(j, v, v)

    # ------------------------------------------------------------------ views
    @property
    def n_vars(self) -> int:
        """Number of variables."""
        return self._n_vars

    @property
    def n_rows(self) -> int:
        """Number of rows (linear constraints)."""
        return self._n_rows

    @property
    def nnz(self) -> int:
        """Number of stored coefficients before duplicates are summed (cheap)."""
        return int(sum(v.shape[0] for v in self._coo_vals))

    @property
    def lower(self) -> FloatArray:
        """Variable lower bounds :math:`l`, shape (n_vars,), read-only."""
        return readonly(self._consolidate_vars()[0])

    @property
    def upper(self) -> FloatArray:
        """Variable upper bounds :math:`u`, shape (n_vars,), read-only."""
        return readonly(self._consolidate_vars()[1])

    @property
    def integrality(self) -> BoolArray:
        """True where the variable is integer, shape (n_vars,), read-only."""
        if len(self._int_parts) != 1:
            self._int_parts = [np.concatenate(self._int_parts) if self._int_parts
                               else np.zeros(0, dtype=bool)]
        return readonly(self._int_parts[0])

    @property
    def n_integer(self) -> int:
        """Number of integer variables."""
        return int(self.integrality.sum())

    @property
    def row_lower(self) -> FloatArray:
        """Row lower bounds :math:`r^L`, shape (n_rows,), read-only."""
        return readonly(self._consolidate_rows()[0])

    @property
    def row_upper(self) -> FloatArray:
        """Row upper bounds :math:`r^U`, shape (n_rows,), read-only."""
        return readonly(self._consolidate_rows()[1])

    @property
    def A(self) -> sp.csr_array:
        """Constraint matrix, shape (n_rows, n_vars), canonical CSR (duplicates summed, zeros
        dropped). Cached until the next `add_vars`/`add_rows`; do not modify it."""
        if self._A_cache is None:
            if self._coo_vals:
                r = np.concatenate(self._coo_rows)
                c = np.concatenate(self._coo_cols)
                v = np.concatenate(self._coo_vals)
                self._coo_rows, self._coo_cols, self._coo_vals = [r], [c], [v]
            else:
                r = c = np.zeros(0, dtype=np.int64)
                v = np.zeros(0)
            A = sp.csr_array((v, (r, c)), shape=(self._n_rows, self._n_vars))
            A.sum_duplicates()
            A.eliminate_zeros()
            self._A_cache = A
        return self._A_cache

    @property
    def c(self) -> FloatArray:
        """Dense objective vector :math:`c`, shape (n_vars,) (a fresh array)."""
        return np.bincount(self._obj_cols, weights=self._obj_vals,
                           minlength=self._n_vars).astype(np.float64)

    @property
    def c0(self) -> float:
        """Objective constant :math:`c_0`."""
        return self._c0

    def var_name(self, j: int) -> str:
        """Name of variable ``j``."""
        return self._var_names.name(j, self._n_vars, "variable")

    def row_name(self, i: int) -> str:
        """Name of row ``i``."""
        return self._row_names.name(i, self._n_rows, "row")

    def var_names(self) -> list[str]:
        """Names of all variables, in index order (built on demand)."""
        return self._var_names.all()

    def row_names(self) -> list[str]:
        """Names of all rows, in index order (built on demand)."""
        return self._row_names.all()

    @property
    def var_blocks(self) -> tuple[NameBlock, ...]:
        """The name blocks of the variables, in index order."""
        return tuple(self._var_names.blocks)

    @property
    def row_blocks(self) -> tuple[NameBlock, ...]:
        """The name blocks of the rows, in index order."""
        return tuple(self._row_names.blocks)

    # ------------------------------------------------------------------ checking
    def objective_value(self, x: ArrayLike) -> float:
        r""":math:`c^\top x + c_0`."""
        xv = np.asarray(x, dtype=np.float64).reshape(-1)
        return float(self._obj_vals @ xv[self._obj_cols]) + self._c0

    def max_violation(self, x: ArrayLike) -> float:
        r"""Largest absolute violation of a bound, row or integrality by ``x``.

        Returns :math:`\max(\max_j (l_j - x_j)^+, \max_j (x_j - u_j)^+, \max_i (r^L_i - a_i x)^+,
        \max_i (a_i x - r^U_i)^+, \max_{j \in I} |x_j - \operatorname{round}(x_j)|)`; 0 for a
        feasible point. Solvers only guarantee about 1e-6, so compare with a tolerance.
        Quadratic rows (`add_sum_squares`) are not checked.
        """
        xv = np.asarray(x, dtype=np.float64).reshape(-1)
        if xv.shape[0] != self._n_vars:
            raise InvalidModelError(
                f"x has {xv.shape[0]} entries, model has {self._n_vars} variables")
        lo, up = self._consolidate_vars()
        parts = [np.zeros(1), lo - xv, xv - up]
        if self._n_rows:
            ax = self.A @ xv
            rlo, rup = self._consolidate_rows()
            parts += [rlo - ax, ax - rup]
        isint = self.integrality
        if isint.any():
            xi = xv[isint]
            parts.append(np.abs(xi - np.round(xi)))
        return float(max(np.max(p) if p.size else 0.0 for p in parts))

    def add_separator(self, separator: Separator) -> None:
        """Attach a cut `Separator`. Its cuts are valid inequalities: backends with cut
        callbacks (SCIP) add the violated ones during the solve, others ignore them."""
        variables = np.asarray(separator.variables)
        if variables.size and (variables.min() < 0 or variables.max() >= self._n_vars):
            raise InvalidModelError("a separator reads variables outside the model")
        self._separators.append(separator)

    def add_sum_squares(self, cols: ArrayLike, rhs: float, bound: int = -1) -> None:
        """Add ``sum_k x[cols[k]]^2 <= rhs + x[bound]`` (no variable if `bound` < 0)."""
        idx = as_index(cols, self._n_vars, "sum-of-squares columns")
        if bound >= self._n_vars or not np.isfinite(rhs):
            raise InvalidModelError(f"sum-of-squares row: bad bound variable {bound} or rhs {rhs}")
        self._quadratic.append(SumSquares(idx, int(bound), float(rhs)))

    @property
    def quadratic(self) -> tuple[SumSquares, ...]:
        """The convex quadratic rows (see `add_sum_squares`); empty for a MILP."""
        return tuple(self._quadratic)

    @property
    def separators(self) -> tuple[Separator, ...]:
        """The attached cut separators (see `add_separator`)."""
        return tuple(self._separators)

    # ------------------------------------------------------------------ copies
    def copy(self) -> MilpModel:
        """A deep copy (names, bounds, rows, objective)."""
        new = MilpModel()
        new._n_vars = self._n_vars
        lo, up = self._consolidate_vars()
        new._lower_parts, new._upper_parts = [lo.copy()], [up.copy()]
        new._int_parts = [np.array(self.integrality)]
        new._var_names = self._var_names.copy()
        new._n_rows = self._n_rows
        A = self.A  # consolidates the COO parts
        new._coo_rows = [p.copy() for p in self._coo_rows]
        new._coo_cols = [p.copy() for p in self._coo_cols]
        new._coo_vals = [p.copy() for p in self._coo_vals]
        new._A_cache = A.copy()
        rlo, rup = self._consolidate_rows()
        new._rlo_parts, new._rup_parts = [rlo.copy()], [rup.copy()]
        new._row_names = self._row_names.copy()
        new._obj_cols, new._obj_vals = self._obj_cols.copy(), self._obj_vals.copy()
        new._c0 = self._c0
        new._separators = list(self._separators)  # immutable: shared
        new._quadratic = list(self._quadratic)  # immutable: shared
        return new

    def relaxed(self) -> MilpModel:
        """A copy with every variable continuous (the LP relaxation)."""
        new = self.copy()
        new._int_parts = [np.zeros(self._n_vars, dtype=bool)]
        return new

    def __repr__(self) -> str:
        return (f"MilpModel(n_vars={self._n_vars}, n_integer={self.n_integer}, "
                f"n_rows={self._n_rows}, nnz={self.nnz})")

    # ------------------------------------------------------------------ internals
    def _consolidate_vars(self) -> tuple[FloatArray, FloatArray]:
        if len(self._lower_parts) != 1:
            empty = np.zeros(0)
            self._lower_parts = [np.concatenate(self._lower_parts) if self._lower_parts else empty]
            self._upper_parts = [np.concatenate(self._upper_parts) if self._upper_parts else empty]
        return self._lower_parts[0], self._upper_parts[0]

    def _consolidate_rows(self) -> tuple[FloatArray, FloatArray]:
        if len(self._rlo_parts) != 1:
            empty = np.zeros(0)
            self._rlo_parts = [np.concatenate(self._rlo_parts) if self._rlo_parts else empty]
            self._rup_parts = [np.concatenate(self._rup_parts) if self._rup_parts else empty]
        return self._rlo_parts[0], self._rup_parts[0]
