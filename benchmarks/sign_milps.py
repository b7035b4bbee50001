"""Progressive tightening's sign MILPs: `SIGN_MILP_PARAMS` (no presolve, no primal
heuristics) against SCIP's defaults, one thread against two, and two threads without the
restart of stalled LP re-solves (`LP_RESOLVE_ITERATIONS_PER_DIM`), on VNN-COMP eran instances.

For each instance: the spec network and bounds as the VNN-COMP pipeline builds them
before its tightening (symbolic, then optimised slopes), then `compute_bounds(...,
method="progressive", time_limit_s=T)` once per variant, one after the other in the same
process (nothing else should run beside it). Reported: ReLUs left unstable, and per level
the neurons solved and stabilised and the seconds spent.

Writes `benchmarks/results/sign_milps.csv` (one row per instance x variant, added to the
rows already there) and
`benchmarks/results/sign_milps.md` (the machine, versions and a table of all rows).

Usage::

    /work/venv/bin/python benchmarks/sign_milps.py --idx 3539 2697 --budget 60   # ~10 min
    /work/venv/bin/python benchmarks/sign_milps.py --idx 3539 --variants sign_params threads_2
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import subprocess
import sys
import time
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy is imported

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _common import machine  # noqa: E402

from milpverify import load_onnx
from milpverify.bounds import alpha_bounds  # noqa: E402
from milpverify.bounds.tighten import compute_bounds, lp, mip
from milpverify.vnn.check import property_rows
from milpverify.vnn.decide import spec_network
from milpverify.vnn.options import VnnlibOptions
from milpverify.vnn.spec import read_vnnlib

ERAN = REPO.parent / "shared" / "data" / "vnncomp" / "eran_mnist_2021"
#: eran's official per-instance timeout; the pipeline gives the optimised slopes
#: `alpha_fraction` of it (45 s).
ERAN_TIMEOUT_S = 300.0
RESULTS = REPO / "benchmarks" / "results"
COLUMNS = ("date", "code", "instance", "variant", "threads", "budget_s", "seconds",
           "unstable_before", "unstable", "lp_solves", "lp_stabilized", "lp_restarts", "lp_s",
           "mip_solves", "mip_stabilized", "mip_s")
#: Iterations per row and column that no LP re-solve reaches: no restarts.
NO_RESTART = 10**9
#: The variants: the sign MILPs' parameters per MILP backend, `compute_bounds(threads=)` and
#: `LP_RESOLVE_ITERATIONS_PER_DIM`.
_SIGN, _LIMIT = dict(mip.SIGN_MILP_PARAMS), lp.LP_RESOLVE_ITERATIONS_PER_DIM
VARIANTS = {"sign_params": (_SIGN, 1, _LIMIT),
            "solver_defaults": ({}, 1, _LIMIT),
            "threads_2": (_SIGN, 2, _LIMIT),
            "threads_2_no_restart": (_SIGN, 2, NO_RESTART)}


def start(idx: int) -> tuple:
    """The spec network, box and bounds the pipeline tightens (symbolic, then alpha)."""
    net = load_onnx(ERAN / "nets" / "mnist_relu_9_200.onnx")
    spec = read_vnnlib(ERAN / "specs" / "mnist" / f"mnist_spec_idx_{idx}_eps_0.01500.vnnlib",
                       n_inputs=net.input_size, n_outputs=net.num_classes)
    prop = spec.properties[0]
    a, b, _ = property_rows(prop)
    aug = spec_network(net, a, b)
    symbolic = compute_bounds(aug, prop.input_lower, prop.input_upper,
                                      method="symbolic")
    alpha = alpha_bounds(aug, prop.input_lower, prop.input_upper, base=symbolic,
                         time_limit_s=VnnlibOptions().alpha_fraction * ERAN_TIMEOUT_S)
    return aug, prop.input_lower, prop.input_upper, alpha


def code_version() -> str:
    """The repository's commit, with ``+`` when the working tree has changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True,
                              text=True, check=False).stdout.strip()
    return git("rev-parse", "--short", "HEAD") + ("+" if git("status", "--porcelain") else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idx", type=int, nargs="+", default=[3539, 2697],
                        help="eran spec indices (mnist_spec_idx_<i>_eps_0.01500)")
    parser.add_argument("--budget", type=float, default=60.0, help="tightening seconds")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--summarize-only", action="store_true",
                        help="only rebuild sign_milps.md from the CSV")
    args = parser.parse_args()
    out = RESULTS / "sign_milps.csv"
    if args.summarize_only:
        summarize(out)
        return
    if not ERAN.is_dir():
        sys.exit(f"error: {ERAN} not found (the shared VNN-COMP data)")
    old = list(csv.DictReader(out.open())) if out.exists() else []
    code = code_version()  # before the CSV is rewritten (which would count as a change)
    try:
        run(args, out, old, code)
    finally:
        mip.SIGN_MILP_PARAMS, _, lp.LP_RESOLVE_ITERATIONS_PER_DIM = (
            VARIANTS["sign_params"])
    summarize(out)


