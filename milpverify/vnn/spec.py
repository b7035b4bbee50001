"""Read VNN-LIB specifications (result files are `milpverify.vnn.results`).

The VNN-LIB 1.0 subset used by VNN-COMP (2021-2024) is supported, and the same subset in
VNN-LIB 2.0 syntax:

* ``(declare-const X_i Real)`` for inputs and ``(declare-const Y_j Real)`` for outputs.
  Indices must run 0..n-1 without gaps.
* VNN-LIB 2.0: ``(vnnlib-version <2.0>)`` and one ``(declare-network f (declare-input X
  float32 [1, 784]) (declare-output Y float32 [1, 10]))``; element ``X[0, i]`` is input ``i``
  of the flat input in C order (``X_i`` in 1.0). Hidden tensors, several networks or several
  inputs are rejected.
* ``(assert F)`` where ``F`` is built from ``and``, ``or`` and the atoms ``<=``, ``>=``,
  ``<``, ``>`` with two linear arguments.
* Linear terms: numbers (decimal or scientific, optionally signed), declared variables,
  ``(+ t ...)``, ``(- t)``, ``(- t u ...)``, ``(* c t)`` / ``(* t c)`` (at most one
  non-constant factor) and ``(/ t c)`` with a non-zero constant ``c``.
* ``;`` comments; the SMT-LIB commands ``set-logic``, ``set-info``, ``set-option``,
  ``check-sat``, ``get-model`` and ``exit`` are accepted and ignored.

Semantics. A VNN-LIB file describes the *counterexample* region: the network ``f`` violates
the property iff some ``x`` satisfies the conjunction of all asserts together with
``y = f(x)``. Every atom must mention either a single input variable (an input bound) or
only output variables (an output constraint); atoms mixing inputs and outputs, or several
inputs, are rejected. The formula is normalised to disjunctive normal form; each disjunct
is an input box plus a conjunction ``A @ y <= b``. Disjuncts with identical boxes are
grouped into one `VnnlibProperty`, so the property is violated iff
``exists p in properties, x in [p.input_lower, p.input_upper], c in p.unsafe:
c.A @ f(x) <= c.b``.

Strict comparisons ``<`` and ``>`` are read as ``<=`` and ``>=``: milpverify verifies the
closure of the unsafe set, which is sound (a proof of ``unsat`` for the closure implies
``unsat`` for the open set) but may report as ``sat`` a point on the boundary of a strict
inequality. Atoms without variables are evaluated: a true one is dropped, a false one
removes its disjunct.

Why not the PyPI ``vnnlib`` package: 1.x parses VNN-LIB 2.0 only and rejects every VNN-COMP
spec in the shared data (all 1.0) and, in 2.0 syntax, numbers in exponent notation; 0.0.1 reads
them identically to this parser but warns on every file (`benchmarks/vnnlib_parsers.py`).
"""

from __future__ import annotations

import gzip
import math
import os
import re
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Union

import numpy as np

from milpverify.errors import InvalidInputError
from milpverify.ir.constraints import OutputConstraint

PathLike = Union[str, "os.PathLike[str]"]


MAX_DISJUNCTS = 100_000


_SUPPORTED = (
    "supported: (declare-const X_i Real), (declare-const Y_j Real) or one VNN-LIB 2.0 "
    "(declare-network ...) with one input and one output tensor, (assert F) with F built "
    "from and/or and <=, >=, <, > over linear terms (numbers, variables, +, -, * and / by "
    "constants); each atom bounds a single X_i or constrains only Y variables"
)


_TOKEN = re.compile(r"[()]|[^\s()]+")


_COMMENT = re.compile(r";[^\n]*")


_VAR = re.compile(r"([XY])_(0|[1-9][0-9]*)\Z")


_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")


# VNN-LIB 2.0 writes tensor elements as ``X[0, 3]``; the tokenizer sees them as one token.
_INDEX = re.compile(r"([A-Za-z_][\w.]*)?\s*\[\s*([0-9][0-9\s,]*)\]")
_INDEXED = re.compile(r"(.*)\[([0-9,]+)\]\Z")
_DTYPES = frozenset({"real", "Real", "float16", "float32", "float64", "bfloat16"})
_IGNORED_COMMANDS = frozenset(
    {"set-logic", "set-info", "set-option", "check-sat", "get-model", "exit"}
)


_COMPARISONS = {"<=": 1.0, "<": 1.0, ">=": -1.0, ">": -1.0}


def _join_index(m: re.Match[str]) -> str:
    return f"{m.group(1) or ''}[{','.join(i.strip() for i in m.group(2).split(','))}]"


