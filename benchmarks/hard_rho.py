"""Uncapped exact rho on five MNIST networks, next to what PGD alone finds.

The goal (issue "Branch and bound that knows the network"): at least 80 % of the rows
`optimal` on every network within the time limit, and every row's `upper` no worse than
`pgd` with its defaults. Each row: `milpverify.rho(net, x, time_limit_s=...)` without a
cap on one thread, its status, bracket, width and time, and PGD's distance (run
separately, its defaults). Rows are written as they finish (a rerun resumes).

    python benchmarks/hard_rho.py [--images 0-19] [--time-limit 120] [--nets wk17a,...]
           [--out benchmarks/results/hard_rho] [--baseline OTHER.csv --baseline-name old]

`--baseline` adds the rows of another run of this script (e.g. the code before a change,
run with its own PYTHONPATH at the same time) to the markdown summary, side by side.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from _common import machine  # noqa: E402

import milpverify  # noqa: E402

# The layout before `core/` (to run the same script on older code, own PYTHONPATH).
if (Path(milpverify.__file__).parent / "core" / "attacks.py").exists():
    from milpverify.core.attacks import pgd
else:
    from milpverify.attacks import pgd  # type: ignore[no-redef]

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
NETS = {
    "wk17a": "nets/mnist/wk17a_linf0.1.onnx",
    "rsl18a": "nets/mnist/rsl18a_linf0.1.onnx",
    "eran_3x100": "nets/mnist/eran/mnist_relu_3_100.onnx",
    "eran_convsmall_diffai": "nets/mnist/eran/convSmallRELU__DiffAI.onnx",
    "mnist_fc_256x2": "vnncomp/mnist_fc_2022/onnx/mnist-net_256x2.onnx",
}
FIELDS = ["net", "index", "label", "pred", "status", "lower", "upper", "width", "total_s",
          "pgd_upper", "pgd_s", "upper_le_pgd", "lower_from", "candidate_labels",
          "unstable_relus"]


def parse_images(text: str) -> list[int]:
    """"0-4,7" -> [0, 1, 2, 3, 4, 7]."""
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def run_row(net: milpverify.Network, name: str, i: int, x: np.ndarray, label: int,
            time_limit_s: float) -> dict:
    t0 = time.perf_counter()
    attack = pgd(net, x)
    pgd_s = time.perf_counter() - t0
    r = milpverify.rho(net, x, time_limit_s=time_limit_s, threads=1)
    return {"net": name, "index": i, "label": label, "pred": r.label, "status": str(r.status),
            "lower": r.lower, "upper": r.upper, "width": r.upper - r.lower,
            "total_s": round(r.timings["total_s"], 3), "pgd_upper": attack.upper,
            "pgd_s": round(pgd_s, 3), "upper_le_pgd": r.upper <= attack.upper,
            "lower_from": r.stats.get("lower_from", ""),
            "candidate_labels": r.stats.get("candidate_labels", ""),
            "unstable_relus": r.stats.get("unstable_relus", "")}


def run(out: Path, nets: list[str], images: list[int], time_limit_s: float) -> list[dict]:
    data = np.load(SHARED / "mnist/mnist_test.npz")
    done: dict[tuple[str, int], dict] = {}
    if out.exists():
        with out.open() as fh:
            done = {(r["net"], int(r["index"])): r for r in csv.DictReader(fh)}
    new_file = not out.exists()
    with out.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, FIELDS)
        if new_file:
            writer.writeheader()
        for name in nets:
            net = milpverify.load_onnx(SHARED / NETS[name])
            for i in images:
                if (name, i) in done:
                    continue
                x = (data["images"][i] / 255.0).reshape(-1)
                row = run_row(net, name, i, x, int(data["labels"][i]), time_limit_s)
                writer.writerow(row)
                fh.flush()
                done[(name, i)] = {k: str(v) for k, v in row.items()}
                print(f"{name} {i:3d} {row['status']:14s} [{row['lower']:.6f}, "
                      f"{row['upper']:.6f}] {row['total_s']:.1f}s pgd {row['pgd_upper']:.6f}",
                      flush=True)
    return [done[(n, i)] for n in nets for i in images]


def _per_net(rows: list[dict], name: str) -> str:
    sel = [r for r in rows if r["net"] == name]
    if not sel:
        return "- | - | - | - | -"
    optimal = sum(r["status"] in ("optimal", "robust_at_cap") for r in sel)
    le_pgd = sum(str(r["upper_le_pgd"]) == "True" for r in sel)
    zero = sum(float(r["lower"]) == 0.0 for r in sel)
    med = np.median([float(r["total_s"]) for r in sel])
    width = np.mean([float(r["width"]) for r in sel])
    return f"{optimal}/{len(sel)} | {le_pgd}/{len(sel)} | {zero} | {width:.5f} | {med:.1f}"


def summarise(rows: list[dict], base: list[dict], base_name: str) -> str:
    names = list(dict.fromkeys(r["net"] for r in rows))
    head = "| net | optimal | upper <= PGD | lower = 0 | mean width | median s |"
    lines = [head[:-1] + (f"| {base_name}: optimal | upper <= PGD | lower = 0 | mean width | "
                          "median s |" if base else ""),
             "|---" * (6 + 5 * bool(base)) + "|"]
    for name in names:
        lines.append(f"| {name} | {_per_net(rows, name)} |"
                     + (f" {_per_net(base, name)} |" if base else ""))
    lines += ["", "| net | image | status | [lower, upper] | width | s | PGD |"
              + (f" {base_name}: status | [lower, upper] | s |" if base else ""),
              "|---" * (7 + 3 * bool(base)) + "|"]
    old = {(r["net"], r["index"]): r for r in base}
    for r in rows:
        line = (f"| {r['net']} | {r['index']} | {r['status']} | [{float(r['lower']):.5f}, "
                f"{float(r['upper']):.5f}] | {float(r['width']):.5f} | "
                f"{float(r['total_s']):.1f} | {float(r['pgd_upper']):.5f} |")
        b = old.get((r["net"], str(r["index"])))
        if b is not None:
            line += (f" {b['status']} | [{float(b['lower']):.5f}, {float(b['upper']):.5f}] | "
                     f"{float(b['total_s']):.1f} |")
        lines.append(line)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default="0-19")
    ap.add_argument("--time-limit", type=float, default=120.0)
    ap.add_argument("--nets", default=",".join(NETS))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "hard_rho")
    ap.add_argument("--baseline", type=Path)
    ap.add_argument("--baseline-name", default="baseline")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    nets = args.nets.split(",")
    start = time.time()
    rows = run(args.out.with_suffix(".csv"), nets, parse_images(args.images), args.time_limit)
    base: list[dict] = []
    if args.baseline is not None and args.baseline.exists():
        with args.baseline.open() as fh:
            base = list(csv.DictReader(fh))
    command = " ".join(["python", "benchmarks/hard_rho.py", *sys.argv[1:]])
    text = (f"# Uncapped rho, MNIST test images {args.images}, {args.time_limit:g} s limit, "
            f"1 thread\n\nMachine: {machine()}\n\nCommand: `{command}`\n\n"
            "`optimal` counts optimal and robust_at_cap; `upper <= PGD`: rows whose upper is "
            "no worse than `pgd` with its defaults; `lower = 0`: rows with no proven lower "
            "bound.\n\n" + summarise(rows, base, args.baseline_name) + "\n")
    args.out.with_suffix(".md").write_text(text)
    print(text)
    print(f"wall {time.time() - start:.1f}s")


if __name__ == "__main__":
    main()
