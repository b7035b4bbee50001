"""Relaxed top-K and affinity robustness next to plain robustness (Leino & Fredrikson 2021).

For CIFAR-10 ConvSmall (ERAN, "Point" training) and MNIST WK17a, the first N test images:
`milpverify.properties.certify_properties` decides, at each eps, RTK-1 (plain
robustness), RTK-2, RTK-3 and, on CIFAR-10, affinity robustness for the groups
vehicles {0 airplane, 1 automobile, 8 ship, 9 truck} / animals {2..7} (both readings:
"subset", a top-k set inside a group survives; "full", the whole group is the top-|S| set).
Every verdict is proven: "robust" by bounds or an infeasible MILP (or implied by a stronger
property's proof), "not_robust" by a witness re-checked in numpy and onnxruntime; time-outs
are "unknown" and counted separately.

    python benchmarks/relaxed_robustness.py [--cifar-n 30] [--mnist-n 30]
        [--cifar-eps 0.5/255 1/255] [--mnist-eps 0.1] [--time-limit-s 12] [--workers 2]
        [--rerun]
    python benchmarks/relaxed_robustness.py --encodings 20     # "pairs" vs "select" study

One CSV row per (net, image, property) is appended as soon as an image is done, so a rerun
resumes; the markdown summary (machine, versions, options, tables) is rewritten each run.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from _common import machine  # noqa: E402

import milpverify  # noqa: E402
from milpverify.core.decide import SCIP_DEFAULTS
from milpverify.properties.certify import certify_properties
from milpverify.properties.encoding import build_property_problem
from milpverify.properties.pairs import plan_pairs, property_bounds
from milpverify.properties.query import topk_query
from milpverify.properties.spec import Affinity, RelaxedTopK
from milpverify.solve import get_backend  # noqa: E402
from milpverify.solve.base import SolveOptions  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
GROUPS = ((0, 1, 8, 9), (2, 3, 4, 5, 6, 7))
NETS = {
    "cifar10": ("nets/cifar10/eran/convSmallRELU__Point.onnx", "cifar10/cifar10_test_first932.npz"),
    "mnist": ("nets/mnist/wk17a_linf0.1.onnx", "mnist/mnist_test.npz"),
}
FIELDS = ["net", "image", "label", "pred", "eps", "property", "certifying_ks", "verdict",
          "implied_by", "witness_verified", "adversarial_label", "message", "attack_s",
          "bounds_s", "solve_s", "point_s", "unstable_relus", "property_binaries",
          "time_limit_s"]

#: Versions recorded in the summary.
PACKAGES = ("milpverify", "pyscipopt", "numpy", "scipy", "onnxruntime")


def properties(net_name: str) -> list[Any]:
    props: list[Any] = [RelaxedTopK(1), RelaxedTopK(2), RelaxedTopK(3)]
    if net_name == "cifar10":
        props += [Affinity(GROUPS, "subset"), Affinity(GROUPS, "full")]
    return props


def short_name(prop: Any) -> str:
    return prop.name if isinstance(prop, RelaxedTopK) else f"affinity:{prop.semantics}"


# ---------------------------------------------------------------------------- workers
_CACHE: dict[str, tuple[milpverify.Network, np.ndarray, np.ndarray]] = {}


def _load(net_name: str) -> tuple[milpverify.Network, np.ndarray, np.ndarray]:
    if net_name not in _CACHE:
        model, data = NETS[net_name]
        arrays = np.load(SHARED / data)
        _CACHE[net_name] = (milpverify.load_onnx(SHARED / model), arrays["images"],
                            arrays["labels"])
    return _CACHE[net_name]


def certify_image(net_name: str, index: int, eps: float, time_limit_s: float
                  ) -> list[dict[str, Any]]:
    """All properties of one image (a worker task); one row per property."""
    logging.disable(logging.WARNING)  # witness rejections are counted, not printed
    net, images, labels = _load(net_name)
    x = images[index].astype(np.float32).astype(np.float64) / 255.0
    props = properties(net_name)
    start = time.perf_counter()
    certs = certify_properties(net, x, props, eps, time_limit_s=time_limit_s)
    point_s = time.perf_counter() - start
    pred = int(np.argmax(net.forward(x)[0]))
    rows = []
    for prop, cert in zip(props, certs):
        rows.append({
            "net": net_name, "image": index, "label": int(labels[index]), "pred": pred,
            "eps": eps, "property": short_name(prop),
            "certifying_ks": " ".join(map(str, cert.stats.get("certifying_ks", []))),
            "verdict": str(cert.verdict), "implied_by": cert.stats.get("implied_by", ""),
            "witness_verified": cert.witness_verified,
            "adversarial_label": "" if cert.adversarial_label is None else cert.adversarial_label,
            "message": cert.message,
            "attack_s": round(cert.timings.get("attack_s", 0.0), 3),
            "bounds_s": round(cert.timings.get("bounds_s", 0.0), 3),
            "solve_s": round(cert.timings.get("solve_s", 0.0), 3),
            "point_s": round(point_s, 3),
            "unstable_relus": cert.stats.get("unstable_relus", ""),
            "property_binaries": cert.stats.get("property_binaries", ""),
            "time_limit_s": time_limit_s,
        })
    return rows


# ---------------------------------------------------------------------------- main study
def number(text: str) -> float:
    """`"0.5/255"` or `"0.1"` as a float."""
    num, _, den = text.partition("/")
    return float(num) / (float(den) if den else 1.0)


def run(args: argparse.Namespace, csv_path: Path) -> list[dict[str, Any]]:
    """Certify every (net, eps, image) not yet in the CSV; return all rows of this config."""
    radii = {"cifar10": [number(e) for e in args.cifar_eps],
             "mnist": [number(e) for e in args.mnist_eps]}
    counts = {"cifar10": args.cifar_n, "mnist": args.mnist_n}
    wanted = {(name, eps, i) for name in radii for eps in radii[name]
              for i in range(counts[name])}
    rows: list[dict[str, Any]] = []
    if csv_path.exists() and not args.rerun:
        with csv_path.open() as fh:
            rows = [r for r in csv.DictReader(fh)
                    if (r["net"], float(r["eps"]), int(r["image"])) in wanted]
    done = {(r["net"], float(r["eps"]), int(r["image"])) for r in rows}
    tasks = sorted(wanted - done, key=lambda t: (t[0], t[1], t[2]))
    fresh = not csv_path.exists() or args.rerun
    with csv_path.open("w" if fresh else "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        if fresh:
            writer.writeheader()
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            futures = {pool.submit(certify_image, name, i, eps, args.time_limit_s):
                       (name, eps, i) for name, eps, i in tasks}
            for future in as_completed(futures):
                got = future.result()
                writer.writerows(got)
                fh.flush()
                rows.extend(got)
                name, eps, i = futures[future]
                print(f"{name} eps {eps:.5g} {i:3d}: " + "  ".join(
                    f"{r['property']}={r['verdict']}" for r in got), flush=True)
    return rows


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per net, eps and property: robust / not robust / unknown counts and the robust share."""
    out = []
    for name in ("cifar10", "mnist"):
        for eps in sorted({float(r["eps"]) for r in rows if r["net"] == name}):
            for prop in [short_name(p) for p in properties(name)]:
                sel = [r for r in rows if r["net"] == name and float(r["eps"]) == eps
                       and r["property"] == prop]
                if not sel:
                    continue
                n = len(sel)
                robust = sum(r["verdict"] == "robust" for r in sel)
                unknown = sum(r["verdict"] == "unknown" for r in sel)
                correct = sum(int(r["label"]) == int(r["pred"]) for r in sel)
                out.append({
                    "net": name, "eps": eps, "property": prop, "n": n,
                    "robust": robust, "not_robust": n - robust - unknown, "unknown": unknown,
                    "share": robust / n, "share_max": (robust + unknown) / n,
                    "accuracy": correct / n,
                    "by_bounds": sum(r["message"] == "proven by bounds alone" for r in sel),
                    "by_split": sum(r["message"] in ("proven by ReLU splitting",
                                                     "proven by bounds and ReLU splitting")
                                    for r in sel),
                    "by_milp": sum(r["message"] == "MILP infeasible" for r in sel),
                    "implied": sum(bool(r["implied_by"]) for r in sel),
                    "mean_point_s": float(np.mean([float(r["point_s"]) for r in sel])),
                })
    return out


