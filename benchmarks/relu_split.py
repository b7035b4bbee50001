"""ReLU-phase branch and bound (`milpverify.bounds.relu_split`): its settings, and
`milpverify.certify` and `milpverify.rho` with and without it, side by side.

`tune`: one disjunct of one VNN-COMP mnist_fc instance, on the pipeline's kind of bounds
(symbolic, optimised slopes, LP tightening for `--tighten-s`), searched for `--seconds` with
each variant of `ReluSplitOptions`; per variant the domains bounded and left open, the
worst open bound and domains per second (fewer open domains and a higher worst bound at
the same time: a better variant).

`certify`: `milpverify.certify(net, x, r)` with `--seconds`, its ReLU-splitting stage off
(``relu_split=0``) and on (the default share), on MNIST test images of ERAN
mnist_relu_3_100, mnist_fc 256x2 and WK17a (`CERTIFY_CASES`).

`rho`: uncapped `milpverify.rho(net, x)` with `--seconds`, the stage off (``relu_split=0``)
and on (the default `RHO_SPLIT_SHARE`: the MILPs stop that share earlier and a time-out
raises `lower` by bisecting the radius with ReLU splitting), on the networks and images of
`benchmarks/hard_rho.py` (`RHO_CASES`).

`rho_topk`: uncapped `rho_topk(net, x, 2)` with `--seconds`, the same stage off and on, on
the ERAN mnist_relu_3_100 images of the `rho` part.

`properties`: `certify_properties(net, x, props, r)` (relaxed top-K, affinity) with
`--seconds` per property, the stage off (``relu_split=0``) and on (the default), on ERAN
mnist_relu_3_100 and the CIFAR-10 ConvSmall of `benchmarks/relaxed_robustness.py`
(`PROPERTY_CASES`).

    python benchmarks/relu_split.py [--part tune,certify,rho,rho_topk,properties]
           [--seconds 60]
           [--out benchmarks/results/relu_split] [--summarize-only]

Writes `<out>_<part>.csv` for the parts it runs, and
`<out>.md` (machine and versions) from the CSVs there are, each section with the command
that wrote it.
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
from milpverify.bounds.relu_split import ReluSplitOptions, refute_disjuncts, root_bounds
from milpverify.bounds.tighten import compute_bounds
from milpverify.properties.certify import certify_properties
from milpverify.properties.rho import rho_topk
from milpverify.properties.spec import Affinity, RelaxedTopK
from milpverify.verify import FIRST_MILP_SHARE, RELU_SPLIT_SHARE, RHO_SPLIT_SHARE
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
#: (name, network, radius, MNIST test images): radii inside the rho brackets of
#: `benchmarks/hard_rho.py` (ERAN 3x100, mnist_fc 256x2) and WK17a's trained radius.
CERTIFY_CASES = (("eran_3x100", "nets/mnist/eran/mnist_relu_3_100.onnx", 0.035, range(5)),
                 ("eran_3x100", "nets/mnist/eran/mnist_relu_3_100.onnx", 0.04, range(5)),
                 ("mnist_fc_256x2", "vnncomp/mnist_fc_2022/onnx/mnist-net_256x2.onnx", 0.03,
                  range(5)),
                 ("wk17a", "nets/mnist/wk17a_linf0.1.onnx", 0.1, range(5)))
#: (name, network, data set, radius, images, properties) of the `properties` part.
PROPERTY_CASES = (
    ("eran_3x100", "nets/mnist/eran/mnist_relu_3_100.onnx", "mnist/mnist_test.npz", 0.035,
     range(5), (RelaxedTopK(1), RelaxedTopK(2), RelaxedTopK(3))),
    ("cifar10_convsmall", "nets/cifar10/eran/convSmallRELU__Point.onnx",
     "cifar10/cifar10_test_first932.npz", 1 / 255, range(5),
     (RelaxedTopK(1), RelaxedTopK(2), RelaxedTopK(3),
      Affinity(((0, 1, 8, 9), (2, 3, 4, 5, 6, 7))))))
#: (name, network, MNIST test images): the five networks of `benchmarks/hard_rho.py`.
RHO_CASES = (("eran_3x100", "nets/mnist/eran/mnist_relu_3_100.onnx", range(5)),
             ("mnist_fc_256x2", "vnncomp/mnist_fc_2022/onnx/mnist-net_256x2.onnx", range(5)),
             ("wk17a", "nets/mnist/wk17a_linf0.1.onnx", range(5)),
             ("rsl18a", "nets/mnist/rsl18a_linf0.1.onnx", range(5)),
             ("eran_convsmall_diffai", "nets/mnist/eran/convSmallRELU__DiffAI.onnx", range(5)))


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
    s_lo = bounds.flat(SPEC_NODE)[0]
    mask = np.zeros(len(s_lo), dtype=bool)
    mask[groups[disjunct]] = True
    chain, root = as_chain(aug), root_bounds(aug, bounds)
    rows = []
    for name, change in VARIANTS.items():
        t0 = time.perf_counter()
        left, found = refute_disjuncts(chain, root, [mask], t0 + seconds,
                                       replace(ReluSplitOptions(), **change), start=s_lo)
        took = time.perf_counter() - t0
        rows.append({"variant": name, "instance": f"{onnx} {vnnlib} disjunct {disjunct}",
                     "refuted": 1 - len(left), "disjuncts": 1,
                     "domains": found["relu_domains"], "open": found["relu_open"],
                     "worst": found["relu_worst"], "seconds": round(took, 2),
                     "domains_per_s": round(found["relu_domains"] / took, 1)})
        print(rows[-1], flush=True)
    return rows


def certify_rows(seconds: float) -> list[dict]:
    """Per case, `milpverify.certify(net, x, r)` with the ReLU-splitting stage off and on
    (its default share), one right after the other."""
    data = np.load(SHARED / "mnist" / "mnist_test.npz")
    rows = []
    for name, path, radius, images in CERTIFY_CASES:
        net = milpverify.load_onnx(SHARED / path)
        for index in images:
            x = (data["images"][index] / 255.0).reshape(-1)
            row: dict = {"net": name, "image": index, "radius": radius}
            for variant, share in (("off", 0.0), ("on", RELU_SPLIT_SHARE)):
                t0 = time.perf_counter()
                cert = milpverify.certify(net, x, radius, time_limit_s=seconds,
                                          relu_split=share)
                row[f"{variant}_verdict"] = str(getattr(cert.verdict, "value", cert.verdict))
                row[f"{variant}_s"] = round(time.perf_counter() - t0, 2)
                row[f"{variant}_nodes"] = cert.stats.get("nodes", 0)
            row["relu_split_s"] = round(cert.timings.get("relu_split_s", 0.0), 2)
            row["relu_refuted"] = len(cert.stats.get("relu_refuted", []))
            rows.append(row)
            print(row, flush=True)
    return rows


def rho_rows(seconds: float, cases: tuple = RHO_CASES, K: int | None = None) -> list[dict]:
    """Per case, uncapped `milpverify.rho(net, x)` (with `K`: `rho_topk(net, x, K)`) with the
    stage off and on (its default share), one right after the other."""
    data = np.load(SHARED / "mnist" / "mnist_test.npz")
    rows = []
    for name, path, images in cases:
        net = milpverify.load_onnx(SHARED / path)
        for index in images:
            x = (data["images"][index] / 255.0).reshape(-1)
            row: dict = {"net": name, "image": index, **({} if K is None else {"K": K})}
            for variant, share in (("off", 0.0), ("on", RHO_SPLIT_SHARE)):
                t0 = time.perf_counter()
                found = (milpverify.rho(net, x, time_limit_s=seconds, relu_split=share)
                         if K is None else
                         rho_topk(net, x, K, time_limit_s=seconds, relu_split=share))
                row[f"{variant}_status"] = str(getattr(found.status, "value", found.status))
                row[f"{variant}_bracket"] = f"[{found.lower:.5f}, {found.upper:.5f}]"
                row[f"{variant}_s"] = round(time.perf_counter() - t0, 2)
            row["relu_split_s"] = round(found.timings.get("relu_split_s", 0.0), 2)
            row["on_lower_from"] = found.stats.get("lower_from", "")
            rows.append(row)
            print(row, flush=True)
    return rows


def relaxed_rows(seconds: float) -> list[dict]:
    """Per case, `certify_properties` with the stage off and on (its default share), one
    right after the other; the verdicts of all properties in one cell."""
    rows = []
    for name, path, data_path, radius, images, props in PROPERTY_CASES:
        net = milpverify.load_onnx(SHARED / path)
        data = np.load(SHARED / data_path)
        for index in images:
            x = data["images"][index].astype(np.float64).reshape(-1) / 255.0
            row: dict = {"net": name, "image": index, "radius": round(radius, 6),
                         "properties": " ".join(p.name.split(":")[0] + (
                             f":{p.K}" if isinstance(p, RelaxedTopK) else f":{p.semantics}")
                             for p in props)}
            for variant, share in (("off", 0.0), ("on", RELU_SPLIT_SHARE)):
                t0 = time.perf_counter()
                certs = certify_properties(net, x, props, radius, time_limit_s=seconds,
                                           relu_split=share)
                row[f"{variant}_verdicts"] = " ".join(_short(c.verdict) for c in certs)
                row[f"{variant}_s"] = round(time.perf_counter() - t0, 2)
            row["relu_split_s"] = round(certs[0].timings.get("relu_split_s", 0.0), 2)
            row["relu_refuted_pairs"] = len(certs[0].stats.get("relu_refuted_pairs", []))
            rows.append(row)
            print(row, flush=True)
    return rows


def _short(verdict: object) -> str:
    """"R" robust, "N" not robust, "?" unknown."""
    return {"robust": "R", "not_robust": "N"}.get(str(getattr(verdict, "value", verdict)), "?")


def _write(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _table(rows: list[dict]) -> list[str]:
    keys = list(rows[0])
    return ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys),
            *("| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows)]


def _read(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", default="tune,certify,rho,rho_topk,properties")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--tighten-s", type=float, default=60.0)
    ap.add_argument("--out", default=str(RESULTS / "relu_split"))
    ap.add_argument("--summarize-only", action="store_true",
                    help="only rebuild <out>.md from the CSVs")
    args = ap.parse_args()
    parts = set() if args.summarize_only else set(args.part.split(","))
    budget = {"budget_s": args.seconds}
    if "tune" in parts:
        _write(Path(f"{args.out}_tune.csv"),
               [{**r, **budget, "tighten_s": args.tighten_s} for r in tune(args.seconds,
                                                                           args.tighten_s)])
    if "certify" in parts:
        _write(Path(f"{args.out}_certify.csv"),
               [{**r, **budget} for r in certify_rows(args.seconds)])
    if "rho" in parts:
        _write(Path(f"{args.out}_rho.csv"), [{**r, **budget} for r in rho_rows(args.seconds)])
    if "rho_topk" in parts:
        _write(Path(f"{args.out}_rho_topk.csv"),
               [{**r, **budget} for r in rho_rows(args.seconds, RHO_CASES[:1], K=2)])
    if "properties" in parts:
        _write(Path(f"{args.out}_properties.csv"),
               [{**r, **budget} for r in relaxed_rows(args.seconds)])
    lines = ["# ReLU-phase branch and bound: settings, and certify and rho with and without it",
             "", machine(), "",
             ("Times are wall-clock on a shared machine (the machine line is from when this "
              "summary was written); the off and on runs of a case follow each other, so "
              "compare them row by row."), ""]
    tune_csv, certify_csv = Path(f"{args.out}_tune.csv"), Path(f"{args.out}_certify.csv")
    if tune_csv.exists():
        rows = _read(tune_csv)
        seconds, tighten = rows[0]["budget_s"], rows[0]["tighten_s"]
        lines += ["## Variants on one disjunct (`tune`)", "",
                  (f"Command: `python benchmarks/relu_split.py --part tune --seconds {seconds} "
                   f"--tighten-s {tighten}`. {seconds} s each, bounds: symbolic, 10 s of "
                   f"optimised slopes, {tighten} s of LP tightening."), "", *_table(rows), ""]
    if certify_csv.exists():
        rows = _read(certify_csv)
        seconds = rows[0]["budget_s"]
        on = [r for r in rows if r["on_verdict"] in ("robust", "not_robust")]
        off = [r for r in rows if r["off_verdict"] in ("robust", "not_robust")]
        lines += ["## Robust at r? `certify` with the ReLU-splitting stage off and on", "",
                  (f"Command: `python benchmarks/relu_split.py --part certify --seconds "
                   f"{seconds}`. {seconds} s each, off (`relu_split=0`: one MILP) then on "
                   f"(`relu_split={RELU_SPLIT_SHARE}`, the default: alpha-CROWN bounds, a "
                   f"first MILP with {FIRST_MILP_SHARE:.0%} of the time left, the splitting, "
                   "the LP-tightened bounds for the labels left, the last MILP) on the same "
                   "case."), "",
                  (f"Decided: off {len(off)}/{len(rows)}, on {len(on)}/{len(rows)}; total "
                   f"time off {sum(float(r['off_s']) for r in rows):.1f} s, on "
                   f"{sum(float(r['on_s']) for r in rows):.1f} s."), "", *_table(rows), ""]
    rho_csv = Path(f"{args.out}_rho.csv")
    if rho_csv.exists():
        rows = _read(rho_csv)
        seconds = rows[0]["budget_s"]
        count = {v: sum(r[f"{v}_status"] == "optimal" for r in rows) for v in ("off", "on")}
        lines += ["## Uncapped rho with the stage off and on", "",
                  (f"Command: `python benchmarks/relu_split.py --part rho --seconds {seconds}`. "
                   f"`milpverify.rho(net, x, time_limit_s={seconds})`, off (`relu_split=0`) then "
                   f"on (`relu_split={RHO_SPLIT_SHARE}`, the default: the MILPs stop that share "
                   "earlier; after a time-out `lower` is raised by bisecting the radius with "
                   "ReLU splitting) on the same case."), "",
                  (f"Optimal: off {count['off']}/{len(rows)}, on {count['on']}/{len(rows)}; "
                   f"total time off {sum(float(r['off_s']) for r in rows):.1f} s, on "
                   f"{sum(float(r['on_s']) for r in rows):.1f} s."), "", *_table(rows), ""]
    rho_topk_csv = Path(f"{args.out}_rho_topk.csv")
    if rho_topk_csv.exists():
        rows = _read(rho_topk_csv)
        seconds = rows[0]["budget_s"]
        lines += ["## Uncapped relaxed top-2 rho with the stage off and on", "",
                  (f"Command: `python benchmarks/relu_split.py --part rho_topk --seconds "
                   f"{seconds}`. `rho_topk(net, x, 2, time_limit_s={seconds})`, off "
                   f"(`relu_split=0`) then on (`relu_split={RHO_SPLIT_SHARE}`, the default: "
                   "after a time-out `lower` is raised by bisecting the radius, a radius "
                   "proven when ReLU splitting keeps some top-k set everywhere) on the same "
                   "image."), "", *_table(rows), ""]
    properties_csv = Path(f"{args.out}_properties.csv")
    if properties_csv.exists():
        rows = _read(properties_csv)
        seconds = rows[0]["budget_s"]
        decided = {v: sum(len(r[f"{v}_verdicts"].split()) - r[f"{v}_verdicts"].count("?")
                          for r in rows) for v in ("off", "on")}
        total = sum(len(r["off_verdicts"].split()) for r in rows)
        lines += ["## Relaxed properties: `certify_properties` with the stage off and on", "",
                  (f"Command: `python benchmarks/relu_split.py --part properties --seconds "
                   f"{seconds}`. {seconds} s per property, off (`relu_split=0`) then on "
                   f"(`relu_split={RELU_SPLIT_SHARE}`, the default: alpha-CROWN bounds, a first "
                   "MILP per property, the splitting one top-k set at a time, the tightened "
                   "bounds, the last MILPs) on the same case. Verdicts in the order of "
                   "`properties`: R robust, N not robust, ? unknown; `relu_refuted_pairs`: "
                   "pairs (i, j) the splitting proved can never swap; `relu_split_s`: the "
                   "splitting's seconds as the first property's certificate records them (0 "
                   "when that property was settled before the splitting began)."), "",
                  (f"Decided: off {decided['off']}/{total}, on {decided['on']}/{total}; total "
                   f"time off {sum(float(r['off_s']) for r in rows):.1f} s, on "
                   f"{sum(float(r['on_s']) for r in rows):.1f} s."), "", *_table(rows), ""]
    Path(f"{args.out}.md").write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {args.out}.md")


if __name__ == "__main__":
    main()
