"""Tests of milpverify.vnn.spec: VNN-LIB parsing and VNN-COMP result files."""

from __future__ import annotations

import csv
import gzip
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA, TESTS_DIR

from milpverify.errors import InvalidInputError
from milpverify.ir.constraints import OutputConstraint
from milpverify.vnn.results import format_counterexample, parse_result, write_result
from milpverify.vnn.spec import read_vnnlib

HERE = TESTS_DIR
SPECS = HERE / "data" / "vnnlib"
SHARED = SHARED_DATA
MNIST_FC = SHARED / "vnncomp" / "mnist_fc_2022"
ERAN = SHARED / "vnncomp" / "eran_mnist_2021"


def rows(c: OutputConstraint) -> set[tuple[tuple[float, ...], float]]:
    """The atoms of a conjunction as a set, so tests do not depend on row order."""
    assert c.A.shape == (c.b.size, c.A.shape[1]) and c.A.dtype == c.b.dtype == np.float64
    return {(tuple(a), float(b)) for a, b in zip(c.A, c.b)}


def robustness_rows(label: int, n: int = 10) -> list[set]:
    """Unsafe disjuncts 'y_j >= y_label' for j != label: row e_label - e_j, b = 0."""
    return [{(tuple(np.eye(n)[label] - np.eye(n)[j]), 0.0)} for j in range(n) if j != label]


# ------------------------------------------------------------------ real VNN-COMP specs


@pytest.fixture(scope="module")
def mnist_images() -> np.ndarray:
    if not (SHARED / "mnist" / "mnist_test.npz").exists():
        pytest.skip(f"shared test data not found at {SHARED}")
    return np.load(SHARED / "mnist" / "mnist_test.npz")["images"].reshape(10000, -1) / 255.0


def check_robustness_spec(path: Path, x: np.ndarray, label: int, eps: float) -> None:
    spec = read_vnnlib(path, n_inputs=784, n_outputs=10)
    assert spec.path == str(path) and (spec.n_inputs, spec.n_outputs) == (784, 10)
    (p,) = spec.properties
    assert p.input_lower.dtype == np.float64 and p.input_lower.shape == (784,)
    assert np.all(0.0 <= p.input_lower) and np.all(p.input_upper <= 1.0)
    assert np.all(p.input_lower <= x) and np.all(x <= p.input_upper)  # exact containment
    # radius <= eps up to the float32/8-digit rounding of the files' bounds
    assert np.all(p.input_upper - x <= eps + 1e-7) and np.all(x - p.input_lower <= eps + 1e-7)
    np.testing.assert_allclose(p.input_lower, np.clip(x - eps, 0, 1), rtol=0, atol=1e-7)
    np.testing.assert_allclose(p.input_upper, np.clip(x + eps, 0, 1), rtol=0, atol=1e-7)
    assert [rows(c) for c in p.unsafe] == robustness_rows(label)


def test_mnist_fc_2022_specs(mnist_images: np.ndarray) -> None:
    table = MNIST_FC / "results_vnncomp2022_consensus.csv"
    if not table.exists():
        pytest.skip(f"VNN-COMP mnist_fc data not found at {MNIST_FC}")
    seen = {}
    for r in csv.DictReader(table.open()):
        seen[r["vnnlib"]] = (int(r["mnist_test_index"]), int(r["label"]), float(r["eps"]))
    files = sorted((MNIST_FC / "vnnlib").glob("*.vnnlib"))
    assert len(files) == 30 and set(seen) == {f.name for f in files}
    for f in files:
        idx, label, eps = seen[f.name]
        check_robustness_spec(f, mnist_images[idx], label, eps)


def test_eran_mnist_2021_specs(mnist_images: np.ndarray) -> None:
    table = ERAN / "results_vnncomp2021_consensus.csv"
    if not table.exists():
        pytest.skip(f"VNN-COMP eran data not found at {ERAN}")
    labels = {r["vnnlib"]: int(r["label"]) for r in csv.DictReader(table.open())}
    files = sorted((ERAN / "specs" / "mnist").glob("*.vnnlib"))
    assert len(files) == 36 and set(labels) == {f.name for f in files}
    for f in files:
        idx = int(re.fullmatch(r"mnist_spec_idx_(\d+)_eps_0\.01500\.vnnlib", f.name).group(1))
        check_robustness_spec(f, mnist_images[idx], labels[f.name], 0.015)


# ------------------------------------------------------------------ hand-written specs


