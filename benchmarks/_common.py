"""Helpers shared by the benchmark scripts (run as `python benchmarks/NAME.py`)."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

PACKAGES = ("milpverify", "pyscipopt", "highspy", "numpy", "scipy")


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def versions(packages: Sequence[str] = PACKAGES) -> str:
    """`name version` of each installed distribution, comma-separated."""
    out = []
    for p in packages:
        try:
            out.append(f"{p} {metadata.version(p)}")
        except metadata.PackageNotFoundError:
            out.append(f"{p} not installed")
    return ", ".join(out)


def machine(packages: Sequence[str] = PACKAGES) -> str:
    """One line for a results summary: host, CPU, cores, load average now, versions."""
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return (f"{platform.node()}: {cpu_name()}, {os.cpu_count()} CPUs (load average {load}), "
            f"Python {platform.python_version()}; {versions(packages)}")
