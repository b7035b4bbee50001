#!/usr/bin/env bash
# VNN-COMP: prepare_instance.sh v1 CATEGORY ONNX VNNLIB
# Stops what a previous instance may have left running, then checks that the network loads
# and the spec parses (a non-zero exit tells the competition this instance is unsupported).
set -uo pipefail
usage="usage: prepare_instance.sh v1 CATEGORY ONNX VNNLIB"
[ "$#" -eq 4 ] || { echo "prepare_instance.sh: expected 4 arguments; $usage" >&2; exit 1; }
[ "$1" = "v1" ] || { echo "prepare_instance.sh: unsupported version '$1' (supported: v1)" >&2; exit 1; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python=$("$here/_python.sh")
pkill -f "milpverify vnnlib" 2>/dev/null || true
"$python" -m milpverify.vnn.prepare "$3" "$4"
