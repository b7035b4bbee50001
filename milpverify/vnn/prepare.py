"""VNN-COMP's prepare step: does this network load and does this spec fit it?

``python -m milpverify.vnn.prepare ONNX VNNLIB`` exits 0 when the network loads and the spec
parses with the network's input and output sizes; otherwise it prints one
``milpverify: error: ...`` line naming what is wrong and exits 1, which the competition reads
as "instance not supported". `vnncomp_scripts/prepare_instance.sh` calls it.
"""

from __future__ import annotations

import sys

from milpverify.errors import MilpVerifyError
from milpverify.frontends.onnx import load_onnx
from milpverify.vnn.verify import spec_for


def prepare_instance(onnx_path: str, vnnlib_path: str) -> str:
    """Load the network and the spec (raises `MilpVerifyError`); a one-line summary."""
    net = load_onnx(onnx_path)
    spec = spec_for(vnnlib_path, net)
    return (f"ok: {net.input_size} inputs, {net.num_classes} outputs, "
            f"{len(spec.properties)} input region(s)")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("milpverify: error: usage: python -m milpverify.vnn.prepare ONNX VNNLIB",
              file=sys.stderr)
        return 1
    try:
        print(prepare_instance(*args))
    except MilpVerifyError as exc:
        print(f"milpverify: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
