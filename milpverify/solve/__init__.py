"""MILP solver backends behind one protocol; `get_backend(name)` picks one (imports lazily)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from milpverify.errors import InvalidInputError

if TYPE_CHECKING:
    from milpverify.solve.base import Backend

#: Backend names accepted by `get_backend`; ``pyomo:<solver>`` takes any Pyomo solver name.
BACKEND_NAMES = ("scip", "highs", "pyomo:<solver>")
#: Pyomo solvers that are known to work (others are passed to ``SolverFactory`` as given).
PYOMO_SOLVERS = ("appsi_highs", "scip_direct", "cbc", "gurobi_direct")


def get_backend(name: str = "scip") -> Backend:
    """Return the backend called ``name``.

    Parameters
    ----------
    name : str
        ``"scip"`` (default; needs pyscipopt), ``"highs"`` (needs highspy), or
        ``"pyomo:<solver>"`` with a Pyomo solver name, e.g. ``"pyomo:appsi_highs"``,
        ``"pyomo:scip_direct"``, ``"pyomo:cbc"``, ``"pyomo:gurobi_direct"`` (needs pyomo and
        that solver).

    Raises
    ------
    InvalidInputError
        If ``name`` is not one of these.
    SolverError
        If the backend's Python package is not installed (the solver itself, for Pyomo,
        is checked when solving).
    """
    if not isinstance(name, str):
        raise InvalidInputError(f"backend name must be a string, got {type(name).__name__}")
    key = name.strip().lower()
    if key == "scip":
        from milpverify.solve.scip import ScipBackend
        return ScipBackend()
    if key == "highs":
        from milpverify.solve.highs import HighsBackend
        return HighsBackend()
    if key.startswith("pyomo:") and name.strip()[6:]:
        from milpverify.solve.pyomo import PyomoBackend
        return PyomoBackend(name.strip()[6:])
    raise InvalidInputError(
        f"unknown backend {name!r}; valid names: 'scip', 'highs', 'pyomo:<solver>' "
        f"(e.g. {', '.join(repr('pyomo:' + s) for s in PYOMO_SOLVERS)})")


__all__ = ["BACKEND_NAMES", "PYOMO_SOLVERS", "get_backend"]
