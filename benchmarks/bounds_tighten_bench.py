"""Benchmark of LP / MIP / progressive bound tightening: unstable ReLUs, time, downstream MILP.

Nets and boxes (L-inf ball around MNIST test images 0..N-1, pixels / 255, clipped to [0, 1]):

* `wk17a`: `nets/mnist/wk17a_linf0.1.onnx`, eps = 0.1. MIPVerify reports median 122, max 223
  unstable ReLUs with its LP tightening.
* `mnist_relu_9_200`: `nets/mnist/eran/mnist_relu_9_200.onnx`, eps = 0.015.

Every method runs on the first `n` images of its own budget (`PLAN`; the slow methods on
fewer images), and the summary compares each method with symbolic *on the same images*.
The downstream part runs `rho(eps_cap=0.1)` on the first WK17a images that need a MILP
(with symbolic bounds), once per bounds method, and records the bounds and MILP times.

Writes `benchmarks/results/bounds_tighten_<net>.csv` (one row per image x method),
`bounds_tighten_downstream.csv` and `bounds_tighten.md`.

Usage::

    /work/venv/bin/python benchmarks/bounds_tighten_bench.py            # ~15-20 min, 2 cores
    /work/venv/bin/python benchmarks/bounds_tighten_bench.py --scale 0.2 --downstream 2
"""

from __future__ import annotations

import argparse
import csv
import datetime
import importlib.metadata
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy is imported

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _common import cpu_name  # noqa: E402

import milpverify  # noqa: E402
from milpverify.bounds.tighten import compute_bounds
from milpverify.ir.network import Network  # noqa: E402
from milpverify.verify import rho


@dataclass(frozen=True)
class Run:
    """One method on the first `images` images, with its options."""

    method: str
    images: int
    time_limit_s: float | None = None
    per_neuron_s: float | None = None


@dataclass(frozen=True)
class Case:
    """One benchmark network: short name, path under the shared data folder, radius, plan."""

    name: str
    path: str
    eps: float
    plan: tuple[Run, ...]


CASES = (
    Case("wk17a", "nets/mnist/wk17a_linf0.1.onnx", 0.1, (
        Run("interval", 100), Run("symbolic", 100), Run("progressive", 100, 30.0),
        Run("lp", 20), Run("mip", 2, 300.0, 20.0))),
    Case("mnist_relu_9_200", "nets/mnist/eran/mnist_relu_9_200.onnx", 0.015, (
        Run("interval", 100), Run("symbolic", 100), Run("progressive", 5, 20.0),
        Run("lp", 3, 30.0), Run("mip", 1, 60.0, 5.0))),
)
DOWNSTREAM_METHODS = ("symbolic", "lp", "progressive")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every image count by this (at least 1 image each)")
    parser.add_argument("--downstream", type=int, default=3,
                        help="WK17a images that need a MILP to run rho on (0: skip)")
    parser.add_argument("--downstream-limit-s", type=float, default=60.0,
                        help="time limit of one rho call")
    parser.add_argument("--nets", default=",".join(c.name for c in CASES))
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    return parser.parse_args(argv)


def bound_row(case: Case, net: Network, i: int, x: np.ndarray, run: Run) -> dict[str, object]:
    lower, upper = np.clip(x - case.eps, 0.0, 1.0), np.clip(x + case.eps, 0.0, 1.0)
    started = time.perf_counter()
    b = compute_bounds(net, lower, upper, method=run.method, time_limit_s=run.time_limit_s,
                       per_neuron_s=run.per_neuron_s)
    elapsed = time.perf_counter() - started
    levels = b.details.get("levels", {})
    row: dict[str, object] = {
        "net": case.name, "image": i, "eps": case.eps, "method": run.method,
        "time_limit_s": run.time_limit_s, "time_s": round(elapsed, 4), "unstable": b.unstable,
        "solves": b.details.get("solves", 0), "proven_unstable": b.details.get("proven_unstable", ""),
        "timed_out": b.details.get("timed_out", False),
        "lp_stabilized": levels.get("lp", {}).get("stabilized", ""),
        "mip_stabilized": levels.get("mip", {}).get("stabilized", ""),
        "lp_s": levels.get("lp", {}).get("time_s", ""), "mip_s": levels.get("mip", {}).get("time_s", ""),
        "symbolic_s": b.details.get("symbolic_s", "")}
    row.update({f"unstable_{r}": c["unstable"] for r, c in b.relu_cases.items()})
    return row


