#!/usr/bin/env bash
# VNN-COMP: install_tool.sh v1
# Creates a virtual environment beside the repository and installs milpverify into it.
set -euo pipefail
usage="usage: install_tool.sh v1"
[ "$#" -eq 1 ] || { echo "install_tool.sh: expected 1 argument (the version); $usage" >&2; exit 1; }
[ "$1" = "v1" ] || { echo "install_tool.sh: unsupported version '$1' (supported: v1)" >&2; exit 1; }
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
venv="${MILPVERIFY_VENV:-$repo/.venv-vnncomp}"
python3 -m venv "$venv"
"$venv/bin/pip" install -q "torch==2.13.0" -e "$repo"
"$venv/bin/python" -m milpverify --version
