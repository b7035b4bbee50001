"""A real exported model: torch's ONNX exporter on a small CNN with every new op.

ZeroPad2d (a non-zero pad before a Conv and a zero-width pad before an average pool, with the
pads computed by exported shape arithmetic), LeakyReLU, PReLU per channel, ReLU6 (Clip) and a
trailing Softmax. The loaded network must match torch's logits, fold both pads, drop the
Softmax with a note, and run through bounds and exact rho with a verified witness.
"""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
from helpers import run_ort

from milpverify import load_onnx, rho
from milpverify.bounds.symbolic import symbolic_bounds
from milpverify.core.attacks import pgd
from milpverify.ir import ops

torch = pytest.importorskip("torch")
# The TorchScript exporter (the dynamo one needs onnxscript, absent here) warns that it is
# legacy and that it cannot constant-fold its own Slice (the loader folds it).
pytestmark = [pytest.mark.filterwarnings("ignore:Constant folding"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]
nn = torch.nn


@pytest.fixture(scope="module")
def exported():
    torch.manual_seed(0)
    module = nn.Sequential(
        nn.ZeroPad2d((1, 0, 1, 0)), nn.Conv2d(1, 3, 3), nn.LeakyReLU(0.1), nn.ZeroPad2d(0),
        nn.AvgPool2d(2), nn.PReLU(3), nn.Conv2d(3, 4, 3, padding=1), nn.ReLU6(), nn.Flatten(),
        nn.Linear(4 * 4 * 4, 5), nn.Softmax(dim=1)).eval()
    with torch.no_grad():
        module[5].weight.copy_(torch.tensor([0.25, -0.5, 1.5]))
    buffer = io.BytesIO()
    torch.onnx.export(module, torch.zeros(1, 1, 9, 9), buffer, dynamo=False, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "N"}}, opset_version=13)
    return module, onnx.load_from_string(buffer.getvalue())


def test_matches_torch_logits_and_folds_the_pads(exported):
    module, model = exported
    assert {"Pad", "LeakyRelu", "PRelu", "Clip", "Softmax"} <= {n.op_type for n in model.graph.node}
    net = load_onnx(model)
    x = np.random.default_rng(0).uniform(0, 1, (20, 1, 9, 9)).astype(np.float32)
    with torch.no_grad():
        logits = module[:-1](torch.from_numpy(x)).double().numpy()
    got = net.forward(x.astype(np.float64))
    np.testing.assert_allclose(got, logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got.argmax(1), run_ort(model, x).argmax(1))
    assert net.dropped_output is not None and "Softmax" in net.dropped_output
    assert sum("folded zero padding" in n for n in net.notes) == 1   # the other pad is empty
    kinds = [type(op) for _, op in net.items()]
    assert kinds.count(ops.LeakyRelu) == 2 and kinds.count(ops.Relu) == 2


def test_bounds_and_rho_on_the_exported_model(exported):
    _, model = exported
    net = load_onnx(model)
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, 81)
    lo, hi = np.clip(x - 0.05, 0, 1), np.clip(x + 0.05, 0, 1)
    bounds = symbolic_bounds(net, lo, hi)
    points = rng.uniform(lo, hi, size=(2000, 81))
    values = net.forward_all(points, flat=True)
    for name in net.order:
        b_lo, b_hi = bounds.flat(name)
        assert np.all(values[name] >= b_lo - 1e-9) and np.all(values[name] <= b_hi + 1e-9)
    proof = rho(net, x, eps_cap=0.2, time_limit_s=60, domain=(-3.0, 3.0))
    assert proof.status in ("optimal", "robust_at_cap"), proof
    # An adversarial point from PGD on the torch compile of the IR (LeakyRelu layer included):
    # verified by numpy and onnxruntime (the origin is cut at the logits) and never closer
    # than the proven lower bound.
    upper = pgd(net, x, steps=50, restarts=3, eps_max=3.0, domain=(-3.0, 3.0))
    assert upper.status == "upper_bound" and upper.witness_verified, upper
    assert upper.upper >= proof.lower - 1e-9