def test_mixed_output_atoms_comments_and_constants() -> None:
    spec = read_vnnlib(SPECS / "mixed_outputs.vnnlib")
    assert (spec.n_inputs, spec.n_outputs) == (2, 3)
    (p,) = spec.properties
    np.testing.assert_array_equal(p.input_lower, [-1.0, 0.25])
    np.testing.assert_array_equal(p.input_upper, [1.0, 0.5])
    common = ((0.0, -1.0, 0.0), 7.0)  # (<= (- Y_0 Y_0 Y_1) 7); the Y_0 terms cancel
    assert [rows(c) for c in p.unsafe] == [
        {common, ((-1.0, 1.0, 0.0), 0.0), ((0.0, 0.0, 1.0), 0.5)},
        {common, ((0.0, -1.0, 1.0), -0.5)},
        {common, ((1.0, 1.0, 0.0), 1.0), ((0.0, 0.0, 0.25), 1.0)},
        {common, ((-1.0, 0.0, -0.25), 0.0)},  # the true constant atom is dropped
    ]  # and the disjunct with the false atom (>= 0 1) is gone


def test_multiple_input_regions_are_grouped_by_box() -> None:
    spec = read_vnnlib(str(SPECS / "multi_region.vnnlib"))
    a, b = spec.properties
    np.testing.assert_array_equal(a.input_lower, [0, 0])
    np.testing.assert_array_equal(a.input_upper, [1, 1])
    assert [rows(c) for c in a.unsafe] == [{((-1.0, 1.0), 0.0)}, {((1.0, 0.0), -3.0)}]
    np.testing.assert_array_equal(b.input_lower, [2, -1])
    np.testing.assert_array_equal(b.input_upper, [3, -0.5])
    assert [rows(c) for c in b.unsafe] == [{((1.0, -1.0), 0.0)}]


def test_nested_or_and_top_level_disjunctions_expand() -> None:
    (p,) = read_vnnlib(SPECS / "nested.vnnlib").properties
    assert (p.input_lower[0], p.input_upper[0]) == (0.0, 0.1)
    y0, y1 = ((1.0, 0.0), 0.0), ((0.0, 1.0), 1.0)
    y1b, ny0, ny1 = ((0.0, 1.0), 2.0), ((-1.0, 0.0), 1.0), ((0.0, -1.0), 2.0)
    assert [rows(c) for c in p.unsafe] == [
        {y0, ny0}, {y0, ny1}, {y1, y1b, ny0}, {y1, y1b, ny1}
    ]


def test_gzip_and_text_input_give_the_same_spec(tmp_path: Path) -> None:
    text = (SPECS / "mixed_outputs.vnnlib").read_text()
    gz = tmp_path / "spec.vnnlib.gz"
    with gzip.open(gz, "wt") as fh:
        fh.write(text)
    from_gz, from_text = read_vnnlib(gz), read_vnnlib(text)
    assert from_gz.path == str(gz) and from_text.path is None
    for p, q in zip(from_gz.properties, from_text.properties, strict=True):
        np.testing.assert_array_equal(p.input_lower, q.input_lower)
        assert [rows(c) for c in p.unsafe] == [rows(c) for c in q.unsafe]


def test_all_disjuncts_false_gives_no_property() -> None:
    spec = read_vnnlib("(declare-const X_0 Real)(declare-const Y_0 Real)"
                       "(assert (<= X_0 1))(assert (>= X_0 0))(assert (or (> 0 1) (< 2 1)))")
    assert spec.properties == ()


def test_negative_zero_bounds_are_normalised() -> None:
    spec = read_vnnlib("(declare-const X_0 Real)(declare-const Y_0 Real)"
                       "(assert (or (and (<= X_0 -0.0) (>= X_0 -1) (<= Y_0 0))"
                       "            (and (<= (* 2 X_0) 0) (>= X_0 -1) (>= Y_0 1))))")
    (p,) = spec.properties  # both boxes are [-1, 0]
    assert len(p.unsafe) == 2 and not np.signbit(p.input_upper[0])
    with pytest.raises(ValueError, match="read-only"):
        p.input_lower[0] = 0.0


# ------------------------------------------------------------------ VNN-LIB 2.0

def as_vnnlib2(text: str, n_inputs: int, n_outputs: int) -> str:
    """A VNN-LIB 1.0 spec rewritten in 2.0 syntax: X_i -> X[0, i], Y_j -> Y[0, j]."""
    body = re.sub(r"\(declare-const [XY]_\d+ Real\)", "", text)
    body = re.sub(r"\b([XY])_(\d+)\b", r"\1[0, \2]", body)
    return (f"(vnnlib-version <2.0>)\n(declare-network f\n  (declare-input X float32 [1, "
            f"{n_inputs}])\n  (declare-output Y float32 [1, {n_outputs}]))\n{body}")


