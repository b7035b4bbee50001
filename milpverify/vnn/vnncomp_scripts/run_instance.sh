#!/usr/bin/env bash
# VNN-COMP: run_instance.sh v1 CATEGORY ONNX VNNLIB RESULT TIMEOUT
# Decides the instance and writes RESULT: sat (with the counterexample), unsat, timeout,
# unknown or error. A run that overstays TIMEOUT by 10 s is stopped and reported as timeout.
set -uo pipefail
usage="usage: run_instance.sh v1 CATEGORY ONNX VNNLIB RESULT TIMEOUT"
[ "$#" -eq 6 ] || { echo "run_instance.sh: expected 6 arguments; $usage" >&2; exit 1; }
[ "$1" = "v1" ] || { echo "run_instance.sh: unsupported version '$1' (supported: v1)" >&2; exit 1; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python=$("$here/_python.sh")
onnx=$3 vnnlib=$4 result=$5 limit=$6
grace=$(awk -v t="$limit" 'BEGIN { printf "%d", t + 10.999 }')
timeout --kill-after=5 "$grace" "$python" -m milpverify vnnlib "$onnx" "$vnnlib" \
    --timeout "$limit" --out "$result"
status=$?
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    echo "timeout" > "$result"
elif [ ! -s "$result" ]; then
    echo "error" > "$result"
fi
exit 0
