"""MILP files: the LP and MPS writers, and the format chosen by name or suffix."""

from __future__ import annotations

import itertools
import math
import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from milpverify.encode.model import MilpModel
from milpverify.errors import InvalidInputError

if TYPE_CHECKING:
    pass


#: File formats of `write_query` (CPLEX LP and free MPS, as `milpverify.solve.scip.write_model`).
FORMATS = ("lp", "mps")


def file_format(path: str | os.PathLike[str], format: str | None) -> str:
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


# ---------------------------------------------------------------------------- files
_LP_ALLOWED = re.compile(r"[^A-Za-z0-9!\"#$%&()/,.;?@_`'{}|~]")


_LP_OBJ = "obj"


def _lp_prefix(prefix: str) -> str:
    """Map a name prefix to the CPLEX LP name alphabet (letters, digits, !"#$%&()/,.;?@_`'{}|~)."""
    p = _LP_ALLOWED.sub("_", prefix.replace("[", "(").replace("]", ")"))
    if p[0].isdigit() or p[0] == "." or (p[0] in "eE" and (len(p) == 1 or p[1].isdigit())):
        p = "_" + p
    return p


def _block_names(blocks: Any, n: int, generic: str | None, lp: bool) -> list[str]:
    """Names for a file: sanitised model names, or ``generic{i}`` names."""
    if generic is not None:
        return [f"{generic}{i}" for i in range(n)]
    out: list[str] = []
    for b in blocks:
        if lp:
            p = _lp_prefix(b.prefix)
            out.extend(f"{p}({i})" for i in range(b.offset, b.offset + b.count))
        else:
            out.extend(b.names())
    return out


def _file_names(model: MilpModel, generic_names: bool, lp: bool) -> tuple[list[str], list[str]]:
    vn = _block_names(model.var_blocks, model.n_vars, "x" if generic_names else None, lp)
    rn = _block_names(model.row_blocks, model.n_rows, "c" if generic_names else None, lp)
    too_long = any(len(s) > 200 for s in itertools.chain(vn[-1:], rn[-1:])) or any(
        len(b.prefix) > 180 for b in itertools.chain(model.var_blocks, model.row_blocks))
    if not generic_names and (too_long or len(set(vn)) != len(vn) or len(set(rn)) != len(rn)):
        warnings.warn("names are not unique or too long once made valid for the file format; "
                      "writing generic names x<j>/c<i> instead", RuntimeWarning, stacklevel=3)
        return _file_names(model, True, lp)
    return vn, rn


def _num(values: np.ndarray) -> list[str]:
    """Shortest round-trip decimal strings (``repr``) of finite floats."""
    return [repr(v) for v in values.tolist()]


def _mps_text(model: MilpModel, generic_names: bool) -> str:
    vn, rn = _file_names(model, generic_names, lp=False)
    A = model.A.tocsc()
    rl, ru = np.asarray(model.row_lower), np.asarray(model.row_upper)
    c = model.c
    n, m = model.n_vars, model.n_rows
    # Row types; free rows (both sides infinite) are left out, they constrain nothing.
    fin_l, fin_u = np.isfinite(rl), np.isfinite(ru)
    eq = fin_l & fin_u & (rl == ru)
    kind = np.full(m, "", dtype=object)
    kind[fin_l & ~eq] = "G"
    kind[~fin_l & fin_u] = "L"
    kind[eq] = "E"
    keep = fin_l | fin_u
    rhs = np.where(fin_l, rl, ru)
    lines = ["NAME milpverify", "ROWS", " N obj"]
    lines += [f" {k} {rn[i]}" for i, k in zip(np.flatnonzero(keep).tolist(), kind[keep].tolist())]
    # COLUMNS: objective entry (or an explicit 0 for variables without any entry) first.
    col_nnz = np.diff(A.indptr)
    has_obj = (c != 0) | (col_nnz == 0)
    obj_str = _num(c[has_obj])
    val_str = _num(A.data)
    row_names = [rn[i] for i in A.indices.tolist()]
    keep_entry = keep[A.indices].tolist()
    ip = A.indptr.tolist()
    obj_pos = np.cumsum(has_obj) - 1
    isint = model.integrality
    col_lines: list[str] = []
    in_int = False
    for j in range(n):
        if isint[j] != in_int:
            col_lines.append(" MARKER 'MARKER' 'INTORG'" if isint[j] else
                             " MARKER 'MARKER' 'INTEND'")
            in_int = bool(isint[j])
        name = vn[j]
        if has_obj[j]:
            col_lines.append(f" {name} obj {obj_str[obj_pos[j]]}")
        col_lines.extend(f" {name} {row_names[k]} {val_str[k]}"
                         for k in range(ip[j], ip[j + 1]) if keep_entry[k])
    if in_int:
        col_lines.append(" MARKER 'MARKER' 'INTEND'")
    lines.append("COLUMNS")
    lines.extend(col_lines)
    lines.append("RHS")
    if model.c0:
        lines.append(f" rhs obj {-model.c0!r}")
    nz_rhs = keep & (rhs != 0)
    lines += [f" rhs {rn[i]} {s}" for i, s in zip(np.flatnonzero(nz_rhs).tolist(),
                                                    _num(rhs[nz_rhs]))]
    ranged = fin_l & fin_u & ~eq
    if ranged.any():
        lines.append("RANGES")
        lines += [f" rng {rn[i]} {s}" for i, s in zip(np.flatnonzero(ranged).tolist(),
                                                        _num(ru[ranged] - rl[ranged]))]
    lines.append("BOUNDS")
    lo, up = np.asarray(model.lower), np.asarray(model.upper)
    lo_s = _num(np.where(np.isfinite(lo), lo, 0.0))
    up_s = _num(np.where(np.isfinite(up), up, 0.0))
    for j in range(n):
        name, l, u = vn[j], lo[j], up[j]
        if l == u:
            lines.append(f" FX bnd {name} {lo_s[j]}")
        elif l == -math.inf and u == math.inf:
            lines.append(f" FR bnd {name}")
        else:
            lines.append(f" MI bnd {name}" if l == -math.inf else f" LO bnd {name} {lo_s[j]}")
            lines.append(f" PL bnd {name}" if u == math.inf else f" UP bnd {name} {up_s[j]}")
    lines.append("ENDATA")
    return "\n".join(lines) + "\n"