def same_spec(a, b) -> bool:
    return (a.n_inputs, a.n_outputs, len(a.properties)) == (b.n_inputs, b.n_outputs,
                                                           len(b.properties)) and all(
        np.array_equal(p.input_lower, q.input_lower) and np.array_equal(p.input_upper,
                                                                       q.input_upper)
        and len(p.unsafe) == len(q.unsafe)
        and all(np.array_equal(c.A, d.A) and np.array_equal(c.b, d.b)
                for c, d in zip(p.unsafe, q.unsafe))
        for p, q in zip(a.properties, b.properties))


def test_every_shared_spec_reads_the_same_in_vnnlib_2_syntax() -> None:
    specs = sorted(SHARED.glob("vnncomp/*/*/*.vnnlib")) + sorted(SHARED.glob("vnncomp/*/*.vnnlib"))
    if not specs:
        pytest.skip("needs ../shared/data beside the repository")
    for path in specs[::7]:
        v1 = read_vnnlib(path)
        v2 = read_vnnlib(as_vnnlib2(path.read_text(), v1.n_inputs, v1.n_outputs))
        assert same_spec(v1, v2), path.name


def test_vnnlib_2_tensor_elements_are_flattened_in_c_order() -> None:
    spec = read_vnnlib("""(vnnlib-version <2.0>)
        (declare-network net (declare-input X float32 [2, 3]) (declare-output Y float64 [2]))
        (assert (and (>= X [1, 2] -1) (<= X[1,2] 1)))
        """ + "".join(f"(assert (>= X[{i}, {j}] 0))(assert (<= X[{i}, {j}] 0.5))\n"
                      for i in range(2) for j in range(3) if (i, j) != (1, 2))
                       + "(assert (<= (- Y[1] Y[0]) 0.25))")
    (prop,) = spec.properties
    assert (spec.n_inputs, spec.n_outputs) == (6, 2)
    np.testing.assert_array_equal(prop.input_lower, [0, 0, 0, 0, 0, -1])
    np.testing.assert_array_equal(prop.input_upper, [0.5] * 5 + [1])
    np.testing.assert_array_equal(prop.unsafe[0].A, [[-1, 1]])
    np.testing.assert_array_equal(prop.unsafe[0].b, [0.25])


V2_HEAD = "(vnnlib-version <2.0>)(declare-network f (declare-input X float32 [1]) "


