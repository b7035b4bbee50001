"""`from_torch` (torch.fx front end), `to_torch`/`to_network` (IR -> torch) and `export_onnx`.

Every converted network must reproduce the torch forward pass in float64 to 1e-9, and every
compiled module must reproduce `Network.forward`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

import milpverify  # noqa: E402
from milpverify.errors import InvalidInputError, UnsupportedModelError  # noqa: E402
from milpverify.frontends.torch import from_torch  # noqa: E402
from milpverify.frontends.torchnet import TORCH_RULES, export_onnx, to_network, to_torch
from milpverify.ir import ops  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SHARED_NETS = [
    "nets/mnist/wk17a_linf0.1.onnx",
    "nets/mnist/planet/lenet.onnx",
    "nets/mnist/eran/convSmallRELU__Point.onnx",
    "nets/cifar10/oval21/cifar_base_kw.onnx",
]


def _shared(rel: str) -> Path:
    path = SHARED_DATA / rel
    if not path.is_file():
        pytest.skip(f"needs ../shared/data beside the repository (missing {rel})")
    return path


def _randomise_bn(bn: nn.Module, gen: torch.Generator) -> None:
    """Non-trivial running statistics and affine parameters."""
    n = bn.num_features
    with torch.no_grad():
        bn.running_mean.copy_(torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1)
        bn.running_var.copy_(torch.rand(n, generator=gen, dtype=torch.float64) * 1.5 + 0.5)
        bn.weight.copy_(torch.rand(n, generator=gen, dtype=torch.float64) * 1.5 + 0.5)
        bn.bias.copy_(torch.rand(n, generator=gen, dtype=torch.float64) - 0.5)


def _check(module: nn.Module, shape: tuple[int, ...], n: int = 6, seed: int = 0,
           low: float = -1.0, high: float = 1.0) -> milpverify.Network:
    """from_torch(module) == module and to_torch(net) == Network.forward, float64 1e-9."""
    module = module.double().eval()
    net = from_torch(module, shape)
    x = np.random.default_rng(seed).uniform(low, high, size=(n, *shape))
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).reshape(n, -1).numpy()
    got = net.forward(x)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    compiled = to_torch(net)
    with torch.no_grad():
        again = compiled(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(again, got, rtol=0, atol=1e-9)
    return net


# ---------------------------------------------------------------------------- from_torch
def test_sequential_conv_pool_batchnorm():
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, stride=2, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 6, (3, 2), stride=(1, 2), padding=(1, 2), dilation=(2, 1), groups=2),
        nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
        nn.AvgPool2d(2, stride=1, padding=1, ceil_mode=True, count_include_pad=True),
        nn.Dropout(0.3),
        nn.Flatten(),
        nn.Linear(6 * 4 * 5, 16),
        nn.BatchNorm1d(16),
        nn.ReLU(),
        nn.Identity(),
        nn.Linear(16, 10),
    )
    _randomise_bn(model[1].double(), gen)
    _randomise_bn(model[10].double(), gen)
    net = _check(model, (2, 13, 15))
    kinds = [op.kind for _, op in net.items()]
    assert kinds.count("conv") == 2 and "maxpool" in kinds and "avgpool" in kinds
    assert net.origin.description == "torch module Sequential"
    assert net.origin.onnx_bytes is None


@pytest.mark.parametrize("pool", [
    nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
    nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    nn.AvgPool2d(2, stride=2, divisor_override=3),
    nn.AdaptiveAvgPool2d((1, 1)),
    nn.AdaptiveAvgPool2d((3, 5)),
    nn.MaxPool2d((2, 3), stride=(2, 1), dilation=(1, 2)),
])
def test_pooling_variants(pool):
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding="same"), nn.ReLU(), pool, nn.Flatten())
    model = nn.Sequential(*model, nn.LazyLinear(5))
    model(torch.zeros(1, 1, 9, 10))  # materialise the lazy layer
    _check(model, (1, 9, 10))


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                                   nn.Conv2d(4, 4, 1))
        self.head = nn.Linear(4 * 6 * 6, 7)
        self.register_buffer("mean", torch.tensor([0.25]).reshape(1, 1, 1))

    def forward(self, x):
        x = (x - self.mean) / 0.5
        h = F.relu(self.stem(x))
        h = h + self.block(h)
        h = torch.relu(h - 0.5 * self.block(h))
        h = 2.0 * h + 1
        return self.head(torch.flatten(h, 1))


def test_residual_module():
    torch.manual_seed(3)
    net = _check(_Residual(), (1, 6, 6))
    assert any(isinstance(op, ops.Add) for _, op in net.items())


class _CatNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(2, 3, 3, padding=1)
        self.b = nn.Conv2d(2, 2, 1)
        self.fc = nn.Linear(5 * 5 * 5 + 5 * 10 * 5, 4)

    def forward(self, x):
        a, b = F.relu(self.a(x)), self.b(x)
        channels = torch.cat([a, b], dim=1)           # (5, 5, 5)
        rows = torch.cat((channels, -channels), 2)     # (5, 10, 5)
        flat = torch.cat([channels.view(x.size(0), -1), rows.reshape(-1, 250)], dim=1)
        return self.fc(F.relu(flat))


def test_cat_module():
    torch.manual_seed(4)
    net = _check(_CatNet(), (2, 5, 5))
    assert any(isinstance(op, ops.Concat) for _, op in net.items())


class _Functional(nn.Module):
    """Functional calls, a channels-last permute and slicing."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(3, 2, 2, 2))
        self.fc = nn.Linear(24, 6)
        self.out = nn.Linear(6, 3)
        self.register_buffer("rm", torch.tensor([0.1, -0.2, 0.3]))
        self.register_buffer("rv", torch.tensor([0.5, 1.5, 2.0]))

    def forward(self, x):
        h = F.conv2d(x, self.w, None, stride=1, padding=1)           # (3, 5, 5)
        h = F.batch_norm(h, self.rm, self.rv, training=False)
        h = F.max_pool2d(h.relu(), 2, 2, 0, 1, True)                  # (3, 3, 3)
        h = h.permute(0, 2, 3, 1).contiguous()                        # (3, 3, 3) HWC
        h = h[:, 1:, :, :].reshape(x.shape[0], -1)                    # 18
        h = torch.cat([h, h[:, :6]], dim=1)                           # 24
        h = F.relu(F.linear(h, self.fc.weight, self.fc.bias))
        return self.out(F.dropout(h, 0.5, training=False)).clamp(min=0)


