"""Node propagator off vs on, on small random MLPs where SCIP's tree has many nodes.

The MNIST networks of `propagator.py` spend their time in few, expensive nodes (784
inputs); here the inputs are few, nodes are cheap, and the tree decides. Per seeded random
MLP (`--sizes`, Gaussian weights, biases scaled by 0.5) and radius, the feasibility MILP
of `certify` (is there a misclassified point in the L-inf ball, margin relaxed by 1e-6?)
with symbolic root bounds is solved once per variant, interleaved:

* off: SCIP alone; prop: node propagation only (no local rows);
* on: propagation + local big-M rows (what `propagate=True` runs);
* branch: on + branching on the propagator's BaBSR scores.

    python benchmarks/propagator_small.py [--sizes 4-40-40-40-3] [--seeds 0-3]
        [--eps 0.1,0.2] [--time-limit 20] [--variants off,prop,on,branch] [--prop-freq K]

`--prop-freq K` runs the propagator (and its local rows) only at depths 0, K, 2K, ...
(SCIP's ``propagating/milpverify_nodes/freq``, ``separating/milpverify_local/freq``).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from itertools import pairwise
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
from _common import machine
from hard_rho import parse_images

from milpverify.bounds import symbolic_bounds
from milpverify.core.propagate import NetworkPropagator
from milpverify.encode.objective import build_robustness_problem
from milpverify.ir import ops
from milpverify.ir.network import Network
from milpverify.solve import get_backend
from milpverify.solve.base import SolveOptions

FIELDS = ["sizes", "seed", "eps", "variant", "status", "nodes", "solve_s", "nodes_per_s",
          "message"]


def random_mlp(seed: int, sizes: list[int]) -> Network:
    """Affine/ReLU layers, Gaussian weights, biases N(0, 0.25) (as tests/helpers.py)."""
    rng = np.random.default_rng(seed)
    nodes: list[tuple[str, ops.Op]] = [("x", ops.Input((), (sizes[0],)))]
    prev = "x"
    for k, (i, o) in enumerate(pairwise(sizes)):
        w, b = rng.normal(size=(o, i)), rng.normal(size=o) * 0.5
        nodes.append((f"fc{k}", ops.Affine((prev,), (o,), w, b)))
        prev = f"fc{k}"
        if k < len(sizes) - 2:
            nodes.append((f"relu{k}", ops.Relu((prev,), (o,))))
            prev = f"relu{k}"
    return Network(nodes, prev)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="4-40-40-40-3")
    ap.add_argument("--seeds", default="0-3")
    ap.add_argument("--eps", default="0.1,0.2")
    ap.add_argument("--time-limit", type=float, default=20.0)
    ap.add_argument("--variants", default="off,prop,on,branch")
    ap.add_argument("--prop-freq", type=int, default=1)
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).parent / "results" / "propagator_small.csv")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split("-")]
    variants = args.variants.split(",")
    print(machine(), flush=True)
    turn = 0
    with args.out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, FIELDS)
        writer.writeheader()
        for seed in parse_images(args.seeds):
            net = random_mlp(seed, sizes)
            x = np.random.default_rng(1000 + seed).uniform(0.2, 0.8, sizes[0])
            label = int(net.predict(x)[0])
            for eps in (float(e) for e in args.eps.split(",")):
                lo, hi = np.clip(x - eps, 0, 1), np.clip(x + eps, 0, 1)
                bounds = symbolic_bounds(net, lo, hi)
                cands = [j for j in range(sizes[-1]) if j != label]
                problem = build_robustness_problem(
                    net, x, label, bounds, lo, hi, norm="linf", radius=eps, margin=-1e-6,
                    candidates=cands, with_distance=False)
                order = variants[turn % len(variants):] + variants[:turn % len(variants)]
                turn += 1
                for variant in order:
                    prop = None if variant == "off" else NetworkPropagator(
                        net, bounds, problem, branching=variant == "branch",
                        local_rows=variant != "prop")
                    r = get_backend("scip").solve(problem.model, SolveOptions(
                        time_limit_s=args.time_limit, stop_at_first_feasible=True,
                        node_propagator=prop,
                        solver_params={"separating/aggregation/freq": -1,
                                       **({"propagating/milpverify_nodes/freq": args.prop_freq,
                                           "separating/milpverify_local/freq": args.prop_freq}
                                          if prop is not None else {})}))
                    row = {"sizes": args.sizes, "seed": seed, "eps": eps, "variant": variant,
                           "status": r.status.value, "nodes": r.nodes,
                           "solve_s": round(r.solve_time_s, 3),
                           "nodes_per_s": round(r.nodes / r.solve_time_s, 1),
                           "message": r.message}
                    writer.writerow(row)
                    fh.flush()
                    print(" ".join(f"{k}={row[k]}" for k in FIELDS[:-1]),
                          "|", r.message.partition("; ")[2], flush=True)


if __name__ == "__main__":
    sys.exit(main())
