"""Boxes per second: batched chain bounds (`milpverify.bounds.box_bounds.chain_bounds`) against the
per-box symbolic pass (`symbolic_bounds`), on the spec networks of the 2022 control benchmarks.

For each network: sub-boxes of the first instance's box (each side 1/8 of the box, random
position), bounded by each method in the same process, one after the other, the fastest of 3
repeats counted: the per-box pass on 40 boxes, the batched one on 1024 boxes in batches of
16 to 1024. Both give the
same bounds (up to rounding slack, checked); the table is the cost. Writes
`benchmarks/results/box_bounds_speed.md`.

Usage::

    python benchmarks/box_bounds_speed.py
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy is imported

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from _common import machine  # noqa: E402

from milpverify.bounds import symbolic_bounds  # noqa: E402
from milpverify.bounds.box_bounds import as_chain, chain_bounds  # noqa: E402
from milpverify.frontends.onnx import load_onnx  # noqa: E402
from milpverify.vnn.check import property_rows  # noqa: E402
from milpverify.vnn.decide import SPEC_NODE, spec_network  # noqa: E402
from milpverify.vnn.spec import read_vnnlib  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "vnncomp"
CASES = [("reach_prob_density_2022", "vdp", "vdp_0"), ("reach_prob_density_2022", "gcas", "gcas_0"),
         ("reach_prob_density_2022", "robot", "robot_0"),
         ("rl_benchmarks_2022", "cartpole", "cartpole_case_safe_14"),
         ("rl_benchmarks_2022", "dubinsrejoin", "dubinsrejoin_case_safe_0")]
BATCHES = (16, 64, 256, 1024)
TOTAL = 1024
PER_BOX = 40
REPEATS = 3


def best_time(run, repeats: int = REPEATS) -> float:
    """The fastest of `repeats` timed calls (the machine is shared: the minimum is the
    least disturbed)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return min(times)


def measure(folder: str, net_name: str, spec: str, rng: np.random.Generator) -> str:
    """One table row: per-box symbolic boxes/s, then batched boxes/s per batch size."""
    net = load_onnx(DATA / folder / "onnx" / f"{net_name}.onnx")
    prop = read_vnnlib(DATA / folder / "vnnlib" / f"{spec}.vnnlib").properties[0]
    a, b, _ = property_rows(prop)
    aug = spec_network(net, a, b)
    chain = as_chain(aug)
    width = (prop.input_upper - prop.input_lower) / 8
    lo = rng.uniform(prop.input_lower, prop.input_upper - width, size=(TOTAL, width.size))
    hi = lo + width
    ref = [symbolic_bounds(aug, lo[k], hi[k]).flat(SPEC_NODE)[0] for k in range(PER_BOX)]
    per_box = PER_BOX / best_time(lambda: [symbolic_bounds(aug, lo[k], hi[k])
                                           for k in range(PER_BOX)])
    rates = []
    # The batched pass runs CROWN only on rows interval bounds leave unstable, so it can be
    # looser than the per-box pass (never unsound: tests/vnn/test_input_split.py samples
    # points); the table reports by how much.
    looser = float(np.max(np.array(ref) - chain_bounds(chain, lo[:PER_BOX], hi[:PER_BOX]).lower))
    for size in BATCHES:
        rates.append(TOTAL / best_time(lambda: [chain_bounds(chain, lo[k:k + size],
                                                             hi[k:k + size])
                                                for k in range(0, TOTAL, size)]))
    sizes = "-".join(str(net.op(n).size) for n in net.order if n in net.graph
                     and type(net.op(n)).__name__ in ("Input", "Affine"))
    return (f"| {net_name} ({sizes}) | {per_box:.0f} | "
            + " | ".join(f"{r:.0f}" for r in rates) + f" | {max(looser, 0.0):.2g} |")


def main() -> int:
    rng = np.random.default_rng(0)
    rows = [measure(*case, rng) for case in CASES]
    lines = ["# Boxes per second: batched chain bounds against per-box symbolic bounds", "",
             f"- {machine()}",
             "- boxes: sides 1/8 of the instance's box at random positions; one thread; the two "
             "methods run one after the other in one process, fastest of 3 repeats; per-box symbolic on 40 boxes, batched on 1024 in batches of the size given (the machine is shared, so "
             "absolute rates vary with its load; the ratio is the point)", "",
             "| network | per-box symbolic | " + " | ".join(f"batched, {s} boxes" for s in BATCHES)
             + " | batched lower bound below per-box, max over 40 boxes |",
             "|---|---|" + "---|" * (len(BATCHES) + 1), *rows, ""]
    out = REPO / "benchmarks" / "results" / "box_bounds_speed.md"
    out.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
