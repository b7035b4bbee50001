"""LP / MIP / progressive tightening: safe dual bounds, exact small answers, nesting, soundness."""

from __future__ import annotations

import itertools
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import milpverify
from bounds.test_symbolic import (
    affine,
    assert_inside,
    pgd_points,
    residual_net,
    sample_box,
    widest_targets,
)
from milpverify.bounds import Bounds, contains, interval_bounds, symbolic_bounds
from milpverify.bounds.tighten import compute_bounds
from milpverify.bounds.tighten import lp as tighten_lp
from milpverify.bounds.tighten import mip as tighten_mip
from milpverify.bounds.tighten.lp import safe_dual_bound
from milpverify.bounds.tighten.mip import MIP_BOUND_SLACK
from milpverify.encode.model import MilpModel
from milpverify.errors import InvalidInputError
from milpverify.ir import ops
from milpverify.ir.network import Network
from milpverify.solve import get_backend
from milpverify.solve.base import SolveOptions, SolveResult, SolveStatus

SOLVER_METHODS = ("lp", "mip", "progressive")


# ---------------------------------------------------------------------------- hand-built nets
def lp_net() -> Network:
    """LP strictly tighter than symbolic on `g1`, MIP strictly tighter than LP on `g0`::

        x0, x1 in [-1, 1]  ─> h0 = x0 + x1, h1 = x0 - x1 ─> r0, r1 ─> g0 = r0 + r1 - 2.5
        x2 in [-1, 2]      ─> h2 = x2, h3 = -x2, h4 = x2 + 1 ─> r2, r3, r4 (r4 = x2 + 1)
                                               g1 = r2 + r3 - 0.5 r4 + 0.75 = |x2| - x2/2 + 0.25
        g = (g0, g1) ─> s = relu(g) ─> y = s0 + s1

    g0: true [-2.5, -0.5] (max |x0 + x1| and |x0 - x1| cannot both be 2). Symbolic and LP:
    the chords give r0 + r1 <= x0 + 2, so g0 <= 0.5; the MILP is exact: [-2.5, -0.5].
    g1: true [0.25, 1.75]. Symbolic: r2 >= x2 (CROWN picks slope 1 since u = 2 > -l = 1),
    r3 >= 0, so g1 >= x2 / 2 + 0.25 >= -0.25 (unstable). LP: r2 >= max(0, x2) and
    r3 >= max(0, -x2) together give g1 >= 0.25 (stable); the upper bound 1.75 is exact.
    """
    return Network([
        ("x", ops.Input((), (3,))),
        ("h", affine("x", [[1, 1, 0], [1, -1, 0], [0, 0, 1], [0, 0, -1], [0, 0, 1]],
                     [0, 0, 0, 0, 1])),
        ("r", ops.Relu(("h",), (5,))),
        ("g", affine("r", [[1, 1, 0, 0, 0], [0, 0, 1, 1, -0.5]], [-2.5, 0.75])),
        ("s", ops.Relu(("g",), (2,))),
        ("y", affine("s", [[1, 1]], [0])),
    ], "y")


LP_NET_BOX = (np.array([-1.0, -1.0, -1.0]), np.array([1.0, 1.0, 2.0]))


def close(b: Bounds, name: str, lower: list[float], upper: list[float], tol: float) -> None:
    """Bounds contain `[lower, upper]` and are within `tol` of it."""
    lo, hi = b.flat(name)
    assert np.all(lo <= np.asarray(lower)) and np.all(hi >= np.asarray(upper)), (lo, hi)
    np.testing.assert_allclose(lo, lower, atol=tol)
    np.testing.assert_allclose(hi, upper, atol=tol)


def test_lp_strictly_tighter_than_symbolic_and_mip_exact() -> None:
    net = lp_net()
    sb = symbolic_bounds(net, *LP_NET_BOX)
    close(sb, "g", [-2.5, -0.25], [0.5, 1.75], 1e-12)
    assert sb.relu_cases["s"]["unstable"] == 2
    lp = compute_bounds(net, *LP_NET_BOX, method="lp")
    close(lp, "g", [-2.5, 0.25], [0.5, 1.75], 1e-9)
    assert lp.relu_cases["s"] == {"active": 1, "inactive": 0, "unstable": 1}
    mip = compute_bounds(net, *LP_NET_BOX, method="mip")
    close(mip, "g", [-2.5, 0.25], [-0.5, 1.75], 3 * MIP_BOUND_SLACK)
    assert mip.relu_cases["s"] == {"active": 1, "inactive": 1, "unstable": 0}
    assert contains(sb, lp) and contains(lp, mip)
    close(mip, "y", [0.25], [1.75], 1e-9)  # carried to the output by the symbolic pass


