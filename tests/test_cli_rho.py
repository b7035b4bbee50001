"""`milpverify rho` and `milpverify evaluate` through `cli.main`: files, resume, one-line errors."""

from __future__ import annotations

import csv

import pytest

from milpverify import cli
from milpverify.runs.datasets import embedded_net
from milpverify.runs.results_file import COLUMNS

# Small caps keep the exact method fast: the bounds alone settle most of these images.
RHO_FAST = ["--eps-cap", "0.02", "--timeout", "20", "--quiet"]


def test_rho_writes_one_row_per_image_and_resumes(tmp_path, capsys):
    out = tmp_path / "r.csv"
    assert cli.main(["rho", "default", "--indices", "0:3", *RHO_FAST, "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert stdout.startswith("3 images (3 computed, 0 resumed): ")
    with open(out) as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames) == COLUMNS
    assert [(r["index"], r["method"]) for r in rows] == [("0", "exact"), ("1", "exact"),
                                                        ("2", "exact")]
    for r in rows:
        assert r["status"] in ("optimal", "robust_at_cap", "time_limit")
        assert r["label"] == r["pred"]  # the first three embedded images are classified right
        assert float(r["lower"]) <= float(r["upper"])
        assert float(r["total_s"]) > 0
    assert (tmp_path / "r.run.json").exists()

    assert cli.main(["rho", "default", "--indices", "0:3", *RHO_FAST, "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith("3 images (0 computed, 3 resumed): ")


def test_rho_refuses_to_resume_with_other_options(tmp_path, capsys):
    out = tmp_path / "r.csv"
    assert cli.main(["rho", "default", "--indices", "1", *RHO_FAST, "--out", str(out)]) == 0
    capsys.readouterr()
    code = cli.main(["rho", "default", "--indices", "1", "--eps-cap", "0.03", "--quiet",
                     "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and "`eps_cap` was 0.02, now 0.03" in err and "--rerun" in err


def test_evaluate_cli(tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(["evaluate", "default", "--indices", "0:2", "--eps", "0.05",
                     "--methods", "fgsm", "--quiet", "--out", str(out)])
    stdout = capsys.readouterr().out
    assert code == 0
    assert "| fgsm | 2 |" in stdout and "2 rows computed, 0 resumed" in stdout
    assert (out / "summary.md").exists() and (out / "rho_cdf.png").exists()


@pytest.mark.parametrize("argv, message", [
    (["evaluate", "MODEL", "--data", "missing.npz", "--eps", "0.1"], "Data file not found"),
    (["evaluate", "default", "--indices", "5:2", "--eps", "0.1"], "selects no images"),
    (["evaluate", "default", "--eps", "0"], "`eps` must be a finite number > 0; got 0.0"),
    (["evaluate", "default", "--eps", "-0.1"], "`eps` must be a finite number > 0"),
    (["evaluate", "default", "--eps", "0.1", "--methods", "lp,magic"],
     "Unknown method(s) 'magic' in `methods`; choose from exact, lp, pgd, fgsm, lbfgs."),
    (["evaluate", "nope.onnx", "--eps", "0.1"], "Model file not found: 'nope.onnx'"),
    (["evaluate", "MODEL", "--eps", "0.1"], "`data` is required"),
    (["rho", "default", "--indices", "5:2"], "selects no images"),
    (["rho", "default", "--eps-cap", "-1"], "`eps_cap` must be a finite number > 0"),
    (["rho", "default", "--indices", "0", "--workers", "0"], "`workers` must be an integer"),
    (["rho", "default", "--indices", "0", "--backend", "gurobi"],
     "unknown backend 'gurobi'; valid names: 'scip', 'highs', 'pyomo:<solver>'"),
    (["rho", "default", "--indices", "0", "--property", "topk:11"],
     "`K` must be an integer in [1, 10] (the network has 10 classes); got 11."),
    (["rho", "default", "--indices", "0", "--property", "topk:two"], "needs an integer K"),
    (["rho", "default", "--indices", "0", "--property", "top3"], "unknown property 'top3'"),
    (["rho", "default", "--indices", "0", "--property", "affinity:missing.json"],
     "cannot read affinity groups file"),
    (["evaluate", "default", "--eps", "0.1", "--methods", "exact,lp", "--property", "topk:2"],
     "needs methods 'exact' alone"),
    (["evaluate", "default", "--eps", "0.1", "--norm", "l2", "--methods", "exact,lp"],
     "method(s) lp do not measure in norm 'l2'; with it use exact, pgd."),
    (["rho", "default", "--indices", "0", "--norm", "l2", "--backend", "highs"],
     "norm 'l2' needs backend 'scip'"),
])
def test_bad_inputs_give_one_error_line(tmp_path, capsys, argv, message):
    model = str(embedded_net("mnist_mlp_32_16").path)
    argv = [model if a == "MODEL" else a for a in argv]
    out = tmp_path / ("r.csv" if argv[0] == "rho" else "run")
    assert cli.main([*argv, "--quiet", "--out", str(out)]) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("milpverify: error: ")
    assert message in lines[0] and "Traceback" not in captured.err
    assert captured.out == ""


def test_rho_l2_writes_sound_brackets(tmp_path, capsys):
    """L2 on the default net: MNIST-sized quadratic problems are slow (the bounds come from
    the L-inf box of the radius), so a short budget; every row is still a proven bracket
    with a verified L2 witness."""
    out = tmp_path / "r.csv"
    assert cli.main(["rho", "default", "--indices", "0:2", "--norm", "l2", "--eps-cap", "1.0",
                     "--time-limit-s", "4", "--quiet", "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith("2 images (2 computed, 0 resumed): ")
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    for r in rows:
        assert r["status"] in ("optimal", "time_limit") and r["witness_verified"] == "True"
        assert 0 < float(r["lower"]) <= float(r["upper"]) <= 1.0
    assert '"norm": "l2"' in (tmp_path / "r.run.json").read_text()


def test_evaluate_l2_runs_the_methods_that_measure_in_l2(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["evaluate", "default", "--indices", "0", "--eps", "0.5", "--norm", "l2",
                     "--time-limit-s", "3", "--quiet", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "| exact | 1 |" in stdout and "| pgd | 1 |" in stdout and "fgsm" not in stdout


def test_usage_errors_exit_2(capsys):
    assert cli.main(["evaluate", "default", "--eps", "0.1"]) == 2  # --out missing
    assert cli.main(["rho", "default", "--out", "x.csv", "--workers", "2", "--ray", "auto"]) == 2
    err = capsys.readouterr().err
    assert "usage:" not in err and err.count("milpverify: error: ") == 2  # one line each


def _exact_rows(path):
    with open(path) as f:
        return {int(r["index"]): r for r in csv.DictReader(f)}


def test_rho_property_topk1_is_plain_rho_and_topk2_is_no_closer(tmp_path, capsys):
    """`--property topk:1` reproduces plain rho; top-2 is at least as far (monotone in K)."""
    common = ["rho", "default", "--indices", "0:2", "--eps-cap", "0.05", "--timeout", "30",
              "--quiet"]
    assert cli.main([*common, "--out", str(tmp_path / "plain.csv")]) == 0
    assert cli.main([*common, "--property", "topk:1", "--out", str(tmp_path / "k1.csv")]) == 0
    assert cli.main([*common, "--property", "topk:2", "--out", str(tmp_path / "k2.csv")]) == 0
    capsys.readouterr()
    plain, k1, k2 = (_exact_rows(tmp_path / f) for f in ("plain.csv", "k1.csv", "k2.csv"))
    for i in (0, 1):
        assert k1[i]["status"] == plain[i]["status"]
        if plain[i]["status"] == "optimal":
            assert float(k1[i]["upper"]) == pytest.approx(float(plain[i]["upper"]), abs=2e-5)
        assert float(k2[i]["upper"]) >= float(k1[i]["lower"]) - 1e-9
        assert float(k2[i]["lower"]) >= float(k1[i]["lower"]) - 2e-5 or \
            k2[i]["status"] == "time_limit"
    # The property is part of the run's identity: another K does not resume this file.
    code = cli.main([*common, "--property", "topk:3", "--out", str(tmp_path / "k2.csv")])
    assert code == 1 and "`property` was 'topk:2', now 'topk:3'" in capsys.readouterr().err


def test_evaluate_affinity_property_writes_it_in_the_summary(tmp_path, capsys):
    groups = tmp_path / "g.json"
    groups.write_text('{"groups": [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]}')
    out = tmp_path / "run"
    assert cli.main(["evaluate", "default", "--indices", "1", "--eps", "0.02", "--methods",
                     "exact", "--property", f"affinity:{groups}", "--quiet",
                     "--out", str(out)]) == 0
    assert "| exact | 1 |" in capsys.readouterr().out
    assert "- property: affinity:subset:0,1,2,3,4|5,6,7,8,9" in (out / "summary.md").read_text()
