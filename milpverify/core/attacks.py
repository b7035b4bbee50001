"""Approximate baselines for rho: FGSM scan, L-inf/L2 PGD with bisection, L-BFGS-B (Szegedy).

Every attack returns a `RhoResult` with ``status="upper_bound"`` and ``lower=0``: the upper
bound is the distance (L-inf; L2 for ``pgd(norm="l2")``) of a witness that passed
`check_witness` (numpy float64 and onnxruntime on the original model, after rounding to
float32). A candidate that fails the check is never reported; the attack tries the next
one, and returns ``status="not_found"`` (``upper=inf``) when nothing passes. Gradients
come from `milpverify.frontends.torchnet.to_torch(net)` (float64), so the attacks and the
exact methods share one IR.

torch is imported lazily (inside the functions).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from milpverify.core.ascent import Step, ascend, bisect_radius, signed_step
from milpverify.core.results import RhoResult, RhoStatus
from milpverify.core.witness import WitnessCheck, check_witness
from milpverify.errors import InvalidInputError
from milpverify.ir.network import Network
from milpverify.ir.ops import FloatArray

Domain = tuple[float, float] | None


#: `np.linalg.norm` orders of the norms an attack measures in.
_ORDER = {"linf": np.inf, "l2": 2}


class _Problem:
    """One attack instance: the network compiled to torch, x, label, box, counters."""

    def __init__(self, net: Network, x: npt.ArrayLike, label: int | None, domain: Domain,
                 target: int | None = None, margin: float = 0.0) -> None:
        import torch

        from milpverify.frontends.torchnet import to_torch
        if not isinstance(net, Network):
            raise InvalidInputError(f"expected a Network; got {type(net).__name__}.")
        self.net = net
        self.x0: FloatArray = net.as_batch(x)
        if self.x0.shape[0] != 1:
            raise InvalidInputError(f"`x` must be one sample; got a batch of {self.x0.shape[0]}.")
        self.x0 = self.x0[0]
        k = net.num_classes
        if k < 2:
            raise InvalidInputError(f"the network has {k} output; an attack needs at least 2 "
                                    "classes.")
        self.label = int(net.predict(self.x0)[0]) if label is None else int(label)
        if not 0 <= self.label < k:
            raise InvalidInputError(f"label {label} is not in 0..{k - 1}.")
        if target is not None and (not 0 <= int(target) < k or int(target) == self.label):
            raise InvalidInputError(f"target {target} must be in 0..{k - 1} and differ from the "
                                    f"label {self.label}.")
        self.target = None if target is None else int(target)
        if not (math.isfinite(float(margin)) and float(margin) >= 0.0):
            raise InvalidInputError(f"margin must be a finite number >= 0; got {margin}.")
        self.required = float(margin)
        if domain is not None:
            low, high = float(domain[0]), float(domain[1])
            if not low < high:
                raise InvalidInputError(f"domain {domain} must be (low, high) with low < high.")
            self.domain: Domain = (low, high)
        else:
            self.domain = None
        self.torch = torch
        self.model = to_torch(net)
        self.stats: dict[str, Any] = {"forward_evaluations": 0, "gradient_evaluations": 0,
                                      "iterations": 0, "witness_checks": 0,
                                      "witness_rejections": 0}
        self.rejections: list[str] = []
        self.norm = "linf"  # the distance witnesses are measured and ranked in

    # ------------------------------------------------------------------ box
    def box(self, eps: float) -> tuple[FloatArray, FloatArray]:
        """Lower and upper corners of the eps-ball around x intersected with the domain."""
        low, high = self.x0 - eps, self.x0 + eps
        if self.domain is not None:
            low = np.maximum(low, self.domain[0])
            high = np.minimum(high, self.domain[1])
        return low, high

    def clip(self, z: FloatArray) -> FloatArray:
        return z if self.domain is None else np.clip(z, self.domain[0], self.domain[1])

    # ------------------------------------------------------------------ torch evaluations
    def _margin_t(self, logits: Any, target: int | None) -> Any:
        if target is not None:
            return logits[:, target] - logits[:, self.label]
        others = logits.clone()
        others[:, self.label] = -math.inf
        return others.max(dim=1).values - logits[:, self.label]

    def margins(self, z: FloatArray) -> FloatArray:
        """`max_{j != label} f_j(z) - f_label(z)` (or for `self.target`) per row, float64."""
        torch = self.torch
        with torch.no_grad():
            logits = self.model(torch.from_numpy(np.atleast_2d(z)))
            out = self._margin_t(logits, self.target).numpy().copy()
        self.stats["forward_evaluations"] += int(out.shape[0])
        return out

    def value_and_grad(self, z: FloatArray, loss: str, target: int | None = None
                       ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """(loss per row, d loss / d z, margin per row) for the loss to *maximise*.

        ``loss="margin"``: the margin (targeted if `target`); ``loss="ce"``: cross-entropy of
        the label (untargeted), or minus the cross-entropy of `target` (targeted).
        """
        torch = self.torch
        zt = torch.from_numpy(np.atleast_2d(z)).clone().requires_grad_(True)
        logits = self.model(zt)
        goal = target if target is not None else self.target
        margin = self._margin_t(logits, goal)
        if loss == "margin":
            value = margin
        elif loss == "ce":
            logp = torch.log_softmax(logits, dim=1)
            value = logp[:, goal] if goal is not None else -logp[:, self.label]
        else:
            raise InvalidInputError(f"loss must be 'ce' or 'margin'; got {loss!r}.")
        (grad,) = torch.autograd.grad(value.sum(), zt)
        n = int(zt.shape[0])
        self.stats["forward_evaluations"] += n
        self.stats["gradient_evaluations"] += n
        return (value.detach().numpy().copy(), grad.numpy().copy(),
                margin.detach().numpy().copy())

    # ------------------------------------------------------------------ witnesses
    def verify(self, z: FloatArray) -> WitnessCheck | None:
        """`check_witness` on a candidate; None (and counted) if it is rejected."""
        self.stats["witness_checks"] += 1
        check = check_witness(self.net, self.x0, z, label=self.label, domain=self.domain,
                              target=self.target, required_margin=self.required,
                              norm=self.norm)
        if check.verified:
            return check
        self.stats["witness_rejections"] += 1
        if len(self.rejections) < 3:
            self.rejections.append(check.message)
        return None

    def verify_rows(self, z: FloatArray, margins: FloatArray, limit: int = 3
                    ) -> WitnessCheck | None:
        """Verify the rows with margin >= required, closest first; the first that passes."""
        hits = np.flatnonzero(margins >= self.required)
        if hits.size == 0:
            return None
        dist = np.linalg.norm(z[hits] - self.x0, ord=_ORDER[self.norm], axis=1)
        for row in hits[np.lexsort((-margins[hits], dist))][:limit]:
            check = self.verify(z[row])
            if check is not None:
                return check
        return None

    def at_x(self) -> WitnessCheck | None:
        """x itself, if it is not classified as `label` (rho = 0)."""
        return self.verify_rows(self.x0[None], self.margins(self.x0[None]), limit=1)

    # ------------------------------------------------------------------ result
    def result(self, method: str, best: WitnessCheck | None, start: float,
               extra: dict[str, Any] | None = None, message: str = "") -> RhoResult:
        stats = dict(self.stats)
        stats.update(extra or {})
        timings = {"total_s": time.perf_counter() - start}
        if best is None:
            detail = message or "no adversarial example found"
            if self.rejections:
                detail += "; rejected candidates: " + " | ".join(self.rejections)
            return RhoResult(lower=0.0, upper=math.inf, status=RhoStatus.NOT_FOUND,
                             label=self.label, timings=timings, stats=stats, method=method,
                             norm=self.norm, message=detail)
        return RhoResult(lower=0.0, upper=float(best.distance), status=RhoStatus.UPPER_BOUND,
                         label=self.label, adversarial_label=int(best.adversarial_label),
                         witness=best.witness, witness_verified=True, timings=timings,
                         stats=stats, method=method, norm=self.norm, message=message)


def _better(a: WitnessCheck | None, b: WitnessCheck | None) -> WitnessCheck | None:
    if a is None:
        return b
    if b is None:
        return a
    return b if b.distance < a.distance else a


# ---------------------------------------------------------------------------- FGSM
def fgsm(net: Network, x: npt.ArrayLike, *, label: int | None = None,
         eps_grid: Sequence[float] | None = None, domain: Domain = (0.0, 1.0),
         loss: str = "ce", refine_steps: int = 20, target: int | None = None,
         margin: float = 0.0, threads: int | None = 1) -> RhoResult:
    """Fast gradient sign scan: the smallest eps along `sign(grad loss(x))` that verifies.

    The direction is computed once at x (Goodfellow et al. 2015); candidates
    `clip(x + eps * direction, domain)` are scanned over `eps_grid` in increasing order
    (Bastani et al. 2016, Sec. 6, used a single eps); then the bracket between the last
    failing and the first verified grid point is bisected `refine_steps` times along the
    same ray (every accepted point is verified).

    Parameters
    ----------
    net : Network
    x : array
        One input sample.
    label : int, optional
        Label to move away from (default: the prediction at x).
    eps_grid : sequence of float, optional
        Default: 0.001, 0.002, ..., 1.0 (1000 steps).
    domain : (low, high) or None
        Input box (default (0, 1)).
    loss : {"ce", "margin"}
        Cross-entropy of the label (default) or `max_{j != label} f_j - f_label`.
    refine_steps : int
        Bisection steps between the last failing and the first verified grid eps.
    target : int, optional
        Targeted variant (margin `f_target - f_label`; the witness must reach it).
    margin : float
        Required logit margin: a witness needs `max_{j != label} f_j - f_label >= margin`
        (or `f_target - f_label`) in numpy and onnxruntime; 0 (default) accepts ties.
    threads : int or None
        torch intra-op threads during the attack (restored afterwards); None keeps the
        current setting. One thread is fastest for small networks.

    Returns
    -------
    RhoResult
        ``method="fgsm"``, ``status="upper_bound"`` (or ``"not_found"``); ``stats["eps"]``
        is the step of the witness.

    Example
    -------
    >>> fgsm(net, images[0] / 255.0).upper
    """
    from milpverify.frontends.torchnet import torch_threads

    with torch_threads(threads):
        start = time.perf_counter()
        prob = _Problem(net, x, label, domain, target, margin)
        grid = np.arange(1, 1001) / 1000.0 if eps_grid is None \
            else np.asarray(eps_grid, dtype=np.float64).reshape(-1)
        grid = np.unique(grid[grid > 0])
        if grid.size == 0:
            raise InvalidInputError("eps_grid must contain a positive value.")
        at_x = prob.at_x()
        if at_x is not None:
            return prob.result("fgsm", at_x, start, {"eps": 0.0}, "x itself is misclassified")
        _, grad, _ = prob.value_and_grad(prob.x0[None], loss)
        direction = np.sign(grad[0])
        if not np.any(direction):
            return prob.result("fgsm", None, start, message="the gradient at x is zero")
        best, hit, batch = None, -1, 256
        for first in range(0, grid.size, batch):
            eps = grid[first:first + batch]
            cands = prob.clip(prob.x0[None] + eps[:, None] * direction[None])
            margins = prob.margins(cands)
            prob.stats["iterations"] += int(eps.size)
            for row in np.flatnonzero(margins >= prob.required)[:10]:
                best = prob.verify(cands[row])
                if best is not None:
                    hit = first + int(row)
                    break
            if best is not None:
                break
        if best is None:
            return prob.result("fgsm", None, start,
                               message=f"no adversarial example for eps up to {grid[-1]:g}")
        lo, hi = (float(grid[hit - 1]) if hit > 0 else 0.0), float(grid[hit])
        for _ in range(refine_steps):
            mid = 0.5 * (lo + hi)
            cand = prob.clip(prob.x0 + mid * direction)
            prob.stats["iterations"] += 1
            check = prob.verify(cand) if prob.margins(cand)[0] >= prob.required else None
            if check is not None:
                best, hi = _better(best, check), mid
            else:
                lo = mid
        return prob.result("fgsm", best, start, {"eps": hi, "loss": loss})


# ---------------------------------------------------------------------------- PGD
def _linf_start(prob: _Problem, eps: float, restarts: int, rng: np.random.Generator,
                alpha: float) -> tuple[FloatArray, Step]:
    """L-inf PGD: restart 0 at x, the others uniform in the eps-box; signed steps, clipped."""
    low, high = prob.box(eps)
    z = np.repeat(prob.x0[None], restarts, axis=0)
    if restarts > 1:
        z[1:] = rng.uniform(low, high, size=(restarts - 1, prob.x0.size))
    return z, signed_step(low, high, lambda it: alpha)


def _l2_start(prob: _Problem, eps: float, restarts: int, rng: np.random.Generator,
              alpha: float) -> tuple[FloatArray, Step]:
    """L2 PGD: restart 0 at x, the others at random points of the ball (random direction,
    radius `eps * U`); steps along the normalised gradient. The projection scales the offset
    back onto the ball, then clips to the domain (x is inside it, so clipping only shortens
    the offset and the point stays in the ball)."""
    x0 = prob.x0

    def project(z: FloatArray) -> FloatArray:
        delta = z - x0
        length = np.linalg.norm(delta, axis=1, keepdims=True)
        return prob.clip(x0 + delta * np.minimum(1.0, eps / np.maximum(length, 1e-300)))

    z = np.repeat(x0[None], restarts, axis=0)
    if restarts > 1:
        d = rng.standard_normal((restarts - 1, x0.size))
        d *= (eps * rng.uniform(size=(restarts - 1, 1))) / np.linalg.norm(d, axis=1, keepdims=True)
        z[1:] = project(x0 + d)

    def step(z: FloatArray, grad: FloatArray, it: int) -> FloatArray:
        length = np.linalg.norm(grad, axis=1, keepdims=True)
        return project(z + alpha * grad / np.maximum(length, 1e-300))
    return z, step


#: How PGD starts and steps in each norm it measures in.
PGD_GEOMETRY = {"linf": _linf_start, "l2": _l2_start}


def _pgd_run(prob: _Problem, eps: float, steps: int, restarts: int, step_size: float | None,
             rng: np.random.Generator, norm: str = "linf", deadline: float = math.inf
             ) -> WitnessCheck | None:
    """PGD on the margin inside the eps-ball of `norm`; the first verified example, or None."""
    alpha = 2.5 * eps / steps if step_size is None else float(step_size)
    z, step = PGD_GEOMETRY[norm](prob, eps, restarts, rng, alpha)

    def margin(z: FloatArray, with_grad: bool) -> tuple[FloatArray, FloatArray | None]:
        if not with_grad:
            return prob.margins(z), None
        prob.stats["iterations"] += 1
        _, grad, value = prob.value_and_grad(z, "margin")
        return value, grad

    return ascend(z, margin, step, steps, prob.verify_rows, deadline)


def pgd(net: Network, x: npt.ArrayLike, *, label: int | None = None, eps_max: float = 1.0,
        steps: int = 100, restarts: int = 5, step_size: float | None = None,
        bisection_steps: int = 12, seed: int = 0, domain: Domain = (0.0, 1.0),
        target: int | None = None, margin: float = 0.0, threads: int | None = 1,
        norm: str = "linf", time_limit_s: float | None = None) -> RhoResult:
    """L-inf (or L2) projected gradient ascent on the margin, with bisection on eps.

    PGD (Madry et al. 2018) maximises `max_{j != label} f_j - f_label` (or `f_target -
    f_label`) over the eps-box around x intersected with the domain, with signed steps of
    `step_size` (default `2.5 eps / steps`) from `restarts` starts (x itself, then uniform
    random points of the box, seeded), and stops at the first verified adversarial example.
    It runs at `eps_max` first, then bisects `[0, best distance]` `bisection_steps` times,
    keeping the closest verified witness.

    Parameters
    ----------
    net : Network
    x : array
        One input sample.
    label : int, optional
        Default: the prediction at x.
    eps_max : float
        Largest radius tried.
    steps, restarts : int
        PGD iterations per run, and starts run in parallel as one batch.
    step_size : float, optional
        Absolute step (default `2.5 * eps / steps`).
    bisection_steps : int
        Number of bisection runs after the first success.
    seed : int
        Seed of the random starts; the result is deterministic given it.
    domain : (low, high) or None
    target : int, optional
        Targeted variant (the witness must reach `f_target >= f_label`).
    margin : float
        Required logit margin of a witness (see `fgsm`).
    threads : int or None
        torch intra-op threads during the attack (see `fgsm`).
    norm : {"linf", "l2"}
        The ball: "linf" takes signed steps in the box; "l2" normalised-gradient steps
        projected on the L2 ball (`PGD_GEOMETRY`); distances are measured in that norm.
    time_limit_s : float, optional
        Wall-clock budget: no PGD round and no bisection run starts after it (default none:
        every run completes).

    Returns
    -------
    RhoResult
        ``method="pgd"``; ``stats["eps_bracket"]`` is the final [lo, hi] of the bisection
        (PGD found nothing at lo, which proves nothing), ``stats["runs"]`` the PGD runs.
    """
    from milpverify.frontends.torchnet import torch_threads

    with torch_threads(threads):
        start = time.perf_counter()
        if not eps_max > 0 or steps < 1 or restarts < 1 or bisection_steps < 0:
            raise InvalidInputError("pgd needs eps_max > 0, steps >= 1, restarts >= 1 and "
                                    "bisection_steps >= 0.")
        if time_limit_s is not None and not time_limit_s > 0:
            raise InvalidInputError(f"pgd's time_limit_s must be > 0; got {time_limit_s}.")
        if norm not in _ORDER:
            raise InvalidInputError(f"pgd's `norm` must be 'linf' or 'l2'; got {norm!r}.")
        prob = _Problem(net, x, label, domain, target, margin)
        prob.norm = norm
        rng = np.random.default_rng(seed)
        deadline = math.inf if time_limit_s is None else start + time_limit_s
        best = prob.at_x()
        if best is not None:
            return prob.result("pgd", best, start, {"eps_bracket": [0.0, 0.0]},
                               "x itself is misclassified")
        best, lo, hi, runs = bisect_radius(
            lambda eps: _pgd_run(prob, eps, steps, restarts, step_size, rng, norm, deadline),
            eps_max, bisection_steps, deadline)
        if best is None:
            return prob.result("pgd", None, start, {"runs": runs},
                               f"no adversarial example found with eps_max={eps_max:g}")
        return prob.result("pgd", best, start, {"runs": runs, "eps_bracket": [lo, hi]})


# ---------------------------------------------------------------------------- L-BFGS
def _lbfgs_solve(prob: _Problem, c: float, target: int, loss: str, maxiter: int,
                 start: FloatArray) -> tuple[FloatArray, int]:
    """argmin_z c ||z - x||_2^2 - gain_target(z) over the domain box (L-BFGS-B from `start`)."""
    from scipy.optimize import minimize

    def fun(z: FloatArray) -> tuple[float, FloatArray]:
        value, grad, _ = prob.value_and_grad(z[None], loss, target)
        r = z - prob.x0
        return float(c * (r @ r) - value[0]), 2.0 * c * r - grad[0]

    bounds = None if prob.domain is None else [prob.domain] * prob.x0.size
    res = minimize(fun, start.copy(), jac=True, method="L-BFGS-B", bounds=bounds,
                   options={"maxiter": maxiter})
    return prob.clip(np.asarray(res.x, dtype=np.float64)), int(res.nit)


def _shrink(prob: _Problem, found: WitnessCheck, steps: int) -> WitnessCheck:
    """Bisect t in [0, 1] on the segment x + t (w - x) for the closest verified point."""
    w = found.witness.reshape(-1).astype(np.float64)
    lo, hi, best = 0.0, 1.0, found
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        cand = prob.x0 + mid * (w - prob.x0)
        check = prob.verify(cand) if prob.margins(cand)[0] >= prob.required else None
        if check is not None:
            best, hi = _better(best, check) or check, mid
        else:
            lo = mid
    return best


def lbfgs(net: Network, x: npt.ArrayLike, *, label: int | None = None,
          domain: Domain = (0.0, 1.0), c_grid: Sequence[float] | None = None,
          target: int | None = None, targets: str = "all", loss: str = "ce",
          bisection_steps: int = 5, maxiter: int = 200, shrink: bool = False,
          margin: float = 0.0, threads: int | None = 1) -> RhoResult:
    """Szegedy et al. (2014) box-constrained L-BFGS: min c ||r||_2^2 + loss_t(x + r).

    For each target label t, `c` runs down `c_grid` (large to small, i.e. from small to large
    perturbations) until the minimiser (`scipy.optimize.minimize`, L-BFGS-B, bounds = the
    domain box, float64 torch value and gradient, warm-started from the previous solution)
    is a verified adversarial example; the bracket between that c and the previous (failing)
    one is then bisected geometrically `bisection_steps` times, keeping the largest c that
    still succeeds. The closest verified point in L-inf over all targets is reported (rho is
    L-inf here, while the attack minimises L2, so the bound is loose by design).

    Parameters
    ----------
    net : Network
    x : array
        One input sample.
    label : int, optional
        Default: the prediction at x.
    domain : (low, high) or None
    c_grid : sequence of float, optional
        Penalty weights; default `10 ** arange(2, -5, -1)` (tried from large to small).
    target : int, optional
        Attack only this label (the witness must reach `f_target >= f_label`).
    targets : {"all", "second"}
        Without `target`: every label other than `label` (default; keep the best), or only
        the second most likely label at x (about 9x faster on 10 classes).
    loss : {"ce", "margin"}
        Cross-entropy of the target (Szegedy; default) or `f_t - f_label`.
    bisection_steps : int
        Geometric bisection steps on c after the first success per target.
    maxiter : int
        L-BFGS-B iterations per solve.
    shrink : bool
        Also bisect along the segment from x to each target's witness (12 steps) for a
        closer verified point. Off by default: the plain baseline of Bastani et al. 2016.
    margin : float
        Required logit margin of a witness (see `fgsm`; Bastani et al. 2016 used 0.15 for
        this baseline to survive rounding to integer pixels).
    threads : int or None
        torch intra-op threads during the attack (see `fgsm`).

    Returns
    -------
    RhoResult
        ``method="lbfgs"``; ``stats["c"]`` is the penalty of the witness, ``stats["target"]``
        the label it was aimed at, ``stats["solves"]`` the L-BFGS-B runs.
    """
    from milpverify.frontends.torchnet import torch_threads

    with torch_threads(threads):
        start = time.perf_counter()
        if targets not in ("all", "second"):
            raise InvalidInputError(f"targets must be 'all' or 'second'; got {targets!r}.")
        if bisection_steps < 0 or maxiter < 1:
            raise InvalidInputError("lbfgs needs bisection_steps >= 0 and maxiter >= 1.")
        prob = _Problem(net, x, label, domain, target, margin)
        grid = np.asarray([10.0 ** k for k in range(2, -5, -1)] if c_grid is None else c_grid,
                          dtype=np.float64).reshape(-1)
        grid = np.sort(grid[grid > 0])[::-1]
        if grid.size == 0:
            raise InvalidInputError("c_grid must contain a positive value.")
        at_x = prob.at_x()
        if at_x is not None:
            return prob.result("lbfgs", at_x, start, {"c": math.inf},
                               "x itself is misclassified")
        if target is not None:
            goals = [int(target)]
        else:
            logits = prob.net.forward(prob.x0)[0]
            order = [int(j) for j in np.argsort(-logits, kind="stable") if j != prob.label]
            goals = order if targets == "all" else order[:1]
        best: WitnessCheck | None = None
        best_c, best_t, solves = math.nan, -1, 0

        def attempt(c: float, t: int, z0: FloatArray) -> tuple[WitnessCheck | None, FloatArray]:
            nonlocal solves
            z, nit = _lbfgs_solve(prob, c, t, loss, maxiter, z0)
            solves += 1
            prob.stats["iterations"] += nit
            return (prob.verify(z) if prob.margins(z)[0] >= prob.required else None), z

        for t in goals:
            c_fail, c_hit, found = math.nan, math.nan, None
            z_fail = prob.x0
            for c in grid:
                check, z = attempt(float(c), t, z_fail)
                if check is not None:
                    c_hit, found = float(c), check
                    break
                c_fail, z_fail = float(c), z
            if found is None:
                continue
            if not math.isnan(c_fail):
                for _ in range(bisection_steps):
                    mid = math.sqrt(c_hit * c_fail)
                    check, z = attempt(mid, t, z_fail)
                    if check is not None:
                        c_hit, found = mid, _better(found, check)
                    else:
                        c_fail, z_fail = mid, z
            if shrink:
                found = _shrink(prob, found, 12)
            if _better(best, found) is found:
                best, best_c, best_t = found, c_hit, t
        return prob.result("lbfgs", best, start, {"c": best_c, "target": best_t,
                                                   "solves": solves, "targets": len(goals),
                                                   "loss": loss})


__all__ = ["fgsm", "lbfgs", "pgd"]
