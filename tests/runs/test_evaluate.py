"""`evaluate` runs: files written, resume after SIGKILL, option checks, 2 workers == 1, Ray.

The runs use the embedded MLP (`default:mnist_mlp_32_16`) with fast deterministic estimators
(seeded PGD with fewer steps, FGSM), so equal inputs give equal rows up to timing columns.
"""

from __future__ import annotations

import csv
import fcntl
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_DIR

from milpverify import InvalidInputError
from milpverify.runs import tasks
from milpverify.runs.datasets import embedded_net
from milpverify.runs.evaluate import evaluate
from milpverify.runs.results_file import COLUMNS, TIMING_COLUMNS

MODEL = "default:mnist_mlp_32_16"
OPTIONS = {"eps": 0.05, "indices": "0:6", "methods": "pgd,fgsm",
           "method_options": {"pgd": {"steps": 50, "restarts": 2}}}
N_ROWS = 12
REPO = REPO_DIR


def stable(rows):
    """Rows without the timing columns (the only ones that differ between equal runs)."""
    return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows]


def csv_lines(path: Path) -> list[str]:
    return path.read_text().splitlines()[1:]


def child_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run in this process (the baseline every other run must equal)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    return evaluate(MODEL, out=out, quiet=True, **OPTIONS)


def test_run_directory_contents(reference):
    out = reference.out
    assert {p.name for p in out.iterdir()} >= {
        "results.csv", "run.json", "summary.md", "rho_cdf.png", "adversarial_examples.png",
        "adversarial.npz", "witnesses"}
    # run.log exists only when something was logged; no file is left empty.
    assert all(p.stat().st_size > 0 for p in out.iterdir() if p.is_file())
    with open(out / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert tuple(table[0]) == COLUMNS
    assert [(int(r["index"]), r["method"]) for r in table] == [
        (i, m) for i in range(6) for m in ("pgd", "fgsm")]
    assert len(reference.rows) == N_ROWS and reference.computed == N_ROWS
    assert reference.skipped == 0

    meta = json.loads((out / "run.json").read_text())
    assert meta["options"]["eps"] == 0.05 and meta["options"]["methods"] == ["pgd", "fgsm"]
    assert meta["options"]["method_options"] == {"pgd": {"steps": 50, "restarts": 2}}
    assert meta["options"]["model"].startswith("sha256:")
    assert {"milpverify", "numpy", "pyscipopt", "torch"} <= set(meta["versions"])
    assert "scip" not in meta["versions"]  # no exact method: SCIP never asked
    assert meta["machine"]["cpu_count"] >= 1 and meta["machine"]["cpu_model"]
    assert meta["invocations"][0]["indices"] == "0:6"

    summary = (out / "summary.md").read_text()
    assert "| pgd | 6 |" in summary and "| fgsm | 6 |" in summary and "φ(ε)" in summary
    with np.load(out / "adversarial.npz") as adv:
        verified = [r for r in reference.rows if r["witness_verified"]]
        assert len(adv["index"]) == len(verified)
        assert adv["witness"].shape == (len(verified), 1, 28, 28)
        dist = np.abs(adv["witness"] - adv["original"]).reshape(len(verified), -1).max(axis=1)
        np.testing.assert_allclose(dist, adv["distance"], rtol=0, atol=1e-12)


def test_summary_uses_the_rows(reference):
    s = reference.summaries["pgd"]
    rho_hat = np.array([r["upper"] for r in reference.rows if r["method"] == "pgd"])
    assert s.phi.low == s.phi.high == np.mean(rho_hat <= 0.05)
    assert s.mu.low == pytest.approx(rho_hat[rho_hat <= 0.05].mean())
    assert s.statuses == {"upper_bound": 6}


def test_rerun_skips_finished_rows(reference):
    before = csv_lines(reference.out / "results.csv")
    again = evaluate(MODEL, out=reference.out, quiet=True, report=False, **OPTIONS)
    assert (again.computed, again.skipped) == (0, N_ROWS)
    assert again.rows == reference.rows
    assert csv_lines(reference.out / "results.csv") == before
    meta = json.loads((reference.out / "run.json").read_text())
    assert len(meta["invocations"]) == 2


@pytest.mark.parametrize("change, name", [({"eps": 0.06}, "eps"),
                                          ({"methods": "pgd"}, "methods"),
                                          ({"pixel_divisor": 260.0}, "pixel_divisor")])
def test_resume_refuses_different_options(reference, change, name):
    with pytest.raises(InvalidInputError, match=f"`{name}` was"):
        evaluate(MODEL, out=reference.out, quiet=True, **{**OPTIONS, **change})


def _copy_run(reference, dest: Path) -> Path:
    dest.mkdir()
    for name in ("results.csv", "run.json"):
        shutil.copy(reference.out / name, dest / name)
    return dest


def test_truncated_last_line_is_dropped_and_recomputed(reference, tmp_path):
    out = _copy_run(reference, tmp_path / "run")
    lines = (out / "results.csv").read_text().splitlines(keepends=True)
    # Keep the header and 6 rows, then half of the 7th row without its newline.
    (out / "results.csv").write_text("".join(lines[:7]) + lines[7][: len(lines[7]) // 2])
    resumed = evaluate(MODEL, out=out, quiet=True, report=False, **OPTIONS)
    assert (resumed.computed, resumed.skipped) == (N_ROWS - 6, 6)
    assert stable(resumed.rows) == stable(reference.rows)
    rows = csv_lines(out / "results.csv")
    assert len(rows) == N_ROWS and rows[:6] == [ln.rstrip("\n") for ln in lines[1:7]]


def _wait_for_rows(path: Path, proc: subprocess.Popen, n: int, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if path.exists() and len(csv_lines(path)) >= n:
            break
        time.sleep(0.05)
    return len(csv_lines(path)) if path.exists() else 0


def test_sigkill_then_resume_equals_uninterrupted_run(reference, tmp_path):
    out = tmp_path / "run"
    script = (f"from milpverify.runs.evaluate import evaluate\n"
              f"evaluate({MODEL!r}, out={str(out)!r}, quiet=True, **{OPTIONS!r})\n")
    proc = subprocess.Popen([sys.executable, "-c", script], env=child_env(), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        written = _wait_for_rows(out / "results.csv", proc, 2, timeout_s=90)
        assert proc.poll() is None, "the run finished before it could be killed: " + \
            proc.stderr.read().decode()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL and written >= 2
    survived = csv_lines(out / "results.csv")
    resumed = evaluate(MODEL, out=out, quiet=True, report=False, **OPTIONS)
    assert resumed.skipped >= len(survived) - 1 >= 1  # at most a truncated last line is lost
    assert stable(resumed.rows) == stable(reference.rows)
    lines = csv_lines(out / "results.csv")
    keys = [tuple(line.split(",")[:4:3]) for line in lines]
    assert len(lines) == N_ROWS and len(set(keys)) == N_ROWS
    assert all(line in lines for line in survived if line.count(",") == len(COLUMNS) - 1)


def test_killed_mid_write_loses_only_that_row(reference, tmp_path):
    """The child dies half-way through writing its 3rd row (deterministic truncation)."""
    out = tmp_path / "run"
    script = textwrap.dedent(f"""
        import os, signal
        from milpverify.runs import evaluate as evaluation
        from milpverify.runs.results_file import ResultsFile
        original = ResultsFile.append
        calls = []
        def append(self, row):
            calls.append(row)
            if len(calls) == 3:
                self._file.write("ROW_PREFIX")
                self._file.flush(); os.fsync(self._file.fileno())
                os.kill(os.getpid(), signal.SIGKILL)
            original(self, row)
        ResultsFile.append = append
        evaluation.evaluate({MODEL!r}, out={str(out)!r}, eps=0.05, indices="0:6",
                            methods="fgsm", quiet=True)
    """).replace("ROW_PREFIX", "2,1,1,fgsm,0.0,0.05")
    proc = subprocess.run([sys.executable, "-c", script], env=child_env(), cwd=REPO,
                          capture_output=True, timeout=120, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    text = (out / "results.csv").read_text()
    assert not text.endswith("\n") and len(text.splitlines()) == 4  # header, 2 rows, partial
    resumed = evaluate(MODEL, out=out, eps=0.05, indices="0:6", methods="fgsm", quiet=True,
                       report=False)
    assert (resumed.computed, resumed.skipped) == (4, 2)
    fgsm_reference = [r for r in reference.rows if r["method"] == "fgsm"]
    assert stable(resumed.rows) == stable(fgsm_reference)
    assert len(csv_lines(out / "results.csv")) == 6


def test_two_workers_equal_one(reference, tmp_path):
    parallel = evaluate(MODEL, out=tmp_path / "w2", workers=2, quiet=True, report=False,
                        **OPTIONS)
    assert stable(parallel.rows) == stable(reference.rows)
    assert parallel.computed == N_ROWS


def _children() -> set[int]:
    """Process ids whose parent is this process (Linux /proc; empty elsewhere)."""
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # Field 4 is the parent id; the command name (field 2) may hold spaces.
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():
            children.add(int(stat.parent.name))
    return children


def test_ray_local_equals_one_worker(reference, tmp_path):
    """A local 2-CPU Ray cluster gives the rows of one worker, and is shut down after."""
    ray = pytest.importorskip("ray", reason="ray is optional (pip install 'milpverify[test]')")
    before = _children()
    result = evaluate(MODEL, out=tmp_path / "ray", ray="local", workers=2, quiet=True,
                      report=False, **OPTIONS)
    assert stable(result.rows) == stable(reference.rows)
    assert not ray.is_initialized()
    # ray.shutdown() stops the cluster's processes (GCS, raylet, workers) it started.
    deadline = time.monotonic() + 10
    while _children() - before and time.monotonic() < deadline:
        time.sleep(0.2)
    left = _children() - before
    assert not left, {pid: Path(f"/proc/{pid}/cmdline").read_bytes()[:80] for pid in left}


def test_exact_with_other_methods_adds_combined_summary(tmp_path):
    result = evaluate("default", out=tmp_path / "run", eps=0.02, indices="1,2",
                      methods="exact,fgsm", time_limit_s=20, quiet=True)
    exact = [r for r in result.rows if r["method"] == "exact"]
    assert [r["index"] for r in exact] == [1, 2]
    assert all(r["status"] in ("robust_at_cap", "optimal", "time_limit") for r in exact)
    assert set(result.summaries) == {"exact", "fgsm", "combined"}
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["options"]["eps_cap"] == 0.02 and meta["versions"]["scip"]
    for r in exact:
        assert r["lower"] <= r["upper"]
        if r["status"] == "robust_at_cap":
            assert r["lower"] == 0.02


def test_estimator_exception_becomes_an_error_row(tmp_path, monkeypatch):
    def broken(net, x, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(tasks, "method_function", lambda method, prop=None: (broken, {}))
    result = evaluate(MODEL, out=tmp_path / "run", eps=0.05, indices="0", methods="fgsm",
                      quiet=True)
    (row,) = result.rows
    assert (row["status"], row["lower"], row["upper"]) == ("error", 0.0, math.inf)
    assert row["message"] == "RuntimeError: boom"
    assert result.summaries["fgsm"].phi.low == 0.0 and result.summaries["fgsm"].phi.high == 1.0


def test_a_locked_run_directory_is_refused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    with open(out / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        with pytest.raises(InvalidInputError, match="Another milpverify run"):
            evaluate(MODEL, out=out, eps=0.05, indices="0", methods="fgsm", quiet=True)


@pytest.mark.parametrize("kwargs, message", [
    ({"eps": 0.0}, "`eps` must be a finite number > 0"),
    ({"eps": math.nan}, "`eps` must be a finite number > 0"),
    ({"methods": "lp,magic"}, "Unknown method.*'magic'"),
    ({"methods": "lp,lp"}, "lists a method twice"),
    ({"indices": "5:2"}, "selects no images"),
    ({"indices": "0:11"}, "out of range"),
    ({"time_limit_s": -1}, "`time_limit_s` must be"),
    ({"workers": 0}, "`workers` must be an integer >= 1"),
    ({"data": "missing.npz"}, "Data file not found"),
    ({"pixel_divisor": 1.0}, "outside the domain"),
    ({"method_options": {"fgsm": {"nonsense": 1}}}, r"method_options\['fgsm'\].*nonsense"),
    ({"method_options": {"pgd": {"steps": 1}}}, "not in `methods`"),
])
def test_invalid_options(tmp_path, kwargs, message):
    options = {"eps": 0.05, "indices": "0:2", "methods": "fgsm", **kwargs}
    with pytest.raises(InvalidInputError, match=message):
        evaluate(MODEL, out=tmp_path / "run", quiet=True, **options)
    assert not (tmp_path / "run").exists()  # validated before anything is written


def test_model_file_without_data_is_refused(tmp_path):
    model = embedded_net("mnist_mlp_32_16").path
    with pytest.raises(InvalidInputError, match="`data` is required"):
        evaluate(model, out=tmp_path / "run", eps=0.05, methods="fgsm")
