"""Search for ReLU lower slopes and row weights that tighten a chain's CROWN bound over many boxes.

A conjunction of spec rows ``s_r <= 0`` (one VNN-LIB disjunct) is impossible on a box when
some row is positive everywhere on it. Bounding each row on its own proves that only when one
row alone is positive on the whole box; the weaker, still sufficient condition is that a
non-negative combination ``lambda . s`` is positive on the whole box (then at every point
some ``s_r > 0``). Bounding the combination by one back-substitution is also tighter than
combining the rows' own linear bounds, because every unstable ReLU then gets one relaxation
line chosen for the combined coefficient.

`optimise_chain_slopes` chooses, per box, the weights ``lambda`` (softmax over the box's
rows) and the lower slope ``alpha`` in [0, 1] of every unstable ReLU (alpha-CROWN, Xu et al.
ICLR 2021, here for one combined row per box with the intermediate bounds fixed) by projected
Adam on the CROWN lower bound of ``lambda . s``, all boxes in one torch batch.

Only the *search* is here. It is not rounded and its value is never used as a bound: the
caller (`milpverify.bounds.box_bounds.optimised_margins`) recomputes the bound of the returned
weights and slopes by the outward-rounded float64 back-substitution, which is sound for any
non-negative weights and any slopes in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from milpverify.frontends.torchnet import torch_threads
from milpverify.ir.ops import FloatArray

ITERATIONS = 20
"""Adam steps per batch."""

LEARNING_RATE = 0.4
"""Adam step size on the slopes (in [0, 1]) and the weight logits. Measured by the input
splitting of reach_prob_density robot_8 alone: 0.2 42.7 s (50,019 boxes), 0.4 29.7 s
(44,394), 0.6 32.7 s (46,228), 1.0 40.6 s (55,697); robot_3 72 s at 0.2, 48 s at 0.4."""

BETA_RATE = 0.05
"""Adam step size on the split multipliers beta (unbounded above, so a smaller step than the
slopes')."""

START_LOGIT = 4.0
"""Initial weight logit of the best single row (the others start at 0)."""


@dataclass(frozen=True)
class SlopeSearch:
    """What `search_bounds` found per box: ``slopes[k]`` (B, n_k) in [0, 1] for every ReLU
    layer, row ``weights`` (B, R) (non-negative, zero outside the row mask, summing to 1),
    ``betas[k]`` (B, n_k) >= 0 for the split ReLU layers (zero where a neuron is not split),
    and ``relu_coef[k]`` (B, n_k), the combined row's coefficient of each ReLU output in the
    last back-substitution (how much each neuron's relaxation costs the bound)."""

    slopes: dict[int, FloatArray]
    weights: FloatArray
    betas: dict[int, FloatArray]
    relu_coef: dict[int, FloatArray]


def optimise_chain_slopes(layers: Sequence[tuple[object, ...]],
                          pre_bounds: dict[int, tuple[FloatArray, FloatArray]],
                          lower: FloatArray, upper: FloatArray, row_mask: npt.NDArray[np.bool_],
                          iterations: int = ITERATIONS, learning_rate: float = LEARNING_RATE,
                          start: FloatArray | None = None, threads: int | None = 1
                          ) -> tuple[dict[int, FloatArray], FloatArray]:
    """Row weights and ReLU lower slopes that (approximately) maximise the CROWN lower bound
    of ``lambda . s`` over each box.

    Parameters
    ----------
    layers : the chain's layers, ``("affine", W, b)`` or ``("relu",)`` (`bounds.box_bounds.Chain`).
    pre_bounds : for every ReLU layer index k, the (B, n_k) bounds of its input on each box.
    lower, upper : (B, n) input boxes.
    row_mask : (B, R) bool, the rows of the last node that may be combined on each box
        (at least one per box).
    start : (B, R), optional
        The rows' own CROWN lower bounds: the search starts with most weight on the best
        row (alone it is often near the best combination) instead of equal weights.

    Returns
    -------
    (slopes, weights)
        ``slopes[k]`` (B, n_k) in [0, 1] for every ReLU layer (only the unstable entries
        matter), ``weights`` (B, R), non-negative, zero outside `row_mask`, summing to 1.
    """
    found = search_bounds(layers, pre_bounds, lower, upper, row_mask, iterations,
                          learning_rate, start, threads)
    return found.slopes, found.weights


def search_bounds(layers: Sequence[tuple[object, ...]],
                  pre_bounds: dict[int, tuple[FloatArray, FloatArray]],
                  lower: FloatArray, upper: FloatArray, row_mask: npt.NDArray[np.bool_],
                  iterations: int = ITERATIONS, learning_rate: float = LEARNING_RATE,
                  start: FloatArray | None = None, threads: int | None = 1,
                  splits: dict[int, FloatArray] | None = None,
                  warm: tuple[dict[int, npt.ArrayLike], dict[int, npt.ArrayLike]] | None = None,
                  beta_rate: float = BETA_RATE, relu_coef: bool = False,
                  dtype: type = np.float64) -> SlopeSearch:
    """`optimise_chain_slopes`, and over ReLU-split regions (beta-CROWN, Wang et al.
    NeurIPS 2021).

    `splits[k]` (B, n_k) holds +1 where box i is restricted to ``z >= 0`` at neuron j of
    ReLU layer k, -1 where to ``z <= 0``, 0 where it is not split (`pre_bounds` already
    clipped to the split). Each split adds ``beta_j * (-sign_j z_j)`` (<= 0 on the region)
    to the bound with a multiplier ``beta_j >= 0`` searched with the slopes, so the bound
    of the whole box becomes a bound of the region. `warm` = (slopes, betas) starts the
    search there (a parent's values) instead of at CROWN's slopes and zero multipliers.
    With `relu_coef`, the result's ``relu_coef`` holds the ReLU outputs' coefficients at the
    values returned (else it is empty). `dtype` is the search's float type (float32 halves
    its cost; the caller's sound recomputation does not depend on it).
    """
    with torch_threads(threads):
        return _optimise(layers, pre_bounds, lower, upper, row_mask, iterations, learning_rate,
                         start, splits or {}, warm, beta_rate, relu_coef, dtype)


def _optimise(layers: Sequence[tuple[object, ...]],
              pre_bounds: dict[int, tuple[FloatArray, FloatArray]], lower: FloatArray,
              upper: FloatArray, row_mask: npt.NDArray[np.bool_], iterations: int,
              learning_rate: float, start: FloatArray | None,
              splits: dict[int, FloatArray],
              warm: tuple[dict[int, npt.ArrayLike], dict[int, npt.ArrayLike]] | None,
              beta_rate: float, relu_coef: bool, dtype: type) -> SlopeSearch:
    def t(x: object) -> torch.Tensor:
        return torch.from_numpy(np.array(x, dtype=dtype))  # a copy: inputs may be views

    mats = {k: (t(layer[1]), t(layer[2])) for k, layer in enumerate(layers)
            if layer[0] == "affine"}
    relus: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = {}
    slopes: dict[int, torch.Tensor] = {}
    for k, (lo_np, hi_np) in pre_bounds.items():
        lo, hi = t(lo_np), t(hi_np)
        active = lo >= 0
        unstable = ~active & (hi > 0)
        denom = torch.where(unstable, hi - lo, torch.ones_like(lo))
        up_slope = torch.where(unstable, hi / denom, active.to(hi.dtype))
        up_icpt = torch.where(unstable, -up_slope * lo, torch.zeros_like(lo))
        relus[k] = (active.to(hi.dtype), unstable, up_slope, up_icpt)
        if warm is not None and k in warm[0]:
            first = t(np.clip(warm[0][k], 0.0, 1.0))
        else:
            first = torch.where(hi > -lo, 1.0, 0.0).to(hi.dtype)  # CROWN's adaptive choice
        slopes[k] = first.requires_grad_(True)
    signs = {k: t(v) for k, v in splits.items()}
    betas = {k: (t(np.maximum(warm[1][k], 0.0)) * v.abs() if warm is not None and k in warm[1]
                 else torch.zeros_like(v)).requires_grad_(True) for k, v in signs.items()}
    mask = torch.as_tensor(row_mask)
    logits = torch.zeros(mask.shape, dtype=torch.float64 if dtype == np.float64 else
                         torch.float32)
    if start is not None:
        best_row = np.argmax(np.where(row_mask, start, -np.inf), axis=1)
        logits[torch.arange(len(best_row)), torch.as_tensor(best_row)] = START_LOGIT
    logits.requires_grad_(True)
    box_lo, box_hi = t(lower), t(upper)
    centre, radius = (box_lo + box_hi) / 2, (box_hi - box_lo) / 2
    params = [logits, *slopes.values(), *betas.values()]
    rates = [learning_rate] * (1 + len(slopes)) + [beta_rate] * len(betas)
    moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
    neg_inf = torch.tensor(-torch.inf, dtype=logits.dtype)

    def weights() -> torch.Tensor:
        return torch.softmax(torch.where(mask, logits, neg_inf), dim=1)

    def bound(record: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        coef = weights()
        const = torch.zeros(coef.shape[0], dtype=coef.dtype)
        for k in range(len(layers) - 1, -1, -1):
            if k in mats:
                w, b = mats[k]
                const = const + coef @ b
                coef = coef @ w
            else:
                active, unstable, up_slope, up_icpt = relus[k]
                if record is not None:
                    record[k] = coef
                low_slope = torch.where(unstable, slopes[k], active)
                pos, neg = coef.clamp(min=0), coef.clamp(max=0)
                const = const + (neg * up_icpt).sum(1)
                coef = pos * low_slope + neg * up_slope
                if k in betas:
                    coef = coef - betas[k] * signs[k]
        return const + (coef * centre).sum(1) - (coef.abs() * radius).sum(1)

    best = bound().detach()
    best_slopes = {k: v.detach().clone() for k, v in slopes.items()}
    best_weights = weights().detach()
    best_betas = {k: v.detach().clone() for k, v in betas.items()}
    for step in range(1, iterations + 1):
        for p in params:
            p.grad = None
        value = bound()
        better = value.detach() > best
        if bool(better.any()):
            best = torch.where(better, value.detach(), best)
            for k, v in slopes.items():
                best_slopes[k] = torch.where(better[:, None], v.detach(), best_slopes[k])
            best_weights = torch.where(better[:, None], weights().detach(), best_weights)
            for k, v in betas.items():
                best_betas[k] = torch.where(better[:, None], v.detach(), best_betas[k])
        value.sum().backward()
        with torch.no_grad():  # Adam ascent (torch.optim's first use costs seconds of imports)
            for p, rate, (m1, m2) in zip(params, rates, moments, strict=True):
                assert p.grad is not None
                m1.mul_(0.9).add_(p.grad, alpha=0.1)
                m2.mul_(0.999).addcmul_(p.grad, p.grad, value=0.001)
                size = rate * (1 - 0.999 ** step) ** 0.5 / (1 - 0.9 ** step)
                p.add_(size * m1 / (m2.sqrt() + 1e-8))
            for v in slopes.values():
                v.clamp_(0.0, 1.0)
            for k, v in betas.items():
                v.clamp_(min=0.0).mul_(signs[k].abs())
    with torch.no_grad():
        value = bound()
    better = value > best
    for k, v in slopes.items():
        best_slopes[k] = torch.where(better[:, None], v.detach(), best_slopes[k])
    best_weights = torch.where(better[:, None], weights().detach(), best_weights)
    for k, v in betas.items():
        best_betas[k] = torch.where(better[:, None], v.detach(), best_betas[k])
    out_weights = np.where(row_mask, np.maximum(best_weights.double().numpy(), 0.0), 0.0)
    out_slopes = {k: np.clip(v.double().numpy(), 0.0, 1.0) for k, v in best_slopes.items()}
    out_betas = {k: np.maximum(v.double().numpy(), 0.0) for k, v in best_betas.items()}
    record: dict[int, torch.Tensor] = {}
    if relu_coef:
        with torch.no_grad():  # the coefficients of the best values, for split scoring
            for k, v in slopes.items():
                v.copy_(best_slopes[k])
            for k, v in betas.items():
                v.copy_(best_betas[k])
            logits.copy_(torch.log(best_weights.clamp(min=1e-30)))
            bound(record)
    return SlopeSearch(out_slopes, out_weights, out_betas,
                       {k: v.double().numpy() for k, v in record.items()})
