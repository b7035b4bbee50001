"""The CLI when the world fails: unwritable output, a full disk or standard output, a
closed pipe, Ctrl-C. Never a traceback; one `milpverify: error:` line naming the path."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
# Ctrl-C needs Python's SIGINT handler even when this test runs in a background job (where
# the shell sets SIGINT to "ignore" and children inherit it).
CLI = [sys.executable, "-c", "import signal, sys; "
       "signal.signal(signal.SIGINT, signal.default_int_handler); "
       "from milpverify.cli import main; sys.exit(main(sys.argv[1:]))"]


def _cli(*args: str, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=300, check=False, **kwargs)


def _read_only_dir(tmp_path: Path) -> Path:
    """A folder this process cannot write (root ignores permission bits: use /sys then)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    for candidate in (folder, Path("/sys")):
        try:
            (candidate / "probe").open("w").close()
        except OSError:
            return candidate
    pytest.skip("no read-only folder available")


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("milpverify: error: "), proc.stderr
    return lines[0]


def test_read_only_out(tmp_path):
    folder = _read_only_dir(tmp_path)
    line = _one_error_line(_cli("rho", "default", "--indices", "1", "--eps-cap", "0.1",
                                "--quiet", "--out", str(folder / "r.csv"), cwd=tmp_path))
    assert str(folder) in line and ("Permission denied" in line or "Read-only" in line)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_full_disk_out(tmp_path):
    line = _one_error_line(_cli("export", "default", "--indices", "1", "--eps", "0.05",
                                "--format", "lp", "--out", "/dev/full", cwd=tmp_path))
    assert "'/dev/full'" in line and "No space left on device" in line


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_full_standard_output(tmp_path):
    with open("/dev/full", "w") as full:
        proc = subprocess.run([*CLI, "info", "default"], cwd=tmp_path, env=ENV,
                              stdout=full, stderr=subprocess.PIPE, text=True, timeout=300,
                              check=False)
    line = _one_error_line(proc)
    assert "standard output" in line and "No space left on device" in line


def test_closed_pipe_is_quiet(tmp_path):
    """`milpverify info default | head -1`: the reader is gone before the output is."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    proc = subprocess.run([*CLI, "info", "default", "--json"], cwd=tmp_path, env=ENV,
                          stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=300,
                          check=False)
    os.close(write_end)
    assert proc.stderr == ""
    assert proc.returncode == 141


def test_ctrl_c_keeps_rows_and_says_how_to_resume(tmp_path):
    out = tmp_path / "r.csv"
    proc = subprocess.Popen([*CLI, "rho", "default", "--indices", "0:10", "--eps-cap", "0.1",
                             "--quiet", "--out", str(out)], cwd=tmp_path, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and len(out.read_text().splitlines()) >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == (
        f"milpverify: interrupted; the finished rows are kept in {str(out)!r}: run the same "
        "command again to resume")
    rows = list(csv.DictReader(out.open()))
    assert 1 <= len(rows) < 10 and all(r["status"] == "optimal" for r in rows)