# ---------------------------------------------------------------------------- encodings
def encoding_study(n_images: int, radii: list[float], time_limit_s: float
                   ) -> list[dict[str, Any]]:
    """RTK-3 on the embedded MLP 32-16: the same bounds and pair plan, both encodings.

    Per image and radius: the feasibility MILP "is there an x' in the eps-box whose top-1,
    top-2 and top-3 sets all changed?" (the step `certify_properties` and the descent of
    `rho_property` repeat), solved with each encoding, in alternating order.
    """
    logging.disable(logging.WARNING)
    net = milpverify.load_onnx(ROOT / "milpverify" / "data" / "mnist_mlp_32_16.onnx")
    images = np.load(SHARED / "mnist" / "mnist_test.npz")["images"]
    scip = get_backend("scip")
    out = []
    for index in range(n_images):
        x = images[index].astype(np.float64).reshape(-1) / 255.0
        query = topk_query(net, x, RelaxedTopK(3))
        for eps in radii:
            box = (np.maximum(0.0, x - eps), np.minimum(1.0, x + eps))
            bounds, bounds_out = property_bounds(net, box, "progressive", time_limit_s=10)
            plan = plan_pairs(query, bounds_out, -1e-7)
            if plan.impossible is not None:
                continue
            order = ("pairs", "select") if index % 2 == 0 else ("select", "pairs")
            for encoding in order:
                problem = build_property_problem(net, None, bounds, plan, box[0], box[1],
                                                 margin=-1e-7, encoding=encoding,
                                                 with_distance=False)
                options = SolveOptions(time_limit_s=time_limit_s, stop_at_first_feasible=True,
                                       solver_params=SCIP_DEFAULTS)
                t0 = time.perf_counter()
                result = scip.solve(problem.model, options)
                out.append({"image": index, "eps": eps, "encoding": encoding,
                            "status": result.status.value, "time_s": time.perf_counter() - t0,
                            "nodes": result.nodes, "property_binaries": len(problem.choice_vars),
                            "open_ks": len(plan.ks)})
            print(f"encodings image {index} eps {eps:g}: " + ", ".join(
                f"{r['encoding']} {r['status']} {r['time_s']:.2f}s ({r['property_binaries']} bin)"
                for r in out if r["image"] == index and r["eps"] == eps), flush=True)
    return out


