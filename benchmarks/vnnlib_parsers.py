"""milpverify's VNN-LIB reader against the PyPI `vnnlib` package, on every shared spec.

For each `.vnnlib` file under `shared/data/vnncomp` (all VNN-LIB 1.0): milpverify on the file,
milpverify on the same spec rewritten in VNN-LIB 2.0 syntax, `vnnlib` 1.x (the maintainers'
VNN-LIB 2.0 parser) on the original and on the 2.0 rewrite (`vnnlib.compat.transform`), and
`vnnlib` 0.0.x (the VNN-LIB 1.0 parser, `vnnlib.compat.read_vnnlib_simple`) on the original.
"Identical" means the same input boxes and the same output polytopes (A, b), exactly.
The two `vnnlib` releases share a name, so each runs in a child process from its own folder:

    pip install --target /tmp/vnnlib2 "vnnlib>=1"      # VNN-LIB 2.0 parser
    pip install --target /tmp/vnnlib1 "vnnlib==0.0.1"  # VNN-LIB 1.0 parser
    python benchmarks/vnnlib_parsers.py --v2-package /tmp/vnnlib2 --v1-package /tmp/vnnlib1

Writes `benchmarks/results/vnnlib_parsers.md`.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def as_vnnlib2(text: str, n_inputs: int, n_outputs: int) -> str:
    """A VNN-LIB 1.0 spec in 2.0 syntax: X_i -> X[0, i], Y_j -> Y[0, j]."""
    body = re.sub(r"\(declare-const [XY]_\d+ Real\)", "", text)
    body = re.sub(r"\b([XY])_(\d+)\b", r"\1[0, \2]", body)
    return (f"(vnnlib-version <2.0>)\n(declare-network f\n  (declare-input X float32 [1, "
            f"{n_inputs}])\n  (declare-output Y float32 [1, {n_outputs}]))\n{body}")


def canonical(cases: list[tuple[list, list[tuple[list, list]]]]) -> str:
    """Cases (box, [(A, b), ...]) as one string: polytopes merged per box, order-free, -0.0 as 0."""
    per_box: dict[str, set[str]] = {}
    for box, polys in cases:
        key = json.dumps((np.asarray(box, dtype=float).reshape(-1, 2) + 0.0).tolist())
        per_box.setdefault(key, set()).update(
            json.dumps([(np.asarray(a, float) + 0.0).tolist(),
                        (np.asarray(b, float).reshape(-1) + 0.0).tolist()]) for a, b in polys)
    return json.dumps(sorted((k, sorted(v)) for k, v in per_box.items()))


def ours(files: list[Path]) -> dict[str, dict]:
    sys.path.insert(0, str(REPO))
    from milpverify.vnn.spec import read_vnnlib
    out = {}
    for f in files:
        t0 = time.perf_counter()
        spec = read_vnnlib(f)
        t1 = time.perf_counter()
        text2 = as_vnnlib2(f.read_text(), spec.n_inputs, spec.n_outputs)
        t2 = time.perf_counter()
        spec2 = read_vnnlib(text2)
        t3 = time.perf_counter()
        cases = [[np.stack([p.input_lower, p.input_upper], 1), [(c.A, c.b) for c in p.unsafe]]
                 for p in spec.properties]
        cases2 = [[np.stack([p.input_lower, p.input_upper], 1), [(c.A, c.b) for c in p.unsafe]]
                  for p in spec2.properties]
        out[f.name] = {"v1": canonical(cases), "v2": canonical(cases2), "s_v1": t1 - t0,
                       "s_v2": t3 - t2, "n": [spec.n_inputs, spec.n_outputs], "text2": text2}
    return out


def worker(kind: str, package: str, jobs: list[dict]) -> list[dict]:
    """Runs in a child: parse each job with the `vnnlib` release found in `package`."""
    sys.path.insert(0, package)
    warnings.simplefilter("ignore")
    import vnnlib
    results = []
    for job in jobs:
        t0 = time.perf_counter()
        try:
            if kind == "v2":
                import vnnlib.compat
                cases = vnnlib.compat.transform(vnnlib.parse_query_string(job["text"]))
                got = [[c.input_box, [(p.coeff_matrix, p.rhs) for p in c.output_constraints]]
                       for c in cases]
            else:
                from vnnlib.compat import read_vnnlib_simple
                got = read_vnnlib_simple(job["path"], *job["n"])
            results.append({"ok": canonical(got), "s": time.perf_counter() - t0})
        except Exception as exc:  # the package's own errors: report, do not stop
            results.append({"error": f"{type(exc).__name__}: {str(exc)[:100]}",
                            "s": time.perf_counter() - t0})
    return results


def run_worker(kind: str, package: str, jobs: list[dict]) -> list[dict]:
    done = subprocess.run([sys.executable, __file__, "--worker", kind, package],
                          input=json.dumps(jobs), capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def compare(name: str, mine: dict, results: list[dict], key: str) -> tuple[str, float, str]:
    same = sum(r.get("ok") == mine[f][key] for f, r in zip(mine, results))
    errors = [r["error"] for r in results if "error" in r]
    seconds = sum(r["s"] for r in results)
    first = f"; first error: `{errors[0]}`" if errors else ""
    return (f"{same}/{len(results)} identical, {len(errors)} rejected{first}", seconds, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--v2-package", help="folder holding vnnlib>=1 (VNN-LIB 2.0 parser)")
    parser.add_argument("--v1-package", help="folder holding vnnlib 0.0.x (VNN-LIB 1.0 parser)")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path,
                        default=REPO / "benchmarks" / "results" / "vnnlib_parsers.md")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], json.loads(sys.stdin.read()))))
        return
    files = sorted(SHARED.glob("vnncomp/*/*/*.vnnlib")) + sorted(SHARED.glob("vnncomp/*/*.vnnlib"))
    mine = ours(files)
    rows = [(f"{len(files)}/{len(files)} (reference)", sum(m["s_v1"] for m in mine.values()),
             "milpverify, VNN-LIB 1.0 files"),
            (f"{sum(m['v1'] == m['v2'] for m in mine.values())}/{len(files)} identical",
             sum(m["s_v2"] for m in mine.values()), "milpverify, the same specs in 2.0 syntax")]
    if args.v2_package:
        rows.append(compare("`vnnlib` 1.x, VNN-LIB 1.0 files", mine, run_worker(
            "v2", args.v2_package, [{"text": f.read_text()} for f in files]), "v1"))
        rows.append(compare("`vnnlib` 1.x, the same specs in 2.0 syntax", mine, run_worker(
            "v2", args.v2_package, [{"text": m["text2"]} for m in mine.values()]), "v1"))
    if args.v1_package:
        rows.append(compare("`vnnlib` 0.0.x, VNN-LIB 1.0 files", mine, run_worker(
            "v1", args.v1_package, [{"path": str(f), "n": mine[f.name]["n"]} for f in files]),
            "v1"))
    lines = ["# VNN-LIB readers on every shared spec", "",
             f"{len(files)} specs under `shared/data/vnncomp` (all VNN-LIB 1.0). Python "
             f"{platform.python_version()}, {platform.machine()}.", "",
             f"Command: `python benchmarks/vnnlib_parsers.py{' --v2-package DIR' if args.v2_package else ''}"
             f"{' --v1-package DIR' if args.v1_package else ''}`", "",
             "| reader | result against milpverify on the 1.0 files | total parse s |",
             "|---|---|---:|"]
    lines += [f"| {name} | {result} | {seconds:.2f} |" for result, seconds, name in rows]
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
