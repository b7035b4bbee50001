#!/usr/bin/env bash
# The Python that runs milpverify: $MILPVERIFY_PYTHON, else install_tool.sh's venv, else python3.
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
if [ -n "${MILPVERIFY_PYTHON:-}" ]; then echo "$MILPVERIFY_PYTHON"
elif [ -x "${MILPVERIFY_VENV:-$repo/.venv-vnncomp}/bin/python" ]; then echo "${MILPVERIFY_VENV:-$repo/.venv-vnncomp}/bin/python"
else echo python3
fi
