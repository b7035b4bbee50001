"""Bastani et al. (NIPS 2016) Table 1 layout on three MNIST nets: accuracy, phi and mu at
eps = 20/255 for each estimator, with the exact MILP column; plus the 1 -> 2 worker speed-up.

    python benchmarks/table1.py --images 100 --time-limit-s 30 --workers 2

Writes `benchmarks/results/table1/<net>.csv` (one row per image and method, as
`milpverify evaluate` writes them) and `table1.md` (tables, machine, versions, options). Run
directories (resumable; rerunning continues where a killed run stopped) go to
`benchmarks/results/table1/runs/<net>/`. Uses only the public API (`milpverify.evaluate`).

As in the paper's comparison (section 6.2) the LP restriction and L-BFGS-B target the
second most likely label; phi and mu are over all evaluated test points, with rho
measured against the predicted label (section 2).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import milpverify  # noqa: E402

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
NETS = {  # name -> (ONNX file under shared/data, note)
    "wk17a": ("nets/mnist/wk17a_linf0.1.onnx", "Wong & Kolter LP-trained (eps 0.1), conv"),
    "eran_convsmall": ("nets/mnist/eran/convSmallRELU__Point.onnx",
                       "ERAN convSmall, normalisation inside"),
    "eran_mlp_3_100": ("nets/mnist/eran/mnist_relu_3_100.onnx",
                       "ERAN 784-100-100-10, ReLU after the output layer"),
}
METHODS = ("lbfgs", "lp", "pgd", "fgsm", "exact")
LABELS = {"lbfgs": "L-BFGS-B (baseline)", "lp": "LP restriction (Bastani)", "pgd": "PGD",
          "fgsm": "FGSM", "exact": "exact MILP", "combined": "exact ∩ all upper bounds"}
METHOD_OPTIONS = {"lp": {"target": "second"}, "lbfgs": {"targets": "second"}}
EPS = 20 / 255


def run_net(name: str, args: argparse.Namespace, out_dir: Path) -> Any:
    model = SHARED / NETS[name][0]
    t0 = time.perf_counter()
    result = milpverify.evaluate(model, data=SHARED / "mnist" / "mnist_test.npz",
                      indices=f"0:{args.images}", eps=EPS, eps_cap=EPS, methods=METHODS,
                      time_limit_s=args.time_limit_s, pixel_divisor=255.0,
                      method_options=METHOD_OPTIONS, workers=args.workers,
                      out=out_dir / "runs" / name, quiet=args.quiet)
    print(f"{name}: {len(result.rows)} rows ({result.computed} computed) in "
          f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
    shutil.copy(result.files["results"], out_dir / f"{name}.csv")
    return result


def speedup(args: argparse.Namespace, out_dir: Path) -> dict[str, float]:
    """Wall time of the same slice with 1 and 2 workers, each in a fresh interpreter.

    Both runs start cold (imports, network loading), so the in-process 1-worker run does
    not profit from modules this script already loaded. Work-bound methods are the
    default: time-limited solves take the same wall time however little CPU they get.
    """
    model = SHARED / NETS[args.speedup_net][0]
    methods = args.speedup_methods.split(",")
    times = {}
    for workers in (1, 2):
        options = dict(data=str(SHARED / "mnist" / "mnist_test.npz"),
                       indices=f"0:{args.speedup_images}", eps=EPS, eps_cap=EPS,
                       methods=methods, time_limit_s=args.time_limit_s, pixel_divisor=255.0,
                       method_options={k: v for k, v in METHOD_OPTIONS.items() if k in methods},
                       workers=workers, out=str(out_dir / "runs" / f"speedup_w{workers}"),
                       rerun=True, quiet=True, report=False)
        code = f"import milpverify; milpverify.evaluate({str(model)!r}, **{options!r})"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times[f"workers_{workers}_s"] = time.perf_counter() - t0
    times["speedup"] = times["workers_1_s"] / times["workers_2_s"]
    return times


def _busy(n: int) -> float:
    start = time.perf_counter()
    total = 0
    for i in range(n):
        total += i * i
    return time.perf_counter() - start


def control_speedup() -> float:
    """1 -> 2 process speed-up of a pure-Python busy loop at the same moment (a baseline of
    what this machine gives two processes: other sessions' jobs share the CPUs)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    walls = []
    for workers in (1, 2):
        t0 = time.perf_counter()
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as p:
            list(p.map(_busy, [10_000_000] * 4))
        walls.append(time.perf_counter() - t0)
    return walls[0] / walls[1]


def fmt_pct(iv: Any) -> str:
    return iv.format(".3g", 100)


def fmt_px(iv: Any) -> str:
    return iv.format(".3g", 255)


def markdown(results: dict[str, Any], speed: dict[str, float] | None,
             args: argparse.Namespace) -> str:
    methods = [*METHODS, "combined"]
    lines = ["# Table 1 (Bastani et al. 2016 layout) on MNIST, ε = 20/255", "",
             f"{args.images} test images per net (0..{args.images - 1}); exact: per-image time "
             f"limit {args.time_limit_s:g} s, eps_cap = ε; {args.workers} worker processes. "
             "φ and μ over *all* evaluated test points, ρ w.r.t. the predicted label (paper §2). "
             "LP restriction and L-BFGS-B target the second most likely label (paper §6.2). "
             "Heuristic columns are lower bounds of the true φ (their ρ̂ ≥ ρ); the exact "
             "column is an interval when solves hit the time limit; *combined* is the exact "
             "bracket with its upper end lowered to the best verified upper bound of any method.",
             "", "## Adversarial frequency φ(ε) (%)", "",
             "| net | accuracy (%) | " + " | ".join(LABELS[m] for m in methods) + " |",
             "|---|---|" + "---|" * len(methods)]
    for name, res in results.items():
        s = res.summaries
        acc = next(iter(s.values())).accuracy
        lines.append(f"| {name} | {100 * acc:.1f} | "
                     + " | ".join(fmt_pct(s[m].phi) for m in methods) + " |")
    lines += ["", "## Adversarial severity μ(ε) (pixels, 0..255 scale)", "",
              "| net | " + " | ".join(LABELS[m] for m in methods) + " |",
              "|---|" + "---|" * len(methods)]
    for name, res in results.items():
        s = res.summaries
        lines.append(f"| {name} | " + " | ".join(fmt_px(s[m].mu) for m in methods) + " |")
    lines += ["", "## Exact method: statuses and time; median seconds per image and method", "",
              "| net | exact statuses | " + " | ".join(METHODS) + " |",
              "|---|---|" + "---|" * len(METHODS)]
    for name, res in results.items():
        s = res.summaries
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(s["exact"].statuses.items()))
        lines.append(f"| {name} | {statuses} | "
                     + " | ".join(f"{s[m].median_s:.3g}" for m in METHODS) + " |")
    if speed:
        lines += ["", "## Process-pool speed-up", "",
                  f"`{args.speedup_methods}` on {args.speedup_net}, images "
                  f"0..{args.speedup_images - 1}: "
                  f"1 worker {speed['workers_1_s']:.1f} s, 2 workers {speed['workers_2_s']:.1f} s, "
                  f"speed-up {speed['speedup']:.2f}x. Each run in a fresh interpreter "
                  f"(imports included). Load average before: "
                  f"{speed.get('load_before', float('nan')):.2f} on "
                  f"{os.cpu_count()} CPUs (other jobs were running on this machine). "
                  f"Control, a pure-Python busy loop (4 tasks) in a 1- vs 2-process pool "
                  f"right after: speed-up {speed['control_speedup']:.2f}x."]
    first = next(iter(results.values()))
    meta = json.loads(first.files["run_json"].read_text())
    lines += ["", "## Nets", ""]
    lines += [f"- {name}: `{NETS[name][0]}` ({NETS[name][1]})" for name in results]
    lines += ["", "## Machine and versions", "", "```",
              json.dumps({"machine": meta["machine"], "versions": meta["versions"],
                          "load_average": list(os.getloadavg()),
                          "command": " ".join(sys.argv)}, indent=1), "```", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100, help="test images per net")
    parser.add_argument("--time-limit-s", type=float, default=30.0,
                        help="per-image limit of the exact method")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--nets", default=",".join(NETS), help="comma-separated subset")
    parser.add_argument("--speedup-net", default="eran_convsmall", choices=list(NETS))
    parser.add_argument("--speedup-images", type=int, default=8)
    parser.add_argument("--speedup-methods", default="lp,pgd,fgsm")
    parser.add_argument("--no-speedup", action="store_true")
    parser.add_argument("--out", default=str(HERE / "results" / "table1"))
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    if not SHARED.is_dir():
        print(f"needs the shared data folder {SHARED}", file=sys.stderr)
        return 1
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {name: run_net(name, args, out_dir) for name in args.nets.split(",")}
    speed = None
    if not args.no_speedup:
        load = os.getloadavg()[0]
        speed = {**speedup(args, out_dir), "load_before": load,
                 "control_speedup": control_speedup()}
    text = markdown(results, speed, args)
    (out_dir / "table1.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
