"""Quiet means quiet: no solver banner on stdout, rejected witnesses counted (not warned
about), a short repr for results."""

from __future__ import annotations

import csv
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300, check=False)


def test_highs_banner_not_on_stdout(tmp_path):
    proc = _python("from milpverify.solve.highs import new_highs\n"
                   "h = new_highs(); print('after')\n", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "after\n"


def test_highs_banner_with_verbose(tmp_path):
    proc = _python("from milpverify.solve.highs import new_highs\nnew_highs(verbose=True)\n",
                   tmp_path)
    assert "HiGHS" in proc.stdout


def test_cli_rho_quiet_prints_only_its_summary(tmp_path):
    out = tmp_path / "r.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "milpverify", "rho", "default", "--indices", "1",
         "--eps-cap", "0.1", "--quiet", "--out", str(out)],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
        text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "HiGHS" not in proc.stdout
    assert len(proc.stdout.splitlines()) == 1, proc.stdout
    rows = list(csv.DictReader(out.open()))
    assert rows[0]["witness_rejections"].isdigit()


def test_result_repr_is_short():
    from milpverify import load_default, rho
    net, images, _ = load_default()
    r = rho(net, images[1], eps_cap=0.1, time_limit_s=30)
    assert r.witness is not None
    text = repr(r)
    assert len(text) < 800 and "<array 1x28x28>" in text and "status='optimal'" in text
    assert repr(r.lower) in text  # the bracket keeps full precision


def test_rejected_witnesses_log_at_debug(caplog):
    """A witness that fails its re-check is routine near ties: debug, not warning, whichever
    query it was checked against."""
    from milpverify.core.witness import check_witness
    from milpverify.properties.query import check_property_witness
    from milpverify.properties.spec import RelaxedTopK
    from milpverify.runs.datasets import load_default

    net, images, labels = load_default()
    x, label = images[0], int(labels[0])
    caplog.set_level(logging.DEBUG, logger="milpverify")
    assert not check_witness(net, x, x, label=label).verified
    assert not check_property_witness(net, x, x, RelaxedTopK(1)).verified
    levels = {r.levelno for r in caplog.records if "rejected" in r.getMessage()}
    assert levels == {logging.DEBUG}


def test_legacy_results_file_is_upgraded(tmp_path):
    """A results.csv without the witness_rejections column resumes (rows kept)."""
    from milpverify.runs.results_file import COLUMNS, LEGACY_COLUMNS, ResultsFile
    path = tmp_path / "results.csv"
    row = {c: "" for c in LEGACY_COLUMNS}
    row.update(index="3", label="1", pred="1", method="exact", lower="0.1", upper="0.2",
               status="time_limit", witness_verified="True", message="kept")
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, LEGACY_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerow(row)
    results = ResultsFile(path)
    results.close()
    assert results.rows[(3, "exact")]["message"] == "kept"
    assert path.read_text().splitlines()[0] == ",".join(COLUMNS)


def test_rho_stats_count_rejected_witnesses(monkeypatch):
    """`RhoResult.stats["witness_rejections"]` counts the candidates that failed the
    re-check during the call, as the runs' `witness_rejections` column does."""
    from milpverify import certify, load_default, rho
    from milpverify.core import witness

    net, images, _ = load_default()
    clean = rho(net, images[1], eps_cap=0.1, time_limit_s=30)
    assert isinstance(clean.stats["witness_rejections"], int)

    # Every re-check sees a negative margin: each check is a rejection (logged at debug
    # level only), so the count is the number of checks, and no witness survives.
    calls = []

    def never_adversarial(label, target=None):
        def slack(y):
            calls.append(1)
            return -1.0, label
        return slack

    monkeypatch.setattr(witness, "misclassification_slack", never_adversarial)
    r = rho(net, images[1], eps_cap=0.1, time_limit_s=10)
    assert not r.witness_verified and calls
    assert r.stats["witness_rejections"] == len(calls) // 2  # numpy and onnxruntime
    calls.clear()
    c = certify(net, images[1], 0.05, time_limit_s=10)
    assert c.stats["witness_rejections"] == len(calls) // 2 > 0


def test_rejections_reach_enclosing_counts():
    from milpverify.core.witness import counting_rejections, note_rejection

    with counting_rejections() as outer:
        note_rejection()
        with counting_rejections() as inner:
            note_rejection()
    note_rejection()  # outside every block: counted nowhere
    assert (outer.count, inner.count) == (2, 1)


def test_cli_rho_verbose_shows_the_solver_log(tmp_path):
    """`--verbose` is the one way to see SCIP's log (stdout); without it stdout is one line."""
    proc = subprocess.run(
        [sys.executable, "-m", "milpverify", "rho", "default", "--indices", "1",
         "--eps-cap", "0.1", "--quiet", "--verbose", "--out", str(tmp_path / "r.csv")],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
        text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "SCIP Status" in proc.stdout and "presolving" in proc.stdout
    assert proc.stdout.splitlines()[-1].startswith("1 images (1 computed, 0 resumed)")


def test_cli_verbose_solver_log_of_workers_reaches_stdout(tmp_path):
    """Pool workers end without the interpreter's teardown (`executors._exit_now`); the
    solver log they buffered (C stdio, a file here) is flushed first: one SCIP summary per
    image, from each worker."""
    log = tmp_path / "stdout.txt"
    with log.open("w") as out:
        proc = subprocess.run(
            [sys.executable, "-m", "milpverify", "rho", "default", "--indices", "1,5",
             "--eps-cap", "0.1", "--quiet", "--verbose", "--workers", "2", "--out",
             str(tmp_path / "r.csv")],
            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=out,
            stderr=subprocess.PIPE, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    text = log.read_text()
    assert text.count("SCIP Status") >= 2, text[-2000:]
    assert text.splitlines()[-1].startswith("2 images (2 computed, 0 resumed): optimal 2")


@pytest.mark.parametrize("backend,marker", [("scip", "SCIP Status"), ("highs", "HiGHS")])
def test_rho_solver_log_only_when_verbose(backend, marker, capfd):
    from milpverify import load_default, rho
    net, images, _ = load_default()
    quiet = rho(net, images[1], eps_cap=0.1, time_limit_s=30, backend=backend)
    assert capfd.readouterr().out == ""
    loud = rho(net, images[1], eps_cap=0.1, time_limit_s=30, backend=backend, verbose=True)
    assert marker in capfd.readouterr().out
    assert (quiet.lower, quiet.upper) == pytest.approx((loud.lower, loud.upper), abs=1e-5)
