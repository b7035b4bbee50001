"""Input splitting alone (`split_search`, no other stage) with each split-dimension rule on a
few VNN-COMP 2022 `reach_prob_density` instances: answer, seconds and boxes bounded.

Writes `benchmarks/results/input_split_branching.md`.

Usage::

    python benchmarks/input_split_branching.py [--seconds 15]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy is imported

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _common import machine  # noqa: E402

from milpverify.bounds.box_bounds import as_chain  # noqa: E402
from milpverify.frontends.onnx import load_onnx  # noqa: E402
from milpverify.vnn.check import property_rows  # noqa: E402
from milpverify.vnn.decide import spec_network  # noqa: E402
from milpverify.vnn.input_split import SplitOptions, split_search  # noqa: E402
from milpverify.vnn.spec import read_vnnlib  # noqa: E402

FOLDER = REPO.parent / "shared" / "data" / "vnncomp" / "reach_prob_density_2022"
INSTANCES = ("vdp_0", "vdp_3", "vdp_6", "gcas_0", "gcas_5", "robot_3", "robot_4")
RULES = ("lookahead", "widest", "gradient")


def run(name: str, rule: str, seconds: float) -> tuple[str, float, int]:
    net = load_onnx(FOLDER / "onnx" / f"{name.split('_')[0]}.onnx")
    prop = read_vnnlib(FOLDER / "vnnlib" / f"{name}.vnnlib").properties[0]
    a, b, groups = property_rows(prop)
    chain = as_chain(spec_network(net, a, b))
    t0 = time.perf_counter()
    out = split_search(net, chain, prop, a, b, groups, list(range(len(groups))),
                       t0 + seconds, SplitOptions(branching=rule))
    return out.result, time.perf_counter() - t0, int(out.stats["split_boxes"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    with open(FOLDER / "results_vnncomp2022_consensus.csv", newline="") as fh:
        truth = {Path(r["vnnlib"]).stem: r["ground_truth"] for r in csv.DictReader(fh)}
    rows = []
    for name in INSTANCES:
        cells = []
        for rule in RULES:
            result, secs, boxes = run(name, rule, args.seconds)
            cells.append(f"{result} {secs:.1f} s, {boxes} boxes")
            print(name, rule, cells[-1], flush=True)
        rows.append(f"| {name} | {truth[name]} | " + " | ".join(cells) + " |")
    lines = ["# Input splitting alone: split-dimension rules", "",
             f"- {machine()}",
             f"- `split_search` only (no attack, MILP or other stage before it), "
             f"{args.seconds:g} s per run, one run at a time; `boxes` counts the boxes popped "
             "from the queue (lookahead also bounds 2 n halves per box to choose the side)",
             "- `lookahead`: the side whose halves' worse bound is best, among the sides at "
             "least 1/4 as wide as the widest; `widest`: the widest side relative to the "
             "root box; `gradient`: the largest |gradient of the worst row at the centre| x "
             "width", "",
             "| instance | truth | " + " | ".join(RULES) + " |",
             "|---|---|" + "---|" * len(RULES), *rows, ""]
    out = REPO / "benchmarks" / "results" / "input_split_branching.md"
    out.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