SExpr = Union[str, list]


# A linear form: ({variable name: coefficient}, constant).
Linear = tuple[dict[str, float], float]


# An atom, normalised to "... <= 0": ("x", index, is_upper, value) or ("y", coeffs, const).
Atom = tuple


Conj = list  # list[Atom]


@dataclass(frozen=True, slots=True)
class VnnlibProperty:
    """An input box and the unsafe output set over it.

    Attributes
    ----------
    input_lower, input_upper : np.ndarray
        ``(n_inputs,)`` float64 with ``input_lower <= input_upper``; the box is closed.
    unsafe : tuple of OutputConstraint
        ``y`` is unsafe iff it satisfies *some* disjunct: ``any(c.A @ y <= c.b) for c``.
        Never empty.
    """

    input_lower: np.ndarray
    input_upper: np.ndarray
    unsafe: tuple[OutputConstraint, ...]


@dataclass(frozen=True, slots=True)
class VnnlibSpec:
    """A parsed VNN-LIB file.

    The network ``f`` violates the spec iff for some property ``p`` there is an ``x`` in
    ``p``'s box such that ``f(x)`` lies in ``p``'s unsafe set. An empty ``properties``
    means the unsafe region is empty (every disjunct was a false constant), so the spec
    holds trivially.
    All arrays in a spec are read-only; ``copy()`` them to modify.

    Attributes
    ----------
    n_inputs, n_outputs : int
        Number of declared ``X_i`` and ``Y_j``.
    properties : tuple of VnnlibProperty
        Disjunction over input regions, in order of first appearance (usually length 1).
    path : str or None
        The file read, or None when parsed from text.
    """

    n_inputs: int
    n_outputs: int
    properties: tuple[VnnlibProperty, ...]
    path: str | None


# --------------------------------------------------------------------------- reading


def _read_text(path: Path) -> str:
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                return fh.read()
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise InvalidInputError(f"VNN-LIB file not found: {str(path)!r}") from e
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise InvalidInputError(f"cannot read VNN-LIB file {str(path)!r}: {e}") from e


def _show(expr: SExpr, limit: int = 80) -> str:
    def render(e: SExpr) -> str:
        return e if isinstance(e, str) else "(" + " ".join(render(c) for c in e) + ")"

    s = render(expr)
    return s if len(s) <= limit else s[: limit - 3] + "..."