@pytest.mark.parametrize(("text", "match"), [
    ("(vnnlib-version <3.0>)", r"unsupported VNN-LIB version"),
    (V2_HEAD + "(declare-hidden H float32 [2]) (declare-output Y float32 [1]))",
     r"exactly one input and one output tensor"),
    (V2_HEAD + "(declare-output Y float32 [1]))(declare-network g (declare-input A float32 [1]) "
     "(declare-output B float32 [1]))", r"several networks"),
    (V2_HEAD.replace("float32", "int8") + "(declare-output Y float32 [1]))",
     r"malformed tensor declaration .*DTYPE one of"),
    (V2_HEAD + "(declare-output Y float32 [1]))(assert (<= X[0] 1))(assert (>= X[0] 0))"
     "(assert (<= Y[3] 0))", r"undeclared variable 'Y\[3\]'"),
])
def test_bad_vnnlib_2_specs_raise(text: str, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        read_vnnlib(text)


# ------------------------------------------------------------------ bad input

HEAD = "(declare-const X_0 Real)(declare-const Y_0 Real)(declare-const Y_1 Real)\n"
BOX = "(assert (<= X_0 1))(assert (>= X_0 0))\n"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (HEAD + BOX + "(assert (<= Y_0 1)", r"unbalanced parentheses: 1 '\(' not closed"),
        (HEAD + BOX + "(assert (<= Y_0 1)))", r"unbalanced parentheses: unexpected '\)'"),
        (HEAD + BOX + "(assert (<= Y_7 1))", r"undeclared variable 'Y_7' in '\(<= Y_7 1\)'"),
        (HEAD + BOX + "(assert (<= (* Y_0 Y_1) 1))", r"non-linear term .* '\(\* Y_0 Y_1\)'"),
        (HEAD + BOX + "(assert (=> (<= Y_0 1) (<= Y_1 1)))", r"unsupported operator '=>'"),
        (HEAD + BOX + "(assert (not (<= Y_0 1)))", r"unsupported operator 'not'.*supported:"),
        (HEAD + BOX + "(assert (<= (+ X_0 Y_0) 1))", r"mixes input \(X\) and output \(Y\)"),
        (HEAD + BOX + "(assert (<= (+ X_0 X_0) 1))(assert (<= (- X_0 Y_1) 1))", r"mixes input"),
        (HEAD + "(assert (<= X_0 1))(assert (<= Y_0 1))", r"missing lower or upper bound .*X_0"),
        (HEAD + "(assert (<= X_0 0))(assert (>= X_0 1))", r"lower bound 1\.0 > upper bound 0\.0"),
        (HEAD + BOX + "(assert (<= Y_0 1e999))", r"non-finite number '1e999'"),
        (HEAD + BOX + "(assert (<= (* 1e300 Y_0) (* 1e300 1e300)))", r"arithmetic overflow"),
        (HEAD + BOX + "(assert (<= Y_0 1_000))", r"unknown symbol '1_000'"),
        (HEAD + BOX + "(assert (<= Y_0 inf))", r"unknown symbol 'inf'"),
        ("(declare-const X_1 Real)(declare-const Y_0 Real)", r"missing e\.g\. X_0"),
        ("(declare-const X_0 Int)(declare-const Y_0 Real)", r"malformed declaration"),
        (HEAD + "(declare-const X_0 Real)", r"'X_0' declared twice"),
        (HEAD + BOX + "(push 1)", r"unsupported top-level command"),
    ],
)
def test_bad_specs_raise(text: str, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        read_vnnlib(text)


def test_error_names_the_file_and_the_expression(tmp_path: Path) -> None:
    f = tmp_path / "bad.vnnlib"
    f.write_text(HEAD + BOX + "(assert (or (<= Y_0 1) (>= (* Y_0 Y_1 " + "1 " * 100 + ") 0)))")
    with pytest.raises(InvalidInputError, match=r"bad\.vnnlib: non-linear term .*\.\.\.'"):
        read_vnnlib(f)


def test_missing_file_and_size_mismatch(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"VNN-LIB file not found: .*nope\.vnnlib"):
        read_vnnlib(tmp_path / "nope.vnnlib")
    with pytest.raises(InvalidInputError, match=r"declares 1 X variables, expected 784"):
        read_vnnlib(HEAD + BOX, n_inputs=784)


def test_dnf_blow_up_is_refused() -> None:
    many = "".join("(assert (or (<= Y_0 0) (<= Y_1 0)))" for _ in range(20))  # 2**20
    with pytest.raises(InvalidInputError, match=r"1048576 disjuncts, more than MAX_DISJUNCTS"):
        read_vnnlib(HEAD + BOX + many)


# ------------------------------------------------------------------ result files


def test_result_round_trip_is_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x, y = rng.random(784), rng.normal(size=10) * 1e3
    x[0], x[1], y[0] = 0.1, 1e-300, -0.0
    f = tmp_path / "out.txt"
    write_result(f, "sat", (x.reshape(1, 784).astype(np.float32), y))
    text = f.read_text()
    assert text.startswith("sat\n((X_0 0.10000000149011612)\n (X_1 0.0)\n (X_2 ")
    assert text.endswith(f" (Y_9 {float(y[9])!r}))\n")
    res, x2, y2 = parse_result(f)
    assert res == "sat"
    np.testing.assert_array_equal(x2, x.astype(np.float32).astype(np.float64))
    np.testing.assert_array_equal(y2, y)
    res3, x3, y3 = parse_result(text)
    assert res3 == "sat" and np.array_equal(x3, x2) and np.array_equal(y3, y2)
    for r in ("unsat", "timeout", "unknown", "error"):
        write_result(f, r)
        assert f.read_text() == r + "\n" and parse_result(f) == (r, None, None)


def test_format_counterexample_and_lenient_parsing() -> None:
    assert format_counterexample([0.5, 1], [2.0]) == "((X_0 0.5)\n (X_1 1.0)\n (Y_0 2.0))"
    res, x, y = parse_result("sat\n(\n(X_0 0.639929)\n(X_1 1)\n(Y_0 -2.5e-3)\n)\n")
    assert res == "sat" and x.tolist() == [0.639929, 1.0] and y.tolist() == [-0.0025]
    assert parse_result("violated") == ("sat", None, None)
    assert parse_result("holds\n") == ("unsat", None, None)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda p: write_result(p, "proved"), r"result must be one of"),
        (lambda p: write_result(p, "unsat", ([0.0], [1.0])), r"only goes with 'sat'"),
        (lambda p: write_result(p, "sat", ([np.nan], [1.0])), r"finite vector"),
        (lambda p: parse_result(p), r"result file not found"),
        (lambda p: parse_result("maybe\n"), r"first line must be one of"),
        (lambda p: parse_result("sat\n((X_0 1) (X_2 1) (Y_0 1))"), r"X_0\.\.X_n-1 without gaps"),
        (lambda p: parse_result("sat\n((X_0 1) (Y_0 abc))"), r"bad value 'abc' for Y_0"),
    ],
)
def test_bad_results_raise(tmp_path: Path, call, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        call(tmp_path / "missing_dir" / "r.txt" if "not found" in match else tmp_path / "r.txt")
