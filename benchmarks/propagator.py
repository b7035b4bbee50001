"""The network-aware node propagator off vs on, side by side in one run (interleaved).

For each network and MNIST test image, `rho` (uncapped) or `certify` (at `--eps`) runs
once per variant (`--variants`: "off" = `propagate=False`; "on" = `propagate=True`;
"branch" = on, plus branching on the propagator's BaBSR scores), the order rotating from
image to image, so that load from other processes hits all alike. Per run: status, bracket or verdict, total and MILP time, SCIP nodes,
nodes per MILP second, and the propagator's calls, cut-offs, ReLUs fixed and time.

    python benchmarks/propagator.py --mode rho --nets eran_3x100,mnist_fc_256x2 \
        --images 0-4 --time-limit 60 [--eps 0.03] [--variants off,on,branch]
        [--out benchmarks/results/propagator_rho.csv]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
from _common import machine
from hard_rho import NETS, SHARED, parse_images

import milpverify
from milpverify.core import decide

FIELDS = ["net", "index", "mode", "eps", "propagate", "status", "lower", "upper", "total_s",
          "solve_s", "nodes", "nodes_per_s", "prop_calls", "prop_cutoffs", "prop_fixed",
          "prop_s"]


def run_one(net: milpverify.Network, x: np.ndarray, mode: str, eps: float, time_limit_s: float,
            propagate: bool) -> dict:
    if mode == "rho":
        r = milpverify.rho(net, x, time_limit_s=time_limit_s, propagate=propagate)
        status, lower, upper = str(r.status), r.lower, r.upper
    else:
        r = milpverify.certify(net, x, eps, time_limit_s=time_limit_s, propagate=propagate)
        status, lower, upper = str(r.verdict), "", ""
    solve_s = r.timings.get("solve_s", 0.0)
    nodes = int(r.stats.get("nodes", 0))
    return {"status": status, "lower": lower, "upper": upper,
            "total_s": round(r.timings["total_s"], 2), "solve_s": round(solve_s, 2),
            "nodes": nodes, "nodes_per_s": round(nodes / solve_s, 1) if solve_s > 0 else "",
            **{k: round(r.stats.get(k, 0), 3) for k in ("prop_calls", "prop_cutoffs",
                                                         "prop_fixed", "prop_s")}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["rho", "certify"], default="rho")
    ap.add_argument("--nets", default="eran_3x100,mnist_fc_256x2")
    ap.add_argument("--images", default="0-4")
    ap.add_argument("--time-limit", type=float, default=60.0)
    ap.add_argument("--eps", type=float, default=0.03)
    ap.add_argument("--variants", default="off,on")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    out = args.out or Path(__file__).parent / "results" / f"propagator_{args.mode}.csv"
    data = np.load(SHARED / "mnist/mnist_test.npz")
    print(machine(), flush=True)
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, FIELDS)
        writer.writeheader()
        turn = 0
        for name in args.nets.split(","):
            net = milpverify.load_onnx(SHARED / NETS[name])
            for i in parse_images(args.images):
                x = (data["images"][i] / 255.0).reshape(-1)
                variants = args.variants.split(",")
                order = variants[turn % len(variants):] + variants[:turn % len(variants)]
                turn += 1
                for variant in order:
                    decide.BRANCHING = variant == "branch"
                    row = {"net": name, "index": i, "mode": args.mode,
                           "eps": args.eps if args.mode == "certify" else "",
                           "propagate": variant,
                           **run_one(net, x, args.mode, args.eps, args.time_limit,
                                     variant != "off")}
                    writer.writerow(row)
                    fh.flush()
                    print(" ".join(f"{k}={row[k]}" for k in FIELDS), flush=True)


if __name__ == "__main__":
    sys.exit(main())
