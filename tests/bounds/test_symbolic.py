"""Symbolic (CROWN) bounds: exact small answers, rounding, nesting, soundness (sampling + PGD)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch

import milpverify
from milpverify.bounds import (
    Bounds,
    alpha_bounds,
    bounds_for_box,
    contains,
    interval_bounds,
    symbolic_bounds,
)
from milpverify.bounds.symbolic import bound_vertices, relax_maxpool, relax_relu, symbolic_targets
from milpverify.errors import InvalidInputError
from milpverify.ir import ops
from milpverify.ir.network import Network

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def needs_shared(test: Callable[..., None]) -> Callable[..., None]:
    """Mark `shared` and skip with a clear reason when ../shared/data is absent."""
    skip = pytest.mark.skipif(not SHARED.is_dir(),
                              reason=f"needs ../shared/data beside the repository ({SHARED})")
    return pytest.mark.shared(skip(test))  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------- builders
def affine(src: str, weight: list[list[float]] | np.ndarray, bias: list[float] | np.ndarray
           ) -> ops.Affine:
    w = np.asarray(weight, dtype=np.float64)
    return ops.Affine((src,), (w.shape[0],), w, np.asarray(bias, dtype=np.float64))


def ones_net() -> Network:
    """All-ones 2-2-1 net::

        x0 ─┬─> h0 = x0 + x1 ─> r0 ─┐
            ╳                        ├─> y = r0 + r1        on [-1, 1]^2: y in [0, 4]
        x1 ─┴─> h1 = x0 + x1 ─> r1 ─┘
    """
    return Network([
        ("x", ops.Input((), (2,))),
        ("h", affine("x", np.ones((2, 2)), [0, 0])),
        ("r", ops.Relu(("h",), (2,))),
        ("y", affine("r", np.ones((1, 2)), [0])),
    ], "y")


def cancel_net() -> Network:
    """Two stable-active ReLUs that cancel::

        x in [0,1]^2 ─> h = (x0 + x1 + 1, x0 + x1) ─> r = relu(h) ─> y = r0 - r1 = 1

    Interval: r0 in [1, 3], r1 in [0, 2], so y in [-1, 3]. Symbolic: exactly [1, 1].
    """
    return Network([
        ("x", ops.Input((), (2,))),
        ("h", affine("x", [[1, 1], [1, 1]], [1, 0])),
        ("r", ops.Relu(("h",), (2,))),
        ("y", affine("r", [[1, -1]], [0])),
    ], "y")


def skip_net() -> Network:
    """A residual Add around an unstable ReLU::

        x in [-1, 1] ─> h = 2x + 1 ─> r = relu(h) ──┐
           └──────────> n = -x ─────────────────────┴─> y = r + n

    True range of y: [0.5, 2]. Interval: r in [0, 3], n in [-1, 1] => y in [-1, 4].
    Symbolic: alpha = 1 (u = 3 > -l = 1): r >= 2x + 1, so y >= x + 1 >= 0;
    upper line r <= 3/4 (h + 1) = 1.5 x + 1.5, so y <= 0.5 x + 1.5 <= 2. => [0, 2].
    """
    return Network([
        ("x", ops.Input((), (1,))),
        ("h", affine("x", [[2.0]], [1.0])),
        ("r", ops.Relu(("h",), (1,))),
        ("n", ops.Scale(("x",), (1,), np.array([-1.0]), np.array([0.0]))),
        ("y", ops.Add(("r", "n"), (1,))),
    ], "y")


def maxpool_net() -> Network:
    """A 2x2 image, one 2x2 max-pool window, then `out = m - x1`::

        x (1,2,2) ─> m = max(x0..x3) ─┐
           └──────────────────────────┴─> c = concat(m, x) ─> out = c0 - c2 = m - x1
    """
    return Network([
        ("x", ops.Input((), (1, 2, 2))),
        ("m", ops.MaxPool(("x",), (1, 1, 1), (1, 2, 2), (2, 2), (2, 2), (0, 0, 0, 0), (1, 1))),
        ("c", ops.Concat(("m", "x"), (5,), np.arange(5))),
        ("out", affine("c", [[1, 0, -1, 0, 0]], [0])),
    ], "out")


def residual_net(seed: int = 0) -> Network:
    """Seeded random conv net with a residual connection::

        x (1,6,6) ─> s = 4x - 2 ─> c1 = conv3x3 (4,6,6) ─> r1 = relu ─┬─> c2 = conv ─┐
                                                                      └─────────────┴─> a = c2 + r1
        a ─> r2 = relu ─> f = flatten (144) ─> fc = affine (10)
    """
    rng = np.random.default_rng(seed)

    def conv(src: str, cin: int) -> ops.Conv:
        return ops.Conv((src,), (4, 6, 6), (cin, 6, 6), rng.normal(size=(4, cin, 3, 3)) / 3,
                        rng.normal(size=4) / 4, (1, 1), (1, 1, 1, 1), (1, 1), 1)

    return Network([
        ("x", ops.Input((), (1, 6, 6))),
        ("s", ops.Scale(("x",), (1, 6, 6), np.full(36, 4.0), np.full(36, -2.0))),
        ("c1", conv("s", 1)),
        ("r1", ops.Relu(("c1",), (4, 6, 6))),
        ("c2", conv("r1", 4)),
        ("a", ops.Add(("c2", "r1"), (4, 6, 6))),
        ("r2", ops.Relu(("a",), (4, 6, 6))),
        ("f", ops.Permute(("r2",), (144,), np.arange(144), 144)),
        ("fc", affine("f", rng.normal(size=(10, 144)) / 12, rng.normal(size=10) / 4)),
    ], "fc")


def approx(bounds: Bounds, name: str, lower: list[float], upper: list[float]) -> None:
    """Bounds equal the expected ones up to the rounding slack, and contain them."""
    lo, hi = bounds.flat(name)
    assert np.all(lo <= np.asarray(lower)) and np.all(hi >= np.asarray(upper))
    np.testing.assert_allclose(lo, lower, atol=1e-12)
    np.testing.assert_allclose(hi, upper, atol=1e-12)


@lru_cache(maxsize=None)
def load(rel: str) -> Network:
    return milpverify.load_onnx(SHARED / rel)


@lru_cache(maxsize=1)
def mnist() -> np.ndarray:
    return np.load(SHARED / "mnist" / "mnist_test.npz")["images"][:20] / 255.0


def linf_box(x: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    return np.clip(x - eps, 0.0, 1.0), np.clip(x + eps, 0.0, 1.0)


# ---------------------------------------------------------------------------- exact answers
def test_ones_net() -> None:
    b = symbolic_bounds(ones_net(), [-1, -1], [1, 1])
    approx(b, "h", [-2, -2], [2, 2])
    approx(b, "y", [0], [4])
    assert b.method == "symbolic" and b.details["symbolic_nodes"] == ["h", "y"]


def test_cancellation_strictly_tighter() -> None:
    net = cancel_net()
    approx(interval_bounds(net, [0, 0], [1, 1]), "y", [-1], [3])
    approx(symbolic_bounds(net, [0, 0], [1, 1]), "y", [1], [1])


def test_residual_add_strictly_tighter() -> None:
    net = skip_net()
    approx(interval_bounds(net, [-1], [1]), "y", [-1], [4])
    b = symbolic_bounds(net, [-1], [1])
    approx(b, "y", [0], [2])
    assert b.relu_cases == {"r": {"active": 0, "inactive": 0, "unstable": 1}}


def test_maxpool_undecided_and_decided() -> None:
    net = maxpool_net()
    lo = np.array([0, 2, -1, 0.5])
    approx(interval_bounds(net, lo, [1, 3, 0, 2.5]), "out", [-1], [1])
    approx(symbolic_bounds(net, lo, [1, 3, 0, 2.5]), "out", [0], [1])  # m >= x1, m <= 3
    approx(symbolic_bounds(net, lo, [1, 3, 0, 1.5]), "out", [0], [0])  # m == x1 exactly


def test_linear_net_sound_in_exact_arithmetic() -> None:
    """A 4-layer *linear* net: CROWN is exact (attained at a vertex); compare with Fractions."""
    rng = np.random.default_rng(3)
    sizes = [3, 5, 4, 4, 2]
    ws = [rng.normal(size=(sizes[i + 1], sizes[i])) / 3 for i in range(4)]
    bs = [rng.normal(size=sizes[i + 1]) / 7 for i in range(4)]
    nodes: list[tuple[str, ops.Op]] = [("x", ops.Input((), (3,)))]
    for i, (w, b) in enumerate(zip(ws, bs)):
        nodes.append((f"l{i}", affine(nodes[-1][0], w, b)))
    net = Network(nodes, "l3")
    lo_in, hi_in = np.array([0.1, -0.3, 1 / 3]), np.array([0.7, 0.2, 0.9])
    lo, hi = symbolic_bounds(net, lo_in, hi_in).flat("l3")

    def exact(x: tuple[Fraction, ...]) -> list[Fraction]:
        v = list(x)
        for w, b in zip(ws, bs):
            v = [sum((Fraction(w[k, j]) * v[j] for j in range(len(v))), Fraction(b[k]))
                 for k in range(w.shape[0])]
        return v

    outs = [exact(tuple(Fraction(float(c)) for c in corner))
            for corner in itertools.product(*zip(lo_in, hi_in))]
    for k in range(2):
        e_lo, e_hi = min(o[k] for o in outs), max(o[k] for o in outs)
        assert Fraction(lo[k]) <= e_lo and e_hi <= Fraction(hi[k])
        assert float(e_lo - Fraction(lo[k])) < 1e-13 and float(Fraction(hi[k]) - e_hi) < 1e-13


def test_relu_relaxation_valid_in_exact_arithmetic() -> None:
    rng = np.random.default_rng(4)
    lower = -np.abs(rng.normal(size=500)) * 10.0 ** rng.integers(-6, 6, size=500)
    upper = np.abs(rng.normal(size=500)) * 10.0 ** rng.integers(-6, 6, size=500)
    relax = relax_relu(ops.Relu(("h",), (500,)), lower, upper)
    for i in range(500):
        s, t = Fraction(relax.hi[i]), Fraction(relax.c_hi[i])
        assert s * Fraction(lower[i]) + t >= 0
        assert s * Fraction(upper[i]) + t >= Fraction(upper[i])
    np.testing.assert_array_equal(relax.lo, (upper > -lower).astype(float))
    stable = relax_relu(ops.Relu(("h",), (2,)), np.array([0.0, -2.0]), np.array([1.0, 0.0]))
    assert stable.lo.tolist() == stable.hi.tolist() == [1.0, 0.0]
    assert stable.c_hi.tolist() == [0.0, 0.0]


def test_maxpool_relaxation() -> None:
    op = ops.MaxPool(("x",), (1, 1, 2), (1, 2, 3), (2, 2), (1, 1), (0, 0, 0, 0), (1, 1))
    # windows: {0, 1, 3, 4} and {1, 2, 4, 5}
    lower = np.array([0.0, 1.0, 5.0, 0.0, 0.5, -1.0])
    upper = np.array([2.0, 3.0, 6.0, 1.0, 0.9, 0.0])
    relax = relax_maxpool(op, lower, upper)
    assert relax.lo.toarray().nonzero()[1].tolist() == [1, 2]  # argmax of the lower bounds
    assert relax.hi.toarray().nonzero()[0].tolist() == [1]  # window 2 is decided (5 >= 3)
    assert relax.c_hi.tolist() == [3.0, 0.0]


def test_base_is_respected_and_checked() -> None:
    net = ones_net()
    tight = symbolic_bounds(net, [0, 0], [0.5, 0.5])
    again = symbolic_bounds(net, [0, 0], [0.5, 0.5], base=tight)
    assert contains(tight, again)
    with pytest.raises(InvalidInputError,
                       match=r"Bounds at node 'h' do not intersect .* same input box"):
        symbolic_bounds(net, [-1, -1], [-0.5, -0.5], base=tight)


def test_dispatch_and_targets() -> None:
    net = residual_net()
    assert symbolic_targets(net) == ["c1", "a", "fc"]
    b = bounds_for_box(net, np.zeros(36), np.ones(36), "symbolic")
    assert b.method == "symbolic" and set(b.pre) == set(net.order)
    for name, op in net.items():
        assert b.pre[name][0].shape == op.shape
    assert set(b.relu_cases) == {"r1", "r2"}


def test_bound_vertices_minimise_each_row() -> None:
    rng = np.random.default_rng(3)
    coef = rng.normal(size=(5, 4))
    coef[0, 1] = 0.0
    lo, hi = -rng.random(4), rng.random(4)
    corners = np.array(list(itertools.product(*zip(lo, hi))))
    got = bound_vertices(coef, lo, hi)
    assert got.shape == (5, 4) and got[0, 1] == lo[1]
    np.testing.assert_allclose(np.einsum("ij,ij->i", coef, got), (coef @ corners.T).min(axis=1))


def test_output_vertices_attain_exact_linear_bounds() -> None:
    """A linear net is bounded exactly, so f_j at the vertex of row j (row size + j) is
    the lower (upper) bound of output j; a net ending in a ReLU records no rows."""
    rng = np.random.default_rng(4)
    net = Network([("x", ops.Input((), (3,))),
                   ("h", affine("x", rng.normal(size=(4, 3)), rng.normal(size=4))),
                   ("y", affine("h", rng.normal(size=(2, 4)), rng.normal(size=2)))], "y")
    lo, hi = np.zeros(3), np.ones(3)
    b = symbolic_bounds(net, lo, hi)
    vertices = b.details["output_vertices"]
    assert vertices.shape == (4, 3) and np.all((vertices == lo) | (vertices == hi))
    low, up = b.flat("y")
    np.testing.assert_allclose(net.forward(vertices[:2]).diagonal(), low, atol=1e-12)
    np.testing.assert_allclose(net.forward(vertices[2:]).diagonal(), up, atol=1e-12)
    relu_out = Network([*[(n, op) for n, op in net.items()], ("r", ops.Relu(("y",), (2,)))], "r")
    assert symbolic_bounds(relu_out, lo, hi).details["output_vertices"].shape == (0, 3)


# ---------------------------------------------------------------------------- soundness
def sample_box(lo: np.ndarray, hi: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` points: half uniform in the box, half random vertices."""
    u = rng.uniform(size=(n, lo.size))
    u[n // 2:] = np.round(u[n // 2:])
    return lo + u * (hi - lo)  # type: ignore[no-any-return]


class TorchNet:
    """A differentiable float64 copy of a `Network` for PGD (convolutions via `conv2d`)."""

    def __init__(self, net: Network) -> None:
        self.net = net
        self.params: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for name, op in net.items():
            if isinstance(op, ops.Conv):
                self.params[name] = (torch.from_numpy(op.weight), torch.from_numpy(op.bias))
            elif isinstance(op, ops.LinearOp) and not isinstance(op, (ops.Scale, ops.Permute)):
                m, b = op.linear_map
                dense = m.toarray() if hasattr(m, "toarray") else m
                self.params[name] = (torch.from_numpy(np.ascontiguousarray(dense.T)),
                                     torch.from_numpy(b))

    def _conv(self, name: str, op: ops.Conv, x: torch.Tensor) -> torch.Tensor:
        top, left, bottom, right = op.pads
        img = torch.nn.functional.pad(x.reshape(-1, *op.in_shape), (left, right, top, bottom))
        out = torch.nn.functional.conv2d(img, *self.params[name], stride=op.strides,
                                         dilation=op.dilations, groups=op.group)
        return out.reshape(x.shape[0], -1)

    def _apply(self, name: str, op: ops.Op, args: list[torch.Tensor]) -> torch.Tensor:
        if isinstance(op, ops.Conv):
            return self._conv(name, op, args[0])
        if isinstance(op, ops.Scale):
            return args[0] * torch.from_numpy(op.scale) + torch.from_numpy(op.shift)
        if isinstance(op, ops.Permute):
            return args[0][:, torch.from_numpy(op.index)]
        if isinstance(op, ops.LinearOp):
            return args[0] @ self.params[name][0] + self.params[name][1]
        if isinstance(op, ops.Relu):
            return args[0].clamp_min(0.0)
        if isinstance(op, ops.MaxPool):
            pad = torch.full((args[0].shape[0], 1), -torch.inf, dtype=args[0].dtype)
            return torch.cat([args[0], pad], 1)[:, torch.from_numpy(op.windows)].amax(-1)
        if isinstance(op, ops.Add):
            return args[0] + args[1]
        return torch.cat(args, 1)[:, torch.from_numpy(op.index)]

    def forward_all(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        vals: dict[str, torch.Tensor] = {}
        for name, op in self.net.items():
            vals[name] = x if isinstance(op, ops.Input) else \
                self._apply(name, op, [vals[a] for a in op.inputs])
        return vals


def pgd_points(net: Network, lo: np.ndarray, hi: np.ndarray, targets: list[tuple[str, int, float]],
               rng: np.random.Generator, steps: int = 40) -> np.ndarray:
    """Signed-gradient PGD in the box maximising `sign * y_node[idx]`, one row per target.

    Runs torch on one thread (small batches; avoids OpenMP spinning on a busy machine).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _pgd(net, lo, hi, targets, rng, steps)
    finally:
        torch.set_num_threads(threads)


def _pgd(net: Network, lo: np.ndarray, hi: np.ndarray, targets: list[tuple[str, int, float]],
         rng: np.random.Generator, steps: int) -> np.ndarray:
    model = TorchNet(net)
    lo_t, hi_t = torch.from_numpy(lo), torch.from_numpy(hi)
    x = torch.from_numpy(sample_box(lo, hi, len(targets), rng))
    groups = {}  # node -> (rows, neuron indices, signs)
    for node in dict.fromkeys(t[0] for t in targets):
        rows = [r for r, t in enumerate(targets) if t[0] == node]
        groups[node] = (torch.tensor(rows), torch.tensor([targets[r][1] for r in rows]),
                        torch.tensor([targets[r][2] for r in rows], dtype=torch.float64))
    for it in range(steps):
        x.requires_grad_(True)
        vals = model.forward_all(x)
        objective = sum((sign * vals[node][rows, idx]).sum()
                        for node, (rows, idx, sign) in groups.items())
        (grad,) = torch.autograd.grad(objective, x)
        step = (hi_t - lo_t) * 0.5 * (1.0 - it / steps) + 1e-3 * (hi_t - lo_t)
        x = torch.minimum(torch.maximum(x.detach() + step * grad.sign(), lo_t), hi_t)
    return x.detach().numpy()


def widest_targets(net: Network, bounds: Bounds, per_node: int = 5) -> list[tuple[str, int, float]]:
    """The `per_node` widest neurons of every non-input node, maximised and minimised."""
    out = []
    for name in net.order[1:]:
        lo, hi = bounds.flat(name)
        for i in np.argsort(hi - lo)[::-1][:per_node]:
            out += [(name, int(i), 1.0), (name, int(i), -1.0)]
    return out


def assert_inside(net: Network, bounds: list[Bounds], points: np.ndarray) -> None:
    """Every node's float64 value at every point lies in every one of `bounds` (no tolerance)."""
    values = net.forward_all(points, flat=True)
    for b in bounds:
        for name in net.order:
            lo, hi = b.flat(name)
            below, above = (lo - values[name]).max(), (values[name] - hi).max()
            assert below <= 0 and above <= 0, (
                f"{b.method} bounds of {name!r} violated by {max(below, above):.3g}")


def check_soundness(net: Network, lo: np.ndarray, hi: np.ndarray, seed: int,
                    n_points: int = 10_000, with_alpha: bool = False) -> None:
    """Random points and PGD attacks on the 5 widest neurons per node stay in all bounds
    (interval, symbolic and, `with_alpha`, alpha with 10 iterations), which are nested."""
    rng = np.random.default_rng(seed)
    boxes = [interval_bounds(net, lo, hi), symbolic_bounds(net, lo, hi)]
    assert contains(boxes[0], boxes[1])
    if with_alpha:
        boxes.append(alpha_bounds(net, lo, hi, iterations=10))
        assert contains(boxes[1], boxes[2])
    targets = widest_targets(net, boxes[1])
    attacks = pgd_points(net, lo.ravel(), hi.ravel(), targets, rng)
    assert_inside(net, boxes, np.vstack([sample_box(lo.ravel(), hi.ravel(), n_points, rng),
                                         attacks]))
    # PGD works: on the first linear layer the symbolic bound is attained at a vertex.
    first = net.order[1]
    vals = net.forward_all(attacks, flat=True)[first]
    lo1, hi1 = boxes[1].flat(first)
    for row, (name, i, sign) in enumerate(targets):
        if name == first:
            bound = hi1[i] if sign > 0 else lo1[i]
            assert abs(vals[row, i] - bound) <= 1e-9 * (1 + abs(bound))


def test_soundness_residual_net() -> None:
    net = residual_net(seed=5)
    x = np.random.default_rng(6).uniform(size=36)
    check_soundness(net, np.clip(x - 0.2, 0, 1), np.clip(x + 0.2, 0, 1), seed=7)


@needs_shared
@pytest.mark.parametrize("rel, eps, n_points", [
    ("nets/mnist/wk17a_linf0.1.onnx", 0.1, 2_000),
    pytest.param("nets/mnist/wk17a_linf0.1.onnx", 0.1, 10_000, marks=pytest.mark.slow),
    ("nets/mnist/eran/mnist_relu_6_100.onnx", 0.03, 10_000),
    ("nets/mnist/planet/lenet.onnx", 0.1, 10_000),
])
def test_soundness_real_nets(rel: str, eps: float, n_points: int) -> None:
    """10,000 points (2,000 for WK17a outside `-m slow`) + PGD stay inside the bounds."""
    lo, hi = linf_box(mnist()[0].ravel(), eps)
    check_soundness(load(rel), lo, hi, seed=11, n_points=n_points)


@needs_shared
@pytest.mark.parametrize("rel", ["nets/mnist/wk17a_linf0.1.onnx",
                                 "nets/mnist/eran/mnist_relu_6_100.onnx",
                                 "nets/mnist/planet/lenet.onnx"])
@pytest.mark.parametrize("eps", [0.05, 0.1])
def test_symbolic_nested_in_interval(rel: str, eps: float) -> None:
    net = load(rel)
    for x in mnist()[:3]:
        lo, hi = linf_box(x, eps)
        ib, sb = interval_bounds(net, lo, hi), symbolic_bounds(net, lo, hi)
        assert contains(ib, sb)
        assert sb.unstable <= ib.unstable
        for relu in net.relu_nodes:
            assert sb.relu_cases[relu]["unstable"] <= ib.relu_cases[relu]["unstable"]


# ---------------------------------------------------------------------------- reference CROWN
def reference_crown(weights: list[np.ndarray], biases: list[np.ndarray], lo: np.ndarray,
                    hi: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Textbook dense CROWN for an MLP `W_k relu(...) + b_k` (no rounding care), each layer
    intersected with interval arithmetic on the previous layer's bounds, like `symbolic_bounds`."""
    c, r = (lo + hi) / 2, (hi - lo) / 2
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for k, (w, b) in enumerate(zip(weights, biases)):
        a, d = np.vstack([w, -w]), np.concatenate([b, -b])
        for j in range(k - 1, -1, -1):
            l, u = out[j]
            unstable = (l < 0) & (u > 0)
            alpha = np.where(l >= 0, 1.0, np.where(unstable & (u > -l), 1.0, 0.0))
            s = np.where(l >= 0, 1.0, np.where(unstable, u / np.where(unstable, u - l, 1.0), 0.0))
            d = d + np.minimum(a, 0) @ np.where(unstable, -s * l, 0.0)
            a = np.maximum(a, 0) * alpha + np.minimum(a, 0) * s
            d, a = d + a @ biases[j], a @ weights[j]
        low = a @ c - np.abs(a) @ r + d
        m = w.shape[0]
        if k:
            pl, pu = np.maximum(out[-1][0], 0), np.maximum(out[-1][1], 0)
            ic, ir = w @ ((pl + pu) / 2) + b, np.abs(w) @ ((pu - pl) / 2)
            low = np.concatenate([np.maximum(low[:m], ic - ir), np.maximum(low[m:], -ic - ir)])
        out.append((low[:m], -low[m:]))
    return out


def mlp_layers(net: Network) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    affines = [(n, op) for n, op in net.items() if isinstance(op, ops.Affine)]
    return [op.weight for _, op in affines], [op.bias for _, op in affines], [n for n, _ in affines]


def assert_matches_reference(net: Network, lo: np.ndarray, hi: np.ndarray) -> None:
    ws, bs, names = mlp_layers(net)
    b = symbolic_bounds(net, lo, hi)
    for name, (ref_lo, ref_hi) in zip(names, reference_crown(ws, bs, lo.ravel(), hi.ravel())):
        got_lo, got_hi = b.flat(name)
        scale = 1e-9 * (1 + np.abs(ref_lo) + np.abs(ref_hi))
        assert np.all(np.abs(got_lo - ref_lo) <= scale) and np.all(np.abs(got_hi - ref_hi) <= scale)


def test_matches_reference_crown_on_random_mlp() -> None:
    rng = np.random.default_rng(8)
    sizes = [20, 30, 30, 30, 5]
    nodes: list[tuple[str, ops.Op]] = [("x", ops.Input((), (20,)))]
    for i in range(4):
        w = rng.normal(size=(sizes[i + 1], sizes[i])) / np.sqrt(sizes[i])
        nodes.append((f"h{i}", affine(nodes[-1][0], w, rng.normal(size=sizes[i + 1]) / 4)))
        if i < 3:
            nodes.append((f"r{i}", ops.Relu((f"h{i}",), (sizes[i + 1],))))
    net = Network(nodes, "h3")
    x = rng.uniform(size=20)
    lo, hi = x - 0.3, x + 0.3
    assert symbolic_bounds(net, lo, hi).unstable > 10
    assert_matches_reference(net, lo, hi)


@needs_shared
def test_matches_reference_crown_on_eran() -> None:
    lo, hi = linf_box(mnist()[1].ravel(), 0.03)
    assert_matches_reference(load("nets/mnist/eran/mnist_relu_6_100.onnx"), lo, hi)
