"""`--retry time_limit`: rows that stopped at their time limit are computed again (with a
larger --timeout if wanted); the old row stays until the new one is written."""

from __future__ import annotations

import csv
import json

from milpverify.cli import main


def _rows(path):
    return list(csv.DictReader(path.open()))


def test_retry_time_limit_with_a_larger_timeout(tmp_path, capsys):
    out = tmp_path / "r.csv"
    base = ["rho", "default", "--indices", "0", "--eps-cap", "0.1", "--quiet", "--out", str(out)]
    assert main([*base, "--timeout", "0.3"]) == 0
    first = {r["index"]: r["status"] for r in _rows(out)}
    assert "time_limit" in first.values(), first
    # Another timeout without --retry is a different run: refused, nothing changed.
    assert main([*base, "--timeout", "60"]) == 1
    assert "`time_limit_s` was 0.3, now 60.0" in capsys.readouterr().err
    assert main([*base, "--timeout", "60", "--retry", "time_limit"]) == 0
    lines = _rows(out)
    retried = [i for i, s in first.items() if s == "time_limit"]
    assert len(lines) == 1 + len(retried)  # old rows kept, the retries appended
    assert main([*base, "--timeout", "60"]) == 0  # resumes: the new limit is recorded
    assert "1 images (0 computed, 1 resumed): optimal 1" in capsys.readouterr().out
    options = json.loads((tmp_path / "r.run.json").read_text())["options"]
    assert options["time_limit_s"] == 60.0


def test_retry_names_known_statuses(tmp_path, capsys):
    assert main(["rho", "default", "--indices", "0", "--retry", "optimal",
                 "--out", str(tmp_path / "r.csv")]) == 1
    assert "`retry` must name statuses among time_limit, error, not_found" in \
        capsys.readouterr().err
