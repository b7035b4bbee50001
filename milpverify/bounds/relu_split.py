"""Refuting a disjunct of output rows over an input box by branch and bound on ReLU phases.

On a deep fully connected network over a small box (VNN-COMP mnist_fc, ERAN 9x200) hundreds of
ReLUs stay unstable under the best static bounds, and the decision MILP spends its time in
SCIP's generic tree. Here the tree knows the network: a *domain* is the input box with some
ReLUs fixed to a phase (``z >= 0`` or ``z <= 0``); it is refuted when a sound lower bound of a
non-negative combination of the disjunct's rows is positive over it, and otherwise split in
two on the unstable ReLU whose relaxation costs the bound most (``|coef| * (-l u / (u - l))``,
the height of its triangle times the bound's coefficient of its output, BaBSR-style).

A domain's bound is beta-CROWN's (Wang et al., NeurIPS 2021) with the intermediate bounds of
the whole box (those the caller proved: symbolic, alpha-CROWN, LP-tightened), clipped to each
split: `bounds.box_alpha.search_bounds` searches the lower slopes, the row weights and the
split multipliers, many domains in one torch batch, children warm-started from their parent;
`box_bounds.region_lower` recomputes the bound of what it found by outward-rounded float64
back-substitution, which is sound for any slopes in [0, 1], weights >= 0 and multipliers
>= 0. The search's own float arithmetic is never trusted.

Callers: `milpverify.certify` rules out the labels it refutes before its MILP
(`core.refute`, on by default), `certify_properties` the output pairs (relaxed top-K and
affinity, `properties.pairs.refute_pairs`), and `rho` bisects the radius with it after a
time-out (`core.bracket.split_lower`); in `verify_vnnlib` it is an opt-in stage after the LP
tightening (`VnnlibOptions.relu_split_fraction`): on the 2-core CPU it was measured on,
SCIP's tree on the same tightened bounds proved the mnist_fc instances faster (each node an
exact LP of its domain, where this search approximates it with Adam steps); see
`benchmarks/results/vnncomp.md` and `benchmarks/results/relu_split.md`.

The disjunct is refuted when no domain is left. The search never claims a counterexample
(the falsifier and the MILP do that); it stops with the domains still open at its deadline,
when too many are open, or when a domain has no unstable ReLU left to split.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from milpverify.bounds.base import Bounds
from milpverify.bounds.box_alpha import BETA_RATE, search_bounds
from milpverify.bounds.box_bounds import (
    Chain,
    Combination,
    chain_pass,
    region_lower,
    relu_relaxation,
)
from milpverify.errors import InvalidInputError
from milpverify.ir.network import Network
from milpverify.ir.ops import FloatArray


@dataclass(frozen=True)
class ReluSplitOptions:
    """Settings of `refute_by_relu_splits`: ``batch`` domains are split per step (2 x batch
    children bounded in one pass), with ``iterations`` search steps each (``root_iterations``
    for the unsplit box) and ``beta_rate`` the Adam step of the split multipliers; the search
    gives up when more than ``max_domains`` are open. With ``refine``, each domain's ReLU
    inputs are bounded again by CROWN through its split ReLUs (`bound_domains`).

    Many search steps per batch: a better bound per domain pays more than more domains;
    neither ``refine`` nor a larger ``beta_rate`` left fewer domains open than the defaults
    (`benchmarks/relu_split.py --part tune`, ``benchmarks/results/relu_split.md``)."""

    batch: int = 256
    iterations: int = 80
    root_iterations: int = 50
    max_domains: int = 100_000
    refine: bool = False
    beta_rate: float = BETA_RATE

    def __post_init__(self) -> None:
        for name in ("batch", "iterations", "root_iterations", "max_domains"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise InvalidInputError(f"`{name}` must be an integer >= 1; got {value!r}.")
        if not self.beta_rate > 0:
            raise InvalidInputError(f"`beta_rate` must be > 0; got {self.beta_rate!r}.")


@dataclass
class ReluSplitOutcome:
    """``refuted``: every domain's bound is positive (the disjunct holds nowhere on the box);
    otherwise ``message`` says why the search stopped. ``stats`` counts domains and seconds."""

    refuted: bool
    message: str = ""
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Domains:
    """The open domains: per ReLU layer k the split signs (D, n_k) int8, the warm-start slopes
    and multipliers (float32), the row weights (D, R), each domain's sound lower bound and
    the neuron it splits on next (layer, index)."""

    signs: dict[int, npt.NDArray[np.int8]]
    slopes: dict[int, npt.NDArray[np.float32]]
    betas: dict[int, npt.NDArray[np.float32]]
    weights: FloatArray
    lower: FloatArray
    next_layer: npt.NDArray[np.int64]
    next_index: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.lower)

    def take(self, idx: npt.NDArray[np.int64]) -> _Domains:
        return _Domains({k: v[idx] for k, v in self.signs.items()},
                        {k: v[idx] for k, v in self.slopes.items()},
                        {k: v[idx] for k, v in self.betas.items()}, self.weights[idx],
                        self.lower[idx], self.next_layer[idx], self.next_index[idx])

    @staticmethod
    def join(parts: list[_Domains]) -> _Domains:
        first = parts[0]
        return _Domains({k: np.concatenate([p.signs[k] for p in parts]) for k in first.signs},
                        {k: np.concatenate([p.slopes[k] for p in parts]) for k in first.slopes},
                        {k: np.concatenate([p.betas[k] for p in parts]) for k in first.betas},
                        np.concatenate([p.weights for p in parts]),
                        np.concatenate([p.lower for p in parts]),
                        np.concatenate([p.next_layer for p in parts]),
                        np.concatenate([p.next_index for p in parts]))


def root_bounds(chain_net: Network, bounds: Bounds) -> list[tuple[FloatArray, FloatArray]]:
    """The (1, n) bounds of every node of the chain network `chain_net` (in its order) from
    a `Bounds` object over the box: the `root` argument of `refute_by_relu_splits`."""
    return [tuple(np.asarray(v, dtype=np.float64)[None] for v in bounds.flat(name))
            for name in chain_net.order]


def _region_state(root: list[tuple[FloatArray, FloatArray]], relu_layers: list[int],
                  signs: dict[int, npt.NDArray[np.int8]], count: int
                  ) -> list[tuple[FloatArray, FloatArray]]:
    """The root's node bounds for `count` domains, each ReLU input clipped to its splits and
    the ReLU's output bounds following."""
    state = [(np.broadcast_to(lo, (count, lo.shape[1])), np.broadcast_to(hi, (count, hi.shape[1])))
             for lo, hi in root]
    for k in relu_layers:
        lo, hi = state[k]
        lo = np.where(signs[k] > 0, np.maximum(lo, 0.0), lo)
        hi = np.where(signs[k] < 0, np.minimum(hi, 0.0), hi)
        state[k] = (lo, hi)
        state[k + 1] = (np.maximum(lo, 0.0), np.maximum(hi, 0.0))
    return state