def run(args: argparse.Namespace, out: Path, old: list[dict[str, str]], code: str) -> None:
    """Rewrite `out` with the `old` rows (older columns get blanks), then one row per
    instance x variant as it finishes."""
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, COLUMNS, restval="")
        writer.writeheader()
        writer.writerows({k: v for k, v in r.items() if k in COLUMNS} for r in old)
        for idx in args.idx:
            aug, lo, hi, base = start(idx)
            for variant in args.variants:
                mip.SIGN_MILP_PARAMS, threads, lp.LP_RESOLVE_ITERATIONS_PER_DIM = (
                    VARIANTS[variant])
                t0 = time.perf_counter()
                b = compute_bounds(aug, lo, hi, method="progressive", base=base,
                                           time_limit_s=args.budget, threads=threads)
                levels = b.details["levels"]
                row = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
                       "code": code, "instance": f"idx_{idx}", "variant": variant,
                       "threads": threads,
                       "budget_s": args.budget, "seconds": round(time.perf_counter() - t0, 1),
                       "unstable_before": base.unstable, "unstable": b.unstable,
                       **{f"{level}_{key}": levels[level][key]
                          for level in ("lp", "mip") for key in ("solves", "stabilized")},
                       "lp_restarts": levels["lp"]["restarts"],
                       **{f"{level}_s": round(levels[level]["time_s"], 1)
                          for level in ("lp", "mip")}}
                writer.writerow(row)
                fh.flush()
                print(row, flush=True)


def summarize(out: Path) -> None:
    """Write `sign_milps.md`: the machine, versions and a table of every row of `out`."""
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    lines = ["# Progressive tightening: sign-MILP parameters and threads", "",
             f"- updated: {datetime.datetime.now().isoformat(timespec='seconds')}",
             f"- {machine()}",
             "- `python benchmarks/sign_milps.py --idx ... --budget T`: eran 9x200 spec "
             "network after symbolic + optimised-slope bounds, then progressive tightening "
             "for T s per variant, one after the other (`sign_params`: `SIGN_MILP_PARAMS`, "
             "`solver_defaults`: SCIP's defaults, `threads_2`: `SIGN_MILP_PARAMS` with "
             "`threads=2`, `threads_2_no_restart`: the same without restarting stalled LP "
             "re-solves; blank threads / seconds / restarts: rows from before those columns, "
             "1 thread).",
             "",
             "| date | code | instance | variant | threads | budget s | unstable before | "
             "unstable after | sign MILPs | stabilised by them | MILP s | LPs | "
             "stabilised by LPs | LP restarts | LP s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['date']} | {r['code']} | {r['instance']} | {r['variant']} | {r['threads']} | "
              f"{r['budget_s']} | {r['unstable_before']} | {r['unstable']} | {r['mip_solves']} | "
              f"{r['mip_stabilized']} | {r['mip_s']} | {r['lp_solves']} | {r['lp_stabilized']} | "
              f"{r['lp_restarts']} | {r['lp_s']} |" for r in rows]
    (RESULTS / "sign_milps.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
