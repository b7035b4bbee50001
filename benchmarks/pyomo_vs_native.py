"""Build and solve time of the Pyomo path against the native path (and OMLT) on one MILP.

For each query (the certify MILP of `milpverify.core.export.build_query`: "is there an
adversarial point within eps?", a feasibility model) the same `MilpModel` is handed to

* ``scip``               pyscipopt model built directly (`build_scip`) and solved;
* ``pyomo:scip_direct``  Pyomo ConcreteModel (`QueryProblem.to_pyomo`), then SCIP via Pyomo;
* ``highs``              highspy model built directly (`build_highs`) and solved;
* ``pyomo:appsi_highs``  Pyomo ConcreteModel, then HiGHS via Pyomo's APPSI interface;

and, where OMLT can express the network, OMLT builds the same network + query itself
(``omlt+appsi_highs``; its own interval bounds, so its MILP differs). Queries: WK17a
(MNIST test 0-4, eps 0.1) and mnist_fc 256x4 (MNIST test 0-4, eps 0.03).

    python benchmarks/pyomo_vs_native.py [--rounds 3] [--time-limit-s 20] [--rerun]

`solver_build` is the time to build the solver-side model from the `MilpModel`
(pyscipopt / highspy / Pyomo objects); `solve` is one `Backend.solve` call, which builds
again and includes Pyomo's translation to the solver. Times are wall and process CPU
seconds (CPU is steadier on a loaded host; all solvers run in-process on 1 thread).
One CSV row per (query, round, path) is written as it goes; a rerun skips rows already
there unless --rerun. Ratios are computed within a round, then the median is reported.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from _common import machine  # noqa: E402

import milpverify  # noqa: E402
from milpverify.core.export import QueryProblem, build_query
from milpverify.encode.model import MilpModel
from milpverify.solve import get_backend  # noqa: E402
from milpverify.solve.base import SolveOptions  # noqa: E402
from milpverify.solve.highs import build_highs  # noqa: E402
from milpverify.solve.scip import build_scip

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
NETS = {
    "wk17a": ("nets/mnist/wk17a_linf0.1.onnx", 0.1),
    "mnist_fc_256x4": ("vnncomp/mnist_fc_2022/onnx/mnist-net_256x4.onnx", 0.03),
}
PATHS = ("scip", "pyomo:scip_direct", "highs", "pyomo:appsi_highs")
PAIRS = (("pyomo:scip_direct", "scip"), ("pyomo:appsi_highs", "highs"))
FIELDS = ["net", "index", "eps", "label", "round", "path", "n_vars", "n_integer", "n_rows",
          "nnz", "query_build_s", "query_build_cpu_s", "solver_build_s", "solver_build_cpu_s", "solve_s",
          "solve_cpu_s", "status", "objective", "note"]
OMLT_PATH = "omlt+appsi_highs"

#: Versions recorded in the summary.
PACKAGES = ("milpverify", "pyomo", "pyscipopt", "highspy", "omlt", "numpy", "scipy")




def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """Result, wall seconds, process CPU seconds."""
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def solver_builder(path: str, query: QueryProblem) -> Callable[[], Any]:
    if path == "scip":
        return lambda: build_scip(query.model)
    if path == "highs":
        return lambda: build_highs(query.model)
    return query.to_pyomo


def warm_up() -> None:
    """First calls pay for imports (pyomo.environ alone is about a second)."""
    m = MilpModel()
    x = m.add_vars(2, 0, 1, integer=True, name="w.x")
    m.add_rows([0, 0], x, [1.0, 1.0], 1, -np.inf, 1.0, name="w.c")
    m.set_objective(x, [-1.0, -1.0])
    for path in PATHS:
        get_backend(path).solve(m)


# ---------------------------------------------------------------------------- OMLT
def omlt_onnx_error(onnx_path: Path) -> str:
    """Why OMLT's own ONNX reader cannot load the file ("" if it can)."""
    import onnx
    from omlt.io.onnx import load_onnx_neural_network
    try:
        load_onnx_neural_network(onnx.load(onnx_path), None, None)
    except Exception as exc:  # report whatever OMLT raises
        return f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    return ""