def test_functional_calls_permute_and_slicing():
    torch.manual_seed(5)
    net = _check(_Functional(), (2, 4, 4))
    assert net.num_classes == 3


@pytest.mark.parametrize("make", [
    lambda: nn.Conv2d(2, 3, 3, stride=2, padding=1, bias=False),
    lambda: nn.BatchNorm2d(2),
    lambda: nn.MaxPool2d(2),
    lambda: nn.AvgPool2d(3, padding=1),
    lambda: nn.ReLU(),
])
def test_bare_leaf_modules(make):
    """A bare module is traced through its forward (F.conv2d, F.batch_norm, ...)."""
    torch.manual_seed(7)
    module = make().double()
    if isinstance(module, nn.BatchNorm2d):
        _randomise_bn(module, torch.Generator().manual_seed(7))
    _check(module, (2, 6, 6))


def test_node_names_are_stable_and_derived_from_fx():
    torch.manual_seed(6)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    net = from_torch(model, (4,))
    assert net.order == from_torch(model, (4,)).order
    assert set(net.order) == {"input", "affine_0", "relu_1", "affine_2"}


class _Bad(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.act = nn.Sigmoid()
        self.rnn = nn.LSTM(4, 4)
        self.squash = nn.Tanh()

    def forward(self, x):
        h = self.act(self.fc(x))
        seq, _ = self.rnn(h.unsqueeze(0))
        return self.squash(seq[0]) * torch.sigmoid(x)


def test_unsupported_modules_are_all_named_in_one_error():
    with pytest.raises(UnsupportedModelError) as info:
        from_torch(_Bad().eval(), (4,))
    message = str(info.value)
    for needle in ("'act' (Sigmoid)", "'rnn' (LSTM)", "'squash' (Tanh)", "torch.sigmoid",
                   "Supported:", "nn.Conv2d"):
        assert needle in message
    assert message.count("cannot be encoded") == 1


@pytest.mark.parametrize("module", [nn.Sigmoid(), nn.Tanh(), nn.LSTM(4, 4)])
def test_single_unsupported_module(module):
    with pytest.raises(UnsupportedModelError, match=type(module).__name__):
        from_torch(nn.Sequential(nn.Linear(4, 4), module), (4,))


def test_training_mode_batchnorm_and_dropout_are_rejected():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Dropout(0.5))
    mean_before = model[1].running_mean.clone()
    with pytest.raises(UnsupportedModelError, match=r"(?s)BatchNorm2d.*training mode.*Dropout"):
        from_torch(model.train(), (1, 5, 5))
    assert torch.equal(model[1].running_mean, mean_before)  # the user's module is untouched


def test_bad_arguments():
    with pytest.raises(InvalidInputError):
        from_torch("not a module", (4,))
    with pytest.raises(InvalidInputError):
        from_torch(nn.Linear(4, 2), (0,))
    with pytest.raises(InvalidInputError, match="input_shape"):
        from_torch(nn.Linear(4, 2), (5,))
    with pytest.raises(UnsupportedModelError, match="product of two runtime tensors|not piecewise"):
        from_torch(_Square(), (3,))
    with pytest.raises(UnsupportedModelError, match="does not divide"):
        from_torch(nn.Sequential(nn.AdaptiveAvgPool2d(2)), (1, 9, 10))


