"""Typed results shared by every estimator: `RhoResult`, `Certificate`, and their statuses."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from milpverify.ir.ops import FloatArray


class RhoStatus(str, enum.Enum):
    """How a distance bracket was obtained (compares equal to its string value).

    OPTIMAL: proven, `upper - lower <= tolerance`, witness verified.
    ROBUST_AT_CAP: proven `rho > eps_cap` (`lower = eps_cap`, `upper = inf` unless a witness).
    TIME_LIMIT: the solver stopped early; `[lower, upper]` is still a proven bracket.
    UPPER_BOUND: a heuristic (LP restriction, attack) found a verified witness; `lower` is 0
        unless something proved more.
    NOT_FOUND: a heuristic found no adversarial example (nothing is proven: `lower = 0`).
    ERROR: something failed; `message` says what, the bracket is `[0, inf]`.
    """

    OPTIMAL = "optimal"
    ROBUST_AT_CAP = "robust_at_cap"
    TIME_LIMIT = "time_limit"
    UPPER_BOUND = "upper_bound"
    NOT_FOUND = "not_found"
    ERROR = "error"

    def __str__(self) -> str:
        return self.value


class Verdict(str, enum.Enum):
    """Answer of a decision query "is x robust at eps?"."""

    ROBUST = "robust"
    NOT_ROBUST = "not_robust"
    UNKNOWN = "unknown"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class RhoResult:
    """A certified bracket `lower <= rho(f, x) <= upper` of the pointwise robustness.

    Attributes
    ----------
    lower, upper : float
        Proven lower bound and upper bound of rho (``inf`` when no adversarial example is
        known). Equal up to the solver tolerance only when `status` is ``"optimal"``.
    status : RhoStatus
        See `RhoStatus`.
    label : int
        The label rho is measured against (the prediction at x unless given).
    adversarial_label : int or None
        The label the witness is (mis)classified as; None without a witness.
    witness : ndarray or None
        An input at distance `upper` (input shape), verified as described in
        `witness_verified`; None if no adversarial example was found.
    witness_verified : bool
        True iff the witness was re-run in numpy float64 and in onnxruntime on the original
        model, and both agree it is misclassified, inside the domain, at distance `upper`.
    timings : dict[str, float]
        Seconds: ``bounds_s``, ``build_s``, ``solve_s``, ``total_s`` (and method-specific).
    stats : dict[str, Any]
        Counts such as ``binaries``, ``unstable_relus``, ``nodes``, and
        ``witness_rejections``: candidate points that failed the re-check during the call
        (routine near ties; `rho`, `certify` and the estimators report it).
    method, norm : str
        Which estimator and which norm ("linf", "l1", "l2").
    message : str
        Human-readable detail (errors, why a witness failed its check).
    """

    lower: float
    upper: float
    status: RhoStatus
    label: int
    adversarial_label: int | None = None
    witness: FloatArray | None = None
    witness_verified: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    method: str = "exact"
    norm: str = "linf"
    message: str = ""

    def __repr__(self) -> str:
        return _short_repr(self)

    @property
    def exact(self) -> bool:
        """True iff rho is proven to within the solver tolerance."""
        return self.status == RhoStatus.OPTIMAL

    def row(self) -> dict[str, Any]:
        """Flat dict for CSV output (no arrays)."""
        row: dict[str, Any] = {
            "method": self.method, "label": self.label, "lower": self.lower, "upper": self.upper,
            "status": str(self.status), "adversarial_label": self.adversarial_label,
            "witness_verified": self.witness_verified,
        }
        row.update({k: round(v, 6) for k, v in self.timings.items()})
        row.update(self.stats)
        return row


@dataclass(frozen=True)
class Certificate:
    """Answer to "is every x' with ||x' - x|| <= eps (in the domain) classified as `label`?".

    `verdict` is ``"not_robust"`` only with a verified `witness`, ``"robust"`` only when the
    solver proved infeasibility, and ``"unknown"`` otherwise (time limit, failed check).
    `stats` holds counts as in `RhoResult` (``witness_rejections`` among them).
    """

    verdict: Verdict
    eps: float
    label: int
    witness: FloatArray | None = None
    witness_verified: bool = False
    adversarial_label: int | None = None
    timings: dict[str, float] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    message: str = ""

    def __repr__(self) -> str:
        return _short_repr(self)


def _short_repr(result: Any) -> str:
    """A one-line repr that shows the witness as its shape, not its values.

    The dataclass default printed every pixel (kilobytes per result in a notebook or a log);
    the witness itself stays available as the `witness` attribute.
    """
    parts = []
    for name in result.__dataclass_fields__:
        value = getattr(result, name)
        if name == "witness":
            value = "None" if value is None else f"<array {'x'.join(map(str, np.shape(value)))}>"
        elif isinstance(value, enum.Enum):
            value = repr(value.value)
        elif isinstance(value, dict):
            value = "{" + ", ".join(f"{k!r}: {v:.4g}" if isinstance(v, float) else f"{k!r}: {v!r}"
                                    for k, v in value.items()) + "}"
        else:
            value = repr(value)
        parts.append(f"{name}={value}")
    return f"{type(result).__name__}({', '.join(parts)})"


def norm_distance(a: FloatArray, b: FloatArray, norm: str) -> float:
    """`||a - b||` for norm in {"linf", "l1", "l2"} (flat float64)."""
    diff = np.asarray(a, dtype=np.float64).reshape(-1) - np.asarray(b, dtype=np.float64).reshape(-1)
    order = {"linf": np.inf, "l1": 1, "l2": 2}[norm]
    return float(np.linalg.norm(diff, ord=order))
