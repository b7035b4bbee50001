"""Exact rho: one MILP with a label disjunction (what `rho` does) vs one MILP per target label.

Per-target mode is `rho(strategy="per_target")`: `rho(target=j)` for every label j the
symbolic bounds leave open, most likely label first, each capped at the best distance found
so far, combined as rho = min_j rho_j. Both modes get the same total time limit per image.

    python benchmarks/per_target.py [--time-limit-s 60] [--images 40]

Cases: the embedded default MLP (uncapped) on MNIST test images 0..N-1 (held out from its
training; its 10 bundled images without ../shared) and WK17a on MNIST test images 8 and 92
(cap 0.1, the two with an adversarial example inside the cap among images 0-99).
Writes benchmarks/results/per_target.csv and per_target.md.
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
from milpverify.runs.datasets import load_default
from milpverify.verify import DEFAULT_TOLERANCE, rho

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
RESULTS = Path(__file__).parent / "results"
FIELDS = ["net", "index", "mode", "status", "lower", "upper", "seconds", "targets_run"]


def cases(images: int):
    net, bundled, _ = load_default()
    if not SHARED.exists():
        for i, x in enumerate(bundled):
            yield "default", net, i, x, None
        return
    mnist = np.load(SHARED / "mnist/mnist_test.npz")["images"]
    for i in range(images):
        yield "default", net, i, mnist[i] / 255.0, None
    wk = milpverify.load_onnx(SHARED / "nets/mnist/wk17a_linf0.1.onnx")
    for i in (8, 92):
        yield "wk17a", wk, i, mnist[i] / 255.0, 0.1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--time-limit-s", type=float, default=60.0)
    ap.add_argument("--images", type=int, default=40,
                    help="MNIST test images for the default MLP (needs ../shared)")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, net, i, x, cap in cases(args.images):
        t0 = time.perf_counter()
        r = rho(net, x, eps_cap=cap, time_limit_s=args.time_limit_s)
        rows.append({"net": name, "index": i, "mode": "disjunction", "status": str(r.status),
                     "lower": r.lower, "upper": r.upper, "seconds": time.perf_counter() - t0,
                     "targets_run": 1})
        t0 = time.perf_counter()
        r = rho(net, x, eps_cap=cap, time_limit_s=args.time_limit_s, strategy="per_target")
        rows.append({"net": name, "index": i, "mode": "per_target", "status": str(r.status),
                     "lower": r.lower, "upper": r.upper, "seconds": time.perf_counter() - t0,
                     "targets_run": len(r.stats.get("targets", [])) or 1})
        print(*(f"{r['net']} {r['index']} {r['mode']}: {r['status']} [{r['lower']:.6f}, "
                f"{r['upper']:.6f}] {r['seconds']:.1f}s" for r in rows[-2:]), sep="\n",
              flush=True)
    with (RESULTS / "per_target.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["# Exact rho: label disjunction vs one MILP per target", "",
             f"Command: `python benchmarks/per_target.py --time-limit-s {args.time_limit_s:g} "
             f"--images {args.images}`",
             "", f"Machine (at the end of the run): {machine()}", "",
             "| net | image | disjunction | s | per target | s | targets run | same rho |",
             "|---|---|---|---|---|---|---|---|"]
    ratios = []
    for d, p in zip(rows[::2], rows[1::2]):
        same = abs(d["upper"] - p["upper"]) <= 2 * DEFAULT_TOLERANCE or \
            (math.isinf(d["upper"]) and math.isinf(p["upper"]))
        if d["status"] == p["status"] == "optimal" or d["status"] == p["status"] == "robust_at_cap":
            ratios.append(p["seconds"] / d["seconds"])
        lines.append(f"| {d['net']} | {d['index']} | {d['status']} [{d['lower']:.6f}, "
                     f"{d['upper']:.6f}] | {d['seconds']:.1f} | {p['status']} [{p['lower']:.6f},"
                     f" {p['upper']:.6f}] | {p['seconds']:.1f} | {p['targets_run']} | "
                     f"{'yes' if same else 'no'} |")
    total_d = sum(r["seconds"] for r in rows[::2])
    total_p = sum(r["seconds"] for r in rows[1::2])
    faster = sum(p["seconds"] < d["seconds"] for d, p in zip(rows[::2], rows[1::2]))
    lines += ["", f"Per target faster on {faster} of {len(rows) // 2} images.",
              f"Total: disjunction {total_d:.1f} s, per target {total_p:.1f} s "
              f"(ratio {total_p / total_d:.2f}); median per-image time ratio per-target / "
              f"disjunction where both resolved: "
              f"{np.median(ratios) if ratios else float('nan'):.2f} ({len(ratios)} images).", ""]
    (RESULTS / "per_target.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
