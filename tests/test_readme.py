"""The README's Python example runs as written, on the bundled data only."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_python_block() -> str:
    """The first ```python block after the heading "What it computes"."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## What it computes"):]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "no ```python block after '## What it computes'"
    return match.group(1)


def test_readme_python_block_runs(tmp_path):
    """Run in a fresh interpreter from an empty folder: no file beside the README is needed."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", readme_python_block()], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].split()[0] in ("optimal", "robust_at_cap", "time_limit")
    assert lines[1] == "True"            # the seeded witness was re-checked and accepted
    assert lines[-1] in ("robust", "not_robust", "unknown")


def test_load_default_is_public():
    import milpverify
    net, images, _labels = milpverify.load_default()
    assert images.shape == (10, 1, 28, 28) and images.max() <= 1.0
    assert net.input_size == 784
