"""`--mean` / `--std`: a normalisation the network was trained with but does not contain is
prepended to it, and a run whose network misclassifies most images warns."""

from __future__ import annotations

import json

import numpy as np
import pytest

import milpverify
import milpverify.runs.report
import milpverify.runs.runner
from milpverify.cli import main
from milpverify.runs.datasets import DEFAULT_NET, embedded_net
from milpverify.runs.normalise import normalised_model

MEAN, STD = 0.5, 0.05


@pytest.fixture(scope="module")
def normalised_net(tmp_path_factory):
    """The default MLP as if trained on (x - 0.5) / 0.05: net'(z) = net(0.05 z + 0.5).

    Without the normalisation net' sees nearly constant inputs (accuracy far below 50 %);
    with it, net'((x - 0.5) / 0.05) = net(x) exactly up to float rounding.
    """
    import onnx
    from onnx import helper, numpy_helper
    model = onnx.load(str(embedded_net(DEFAULT_NET).path))
    graph = model.graph
    for node in graph.node:
        node.input[:] = ["z_raw" if v == "input" else v for v in node.input]
    graph.initializer.extend([numpy_helper.from_array(np.float32([STD]), "k_std"),
                              numpy_helper.from_array(np.float32([MEAN]), "k_mean")])
    nodes = [helper.make_node("Mul", ["input", "k_std"], ["z_scaled"]),
             helper.make_node("Add", ["z_scaled", "k_mean"], ["z_raw"]), *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    path = tmp_path_factory.mktemp("net") / "trained_normalised.onnx"
    onnx.save(model, str(path))
    return path


def _data(tmp_path):
    _, images, labels = milpverify.load_default()
    np.savez(tmp_path / "d.npz", images=np.round(images[:4] * 255).astype(np.uint8),
             labels=labels[:4])
    return tmp_path / "d.npz"


def test_normalised_model_recovers_the_network(normalised_net):
    net, images, _ = milpverify.load_default()
    restored = milpverify.load_onnx(normalised_model(normalised_net, (MEAN,), (STD,)))
    assert np.allclose(restored.forward(images[:4]), net.forward(images[:4]), atol=1e-4)


def test_evaluate_with_mean_std_and_the_low_accuracy_warning(normalised_net, tmp_path):
    data = _data(tmp_path)
    plain = milpverify.evaluate(normalised_net, data=data, eps=0.05, methods="fgsm",
                                out=tmp_path / "plain", quiet=True, report=False)
    assert plain.warnings and "% of the 4 selected images correctly" in plain.warnings[0]
    milpverify.runs.report._report(plain.spec, plain, milpverify.runs.runner.Layout.run_dir(
        tmp_path / "plain"), [0, 1, 2, 3])
    assert plain.warnings[0] in (tmp_path / "plain" / "summary.md").read_text()
    assert "warning: the network classifies only" in (tmp_path / "plain" / "run.log").read_text()
    fixed = milpverify.evaluate(normalised_net, data=data, eps=0.05, methods="fgsm",
                                out=tmp_path / "fixed", quiet=True, mean=MEAN, std=str(STD),
                                report=False)
    reference = milpverify.evaluate("default", indices="0:4", eps=0.05, methods="fgsm",
                                    out=tmp_path / "ref", quiet=True, report=False)
    assert fixed.warnings == []
    assert all(r["pred"] == r["label"] for r in fixed.rows)
    assert any(r["witness_verified"] for r in fixed.rows)  # onnxruntime saw the same model
    np.testing.assert_allclose([r["upper"] for r in fixed.rows],
                               [r["upper"] for r in reference.rows], rtol=1e-4)
    options = json.loads((tmp_path / "fixed" / "run.json").read_text())["options"]
    assert (options["mean"], options["std"]) == ([MEAN], [STD])


def test_cli_rho_mean_std_and_warning(normalised_net, tmp_path, capsys):
    data = _data(tmp_path)
    base = ["rho", str(normalised_net), "--data", str(data), "--indices", "0", "--eps-cap",
            "0.1", "--quiet"]
    assert main([*base, "--timeout", "2", "--out", str(tmp_path / "plain.csv")]) == 0
    err = capsys.readouterr().err
    assert "milpverify: warning: the network classifies only 0.0% of the 1 selected" in err
    assert main([*base, "--mean", str(MEAN), "--std", str(STD),
                 "--out", str(tmp_path / "fixed.csv")]) == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.err and "optimal 1" in captured.out


@pytest.mark.parametrize("flags, message", [
    (["--std", "0"], "`std` must be > 0"),
    (["--mean", "a,b"], "`mean` must be numbers separated by commas"),
    (["--mean", "0.1,0.2,0.3"], "has 1 channel(s)"),
])
def test_cli_bad_mean_std_is_one_line(flags, message, tmp_path, capsys):
    code = main(["rho", "default", "--indices", "0", *flags, "--out", str(tmp_path / "r.csv")])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and message in err, err


def test_export_reads_mean_std(normalised_net, tmp_path, capsys):
    data = _data(tmp_path)
    assert main(["export", str(normalised_net), "--data", str(data), "--indices", "1",
                 "--eps", "0.01", "--mean", str(MEAN), "--std", str(STD),
                 "--out", str(tmp_path / "q.lp")]) == 0
    assert (tmp_path / "q.lp").stat().st_size > 0