class _Square(nn.Module):
    def forward(self, x):
        return x * x


def test_importing_milpverify_does_not_import_torch():
    code = ("import sys, milpverify, milpverify.core.attacks\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------- to_torch
def test_torch_rules_cover_every_op():
    assert set(TORCH_RULES) == set(ops.ALL_OPS) - {ops.Input}


@pytest.mark.shared
@pytest.mark.parametrize("rel", SHARED_NETS)
def test_to_torch_matches_forward_on_shared_nets(rel):
    net = milpverify.load_onnx(_shared(rel))
    x = np.random.default_rng(7).random((5, *net.input_shape))
    module = to_torch(net)
    with torch.no_grad():
        got = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, net.forward(x), rtol=0, atol=1e-9)
    assert got.dtype == np.float64


def test_parameters_are_trainable_and_written_back():
    torch.manual_seed(8)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=(1, 0)), nn.ReLU(), nn.Flatten(),
                          nn.Linear(2 * 5 * 3, 3))
    net = from_torch(model.double().eval(), (1, 5, 5))
    module = to_torch(net)
    params = list(module.parameters())
    assert len(params) == 4 and all(p.requires_grad for p in params)
    x = torch.rand(8, 1, 5, 5, dtype=torch.float64)
    opt = torch.optim.SGD(module.parameters(), lr=0.5)
    loss = F.cross_entropy(module(x), torch.arange(8) % 3)
    loss.backward()
    opt.step()
    trained = to_network(module)
    assert trained.order == net.order
    with torch.no_grad():
        expected = module(x).numpy()
    np.testing.assert_allclose(trained.forward(x.numpy()), expected, rtol=0, atol=1e-9)
    assert not np.allclose(trained.forward(x.numpy()), net.forward(x.numpy()))
    # the new origin holds the trained weights in float32 ONNX, for witness checks
    from milpverify.core.witness import onnx_logits
    np.testing.assert_allclose(onnx_logits(trained, x.numpy()[:2]), expected[:2], atol=1e-4)


def test_to_torch_float32():
    torch.manual_seed(9)
    net = from_torch(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double(), (3,))
    module = to_torch(net, torch.float32)
    x = np.random.default_rng(1).random((4, 3))
    out = module(torch.from_numpy(x))
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.detach().numpy(), net.forward(x), atol=1e-5)


# ---------------------------------------------------------------------------- export_onnx
def _roundtrip(net: milpverify.Network, path: Path, x: np.ndarray) -> None:
    import onnxruntime as ort
    export_onnx(net, path)
    back = milpverify.load_onnx(path)
    ref = net.forward(x)
    scale = max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(back.forward(x), ref, rtol=0, atol=1e-6 * scale)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"input": x.astype(np.float32)})[0]
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4 * scale)


@pytest.mark.shared
@pytest.mark.parametrize("rel", SHARED_NETS)
def test_export_onnx_roundtrip_shared(rel, tmp_path):
    net = milpverify.load_onnx(_shared(rel))
    x = np.random.default_rng(10).random((3, *net.input_shape))
    _roundtrip(net, tmp_path / "net.onnx", x)


@pytest.mark.parametrize("make", [_CatNet, _Functional, _Residual])
def test_export_onnx_roundtrip_torch_modules(make, tmp_path):
    torch.manual_seed(11)
    module = make().float().eval()
    shape = {_CatNet: (2, 5, 5), _Functional: (2, 4, 4), _Residual: (1, 6, 6)}[make]
    net = from_torch(module, shape)
    _roundtrip(net, tmp_path / "net.onnx", np.random.default_rng(12).random((3, *shape)))


def test_export_onnx_ceil_pools_and_modules(tmp_path):
    torch.manual_seed(13)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(),
                          nn.MaxPool2d(2, stride=2, ceil_mode=True),
                          nn.AvgPool2d(2, stride=2, ceil_mode=True, count_include_pad=True),
                          nn.Flatten(), nn.Linear(2 * 2 * 2, 3)).eval()
    net = from_torch(model, (1, 8, 8))
    x = np.random.default_rng(14).random((3, 1, 8, 8))
    _roundtrip(net, tmp_path / "net.onnx", x)
    # TorchNet and plain modules are accepted too
    path = export_onnx(to_torch(net), tmp_path / "module.onnx")
    np.testing.assert_allclose(milpverify.load_onnx(path).forward(x), net.forward(x), atol=1e-6)
    path = export_onnx(model, tmp_path / "plain.onnx", input_shape=(1, 8, 8))
    np.testing.assert_allclose(milpverify.load_onnx(path).forward(x), net.forward(x), atol=1e-6)
    with pytest.raises(InvalidInputError):
        export_onnx(model, tmp_path / "x.onnx")
