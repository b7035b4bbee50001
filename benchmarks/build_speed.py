"""Measure how fast a `MilpModel` gets into the solvers, and session re-solves vs rebuilds.

Run: ``/work/venv/bin/python benchmarks/build_speed.py [--quick]``

1. Build speed: random sparse models (``nnz`` 1e4, 1e5, 5e5; 60 nonzeros per row, twice
   as many variables as rows, 10% integer) copied into SCIP by every method of
   `milpverify.solve.scip.build_scip` ("coef", "expr", "quicksum", "mps", "matrix"), and into
   HiGHS (`build_highs`). Each method's model is checked against the others on the
   smallest size (same LP-relaxation optimum). Seconds are the best of ``--repeat`` runs.
2. Session vs rebuild: the LP relaxation of a big-M ReLU network encoding (random MLP
   784-100-100-100-10, interval bounds) solved for ``--objectives`` single-neuron objectives
   (min and max of the last-layer neurons), by a fresh build+solve each time and by one
   session, for SCIP and HiGHS; then SCIP on the MILP of a 50-30-30-10 network (3 objectives).

Writes ``benchmarks/results/build_speed.csv`` and prints a table.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from milpverify.encode.model import MilpModel
from milpverify.solve.base import SolveOptions
from milpverify.solve.highs import HighsBackend, build_highs
from milpverify.solve.scip import BUILD_METHODS, ScipBackend, build_scip

RESULTS = Path(__file__).resolve().parent / "results" / "build_speed.csv"


def random_model(nnz: int, seed: int = 0, per_row: int = 60) -> MilpModel:
    """Random sparse MILP: rows with `per_row` nonzeros, 2x as many vars as rows, box [-1, 1]."""
    rng = np.random.default_rng(seed)
    n_rows = max(1, nnz // per_row)
    n_vars = 2 * n_rows
    m = MilpModel()
    m.add_vars(n_vars, -1.0, 1.0, integer=rng.random(n_vars) < 0.1, name="x")
    rows = np.repeat(np.arange(n_rows), per_row)
    cols = rng.integers(0, n_vars, rows.size)
    vals = rng.standard_normal(rows.size)
    m.add_rows(rows, cols, vals, n_rows, -rng.random(n_rows) * 5, rng.random(n_rows) * 5, name="r")
    m.set_objective(np.arange(n_vars), rng.standard_normal(n_vars))
    return m


def relu_mlp_model(widths: list[int], seed: int = 0,
                   eps: float = 0.05) -> tuple[MilpModel, np.ndarray]:
    """Big-M MILP of a random ReLU MLP on the box [x0-eps, x0+eps]; returns (model, output vars).

    z = W y + b (equalities), y = relu(z) with y >= z, y >= 0, y <= u a, y <= z - l (1 - a).
    """
    rng = np.random.default_rng(seed)
    m = MilpModel()
    x0 = rng.random(widths[0])
    lo, up = x0 - eps, x0 + eps
    y = m.add_vars(widths[0], lo, up, name="input")
    for k, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:])):
        W = rng.standard_normal((w_out, w_in)) / np.sqrt(w_in)
        b = rng.standard_normal(w_out) * 0.1
        Wp, Wn = np.maximum(W, 0), np.minimum(W, 0)
        zl, zu = Wp @ lo + Wn @ up + b, Wp @ up + Wn @ lo + b
        z = m.add_vars(w_out, zl, zu, name=f"fc{k}/pre")
        M = sp.hstack([sp.csr_array(W), -sp.identity(w_out, format="csr")])
        m.add_matrix_rows(M, np.concatenate([y, z]), -b, -b, name=f"fc{k}/affine")
        if k == len(widths) - 2:
            return m, z
        yl, yu = np.maximum(zl, 0), np.maximum(zu, 0)
        yv = m.add_vars(w_out, yl, yu, name=f"fc{k}/relu")
        a = m.add_vars(w_out, 0, 1, integer=True, name=f"fc{k}/relu.active")
        r, one = np.arange(w_out), np.ones(w_out)
        ln = np.minimum(zl, 0)
        # y - z >= 0;  y - u a <= 0;  y - z - l a <= -l  (y <= z - l (1 - a))
        m.add_rows(np.r_[r, r], np.r_[yv, z], np.r_[one, -one], w_out, 0, np.inf,
                   name=f"fc{k}/relu.ge_pre")
        m.add_rows(np.r_[r, r], np.r_[yv, a], np.r_[one, -np.maximum(zu, 0)], w_out, -np.inf, 0,
                   name=f"fc{k}/relu.le_ua")
        m.add_rows(np.r_[r, r, r], np.r_[yv, z, a], np.r_[one, -one, -ln], w_out, -np.inf, -ln,
                   name=f"fc{k}/relu.le_pre")
        lo, up, y = yl, yu, yv
    raise AssertionError("unreachable")


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
        del out
    return min(times)


def build_speed(sizes: list[int], repeat: int) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for nnz in sizes:
        t = time.perf_counter()
        model = random_model(nnz)
        model.A  # noqa: B018 - assemble the CSR
        t_model = time.perf_counter() - t
        base = dict(experiment="build", nnz=model.A.nnz, n_rows=model.n_rows, n_vars=model.n_vars)
        rows.append({**base, "method": "MilpModel add_rows + CSR", "seconds": t_model, "note": ""})
        for method in BUILD_METHODS:
            def build(method: str = method) -> object:
                scip, _ = build_scip(model, method=method)
                scip.freeProb()
            sec = best_of(build, repeat if method not in ("matrix", "quicksum") else 1)
            note = {"matrix": "benchmark only", "coef": "default"}.get(method, "")
            rows.append({**base, "method": f"scip:{method}", "seconds": sec, "note": note})
        sec = best_of(lambda: build_scip(model, method="coef", names=False)[0].freeProb(), repeat)
        rows.append({**base, "method": "scip:coef names=False", "seconds": sec, "note": ""})
        sec = best_of(lambda: build_highs(model), repeat)
        rows.append({**base, "method": "highs:passModel", "seconds": sec, "note": ""})
        for r in rows[-len(BUILD_METHODS) - 3:]:
            print(f"  nnz={r['nnz']:>7}  {r['method']:<26} {r['seconds']:8.3f} s")
    return rows


def check_methods_agree() -> None:
    """All SCIP build methods give the same LP-relaxation optimum as HiGHS."""
    model = random_model(10_000, seed=1).relaxed()
    ref = HighsBackend().solve(model).objective
    for method in BUILD_METHODS:
        res = ScipBackend(build_method=method).solve(model)
        assert res.objective is not None and abs(res.objective - ref) <= 1e-6 * max(1, abs(ref)), (
            method, res.objective, ref)
    print(f"  all build methods agree on the LP optimum {ref:.9g}")


def session_speed(widths: list[int], n_obj: int, milp_widths: list[int]) -> list[dict[str, object]]:
    model, out = relu_mlp_model(widths)
    lp = model.relaxed()
    base = dict(experiment="session_lp", nnz=lp.A.nnz, n_rows=lp.n_rows, n_vars=lp.n_vars)
    objs = [(np.array([j]), np.array([sense])) for j in out for sense in (1.0, -1.0)][:n_obj]
    rows: list[dict[str, object]] = []
    for name, backend in (("scip", ScipBackend()), ("highs", HighsBackend())):
        fresh_vals = []
        t = time.perf_counter()
        for cols, vals in objs:
            m2 = lp.copy()
            m2.set_objective(cols, vals)
            fresh_vals.append(backend.solve(m2).objective)
        t_fresh = (time.perf_counter() - t) / n_obj
        t = time.perf_counter()
        with backend.session(lp) as s:
            t_build = time.perf_counter() - t
            sess_vals = [s.minimize(c, v).objective for c, v in objs]
        t_sess = (time.perf_counter() - t - t_build) / n_obj
        assert np.allclose(fresh_vals, sess_vals, atol=1e-6), (name, fresh_vals, sess_vals)
        note = f"widths={widths}; {n_obj} objectives; session build {t_build:.3f} s"
        rows.append({**base, "method": f"{name}: rebuild+solve per objective",
                     "seconds": t_fresh, "note": note})
        rows.append({**base, "method": f"{name}: session re-solve per objective",
                     "seconds": t_sess, "note": note})
        print(f"  {name:<6} rebuild+solve {t_fresh * 1e3:8.1f} ms/objective   "
              f"session {t_sess * 1e3:8.1f} ms/objective   (session build {t_build:.3f} s)")
    # SCIP session on the MILP of a smaller network (each objective is a branch-and-bound)
    model, out = relu_mlp_model(milp_widths)
    objs = [(np.array([j]), np.array([1.0])) for j in out]
    k = 3
    t = time.perf_counter()
    fresh = []
    for cols, vals in objs[:k]:
        m2 = model.copy()
        m2.set_objective(cols, vals)
        fresh.append(ScipBackend().solve(m2, SolveOptions(time_limit_s=60)).objective)
    t_fresh = (time.perf_counter() - t) / k
    t = time.perf_counter()
    with ScipBackend().session(model) as s:
        t_build = time.perf_counter() - t
        sess = [s.minimize(c, v, SolveOptions(time_limit_s=60)).objective for c, v in objs[:k]]
    t_sess = (time.perf_counter() - t - t_build) / k
    assert np.allclose(fresh, sess, atol=1e-5), (fresh, sess)
    base = dict(experiment="session_milp", nnz=model.A.nnz, n_rows=model.n_rows,
                n_vars=model.n_vars)
    note = f"widths={milp_widths}; {k} objectives; session build {t_build:.3f} s"
    rows.append({**base, "method": "scip: rebuild+solve per objective (MILP)",
                 "seconds": t_fresh, "note": note})
    rows.append({**base, "method": "scip: session re-solve per objective (MILP)",
                 "seconds": t_sess, "note": note})
    print(f"  scip MILP rebuild+solve {t_fresh * 1e3:8.1f} ms/objective   "
          f"session {t_sess * 1e3:8.1f} ms/objective")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes only (smoke test)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--objectives", type=int, default=20)
    args = ap.parse_args()
    sizes = [10_000] if args.quick else [10_000, 100_000, 500_000]
    widths = [50, 30, 30, 10] if args.quick else [784, 100, 100, 100, 10]
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f} (timings are wall-clock)")
    print("build speed (best of repeats):")
    rows = build_speed(sizes, args.repeat)
    check_methods_agree()
    print("LP session vs rebuild:")
    rows += session_speed(widths, args.objectives, [50, 30, 30, 10])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["experiment", "method", "nnz", "n_rows", "n_vars",
                                          "seconds", "note"])
        w.writeheader()
        for r in rows:
            w.writerow({**r, "seconds": f"{r['seconds']:.4f}"})
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