def test_progressive_decides_signs() -> None:
    net = lp_net()
    b = compute_bounds(net, *LP_NET_BOX)  # progressive, levels lp then mip
    assert b.method == "progressive"
    assert b.relu_cases["s"] == {"active": 1, "inactive": 1, "unstable": 0}
    levels = b.details["levels"]
    assert levels["lp"]["stabilized"] == 1 and levels["mip"]["stabilized"] == 1
    lo, hi = b.flat("g")
    assert hi[0] <= 0 and lo[1] >= 0


@pytest.mark.parametrize("mip_backend", ["scip", "highs"])
def test_progressive_sign_milps_skip_presolve_and_heuristics(monkeypatch, mip_backend) -> None:
    """Every sign MILP of "progressive" gets its backend's `SIGN_MILP_PARAMS` (they are valid
    names: no warning), and the signs are decided as before."""
    seen: list[dict[str, object]] = []
    backend = get_backend(mip_backend)
    real_session = type(backend).session

    def recording_session(self, model):
        session = real_session(self, model)
        real_minimize = session.minimize

        def minimize(cols, vals, options=None):
            options = options or SolveOptions()
            if model.n_integer:  # the sign MILPs, not the LPs (also HiGHS sessions)
                seen.append(dict(options.solver_params))
            return real_minimize(cols, vals, options)

        session.minimize = minimize
        return session

    monkeypatch.setattr(type(backend), "session", recording_session)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        b = compute_bounds(lp_net(), *LP_NET_BOX, mip_backend=mip_backend)
    assert b.details["levels"]["mip"]["stabilized"] == 1
    assert seen and all(p == tighten_mip.SIGN_MILP_PARAMS[mip_backend] for p in seen)


def test_stalled_lp_resolve_restarts_from_scratch(monkeypatch: pytest.MonkeyPatch) -> None:
    """A warm-started LP re-solve that reaches its iteration limit
    (`LP_RESOLVE_ITERATIONS_PER_DIM`; HiGHS's primal simplex once ran 1.6 million iterations,
    66 s, on a first-layer LP of eran 9x200 with 209 rows) is solved again from scratch:
    same bounds, counted."""
    reference = compute_bounds(lp_net(), *LP_NET_BOX, method="lp")
    assert reference.details["levels"]["lp"]["restarts"] == 0
    monkeypatch.setattr(tighten_lp, "LP_RESOLVE_ITERATIONS_PER_DIM", 0)  # every re-solve stops at once
    restarted = compute_bounds(lp_net(), *LP_NET_BOX, method="lp")
    assert restarted.details["levels"]["lp"]["restarts"] > 0
    for name in ("h", "g"):
        for a, b in zip(reference.flat(name), restarted.flat(name)):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9, err_msg=name)


