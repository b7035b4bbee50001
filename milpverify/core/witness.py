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
import numpy.typing as npt

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
    """Count the points `check_point` rejects in this block (witnesses, property
    witnesses, VNN-LIB counterexamples).

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


#: The unsafe-set test of a check: outputs ``y`` -> (margin, adversarial label). The point is
#: unsafe when the margin is ``>= required_margin`` (ties count: at distance rho the nearest
#: point may only tie).
Slack = Callable[[FloatArray], "tuple[float, int]"]


@dataclass(frozen=True)
class WitnessCheck:
    """Outcome of re-running a candidate adversarial example or counterexample.

    `margin_numpy` / `margin_onnx` are the query's margins at the checked point, in numpy
    float64 and in onnxruntime on the original model: `max_{j != label} f_j - f_label` for
    misclassification (or for the given target j only), the relaxed top-K violation, or
    `max_d min_r (b - A y)` for a VNN-LIB property. `margin_onnx` and `y_onnx` are None
    when the network has no ONNX origin (then only numpy is checked). `distance` is the
    checked point's distance to the centre, None without one.
    """

    verified: bool
    witness: FloatArray  # the checked (float32-rounded) point, in the network's input shape
    distance: float | None
    in_domain: bool
    margin_numpy: float
    margin_onnx: float | None
    adversarial_label: int
    message: str
    y_numpy: FloatArray | None = None
    y_onnx: FloatArray | None = None

    @property
    def x(self) -> FloatArray:
        """The checked point, flat (the layout VNN-LIB results are written in)."""
        return self.witness.reshape(-1)

    @property
    def y(self) -> FloatArray | None:
        """The outputs to report: onnxruntime's when available, else numpy's."""
        return self.y_onnx if self.y_onnx is not None else self.y_numpy


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


def float32_into_box(point: FloatArray, lower: FloatArray, upper: FloatArray) -> FloatArray:
    """float32 values of `point` inside the box: clipped into it, then each coordinate that
    rounding moved out nudged one float32 step back in. A coordinate whose box holds no
    float32 value stays outside (and the check rejects the point)."""
    x32 = np.clip(point, lower, upper).astype(np.float32)
    high = x32.astype(np.float64) > upper
    x32[high] = np.nextafter(x32[high], np.float32(-np.inf))
    low = x32.astype(np.float64) < lower
    x32[low] = np.nextafter(x32[low], np.float32(np.inf))
    return x32.astype(np.float64)


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


def check_point(net: Network, point: npt.ArrayLike, slack: Slack, *,
                centre: FloatArray | None = None, box: tuple[Any, Any] | None = None,
                norm: str = "linf", required_margin: float = 0.0, what: str = "witness"
                ) -> WitnessCheck:
    """The one witness check: round `point` to float32 and re-run it in numpy float64 and in
    onnxruntime on the original model.

    Rounding goes toward `centre` when there is one (`float32_toward`: a point found in a
    ball stays in it), then into `box` (`float32_into_box`; bounds may be scalars or per
    coordinate). Verified iff the point lies in `box` and `slack` gives a margin
    ``>= required_margin`` on both outputs. `what` names the query in the message.
    """
    p = net.as_batch(point)[0]
    w = p.astype(np.float32).astype(np.float64) if centre is None else float32_toward(p, centre)
    in_domain = True
    if box is not None:
        lower = np.broadcast_to(np.asarray(box[0], dtype=np.float64), w.shape)
        upper = np.broadcast_to(np.asarray(box[1], dtype=np.float64), w.shape)
        w = float32_into_box(w, lower, upper)
        in_domain = bool(np.all(w >= lower) and np.all(w <= upper))
    y_np = net.forward(w)[0]
    margin_np, adv = slack(y_np)
    ref = onnx_logits(net, w)
    y_ort = None if ref is None else ref[0]
    margin_ort = None if y_ort is None else slack(y_ort)[0]
    verified = (in_domain and margin_np >= required_margin
                and (margin_ort is None or margin_ort >= required_margin))
    message = "" if verified else (
        f"{what} rejected: in_domain={in_domain}, numpy margin {margin_np:.3g}, onnxruntime "
        f"margin {'n/a' if margin_ort is None else f'{margin_ort:.3g}'} (need >= "
        f"{required_margin:g})")
    if not verified:
        # Routine while repairing near-tie solver points (numpy and onnxruntime disagree at
        # the 1e-7 level); the reason also travels in `WitnessCheck.message`.
        note_rejection()
        log.debug(message)
    distance = None if centre is None else norm_distance(w, centre, norm)
    return WitnessCheck(verified, w.reshape(net.input_shape), distance, in_domain,
                        float(margin_np), None if margin_ort is None else float(margin_ort),
                        int(adv), message, y_np, y_ort)


def misclassification_slack(label: int, target: int | None = None) -> Slack:
    """`max_{j != label} y_j - y_label` (or `y_target - y_label`), and the j attaining it."""
    def slack(y: FloatArray) -> tuple[float, int]:
        others = np.delete(np.arange(y.size), label) if target is None else np.array([target])
        best = int(others[np.argmax(y[others])])
        return float(y[best] - y[label]), best
    return slack


def check_witness(net: Network, x: FloatArray, witness: FloatArray, *, label: int,
                  domain: tuple[float, float] | None = (0.0, 1.0), norm: str = "linf",
                  required_margin: float = 0.0, target: int | None = None) -> WitnessCheck:
    """Re-run `witness` and decide whether it is a genuine adversarial example for `x`
    (`check_point` with the misclassification margin).

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
    return check_point(net, witness, misclassification_slack(label, target),
                       centre=net.as_batch(x)[0], box=domain, norm=norm,
                       required_margin=required_margin)


#: Relative extra steps along the ray x -> point tried by `repair_witness`.
RAY_STEPS = (0.0, 1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3)


def along_ray(x: FloatArray, point: FloatArray, box: tuple[Any, Any],
              check: Callable[[FloatArray], WitnessCheck]) -> WitnessCheck | None:
    """Re-check a solver point; if it fails, push it slightly further along its ray.

    Solver points satisfy rows only up to tolerance, so a point at the exact optimum may
    miss the unsafe set by ~1e-7. `x + (1 + s)(point - x)` for small s (`RAY_STEPS`)
    crosses the boundary; it is clipped to `box`. The first candidate that passes `check`
    is returned, or None if none does.
    """
    for step in RAY_STEPS:
        found = check(np.clip(x + (1.0 + step) * (point - x), box[0], box[1]))
        if found.verified:
            return found
    return None


def repair_witness(net: Network, x: FloatArray, point: FloatArray, *, label: int,
                   domain: tuple[float, float] | None = (0.0, 1.0), norm: str = "linf",
                   required_margin: float = 0.0, target: int | None = None,
                   box: tuple[FloatArray, FloatArray] | None = None) -> WitnessCheck | None:
    """`along_ray` with `check_witness`; `box` defaults to the domain."""
    x0 = net.as_batch(x)[0]
    if box is None:
        box = domain if domain is not None else (-np.inf, np.inf)
    return along_ray(x0, net.as_batch(point)[0], box, lambda cand: check_witness(
        net, x0, cand, label=label, domain=domain, norm=norm, required_margin=required_margin,
        target=target))