def _choose_splits(state: list[tuple[FloatArray, FloatArray]], relu_layers: list[int],
                   relu_coef: dict[int, FloatArray]) -> tuple[npt.NDArray[np.int64],
                                                               npt.NDArray[np.int64]]:
    """Per domain, the unstable ReLU with the largest ``|coef| * (-l u / (u - l))`` (layer,
    index); layer -1 when none is unstable."""
    count = state[0][0].shape[0]
    best = np.full(count, -1.0)
    layer = np.full(count, -1, dtype=np.int64)
    index = np.zeros(count, dtype=np.int64)
    for k in relu_layers:
        lo, hi = state[k]
        unstable = (lo < 0) & (hi > 0)
        height = np.where(unstable, -lo * hi / np.where(unstable, hi - lo, 1.0), 0.0)
        score = np.where(unstable, np.abs(relu_coef[k]) * height + 1e-12 * height, -1.0)
        j = np.argmax(score, axis=1)
        top = score[np.arange(count), j]
        take = top > best
        best = np.where(take, top, best)
        layer = np.where(take, k, layer)
        index = np.where(take, j, index)
    return layer, index


def bound_domains(chain: Chain, root: list[tuple[FloatArray, FloatArray]],
                  signs: dict[int, npt.NDArray[np.int8]], row_mask: npt.NDArray[np.bool_], *,
                  iterations: int, warm: tuple[dict[int, npt.ArrayLike], dict[int, npt.ArrayLike]]
                  | None = None, start: FloatArray | None = None, refine: bool = False,
                  beta_rate: float = BETA_RATE) -> _Domains:
    """Sound lower bounds of a combination of the `row_mask` rows over D domains, the split
    ``signs[k]`` (D, n_k) of each ReLU layer k, with the slopes, multipliers and weights
    found and each domain's next split.

    The root's node bounds are clipped to each domain's splits and, with `refine`, its ReLU
    inputs bounded again by CROWN through the split ReLUs' now exact lines
    (`box_bounds.chain_pass`, intersected with the clipped ones); `search_bounds` searches
    ``iterations`` steps from `warm`; `region_lower` gives the sound value.
    """
    relu_layers = [k for k, layer in enumerate(chain.layers) if layer[0] == "relu"]
    count = len(next(iter(signs.values())))
    state = _region_state(root, relu_layers, signs, count)
    if refine:
        state = chain_pass(chain, state[0][0], state[0][1],
                           inherit={k: state[k] for k in relu_layers}).state
    # sound bounds that cross prove the region empty: nothing to refute there
    empty = np.zeros(count, dtype=bool)
    for lo, hi in state:
        empty |= np.any(lo > hi, axis=1)
    relax = {k: relu_relaxation(*state[k]) for k in relu_layers}
    mask = np.tile(row_mask, (count, 1))
    sign_f = {k: v.astype(np.float64) for k, v in signs.items()}
    found = search_bounds(chain.layers, {k: state[k] for k in relu_layers}, state[0][0],
                          state[0][1], mask, iterations, start=start, splits=sign_f, warm=warm,
                          relu_coef=True, dtype=np.float32, beta_rate=beta_rate)
    combo = Combination(found.weights, found.slopes, found.betas, sign_f)
    lower = np.where(empty, np.inf, region_lower(chain, state, relax, combo))
    layer, index = _choose_splits(state, relu_layers, found.relu_coef)
    return _Domains(signs, {k: v.astype(np.float32) for k, v in found.slopes.items()},
                    {k: v.astype(np.float32) for k, v in found.betas.items()}, found.weights,
                    lower, layer, index)


