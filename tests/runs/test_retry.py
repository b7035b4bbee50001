"""`--retry time_limit`: rows that stopped at their time limit are computed again (with a
larger --timeout if wanted); the old row stays until the new one is written."""

from __future__ import annotations

import csv
import dataclasses
import json

from milpverify.cli import main
from milpverify.core.results import RhoStatus
from milpverify.runs import tasks


def _rows(path):
    return list(csv.DictReader(path.open()))


def _stopped_at_time_limit(monkeypatch):
    """Make the exact method report `time_limit` whatever the machine's speed.

    The real rho runs, then its status becomes `time_limit` and its proven `lower` is
    halved (still a proven bracket, as after a time-out): only the retry can make it optimal.
    """
    real = tasks.method_function

    def method_function(method, prop=None):
        fn, kwargs = real(method, prop)

        def stopped(*args, **kw):
            result = fn(*args, **kw)
            return dataclasses.replace(result, status=RhoStatus.TIME_LIMIT,
                                       lower=result.lower / 2)
        return stopped, kwargs

    monkeypatch.setattr(tasks, "method_function", method_function)


def test_retry_time_limit_with_a_larger_timeout(tmp_path, capsys, monkeypatch):
    out = tmp_path / "r.csv"
    base = ["rho", "default", "--indices", "1,5", "--eps-cap", "0.1", "--quiet", "--out",
            str(out)]
    with monkeypatch.context() as patch:
        _stopped_at_time_limit(patch)
        assert main([*base, "--timeout", "30"]) == 0
    first = {r["index"]: r for r in _rows(out)}
    assert {r["status"] for r in first.values()} == {"time_limit"}, first
    capsys.readouterr()
    # Another timeout without --retry is a different run: refused, nothing changed.
    assert main([*base, "--timeout", "60"]) == 1
    assert "`time_limit_s` was 30.0, now 60.0" in capsys.readouterr().err
    assert len(_rows(out)) == 2
    assert main([*base, "--timeout", "60", "--retry", "time_limit"]) == 0
    assert "2 images (2 computed, 0 resumed): optimal 2" in capsys.readouterr().out
    lines = _rows(out)
    assert len(lines) == 4  # old rows kept, the retries appended
    assert [r["status"] for r in lines[2:]] == ["optimal", "optimal"]
    for row in lines[2:]:  # the retried bracket is at least as tight as the old one
        old = first[row["index"]]
        assert float(row["lower"]) >= float(old["lower"])
        assert float(row["upper"]) <= float(old["upper"])
    assert main([*base, "--timeout", "60"]) == 0  # resumes: the new limit is recorded
    assert "2 images (0 computed, 2 resumed): optimal 2" in capsys.readouterr().out
    options = json.loads((tmp_path / "r.run.json").read_text())["options"]
    assert options["time_limit_s"] == 60.0


def test_retry_names_known_statuses(tmp_path, capsys):
    assert main(["rho", "default", "--indices", "0", "--retry", "optimal",
                 "--out", str(tmp_path / "r.csv")]) == 1
    assert "`retry` must name statuses among time_limit, error, not_found" in \
        capsys.readouterr().err
