"""Benchmark of bound tightening: unstable ReLUs and time per method on real MNIST nets.

Nets and boxes (L-inf ball around MNIST test images 0..N-1, clipped to [0, 1]):

* `wk17a`: `nets/mnist/wk17a_linf0.1.onnx`, eps = 0.1 (MIPVerify reports median 122,
  max 223 unstable ReLUs with its LP tightening).
* `mnist_relu_9_200`: `nets/mnist/eran/mnist_relu_9_200.onnx`, eps = 0.015 (has a ReLU on
  the output layer, counted like the others).

Writes `benchmarks/results/bounds_<net>.csv` (one row per image x method) and
`benchmarks/results/bounds_summary.md`.

Usage::

    /work/venv/bin/python benchmarks/bounds_bench.py --images 100 --methods interval,symbolic

BLAS runs on one thread unless `OPENBLAS_NUM_THREADS` / `OMP_NUM_THREADS` / `MKL_NUM_THREADS`
are set (the matrices are small; extra threads only spin on a shared machine).
"""

from __future__ import annotations

import argparse
import csv
import datetime
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
import scipy  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _common import cpu_name  # noqa: E402

import milpverify  # noqa: E402
from milpverify.bounds import bounds_for_box  # noqa: E402
from milpverify.ir.network import Network  # noqa: E402


@dataclass(frozen=True)
class Case:
    """One benchmark network: short name, path under the shared data folder, L-inf radius."""

    name: str
    path: str
    eps: float


CASES = (
    Case("wk17a", "nets/mnist/wk17a_linf0.1.onnx", 0.1),
    Case("mnist_relu_9_200", "nets/mnist/eran/mnist_relu_9_200.onnx", 0.015),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=100, help="MNIST test images 0..N-1")
    parser.add_argument("--methods", default="interval,symbolic",
                        help="comma-separated bounds methods (see milpverify.bounds.BOUND_METHODS)")
    parser.add_argument("--nets", default=",".join(c.name for c in CASES),
                        help="comma-separated subset of: " + ", ".join(c.name for c in CASES))
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data",
                        help="the shared data folder")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    return parser.parse_args(argv)


def run_case(case: Case, net: Network, images: np.ndarray, labels: np.ndarray,
             methods: list[str]) -> list[dict[str, object]]:
    """One row per image x method: time, total and per-ReLU-layer unstable counts."""
    rows: list[dict[str, object]] = []
    predicted = net.predict(images)
    for i, x in enumerate(images):
        lower, upper = np.clip(x - case.eps, 0.0, 1.0), np.clip(x + case.eps, 0.0, 1.0)
        for method in methods:
            started = time.perf_counter()
            bounds = bounds_for_box(net, lower, upper, method)
            elapsed = time.perf_counter() - started
            row: dict[str, object] = {
                "net": case.name, "image": i, "label": int(labels[i]),
                "correct": bool(predicted[i] == labels[i]), "eps": case.eps, "method": method,
                "time_s": round(elapsed, 6), "unstable": bounds.unstable}
            row.update({f"unstable_{r}": c["unstable"] for r, c in bounds.relu_cases.items()})
            rows.append(row)
    return rows


def write_csv(path: Path, rows: list[dict[str, object]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)




def summary_table(case: Case, net: Network, rows: list[dict[str, object]],
                  methods: list[str]) -> list[str]:
    relus = net.relu_nodes
    sizes = [net.op(r).size for r in relus]
    head = ["method", "unstable median", "unstable max",
            *[f"{r} ({s}) med/max" for r, s in zip(relus, sizes)],
            "time median [ms]", "time max [ms]", "time total [s]"]
    lines = [f"### {case.name} (eps = {case.eps}, {len(rows) // len(methods)} images)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method in methods:
        sel = [r for r in rows if r["method"] == method]
        total = [int(r["unstable"]) for r in sel]  # type: ignore[call-overload]
        per_layer = [[int(r[f"unstable_{name}"]) for r in sel]  # type: ignore[call-overload]
                     for name in relus]
        times = [float(r["time_s"]) for r in sel]  # type: ignore[arg-type]
        cells = [method, f"{statistics.median(total):g}", f"{max(total)}",
                 *[f"{statistics.median(v):g} / {max(v)}" for v in per_layer],
                 f"{1e3 * statistics.median(times):.1f}", f"{1e3 * max(times):.1f}",
                 f"{sum(times):.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def machine_lines(argv: list[str]) -> list[str]:
    return [
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- command: `python benchmarks/bounds_bench.py {' '.join(argv)}`".rstrip(),
        f"- machine: {platform.platform()}, CPU: {cpu_name()} ({os.cpu_count()} logical cores)",
        f"- Python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__},"
        f" milpverify {milpverify.__version__}",
        "- BLAS threads: " + ", ".join(f"{v}={os.environ.get(v)}" for v in
                                       ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")),
        "- time = wall time of one `bounds_for_box` call (validation included), single process;"
        " the machine may have been shared with other jobs.",
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    wanted = {n.strip() for n in args.nets.split(",")}
    data = np.load(args.data / "mnist" / "mnist_test.npz")
    images = data["images"][: args.images].astype(np.float64) / 255.0
    labels = data["labels"][: args.images]
    args.out.mkdir(parents=True, exist_ok=True)
    report = ["# Bound tightening benchmark", "", *machine_lines(argv),
              "Unstable ReLU = pre-activation bounds with l < 0 < u; medians and maxima over"
              " images. Reference: MIPVerify reports median 122, max 223 unstable ReLUs on"
              " WK17a with its LP tightening.", ""]
    for case in CASES:
        if case.name not in wanted:
            continue
        net = milpverify.load_onnx(args.data / case.path)
        rows = run_case(case, net, images, labels, methods)
        write_csv(args.out / f"bounds_{case.name}.csv", rows)
        report += summary_table(case, net, rows, methods)
    (args.out / "bounds_summary.md").write_text("\n".join(report))
    sys.stdout.write("\n".join(report) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
