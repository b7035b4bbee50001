"""File formats a MILP can be written in (LP, MPS), chosen by name or suffix."""

from __future__ import annotations

import os
from pathlib import Path

from milpverify.errors import InvalidInputError

#: File formats of `write_query` (CPLEX LP and free MPS, as `milpverify.solve.scip.write_model`).
FORMATS = ("lp", "mps")


def _format(path: str | os.PathLike[str], format: str | None) -> str:
    """The file format: `format`, or the suffix of `path`; must be one of `FORMATS`."""
    if format is None:
        fmt = Path(path).suffix.lstrip(".").lower()
        if fmt not in FORMATS:
            raise InvalidInputError(
                f"cannot tell the file format from {str(path)!r}; pass `format` "
                f"({' or '.join(repr(f) for f in FORMATS)}) or use a .lp/.mps suffix.")
        return fmt
    if not isinstance(format, str) or format.lower() not in FORMATS:
        raise InvalidInputError(
            f"`format` must be {' or '.join(repr(f) for f in FORMATS)}; got {format!r}.")
    return format.lower()
