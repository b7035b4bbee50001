"""Progressive tightening's sign MILPs: `SIGN_MILP_PARAMS` (no presolve, no primal
heuristics) against SCIP's defaults, on VNN-COMP eran instances.

For each instance: the spec network and bounds as the VNN-COMP pipeline builds them
before its tightening (symbolic, then optimised slopes), then `compute_bounds(...,
method="progressive", time_limit_s=T)` once per variant, one after the other in the same
process (nothing else should run beside it). Reported: ReLUs left unstable, and per level
the neurons solved and stabilised.

Writes `benchmarks/results/sign_milps.csv` (one row per instance x variant, appended) and
`benchmarks/results/sign_milps.md` (the machine, versions and a table of all rows).

Usage::

    /work/venv/bin/python benchmarks/sign_milps.py --idx 3539 2697 --budget 60   # ~5 min
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import sys
import time
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy is imported

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _common import machine  # noqa: E402
from milpverify import load_onnx, tighten  # noqa: E402
from milpverify.bounds import alpha_bounds  # noqa: E402
from milpverify.vnncomp import _rows, spec_network  # noqa: E402
from milpverify.vnnlib import read_vnnlib  # noqa: E402

ERAN = REPO.parent / "shared" / "data" / "vnncomp" / "eran_mnist_2021"
RESULTS = REPO / "benchmarks" / "results"
COLUMNS = ("date", "instance", "variant", "budget_s", "seconds", "unstable_before", "unstable",
           "lp_solves", "lp_stabilized", "mip_solves", "mip_stabilized")
#: The variants: the sign MILPs' parameters per MILP backend.
VARIANTS = {"sign_params": dict(tighten.SIGN_MILP_PARAMS), "solver_defaults": {}}


def start(idx: int) -> tuple:
    """The spec network, box and bounds the pipeline tightens (symbolic, then alpha)."""
    net = load_onnx(ERAN / "nets" / "mnist_relu_9_200.onnx")
    spec = read_vnnlib(ERAN / "specs" / "mnist" / f"mnist_spec_idx_{idx}_eps_0.01500.vnnlib",
                       n_inputs=net.input_size, n_outputs=net.num_classes)
    prop = spec.properties[0]
    a, b, _ = _rows(prop)
    aug = spec_network(net, a, b)
    symbolic = tighten.compute_bounds(aug, prop.input_lower, prop.input_upper,
                                      method="symbolic")
    alpha = alpha_bounds(aug, prop.input_lower, prop.input_upper, base=symbolic,
                         time_limit_s=45.0)
    return aug, prop.input_lower, prop.input_upper, alpha


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idx", type=int, nargs="+", default=[3539, 2697],
                        help="eran spec indices (mnist_spec_idx_<i>_eps_0.01500)")
    parser.add_argument("--budget", type=float, default=60.0, help="tightening seconds")
    args = parser.parse_args()
    if not ERAN.is_dir():
        sys.exit(f"error: {ERAN} not found (the shared VNN-COMP data)")
    out = RESULTS / "sign_milps.csv"
    new = not out.exists()
    with out.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, COLUMNS)
        if new:
            writer.writeheader()
        for idx in args.idx:
            aug, lo, hi, base = start(idx)
            for variant, params in VARIANTS.items():
                tighten.SIGN_MILP_PARAMS = params
                t0 = time.perf_counter()
                b = tighten.compute_bounds(aug, lo, hi, method="progressive", base=base,
                                           time_limit_s=args.budget)
                levels = b.details["levels"]
                row = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
                       "instance": f"idx_{idx}", "variant": variant, "budget_s": args.budget,
                       "seconds": round(time.perf_counter() - t0, 1),
                       "unstable_before": base.unstable, "unstable": b.unstable,
                       "lp_solves": levels["lp"]["solves"],
                       "lp_stabilized": levels["lp"]["stabilized"],
                       "mip_solves": levels["mip"]["solves"],
                       "mip_stabilized": levels["mip"]["stabilized"]}
                writer.writerow(row)
                fh.flush()
                print(row, flush=True)
    tighten.SIGN_MILP_PARAMS = VARIANTS["sign_params"]
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    lines = ["# Sign MILPs of progressive tightening: no presolve / heuristics vs defaults", "",
             f"- updated: {datetime.datetime.now().isoformat(timespec='seconds')}",
             f"- {machine()}",
             "- `python benchmarks/sign_milps.py --idx ... --budget T`: eran 9x200 spec "
             "network after symbolic + optimised-slope bounds, then progressive tightening "
             "for T s per variant, one after the other, one thread.", "",
             "| date | instance | variant | budget s | unstable before | unstable after | "
             "sign MILPs | stabilised by them | LPs | stabilised by LPs |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['date']} | {r['instance']} | {r['variant']} | {r['budget_s']} | "
              f"{r['unstable_before']} | {r['unstable']} | {r['mip_solves']} | "
              f"{r['mip_stabilized']} | {r['lp_solves']} | {r['lp_stabilized']} |" for r in rows]
    (RESULTS / "sign_milps.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
