"""VNN-COMP result files (sat/unsat/timeout/unknown/error with the counterexample) and the per-
instance result type.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

from milpverify.errors import InvalidInputError
from milpverify.ir.ops import FloatArray

PathLike = Union[str, "os.PathLike[str]"]


RESULTS = ("sat", "unsat", "timeout", "unknown", "error")


# --------------------------------------------------------------------------- results


def _finite_vector(v: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64).reshape(-1)
    if a.size == 0 or not np.all(np.isfinite(a)):
        raise InvalidInputError(f"counterexample {name} must be a non-empty finite vector")
    return a


def format_counterexample(x: np.ndarray, y: np.ndarray) -> str:
    """Format a counterexample as the VNN-COMP s-expression ``((X_0 v)\\n (X_1 v)\\n ... (Y_m v))``.

    ``x`` and ``y`` are flattened (C order) to float64; values are written with
    ``repr(float(v))`` so that reading them back gives the same float64 bits.
    """
    xs, ys = _finite_vector(x, "x"), _finite_vector(y, "y")
    items = [f"(X_{i} {float(v)!r})" for i, v in enumerate(xs)]
    items += [f"(Y_{j} {float(v)!r})" for j, v in enumerate(ys)]
    return "(" + "\n ".join(items) + ")"


def write_result(
    path: PathLike,
    result: str,
    counterexample: tuple[np.ndarray, np.ndarray] | None = None,
) -> None:
    """Write a VNN-COMP result file.

    The first line is ``result`` (one of `RESULTS`). For ``sat`` the counterexample
    ``(x, y)`` follows in `format_counterexample` format; VNN-COMP scores a ``sat``
    without counterexample as incorrect, but it may be omitted here.

    Raises
    ------
    InvalidInputError
        Unknown result, a counterexample given for a result other than ``sat``, or a
        non-finite counterexample.
    """
    if result not in RESULTS:
        raise InvalidInputError(f"result must be one of {RESULTS}, got {result!r}")
    text = result + "\n"
    if counterexample is not None:
        if result != "sat":
            raise InvalidInputError(f"a counterexample only goes with 'sat', not {result!r}")
        text += format_counterexample(*counterexample) + "\n"
    Path(path).write_text(text, encoding="utf-8")


_PAIR = re.compile(r"\(\s*([XY])_(\d+)\s+([^\s()]+)\s*\)")


_ALIASES = {"violated": "sat", "holds": "unsat"}


_RESULT_WORDS = frozenset(RESULTS) | frozenset(_ALIASES)


def parse_result(path_or_text: PathLike) -> tuple[str, np.ndarray | None, np.ndarray | None]:
    """Read a VNN-COMP result file (or its text).

    Parameters
    ----------
    path_or_text : str or os.PathLike
        A path, or the text itself (a ``str`` containing a newline or ``(``, or equal to a
        bare result word).

    Returns
    -------
    (result, x, y)
        ``result`` is one of `RESULTS` (VNN-COMP 2021's ``violated``/``holds`` are mapped
        to ``sat``/``unsat``). ``x`` and ``y`` are float64 vectors of the counterexample
        for ``sat`` with one, else None. Every ``(X_i v)``/``(Y_j v)`` pair is read, so
        both ``((X_0 v) ...)`` and one-pair-per-line layouts are accepted.

    Raises
    ------
    InvalidInputError
        Missing file, unknown result word, or a malformed counterexample.
    """
    s = path_or_text
    if isinstance(s, str) and ("\n" in s or "(" in s or s.strip().lower() in _RESULT_WORDS):
        source, text = "<result text>", s
    else:
        source = str(Path(s))
        try:
            text = Path(s).read_text(encoding="utf-8")
        except FileNotFoundError as e:
            raise InvalidInputError(f"result file not found: {source!r}") from e
        except (OSError, UnicodeDecodeError) as e:
            raise InvalidInputError(f"cannot read result file {source!r}: {e}") from e
    first, _, rest = text.strip().partition("\n")
    result = _ALIASES.get(first.strip().lower(), first.strip().lower())
    if result not in RESULTS:
        raise InvalidInputError(
            f"{source}: first line must be one of {RESULTS}, got {first.strip()[:40]!r}")
    if result != "sat" or not rest.strip():
        return result, None, None
    values: dict[str, dict[int, float]] = {"X": {}, "Y": {}}
    for kind, idx, val in _PAIR.findall(rest):
        try:
            values[kind][int(idx)] = float(val)
        except ValueError as e:
            raise InvalidInputError(f"{source}: bad value {val!r} for {kind}_{idx}") from e
    if rest.count("(") != rest.count(")"):
        raise InvalidInputError(f"{source}: unbalanced parentheses in the counterexample")
    out = []
    for kind in ("X", "Y"):
        d = values[kind]
        if sorted(d) != list(range(len(d))) or not d:
            raise InvalidInputError(
                f"{source}: counterexample must give {kind}_0..{kind}_n-1 without gaps")
        out.append(np.array([d[i] for i in range(len(d))], dtype=np.float64))
    return result, out[0], out[1]


#: Columns of the results CSV written by `run_vnncomp` (the first four are VNN-COMP's;
#: ``group`` names the shared-rho group an instance was answered in, empty otherwise).
RESULT_COLUMNS = ("onnx", "vnnlib", "result", "seconds", "timeout", "decided_by", "group",
                  "message")


# ---------------------------------------------------------------------------- results
@dataclass(frozen=True)
class VnnlibResult:
    """Answer to one VNN-LIB instance.

    Attributes
    ----------
    result : str
        ``"sat"`` (a counterexample passed the re-check), ``"unsat"`` (proven), ``"timeout"``
        (the time limit ran out first), ``"unknown"`` (gave up for another reason, e.g. the
        solver's points never survived the re-check), or ``"error"``.
    x, y : ndarray or None
        For ``sat``: the flat input (C order of the ONNX input; float32-representable values
        inside the box) and onnxruntime's outputs at it (numpy float64 outputs when the
        network has no ONNX origin).
    decided_by : str
        ``"bounds"``, ``"attack"``, ``"input_split"``, ``"relu_split"``, ``"milp"``,
        ``"rho"`` (shared rho)
        or ``""``.
    timings : dict[str, float]
        Seconds per stage (``bounds_s``, ``attack_s``, ``tighten_s``, ``build_s``,
        ``solve_s``, ``total_s``; ``input_split_s`` and ``relu_split_s`` when those stages
        ran).
    stats : dict[str, Any]
        Counts: ``disjuncts``, ``disjuncts_left``, ``unstable_symbolic``,
        ``unstable_tightened``, ``binaries``, ``nodes``; ``split_boxes`` (input splitting)
        and ``relu_domains`` / ``relu_batches`` (ReLU splitting) when those stages ran.
    message : str
        Why, for anything but a clean ``sat``/``unsat``.
    """

    result: str
    x: FloatArray | None = None
    y: FloatArray | None = None
    decided_by: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    message: str = ""

    @property
    def counterexample(self) -> tuple[FloatArray, FloatArray] | None:
        """``(x, y)`` for ``sat``, else None."""
        if self.result != "sat" or self.x is None or self.y is None:
            return None
        return self.x, self.y

    def write(self, path: PathLike) -> None:
        """Write the VNN-COMP result file (first line the result, then the counterexample)."""
        write_result(path, self.result, self.counterexample)