def omlt_query(net: milpverify.Network, x: np.ndarray, eps: float, label: int) -> Any:
    """OMLT's ReluBigMFormulation of a dense ReLU net (weights from the milpverify IR) plus
    the same box and misclassification disjunction; None if the net is not all-dense."""
    import pyomo.environ as pe
    from omlt import OmltBlock
    from omlt.neuralnet import NetworkDefinition, ReluBigMFormulation
    from omlt.neuralnet.layer import DenseLayer, InputLayer

    from milpverify.core.query import SOLVER_SLACK
    from milpverify.ir import ops

    items = list(net.items())
    if not all(isinstance(op, (ops.Input, ops.Affine, ops.Relu)) for _, op in items):
        return None
    flat = x.reshape(-1)
    lo, hi = np.maximum(0.0, flat - eps), np.minimum(1.0, flat + eps)
    nd = NetworkDefinition(scaled_input_bounds={i: (float(lo[i]), float(hi[i]))
                                                for i in range(flat.size)})
    prev = InputLayer([flat.size])
    nd.add_layer(prev)
    for k, (name, op) in enumerate(items):
        if not isinstance(op, ops.Affine):
            continue
        relu = k + 1 < len(items) and isinstance(items[k + 1][1], ops.Relu)
        layer = DenseLayer(prev.output_size, [op.weight.shape[0]], op.weight.T, op.bias,
                           activation="relu" if relu else "linear")
        nd.add_layer(layer)
        nd.add_edge(prev, layer)
        prev = layer
    m = pe.ConcreteModel()
    m.nn = OmltBlock()
    m.nn.build_formulation(ReluBigMFormulation(nd))
    for i in range(flat.size):
        m.nn.inputs[i].setlb(float(lo[i]))
        m.nn.inputs[i].setub(float(hi[i]))
    others = [j for j in range(net.num_classes) if j != label]
    m.z = pe.Var(others, within=pe.Binary)
    m.one = pe.Constraint(expr=sum(m.z[j] for j in others) == 1)
    f = m.nn.outputs
    # the outputs carry no bounds; the last layer's variables do (OMLT keys layers by id)
    z = m.nn.layer[id(prev)].z
    big = {j: z[j].ub - z[j].lb + z[label].ub - z[label].lb for j in others}
    # f_label - f_j <= SOLVER_SLACK + M_j (1 - z_j): label j wins when z_j = 1
    m.wins = pe.Constraint(others, rule=lambda _m, j: f[label] - f[j] <= SOLVER_SLACK
                           + big[j] * (1 - m.z[j]))
    m.obj = pe.Objective(expr=0.0)
    return m


def omlt_solve(m: Any, time_limit_s: float) -> str:
    import pyomo.environ as pe
    solver = pe.SolverFactory("appsi_highs")
    solver.options["time_limit"] = time_limit_s
    solver.options["mip_max_improving_sols"] = 1
    solver.options["threads"] = 1
    res = solver.solve(m, load_solutions=False)
    return str(res.solver.termination_condition)


# ---------------------------------------------------------------------------- run
def run(out: Path, rounds: int, time_limit_s: float, rerun: bool, images: list[int]
        ) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    done: set[tuple[str, str, str, str]] = set()
    if out.exists() and not rerun:
        with out.open() as fh:
            rows = list(csv.DictReader(fh))
        done = {(r["net"], r["index"], r["round"], r["path"]) for r in rows}
    new = rerun or not out.exists()
    data = np.load(SHARED / "mnist/mnist_test.npz")
    warm_up()
    options = SolveOptions(time_limit_s=time_limit_s, stop_at_first_feasible=True)
    with out.open("w" if new else "a", newline="") as fh:
        writer = csv.DictWriter(fh, FIELDS)
        if new:
            writer.writeheader()

        def emit(row: dict[str, Any]) -> None:
            writer.writerow(row)
            fh.flush()
            rows.append({k: str(v) for k, v in row.items()})
            print(" ".join(f"{row[k]}" for k in ("net", "index", "round", "path", "status")),
                  f"build {row['solver_build_cpu_s']} cpu-s, solve {row['solve_cpu_s']} cpu-s",
                  flush=True)

        for name, (rel, eps) in NETS.items():
            net = milpverify.load_onnx(SHARED / rel)
            for i in images:
                x = data["images"][i] / 255.0
                query, qwall, qcpu = timed(lambda: build_query(net, x, eps=eps))
                m = query.model
                base = {"net": name, "index": i, "eps": eps, "label": query.label,
                        "n_vars": m.n_vars, "n_integer": m.n_integer, "n_rows": m.n_rows,
                        "nnz": m.A.nnz, "query_build_s": round(qwall, 4),
                        "query_build_cpu_s": round(qcpu, 4)}
                limited = False
                for r in range(rounds):
                    if limited:
                        break  # a time-limited solve says nothing about speed; don't repeat
                    order = PATHS[r % len(PATHS):] + PATHS[:r % len(PATHS)]
                    for path in order:
                        if (name, str(i), str(r), path) in done:
                            continue
                        _, bwall, bcpu = timed(solver_builder(path, query))
                        res, swall, scpu = timed(lambda: get_backend(path).solve(m, options))
                        limited |= res.status.value == "time_limit"
                        emit({**base, "round": r, "path": path,
                              "solver_build_s": round(bwall, 4),
                              "solver_build_cpu_s": round(bcpu, 4), "solve_s": round(swall, 4),
                              "solve_cpu_s": round(scpu, 4), "status": res.status.value,
                              "objective": res.objective,
                              "note": "bounds prove it infeasible" if query.proven_by_bounds
                              else ""})
                if (name, str(i), "0", OMLT_PATH) in done:
                    continue
                built, bwall, bcpu = timed(lambda: omlt_query(net, x, eps, query.label))
                if built is None:
                    emit({**base, "round": 0, "path": OMLT_PATH, "solver_build_s": "",
                          "solver_build_cpu_s": "", "solve_s": "", "solve_cpu_s": "",
                          "status": "not_supported", "objective": "",
                          "note": "OMLT: conv with padding (see summary)"})
                    continue
                status, swall, scpu = timed(lambda: omlt_solve(built, time_limit_s))
                emit({**base, "round": 0, "path": OMLT_PATH, "solver_build_s": round(bwall, 4),
                      "solver_build_cpu_s": round(bcpu, 4), "solve_s": round(swall, 4),
                      "solve_cpu_s": round(scpu, 4), "status": status, "objective": "",
                      "note": "OMLT network + same query; its own interval bounds"})
    return rows


