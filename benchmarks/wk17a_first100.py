"""Exact rho on WK17a, MNIST test images 0-99: milpverify next to MIPVerify.jl + HiGHS.

MIPVerify's published run (../shared/data/reference/mipverify_wk17a, objective `closest`,
eps 0.1 cap, 120 s limit, 1 thread) resolved 99/100 in 871 s total. This script runs
`milpverify.rho` with the same cap and limit on 1 thread, writes one CSV row per image as it
goes (a rerun resumes), and a markdown summary with machine and versions.

    python benchmarks/wk17a_first100.py [--images 100] [--eps-cap 0.1] [--time-limit-s 120]
           [--uncapped] [--out benchmarks/results/wk17a_first100]

`--uncapped` computes rho without a cap (no tool publishes that), in its own CSV.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from _common import machine  # noqa: E402

import milpverify  # noqa: E402
from milpverify.verify import rho

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
FIELDS = ["index", "label", "pred", "status", "lower", "upper", "witness_verified",
          "adversarial_label", "bounds_s", "upper_bound_s", "build_s", "solve_s", "total_s",
          "unstable_relus", "binaries", "nodes", "candidate_labels"]




def run(out: Path, images: int, eps_cap: float | None, time_limit_s: float) -> list[dict]:
    net = milpverify.load_onnx(SHARED / "nets/mnist/wk17a_linf0.1.onnx")
    data = np.load(SHARED / "mnist/mnist_test.npz")
    done: dict[int, dict] = {}
    if out.exists():
        with out.open() as fh:
            done = {int(r["index"]): r for r in csv.DictReader(fh)}
    new_file = not out.exists()
    with out.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, FIELDS, extrasaction="ignore")
        if new_file:
            writer.writeheader()
        for i in range(images):
            if i in done:
                continue
            x = data["images"][i] / 255.0
            r = rho(net, x, eps_cap=eps_cap, time_limit_s=time_limit_s, threads=1)
            row = {"index": i, "label": int(data["labels"][i]), "pred": r.label,
                   "status": str(r.status), "lower": r.lower, "upper": r.upper,
                   "witness_verified": r.witness_verified,
                   "adversarial_label": r.adversarial_label,
                   **{k: round(v, 4) for k, v in r.timings.items()},
                   **{k: v for k, v in r.stats.items() if k in FIELDS}}
            writer.writerow(row)
            fh.flush()
            os.fsync(fh.fileno())
            done[i] = {k: str(v) for k, v in row.items()}
            print(f"{i:3d} {r.status!s:14s} [{r.lower:.6f}, {r.upper:.6f}] "
                  f"{r.timings['total_s']:.2f}s unstable={r.stats.get('unstable_relus')}",
                  flush=True)
    return [done[i] for i in range(images)]


def reference(images: int) -> dict[int, dict]:
    path = next((SHARED / "reference/mipverify_wk17a").glob("mipverify_closest*.csv"))
    with path.open() as fh:
        return {int(r["sample_index"]) - 1: r for r in csv.DictReader(fh)
                if int(r["sample_index"]) <= images}


def summarise(rows: list[dict], ref: dict[int, dict], eps_cap: float | None) -> str:
    total = sum(float(r["total_s"]) for r in rows)
    statuses: dict[str, int] = {}
    for r in rows:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    resolved = sum(statuses.get(s, 0) for s in ("optimal", "robust_at_cap"))
    ref_total = sum(float(r["total_time_seconds"]) for r in ref.values())
    ref_resolved = sum(r["solve_status"] in ("OPTIMAL", "INFEASIBLE") for r in ref.values())
    lines = [f"| tool | resolved | total s | median s | max s |", "|---|---|---|---|---|",
             f"| milpverify (SCIP, 1 thread) | {resolved}/{len(rows)} | {total:.1f} | "
             f"{np.median([float(r['total_s']) for r in rows]):.2f} | "
             f"{max(float(r['total_s']) for r in rows):.2f} |"]
    if ref and eps_cap == 0.1:
        times = [float(r["total_time_seconds"]) for r in ref.values()]
        lines.append(f"| MIPVerify.jl + HiGHS (published) | {ref_resolved}/{len(ref)} | "
                     f"{ref_total:.1f} | {np.median(times):.2f} | {max(times):.2f} |")
    lines += ["", "statuses: " + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())), "",
              "Images with an adversarial example inside the cap:", "",
              "| index | milpverify [lower, upper] | MIPVerify objective | time s |",
              "|---|---|---|---|"]
    for r in rows:
        if math.isfinite(float(r["upper"])) or r["status"] == "time_limit":
            obj = ref.get(int(r["index"]), {}).get("objective_value", "")
            lines.append(f"| {r['index']} | [{float(r['lower']):.6f}, {float(r['upper']):.6f}] "
                         f"({r['status']}) | {obj} | {float(r['total_s']):.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--eps-cap", type=float, default=0.1)
    ap.add_argument("--time-limit-s", type=float, default=120.0)
    ap.add_argument("--uncapped", action="store_true")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "wk17a_first100")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    cap = None if args.uncapped else args.eps_cap
    name = "uncapped" if cap is None else f"cap{cap:g}"
    start = time.time()
    rows = run(args.out / f"rho_{name}.csv", args.images, cap, args.time_limit_s)
    text = (f"# WK17a, MNIST test 0-{args.images - 1}, {name}, {args.time_limit_s:g} s limit\n\n"
            f"Machine: {machine()}\n\nCommand: `python benchmarks/wk17a_first100.py "
            f"--images {args.images} --time-limit-s {args.time_limit_s:g}"
            f"{' --uncapped' if cap is None else f' --eps-cap {cap:g}'}`\n\n"
            + summarise(rows, reference(args.images), cap) + "\n")
    (args.out / f"summary_{name}.md").write_text(text)
    print(text)
    print(f"wall {time.time() - start:.1f}s")


if __name__ == "__main__":
    main()