def refute_by_relu_splits(chain: Chain, root: list[tuple[FloatArray, FloatArray]],
                          row_mask: npt.NDArray[np.bool_], deadline: float,
                          options: ReluSplitOptions | None = None,
                          start: FloatArray | None = None) -> ReluSplitOutcome:
    """Prove that no point of the box satisfies every row of `row_mask` (module docstring).

    Parameters
    ----------
    chain : Chain
        `as_chain` of the spec network (its last node is ``s = A y - b``).
    root : list of (1, n_i) arrays
        Sound bounds of every node of the chain over the box (``root[0]`` is the box).
    row_mask : (R,) bool
        The disjunct's rows (it asks for ``s_r <= 0`` on all of them).
    deadline : float
        `time.perf_counter` value at which to stop.
    start : (R,), optional
        The rows' lower bounds on the box (the weight search starts at the best row).
    """
    opts = options or ReluSplitOptions()
    t0 = time.perf_counter()
    stats: dict[str, Any] = {"relu_domains": 0, "relu_batches": 0}

    def bound(signs: dict[int, npt.NDArray[np.int8]],
              warm: tuple[dict[int, npt.ArrayLike], dict[int, npt.ArrayLike]] | None,
              iterations: int, first: FloatArray | None) -> _Domains:
        stats["relu_batches"] += 1
        stats["relu_domains"] += len(next(iter(signs.values())))
        return bound_domains(chain, root, signs, row_mask, iterations=iterations, warm=warm,
                             start=first, refine=opts.refine, beta_rate=opts.beta_rate)

    def finish(refuted: bool, message: str = "") -> ReluSplitOutcome:
        stats["relu_s"] = time.perf_counter() - t0
        stats["relu_domains_per_s"] = stats["relu_domains"] / max(stats["relu_s"], 1e-9)
        return ReluSplitOutcome(refuted, message, stats)

    relu_layers = [k for k, layer in enumerate(chain.layers) if layer[0] == "relu"]
    signs0 = {k: np.zeros((1, root[k][0].shape[1]), dtype=np.int8) for k in relu_layers}
    first = None if start is None else np.where(row_mask, start, -np.inf)[None]
    open_ = bound(signs0, None, opts.root_iterations, first)
    stats["relu_root_lower"] = float(open_.lower[0])
    open_ = open_.take(np.flatnonzero(open_.lower <= 0))
    while len(open_):
        stats["relu_open"] = len(open_)
        stats["relu_worst"] = float(open_.lower.min())
        if time.perf_counter() >= deadline:
            return finish(False, f"ReLU splitting: {len(open_)} domains open at the time limit")
        if len(open_) > opts.max_domains:
            return finish(False, f"ReLU splitting: more than {opts.max_domains} domains open")
        if np.any(open_.next_layer < 0):
            return finish(False, "ReLU splitting: a domain with every ReLU fixed stays "
                                 "unrefuted (a counterexample may lie in it)")
        size = min(opts.batch, len(open_))
        order = np.argpartition(open_.lower, size - 1)[:size] if size < len(open_) \
            else np.arange(len(open_))
        rest = np.setdiff1d(np.arange(len(open_)), order, assume_unique=True)
        parents = open_.take(order)
        open_ = open_.take(rest)
        # each parent twice (copies): first with its next ReLU active, then inactive
        children = parents.take(np.r_[np.arange(size), np.arange(size)])
        rows, sign = np.arange(2 * size), np.repeat(np.array([1, -1], dtype=np.int8), size)
        for k, signs in children.signs.items():
            hit = children.next_layer == k
            signs[rows[hit], children.next_index[hit]] = sign[hit]
        bounded = bound(children.signs, (children.slopes, children.betas), opts.iterations, None)
        # a child's region lies in its parent's, so the parent's bound holds there too (with
        # few steps the multipliers of the new split may not yet make up for the box)
        bounded.lower = np.maximum(bounded.lower, children.lower)
        kept = bounded.take(np.flatnonzero(bounded.lower <= 0))
        open_ = _Domains.join([open_, kept]) if len(open_) else kept
    return finish(True)


