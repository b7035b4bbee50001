"""`milpverify.runs.finetune` and `milpverify finetune`: valid ONNX out, log, one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")

from milpverify import cli, load_onnx  # noqa: E402
from milpverify.errors import InvalidInputError  # noqa: E402
from milpverify.runs.datasets import DATA_DIR, embedded_net, load_npz
from milpverify.runs.finetune import finetune, finetune_file, log_path

MLP = embedded_net("mnist_mlp_32_16").path
DATA = DATA_DIR / "mnist_test_first10.npz"


@pytest.fixture(scope="module")
def mlp_data():
    images, labels = load_npz(DATA)
    return load_onnx(str(MLP)), images, labels


def _ort_logits(path, x):
    import onnxruntime as ort
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [len(x), *inp.shape[1:]]
    return sess.run(None, {inp.name: x.astype(np.float32).reshape(shape)})[0]


def test_one_round_exports_equal_onnx(mlp_data, tmp_path):
    import torch

    from milpverify.frontends.torchnet import export_onnx, to_torch
    net, images, labels = mlp_data
    seen = []
    new, log = finetune(net, images, labels, method="fgsm", rounds=1, examples_per_round=10,
                        pixel_divisor=255.0, progress=False,
                        on_round=lambda t, n, e: seen.append(t))
    assert seen == [1]
    entry = log["rounds"][0]
    assert entry["round"] == 1 and entry["attempted"] <= 10
    assert 0 <= entry["kept"] <= entry["found"] <= entry["attempted"]
    assert entry["augmented_size"] == len(labels) + entry["kept"]
    assert np.isfinite(entry["train_loss"]) and 0 <= entry["train_accuracy"] <= 1
    assert log["config"]["train_lr"] == pytest.approx(1e-4)
    # The weights changed, and the exported file reproduces the returned Network.
    assert not np.allclose(new.forward(images), net.forward(images))
    path = export_onnx(new, tmp_path / "new.onnx")
    loaded = load_onnx(str(path))
    ref = new.forward(images)
    scale = np.abs(ref).max()
    np.testing.assert_allclose(loaded.forward(images), ref, atol=1e-5 * scale)
    np.testing.assert_allclose(_ort_logits(path, images), ref, atol=1e-5 * scale)
    with torch.no_grad():
        torch_out = to_torch(new)(torch.as_tensor(images)).numpy()
    np.testing.assert_allclose(torch_out, ref, atol=1e-5 * scale)


def test_lp_margin_examples(mlp_data):
    net, images, labels = mlp_data
    new, log = finetune(net, images[:5], labels[:5], method="lp", rounds=2,
                        examples_per_round=3, progress=False)
    assert [r["round"] for r in log["rounds"]] == [1, 2]
    assert log["rounds"][0]["found"] >= 1  # the LP restriction reaches margin 3 on this MLP
    assert log["rounds"][1]["adversarial_total"] >= log["rounds"][0]["adversarial_total"]


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "cw"}, "`method` must be one of lp, pgd, fgsm, lbfgs; got 'cw'."),
    ({"rounds": 0}, "`rounds` must be an integer >= 1; got 0."),
    ({"lr_scale": -1.0}, "`lr_scale` must be a finite number > 0; got -1.0."),
    ({"margin": float("nan")}, "`margin` must be a finite number >= 0; got nan."),
])
def test_bad_arguments(mlp_data, kwargs, message):
    net, images, labels = mlp_data
    with pytest.raises(InvalidInputError) as info:
        finetune(net, images, labels, progress=False, **kwargs)
    assert str(info.value) == message


def test_missing_data_file(tmp_path):
    with pytest.raises(InvalidInputError, match="Data file not found"):
        finetune_file(MLP, tmp_path / "nope.npz", tmp_path / "o.onnx", method="lp")
    with pytest.raises(InvalidInputError, match="must name an .onnx file"):
        finetune_file(MLP, DATA, tmp_path / "o.txt")


def test_cli_writes_model_and_log(tmp_path, capsys):
    out = tmp_path / "new.onnx"
    code = cli.main(["finetune", str(MLP), "--data", str(DATA), "--indices", "0:8",
                     "--method", "fgsm", "--rounds", "1", "--examples-per-round", "4",
                     "--quiet", "--out", str(out)])
    assert code == 0
    assert "adversarial examples added" in capsys.readouterr().out
    log = json.loads(log_path(out).read_text())
    assert log_path(out).name == "new.finetune.json"
    assert log["config"]["method"] == "fgsm" and len(log["rounds"]) == 1
    images, _ = load_npz(DATA, indices="0:8")
    net = load_onnx(str(out))
    ref = net.forward(images)
    np.testing.assert_allclose(_ort_logits(out, images), ref, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("extra, message", [
    (["--method", "magic"], "`method` must be one of"),
    (["--rounds", "0"], "`rounds` must be an integer >= 1"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, extra, message):
    code = cli.main(["finetune", str(MLP), "--data", str(DATA), "--quiet",
                     "--out", str(tmp_path / "o.onnx"), *extra])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("milpverify: error: ") and message in err[0]


def test_cli_missing_data_file(tmp_path, capsys):
    code = cli.main(["finetune", str(MLP), "--data", str(tmp_path / "x.npz"),
                     "--out", str(tmp_path / "o.onnx")])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"milpverify: error: Data file not found: {str(tmp_path / 'x.npz')!r}."]
