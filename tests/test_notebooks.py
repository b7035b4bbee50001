"""The notebooks in `notebooks/` run top to bottom without errors (executed with nbclient,
in the default suite: together they take about half a minute) and describe the bundled
default network as what it is."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_notebooks_exist():
    assert [p.name for p in NOTEBOOKS] == ["01_quickstart.ipynb",
                                           "02_exact_vs_approximate.ipynb"]


def _cells(path, kind):
    import json
    return ["".join(c["source"]) for c in json.loads(path.read_text(encoding="utf-8"))["cells"]
            if c["cell_type"] == kind]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_describe_the_default(path):
    """`load_default()` is the 784-32-16-10 MLP with pixels / 255, not the Planet LeNet."""
    from milpverify.runs.datasets import DEFAULT_NET, EMBEDDED_NETS
    assert DEFAULT_NET == "mnist_mlp_32_16" and EMBEDDED_NETS[DEFAULT_NET].pixel_divisor == 255
    for text in _cells(path, "markdown"):
        for sentence in text.replace("\n", " ").split(". "):
            if "default" in sentence and "Planet LeNet" in sentence:
                assert "planet_lenet" in sentence, sentence
    for code in _cells(path, "code"):
        for line in code.splitlines():
            if "256" in line:
                assert "planet_lenet" in line or "lenet" in line, line
            if "load_default()" in line:
                assert "Planet" not in line and "256" not in line, line


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path):
    nbformat = pytest.importorskip("nbformat", reason="needs nbformat (pip install "
                                   "'milpverify[test]')")
    nbclient = pytest.importorskip("nbclient", reason="needs nbclient (pip install "
                                   "'milpverify[test]')")
    pytest.importorskip("ipykernel", reason="needs ipykernel (pip install 'milpverify[test]')")
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [out for cell in notebook.cells if cell.cell_type == "code"
              for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    assert errors == []
