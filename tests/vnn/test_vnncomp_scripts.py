"""The VNN-COMP entry scripts (`milpverify/vnn/vnncomp_scripts/`), run as the competition runs them.

A tiny 2-3-2 ReLU network and two specs over [0, 1]^2: one that a point violates (the result
file must say `sat` with a counterexample that really violates it), one that no point can
(`unsat`). The scripts run under bash with `MILPVERIFY_PYTHON` set to this interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import make_onnx, node

import milpverify
from milpverify.vnn.results import parse_result

SCRIPTS = Path(milpverify.__file__).parent / "vnn" / "vnncomp_scripts"
W1 = np.array([[1.0, -1.0], [0.5, 1.0], [-1.0, 0.5]])
B1 = np.array([0.0, -0.2, 0.3])
W2 = np.array([[1.0, 1.0, -1.0], [-1.0, 0.5, 1.0]])
B2 = np.array([0.1, 0.0])
SPEC = """(declare-const X_0 Real)
(declare-const X_1 Real)
(declare-const Y_0 Real)
(declare-const Y_1 Real)
(assert (>= X_0 0.0))
(assert (<= X_0 1.0))
(assert (>= X_1 0.0))
(assert (<= X_1 1.0))
(assert (>= Y_0 {threshold}))
"""


def forward(x: np.ndarray) -> np.ndarray:
    return W2 @ np.maximum(W1 @ x + B1, 0.0) + B2


@pytest.fixture(scope="module")
def instance(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("vnncomp")
    model = make_onnx([node("Gemm", ["x", "W1", "B1"], "h", transB=1), node("Relu", ["h"], "r"),
                       node("Gemm", ["r", "W2", "B2"], "y", transB=1)],
                      {"W1": W1, "B1": B1, "W2": W2, "B2": B2}, [("x", (1, 2))], [("y", (1, 2))])
    onnx.save(model, folder / "net.onnx")
    grid = np.stack(np.meshgrid(np.linspace(0, 1, 201), np.linspace(0, 1, 201))).reshape(2, -1).T
    best = max(forward(x)[0] for x in grid)
    (folder / "sat.vnnlib").write_text(SPEC.format(threshold=best - 0.05))
    (folder / "unsat.vnnlib").write_text(SPEC.format(threshold=best + 10.0))
    return folder


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MILPVERIFY_PYTHON": sys.executable}
    return subprocess.run(["bash", str(SCRIPTS / script), *args], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.mark.parametrize("spec, expected", [("sat.vnnlib", "sat"), ("unsat.vnnlib", "unsat")])
def test_prepare_then_run_writes_the_competition_result(instance: Path, spec: str,
                                                        expected: str) -> None:
    onnx_path, spec_path = str(instance / "net.onnx"), str(instance / spec)
    prepared = run("prepare_instance.sh", "v1", "test", onnx_path, spec_path)
    assert prepared.returncode == 0, prepared.stderr
    result = instance / f"{spec}.result"
    ran = run("run_instance.sh", "v1", "test", onnx_path, spec_path, str(result), "30")
    assert ran.returncode == 0, ran.stderr
    answer, x, y = parse_result(result)
    assert answer == expected
    if expected == "sat":
        threshold = float((instance / spec).read_text().split(">= Y_0 ")[1].split(")")[0])
        assert np.all((0.0 <= x) & (x <= 1.0))
        assert forward(x.astype(np.float64))[0] >= threshold
        np.testing.assert_allclose(y, forward(x.astype(np.float64)), atol=1e-5)


def test_prepare_rejects_a_spec_that_does_not_fit_the_network(instance: Path) -> None:
    bad = instance / "three_inputs.vnnlib"
    bad.write_text("(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const X_2 Real)\n"
                   "(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
                   + "".join(f"(assert (>= X_{i} 0))\n(assert (<= X_{i} 1))\n" for i in range(3))
                   + "(assert (>= Y_0 0))\n")
    prepared = run("prepare_instance.sh", "v1", "test", str(instance / "net.onnx"), str(bad))
    assert prepared.returncode == 1
    assert prepared.stderr.startswith("milpverify: error: the spec declares 3 inputs")
    assert "Traceback" not in prepared.stderr


@pytest.mark.parametrize("script, args", [
    ("run_instance.sh", ("v2", "c", "a.onnx", "b.vnnlib", "r.txt", "5")),
    ("run_instance.sh", ("v1", "c", "a.onnx")),
    ("prepare_instance.sh", ("v1",)),
    ("install_tool.sh", ("v9",)),
])
def test_wrong_arguments_are_one_clear_line(script: str, args: tuple[str, ...]) -> None:
    done = run(script, *args)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and script in done.stderr