class _Parser:
    """Turns s-expressions into a DNF of normalised atoms; holds the source name for errors."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.var_names: dict[str, tuple[str, int]] = {}
        self.networks = 0

    def fail(self, what: str, expr: SExpr | None = None, hint: bool = True) -> InvalidInputError:
        msg = f"{self.source}: {what}"
        if expr is not None:
            msg += f" in {_show(expr)!r}"
        if hint:
            msg += f" ({_SUPPORTED})"
        return InvalidInputError(msg)

    # ---- s-expressions
    def sexprs(self, text: str) -> list[SExpr]:
        stack: list[list] = []
        cur: list = []
        for tok in _TOKEN.findall(_INDEX.sub(_join_index, _COMMENT.sub("", text))):
            if tok == "(":
                stack.append(cur)
                cur = []
            elif tok == ")":
                if not stack:
                    raise self.fail("unbalanced parentheses: unexpected ')'", hint=False)
                parent = stack.pop()
                parent.append(cur)
                cur = parent
            else:
                cur.append(tok)
        if stack:
            raise self.fail(
                f"unbalanced parentheses: {len(stack)} '(' not closed at end of file",
                hint=False,
            )
        return cur

    # ---- terms
    def number(self, tok: str) -> float | None:
        if _NUMBER.match(tok) is None:
            return None
        v = float(tok)
        if not math.isfinite(v):
            raise self.fail(f"non-finite number {tok!r}", hint=False)
        return v

    def linear(self, e: SExpr, atom: SExpr) -> Linear:
        """Linear form of term ``e``; ``atom`` (the enclosing atom) is shown in errors."""
        if isinstance(e, str):
            v = self.number(e)
            if v is not None:
                return {}, v
            if e not in self.var_names:
                declared_like = _VAR.match(e) or _INDEXED.match(e)
                kind = "undeclared variable" if declared_like else "unknown symbol"
                raise self.fail(f"{kind} {e!r}", atom)
            return {e: 1.0}, 0.0
        if not e or not isinstance(e[0], str):
            raise self.fail("malformed term", atom)
        op, args = e[0], [self.linear(a, atom) for a in e[1:]]
        if op == "+" and args:
            return _add(args, [1.0] * len(args))
        if op == "-" and len(args) == 1:
            return _scale(args[0], -1.0)
        if op == "-" and args:
            return _add(args, [1.0] + [-1.0] * (len(args) - 1))
        if op == "*" and args:
            nonconst = [a for a in args if a[0]]
            if len(nonconst) > 1:
                raise self.fail("non-linear term (product of variables)", e)
            c = math.prod(a[1] for a in args if not a[0])
            return _scale(nonconst[0], c) if nonconst else ({}, c)
        if op == "/" and len(args) == 2:
            if args[1][0] or args[1][1] == 0.0:
                raise self.fail("division must be by a non-zero constant", e)
            return _scale(args[0], 1.0 / args[1][1])
        raise self.fail(f"unsupported term operator {op!r}", e)

    # ---- formulas -> DNF (list of conjunctions; [] = false, [[]] = true)
    def dnf(self, e: SExpr) -> list[Conj]:
        if isinstance(e, str) or not e or not isinstance(e[0], str):
            if e in ("true", "false"):
                return [[]] if e == "true" else []
            raise self.fail("expected a formula", e)
        op = e[0]
        if op in _COMPARISONS:
            if len(e) != 3:
                raise self.fail(f"{op!r} needs exactly 2 arguments", e)
            return self.atom(e)
        if op == "or":
            return [c for sub in e[1:] for c in self.dnf(sub)]
        if op == "and":
            return self.conjoin([self.dnf(sub) for sub in e[1:]], e)
        raise self.fail(f"unsupported operator {op!r}", e)

    def split(self, dnfs: list[list[Conj]], e: SExpr) -> tuple[Conj, list[list[Conj]]] | None:
        """Split a conjunction of DNFs into the atoms common to every disjunct and the
        factors with several disjuncts; None if some factor is false."""
        base: Conj = []
        multi: list[list[Conj]] = []
        for d in dnfs:
            if not d:
                return None
            if len(d) == 1:
                base.extend(d[0])
            else:
                multi.append(d)
        n = math.prod(len(d) for d in multi)
        if n > MAX_DISJUNCTS:
            raise self.fail(
                f"expanding to disjunctive normal form gives {n} disjuncts, more than "
                f"MAX_DISJUNCTS={MAX_DISJUNCTS}",
                e,
                hint=False,
            )
        return base, multi

    def conjoin(self, dnfs: list[list[Conj]], e: SExpr) -> list[Conj]:
        """DNF of the conjunction of several DNFs."""
        parts = self.split(dnfs, e)
        if parts is None:
            return []
        base, multi = parts
        return [base + [a for c in combo for a in c] for combo in product(*multi)]

    def atom(self, e: list) -> list[Conj]:
        lhs, rhs = e[1], e[2]
        if isinstance(lhs, str) and isinstance(rhs, str) and lhs in self.var_names:
            kind, i = self.var_names[lhs]
            v = self.number(rhs)
            if kind == "X" and v is not None:  # fast path for the common (<= X_i c)
                return [[("x", i, e[0] in ("<=", "<"), v + 0.0)]]  # + 0.0 maps -0.0 to 0.0
        (lc, lk), (rc, rk) = self.linear(lhs, e), self.linear(rhs, e)
        sign = _COMPARISONS[e[0]]
        # sign * (lhs - rhs) <= 0
        coeffs: dict[str, float] = {}
        for d, s in ((lc, sign), (rc, -sign)):
            for v, c in d.items():
                coeffs[v] = coeffs.get(v, 0.0) + s * c
        coeffs = {v: c for v, c in coeffs.items() if c != 0.0}
        const = sign * (lk - rk)
        if not (math.isfinite(const) and all(map(math.isfinite, coeffs.values()))):
            raise self.fail("arithmetic overflow (non-finite coefficient)", e, hint=False)
        if not coeffs:
            return [[]] if const <= 0.0 else []
        kinds = {self.var_names[v][0] for v in coeffs}
        if kinds == {"Y"}:
            return [[("y", coeffs, const)]]
        if kinds != {"X"}:
            raise self.fail("atom mixes input (X) and output (Y) variables", e)
        if len(coeffs) != 1:
            raise self.fail("atom mixes several input variables (only boxes are supported)", e)
        ((v, a),) = coeffs.items()
        bound = 0.0 - const / a  # not -const / a: avoids -0.0
        if not math.isfinite(bound):
            raise self.fail("arithmetic overflow (non-finite bound)", e, hint=False)
        return [[("x", self.var_names[v][1], a > 0.0, bound)]]


def _add(args: list[Linear], signs: list[float]) -> Linear:
    coeffs: dict[str, float] = {}
    const = 0.0
    for (d, k), s in zip(args, signs):
        const += s * k
        for v, c in d.items():
            coeffs[v] = coeffs.get(v, 0.0) + s * c
    return coeffs, const


def _scale(t: Linear, c: float) -> Linear:
    return {v: c * a for v, a in t[0].items()}, c * t[1]


def _collect(conj: Conj, lo: list[float], hi: list[float]) -> list[tuple[dict[str, float], float]]:
    """Tighten the box ``[lo, hi]`` in place with the X atoms; return the Y atoms."""
    rows = []
    for atom in conj:
        if atom[0] == "x":
            _, i, upper, val = atom
            if upper:
                if val < hi[i]:
                    hi[i] = val
            elif val > lo[i]:
                lo[i] = val
        else:
            rows.append((atom[1], atom[2]))
    return rows


def _check_box(ps: _Parser, lo: np.ndarray, hi: np.ndarray) -> None:
    unbounded = np.flatnonzero(~(np.isfinite(lo) & np.isfinite(hi)))
    if unbounded.size:
        names = ", ".join(f"X_{i}" for i in unbounded[:5])
        raise ps.fail(f"missing lower or upper bound on {unbounded.size} input(s), "
                      f"e.g. {names}; every X_i needs both", hint=False)
    empty = np.flatnonzero(lo > hi)
    if empty.size:
        i = empty[0]
        raise ps.fail(f"empty input box: lower bound {float(lo[i])!r} > upper bound "
                      f"{float(hi[i])!r} on X_{i}", hint=False)


def _declare_network(ps: _Parser, form: list) -> dict[str, int]:
    """Register the elements of a VNN-LIB 2.0 network's input and output tensors.

    ``(declare-network f (declare-input X float32 [1, 784]) (declare-output Y float32 [1,
    10]))``: element ``X[0, i]`` becomes input ``i`` of the flat input in C order, as ``X_i``
    is in VNN-LIB 1.0. One network with one input and one output tensor is supported.
    """
    if ps.networks:
        raise ps.fail("several networks in one spec are not supported", form, hint=False)
    ps.networks += 1
    decls = [d for d in form[2:] if isinstance(d, list)]
    heads = [d[0] if d and isinstance(d[0], str) else None for d in decls]
    if len(form) < 3 or not isinstance(form[1], str) or len(decls) != len(form) - 2 \
            or None in heads or sorted(heads) != ["declare-input", "declare-output"]:
        raise ps.fail("a network must declare exactly one input and one output tensor "
                      "(declare-hidden and several inputs are not supported)", form, hint=False)
    counts = {}
    for decl in decls:
        kind = "X" if decl[0] == "declare-input" else "Y"
        shape = _declared_shape(ps, decl)
        for flat, index in enumerate(np.ndindex(*shape)):
            name = f"{decl[1]}[{','.join(map(str, index))}]"
            if name in ps.var_names:
                raise ps.fail(f"variable {decl[1]!r} declared twice", decl, hint=False)
            ps.var_names[name] = (kind, flat)
        counts[kind] = math.prod(shape)
    return counts


def _declared_shape(ps: _Parser, decl: list) -> tuple[int, ...]:
    """``(declare-input X float32 [1, 784])`` -> (1, 784); the dtype must be a real type."""
    parts = list(decl)
    if len(parts) == 3 and isinstance(parts[2], str):  # "float32[1,784]": joined by the lexer
        match = _INDEXED.match(parts[2])
        parts = [*parts[:2], *(match.groups() if match else (parts[2], ""))]
    if len(parts) != 4 or not isinstance(parts[1], str) or parts[2] not in _DTYPES \
            or not isinstance(parts[3], str) or not re.fullmatch(r"[0-9]+(,[0-9]+)*", parts[3]):
        raise ps.fail(f"malformed tensor declaration (expected ({parts[0]} NAME DTYPE [d1, ...]) "
                      f"with DTYPE one of {', '.join(sorted(_DTYPES))})", decl, hint=False)
    return tuple(int(d) for d in parts[3].split(","))


def read_vnnlib(
    path_or_text: PathLike,
    *,
    n_inputs: int | None = None,
    n_outputs: int | None = None,
) -> VnnlibSpec:
    """Read a VNN-LIB specification (the VNN-COMP subset described in the module docstring).

    Parameters
    ----------
    path_or_text : str or os.PathLike
        A path to a ``.vnnlib`` or ``.vnnlib.gz`` file, or the text itself. A ``str`` that
        contains ``(`` or a newline is taken as text; pass a `pathlib.Path` to force a path.
    n_inputs, n_outputs : int, optional
        If given, the number of declared ``X_i`` / ``Y_j`` must equal them.

    Returns
    -------
    VnnlibSpec

    Raises
    ------
    InvalidInputError
        Missing/unreadable file, syntax error, an unsupported construct, a missing input
        bound, an empty input box (lower > upper) or a size mismatch. The message names
        the file and the offending expression.
    """
    if isinstance(path_or_text, str) and ("(" in path_or_text or "\n" in path_or_text):
        source, path, text = "<vnnlib text>", None, str(path_or_text)
    else:
        p = Path(path_or_text)
        source, path, text = str(p), str(p), _read_text(p)
    ps = _Parser(source)
    forms = ps.sexprs(text)

    asserts: list[SExpr] = []
    counts = {"X": 0, "Y": 0}
    for f in forms:
        head = f[0] if isinstance(f, list) and f and isinstance(f[0], str) else None
        if head == "declare-const":
            if len(f) != 3 or not isinstance(f[1], str) or f[2] != "Real":
                raise ps.fail("malformed declaration", f)
            m = _VAR.match(f[1])
            if m is None:
                raise ps.fail("variables must be named X_<i> or Y_<j>", f)
            if f[1] in ps.var_names:
                raise ps.fail(f"variable {f[1]!r} declared twice", f, hint=False)
            ps.var_names[f[1]] = (m.group(1), int(m.group(2)))
            counts[m.group(1)] += 1
        elif head == "vnnlib-version":
            if f[1:] != ["<2.0>"]:
                raise ps.fail("unsupported VNN-LIB version (supported: 1.0, <2.0>)", f,
                              hint=False)
        elif head == "declare-network":
            for kind, n in _declare_network(ps, f).items():
                counts[kind] += n
        elif head == "assert":
            if len(f) != 2:
                raise ps.fail("assert takes exactly one formula", f)
            asserts.append(f[1])
        elif head not in _IGNORED_COMMANDS:
            raise ps.fail("unsupported top-level command", f)

    for kind, expected in (("X", n_inputs), ("Y", n_outputs)):
        idx = sorted(i for k, i in ps.var_names.values() if k == kind)
        if not idx:
            raise ps.fail(f"no {kind}_<i> variable declared", hint=False)
        if idx != list(range(len(idx))):
            missing = sorted(set(range(idx[-1] + 1)) - set(idx))[:5]
            raise ps.fail(f"{kind} variables are not numbered 0..n-1 (missing e.g. "
                          f"{', '.join(f'{kind}_{i}' for i in missing)})", hint=False)
        if expected is not None and expected != len(idx):
            raise ps.fail(f"declares {len(idx)} {kind} variables, expected {expected}",
                          hint=False)
    nx, ny = counts["X"], counts["Y"]

    top = ["and", *asserts]
    parts = ps.split([ps.dnf(a) for a in asserts], top)
    groups: dict[bytes, tuple[np.ndarray, np.ndarray, list[OutputConstraint]]] = {}
    if parts is not None:
        base, multi = parts
        lo0, hi0 = [-math.inf] * nx, [math.inf] * nx
        rows0 = _collect(base, lo0, hi0)
        for combo in product(*multi):
            lo_list, hi_list = lo0.copy(), hi0.copy()
            rows = rows0 + _collect([a for c in combo for a in c], lo_list, hi_list)
            lo, hi = np.array(lo_list), np.array(hi_list)
            _check_box(ps, lo, hi)
            A = np.zeros((len(rows), ny))
            b = np.zeros(len(rows))
            for r, (coeffs, const) in enumerate(rows):
                for v, c in coeffs.items():
                    A[r, ps.var_names[v][1]] = c
                b[r] = 0.0 - const  # not -const: avoids -0.0
            key = lo.tobytes() + hi.tobytes()
            if key not in groups:
                groups[key] = (lo, hi, [])
            groups[key][2].append(OutputConstraint(A=A, b=b))

    for lo, hi, cs in groups.values():
        for arr in (lo, hi, *(c.A for c in cs), *(c.b for c in cs)):
            arr.setflags(write=False)
    props = tuple(VnnlibProperty(lo, hi, tuple(cs)) for lo, hi, cs in groups.values())
    return VnnlibSpec(n_inputs=nx, n_outputs=ny, properties=props, path=path)