def _lp_text(model: MilpModel, generic_names: bool) -> str:
    vn, rn = _file_names(model, generic_names, lp=True)
    A = model.A
    n, m = model.n_vars, model.n_rows
    rl, ru = np.asarray(model.row_lower), np.asarray(model.row_upper)

    def signed(values: np.ndarray) -> list[str]:
        return [("+" if v >= 0 else "") + repr(v) for v in values.tolist()]

    def linear(cols: list[int], coefs: list[str]) -> str:
        if not cols:
            return f"0 {vn[0]}" if n else ""
        terms = [f"{a} {vn[j]}" for a, j in zip(coefs, cols)]
        return "\n   ".join(" ".join(terms[k:k + 8]) for k in range(0, len(terms), 8))

    lines = ["\\ written by milpverify", "Minimize"]
    c = model.c
    nz = np.flatnonzero(c)
    obj = linear(nz.tolist(), signed(c[nz]))
    const = f" {('+' if model.c0 >= 0 else '')}{model.c0!r}" if model.c0 else ""
    lines.append(f" {_LP_OBJ}: {obj}{const}" if (obj or const) else f" {_LP_OBJ}: 0 {vn[0]}"
                 if n else f" {_LP_OBJ}:")
    lines.append("Subject To")
    coef_s = signed(A.data)
    idx = A.indices.tolist()
    ip = A.indptr.tolist()
    rl_s, ru_s = signed(np.where(np.isfinite(rl), rl, 0)), signed(np.where(np.isfinite(ru), ru, 0))
    for i in range(m):
        fl, fu = math.isfinite(rl[i]), math.isfinite(ru[i])
        if not (fl or fu):
            continue
        expr = linear(idx[ip[i]:ip[i + 1]], coef_s[ip[i]:ip[i + 1]])
        if fl and fu and rl[i] == ru[i]:
            lines.append(f" {rn[i]}: {expr} = {rl_s[i]}")
        elif fl and fu:  # ranged rows are split, as SCIP's own LP writer does
            lines.append(f" {rn[i]}_lhs: {expr} >= {rl_s[i]}")
            lines.append(f" {rn[i]}_rhs: {expr} <= {ru_s[i]}")
        elif fl:
            lines.append(f" {rn[i]}: {expr} >= {rl_s[i]}")
        else:
            lines.append(f" {rn[i]}: {expr} <= {ru_s[i]}")
    lines.append("Bounds")
    lo, up = np.asarray(model.lower), np.asarray(model.upper)
    lo_s = _num(np.where(np.isfinite(lo), lo, 0.0))
    up_s = _num(np.where(np.isfinite(up), up, 0.0))
    for j in range(n):
        l, u = lo[j], up[j]
        if l == -math.inf and u == math.inf:
            lines.append(f" {vn[j]} free")
        elif l == u:
            lines.append(f" {vn[j]} = {lo_s[j]}")
        else:
            ls = "-inf" if l == -math.inf else lo_s[j]
            us = "+inf" if u == math.inf else up_s[j]
            lines.append(f" {ls} <= {vn[j]} <= {us}")
    ints = np.flatnonzero(model.integrality).tolist()
    if ints:
        lines.append("Generals")
        lines += [f" {vn[j]}" for j in ints]
    lines.append("End")
    return "\n".join(lines) + "\n"


def write_model(model: MilpModel, path: str | os.PathLike[str], format: str | None = None, *,
                generic_names: bool = False) -> Path:
    """Write ``model`` as a CPLEX LP or free MPS file (readable by SCIP's ``readProblem``).

    Parameters
    ----------
    model : MilpModel
    path : path-like
    format : {"lp", "mps"} or None
        File format; None takes it from the suffix of ``path``.
    generic_names : bool
        Write ``x<j>``/``c<i>`` instead of the model's names.

    Returns
    -------
    Path
        ``path``.

    Notes
    -----
    Names: MPS keeps the model's names (they contain no whitespace). LP names may only use
    letters, digits and ``!"#$%&()/,.;?@_`'{}|~``, so ``[i]`` is written ``(i)``, other
    characters become ``_`` and a leading digit, ``.`` or ``e<digit>`` gets a ``_`` prefix:
    ``fc1/relu[17]`` is written ``fc1/relu(17)``. If that makes names collide, generic names
    are used (with a warning). Rows with both sides infinite are omitted; in LP files a
    ranged row ``name`` is written as two rows ``name_lhs``/``name_rhs`` (like SCIP's writer).
    Numbers are written with ``repr``, so they are read back exactly.
    """
    if model.quadratic:
        raise InvalidInputError("LP/MPS files here hold linear models only; this model has "
                                "quadratic rows (norm 'l2')")
    path = Path(path)
    fmt = (format or path.suffix.lstrip(".")).lower()
    if fmt == "lp":
        text = _lp_text(model, generic_names)
    elif fmt == "mps":
        text = _mps_text(model, generic_names)
    else:
        raise InvalidInputError(f"unknown model file format {fmt!r}; use 'lp' or 'mps'")
    path.write_text(text)
    return path
