"""One vocabulary of flags: `--timeout`, `--quiet`/`--verbose`, `--indices` on every
subcommand (old spellings still work, with a deprecation note), and argparse errors as one
line with the nearest flag for a typo (exit 2)."""

from __future__ import annotations

import pytest

from milpverify.cli import SUBPARSERS, build_parser, main


def _flags(command: str) -> set[str]:
    build_parser()
    return {o for a in SUBPARSERS[command]._actions for o in a.option_strings
            if a.help != "==SUPPRESS=="}


@pytest.mark.parametrize("command", ["info", "export", "vnnlib", "vnncomp", "evaluate", "rho",
                                     "finetune"])
def test_every_subcommand_has_verbose_and_no_old_spellings_in_help(command):
    flags = _flags(command)
    assert "--verbose" in flags
    assert not flags & {"--time-limit-s", "--no-progress", "--index"}


def test_new_spellings():
    assert {"--timeout", "--quiet", "--indices"} <= _flags("rho")
    assert {"--timeout", "--quiet", "--indices"} <= _flags("evaluate")
    assert {"--quiet"} <= _flags("vnncomp") and {"--timeout"} <= _flags("vnnlib")
    assert {"--indices"} <= _flags("export")


@pytest.mark.parametrize("argv, dest, value, note", [
    (["rho", "default", "--time-limit-s", "7", "--out", "r.csv"], "time_limit_s", 7.0,
     "--time-limit-s is deprecated; use --timeout"),
    (["evaluate", "default", "--eps", "0.1", "--time-limit-s", "7", "--out", "d"],
     "time_limit_s", 7.0, "--time-limit-s is deprecated; use --timeout"),
    (["vnncomp", "bench", "--no-progress", "--out", "r.csv"], "quiet", True,
     "--no-progress is deprecated; use --quiet"),
    (["export", "default", "--index", "3", "--eps", "0.1", "--out", "q.lp"], "index", 3,
     "--index is deprecated; use --indices"),
])
def test_old_spellings_still_work_with_a_note(argv, dest, value, note, capsys):
    args = build_parser().parse_args(argv)
    assert getattr(args, dest) == value
    assert capsys.readouterr().err.strip() == f"milpverify: warning: {note}"


def test_new_spellings_parse():
    parser = build_parser()
    assert parser.parse_args(["rho", "default", "--timeout", "7", "--out", "r"]).time_limit_s == 7
    assert parser.parse_args(["export", "default", "--indices", "4", "--out", "q"]).index == 4
    assert parser.parse_args(["vnncomp", "b", "--quiet", "--out", "r"]).quiet is True


@pytest.mark.parametrize("argv, expected", [
    (["rho", "default", "--eps-capp", "0.1", "--out", "r.csv"],
     "unrecognized arguments: --eps-capp 0.1 (did you mean --eps-cap?) "
     "(see 'milpverify rho --help')"),
    (["evaluate", "default", "--eps", "0.1", "--timout", "5", "--out", "d"],
     "(did you mean --timeout?)"),
    (["rhoo", "default"], "(did you mean 'rho'? see 'milpverify --help')"),
    (["rho", "default", "--timeout", "abc", "--out", "r.csv"],
     "argument --timeout: invalid float value: 'abc'"),
    (["rho"], "the following arguments are required: MODEL, --out"),
    (["export", "default", "--eps", "0.1", "--out", "q.lp"],
     "the following arguments are required: --indices"),
])
def test_usage_errors_are_one_line_exit_2(argv, expected, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("milpverify: error: "), captured.err
    assert expected in lines[0]
    assert "usage:" not in captured.err and captured.out == ""


def test_help_documents_exit_codes(capsys):
    assert main(["--help"]) == 0
    assert "Exit codes: 0 done, 1 error, 2 bad command line, 130" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["info", "export", "evaluate", "rho"])
def test_model_help_names_the_real_default(command):
    """`default` is the bundled 784-32-16-10 MLP (`runs.datasets.DEFAULT_NET`)."""
    from milpverify.runs.datasets import DEFAULT_NET
    assert DEFAULT_NET == "mnist_mlp_32_16"
    build_parser()
    model = next(a for a in SUBPARSERS[command]._actions if a.dest == "model")
    assert "'default' for the embedded Planet LeNet" not in " ".join(model.help.split())
