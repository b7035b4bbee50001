"""ReLU-phase branch and bound (`milpverify.bounds.relu_split`): its settings, and the question
"is x robust at radius r?" answered by it and by `milpverify.certify` side by side.

`tune`: one disjunct of one VNN-COMP mnist_fc instance, on the pipeline's kind of bounds
(symbolic, optimised slopes, LP tightening for `--tighten-s`), searched for `--seconds` with
each variant of `ReluSplitOptions`; per variant the domains bounded and left open, the
worst open bound and domains per second (fewer open domains and a higher worst bound at
the same time: a better variant).

`certify`: ERAN mnist_relu_3_100 on MNIST test images, one radius each: every other class's
disjunct ``y_label - y_j <= 0`` refuted by the branch and bound on symbolic + optimised-slope
bounds (no LP tightening), against `milpverify.certify(net, x, r)` with its defaults, each
with `--seconds`.

    python benchmarks/relu_split.py [--part tune,certify] [--seconds 60]
           [--out benchmarks/results/relu_split]

Writes `<out>_tune.csv`, `<out>_certify.csv` and `<out>.md` (machine and versions).
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
from _common import machine

import milpverify
from milpverify.bounds import alpha_bounds
from milpverify.bounds.box_bounds import as_chain
from milpverify.bounds.relu_split import ReluSplitOptions, refute_by_relu_splits, root_bounds
from milpverify.bounds.tighten import compute_bounds
from milpverify.vnn.check import property_rows
from milpverify.vnn.decide import SPEC_NODE, spec_network
from milpverify.vnn.verify import spec_for

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results"
MNIST_FC = SHARED / "vnncomp" / "mnist_fc_2022"
TUNE_INSTANCE = ("onnx/mnist-net_256x4.onnx", "vnnlib/prop_10_0.05.vnnlib", 8)
VARIANTS = {"steps 8": {"iterations": 8}, "steps 20": {"iterations": 20},
            "steps 40": {"iterations": 40}, "steps 80 (default)": {},
            "steps 80, refine": {"refine": True}, "steps 80, beta step 0.2": {"beta_rate": 0.2}}
CERTIFY_NET = "nets/mnist/eran/mnist_relu_3_100.onnx"
CERTIFY_CASES = ((0, 0.035), (1, 0.035), (0, 0.04), (1, 0.04))


def _refute(aug, bounds, masks, seconds: float, options: ReluSplitOptions) -> dict:
    """`refute_by_relu_splits` on each row mask with an equal share of `seconds`."""
    chain, root = as_chain(aug), root_bounds(aug, bounds)
    s_lo = bounds.flat(SPEC_NODE)[0]
    t0 = time.perf_counter()
    refuted, domains, open_, worst = 0, 0, 0, np.inf
    for i, mask in enumerate(masks):
        now = time.perf_counter()
        found = refute_by_relu_splits(chain, root, mask,
                                      now + (t0 + seconds - now) / (len(masks) - i), options,
                                      start=s_lo)
        refuted += found.refuted
        domains += found.stats["relu_domains"]
        open_ += found.stats.get("relu_open", 0) if not found.refuted else 0
        if not found.refuted:
            worst = min(worst, found.stats.get("relu_worst", found.stats["relu_root_lower"]))
    return {"refuted": refuted, "disjuncts": len(masks), "domains": domains, "open": open_,
            "worst": worst, "seconds": round(time.perf_counter() - t0, 2)}


def tune(seconds: float, tighten_s: float) -> list[dict]:
    onnx, vnnlib, disjunct = TUNE_INSTANCE
    net = milpverify.load_onnx(MNIST_FC / onnx)
    prop = spec_for(MNIST_FC / vnnlib, net).properties[0]
    a, b, groups = property_rows(prop)
    aug = spec_network(net, a, b)
    bounds = compute_bounds(aug, prop.input_lower, prop.input_upper, method="symbolic")
    bounds = alpha_bounds(aug, prop.input_lower, prop.input_upper, base=bounds,
                          time_limit_s=10)
    bounds = compute_bounds(aug, prop.input_lower, prop.input_upper, method="progressive",
                            time_limit_s=tighten_s, base=bounds)
    mask = np.zeros(len(bounds.flat(SPEC_NODE)[0]), dtype=bool)
    mask[groups[disjunct]] = True
    rows = []
    for name, change in VARIANTS.items():
        row = _refute(aug, bounds, [mask], seconds, replace(ReluSplitOptions(), **change))
        rows.append({"variant": name, "instance": f"{onnx} {vnnlib} disjunct {disjunct}",
                     **row, "domains_per_s": round(row["domains"] / row["seconds"], 1)})
        print(rows[-1], flush=True)
    return rows


def certify_rows(seconds: float) -> list[dict]:
    net = milpverify.load_onnx(SHARED / CERTIFY_NET)
    data = np.load(SHARED / "mnist" / "mnist_test.npz")
    rows = []
    for index, radius in CERTIFY_CASES:
        x = (data["images"][index] / 255.0).reshape(-1)
        label = int(data["labels"][index])
        others = [j for j in range(net.num_classes) if j != label]
        a = np.zeros((len(others), net.num_classes))
        a[np.arange(len(others)), label] = 1.0
        a[np.arange(len(others)), others] = -1.0  # s = y_label - y_j <= 0: j at least as high
        lo, hi = np.clip(x - radius, 0.0, 1.0), np.clip(x + radius, 0.0, 1.0)
        t0 = time.perf_counter()
        aug = spec_network(net, a, np.zeros(len(others)))
        bounds = compute_bounds(aug, lo, hi, method="symbolic")
        bounds = alpha_bounds(aug, lo, hi, base=bounds, time_limit_s=10)
        bounds_s = time.perf_counter() - t0
        s_lo = bounds.flat(SPEC_NODE)[0]
        masks = [np.arange(len(others)) == r for r in np.argsort(-s_lo) if s_lo[r] <= 0]
        split = _refute(aug, bounds, masks, seconds, ReluSplitOptions())
        t0 = time.perf_counter()
        cert = milpverify.certify(net, x, radius, time_limit_s=seconds)
        rows.append({"image": index, "radius": radius, "label": label,
                     "split_verdict": "robust" if split["refuted"] == len(masks) else "open",
                     "split_bounds_s": round(bounds_s, 2), "split_s": split["seconds"],
                     "split_refuted": f"{split['refuted'] + len(others) - len(masks)}"
                                      f"/{len(others)}",
                     "certify_verdict": str(getattr(cert.verdict, "value", cert.verdict)),
                     "certify_s": round(time.perf_counter() - t0, 2),
                     "certify_bounds_s": cert.timings.get("bounds_s"),
                     "certify_nodes": cert.stats.get("nodes")})
        print(rows[-1], flush=True)
    return rows


def _write(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _table(rows: list[dict]) -> list[str]:
    keys = list(rows[0])
    return ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys),
            *("| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", default="tune,certify")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--tighten-s", type=float, default=60.0)
    ap.add_argument("--out", default=str(RESULTS / "relu_split"))
    args = ap.parse_args()
    parts = set(args.part.split(","))
    lines = ["# ReLU-phase branch and bound: settings, and certify's question", "",
             machine(), "",
             (f"Command: `python benchmarks/relu_split.py --part {args.part} "
              f"--seconds {args.seconds:g} --tighten-s {args.tighten_s:g}`"), ""]
    if "tune" in parts:
        rows = tune(args.seconds, args.tighten_s)
        _write(Path(f"{args.out}_tune.csv"), rows)
        lines += ["## Variants on one disjunct (`tune`)", "",
                  (f"{args.seconds:g} s each, bounds: symbolic, 10 s of optimised slopes, "
                   f"{args.tighten_s:g} s of LP tightening."), "", *_table(rows), ""]
    if "certify" in parts:
        rows = certify_rows(args.seconds)
        _write(Path(f"{args.out}_certify.csv"), rows)
        lines += ["## Robust at r? (`certify`), ERAN mnist_relu_3_100", "",
                  ("Branch and bound on symbolic + 10 s optimised-slope bounds and "
                   f"`milpverify.certify` with its defaults, {args.seconds:g} s each, one after "
                   "the other."), "", *_table(rows), ""]
    Path(f"{args.out}.md").write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {args.out}.md")


if __name__ == "__main__":
    main()
