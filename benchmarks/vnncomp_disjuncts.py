"""Where a VNN-COMP instance's MILP time goes: each open disjunct alone, or all jointly.

Builds the bounds `verify_vnnlib` reaches before its last MILP (symbolic, optimised slopes,
progressive tightening for `--tighten-s`, optimised slopes again), then solves the unsafe
MILP of every disjunct still open on its own (`--mode each`) or one MILP with a binary per
disjunct (`--mode joint`), with SCIP and the ideal ReLU cuts (or `--backend highs`, without
them), and appends one row per MILP
to `benchmarks/results/vnncomp_disjuncts.csv` (status, nodes, seconds, dual bound, the
bounds' lower bound of the disjunct's rows).

Usage (the figures in `vnncomp_devices.md` for eran ``idx_1385``)::

    python benchmarks/vnncomp_disjuncts.py --bench eran \\
        --vnnlib specs/mnist/mnist_spec_idx_1385_eps_0.01500.vnnlib --objective
    python benchmarks/vnncomp_disjuncts.py --bench eran --mode joint --time-limit-s 150 \\
        --vnnlib specs/mnist/mnist_spec_idx_1385_eps_0.01500.vnnlib
    python benchmarks/vnncomp_disjuncts.py --bench eran --disjuncts 3 --time-limit-s 240 \\
        --vnnlib specs/mnist/mnist_spec_idx_2697_eps_0.01500.vnnlib --backend highs
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from milpverify import load_onnx  # noqa: E402
from milpverify.bounds import alpha_bounds  # noqa: E402
from milpverify.bounds.tighten import compute_bounds
from milpverify.core.query import SOLVER_SLACK
from milpverify.solve import get_backend  # noqa: E402
from milpverify.solve.base import SolveOptions  # noqa: E402
from milpverify.vnn.check import property_rows
from milpverify.vnn.decide import SPEC_NODE, build_unsafe_milp, possible_disjuncts, spec_network
from milpverify.vnn.spec import read_vnnlib

DATA = REPO.parent / "shared" / "data" / "vnncomp"
BENCH_DIRS = {"eran": ("eran_mnist_2021", "nets/mnist_relu_9_200.onnx"),
              "mnist_fc": ("mnist_fc_2022", None)}
OUT = REPO / "benchmarks" / "results" / "vnncomp_disjuncts.csv"
COLUMNS = ["date", "bench", "onnx", "vnnlib", "mode", "disjuncts", "status", "nodes",
           "seconds", "dual_bound", "spec_lower", "unstable", "objective", "solver_params",
           "backend"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bench", choices=sorted(BENCH_DIRS), required=True)
    parser.add_argument("--onnx", help="network, relative to the benchmark folder "
                                       "(default for eran: the 9x200 net)")
    parser.add_argument("--vnnlib", required=True, help="spec, relative to the benchmark folder")
    parser.add_argument("--mode", choices=("each", "joint"), default="each")
    parser.add_argument("--tighten-s", type=float, default=110.0,
                        help="progressive tightening budget (default 110, about what a 300 s "
                             "eran run gives it)")
    parser.add_argument("--time-limit-s", type=float, default=50.0, help="per MILP (default 50)")
    parser.add_argument("--objective", action="store_true",
                        help="objective form (`milp_objective`): reports a dual bound")
    parser.add_argument("--solver-param", action="append", default=[], metavar="NAME=VALUE",
                        help="solver parameter (integer or float value)")
    parser.add_argument("--backend", choices=("scip", "highs"), default="scip",
                        help="MILP solver (default scip; the ideal ReLU cuts are SCIP's only)")
    parser.add_argument("--disjuncts", default=None, metavar="D,D,...",
                        help="solve only these of the open disjuncts (default: all open)")
    args = parser.parse_args()
    folder, default_onnx = BENCH_DIRS[args.bench]
    base = DATA / folder
    if not base.is_dir():
        parser.error(f"{base} is missing: this benchmark needs ../shared/data/vnncomp")
    onnx = args.onnx or default_onnx
    if onnx is None:
        parser.error("--onnx is required for mnist_fc")
    params = {name: float(value) for name, _, value in
              (p.partition("=") for p in args.solver_param)}

    net = load_onnx(base / onnx)
    prop = read_vnnlib(base / args.vnnlib).properties[0]
    a, b, groups = property_rows(prop)
    aug = spec_network(net, a, b)
    lo, hi = prop.input_lower, prop.input_upper
    t0 = time.perf_counter()
    bounds = compute_bounds(aug, lo, hi, method="symbolic")
    bounds = alpha_bounds(aug, lo, hi, base=bounds, time_limit_s=40)
    bounds = compute_bounds(aug, lo, hi, method="progressive", time_limit_s=args.tighten_s,
                            base=bounds)
    bounds = alpha_bounds(aug, lo, hi, base=bounds, time_limit_s=20)
    spec_lower = bounds.flat(SPEC_NODE)[0]
    alive = possible_disjuncts(spec_lower, groups, list(range(len(groups))))
    print(f"bounds in {time.perf_counter() - t0:.1f} s: {bounds.unstable} unstable ReLUs, "
          f"open disjuncts {alive}", flush=True)
    if args.disjuncts is not None:
        wanted = [int(d) for d in args.disjuncts.split(",")]
        closed = sorted(set(wanted) - set(alive))
        if closed:
            print(f"disjuncts {closed} are refuted by these bounds (not solved)", flush=True)
        alive = [d for d in alive if d in wanted]
    batches = [[d] for d in alive] if args.mode == "each" else [alive] if alive else []
    with OUT.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        if fh.tell() == 0:
            writer.writeheader()
            fh.flush()  # at once: a second run may open the file before the first row
        for batch in batches:
            model, _, _ = build_unsafe_milp(aug, bounds, prop, groups, batch, aug.num_classes,
                                   SOLVER_SLACK, args.objective,
                                   ideal_cuts=args.backend == "scip")
            t1 = time.perf_counter()
            result = get_backend(args.backend).solve(model, SolveOptions(
                time_limit_s=args.time_limit_s, stop_at_first_feasible=True,
                solver_params=params))
            row = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
                   "bench": args.bench, "onnx": onnx, "vnnlib": args.vnnlib,
                   "mode": args.mode, "disjuncts": " ".join(map(str, batch)),
                   "status": result.status.value, "nodes": result.nodes,
                   "seconds": round(time.perf_counter() - t1, 1),
                   "dual_bound": result.dual_bound,
                   "spec_lower": round(max(float(spec_lower[groups[d]].max()) for d in batch), 4),
                   "unstable": bounds.unstable, "objective": args.objective,
                   "solver_params": json.dumps(params), "backend": args.backend}
            writer.writerow(row)
            fh.flush()
            print(row, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