# ---------------------------------------------------------------------------- report


def write_markdown(path: Path, table: list[dict[str, Any]], rows: list[dict[str, Any]],
                   args: argparse.Namespace, wall_s: float, load: tuple[str, str]) -> None:
    images = {(r["net"], float(r["eps"]), int(r["image"])): float(r["point_s"]) for r in rows}
    lines = [
        "# Relaxed top-K and affinity robustness (issue 9)",
        "",
        f"Machine: {machine(PACKAGES)}.",
        f"Load average at start / end: {load[0]} / {load[1]} (the host is shared; other "
        "jobs ran concurrently, so times are pessimistic).",
        f"Command: `python benchmarks/relaxed_robustness.py --cifar-n {args.cifar_n} "
        f"--mnist-n {args.mnist_n} --cifar-eps {' '.join(args.cifar_eps)} --mnist-eps "
        f"{' '.join(args.mnist_eps)} "
        f"--time-limit-s {args.time_limit_s} --workers {args.workers}`; wall time "
        f"{wall_s:.0f} s for this invocation (images already in the CSV are not re-run); "
        f"the {len(images)} images took {sum(images.values()):.0f} s of worker time in all "
        f"(wall time about that / {args.workers}).",
        "",
        "`certify_properties` per image, all properties at once (shared attack and bounds; "
        "bounds: symbolic with the pairwise differences y_j - y_i back-substituted; then, "
        "both nets being chains of affine maps and ReLUs, alpha-CROWN bounds, a short MILP "
        "per property and ReLU splitting on the pairs; then progressive LP within half the "
        f"limit and the last MILPs); {args.time_limit_s:g} s budget per property. "
        "Share = robust / n; `max` adds the time-outs (the true share lies in [share, max]).",
        "",
        "| net | eps | property | n | robust | not robust | unknown | share | max | "
        "by bounds | by splitting | by MILP | shared | s/image |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table:
        lines.append(
            f"| {r['net']} | {r['eps']:.5g} | {r['property']} | {r['n']} | {r['robust']} | "
            f"{r['not_robust']} | {r['unknown']} | {r['share']:.3f} | {r['share_max']:.3f} | "
            f"{r['by_bounds']} | {r['by_split']} | {r['by_milp']} | {r['implied']} | "
            f"{r['mean_point_s']:.1f} |")
    accuracy = {r["net"]: r["accuracy"] for r in table}
    lines += ["", "\"by bounds\": some certifying T_k provably never changes under the "
              "difference bounds; \"by splitting\": ReLU splitting ruled out every pair that "
              "could change some T_k (with the bounds); \"by MILP\": the feasibility MILP is infeasible; \"shared\": "
              "answer taken from another property of the same image (a proof for a subset "
              "of its certifying k's, or the same certifying k's at x); s/image: wall time of "
              "all properties of one image together."]
    lines += ["", "Clean top-1 accuracy on these images: " + ", ".join(
        f"{k} {v:.3f}" for k, v in accuracy.items()) + ".", ""]
    path.write_text("\n".join(lines) + "\n")


def encoding_markdown(enc: list[dict[str, Any]]) -> list[str]:
    lines = ["## Encodings of \"every top-k set changed\": pairs vs select", "",
             "RTK-3 feasibility MILPs on the embedded MLP 32-16 (MNIST test images), same "
             "bounds and pair plan for both; `pairs`: one binary per pair (i in T_k, j not in "
             "T_k), shared by every k it changes; `select`: per k one binary per insider and "
             "per outsider plus a threshold variable.", "",
             "| encoding | solved | total s | median s | mean property binaries |",
             "|---|---|---|---|---|"]
    for encoding in ("pairs", "select"):
        sel = [r for r in enc if r["encoding"] == encoding]
        if not sel:
            continue
        solved = sum(r["status"] != "time_limit" for r in sel)
        times = [r["time_s"] for r in sel]
        lines.append(f"| {encoding} | {solved}/{len(sel)} | {sum(times):.1f} | "
                     f"{float(np.median(times)):.2f} | "
                     f"{np.mean([r['property_binaries'] for r in sel]):.1f} |")
    keys = {(r["image"], r["eps"]) for r in enc}
    disagree = wins = 0
    for key in keys:
        pair = {r["encoding"]: r for r in enc if (r["image"], r["eps"]) == key}
        if len(pair) == 2 and "time_limit" not in (pair["pairs"]["status"],
                                                   pair["select"]["status"]):
            disagree += (pair["pairs"]["status"] == "infeasible") != \
                (pair["select"]["status"] == "infeasible")
            wins += pair["pairs"]["time_s"] < pair["select"]["time_s"]
    lines += ["", f"Instances: {len(keys)}; `pairs` faster on {wins}; feasible/infeasible "
              f"outcomes disagreeing between the encodings: {disagree}.", ""]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cifar-n", type=int, default=40)
    parser.add_argument("--mnist-n", type=int, default=40)
    parser.add_argument("--cifar-eps", nargs="+", default=["0.5/255", "1/255"],
                        help="one or more radii, e.g. 0.5/255 or 0.002")
    parser.add_argument("--mnist-eps", nargs="+", default=["0.1"])
    parser.add_argument("--time-limit-s", type=float, default=12.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rerun", action="store_true", help="ignore rows already in the CSV")
    parser.add_argument("--encodings", type=int, default=0, metavar="N",
                        help="run only the encoding study on N images")
    parser.add_argument("--encodings-eps", type=float, nargs="+", default=[0.025, 0.035])
    parser.add_argument("--out", type=Path, default=RESULTS / "relaxed_robustness")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    md_path = args.out.with_suffix(".md")
    start = time.perf_counter()
    load_start = " ".join(f"{v:.1f}" for v in os.getloadavg())
    if args.encodings:
        enc = encoding_study(args.encodings, args.encodings_eps, args.time_limit_s)
        text = md_path.read_text() if md_path.exists() else ""
        head = text.split("## Encodings")[0].rstrip("\n")
        md_path.write_text(head + "\n\n" + "\n".join(encoding_markdown(enc)) +
                           f"\nEncoding study: {args.encodings} images, eps "
                           f"{args.encodings_eps}, {args.time_limit_s:g} s per solve, "
                           f"{time.perf_counter() - start:.0f} s wall.\n")
        return
    rows = run(args, args.out.with_suffix(".csv"))
    table = summary(rows)
    previous = md_path.read_text() if md_path.exists() else ""
    write_markdown(md_path, table, rows, args, time.perf_counter() - start,
                   (load_start, " ".join(f"{v:.1f}" for v in os.getloadavg())))
    if "## Encodings" in previous:  # keep the encoding study of an earlier run
        with md_path.open("a") as fh:
            fh.write("\n## Encodings" + previous.split("## Encodings", 1)[1])
    for r in table:
        print(f"{r['net']:8s} {r['eps']:.5g} {r['property']:16s} robust {r['robust']:3d}  "
              f"not {r['not_robust']:3d}  unknown {r['unknown']:3d}  share {r['share']:.3f} "
              f"(max {r['share_max']:.3f})")


if __name__ == "__main__":
    main()
