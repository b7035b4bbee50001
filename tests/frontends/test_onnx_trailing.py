"""A classifier ending in Softmax/LogSoftmax/Sigmoid: dropped by default (ranking-invariant),
named in `net.notes` and `milpverify info`; rho unchanged; VNN-LIB refuses it naming the node;
with `drop_trailing_monotone=False`, or anywhere but at the end, one clear error.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import make_onnx, node, run_ort

from milpverify import UnsupportedModelError, cli, load_onnx, rho
from milpverify.core.witness import onnx_logits


def _classifier(rng, tail, opset=13, in_shape=("N", 4), **tail_attrs):
    """x -> Gemm -> Relu -> Gemm (logits, 3 classes) -> tail ops (one node each) -> y."""
    nodes = [node("Gemm", ["x", "W1", "b1"], "h", transB=1), node("Relu", ["h"], "r"),
             node("Gemm", ["r", "W2", "b2"], "logits" if tail else "y", transB=1)]
    prev = "logits"
    for k, op in enumerate(tail):
        out = "y" if k == len(tail) - 1 else f"t{k}"
        nodes.append(node(op, [prev], out, **tail_attrs))
        prev = out
    inits = {"W1": rng.standard_normal((6, 4)), "b1": rng.standard_normal(6),
             "W2": rng.standard_normal((3, 6)), "b2": rng.standard_normal(3)}
    return make_onnx(nodes, inits, [("x", in_shape)], [("y", None)], opset)


@pytest.mark.parametrize("tail,opset", [(["Softmax"], 13), (["Softmax"], 11),
                                        (["LogSoftmax"], 13), (["Sigmoid"], 13),
                                        (["Sigmoid"], 9)])
def test_trailing_op_is_dropped(rng, tail, opset):
    model = _classifier(rng, tail, opset)
    x = rng.uniform(0, 1, (50, 4)).astype(np.float32)
    net = load_onnx(model)
    assert net.dropped_output == f"{tail[-1]} node 'y'"
    assert any(f"dropped trailing {tail[-1]} node 'y'" in n for n in net.notes)
    logits = net.forward(x.astype(np.float64))
    probs = run_ort(model, x)
    np.testing.assert_array_equal(logits.argmax(axis=1), probs.argmax(axis=1))
    np.testing.assert_array_equal(np.argsort(logits, axis=1), np.argsort(probs, axis=1))
    # onnxruntime re-runs (witness checks) see the logits too: the origin is the cut model.
    np.testing.assert_allclose(onnx_logits(net, x), logits, rtol=1e-5, atol=1e-5)


def test_rho_is_the_same_as_without_the_softmax(rng):
    seed = int(rng.integers(1 << 30))
    with_softmax = load_onnx(_classifier(np.random.default_rng(seed), ["Softmax"]))
    logits_only = load_onnx(_classifier(np.random.default_rng(seed), []))
    x = np.full(4, 0.5)
    a = rho(with_softmax, x, time_limit_s=30)
    b = rho(logits_only, x, time_limit_s=30)
    assert a.status == b.status == "optimal"
    assert a.lower == pytest.approx(b.lower, abs=1e-6)
    assert a.upper == pytest.approx(b.upper, abs=1e-6)


def test_option_off_rejects_naming_the_node(rng):
    with pytest.raises(UnsupportedModelError,
                       match=r"'y' \(Softmax, opset 13\): it is not piecewise linear; only as "
                             r"the last op.*Supported ONNX ops:"):
        load_onnx(_classifier(rng, ["Softmax"]), drop_trailing_monotone=False)


def test_softmax_inside_the_network_is_rejected(rng):
    nodes = [node("Softmax", ["x"], "s"), node("Gemm", ["s", "W"], "y", transB=1)]
    model = make_onnx(nodes, {"W": rng.standard_normal((3, 4))}, [("x", ("N", 4))],
                      [("y", None)])
    with pytest.raises(UnsupportedModelError, match=r"'s' \(Softmax, opset 13\): it is not "
                                                    "piecewise linear"):
        load_onnx(model)


def test_softmax_over_part_of_the_outputs_is_rejected(rng):
    """Softmax over the last axis of a (2, 3) output normalises two groups separately."""
    model = make_onnx([node("MatMul", ["x", "W"], "m"), node("Softmax", ["m"], "y")],
                      {"W": rng.standard_normal((4, 3))}, [("x", ("N", 2, 4))], [("y", None)])
    with pytest.raises(UnsupportedModelError, match=r"Node 'y' \(Softmax, opset 13\).*"
                                                    r"normalises axis 2 of the output shape "
                                                    r"\[1, 2, 3\] separately"):
        load_onnx(model)


def _box_spec(tmp_path):
    spec = tmp_path / "p.vnnlib"
    spec.write_text("".join(f"(declare-const X_{i} Real)\n" for i in range(4))
                    + "".join(f"(declare-const Y_{j} Real)\n" for j in range(3))
                    + "".join(f"(assert (>= X_{i} 0.0))\n(assert (<= X_{i} 1.0))\n"
                              for i in range(4))
                    + "(assert (>= Y_0 0.9))\n")
    return spec


def test_vnnlib_refuses_naming_the_node(rng, tmp_path):
    from milpverify.vnn.verify import verify_vnnlib
    path = tmp_path / "softmax.onnx"
    onnx.save(_classifier(rng, ["Softmax"]), path)
    with pytest.raises(UnsupportedModelError, match=r"ends in Softmax node 'y'.*VNN-LIB "
                                                    r"properties constrain output values"):
        verify_vnnlib(path, _box_spec(tmp_path), timeout_s=10)


def test_vnnlib_cli_writes_error_and_one_line(rng, tmp_path, capsys):
    path, out = tmp_path / "softmax.onnx", tmp_path / "result.txt"
    onnx.save(_classifier(rng, ["Sigmoid"]), path)
    code = cli.main(["vnnlib", str(path), str(_box_spec(tmp_path)), "--out", str(out)])
    assert code != 0
    assert out.read_text().startswith("error")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Sigmoid node 'y'" in err[0]


def test_info_shows_the_note(rng, tmp_path, capsys):
    import json
    path = tmp_path / "softmax.onnx"
    onnx.save(_classifier(rng, ["LogSoftmax"]), path)
    assert cli.main(["info", str(path)]) == 0
    assert "dropped trailing LogSoftmax node 'y'" in capsys.readouterr().out
    assert cli.main(["info", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dropped_output"] == "LogSoftmax node 'y'"
