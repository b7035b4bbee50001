"""milpverify: exact pointwise robustness of ReLU networks with MILP (SCIP).

Public API (re-exported here; no logic in this module).
"""

from __future__ import annotations

from typing import Any

from milpverify.errors import (InvalidInputError, InvalidModelError, MilpVerifyError,
                               SolverError, UnboundedError, UnsupportedModelError)
from milpverify.frontends.onnx import load_onnx
from milpverify.ir.network import Network

__version__ = "0.1.0"


def from_torch(module: Any, input_shape: tuple[int, ...]) -> Network:
    """Convert a torch module to a `Network` (torch is imported only here); see `frontends.torch`."""
    from milpverify.frontends.torch import from_torch as _from_torch
    return _from_torch(module, input_shape)


__all__ = [
    "InvalidInputError", "InvalidModelError", "MilpVerifyError", "Network", "SolverError",
    "UnboundedError", "UnsupportedModelError", "__version__", "from_torch", "load_onnx",
]
