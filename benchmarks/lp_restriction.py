"""LP convex restriction (Bastani et al. section 4) on MNIST: speed, lazy vs full, and rho_hat / rho.

For each image: the restriction's rho_hat with `target="second"` (the paper's choice) and
`target="all"`, lazily (iterative constraint solving) and with the full LP; PGD and FGSM
upper bounds; and the exact rho (`rho` with `eps_cap`, `time_limit_s`). Ratios estimator /
exact are reported only where the exact value is proven (status optimal).

    python benchmarks/lp_restriction.py [--nets wk17a,convsmall] [--images 30]
           [--eps-cap 0.2] [--time-limit-s 30] [--lbfgs]

Writes benchmarks/results/lp_restriction_<net>.csv (resumable) and lp_restriction.md.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import milpverify  # noqa: E402
from milpverify import attacks  # noqa: E402
from milpverify.restriction import lp_restriction  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
NETS = {"wk17a": "nets/mnist/wk17a_linf0.1.onnx",
        "convsmall": "nets/mnist/eran/convSmallRELU__Point.onnx"}
RESULTS = Path(__file__).parent / "results"


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def run_net(name: str, images: int, eps_cap: float, limit: float, lbfgs: bool) -> list[dict]:
    net = milpverify.load_onnx(SHARED / NETS[name])
    data = np.load(SHARED / "mnist/mnist_test.npz")
    out = RESULTS / f"lp_restriction_{name}.csv"
    rows: dict[int, dict] = {}
    if out.exists():
        with out.open() as fh:
            rows = {int(r["index"]): r for r in csv.DictReader(fh)}
    fields = ["index", "lp2", "lp2_s", "lp_all", "lp_all_s", "lp_all_rounds", "lp_all_rows",
              "full_all", "full_all_s", "full_all_rows", "pgd", "pgd_s", "fgsm", "fgsm_s",
              "lbfgs", "lbfgs_s", "exact_status", "exact_lower", "exact_upper", "exact_s"]
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
            full, t_full = timed(lp_restriction, net, x, target="all", lazy=False)
            pgd, t_pgd = timed(attacks.pgd, net, x)
            fgsm, t_fgsm = timed(attacks.fgsm, net, x)
            lb, t_lb = (timed(attacks.lbfgs, net, x, targets="second") if lbfgs
                        else (None, float("nan")))
            exact, t_exact = timed(milpverify.rho, net, x, eps_cap=eps_cap, time_limit_s=limit)
            row = {"index": i, "lp2": lp2.upper, "lp2_s": t_lp2, "lp_all": lazy.upper,
                   "lp_all_s": t_lazy, "lp_all_rounds": lazy.stats["rounds"],
                   "lp_all_rows": lazy.stats["rows_added"], "full_all": full.upper,
                   "full_all_s": t_full, "full_all_rows": full.stats["rows_added"],
                   "pgd": pgd.upper, "pgd_s": t_pgd, "fgsm": fgsm.upper, "fgsm_s": t_fgsm,
                   "lbfgs": None if lb is None else lb.upper, "lbfgs_s": t_lb,
                   "exact_status": str(exact.status), "exact_lower": exact.lower,
                   "exact_upper": exact.upper, "exact_s": t_exact}
            writer.writerow(row)
            fh.flush()
            rows[i] = {k: str(v) for k, v in row.items()}
            print(f"{name} {i}: lp2 {lp2.upper:.4f} ({t_lp2 * 1000:.0f} ms) lp_all "
                  f"{lazy.upper:.4f} ({t_lazy:.2f}s lazy / {t_full:.2f}s full) pgd {pgd.upper:.4f}"
                  f" exact {exact.status} [{exact.lower:.4f}, {exact.upper:.4f}]", flush=True)
    return [rows[i] for i in range(images)]


def summary(name: str, rows: list[dict]) -> str:
    f = lambda key: np.array([float(r[key]) if r[key] not in ("", "None") else np.nan  # noqa: E731
                              for r in rows])
    exact = np.array([r["exact_status"] == "optimal" for r in rows])
    lines = [f"### {name} ({len(rows)} images)", "",
             f"- LP restriction, target second: median {np.median(f('lp2_s')) * 1000:.1f} ms "
             f"per image",
             f"- LP restriction, all targets: lazy median {np.median(f('lp_all_s')):.3f} s, full "
             f"median {np.median(f('full_all_s')):.3f} s; speed-up full/lazy (median of per-image "
             f"ratios) {np.median(f('full_all_s') / f('lp_all_s')):.1f}x; region rows added "
             f"lazy {np.median(f('lp_all_rows')):.0f} vs full {np.median(f('full_all_rows')):.0f}",
             f"- lazy and full rho_hat equal (1e-6) on "
             f"{int(np.sum(np.isclose(f('lp_all'), f('full_all'), atol=1e-6) | (np.isinf(f('lp_all')) & np.isinf(f('full_all')))))}"
             f"/{len(rows)} images",
             f"- exact rho proven (optimal) on {int(exact.sum())}/{len(rows)} images "
             f"(others: robust at the cap or time limit)", ""]
    if exact.any():
        lines += ["| estimator | median ratio to exact rho | min | max | found |",
                  "|---|---|---|---|---|"]
        for key in ("lp2", "lp_all", "pgd", "fgsm", "lbfgs"):
            vals = f(key)[exact] / f("exact_upper")[exact]
            ok = np.isfinite(vals)
            if ok.any():
                lines.append(f"| {key} | {np.median(vals[ok]):.3f} | {vals[ok].min():.3f} | "
                             f"{vals[ok].max():.3f} | {int(ok.sum())}/{int(exact.sum())} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", default="wk17a,convsmall")
    ap.add_argument("--images", type=int, default=30)
    ap.add_argument("--eps-cap", type=float, default=0.2)
    ap.add_argument("--time-limit-s", type=float, default=30.0)
    ap.add_argument("--lbfgs", action="store_true")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    RESULTS.mkdir(parents=True, exist_ok=True)
    from importlib import metadata
    import platform
    text = [f"# LP restriction vs exact rho (MNIST test 0-{args.images - 1})", "",
            f"Command: `python benchmarks/lp_restriction.py --nets {args.nets} --images "
            f"{args.images} --eps-cap {args.eps_cap} --time-limit-s {args.time_limit_s}"
            f"{' --lbfgs' if args.lbfgs else ''}`", "",
            f"Machine: {platform.node()}, {os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}, numpy {metadata.version('numpy')}, highspy "
            f"{metadata.version('highspy')}, pyscipopt {metadata.version('pyscipopt')}", ""]
    for name in args.nets.split(","):
        text.append(summary(name, run_net(name, args.images, args.eps_cap, args.time_limit_s,
                                          args.lbfgs)))
    (RESULTS / "lp_restriction.md").write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
