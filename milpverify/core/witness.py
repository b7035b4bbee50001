"""Re-checking adversarial examples: numpy float64 and onnxruntime on the original model.

A witness is rounded to float32 first (the dtype the ONNX model runs in; toward x, so it
never leaves the ball it was found in), so both checks see the same point and the reported
distance is the distance of that point.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ParamSpec, Protocol, TypeVar

import numpy as np

from milpverify.core.results import norm_distance
from milpverify.ir.network import Network
from milpverify.ir.ops import FloatArray

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- rejection counts
@dataclass
class RejectionCount:
    """Candidates that failed their re-check inside a `counting_rejections` block.

    Counts reach every enclosing block (`parent`), so a `rho` that calls `rho` per target
    counts the inner calls' rejections too.
    """

    count: int = 0
    parent: RejectionCount | None = None


#: The innermost open `counting_rejections` block of this thread / task (None outside).
_REJECTIONS: ContextVar[RejectionCount | None] = ContextVar("witness_rejections", default=None)


@contextlib.contextmanager
def counting_rejections() -> Iterator[RejectionCount]:
    """Count the witnesses `check_witness` (and the property check) reject in this block.

    Rejections are routine near ties (numpy and onnxruntime disagree at the 1e-7 level),
    so they are logged at debug level only; the count is what results report
    (`stats["witness_rejections"]`, the runs' ``witness_rejections`` column).

    Example
    -------
    >>> with counting_rejections() as rejected:
    ...     check = check_witness(net, x, x, label=label)
    >>> rejected.count
    1
    """
    counter = RejectionCount(parent=_REJECTIONS.get())
    token = _REJECTIONS.set(counter)
    try:
        yield counter
    finally:
        _REJECTIONS.reset(token)


def note_rejection() -> None:
    """Add one rejected candidate to every open `counting_rejections` block."""
    counter = _REJECTIONS.get()
    while counter is not None:
        counter.count += 1
        counter = counter.parent


class _HasStats(Protocol):
    @property
    def stats(self) -> dict[str, Any]: ...


P = ParamSpec("P")
R = TypeVar("R", bound=_HasStats)


def reports_rejections(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorate a verifier entry point: its result's ``stats["witness_rejections"]`` is
    the number of candidates rejected during the call (`counting_rejections`)."""

    @functools.wraps(fn)
    def counted(*args: P.args, **kwargs: P.kwargs) -> R:
        with counting_rejections() as rejected:
            result = fn(*args, **kwargs)
        result.stats["witness_rejections"] = rejected.count
        return result

    return counted


@dataclass(frozen=True)
class WitnessCheck:
    """Outcome of re-running a candidate adversarial example.

    `margin_numpy` / `margin_onnx` are `max_{j != label} f_j(w) - f_label(w)` (or for the
    given target j only); the witness is adversarial when a margin is `>= required_margin`
    (ties count: at distance rho the nearest point may only tie). `onnx_margin` is None when
    the network has no ONNX origin (then only numpy is checked).
    """

    verified: bool
    witness: FloatArray
    distance: float
    in_domain: bool
    margin_numpy: float
    margin_onnx: float | None
    adversarial_label: int
    message: str


def float32_toward(point: FloatArray, x: FloatArray) -> FloatArray:
    """`point` rounded to float32, each coordinate no farther from `x` than before.

    Round-to-nearest can move a point on the boundary of an eps-ball (where solver optima
    live) just outside it; where it moved away from x, the float32 neighbour on x's side
    is taken instead. Values in [0, 1] stay in [0, 1] (both ends are float32 numbers).
    """
    rounded = point.astype(np.float32)
    farther = np.abs(rounded.astype(np.float64) - x) > np.abs(point - x)
    toward = np.nextafter(rounded, np.where(x > point, np.float32(np.inf), np.float32(-np.inf)))
    return np.where(farther, toward, rounded).astype(np.float64)


@lru_cache(maxsize=8)
def _session(onnx_bytes: bytes) -> Any:
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


def onnx_logits(net: Network, x: FloatArray) -> FloatArray | None:
    """Logits of a batch through onnxruntime on the original model (None without ONNX origin)."""
    origin = net.origin
    if origin.onnx_bytes is None or origin.input_name is None or origin.input_shape is None:
        return None
    sess = _session(origin.onnx_bytes)
    batch = net.as_batch(x).astype(np.float32)
    rows = [sess.run(None, {origin.input_name: row.reshape(origin.input_shape)})[0].reshape(-1)
            for row in batch]
    return np.asarray(rows, dtype=np.float64)


def _margin(logits: FloatArray, label: int, target: int | None) -> tuple[float, int]:
    others = np.delete(np.arange(logits.size), label) if target is None else np.array([target])
    best = int(others[np.argmax(logits[others])])
    return float(logits[best] - logits[label]), best


def check_witness(net: Network, x: FloatArray, witness: FloatArray, *, label: int,
                  domain: tuple[float, float] | None = (0.0, 1.0), norm: str = "linf",
                  required_margin: float = 0.0, target: int | None = None) -> WitnessCheck:
    """Re-run `witness` and decide whether it is a genuine adversarial example for `x`.

    Parameters
    ----------
    net : Network
    x : ndarray
        The original input (any shape `net.as_batch` accepts, one sample).
    witness : ndarray
        Candidate; it is rounded to float32 before checking.
    label : int
        The label that must be beaten.
    domain : (low, high) or None
        Box the witness must lie in.
    required_margin : float
        Need `f_j(w) - f_label(w) >= required_margin` for some j != label (or j = target),
        in numpy float64 and in onnxruntime.

    Returns
    -------
    WitnessCheck
    """
    x0 = net.as_batch(x)[0]
    w = float32_toward(net.as_batch(witness)[0], x0)
    in_domain = domain is None or bool(np.all(w >= domain[0]) and np.all(w <= domain[1]))
    margin_np, adv = _margin(net.forward(w)[0], label, target)
    ref = onnx_logits(net, w)
    margin_ort = None if ref is None else _margin(ref[0], label, target)[0]
    ok_np = margin_np >= required_margin
    ok_ort = margin_ort is None or margin_ort >= required_margin
    verified = in_domain and ok_np and ok_ort
    message = "" if verified else (
        f"witness rejected: in_domain={in_domain}, numpy margin {margin_np:.3g}, onnxruntime "
        f"margin {margin_ort if margin_ort is None else f'{margin_ort:.3g}'} (need >= "
        f"{required_margin:g})")
    if not verified:
        # Routine while repairing near-tie solver points (numpy and onnxruntime disagree at
        # the 1e-7 level); the reason also travels in `WitnessCheck.message`.
        note_rejection()
        log.debug(message)
    return WitnessCheck(verified, w.reshape(net.input_shape), norm_distance(w, x0, norm),
                        in_domain, margin_np, margin_ort, adv, message)


#: Relative extra steps along the ray x -> point tried by `repair_witness`.
RAY_STEPS = (0.0, 1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3)


def repair_witness(net: Network, x: FloatArray, point: FloatArray, *, label: int,
                   domain: tuple[float, float] | None = (0.0, 1.0), norm: str = "linf",
                   required_margin: float = 0.0, target: int | None = None,
                   box: tuple[FloatArray, FloatArray] | None = None) -> WitnessCheck | None:
    """Re-check a solver point; if it fails, push it slightly further along its ray.

    Solver points satisfy rows only up to tolerance, so a point at the exact optimum may
    miss the misclassification by ~1e-7. `x + (1 + s)(point - x)` for small s crosses the
    decision boundary; it is clipped to `box` (default: the domain). The first candidate
    that passes `check_witness` is returned, or None if none does.
    """
    x0 = net.as_batch(x)[0]
    p0 = net.as_batch(point)[0]
    if box is None:
        lo, hi = domain if domain is not None else (-np.inf, np.inf)
        box = (np.full_like(x0, lo), np.full_like(x0, hi))
    for step in RAY_STEPS:
        cand = np.clip(x0 + (1.0 + step) * (p0 - x0), box[0], box[1])
        check = check_witness(net, x0, cand, label=label, domain=domain, norm=norm,
                              required_margin=required_margin, target=target)
        if check.verified:
            return check
    return None
