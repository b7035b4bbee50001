"""Test helpers: ONNX graph builders, an onnxruntime reference runner, activation regions.

Front-end tests build a model with `make_onnx`, run it with `run_ort`, and compare with
`milpverify.load_onnx(model).forward(x)` via `assert_matches_ort`. The brute-force
references of rho and of relaxed properties enumerate `activation_regions` of tiny MLPs;
`random_mlp` builds seeded Gaussian MLPs directly in the IR.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any, Union

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from scipy.optimize import linprog

from milpverify.ir import ops
from milpverify.ir.network import Network

Shape = Sequence[Union[int, str, None]]
ValueSpec = Union[tuple[str, Shape], tuple[str, None], onnx.ValueInfoProto]


def node(op_type: str, inputs: Sequence[str], outputs: Sequence[str] | str, *,
         name: str | None = None, **attrs: Any) -> onnx.NodeProto:
    """`helper.make_node` with a default node name (the first output) and a str-or-list output."""
    outs = [outputs] if isinstance(outputs, str) else list(outputs)
    return helper.make_node(op_type, list(inputs), outs, name=name or outs[0], **attrs)


def _value_info(spec: ValueSpec) -> onnx.ValueInfoProto:
    if isinstance(spec, onnx.ValueInfoProto):
        return spec
    name, shape = spec
    return helper.make_tensor_value_info(name, TensorProto.FLOAT,
                                         None if shape is None else list(shape))


def make_onnx(nodes: Sequence[onnx.NodeProto], initializers: Mapping[str, Any] | None = None,
              inputs: Sequence[ValueSpec] = (("x", ("N", 4)),),
              outputs: Sequence[ValueSpec] = (("y", None),), opset: int = 13, *,
              check: bool = True) -> onnx.ModelProto:
    """Build a model from nodes, named constant arrays and (name, shape) input/output specs.

    Float initializers are stored as float32, integer ones as int64. Shapes may use a string
    for a symbolic (batch) axis. The IR version is the smallest one that knows `opset`, so
    onnxruntime accepts the model.

    Example
    -------
    >>> make_onnx([node("Relu", ["x"], "y")], {}, [("x", ("N", 3))], [("y", None)], 13)
    """
    inits = []
    for name, value in (initializers or {}).items():
        arr = np.asarray(value)
        arr = arr.astype(np.int64) if arr.dtype.kind in "iub" else arr.astype(np.float32)
        inits.append(numpy_helper.from_array(arr, name))
    graph = helper.make_graph(list(nodes), "test", [_value_info(s) for s in inputs],
                              [_value_info(s) for s in outputs], inits)
    opset_ids = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opset_ids, producer_name="milpverify-tests")
    model.ir_version = helper.find_min_ir_version_for(opset_ids)
    if model.ir_version < 4:
        # Before IR version 4 every initializer must also be listed as a graph input.
        model.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                           for t in inits)
    if any(not o.type.tensor_type.HasField("shape") for o in model.graph.output):
        # Outputs given without a shape get the inferred one (the checker wants a shape).
        model = onnx.shape_inference.infer_shapes(model)
    shapes_known = all(o.type.tensor_type.HasField("shape") for o in model.graph.output)
    if check and shapes_known:
        onnx.checker.check_model(model)
    return model


def run_ort(model: onnx.ModelProto | bytes, x: np.ndarray, *,
            per_sample_shape: Sequence[int] | None = None) -> np.ndarray:
    """Run the single-input, single-output `model` on float32 `x`; returns (n, outputs) float64.

    With `per_sample_shape` (a fixed-batch model's input shape, batch included) the model is
    run once per sample; otherwise the whole batch `x` is fed at once.
    """
    import onnxruntime as ort
    data = model if isinstance(model, bytes) else model.SerializeToString()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x32 = np.asarray(x, dtype=np.float32)
    if per_sample_shape is None:
        out = session.run(None, {name: x32})[0]
        return np.asarray(out, dtype=np.float64).reshape(x32.shape[0], -1)
    rows = [session.run(None, {name: xi.reshape(tuple(per_sample_shape))})[0].reshape(-1)
            for xi in x32]
    return np.asarray(rows, dtype=np.float64)


def assert_matches_ort(model: onnx.ModelProto, x: np.ndarray, *, simplify_graph: bool,
                       rtol: float = 1e-5) -> None:
    """`load_onnx(model).forward(x)` equals onnxruntime within `rtol` relative to max(1, |y|)."""
    from milpverify import load_onnx
    x32 = np.asarray(x, dtype=np.float32)
    expected = run_ort(model, x32)
    net = load_onnx(model, simplify_graph=simplify_graph)
    got = net.forward(x32.astype(np.float64))
    assert got.shape == expected.shape, (got.shape, expected.shape)
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * scale)


def activation_regions(weights: list, n: int, domain: tuple[float, float] = (0.0, 1.0)
                       ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Non-empty activation regions of an MLP in the domain box (scipy HiGHS feasibility).

    `weights` = [(W, b), ...], a ReLU after every layer but the last. Each region is
    `(A_ub, b_ub, fa, fc)`: the region is `A_ub x <= b_ub`, and on it `f(x) = fa x + fc`.
    Independent of milpverify's encoder: the network is affine on each region, so
    minimising over all regions gives exact answers.
    """
    hidden = [w.shape[0] for w, _ in weights[:-1]]
    out = []
    for pattern in itertools.product([0, 1], repeat=sum(hidden)):
        masks, pos = [], 0
        for h in hidden:
            masks.append(np.array(pattern[pos:pos + h], dtype=float))
            pos += h
        a, c = np.eye(n), np.zeros(n)
        rows, rhs = [], []
        for (w, b), m in zip(weights[:-1], masks):
            a, c = w @ a, w @ c + b
            sign = np.where(m > 0, 1.0, -1.0)       # active: pre >= 0; inactive: pre <= 0
            rows.append(-(sign[:, None] * a))
            rhs.append(sign * c)
            a, c = m[:, None] * a, m * c
        a_ub, b_ub = np.vstack(rows), np.concatenate(rhs)
        feasible = linprog(np.zeros(n), A_ub=a_ub, b_ub=b_ub, bounds=[domain] * n,
                           method="highs")
        if feasible.status == 0:
            w, b = weights[-1]
            out.append((a_ub, b_ub, w @ a, w @ c + b))
    return out


def mlp(weights: list[tuple[np.ndarray, np.ndarray]], in_shape: tuple[int, ...]) -> Network:
    """x -> Affine -> Relu -> ... -> Affine (no ReLU after the last layer)."""
    nodes: list[tuple[str, ops.Op]] = [("x", ops.Input((), in_shape))]
    prev = "x"
    for k, (w, b) in enumerate(weights):
        nodes.append((f"fc{k}", ops.Affine((prev,), (w.shape[0],), w, b)))
        prev = f"fc{k}"
        if k < len(weights) - 1:
            nodes.append((f"relu{k}", ops.Relu((prev,), (w.shape[0],))))
            prev = f"relu{k}"
    return Network(nodes, prev)


def random_mlp(rng: np.random.Generator, sizes: list[int]) -> tuple[Network, list]:
    """A seeded `mlp` with Gaussian weights (biases scaled by 0.5), and its weights."""
    weights = [(rng.normal(size=(o, i)), rng.normal(size=o) * 0.5)
               for i, o in itertools.pairwise(sizes)]
    return mlp(weights, (sizes[0],)), weights


def conv_pool_residual_net(rng: np.random.Generator) -> Network:
    """Conv, ReLU, MaxPool, Affine, ReLU and a residual Add on a 1x4x4 input, seeded: every
    back-substitution and encoding rule of a small CNN."""
    nodes = [
        ("x", ops.Input((), (1, 4, 4))),
        ("conv", ops.Conv(("x",), (2, 3, 3), (1, 4, 4), rng.normal(size=(2, 1, 2, 2)),
                          rng.normal(size=2) * 0.1, (1, 1), (0, 0, 0, 0), (1, 1), 1)),
        ("relu", ops.Relu(("conv",), (2, 3, 3))),
        ("pool", ops.MaxPool(("relu",), (2, 2, 2), (2, 3, 3), (2, 2), (1, 1), (0, 0, 0, 0),
                             (1, 1))),
        ("fc", ops.Affine(("pool",), (8,), rng.normal(size=(8, 8)), rng.normal(size=8) * 0.1)),
        ("relu2", ops.Relu(("fc",), (8,))),
        ("res", ops.Add(("relu2", "pool"), (8,))),
        ("out", ops.Affine(("res",), (3,), rng.normal(size=(3, 8)), np.zeros(3))),
    ]
    return Network(nodes, "out")


def vnnlib_box_points(shared_data, rel_path: str, n: int, seed: int = 0) -> np.ndarray:
    """`n` float32 points for the shared network `rel_path` that has no image data set.

    The points are drawn from the input boxes of the VNN-LIB specs that `instances.csv` of the
    network's benchmark folder pairs with it: each box's centre and lower corner first, then
    uniform samples, cycling over the boxes. Shape ``(n, n_inputs)``.
    """
    from milpverify.vnn.spec import read_vnnlib

    bench = shared_data / rel_path.split("/onnx/")[0]
    onnx_name = rel_path.split("/onnx/")[1]
    specs = [line.split(",")[1] for line in (bench / "instances.csv").read_text().splitlines()
             if line.split(",")[0].strip() == f"onnx/{onnx_name}"]
    boxes = [(p.input_lower, p.input_upper) for spec in sorted(set(specs))
             for p in read_vnnlib(bench / spec.strip()).properties]
    rng = np.random.default_rng(seed)
    points = [(lo + hi) / 2 for lo, hi in boxes] + [lo for lo, _ in boxes]
    while len(points) < n:
        lo, hi = boxes[len(points) % len(boxes)]
        points.append(rng.uniform(lo, hi))
    return np.stack(points[:n]).astype(np.float32)


def pairwise(valid: Any = None, **axes: Sequence[Any]) -> list[Any]:
    """Test cases in which every pair of values of two axes occurs at least once.

    `axes` maps an argument name (or several, comma-separated, with tuple values) to its
    values; `valid(case)` (a dict of the names) drops combinations that do not type-check.
    The full product of an operator's attributes repeats what a few cases test; all pairs
    keep each attribute's interaction with every other (opset x attribute in particular).
    Returns `pytest.param`s for ``pytest.mark.parametrize(",".join(axes), ...)``.
    """
    import pytest

    names = list(axes)
    product = [combo for combo in itertools.product(*(range(len(axes[n])) for n in names))
               if valid is None or valid(_case(axes, names, combo))]
    needed = {pair for combo in product for pair in _pairs(combo)}
    chosen = []
    while needed:
        best = max(product, key=lambda combo: len(needed & _pairs(combo)))
        chosen.append(best)
        needed -= _pairs(best)
    params = []
    for combo in chosen:
        values: list[Any] = []
        for name, k in zip(names, combo):
            value = axes[name][k]
            values.extend(value if "," in name else [value])
        params.append(pytest.param(*values, id="-".join(f"{n.split(',')[0]}{k}"
                                                        for n, k in zip(names, combo))))
    return params


def _case(axes: Mapping[str, Sequence[Any]], names: list[str], combo: tuple[int, ...]
          ) -> dict[str, Any]:
    case: dict[str, Any] = {}
    for name, k in zip(names, combo):
        value = axes[name][k]
        case.update(zip(name.split(","), value) if "," in name else [(name, value)])
    return case


def _pairs(combo: tuple[int, ...]) -> set[tuple[int, int, int, int]]:
    return {(i, combo[i], j, combo[j]) for i, j in itertools.combinations(range(len(combo)), 2)}


def brute_force_rho(weights: list, x: np.ndarray, label: int,
                    domain: tuple[float, float] = (0.0, 1.0)) -> float:
    """min over activation regions and labels of the L-inf LP inside the region (HiGHS)."""
    return rho_over_regions(activation_regions(weights, len(x), domain), x, label, domain)


def rho_over_regions(regions, x: np.ndarray, label: int,
                     domain: tuple[float, float] = (0.0, 1.0)) -> float:
    """min over `regions` (``(A_ub, b_ub, fa, fc)``: f = fa x + fc on A_ub x <= b_ub) and
    labels j != label of the L-inf distance to a point of the region with f_j >= f_label."""
    n = len(x)
    best = math.inf
    for a_ub, b_ub, fa, fc in regions:
        for j in range(fa.shape[0]):
            if j == label:
                continue
            # variables (x', t): min t; |x' - x| <= t; f_j - f_label >= 0; region rows
            rows = np.vstack([np.r_[-(fa[j] - fa[label]), 0.0], np.c_[a_ub, np.zeros(len(a_ub))],
                              np.c_[np.eye(n), -np.ones(n)], np.c_[-np.eye(n), -np.ones(n)]])
            rhs = np.concatenate([[fc[j] - fc[label]], b_ub, x, -x])
            res = linprog(np.r_[np.zeros(n), 1.0], A_ub=rows, b_ub=rhs,
                          bounds=[domain] * n + [(0, None)], method="highs")
            if res.status == 0:
                best = min(best, res.fun)
    return best


def brute_force_rho_l2(weights: list, x: np.ndarray, label: int,
                       domain: tuple[float, float] = (0.0, 1.0)) -> float:
    """min over activation regions and labels of the L2 distance inside the region.

    Per region and label a convex QP: min ||x' - x||^2 s.t. region rows, f_j >= f_label,
    domain; a HiGHS LP finds a feasible start (or proves none), SLSQP the optimum.
    """
    from scipy.optimize import minimize
    n = len(x)
    best = math.inf
    for a_ub, b_ub, fa, fc in activation_regions(weights, n, domain):
        for j in range(fa.shape[0]):
            if j == label:
                continue
            rows = np.vstack([-(fa[j] - fa[label])[None], a_ub])
            rhs = np.concatenate([[fc[j] - fc[label]], b_ub])
            start = linprog(np.zeros(n), A_ub=rows, b_ub=rhs, bounds=[domain] * n,
                            method="highs")
            if start.status != 0:
                continue
            res = minimize(lambda z: float(np.sum((z - x) ** 2)), start.x,
                           jac=lambda z: 2 * (z - x), method="SLSQP", bounds=[domain] * n,
                           constraints=[{"type": "ineq",
                                         "fun": lambda z, a=rows, b=rhs: b - a @ z,
                                         "jac": lambda z, a=rows: -a}],
                           options={"ftol": 1e-15, "maxiter": 500})
            z = res.x if np.all(rows @ res.x <= rhs + 1e-9) else start.x
            best = min(best, float(np.linalg.norm(z - x)))
    return best
