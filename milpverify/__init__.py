"""milpverify: exact pointwise robustness of ReLU networks with MILP (SCIP).

Public API (re-exported here; no logic in this module).
"""

from __future__ import annotations

from typing import Any

from milpverify.bounds.tighten import compute_bounds
from milpverify.core.restriction import lp_restriction
from milpverify.core.results import Certificate, RhoResult, RhoStatus, Verdict
from milpverify.errors import (
    InvalidInputError,
    InvalidModelError,
    MilpVerifyError,
    SolverError,
    UnboundedError,
    UnsupportedModelError,
)
from milpverify.frontends.onnx import load_onnx
from milpverify.ir.network import Network
from milpverify.runs.datasets import load_default
from milpverify.verify import certify, rho

# `milpverify.bounds(net, lower, upper, method=...)` is the public bound-tightening entry
# point. The subpackage `milpverify.bounds` is imported above (by the modules), so this
# assignment replaces only the package attribute; `from milpverify.bounds import X` and
# `milpverify.bounds.interval` imports still resolve through sys.modules.
bounds = compute_bounds

from milpverify._version import __version__  # noqa: E402


def from_torch(module: Any, input_shape: tuple[int, ...]) -> Network:
    """Convert a torch module to a `Network` (torch is imported only here); see `frontends.torch`."""
    from milpverify.frontends.torch import from_torch as _from_torch
    return _from_torch(module, input_shape)


def to_pyomo(net: Network, x: Any, **options: Any) -> Any:
    """The Pyomo `ConcreteModel` of one rho/certify query (pyomo imported lazily); see
    `milpverify.core.export.to_pyomo`."""
    from milpverify.core.export import to_pyomo as _to_pyomo
    return _to_pyomo(net, x, **options)


def evaluate(model: Any, **options: Any) -> Any:
    """rho by several estimators over a data set into a resumable run directory (imported
    lazily); see `milpverify.runs.evaluate.evaluate`."""
    from milpverify.runs.evaluate import evaluate as _evaluate
    return _evaluate(model, **options)


__all__ = [
    "Certificate", "InvalidInputError", "InvalidModelError", "MilpVerifyError", "Network",
    "RhoResult", "RhoStatus", "SolverError", "UnboundedError", "UnsupportedModelError",
    "Verdict", "__version__", "bounds", "certify", "compute_bounds", "evaluate", "from_torch",
    "load_default", "load_onnx", "lp_restriction", "rho", "to_pyomo",
]