def run_case(case: Case, net: Network, images: np.ndarray, scale: float, out: Path
             ) -> list[dict[str, object]]:
    """All runs of the plan, one CSV row per image x method, written as they finish."""
    rows: list[dict[str, object]] = []
    fields = ["net", "image", "eps", "method", "time_limit_s", "time_s", "unstable", "solves",
              "proven_unstable", "timed_out", "lp_stabilized", "mip_stabilized", "lp_s", "mip_s",
              "symbolic_s", *[f"unstable_{r}" for r in net.relu_nodes]]
    with (out / f"bounds_tighten_{case.name}.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for run in case.plan:
            for i in range(max(1, round(run.images * scale))):
                row = bound_row(case, net, i, images[i], run)
                writer.writerow(row)
                handle.flush()
                rows.append(row)
                print(f"{case.name} image {i} {run.method}: {row['unstable']} unstable, "
                      f"{row['time_s']} s", flush=True)
    return rows


def _rho_row(net: Network, x: np.ndarray, i: int, method: str, limit_s: float
             ) -> dict[str, object]:
    r = rho(net, x, eps_cap=0.1, bounds_method=method, time_limit_s=limit_s)
    return {"image": i, "bounds_method": method, "status": r.status.value,
            "lower": r.lower, "upper": r.upper,
            **{k: r.stats.get(k, "") for k in ("unstable_relus", "binaries", "candidate_labels",
                                               "nodes")},
            **{k: round(r.timings.get(k, 0.0), 3) for k in ("bounds_s", "build_s", "solve_s",
                                                            "total_s")}}


def downstream(net: Network, images: np.ndarray, count: int, limit_s: float, out: Path
               ) -> list[dict[str, object]]:
    """`rho(eps_cap=0.1)` per bounds method on the first `count` images that need a MILP.

    Images are tried in order with symbolic bounds; the others (proven by bounds alone)
    never reach the MILP, so the bounds method cannot matter for them.
    """
    rows: list[dict[str, object]] = []
    fields = ["image", "bounds_method", "status", "lower", "upper", "unstable_relus", "binaries",
              "candidate_labels", "nodes", "bounds_s", "build_s", "solve_s", "total_s"]
    with (out / "bounds_tighten_downstream.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        hard = 0
        for i, x in enumerate(images):
            if hard == count:
                break
            first = _rho_row(net, x, i, DOWNSTREAM_METHODS[0], limit_s)
            if first["binaries"] == "":
                continue
            hard += 1
            for row in [first, *(_rho_row(net, x, i, m, limit_s) for m in DOWNSTREAM_METHODS[1:])]:
                writer.writerow(row)
                handle.flush()
                rows.append(row)
                print(f"downstream image {i} {row['bounds_method']}: {row['status']} "
                      f"[{row['lower']:.6f}, {row['upper']:.6f}] solve {row['solve_s']} s, "
                      f"total {row['total_s']} s", flush=True)
    return rows


# ---------------------------------------------------------------------------- report
def _med_max(values: list[float]) -> str:
    return f"{statistics.median(values):g} / {max(values):g}"


def summary_table(case: Case, net: Network, rows: list[dict[str, object]]) -> list[str]:
    relus = net.relu_nodes
    head = ["method", "images", "unstable med / max", "symbolic on same images med / max",
            *[f"{r} ({net.op(r).size}) med / max" for r in relus], "proven unstable med",
            "time med / max [s]", "time total [s]", "timed out"]
    lines = [f"### {case.name} (eps = {case.eps})", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    symbolic = {r["image"]: r for r in rows if r["method"] == "symbolic"}
    for run in case.plan:
        sel = [r for r in rows if r["method"] == run.method]
        if not sel:
            continue
        same = [float(symbolic[r["image"]]["unstable"]) for r in sel if r["image"] in symbolic]
        proven = [float(r["proven_unstable"]) for r in sel if r["proven_unstable"] != ""]
        times = [float(r["time_s"]) for r in sel]
        label = run.method + (f" ({run.time_limit_s:g} s budget)" if run.time_limit_s else "")
        cells = [label, str(len(sel)), _med_max([float(r["unstable"]) for r in sel]),
                 _med_max(same) if same else "",
                 *[_med_max([float(r[f"unstable_{n}"]) for r in sel]) for n in relus],
                 f"{statistics.median(proven):g}" if proven else "",
                 f"{statistics.median(times):.2f} / {max(times):.2f}", f"{sum(times):.1f}",
                 str(sum(bool(r["timed_out"]) for r in sel))]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def downstream_table(rows: list[dict[str, object]]) -> list[str]:
    head = ["image", *[f"{m}: unstable / bounds s / solve s / [lower, upper] status"
                       for m in DOWNSTREAM_METHODS]]
    lines = ["### Downstream: `rho(eps_cap=0.1)` on the WK17a images that need a MILP",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for image in dict.fromkeys(r["image"] for r in rows):
        cells = [str(image)]
        for method in DOWNSTREAM_METHODS:
            r = next((r for r in rows if r["image"] == image and r["bounds_method"] == method),
                     None)
            cells.append("" if r is None else f"{r['unstable_relus']} / {r['bounds_s']} / "
                                                f"{r['solve_s']} / [{float(r['lower']):.5f}, "
                                                f"{float(r['upper']):.5f}] {r['status']}")
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]




def machine_lines(argv: list[str], started: float) -> list[str]:
    versions = ", ".join(f"{p} {importlib.metadata.version(p)}" for p in
                         ("numpy", "scipy", "highspy", "PySCIPOpt"))
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    return [
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}, "
        f"wall time {time.perf_counter() - started:.0f} s",
        f"- command: `python benchmarks/bounds_tighten_bench.py {' '.join(argv)}`".rstrip(),
        f"- machine: {platform.platform()}, CPU: {cpu_name()} ({os.cpu_count()} logical cores),"
        f" load average at the end {load[0]:.1f} (shared with other jobs: times are inflated)",
        f"- Python {platform.python_version()}, {versions}, milpverify {milpverify.__version__}",
        "- time = wall time of one `compute_bounds` call (symbolic pass included); LP backend"
        " HiGHS (rigorous dual bound), MILP backend SCIP; BLAS single-threaded.",
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    started = time.perf_counter()
    wanted = {n.strip() for n in args.nets.split(",")}
    with np.load(args.data / "mnist" / "mnist_test.npz") as data:
        images = data["images"][:100].astype(np.float64).reshape(100, -1) / 255.0
    args.out.mkdir(parents=True, exist_ok=True)
    sections: list[str] = []
    for case in CASES:
        if case.name not in wanted:
            continue
        net = milpverify.load_onnx(args.data / case.path)
        rows = run_case(case, net, images, args.scale, args.out)
        sections += summary_table(case, net, rows)
        if case.name == "wk17a" and args.downstream > 0:
            sections += downstream_table(downstream(net, images, args.downstream,
                                                    args.downstream_limit_s, args.out))
    report = ["# LP / MIP / progressive bound tightening", "", *machine_lines(argv, started),
              "Unstable ReLU = pre-activation bounds with l < 0 < u. *proven unstable* = unstable"
              " ReLUs that a concrete input drove both below and above zero (no method can"
              " stabilise them; a floor for the count). MIPVerify reports median 122, max 223"
              " unstable ReLUs on WK17a at eps = 0.1 with its LP tightening. The slow methods"
              " run on the first *images* images only (compare with the symbolic column on"
              " the same images); a budget ends a run early (*timed out*). Downstream `rho`"
              f" calls have a {args.downstream_limit_s:g} s limit.", "", *sections]
    (args.out / "bounds_tighten.md").write_text("\n".join(report))
    sys.stdout.write("\n".join(report) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