def refute_disjuncts(chain: Chain, root: list[tuple[FloatArray, FloatArray]],
                     masks: Sequence[npt.NDArray[np.bool_]], until: float,
                     options: ReluSplitOptions | None = None, start: FloatArray | None = None,
                     give_up_after_failure: bool = False) -> tuple[list[int], dict[str, Any]]:
    """`refute_by_relu_splits` on each row mask in turn until `until`, each with an equal
    share of the time left (order `masks` by promise: the first gets the most time). With
    `give_up_after_failure`, the masks after the first one not refuted are not tried (for
    a caller that needs them all refuted).

    Returns the indices of the masks it did not refute and its stats (``relu_domains``,
    ``relu_batches`` and the domains left ``relu_open`` summed, ``relu_worst`` the lowest
    bound left open, ``relu_s``)."""
    t0 = time.perf_counter()
    stats: dict[str, Any] = {"relu_domains": 0, "relu_batches": 0, "relu_open": 0,
                             "relu_worst": np.inf}
    left: list[int] = []
    for i, mask in enumerate(masks):
        now = time.perf_counter()
        if now >= until:
            left.extend(range(i, len(masks)))
            break
        found = refute_by_relu_splits(chain, root, mask, now + (until - now) / (len(masks) - i),
                                      options, start=start)
        for key in ("relu_domains", "relu_batches"):
            stats[key] += found.stats[key]
        if not found.refuted:
            left.append(i)
            stats["relu_open"] += found.stats.get("relu_open", 0)
            stats["relu_worst"] = min(stats["relu_worst"], found.stats.get(
                "relu_worst", found.stats["relu_root_lower"]))
            if give_up_after_failure:
                left.extend(range(i + 1, len(masks)))
                break
    stats["relu_s"] = time.perf_counter() - t0
    return left, stats
