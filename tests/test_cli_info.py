"""`milpverify info` in-process through `cli.main`: exit codes, report lines, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from helpers import make_onnx, node

from milpverify import cli
from milpverify.runs.datasets import EMBEDDED_NETS


@pytest.fixture
def gemm_path(tmp_path, rng):
    """Sub/Div normalisation, Flatten, Gemm, Relu, Gemm saved as an .onnx file."""
    nodes = [node("Sub", ["x", "mean"], "centred"), node("Div", ["centred", "std"], "normed"),
             node("Flatten", ["normed"], "flat"),
             node("Gemm", ["flat", "W1", "b1"], "fc1", transB=1),
             node("Relu", ["fc1"], "relu1"), node("Gemm", ["relu1", "W2", "b2"], "logits",
                                                    transB=1)]
    inits = {"mean": np.array(0.1307), "std": np.array(0.3081),
             "W1": rng.standard_normal((5, 12)), "b1": rng.standard_normal(5),
             "W2": rng.standard_normal((3, 5)), "b2": rng.standard_normal(3)}
    path = tmp_path / "small.onnx"
    onnx.save(make_onnx(nodes, inits, [("x", ("N", 1, 3, 4))], [("logits", None)], 13), path)
    return path


@pytest.fixture
def unsupported_path(tmp_path):
    nodes = [node("Sigmoid", ["x"], "act1"), node("Relu", ["act1"], "r"),
             node("Tanh", ["r"], "act2")]
    path = tmp_path / "sigmoid.onnx"
    onnx.save(make_onnx(nodes, {}, [("x", ("N", 4))], [("act2", None)], 13), path)
    return path


def test_info_text(gemm_path, capsys):
    assert cli.main(["info", str(gemm_path)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert lines[0] == f"Model: {gemm_path}"
    assert "Input: 'x' shape [1, 3, 4] (12 values); ONNX input 'x' [1, 1, 3, 4]" in lines
    assert "Classes: 3 (output node 'logits')" in lines
    assert "Input normalisation folded: yes" in lines
    header = next(i for i, line in enumerate(lines) if line.startswith("name"))
    assert lines[header].split() == ["name", "op", "shape", "neurons", "relus", "parameters"]
    rows = [line.split() for line in lines[header + 2: header + 6]]
    assert rows == [["x", "input", "1x3x4", "12", "0", "0"],
                    ["fc1", "affine", "5", "5", "0", "65"],
                    ["relu1", "relu", "5", "5", "5", "0"],
                    ["logits", "affine", "3", "3", "0", "18"]]
    assert "Totals: 4 nodes, 13 neurons, 5 ReLUs in 1 layer, 83 parameters" in lines
    assert "ReLUs per layer: relu1: 5" in lines
    assert any("folded input normalisation" in line for line in lines)
    assert lines[-1].startswith("Supported: yes")


def test_info_no_simplify(gemm_path, capsys):
    assert cli.main(["info", "--no-simplify", str(gemm_path)]) == 0
    out = capsys.readouterr().out
    assert "Input normalisation folded: no" in out
    assert "scale" in out and "permute" in out


def test_info_json(gemm_path, capsys):
    assert cli.main(["info", str(gemm_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["supported"] is True
    assert report["input"] == {"name": "x", "shape": [1, 3, 4], "size": 12, "onnx_name": "x",
                               "onnx_shape": [1, 1, 3, 4]}
    assert report["classes"] == 3
    assert [n["op"] for n in report["nodes"]] == ["input", "affine", "relu", "affine"]
    assert report["relus_per_layer"] == {"relu1": 5}
    assert report["totals"] == {"nodes": 4, "neurons": 13, "relus": 5, "relu_layers": 1,
                                "maxpool_neurons": 0, "parameters": 83}
    assert report["input_normalisation_folded"] is True


def test_info_default(capsys):
    assert cli.main(["info", "default:planet_lenet"]) == 0
    out = capsys.readouterr().out
    assert "planet_lenet.onnx" in out.splitlines()[0]
    assert "Classes: 10" in out
    assert "48 max-pool outputs" in out and "533 parameters" in out
    assert [line.split()[1] for line in out.splitlines()
            if line.split()[:1] and line.split()[0].endswith("_1") and len(line.split()) == 6] \
        == ["input", "conv", "maxpool", "relu", "affine"]


@pytest.mark.parametrize("name", sorted(EMBEDDED_NETS))
def test_info_default_named(name, capsys):
    assert cli.main(["info", f"default:{name}", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["classes"] == 10 and report["input"]["size"] == 784


def test_info_unknown_default(capsys):
    assert cli.main(["info", "default:nope"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("milpverify: error: Unknown embedded network 'nope'")


def test_info_missing_file(tmp_path, capsys):
    assert cli.main(["info", str(tmp_path / "missing.onnx")]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("milpverify: error: ONNX file not found:") and "missing.onnx" in err
    assert "Traceback" not in err


def test_info_garbled_file(tmp_path, capsys):
    path = tmp_path / "garbled.onnx"
    path.write_bytes(b"\x08\x07garbage" * 10)
    assert cli.main(["info", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("milpverify: error: ")
    assert "Traceback" not in err


def test_debug_shows_traceback(tmp_path, capsys):
    assert cli.main(["--debug", "info", str(tmp_path / "missing.onnx")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "InvalidInputError" in err
    assert err.rstrip().splitlines()[-1].startswith("milpverify: error: ONNX file not found")
    assert cli.main(["info", str(tmp_path / "missing.onnx"), "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_info_unsupported_model(unsupported_path, capsys):
    assert cli.main(["info", str(unsupported_path)]) == 1
    out, err = capsys.readouterr()
    assert "Supported: no" in out
    assert "'act1' (Sigmoid, opset 13)" in out and "'act2' (Tanh, opset 13)" in out
    assert "Supported ONNX ops:" in out
    assert "Traceback" not in out + err


def test_info_unsupported_model_json(unsupported_path, capsys):
    assert cli.main(["info", str(unsupported_path), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["supported"] is False
    assert "'act1' (Sigmoid, opset 13)" in report["unsupported"]


@pytest.mark.parametrize("argv", [[], ["info"], ["frobnicate"], ["info", "a", "--bogus"]])
def test_usage_errors_exit_2(argv, capsys):
    """One `milpverify: error:` line pointing at --help, not the usage dump."""
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "usage:" not in err and err.startswith("milpverify: error: ")
    assert err.count("\n") == 1 and "--help" in err


def test_help_exits_0(capsys):
    assert cli.main(["--help"]) == 0
    assert "info" in capsys.readouterr().out


def test_registry():
    assert "info" in cli.SUBCOMMANDS
    with pytest.raises(RuntimeError, match="registered twice"):
        cli.register_subcommand("info", "again", lambda p: None, lambda a: 0)


def test_python_dash_m(tmp_path):
    result = subprocess.run([sys.executable, "-m", "milpverify", "info", str(tmp_path / "x.onnx")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("milpverify: error: ONNX file not found")
    ok = subprocess.run([sys.executable, "-m", "milpverify", "info", "default", "--json"],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and json.loads(ok.stdout)["classes"] == 10


@pytest.mark.shared
def test_info_shared_conv_small(shared_data, capsys):
    path = shared_data / "nets/mnist/eran/convSmallRELU__Point.onnx"
    assert cli.main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Input normalisation folded: yes" in out
    assert "3604 ReLUs in 3 layers" in out
