"""Imports point one way; each third-party library is confined to its module (checked with `ast`).

Every import statement counts, including lazy ones inside functions. A rule lists the
milpverify modules a layer may import (a prefix allows its submodules too).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "milpverify"

# The layers, lowest first. A module may import modules of its own layer or of an earlier one;
# a module's layer is the longest prefix that names it. `bounds.tighten` needs the encoder and
# the solvers, so it sits above them while the solver-free bounds sit below the encoder. The
# package root only re-exports: nothing inside the package imports it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("milpverify.errors", "milpverify._version"),
    ("milpverify.ir",),
    ("milpverify.frontends",),
    ("milpverify.bounds",),
    ("milpverify.encode",),
    ("milpverify.solve",),
    ("milpverify.bounds.tighten",),
    ("milpverify.core", "milpverify.core.results", "milpverify.core.region",
     "milpverify.core.propagate"),
    ("milpverify.core.witness",),
    ("milpverify.core.query",),
    ("milpverify.core.spec_bounds",),
    ("milpverify.core.refute",),
    ("milpverify.core.restriction",),
    ("milpverify.core.ascent",),
    ("milpverify.core.attacks",),
    ("milpverify.core.decide",),
    ("milpverify.core.bracket",),
    ("milpverify.core.export",),
    ("milpverify.verify",),
    ("milpverify.properties",),
    ("milpverify.vnn",),
    ("milpverify.runs",),
    ("milpverify.cli", "milpverify.__main__"),
)

# Narrower rules inside the order: the solvers see only the model they solve, the encoder only
# the bound container.
ONLY: dict[str, tuple[str, ...]] = {
    "milpverify.solve": ("milpverify.errors", "milpverify.encode.model", "milpverify.solve"),
    "milpverify.encode": ("milpverify.errors", "milpverify.ir", "milpverify.bounds.base",
                          "milpverify.encode"),
}

# third-party top-level package -> the only milpverify modules that may import it.
THIRD_PARTY_RULES: dict[str, tuple[str, ...]] = {
    # runs.normalise prepends a normalisation the graph lacks (--mean/--std) as ONNX nodes,
    # so onnxruntime re-checks witnesses on the same extended model.
    "onnx": ("milpverify.frontends.onnx", "milpverify.frontends.torchnet",
             "milpverify.runs.normalise"),
    "torch": ("milpverify.frontends.torch", "milpverify.frontends.torch_layers",
              "milpverify.bounds.alpha", "milpverify.bounds.box_alpha",
              "milpverify.frontends.torchnet", "milpverify.core.attacks",
              "milpverify.runs.finetune"),
    "pyscipopt": ("milpverify.solve.scip", "milpverify.solve.scip_plugins"),
    "pyomo": ("milpverify.solve.pyomo",),
    "highspy": ("milpverify.solve.highs",),
    "onnxruntime": ("milpverify.core.witness",),
    "matplotlib": ("milpverify.runs.plots",),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> set[str]:
    """Absolute names of every module `source` imports (relative imports resolved).

    `from milpverify import errors` counts as `milpverify.errors`; `from milpverify.ir
    import ops` as `milpverify.ir` (the prefix rules then cover `milpverify.ir.ops`).
    """
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            if base == "milpverify":
                found.update(f"milpverify.{alias.name}" for alias in node.names)
            else:
                found.add(base)
    return found


def _allowed(target: str, prefixes: tuple[str, ...]) -> bool:
    return any(target == p or target.startswith(p + ".") for p in prefixes)


def _layer(module: str) -> int | None:
    """Index in LAYERS of the longest prefix naming `module` (None: the package root)."""
    matches = [(len(p), i) for i, layer in enumerate(LAYERS) for p in layer if _allowed(module, (p,))]
    return max(matches)[1] if matches else None


def _only(module: str) -> tuple[str, ...] | None:
    matches = [p for p in ONLY if _allowed(module, (p,))]
    return ONLY[max(matches, key=len)] if matches else None


def _package_modules() -> list[tuple[str, Path]]:
    return sorted((_module_name(p), p) for p in PACKAGE_DIR.rglob("*.py"))


def violations() -> list[str]:
    """Every import that breaks a rule, as readable lines."""
    problems = []
    for module, path in _package_modules():
        targets = imported_modules(path.read_text(encoding="utf-8"), module,
                                   path.name == "__init__.py")
        layer = _layer(module)
        for target in sorted(targets):
            top = target.split(".")[0]
            if top == "milpverify":
                target_layer = _layer(target)
                only = _only(module)
                if target_layer is None:
                    problems.append(f"{module} imports the package root {target}; import the "
                                    "module that defines the name")
                elif layer is not None and target_layer > layer:
                    problems.append(f"{module} imports {target}, a later layer "
                                    f"({LAYERS[target_layer][0]} after {LAYERS[layer][0]})")
                elif only is not None and not _allowed(target, only):
                    problems.append(f"{module} imports {target}; it may import only {list(only)}")
            elif top in THIRD_PARTY_RULES and module not in THIRD_PARTY_RULES[top]:
                problems.append(f"{module} imports {target}; {top} is confined to "
                                f"{list(THIRD_PARTY_RULES[top])}")
    return problems


def test_package_is_scanned():
    modules = dict(_package_modules())
    assert {"milpverify.errors", "milpverify.ir.network",
            "milpverify.frontends.onnx"} <= set(modules)


def test_imports_point_one_way():
    assert violations() == []


def test_import_parser_resolves_relative_and_lazy_imports():
    source = ("from . import ops\nfrom ..errors import InvalidInputError\nimport numpy as np\n"
              "from milpverify import errors, frontends\n"
              "def f():\n    import torch.nn\n    from .network import Network\n")
    assert imported_modules(source, "milpverify.ir.simplify") == {
        "milpverify.ir", "milpverify.errors", "numpy", "milpverify.errors",
        "milpverify.frontends", "torch.nn", "milpverify.ir.network"}
    assert imported_modules("from . import ops", "milpverify.ir", is_package=True) == {
        "milpverify.ir"}


def test_rules_catch_a_violation(tmp_path, monkeypatch):
    """A fake `ir` module importing `frontends` and `torch` is reported twice."""
    fake = tmp_path / "milpverify"
    (fake / "ir").mkdir(parents=True)
    (fake / "ir" / "bad.py").write_text("import torch\nfrom milpverify.frontends import onnx\n")
    (fake / "errors.py").write_text("from milpverify.ir import ops\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE_DIR", fake)
    found = violations()
    assert len(found) == 3
    assert any("milpverify.ir.bad imports torch" in v for v in found)
    assert any("milpverify.ir.bad imports milpverify.frontends" in v for v in found)
    assert any("milpverify.errors imports milpverify.ir" in v for v in found)


def test_import_milpverify_is_light_and_fast():
    """`import milpverify` (and its CLI and datasets modules) loads neither torch nor pyscipopt."""
    code = ("import sys, time\nt = time.perf_counter()\nimport milpverify\n"
            "elapsed = time.perf_counter() - t\n"
            "import milpverify.cli, milpverify.runs.datasets\n"
            "heavy = [m for m in ('torch', 'pyscipopt') if m in sys.modules]\n"
            "print(f'{elapsed:.3f} {heavy}')\n"
            "assert 'torch' not in sys.modules and 'pyscipopt' not in sys.modules, heavy\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, cwd=PACKAGE_DIR.parent)
    assert result.returncode == 0, result.stderr
    elapsed = float(result.stdout.split()[0])
    assert elapsed < 2.0, f"import milpverify took {elapsed:.2f} s"