# ---------------------------------------------------------------------------- summary
def _f(v: str) -> float:
    return float(v) if v not in ("", "None") else float("nan")


def summarise(rows: list[dict[str, str]]) -> str:
    lines = ["Medians over queries of per-round medians; ratio = Pyomo path / native path "
             "(same solver), CPU seconds (wall in brackets).", "",
             "| net | queries | native build (scip / highs) | Pyomo build | build ratio vs "
             "scip / highs | solve ratio pyomo:scip_direct/scip | solve ratio "
             "pyomo:appsi_highs/highs |", "|---|---|---|---|---|---|---|"]
    detail = ["", "Per query (median over rounds; CPU s, wall s in brackets):", "",
              "| net | image | label | binaries | rows | nnz | query build s | path | status |"
              " solver build | solve (incl. build) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    omlt_lines = ["", "Building the query with OMLT (network + box + disjunction, its own bounds) "
                  "against milpverify (bounds + MilpModel + Pyomo model), CPU seconds:", "",
                  "| net | queries | OMLT build | milpverify query + Pyomo build | ratio |",
                  "|---|---|---|---|---|"]
    for name in NETS:
        net_rows = [r for r in rows if r["net"] == name]
        indices = sorted({int(r["index"]) for r in net_rows})
        per_query: dict[int, dict[str, dict[str, float]]] = {}
        for i in indices:
            qrows = [r for r in net_rows if int(r["index"]) == i]
            stats: dict[str, dict[str, float]] = {}
            for path in (*PATHS, OMLT_PATH):
                prow = [r for r in qrows if r["path"] == path]
                if not prow:
                    continue
                stats[path] = {k: statistics.median(_f(r[k]) for r in prow)
                               for k in ("solver_build_cpu_s", "solver_build_s", "solve_cpu_s",
                                         "solve_s")}
                first = prow[0]
                detail.append(
                    f"| {name} | {i} | {first['label']} | {first['n_integer']} | "
                    f"{first['n_rows']} | {first['nnz']} | {_f(first['query_build_s']):.2f} | "
                    f"{path} | {first['status']} | "
                    f"{stats[path]['solver_build_cpu_s']:.3f} ({stats[path]['solver_build_s']:.3f}) | "
                    f"{stats[path]['solve_cpu_s']:.3f} ({stats[path]['solve_s']:.3f}) |")
            per_query[i] = stats

        def ratio(num: str, den: str, key: str, solved_only: bool) -> list[float]:
            out = []
            for i in indices:
                ok = [r for r in net_rows if int(r["index"]) == i and r["path"] in (num, den)]
                if solved_only and any(r["status"] == "time_limit" for r in ok):
                    continue
                # ratio within each round, then the median over rounds
                per_round = []
                for rnd in sorted({r["round"] for r in ok}):
                    a = [r for r in ok if r["round"] == rnd and r["path"] == num]
                    b = [r for r in ok if r["round"] == rnd and r["path"] == den]
                    if a and b and _f(b[0][key]) > 0:
                        per_round.append(_f(a[0][key]) / _f(b[0][key]))
                if per_round:
                    out.append(statistics.median(per_round))
            return out

        def med(values: list[float]) -> str:
            return f"{statistics.median(values):.1f}x" if values else "n/a"

        def med_path(path: str, key: str) -> float:
            vals = [per_query[i][path][key] for i in indices if path in per_query[i]]
            return statistics.median(vals) if vals else float("nan")

        omlt = []
        for i in indices:
            o = [r for r in net_rows if int(r["index"]) == i and r["path"] == OMLT_PATH]
            p = [r for r in net_rows if int(r["index"]) == i and r["path"] == "pyomo:appsi_highs"]
            if o and p and o[0]["solver_build_cpu_s"]:
                ours = _f(p[0]["query_build_cpu_s"]) + statistics.median(
                    _f(r["solver_build_cpu_s"]) for r in p)
                omlt.append((_f(o[0]["solver_build_cpu_s"]), ours))
        if omlt:
            omlt_lines.append(
                f"| {name} | {len(omlt)} | {statistics.median(a for a, _ in omlt):.2f} s | "
                f"{statistics.median(b for _, b in omlt):.2f} s | "
                f"{statistics.median(a / b for a, b in omlt):.1f}x |")
        nb_s, nb_h = med_path("scip", "solver_build_cpu_s"), med_path("highs", "solver_build_cpu_s")
        pb = med_path("pyomo:appsi_highs", "solver_build_cpu_s")
        pbw = med_path("pyomo:appsi_highs", "solver_build_s")
        lines.append(
            f"| {name} | {len(indices)} | {nb_s:.3f} / {nb_h:.3f} s | {pb:.2f} s ({pbw:.2f} wall) | "
            f"{med(ratio('pyomo:appsi_highs', 'scip', 'solver_build_cpu_s', False))} / "
            f"{med(ratio('pyomo:appsi_highs', 'highs', 'solver_build_cpu_s', False))} | "
            f"{med(ratio('pyomo:scip_direct', 'scip', 'solve_cpu_s', True))} "
            f"({med(ratio('pyomo:scip_direct', 'scip', 'solve_s', True))} wall) | "
            f"{med(ratio('pyomo:appsi_highs', 'highs', 'solve_cpu_s', True))} "
            f"({med(ratio('pyomo:appsi_highs', 'highs', 'solve_s', True))} wall) |")
    return "\n".join(lines + omlt_lines + detail)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--time-limit-s", type=float, default=20.0)
    ap.add_argument("--images", default="0,1,2,3,4")
    ap.add_argument("--rerun", action="store_true")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    images = [int(v) for v in args.images.split(",")]
    rows = run(args.out / "pyomo_vs_native.csv", args.rounds, args.time_limit_s, args.rerun,
               images)
    omlt_notes = "\n".join(f"- OMLT's ONNX reader on {name}: "
                           f"{omlt_onnx_error(SHARED / rel) or 'loads'}"
                           for name, (rel, _) in NETS.items())
    text = (f"# Pyomo path vs native path (and OMLT), certify MILPs\n\n"
            f"Machine: {machine(PACKAGES)}\n\n"
            f"Command: `python benchmarks/pyomo_vs_native.py --rounds {args.rounds} "
            f"--time-limit-s {args.time_limit_s:g} --images {args.images}` "
            f"(wall {time.time() - start:.0f} s)\n\n"
            + summarise(rows) + "\n\nOMLT:\n\n" + omlt_notes + "\n"
            "- Why: both files have unnamed nodes (OMLT keys nodes by `node.name`, so they "
            "collide), start with Flatten (not among OMLT's MatMul/Gemm/Conv/Reshape), and "
            "WK17a's Gemm omits the default `alpha` attribute (OMLT reads it unconditionally).\n"
            "- OMLT 1.2.2 rejects Conv pads (WK17a has pads 1); as dense layers the two convs "
            "would be 784x3136 and 3136x1568 dense weight matrices, which OMLT writes term by "
            "term (zeros included), so WK17a is not built with OMLT.\n"
            "- mnist_fc 256x4 is built with OMLT's Python API (NetworkDefinition + DenseLayer "
            "from the milpverify IR weights, ReluBigMFormulation, a binary for every ReLU) "
            "plus the same box and misclassification disjunction; OMLT derives its own "
            "interval bounds, so its MILP is not the same model.\n")
    (args.out / "pyomo_vs_native.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
