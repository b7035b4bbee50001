"""The one witness check gives the answers of the three checks it replaced (misclassification,
relaxed top-K, VNN-LIB counterexample) on stored points of the bundled network: near-boundary
points along rays from x, random points of a small ball, and points on the domain's faces.

The expected values were recorded with the three separate checks (`witness_golden.npz`);
`RECORD=1 pytest tests/core/test_witness_golden.py` writes them again.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from milpverify.core.witness import check_witness
from milpverify.properties.query import check_property_witness
from milpverify.properties.spec import RelaxedTopK
from milpverify.runs.datasets import load_default
from milpverify.vnn.check import check_counterexample
from milpverify.vnn.spec import read_vnnlib

GOLDEN = Path(__file__).with_name("witness_golden.npz")


def _points(x: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    flat = x.reshape(-1)
    out = [flat]
    for scale in (0.02, 0.05, 0.1, 0.2):
        out += list(np.clip(flat + scale * rng.choice([-1.0, 1.0], (4, flat.size)), 0, 1))
    out += list(np.clip(flat + 0.3 * rng.uniform(-1, 1, (6, flat.size)), 0, 1))
    out += [np.zeros_like(flat), np.ones_like(flat), np.clip(flat - 1e-9, 0, 1)]
    return np.asarray(out)


def _spec(x: np.ndarray, label: int, eps: float, n_out: int) -> str:
    lo = np.clip(x - eps, 0, 1).astype(np.float32).astype(np.float64)
    hi = np.clip(x + eps, 0, 1).astype(np.float32).astype(np.float64)
    lines = [f"(declare-const X_{i} Real)" for i in range(x.size)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_out)]
    lines += [f"(assert (>= X_{i} {float(lo[i])!r}))\n(assert (<= X_{i} {float(hi[i])!r}))"
              for i in range(x.size)]
    ors = " ".join(f"(and (>= Y_{j} Y_{label}))" for j in range(n_out) if j != label)
    lines.append(f"(assert (or {ors}))")
    return "\n".join(lines) + "\n"


def _answers(tmp_path: Path) -> dict[str, np.ndarray]:
    net, images, labels = load_default()
    rows: dict[str, list[float]] = {k: [] for k in (
        "rho_ok", "rho_np", "rho_ort", "rho_adv", "rho_dist",
        "topk_ok", "topk_np", "topk_ort", "topk_adv",
        "vnn_ok", "vnn_np", "vnn_ort", "vnn_x")}
    for k in range(3):
        x, label = images[k], int(labels[k])
        path = tmp_path / f"spec{k}.vnnlib"
        path.write_text(_spec(x.reshape(-1), label, 0.2, net.num_classes))
        prop = read_vnnlib(path).properties[0]
        for p in _points(x, seed=k):
            c = check_witness(net, x, p, label=label)
            rows["rho_ok"].append(c.verified)
            rows["rho_np"].append(c.margin_numpy)
            rows["rho_ort"].append(c.margin_onnx)
            rows["rho_adv"].append(c.adversarial_label)
            rows["rho_dist"].append(c.distance)
            t = check_property_witness(net, x, p, RelaxedTopK(2))
            rows["topk_ok"].append(t.verified)
            rows["topk_np"].append(t.margin_numpy)
            rows["topk_ort"].append(t.margin_onnx)
            rows["topk_adv"].append(t.adversarial_label)
            v = check_counterexample(net, prop, p)
            rows["vnn_ok"].append(v.verified)
            rows["vnn_np"].append(v.margin_numpy)
            rows["vnn_ort"].append(v.margin_onnx)
            rows["vnn_x"].append(float(np.sum(np.asarray(v.witness if hasattr(v, "witness")
                                                        else v.x, dtype=np.float64))))
    return {k: np.asarray(v, dtype=np.float64) for k, v in rows.items()}


def test_one_check_answers_as_the_three_did(tmp_path):
    got = _answers(tmp_path)
    if os.environ.get("RECORD"):
        np.savez_compressed(GOLDEN, **got)
        pytest.skip("recorded")
    want = np.load(GOLDEN)
    assert got["rho_ok"].sum() > 0 and got["vnn_ok"].sum() > 0  # the points test both outcomes
    assert (1 - got["rho_ok"]).sum() > 0 and (1 - got["vnn_ok"]).sum() > 0
    for key in want.files:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
