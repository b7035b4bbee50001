"""Forward check of every shared network: milpverify's float64 `Network.forward` vs onnxruntime.

For each ONNX file under `shared/data/nets` and `shared/data/vnncomp` (preprocessing from
`manifest.json`), on the first N test images (for the control networks without a data set,
`"dataset": null`, on N points of the input boxes of their VNN-LIB specs): max |diff|, the relative difference
`max |diff| / max(1, max_j |logit_j|)` per sample (and per logit), the load time, and how many
of the N images each side classifies correctly. Writes a markdown table.

    python benchmarks/forward_check.py [--shared ../shared/data] [--n 100]
                                       [--out benchmarks/results/forward_check.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

# One BLAS thread: timings stay meaningful on a shared, busy host (set before numpy loads).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

import milpverify  # noqa: E402
from milpverify import load_onnx  # noqa: E402
from milpverify.vnn.spec import read_vnnlib

REPO = Path(__file__).resolve().parents[1]


def preprocess(images: np.ndarray, entry: dict) -> np.ndarray:
    """float32 `(images / pixel_divisor - mean[c]) / std[c]` as manifest.json prescribes."""
    x = images.astype(np.float32) / np.float32(entry["pixel_divisor"])
    mean = np.asarray(entry["mean"], dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(entry["std"], dtype=np.float32).reshape(1, -1, 1, 1)
    return ((x - mean) / std).astype(np.float32)


def box_points(shared: Path, rel_path: str, n: int, seed: int = 0) -> np.ndarray:
    """`n` points of the VNN-LIB input boxes paired with `rel_path` in its `instances.csv`."""
    bench, onnx_name = rel_path.split("/onnx/")
    rows = [line.split(",") for line in (shared / bench / "instances.csv").read_text().splitlines()]
    specs = sorted({r[1].strip() for r in rows if r[0].strip() == f"onnx/{onnx_name}"})
    boxes = [(p.input_lower, p.input_upper) for s in specs
             for p in read_vnnlib(shared / bench / s).properties]
    rng = np.random.default_rng(seed)
    points = [(lo + hi) / 2 for lo, hi in boxes]
    while len(points) < n:
        lo, hi = boxes[len(points) % len(boxes)]
        points.append(rng.uniform(lo, hi))
    return np.stack(points[:n]).astype(np.float32)


def check(shared: Path, entry: dict, data: dict | None, n: int) -> dict:
    """One table row for the network of manifest `entry` (`data` None: VNN-LIB box points)."""
    start = time.perf_counter()
    net = load_onnx(shared / entry["file"])
    load_s = time.perf_counter() - start
    if data is None:
        x, labels = box_points(shared, entry["file"], n), None
    else:
        labels = data["labels"][:n]
        x = preprocess(data["images"][:n], entry)
    session = ort.InferenceSession(net.origin.onnx_bytes, providers=["CPUExecutionProvider"])
    name, shape = net.origin.input_name, net.origin.input_shape
    # Most shared nets fix the batch size to 1: run onnxruntime image by image.
    expected = np.stack([session.run(None, {name: xi.reshape(shape)})[0].reshape(-1)
                         for xi in x]).astype(np.float64)
    start = time.perf_counter()
    got = net.forward(x.astype(np.float64))
    forward_s = time.perf_counter() - start
    diff = np.abs(got - expected)
    return {"net": entry["file"], "nodes": len(net.order), "max_abs_diff": float(diff.max()),
            "rel_diff_sample": float((diff / np.maximum(1.0, np.abs(expected).max(
                axis=1, keepdims=True))).max()),
            "rel_diff_logit": float((diff / np.maximum(1.0, np.abs(expected))).max()),
            "max_abs_logit": float(np.abs(expected).max()), "load_s": load_s,
            "forward_s": forward_s,
            "correct_ours": None if labels is None else int((got.argmax(axis=1) == labels).sum()),
            "correct_ort": None if labels is None else int((expected.argmax(axis=1) == labels).sum()),
            "same_argmax": int((got.argmax(axis=1) == expected.argmax(axis=1)).sum())}


def to_markdown(rows: list[dict], n: int, command: str) -> str:
    lines = [
        "# Forward check: milpverify `Network.forward` (float64) vs onnxruntime (float32)", "",
        f"First {n} test images of each network's data set, preprocessed as `manifest.json` says "
        f"(control networks without a data set: {n} points of their VNN-LIB input boxes; `correct` "
        "is then `-` and `same argmax` counts the points where both sides pick the same output). "
        "`rel (sample)` = max |diff| / max(1, max_j |logit_j|) over the sample's logits (the test "
        "threshold is 1e-5); `rel (logit)` divides by max(1, |logit|) of each logit. `load s` is "
        "`load_onnx` including simplification (the first row also pays for importing onnx).", "",
        f"milpverify {milpverify.__version__}, onnxruntime {ort.__version__}, numpy "
        f"{np.__version__}, Python {platform.python_version()}, {platform.machine()}.", "",
        f"Command: `{command}`", "",
        "| network | nodes | max abs diff | rel (sample) | rel (logit) | max abs logit | load s "
        "| forward s | correct ours / ort | same argmax |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        correct = "-" if r["correct_ours"] is None else f"{r['correct_ours']} / {r['correct_ort']}"
        lines.append(f"| `{r['net']}` | {r['nodes']} | {r['max_abs_diff']:.2e} | "
                     f"{r['rel_diff_sample']:.2e} | {r['rel_diff_logit']:.2e} | "
                     f"{r['max_abs_logit']:.1f} | {r['load_s']:.3f} | {r['forward_s']:.3f} | "
                     f"{correct} | {r['same_argmax']} |")
    worst = max(rows, key=lambda r: r["rel_diff_sample"])
    lines += ["", f"Worst relative difference: {worst['rel_diff_sample']:.2e} (`{worst['net']}`).",
              ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" /
                        "forward_check.md")
    args = parser.parse_args()
    manifest = json.loads((args.shared / "manifest.json").read_text(encoding="utf-8"))
    datasets = {}
    for key, spec in manifest["datasets"].items():
        with np.load(args.shared / spec["file"]) as data:
            datasets[key] = {"images": data["images"], "labels": data["labels"]}
    entries = {e["file"]: e for e in manifest["networks"]}
    files = sorted(str(p.relative_to(args.shared)) for d in ("nets", "vnncomp")
                   for p in (args.shared / d).rglob("*.onnx"))
    missing = [f for f in files if f not in entries]
    if missing:
        raise SystemExit(f"not in manifest.json: {missing}")
    rows = []
    for file in files:
        dataset = entries[file]["dataset"]
        row = check(args.shared, entries[file], datasets[dataset] if dataset else None, args.n)
        rows.append(row)
        print(f"{file:55s} diff {row['max_abs_diff']:.2e} rel {row['rel_diff_sample']:.2e} "
              f"(per logit {row['rel_diff_logit']:.2e}) load {row['load_s']:.3f} s")
    command = "python benchmarks/forward_check.py" + (f" --n {args.n}" if args.n != 100 else "")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(to_markdown(rows, args.n, command), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