def test_lp_resolve_limit_out_of_reach_is_clamped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A limit beyond HiGHS's 32-bit options (no restarts, as `benchmarks/sign_milps.py`'s
    `threads_2_no_restart` sets it) is clamped, not rejected with a warning."""
    monkeypatch.setattr(tighten_lp, "LP_RESOLVE_ITERATIONS_PER_DIM", 10**9)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        b = compute_bounds(lp_net(), *LP_NET_BOX, method="lp")
    assert b.details["levels"]["lp"]["restarts"] == 0


def test_progressive_lp_only_and_scip_backend() -> None:
    net = lp_net()
    b = compute_bounds(net, *LP_NET_BOX, levels=("lp",))
    assert b.relu_cases["s"]["unstable"] == 1 and set(b.details["levels"]) == {"lp"}
    scip = compute_bounds(net, *LP_NET_BOX, method="mip", backend="scip")  # no duals: widened
    close(scip, "g", [-2.5, 0.25], [-0.5, 1.75], 3 * MIP_BOUND_SLACK)


def test_time_limit_keeps_sound_bounds() -> None:
    net = residual_net(seed=5)
    x = np.random.default_rng(6).uniform(size=36)
    lo, hi = np.clip(x - 0.2, 0, 1), np.clip(x + 0.2, 0, 1)
    sb = symbolic_bounds(net, lo, hi)
    b = compute_bounds(net, lo, hi, method="mip", time_limit_s=1e-6)
    assert b.details["timed_out"] and contains(sb, b)


class FailingSession:
    """A session whose every solve ends in ERROR with a (meaningless) finite dual bound, as
    HiGHS 1.15 does after "Solve error"."""

    def __init__(self, model: MilpModel) -> None:
        self.model = model

    def minimize(self, cols: object, vals: object, options: object = None) -> SolveResult:
        return SolveResult(SolveStatus.ERROR, None, 0.0, None, 0, 0.0, "failing", "Solve error")

    def close(self) -> None:
        pass

    def __enter__(self) -> FailingSession:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class FailingBackend:
    name = "failing"

    def session(self, model: MilpModel) -> FailingSession:
        return FailingSession(model)


def test_failed_solves_leave_bounds_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    for level in (tighten_lp, tighten_mip):
        monkeypatch.setattr(level, "get_backend", lambda name: FailingBackend())
    net = lp_net()
    sb = symbolic_bounds(net, *LP_NET_BOX)
    for method in SOLVER_METHODS:
        b = compute_bounds(net, *LP_NET_BOX, method=method)
        assert b.details["solves"] > 0
        for name in net.order:
            np.testing.assert_array_equal(b.flat(name)[0], sb.flat(name)[0])
            np.testing.assert_array_equal(b.flat(name)[1], sb.flat(name)[1])


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "beta"}, r"`method` must be one of interval, symbolic, alpha, lp, mip, "
                         r"progressive; got 'beta'"),
    ({"time_limit_s": 0}, r"`time_limit_s` must be > 0 or None; got 0"),
    ({"per_neuron_s": -1.0}, r"`per_neuron_s` must be > 0 or None; got -1.0"),
    ({"levels": ("lp", "exact")}, r"`levels` must be a non-empty sequence of 'lp', 'mip'; "
                                  r"got \['lp', 'exact'\]"),
    ({"levels": ()}, r"`levels` must be a non-empty sequence"),
    ({"threads": 0}, r"`threads` must be an integer >= 1; got 0"),
])
def test_invalid_options(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        compute_bounds(lp_net(), *LP_NET_BOX, **kwargs)  # type: ignore[arg-type]


def test_base_is_respected_and_checked() -> None:
    net = lp_net()
    lp = compute_bounds(net, *LP_NET_BOX, method="lp")
    assert contains(lp, compute_bounds(net, *LP_NET_BOX, method="interval", base=lp))
    assert contains(lp, compute_bounds(net, *LP_NET_BOX, method="mip", base=lp))
    small = compute_bounds(net, [0.5, 0.5, 1.5], [1, 1, 2], method="symbolic")
    with pytest.raises(InvalidInputError, match=r"do not intersect .* same input box"):
        compute_bounds(net, [-1, -1, -1], [-0.5, -0.5, -0.9], method="interval", base=small)


def test_bad_box() -> None:
    with pytest.raises(InvalidInputError, match="lower > upper"):
        compute_bounds(lp_net(), [0, 0, 1], [0, 0, 0], method="lp")


# ---------------------------------------------------------------------------- output constraint
def test_output_constraint_bounds_only_the_inputs_that_satisfy_it() -> None:
    """lp_net: y = |x2| - x2 / 2 + 0.25, so y <= 0.5 holds exactly for x2 in [-1/6, 1/2].
    The LP over the box with that row gives the first layer's x2 (h2) exactly those bounds
    (a node the unconstrained methods never solve: it is affine in the input), and every
    sampled input with y <= 0.5 stays inside all bounds; a row that never binds changes
    nothing."""
    net = lp_net()
    lp = compute_bounds(net, *LP_NET_BOX, method="lp")
    cut = compute_bounds(net, *LP_NET_BOX, method="lp", base=lp,
                         output_constraint=([[1.0]], [0.5]))
    assert cut.details["empty"] is False and contains(lp, cut)
    lo, hi = cut.flat("h")
    assert -1 / 6 - 1e-9 <= lo[2] <= -1 / 6 and 0.5 <= hi[2] <= 0.5 + 1e-9
    np.testing.assert_allclose([lp.flat("h")[0][2], lp.flat("h")[1][2]], [-1.0, 2.0], atol=1e-9)
    rng = np.random.default_rng(3)
    points = sample_box(*LP_NET_BOX, 4_000, rng)
    kept = points[net.forward(points)[:, 0] <= 0.5]
    assert len(kept) > 300  # x2 in [-1/6, 1/2]: 2/9 of the uniform half
    assert_inside(net, [cut], kept)
    loose = compute_bounds(net, *LP_NET_BOX, method="lp", output_constraint=([[1.0]], [10.0]))
    for name in net.order:
        for a, b in zip(loose.flat(name), lp.flat(name)):
            np.testing.assert_allclose(a, b, atol=1e-9, err_msg=name)


def test_output_constraint_that_no_input_meets_is_flagged_empty() -> None:
    """lp_net's y is at least 0.25 and its LP relaxation is exact there: y <= 0.249 makes
    the first LP infeasible, HiGHS's dual ray (re-solved with dual simplex) proves it
    rigorously, and the bounds come back crossed with `empty`; y <= 0.26 (inputs with x2
    near 0) is not empty."""
    net = lp_net()
    empty = compute_bounds(net, *LP_NET_BOX, method="lp", output_constraint=([[1.0]], [0.249]))
    assert empty.details["empty"] is True
    assert any(np.any(empty.flat(n)[0] > empty.flat(n)[1]) for n in net.order)
    thin = compute_bounds(net, *LP_NET_BOX, method="lp", output_constraint=([[1.0]], [0.26]))
    assert thin.details["empty"] is False
    lo, hi = thin.flat("h")
    assert -0.02 / 3 - 1e-9 <= lo[2] <= -0.02 / 3 and 0.02 <= hi[2] <= 0.02 + 1e-9


def test_output_constraint_on_a_real_net(shared_data: Path) -> None:
    """ERAN 3x50 at eps 0.02: with the row "logit 3 - logit 7 <= median over samples" (about
    half the box's inputs), the LP bounds (10 s budget) are inside the unconstrained LP's (`base`),
    strictly narrower somewhere, and every sampled or PGD input satisfying the row is inside
    them."""
    net = load(shared_data, "nets/mnist/eran/mnist_relu_3_50.onnx")
    lo, hi = linf_box(mnist_image(shared_data, 0), 0.02)
    rng = np.random.default_rng(17)
    points = sample_box(lo, hi, 4_000, rng)
    row = np.zeros(10)
    row[3], row[7] = 1.0, -1.0
    d = float(np.median(net.forward(points) @ row))
    lp = compute_bounds(net, lo, hi, method="lp")
    cut = compute_bounds(net, lo, hi, method="lp", base=lp, output_constraint=(row, [d]),
                         time_limit_s=10.0)
    assert contains(lp, cut) and not cut.details["empty"]
    widths = [np.sum(lp.flat(n)[1] - lp.flat(n)[0]) - np.sum(cut.flat(n)[1] - cut.flat(n)[0])
              for n in net.order]
    assert max(widths) > 1e-3
    attacks = pgd_points(net, lo, hi, widest_targets(net, cut, per_node=4), rng)
    both = np.vstack([points, attacks])
    kept = both[net.forward(both) @ row <= d]
    assert len(kept) > 1_000
    assert_inside(net, [cut], kept)


@pytest.mark.parametrize("kwargs, message", [
    ({"output_constraint": ([[1.0, 2.0]], [0.0])},
     r"A of shape \(k, 1\) .* got \(1, 2\) and \(1,\)"),
    ({"output_constraint": ([[np.nan]], [0.0])}, r"NaN or infinite"),
    ({"output_constraint": ([[1.0]], [0.0]), "method": "symbolic"},
     r"`output_constraint` needs a solver method .* got method 'symbolic'"),
    ({"output_constraint": 5}, r"pair \(A, b\) of numeric arrays"),
    ({"output_constraint": (["a"], [0.0])}, r"pair \(A, b\) of numeric arrays"),
])
def test_bad_output_constraint(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        compute_bounds(lp_net(), *LP_NET_BOX, **kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- safe dual bound
def random_lp(rng: np.random.Generator, m: int, n: int, scale: float = 1.0
              ) -> tuple[sp.csr_array, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A feasible LP `rl <= A x <= ru`, `l <= x <= u` around a random point (some sides inf)."""
    a = rng.normal(size=(m, n)) * (rng.random((m, n)) < 0.5) * scale
    x0 = rng.uniform(-1, 1, n)
    ax = a @ x0
    rl, ru = ax - rng.uniform(0, 1, m), ax + rng.uniform(0, 1, m)
    rl[rng.random(m) < 0.3] = -np.inf
    ru[rng.random(m) < 0.3] = np.inf
    return sp.csr_array(a), rl, ru, -rng.uniform(1, 3, n), rng.uniform(1, 3, n)


def highs_lp(a: sp.csr_array, rl: np.ndarray, ru: np.ndarray, lo: np.ndarray, up: np.ndarray,
             c: np.ndarray) -> tuple[float, np.ndarray]:
    """Optimal value and row duals of `min c^T x` through the HiGHS session (as tighten does)."""
    model = MilpModel()
    v = model.add_vars(a.shape[1], lo, up)
    coo = sp.coo_array(a)
    model.add_rows(coo.row, v[coo.col], coo.data, a.shape[0], rl, ru)
    with get_backend("highs").session(model) as session:
        res = session.minimize(v, c, SolveOptions())
        duals = res.row_duals
    assert res.objective is not None and duals is not None
    return res.objective, duals


def exact_dual_value(a: sp.csr_array, rl: np.ndarray, ru: np.ndarray, lo: np.ndarray,
                     up: np.ndarray, c: np.ndarray, y: np.ndarray) -> Fraction:
    """`sum_i min(y_i rl_i, y_i ru_i) + sum_j min(r_j l_j, r_j u_j)` in rational arithmetic
    (y projected as in `safe_dual_bound`)."""
    dense = a.toarray()
    yf = [Fraction(0) if (v > 0 and not np.isfinite(rl[i])) or (v < 0 and not np.isfinite(ru[i]))
          else Fraction(float(v)) for i, v in enumerate(y)]
    total = sum((yi * Fraction(rl[i] if yi > 0 else ru[i]) for i, yi in enumerate(yf) if yi),
                Fraction(0))
    for j in range(dense.shape[1]):
        r = Fraction(c[j]) - sum((Fraction(dense[i, j]) * yf[i] for i in range(len(yf))),
                                 Fraction(0))
        total += min(r * Fraction(lo[j]), r * Fraction(up[j]))
    return total


def exact_lp_optimum(a: np.ndarray, rl: np.ndarray, ru: np.ndarray, lo: np.ndarray,
                     up: np.ndarray, c: np.ndarray) -> Fraction:
    """Brute force: the best feasible vertex, each one solved exactly with Fractions."""
    n = a.shape[1]
    planes = [(list(map(Fraction, a[i])), Fraction(b)) for i in range(a.shape[0])
              for b in (rl[i], ru[i]) if np.isfinite(b)]
    planes += [([Fraction(int(k == j)) for k in range(n)], Fraction(b))
               for j in range(n) for b in (lo[j], up[j])]
    best: Fraction | None = None
    for combo in itertools.combinations(planes, n):
        x = solve_exact([p[0] for p in combo], [p[1] for p in combo])
        if x is None:
            continue
        ax = [sum((Fraction(a[i, j]) * x[j] for j in range(n)), Fraction(0))
              for i in range(a.shape[0])]
        if all(Fraction(lo[j]) <= x[j] <= Fraction(up[j]) for j in range(n)) and all(
                (not np.isfinite(rl[i]) or ax[i] >= Fraction(rl[i]))
                and (not np.isfinite(ru[i]) or ax[i] <= Fraction(ru[i])) for i in range(len(ax))):
            value = sum((Fraction(c[j]) * x[j] for j in range(n)), Fraction(0))
            best = value if best is None or value < best else best
    assert best is not None
    return best


def solve_exact(m: list[list[Fraction]], b: list[Fraction]) -> list[Fraction] | None:
    """Gauss-Jordan elimination in rationals; None if singular."""
    n = len(b)
    rows = [row[:] + [rhs] for row, rhs in zip(m, b)]
    for col in range(n):
        pivot = next((r for r in range(col, n) if rows[r][col] != 0), None)
        if pivot is None:
            return None
        rows[col], rows[pivot] = rows[pivot], rows[col]
        for r in range(n):
            if r != col and rows[r][col] != 0:
                f = rows[r][col] / rows[col][col]
                rows[r] = [x - f * y for x, y in zip(rows[r], rows[col])]
    return [rows[i][n] / rows[i][i] for i in range(n)]


def test_safe_bound_matches_lp_optimum() -> None:
    rng = np.random.default_rng(1)
    for trial in range(20):
        scale = 10.0 ** rng.integers(-3, 4)
        a, rl, ru, lo, up = random_lp(rng, 25, 15, scale)
        c = rng.normal(size=15)
        optimum, duals = highs_lp(a, rl, ru, lo, up, c)
        safe = safe_dual_bound(a, rl, ru, lo, up, c, duals)
        assert safe <= optimum + 1e-9 * (1 + abs(optimum))
        assert optimum - safe <= 1e-6 * (1 + abs(optimum)), (trial, optimum, safe)


def test_safe_bound_valid_for_any_dual_exactly() -> None:
    """Exact optimum by vertex enumeration; HiGHS duals, perturbed duals and random duals
    all give bounds below it, and `safe_dual_bound` rounds below the exact dual value."""
    rng = np.random.default_rng(2)
    for _ in range(6):
        a, rl, ru, lo, up = random_lp(rng, 4, 3)
        c = rng.normal(size=3)
        optimum = exact_lp_optimum(a.toarray(), rl, ru, lo, up, c)
        _, duals = highs_lp(a, rl, ru, lo, up, c)
        assert abs(float(optimum - Fraction(safe_dual_bound(a, rl, ru, lo, up, c, duals)))) < 1e-9
        for y in (duals * (1 + 1e-3 * rng.normal(size=4)), duals + rng.normal(size=4),
                  -duals, rng.normal(size=4) * 1e8, np.array([np.nan, np.inf, 0.0, 1.0])):
            safe = safe_dual_bound(a, rl, ru, lo, up, c, y)
            exact = exact_dual_value(a, rl, ru, lo, up, c, np.nan_to_num(y, posinf=0.0))
            assert Fraction(safe) <= exact <= optimum


def test_safe_bound_rounding_is_outward() -> None:
    """Awkward magnitudes: the float result never exceeds the exact value of the same `y`."""
    rng = np.random.default_rng(3)
    for _ in range(30):
        a = sp.csr_array(rng.normal(size=(6, 5)) * 10.0 ** rng.integers(-8, 8, size=(6, 5)))
        rl, ru = -np.abs(rng.normal(size=6)) * 1e3, np.abs(rng.normal(size=6)) / 3
        lo, up = -np.abs(rng.normal(size=5)) / 7, np.abs(rng.normal(size=5)) * 1e5
        c, y = rng.normal(size=5) / 3, rng.normal(size=6) * 10.0 ** rng.integers(-8, 8, size=6)
        assert Fraction(safe_dual_bound(a, rl, ru, lo, up, c, y)) <= exact_dual_value(
            a, rl, ru, lo, up, c, y)


def test_safe_bound_example_and_infinite_bounds() -> None:
    a = sp.csr_array([[1.0, 1.0]])
    got = safe_dual_bound(a, [1.0], [np.inf], [0, 0], [5, 5], np.array([1.0, 2.0]), [1.0])
    assert 1.0 - 1e-12 < got <= 1.0
    # reduced cost of x1 negative and x1 unbounded above: no finite bound from this y
    assert safe_dual_bound(a, [1.0], [np.inf], [0, 0], [5, np.inf], np.array([1.0, 2.0]),
                           [3.0]) == -np.inf


# ---------------------------------------------------------------------------- real nets
def load(shared_data: Path, rel: str) -> Network:
    return milpverify.load_onnx(shared_data / rel)


def mnist_image(shared_data: Path, index: int) -> np.ndarray:
    with np.load(shared_data / "mnist" / "mnist_test.npz") as data:
        return data["images"][index].astype(np.float64).ravel() / 255.0


def linf_box(x: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    return np.clip(x - eps, 0.0, 1.0), np.clip(x + eps, 0.0, 1.0)


def all_methods(net: Network, lo: np.ndarray, hi: np.ndarray) -> dict[str, Bounds]:
    """Every method; "mip" starts from the "lp" result (`base`), so the nesting holds even
    when a per-neuron time limit cuts some solves short."""
    out = {"interval": interval_bounds(net, lo, hi), "symbolic": symbolic_bounds(net, lo, hi)}
    for method in SOLVER_METHODS:
        out[method] = compute_bounds(net, lo, hi, method=method, per_neuron_s=0.5,
                                     base=out["lp"] if method == "mip" else None)
    return out


def check_nested_and_sound(net: Network, lo: np.ndarray, hi: np.ndarray, seed: int,
                           n_points: int) -> dict[str, Bounds]:
    """interval ⊇ symbolic ⊇ lp ⊇ mip, symbolic ⊇ progressive, and random + PGD points
    (maximising / minimising the widest neurons) stay inside every bound."""
    b = all_methods(net, lo, hi)
    assert contains(b["interval"], b["symbolic"])
    assert contains(b["symbolic"], b["lp"]) and contains(b["lp"], b["mip"])
    assert contains(b["symbolic"], b["progressive"])
    assert b["interval"].unstable >= b["symbolic"].unstable >= b["lp"].unstable >= \
        b["mip"].unstable
    assert b["progressive"].unstable <= b["symbolic"].unstable
    rng = np.random.default_rng(seed)
    attacks = pgd_points(net, lo, hi, widest_targets(net, b["mip"], per_node=4), rng)
    assert_inside(net, list(b.values()), np.vstack([sample_box(lo, hi, n_points, rng), attacks]))
    return b


def test_residual_net_nested_and_sound() -> None:
    net = residual_net(seed=5)
    x = np.random.default_rng(6).uniform(size=36)
    b = check_nested_and_sound(net, *linf_box(x, 0.05), seed=7, n_points=2_000)
    assert b["mip"].unstable < b["lp"].unstable < b["symbolic"].unstable


@pytest.mark.slow
def test_residual_net_sound_10k() -> None:
    net = residual_net(seed=9)
    x = np.random.default_rng(10).uniform(size=36)
    check_nested_and_sound(net, *linf_box(x, 0.1), seed=11, n_points=10_000)


@pytest.mark.parametrize("rel, eps, image, n_points", [
    ("nets/mnist/wk17a_linf0.1.onnx", 0.03, 0, 2_000),
    pytest.param("nets/mnist/wk17a_linf0.1.onnx", 0.05, 1, 10_000, marks=pytest.mark.slow),
    ("nets/mnist/eran/mnist_relu_3_50.onnx", 0.01, 0, 2_000),
    pytest.param("nets/mnist/eran/mnist_relu_3_50.onnx", 0.02, 2, 10_000,
                 marks=pytest.mark.slow),
    ("nets/mnist/planet/lenet.onnx", 0.05, 0, 2_000),
    pytest.param("nets/mnist/planet/lenet.onnx", 0.1, 3, 10_000, marks=pytest.mark.slow),
])
def test_real_nets_nested_and_sound(shared_data: Path, rel: str, eps: float, image: int,
                                   n_points: int) -> None:
    """2,000 points by default, 10,000 under `-m slow`, plus PGD on the widest neurons."""
    net = load(shared_data, rel)
    check_nested_and_sound(net, *linf_box(mnist_image(shared_data, image), eps), seed=13,
                           n_points=n_points)


def test_wk17a_progressive_budget(shared_data: Path) -> None:
    """At eps = 0.1 the default method stays within its time budget and never loosens."""
    net = load(shared_data, "nets/mnist/wk17a_linf0.1.onnx")
    lo, hi = linf_box(mnist_image(shared_data, 7), 0.1)
    sb = symbolic_bounds(net, lo, hi)
    b = compute_bounds(net, lo, hi, time_limit_s=5.0)
    assert contains(sb, b) and b.unstable <= sb.unstable
    assert b.time_s < 10.0
    assert b.details["proven_unstable"] <= b.unstable


@pytest.mark.parametrize("method, eps, min_solves", [("lp", 0.02, 40), ("mip", 0.005, 10)])
def test_threads_give_the_same_bounds(shared_data: Path, method: str, eps: float,
                                      min_solves: int) -> None:
    """Two threads, each with its own solver sessions and every other neuron of a layer,
    reach the same optima as one (ERAN 3x50 net: dozens of unstable ReLUs per layer at eps
    0.02; the MILPs at eps 0.005, 15 solves in 2 s). SCIP solves through `optimizeNogil`,
    highspy releases the GIL itself."""
    net = load(shared_data, "nets/mnist/eran/mnist_relu_3_50.onnx")
    lo, hi = linf_box(mnist_image(shared_data, 2), eps)
    one = compute_bounds(net, lo, hi, method=method)
    two = compute_bounds(net, lo, hi, method=method, threads=2)
    assert one.details["levels"][method]["solves"] > min_solves
    for key in ("neurons", "solves", "stabilized"):
        assert two.details["levels"][method][key] == one.details["levels"][method][key], key
    for name in net.order:
        for a, b in zip(one.flat(name), two.flat(name)):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6, err_msg=name)
