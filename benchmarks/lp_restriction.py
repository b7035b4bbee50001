"""LP convex restriction (Bastani et al. section 4) on MNIST: speed, lazy vs full, and rho_hat / rho.

For each image: the restriction's rho_hat with `target="second"` (the paper's choice) and
`target="all"`, lazily (iterative constraint solving) and, on the first `--full-images`
images, with the full LP; PGD, FGSM (and with `--lbfgs` L-BFGS) upper bounds; and the exact
rho, uncapped: `rho` seeded with the nearest verified heuristic point (`initial_witness`,
which also shrinks its box), or capped at `--eps-cap` when no heuristic found a point. Ratios estimator / exact are
reported where rho is proven (optimal), and as ranges [est / upper, est / lower] over all
images with a finite proven bracket.

    python benchmarks/lp_restriction.py [--nets wk17a,convsmall] [--images 100]
           [--full-images 20] [--eps-cap 1.0] [--time-limit-s 30] [--lbfgs]

Writes benchmarks/results/lp_restriction_<net>.csv (resumable) and lp_restriction.md.

    python benchmarks/lp_restriction.py --speed [--base main] --nets wk17a --images 100

times only the restriction (targets "second" and "all", lazy), the current code against
`milpverify/core/restriction.py` of the git revision `--base` (loaded beside it, on the
current rest of the package), interleaved per image in one process (the order alternates),
and checks that both give the same rho_hat. Writes lp_restriction_speed_<net>.csv; the
summary lp_restriction.md then holds the speed of every net with such a CSV, and the
accuracy rows of the other CSVs.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from _common import machine  # noqa: E402

import milpverify  # noqa: E402
from milpverify.core import attacks
from milpverify.core.restriction import lp_restriction

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
NETS = {"wk17a": "nets/mnist/wk17a_linf0.1.onnx",
        "convsmall": "nets/mnist/eran/convSmallRELU__Point.onnx"}
RESULTS = Path(__file__).parent / "results"


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def run_net(name: str, images: int, eps_cap: float, limit: float, lbfgs: bool,
            full_images: int) -> list[dict]:
    net = milpverify.load_onnx(SHARED / NETS[name])
    data = np.load(SHARED / "mnist/mnist_test.npz")
    out = RESULTS / f"lp_restriction_{name}.csv"
    rows: dict[int, dict] = {}
    if out.exists():
        with out.open() as fh:
            rows = {int(r["index"]): r for r in csv.DictReader(fh)}
    fields = ["index", "lp2", "lp2_s", "lp_all", "lp_all_s", "lp_all_rounds", "lp_all_rows",
              "full_all", "full_all_s", "full_all_rows", "pgd", "pgd_s", "fgsm", "fgsm_s",
              "lbfgs", "lbfgs_s", "exact_cap", "exact_status", "exact_lower", "exact_upper",
              "exact_s"]
    new = not out.exists()
    with out.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fields)
        if new:
            writer.writeheader()
        for i in range(images):
            if i in rows:
                continue
            x = data["images"][i] / 255.0
            lp2, t_lp2 = timed(lp_restriction, net, x, target="second")
            lazy, t_lazy = timed(lp_restriction, net, x, target="all", lazy=True)
            full, t_full = (timed(lp_restriction, net, x, target="all", lazy=False)
                            if i < full_images else (None, float("nan")))
            pgd, t_pgd = timed(attacks.pgd, net, x)
            fgsm, t_fgsm = timed(attacks.fgsm, net, x)
            lb, t_lb = (timed(attacks.lbfgs, net, x, targets="second") if lbfgs
                        else (None, float("nan")))
            # Uncapped rho, seeded with the best heuristic point (rho re-checks it; its
            # distance shrinks the box); the cap only applies when no heuristic found one.
            found = [r for r in (lp2, lazy, full, pgd, fgsm, lb)
                     if r is not None and r.witness_verified]
            seed = min(found, key=lambda r: r.upper) if found else None
            cap = eps_cap if seed is None else seed.upper
            exact, t_exact = timed(milpverify.rho, net, x, eps_cap=None if seed else eps_cap,
                                   time_limit_s=limit,
                                   initial_witness=None if seed is None else seed.witness)
            row = {"index": i, "lp2": lp2.upper, "lp2_s": t_lp2, "lp_all": lazy.upper,
                   "lp_all_s": t_lazy, "lp_all_rounds": lazy.stats["rounds"],
                   "lp_all_rows": lazy.stats["rows_added"],
                   "full_all": None if full is None else full.upper, "full_all_s": t_full,
                   "full_all_rows": None if full is None else full.stats["rows_added"],
                   "pgd": pgd.upper, "pgd_s": t_pgd, "fgsm": fgsm.upper, "fgsm_s": t_fgsm,
                   "lbfgs": None if lb is None else lb.upper, "lbfgs_s": t_lb,
                   "exact_cap": cap, "exact_status": str(exact.status),
                   "exact_lower": exact.lower,
                   "exact_upper": exact.upper, "exact_s": t_exact}
            writer.writerow(row)
            fh.flush()
            rows[i] = {k: str(v) for k, v in row.items()}
            print(f"{name} {i}: lp2 {lp2.upper:.4f} ({t_lp2 * 1000:.0f} ms) lp_all "
                  f"{lazy.upper:.4f} ({t_lazy:.2f}s lazy / {t_full:.2f}s full) pgd {pgd.upper:.4f}"
                  f" cap {cap:.4f}"
                  f" exact {exact.status} [{exact.lower:.4f}, {exact.upper:.4f}]", flush=True)
    return [rows[i] for i in range(images)]


def base_restriction(rev: str):
    """`milpverify.core.restriction` as of git revision `rev`, as a module of its own."""
    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(["git", "show", f"{rev}:milpverify/core/restriction.py"], cwd=root,
                            check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "restriction_base.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("restriction_base", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def same(a: float, b: float) -> bool:
    return (np.isinf(a) and np.isinf(b)) or abs(a - b) <= 1e-6


def run_speed(name: str, images: int, rev: str) -> list[dict]:
    """Current vs `rev` restriction per image, interleaved: times, rho_hat, equality."""
    net = milpverify.load_onnx(SHARED / NETS[name])
    data = np.load(SHARED / "mnist/mnist_test.npz")
    impls = {"new": lp_restriction, "base": base_restriction(rev).lp_restriction}
    impls["new"](net, data["images"][0] / 255.0, target="second")  # one-time loading costs
    impls["base"](net, data["images"][0] / 255.0, target="second")
    rows = []
    for i in range(images):
        x = data["images"][i] / 255.0
        row: dict = {"index": i}
        for target, key in (("second", "lp2"), ("all", "lp_all")):
            order = ("new", "base") if (i + (key == "lp_all")) % 2 == 0 else ("base", "new")
            for impl in order:
                cpu = time.process_time()
                result, secs = timed(impls[impl], net, x, target=target)
                row[f"{key}_{impl}_cpu_s"] = time.process_time() - cpu
                assert result.witness is None or result.witness_verified
                row[f"{key}_{impl}"], row[f"{key}_{impl}_s"] = result.upper, secs
                row[f"{key}_{impl}_rounds"] = result.stats["rounds"]
            row[f"{key}_same"] = same(row[f"{key}_new"], row[f"{key}_base"])
        rows.append(row)
        print(f"{name} {i}: second {row['lp2_base_s'] * 1000:.0f} -> {row['lp2_new_s'] * 1000:.0f}"
              f" ms, all {row['lp_all_base_s'] * 1000:.0f} -> {row['lp_all_new_s'] * 1000:.0f} ms,"
              f" rho_hat {row['lp_all_new']:.6f} (same {row['lp2_same']}, {row['lp_all_same']})",
              flush=True)
    out = RESULTS / f"lp_restriction_speed_{name}.csv"
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


def speed_summary(name: str, rows: list[dict], rev: str) -> str:
    f = lambda key: np.array([float(r[key]) for r in rows])
    same_rows = lambda key: sum(str(r[key]) == "True" for r in rows)
    lines = [(f"### {name}: restriction time per image, current code vs `{rev}` ({len(rows)} "
              "images, interleaved in one process)"), "",
             ("| target | base median ms | current median ms | ratio of medians | median per-image "
              "ratio base/current | base total s | current total s | same rho_hat | points found |"),
             "|---|---|---|---|---|---|---|---|---|"]
    for key, target in (("lp2", "second"), ("lp_all", "all")):
        base, new = f(f"{key}_base_s"), f(f"{key}_new_s")
        lines.append(f"| {target} | {np.median(base) * 1000:.1f} | {np.median(new) * 1000:.1f} | "
                     f"{np.median(base) / np.median(new):.1f}x | {np.median(base / new):.1f}x | "
                     f"{base.sum():.1f} | {new.sum():.1f} | {same_rows(f'{key}_same')}/{len(rows)}"
                     f" | {int(np.isfinite(f(f'{key}_new')).sum())} |")
    if "lp2_new_cpu_s" in rows[0]:
        lines += ["", ("CPU time of the process (one thread), less sensitive than the wall clock "
                       "to other jobs on the machine:"), "",
                  ("| target | base median ms | current median ms | ratio of medians | base total s "
                   "| current total s |"), "|---|---|---|---|---|---|"]
        for key, target in (("lp2", "second"), ("lp_all", "all")):
            base, new = f(f"{key}_base_cpu_s"), f(f"{key}_new_cpu_s")
            lines.append(f"| {target} | {np.median(base) * 1000:.1f} | "
                         f"{np.median(new) * 1000:.1f} | {np.median(base) / np.median(new):.1f}x "
                         f"| {base.sum():.1f} | {new.sum():.1f} |")
    quick = f("lp2_new_rounds") <= 1
    lines += ["", (f"Target second: on {int(quick.sum())} images the first LP (no region rows) "
                   "already decides (no label reachable in the input domain, or its optimum lies "
                   "in the region); on the others, median "
                   f"{np.median(f('lp2_base_s')[~quick]) * 1000:.0f} ms (base) and "
                   f"{np.median(f('lp2_new_s')[~quick]) * 1000:.0f} ms (current)."), ""]
    return "\n".join(lines) + "\n"


def summary(name: str, rows: list[dict]) -> str:
    f = lambda key: np.array([float(r[key]) if r.get(key) not in (None, "", "None") else np.nan  # noqa: E731
                              for r in rows])
    status = np.array([r["exact_status"] for r in rows])
    exact = status == "optimal"
    lower, upper = f("exact_lower"), f("exact_upper")
    full = np.isfinite(f("full_all_s"))
    lazy_all, full_all = f("lp_all")[full], f("full_all")[full]
    same = np.isclose(lazy_all, full_all, atol=1e-6) | (np.isinf(lazy_all) & np.isinf(full_all))
    counts = ", ".join(f"{k} {int(np.sum(status == k))}" for k in sorted(set(status)))
    lines = [f"### {name} ({len(rows)} images)", "",
             f"- LP restriction, target second (the paper's): median "
             f"{np.median(f('lp2_s')) * 1000:.1f} ms per image; finds a point on "
             f"{int(np.isfinite(f('lp2')).sum())}/{len(rows)}",
             f"- LP restriction, all targets, lazy: median {np.median(f('lp_all_s')):.3f} s, "
             f"{np.median(f('lp_all_rounds')):.0f} rounds, {np.median(f('lp_all_rows')):.0f} "
             f"region rows added; finds a point on {int(np.isfinite(f('lp_all')).sum())}/"
             f"{len(rows)}",
             f"- full LP on the first {int(full.sum())} images: median "
             f"{np.median(f('full_all_s')[full]):.3f} s ({np.median(f('full_all_rows')[full]):.0f}"
             f" rows); speed-up full/lazy (median of per-image ratios) "
             f"{np.median(f('full_all_s')[full] / f('lp_all_s')[full]):.1f}x; lazy and full "
             f"rho_hat equal (1e-6) on {int(same.sum())}/{int(full.sum())}",
             f"- PGD median {np.median(f('pgd_s')):.2f} s, FGSM median "
             f"{np.median(f('fgsm_s')):.2f} s"
             + (f", L-BFGS median {np.nanmedian(f('lbfgs_s')):.2f} s"
                if np.isfinite(f("lbfgs_s")).any() else ""),
             f"- exact rho (cap = best heuristic distance, else the --eps-cap): {counts}; "
             f"median {np.median(f('exact_s')):.1f} s", ""]
    if exact.any():
        lines += ["Ratios estimator / exact rho where rho is proven (optimal); 'found' counts "
                  "images where the estimator found a point:", "",
                  "| estimator | median ratio | min | max | found |", "|---|---|---|---|---|"]
        for key in ("lp2", "lp_all", "pgd", "fgsm", "lbfgs"):
            vals = f(key)[exact] / upper[exact]
            ok = np.isfinite(vals)
            if ok.any():
                lines.append(f"| {key} | {np.median(vals[ok]):.3f} | {vals[ok].min():.3f} | "
                             f"{vals[ok].max():.3f} | {int(ok.sum())}/{int(exact.sum())} |")
        lines.append("")
    bracket = np.isfinite(upper) & (lower > 0) & ~exact
    if bracket.any():
        lines += [f"On the {int(bracket.sum())} images whose bracket stayed open (time limit), "
                  "the ratio lies in [est / upper, est / lower]; medians of both ends:", "",
                  "| estimator | median est/upper | median est/lower | found |", "|---|---|---|---|"]
        for key in ("lp2", "lp_all", "pgd", "fgsm", "lbfgs"):
            est = f(key)[bracket]
            ok = np.isfinite(est)
            if ok.any():
                lines.append(f"| {key} | {np.median(est[ok] / upper[bracket][ok]):.3f} | "
                             f"{np.median(est[ok] / lower[bracket][ok]):.3f} | "
                             f"{int(ok.sum())}/{int(bracket.sum())} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", default="wk17a,convsmall")
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--full-images", type=int, default=20,
                    help="run the full LP (slow: ~10 s per image) on the first N images only")
    ap.add_argument("--eps-cap", type=float, default=1.0,
                    help="cap of the exact rho when no heuristic found a point")
    ap.add_argument("--time-limit-s", type=float, default=30.0)
    ap.add_argument("--lbfgs", action="store_true")
    ap.add_argument("--summarize-only", action="store_true",
                    help="only rewrite lp_restriction.md from the CSVs (all rows they hold)")
    ap.add_argument("--speed", action="store_true",
                    help="only time the restriction, current code vs --base, interleaved")
    ap.add_argument("--base", default="main",
                    help="git revision whose restriction.py --speed compares against")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.speed:
        for name in args.nets.split(","):
            run_speed(name, args.images, args.base)
    text = ["# LP restriction vs exact rho (MNIST test images 0, 1, ...; counts per net below)", "",
            f"Machine (when the summary was written): {machine()}", ""]
    speed_csvs = sorted(RESULTS.glob("lp_restriction_speed_*.csv"))
    if speed_csvs:
        text += ["## Speed of the restriction", "",
                 (f"Command: `python benchmarks/lp_restriction.py --speed --base {args.base} "
                  "--nets NET --images N` (one run per net below; the base revision's "
                  "restriction.py runs on the current rest of the package)"), ""]
        for path in speed_csvs:
            with path.open() as fh:
                text.append(speed_summary(path.stem.removeprefix("lp_restriction_speed_"),
                                          list(csv.DictReader(fh)), args.base))
    accuracy = args.nets.split(",")
    if args.speed or args.summarize_only:
        accuracy = [n for n in NETS if (RESULTS / f"lp_restriction_{n}.csv").exists()]
    if args.speed or args.summarize_only:
        command = ("Rows: every row of lp_restriction_<net>.csv, as written by runs of "
                   "`python benchmarks/lp_restriction.py` without `--speed` (settings, and times, "
                   "those of their runs and of the code then; the current restriction's speed is "
                   "the section above)")
    else:
        command = (f"Command: `python benchmarks/lp_restriction.py --nets {','.join(accuracy)} "
                   f"--images {args.images} --full-images {args.full_images} --eps-cap "
                   f"{args.eps_cap} --time-limit-s {args.time_limit_s}"
                   f"{' --lbfgs' if args.lbfgs else ''}`")
    text += ["## Estimators vs exact rho", "", command, ""]
    for name in accuracy:
        if args.speed or args.summarize_only:
            with (RESULTS / f"lp_restriction_{name}.csv").open() as fh:
                rows = list(csv.DictReader(fh))
        else:
            rows = run_net(name, args.images, args.eps_cap, args.time_limit_s, args.lbfgs,
                           args.full_images)
        text.append(summary(name, rows))
    (RESULTS / "lp_restriction.md").write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
