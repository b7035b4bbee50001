"""Packaging metadata: an MIT LICENSE file, an SPDX licence string the build accepts
(setuptools >= 77, PEP 639), and `py.typed` shipped as package data."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_license_file_is_mit():
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License")
    assert "milpverify contributors" in text
    assert "WITHOUT WARRANTY OF ANY KIND" in text


def test_spdx_license_and_setuptools_that_reads_it():
    meta = _pyproject()
    assert meta["project"]["license"] == "MIT"          # PEP 639 string, no table
    assert meta["project"]["license-files"] == ["LICENSE"]
    requires = meta["build-system"]["requires"]
    assert "setuptools>=77" in requires, requires


def test_py_typed_is_package_data():
    assert (ROOT / "milpverify" / "py.typed").is_file()
    assert "py.typed" in _pyproject()["tool"]["setuptools"]["package-data"]["milpverify"]


def test_readme_names_supported_platforms():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "## Supported platforms" in readme
