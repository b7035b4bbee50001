"""Tests of `milpverify.encode.model.MilpModel`: building, views, validation, copies."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from milpverify.encode.model import MilpModel
from milpverify.errors import InvalidModelError


def small() -> MilpModel:
    m = MilpModel()
    m.add_vars(3, 0.0, [1.0, 2.0, 3.0], integer=[True, False, True], name="fc1/relu")
    m.add_vars(2, -np.inf, np.inf, name="z")
    m.add_rows([0, 0, 1, 1], [0, 3, 1, 4], [1.0, 2.0, -1.0, 0.5], 2, [-np.inf, 0.0], [4.0, 0.0],
               name="affine")
    return m


def test_add_vars_returns_indices_bounds_and_integrality() -> None:
    m = small()
    assert m.n_vars == 5
    np.testing.assert_array_equal(m.add_vars(2, 0, 1), [5, 6])
    np.testing.assert_array_equal(m.lower[:5], [0, 0, 0, -np.inf, -np.inf])
    np.testing.assert_array_equal(m.upper[:3], [1, 2, 3])
    np.testing.assert_array_equal(m.integrality, [True, False, True, False, False, False, False])
    assert m.n_integer == 2
    assert m.add_vars(0).shape == (0,)


def test_names_are_lazy_and_continue_per_prefix() -> None:
    m = small()
    m.add_vars(2, 0, 1, name="fc1/relu")
    assert m.var_names() == ["fc1/relu[0]", "fc1/relu[1]", "fc1/relu[2]", "z[0]", "z[1]",
                             "fc1/relu[3]", "fc1/relu[4]"]
    assert m.var_name(6) == "fc1/relu[4]"
    assert m.row_names() == ["affine[0]", "affine[1]"]
    assert m.row_name(1) == "affine[1]"
    assert [b.prefix for b in m.var_blocks] == ["fc1/relu", "z", "fc1/relu"]
    with pytest.raises(IndexError):
        m.var_name(7)


def test_rows_matrix_and_duplicates_summed() -> None:
    m = small()
    expected = np.array([[1, 0, 0, 2, 0], [0, -1, 0, 0, 0.5]])
    np.testing.assert_array_equal(m.A.toarray(), expected)
    # duplicate (row, col) pairs are summed, zeros dropped
    m.add_rows([0, 0, 0], [2, 2, 1], [1.5, 1.5, 0.0], 1, 1.0, 1.0, name="dup")
    assert m.A.shape == (3, 5)
    np.testing.assert_array_equal(m.A.toarray()[2], [0, 0, 3.0, 0, 0])
    assert m.A.nnz == 5
    np.testing.assert_array_equal(m.row_lower, [-np.inf, 0, 1])
    np.testing.assert_array_equal(m.row_upper, [4, 0, 1])


def test_add_matrix_rows_sparse_and_dense() -> None:
    m = MilpModel()
    x = m.add_vars(4, -1, 1)
    M = np.array([[1.0, 0.0, 2.0], [0.0, 3.0, 0.0]])
    cols = x[[3, 0, 1]]
    r1 = m.add_matrix_rows(M, cols, -1.0, 1.0, name="dense")
    r2 = m.add_matrix_rows(sp.csr_array(M), cols, -1.0, 1.0, name="sparse")
    np.testing.assert_array_equal(r1, [0, 1])
    np.testing.assert_array_equal(r2, [2, 3])
    A = m.A.toarray()
    np.testing.assert_array_equal(A[0], [0, 2, 0, 1])
    np.testing.assert_array_equal(A[1], [3, 0, 0, 0])
    np.testing.assert_array_equal(A[:2], A[2:])
    with pytest.raises(InvalidModelError, match="M has 3 columns but col_index has 2"):
        m.add_matrix_rows(M, x[:2])


def test_A_is_cached_until_next_add() -> None:
    m = small()
    A1 = m.A
    assert m.A is A1
    m.add_rows([0], [0], [1.0], 1, 0, 1)
    assert m.A is not A1 and m.A.shape == (3, 5)
    m.add_vars(1)
    assert m.A.shape == (3, 6)


def test_views_are_read_only() -> None:
    m = small()
    for arr in (m.lower, m.upper, m.integrality, m.row_lower, m.row_upper):
        with pytest.raises(ValueError):
            arr[0] = 7


def test_objective_dense_with_duplicates_and_constant() -> None:
    m = small()
    m.set_objective([0, 4, 0], [1.0, -2.0, 0.5], constant=3.0)
    np.testing.assert_array_equal(m.c, [1.5, 0, 0, 0, -2.0])
    assert m.c0 == 3.0
    x = np.array([1.0, 0, 0, 0, 2.0])
    assert m.objective_value(x) == pytest.approx(1.5 - 4.0 + 3.0)
    m.add_vars(1)
    assert m.c.shape == (6,)


@pytest.mark.parametrize("cols, match", [
    ([0, 5], r"column \(variable\) indices out of range: 5 not in \[0, 5\)"),
    ([-1, 0], r"out of range: -1"),
    ([0.0, 1.0], "must be integers"),
])
def test_bad_cols(cols: list[float], match: str) -> None:
    m = small()
    with pytest.raises(InvalidModelError, match=match):
        m.add_rows([0, 0], cols, [1.0, 1.0], 1, 0, 1)


def test_bad_rows_and_lengths() -> None:
    m = small()
    with pytest.raises(InvalidModelError, match=r"row indices out of range: 2 not in \[0, 2\)"):
        m.add_rows([0, 2], [0, 1], [1.0, 1.0], 2)
    with pytest.raises(InvalidModelError, match="rows and cols must have the same length"):
        m.add_rows([0, 0], [0], [1.0], 1)
    with pytest.raises(InvalidModelError, match="coefficients: expected 2 values, got 3"):
        m.add_rows([0, 0], [0, 1], [1.0, 1.0, 1.0], 1)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_coefficients(bad: float) -> None:
    m = small()
    with pytest.raises(InvalidModelError, match="coefficients must be finite"):
        m.add_rows([0, 0], [0, 1], [1.0, bad], 1)
    with pytest.raises(InvalidModelError, match="objective coefficients must be finite"):
        m.set_objective([0], [bad])


def test_bound_validation() -> None:
    m = MilpModel()
    with pytest.raises(InvalidModelError, match=r"variable lower bound > upper bound .* 2.0 > 1.0"):
        m.add_vars(2, [0.0, 2.0], 1.0)
    with pytest.raises(InvalidModelError, match="variable bounds contain NaN"):
        m.add_vars(1, np.nan, 1.0)
    with pytest.raises(InvalidModelError, match=r"variable lower bound is \+inf"):
        m.add_vars(1, np.inf, np.inf)
    with pytest.raises(InvalidModelError, match="variable upper bound is -inf"):
        m.add_vars(1, -np.inf, -np.inf)
    with pytest.raises(InvalidModelError, match="arrays of length 2"):
        m.add_vars(2, [0, 0, 0], 1)
    x = m.add_vars(2, 0, 1)
    with pytest.raises(InvalidModelError, match=r"row lower bound > upper bound .* 3.0 > 1.0"):
        m.add_rows([0], x[:1], [1.0], 1, 3.0, 1.0)
    with pytest.raises(InvalidModelError, match="row bounds contain NaN"):
        m.add_rows([0], x[:1], [1.0], 1, np.nan, 1.0)
    assert m.n_vars == 2 and m.n_rows == 0  # failed calls add nothing


@pytest.mark.parametrize("name", ["", "a b", "tab\tname", 3])
def test_bad_names(name: object) -> None:
    with pytest.raises(InvalidModelError, match="name prefix"):
        MilpModel().add_vars(1, name=name)  # type: ignore[arg-type]


def test_copy_is_independent_and_relaxed_is_continuous() -> None:
    m = small()
    m.set_objective([0], [1.0], 2.0)
    c = m.copy()
    c.add_vars(1, name="extra")
    c.tighten_bounds([1], upper=0.5)
    c.add_rows([0], [0], [1.0], 1)
    assert m.n_vars == 5 and m.upper[1] == 2.0 and m.n_rows == 2
    assert c.var_names()[-1] == "extra[0]" and c.c0 == 2.0
    np.testing.assert_array_equal(c.A.toarray()[:2, :5], m.A.toarray())
    r = m.relaxed()
    assert not r.integrality.any() and m.integrality.any()
    np.testing.assert_array_equal(r.A.toarray(), m.A.toarray())


def test_tighten_and_fix() -> None:
    m = small()
    lo_view = m.lower
    m.tighten_bounds([1, 1, 2], lower=[0.5, 0.7, -5.0], upper=None)
    np.testing.assert_array_equal(m.lower[:3], [0, 0.7, 0])
    assert lo_view[1] == 0.0  # earlier views are snapshots
    m.tighten_bounds([3], upper=10.0)
    assert m.upper[3] == 10.0 and m.lower[3] == -np.inf
    m.fix_vars([0, 4], [1.0, -2.0])
    assert (m.lower[0], m.upper[0], m.lower[4], m.upper[4]) == (1.0, 1.0, -2.0, -2.0)
    with pytest.raises(InvalidModelError, match=r"domain of fc1/relu\[1\] empty"):
        m.tighten_bounds([1], upper=0.1)
    with pytest.raises(InvalidModelError, match=r"cannot fix fc1/relu\[2\] to 7.0: outside"):
        m.fix_vars([2], 7.0)


def test_max_violation() -> None:
    m = small()
    x = np.array([1.0, 0.0, 2.0, 1.0, 0.0])
    assert m.max_violation(x) == 0.0
    x[0] = 0.5  # integrality violated by 0.5
    assert m.max_violation(x) == pytest.approx(0.5)
    x = np.array([1.0, 1.0, 2.0, 1.0, 0.0])  # row 1: -1 == 0 violated by 1
    assert m.max_violation(x) == pytest.approx(1.0)
    with pytest.raises(InvalidModelError, match="x has 2 entries"):
        m.max_violation([0.0, 0.0])


def test_large_build_is_vectorised() -> None:
    m = MilpModel()
    n = 200_000
    x = m.add_vars(n, -1, 1, name="big")
    rng = np.random.default_rng(0)
    r = rng.integers(0, 1000, 300_000)
    m.add_rows(r, rng.integers(0, n, r.size), rng.standard_normal(r.size), 1000, -1, 1)
    assert m.A.shape == (1000, n)
    assert m.var_name(int(x[-1])) == f"big[{n - 1}]"


def test_tiny_coefficients_are_dropped_and_the_row_widened_soundly() -> None:
    """A coefficient 1e-15 times its row's largest goes; the row's bounds grow by |a| * max|x|,
    so every point of the exact row stays feasible. One on an unbounded variable stays."""
    m = MilpModel()
    x = m.add_vars(3, [-2.0, 0.0, -np.inf], [3.0, 1.0, np.inf])
    m.add_rows([0, 0, 1, 1], [x[0], x[1], x[0], x[2]], [1.0, 1e-15, 1.0, 1e-15], 2,
               [0.5, -np.inf], [0.5, 4.0])
    assert m.A.nnz == 3
    np.testing.assert_array_equal(m.A.toarray(), [[1.0, 0.0, 0.0], [1.0, 0.0, 1e-15]])
    slack = 1e-15 * 1.0
    assert m.row_lower[0] <= 0.5 - slack and m.row_upper[0] >= 0.5 + slack
    assert m.row_lower[0] > 0.5 - 2 * slack and m.row_upper[1] == 4.0
    rng = np.random.default_rng(0)
    for x1 in rng.uniform(0.0, 1.0, 50):  # exact row: x0 + 1e-15 x1 = 0.5
        x0 = 0.5 - 1e-15 * x1
        assert m.row_lower[0] <= x0 <= m.row_upper[0]
