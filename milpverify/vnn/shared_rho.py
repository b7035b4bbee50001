"""Recognise an L-inf robustness spec and answer several of its epsilons with one exact rho."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from milpverify.errors import InvalidInputError
from milpverify.ir.network import Network
from milpverify.ir.ops import FloatArray
from milpverify.vnn.check import check_counterexample
from milpverify.vnn.results import VnnlibResult
from milpverify.vnn.spec import VnnlibProperty, VnnlibSpec


# ---------------------------------------------------------------------------- shared rho
@dataclass(frozen=True)
class LinfRobustnessForm:
    """A spec recognised as "some other output reaches y_label on an L-inf box around a centre".

    Attributes
    ----------
    label : int
    centre : ndarray
        Reconstructed centre (midpoint where the box is not clipped to the domain).
    radius : float
        Smallest r with ``box ⊆ {x : ||x - centre||_inf <= r}`` (rounded up).
    exact : bool
        The box equals ``[max(lo, c - r), min(hi, c + r)]`` up to float32 rounding (1e-7);
        when False the ball is larger than the box and only witnesses inside the box can
        answer the instance.
    lower, upper : ndarray
        The box as read.
    """

    label: int
    centre: FloatArray
    radius: float
    exact: bool
    lower: FloatArray
    upper: FloatArray


#: Reconstruction tolerance of `linf_robustness_form` (VNN-COMP writes float32 boxes).
RECONSTRUCTION_TOL = 1e-7


def _misclassification_label(prop: VnnlibProperty, n_out: int) -> int | None:
    """The label if the unsafe set is exactly ``OR_{j != label} y_j >= y_label``, else None."""
    if len(prop.unsafe) != n_out - 1:
        return None
    labels, others = set(), set()
    for c in prop.unsafe:
        if c.A.shape[0] != 1 or c.b[0] != 0.0:
            return None
        row = c.A[0]
        pos, neg = np.flatnonzero(row > 0), np.flatnonzero(row < 0)
        if len(pos) != 1 or len(neg) != 1 or row[pos[0]] != -row[neg[0]]:
            return None
        labels.add(int(pos[0]))
        others.add(int(neg[0]))
    if len(labels) != 1:
        return None
    label = labels.pop()
    return label if others == set(range(n_out)) - {label} else None


def _containing_radius(centre: FloatArray, lower: FloatArray, upper: FloatArray) -> float:
    """Smallest r (rounded up) with the box inside the L-inf ball of radius r at `centre`."""
    r = float(np.max(np.maximum(centre - lower, upper - centre)))
    return float(np.nextafter(r * (1.0 + 1e-12), np.inf))


def linf_robustness_form(spec: VnnlibSpec, *, domain: tuple[float, float] = (0.0, 1.0),
                         centre: npt.ArrayLike | None = None) -> LinfRobustnessForm | None:
    """Recognise a standard L-inf robustness spec (clipped box + misclassification set).

    Parameters
    ----------
    spec : VnnlibSpec
    domain : (low, high)
        The box must lie inside it (the clipping range).
    centre : array, optional
        Use this centre (e.g. another instance's) instead of reconstructing one.

    Returns
    -------
    LinfRobustnessForm or None
        None unless the spec has one property inside `domain` whose unsafe set is
        ``OR_{j != label} y_j >= y_label`` over all other outputs, and the centre lies in
        the box.
    """
    if len(spec.properties) != 1:
        return None
    prop = spec.properties[0]
    label = _misclassification_label(prop, spec.n_outputs)
    lo, hi = np.asarray(prop.input_lower), np.asarray(prop.input_upper)
    d_lo, d_hi = domain
    if label is None or np.any(lo < d_lo) or np.any(hi > d_hi):
        return None
    if centre is None:
        interior = (lo > d_lo) & (hi < d_hi)
        if not interior.any():
            return None
        eps = float(np.median(0.5 * (hi - lo)[interior]))
        c = 0.5 * (lo + hi)
        c = np.where((lo <= d_lo) & (hi < d_hi), np.maximum(d_lo, hi - eps), c)
        c = np.where((hi >= d_hi) & (lo > d_lo), np.minimum(d_hi, lo + eps), c)
    else:
        c = np.asarray(centre, dtype=np.float64).reshape(-1)
        if c.shape != lo.shape:
            return None
    if np.any(c < lo) or np.any(c > hi):
        return None
    r = _containing_radius(c, lo, hi)
    exact = bool(np.all(np.abs(np.maximum(d_lo, c - r) - lo) <= RECONSTRUCTION_TOL)
                 and np.all(np.abs(np.minimum(d_hi, c + r) - hi) <= RECONSTRUCTION_TOL))
    return LinfRobustnessForm(label, c, r, exact, lo, hi)


def shared_rho_decisions(net: Network, specs: Sequence[VnnlibSpec], *, time_limit_s: float,
                         backend: str = "scip", bounds_method: str = "progressive",
                         upper_bound: str | None = "pgd", threads: int = 1,
                         solver_params: dict[str, object] | None = None
                         ) -> tuple[list[VnnlibResult | None], Any]:
    """Answer several robustness specs around one centre with a single exact rho.

    The centre and label come from the first spec (`linf_robustness_form`); every spec
    must be in that form around the same centre and label. One
    ``rho(net, centre, eps_cap=max radius, label=label)`` then answers each spec:

    * ``unsat`` when its box lies in the ball of radius r around the centre and rho is proven
      above r (``lower > r``, or ``lower >= r`` with status ``robust_at_cap``);
    * ``sat`` when rho's witness, rounded to float32 into the spec's box, passes
      `check_counterexample` for that spec;
    * None (undecided) otherwise: the caller falls back to `verify_vnnlib`.

    Soundness never depends on the centre being the true image: containment and the
    counterexample are checked per spec.

    Returns
    -------
    (list of VnnlibResult or None, RhoResult)
    """
    from milpverify.verify import rho

    start = time.perf_counter()
    first = linf_robustness_form(specs[0])
    if first is None:
        raise InvalidInputError("the first spec is not an L-inf robustness spec")
    forms = [linf_robustness_form(s, centre=first.centre) for s in specs]
    if any(f is None or f.label != first.label for f in forms):
        raise InvalidInputError("every spec must be an L-inf robustness spec around the same "
                                "centre and label")
    cap = max(f.radius for f in forms if f is not None)
    res = rho(net, first.centre, eps_cap=cap, label=first.label, time_limit_s=time_limit_s,
              backend=backend, bounds_method=bounds_method, upper_bound=upper_bound,
              threads=threads, solver_params=solver_params)
    elapsed = time.perf_counter() - start
    out: list[VnnlibResult | None] = []
    for spec, form in zip(specs, forms):
        assert form is not None
        timings = {"rho_s": elapsed, "total_s": elapsed}
        stats = {"rho_status": str(res.status), "rho_lower": res.lower, "rho_upper": res.upper,
                 "radius": form.radius}
        proven = res.lower > form.radius or (res.status == "robust_at_cap"
                                             and res.lower >= form.radius)
        if proven and res.status != "error":
            out.append(VnnlibResult("unsat", decided_by="rho", timings=timings, stats=stats))
            continue
        if res.witness is not None and res.witness_verified:
            check = check_counterexample(net, spec.properties[0], res.witness)
            if check.verified:
                out.append(VnnlibResult("sat", check.x, check.y, "rho", timings, stats))
                continue
        out.append(None)
    return out, res
