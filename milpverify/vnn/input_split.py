"""Input-splitting branch and bound for VNN-LIB properties of networks with few inputs.

Over a wide input box the ReLUs of even a small network are mostly unstable and one set of
linear bounds cannot refute the unsafe set, while the MILP has to branch on the ReLUs. With
few inputs it pays to branch on the *input* instead (as nnenum, α,β-CROWN and VeriNet do on
VNN-COMP's ``reach_prob_density``): halving a box side makes the ReLUs of each half more
stable and the bounds tighter.

`split_search` keeps a priority queue of sub-boxes, the one whose bounds are furthest from
refuting the unsafe set first, and processes them in batches:

1. sound bounds of the spec rows ``s = A y - b`` over every box of the batch at once
   (`chain_bounds`, CROWN back-substitution through `spec_network` with outward rounding);
   a box closes when, for every disjunct still open on it, some row has ``lower(s_r) > 0``;
   for the (box, disjunct) pairs left open, the sound bound of a non-negative combination
   of the disjunct's rows with searched weights and ReLU lower slopes
   (`optimised_margins`) closes the disjunct when it is positive (a conjunction such as
   ``|y_1| <= r, y_0 >= p`` is often impossible on a box where no single row is);
2. falsification on the boxes left open: the centre and, per open row, the box vertex where
   the row's linear lower bound is smallest are run forward; on a few boxes (the worst
   bounds, and the centres nearest the unsafe set) a few projected signed-gradient steps
   (`_local_attack`) start from them, and the points that come nearest the unsafe set are
   polished by an LP on their activation region (`pattern_lp.polish`), which reaches
   unsafe slivers too thin for gradient steps. A point is reported only after
   `check_counterexample` (float32 point in the box, numpy float64 and onnxruntime outputs
   unsafe);
3. each open box is halved along one input dimension (`_split_choice`: by default the side
   whose halves' bounds are best, `_lookahead_dimension`; halves already refuted there are
   dropped) and the halves go back into the queue.

The answer is ``unsat`` only when the queue empties, i.e. every leaf box was refuted by sound
bounds; a box that cannot be halved any more (its side has no float between its ends)
makes the answer ``unknown``.
"""

from __future__ import annotations

import heapq
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from milpverify.bounds.box_bounds import (
    Chain,
    ChainPass,
    Combination,
    chain_pass,
    combined_lower,
    optimised_margins,
)
from milpverify.core.ascent import ascend, signed_step
from milpverify.core.region import input_gradient
from milpverify.core.witness import WitnessCheck
from milpverify.ir.network import Network
from milpverify.ir.ops import FloatArray
from milpverify.vnn.check import _unsafe_margin, check_counterexample
from milpverify.vnn.falsify import SlackOfOwnDisjunct
from milpverify.vnn.pattern_lp import polish
from milpverify.vnn.spec import VnnlibProperty

BRANCHING = ("lookahead", "widest", "gradient", "coefficient")
"""Split-dimension rules (`_split_choice`)."""

SCORE_CHUNK = 512
"""Boxes per `chain_bounds` call when scoring lookahead halves."""


@dataclass
class SplitOutcome:
    """What `split_search` found: ``result`` is sat / unsat / timeout / unknown."""

    result: str
    check: WitnessCheck | None = None
    message: str = ""
    stats: dict[str, Any] = field(default_factory=dict)


def _disjunct_margins(lower: FloatArray, groups: list[npt.NDArray[np.int64]]) -> FloatArray:
    """Per box and disjunct, ``max_{r in d} lower(s_r)``: the disjunct is refuted on the box
    when it is positive (some row of it can never hold). Shape (B, disjuncts)."""
    return np.stack([lower[:, g].max(axis=1) for g in groups], axis=1)


def choose_dimension(rule: str, lo: FloatArray, hi: FloatArray, coef: FloatArray,
                     rows: npt.NDArray[np.int64], scale: FloatArray,
                     gradient: FloatArray | None = None) -> npt.NDArray[np.int64]:
    """The input dimension to halve, per box, by a score that needs no extra bounds.

    ``widest``: the side that is largest relative to the root box (`scale`).
    ``coefficient``: the largest ``|c_i| * width_i``, with ``c`` the input coefficients of the
    linear lower bound of row ``rows[k]`` of box k (the row closest to refuting the box's
    worst disjunct). It misjudges wide boxes: a dimension that acts through unstable ReLUs
    shows up in the relaxation's intercepts, not in ``c``, and is never split.
    ``gradient``: the largest ``|g_i| * width_i``, `gradient` holding that row's gradient
    at the box centre. (``lookahead`` is `_lookahead_dimension`.)
    Sides that cannot be halved any more score -1; ties go to the widest side.
    """
    width = hi - lo
    tie = 1e-9 * width / scale
    if rule == "coefficient":
        score = np.abs(coef[np.arange(len(rows)), rows]) * width + tie
    elif rule == "gradient" and gradient is not None:
        score = np.abs(gradient) * width + tie
    else:
        score = width / scale
    return _splittable_argmax(score, lo, hi)


def _splittable_argmax(score: FloatArray, lo: FloatArray, hi: FloatArray
                       ) -> npt.NDArray[np.int64]:
    """Per box, the dimension of largest `score` among the sides that can be halved."""
    mid = 0.5 * lo + 0.5 * hi
    return np.argmax(np.where((mid > lo) & (mid < hi), score, -1.0), axis=1)  # type: ignore


def _halves(lo: FloatArray, hi: FloatArray, dims: npt.NDArray[np.int64]
            ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """The two halves of box k along ``dims[k]``: (left lo, left hi, right lo, right hi)."""
    rows = np.arange(len(lo))
    mid = 0.5 * lo[rows, dims] + 0.5 * hi[rows, dims]
    left_hi, right_lo = hi.copy(), lo.copy()
    left_hi[rows, dims] = mid
    right_lo[rows, dims] = mid
    return lo, left_hi, right_lo, hi


def _box_scores(chain: Chain, lo: FloatArray, hi: FloatArray, open_: npt.NDArray[np.bool_],
                groups: list[npt.NDArray[np.int64]], inherit: _Inherited | None = None,
                combo: tuple[Combination, npt.NDArray[np.int64]] | None = None) -> FloatArray:
    """Per box, ``min`` over its open disjuncts of `_disjunct_margins` (> 0: refuted),
    bounded `SCORE_CHUNK` boxes at a time (memory). With `inherit` (ReLU input bounds of a
    box containing each one), those and the interval rule bound the ReLU inputs, and only
    the last node is back-substituted (much cheaper, a little looser). With `combo` (a
    `Combination` and the disjunct it was searched for, per box), that disjunct's margin is
    raised to the combination's bound on the box (`combined_lower`)."""
    def chunk(k: int) -> FloatArray:
        part = slice(k, k + SCORE_CHUNK)
        sub = None if inherit is None else {
            j: (b_lo[part], b_hi[part]) for j, (b_lo, b_hi) in inherit.items()}
        deep = None if inherit is None else np.zeros(len(lo[part]), dtype=bool)
        crown = chain_pass(chain, lo[part], hi[part], sub, deep, lower_only=True)
        margins = _disjunct_margins(crown.bounds.lower, groups)
        if combo is not None:
            at = np.arange(len(margins))
            index = np.arange(len(lo))[part]
            disjunct = combo[1][part]
            better = combined_lower(chain, crown, at, combo[0].take(index))
            margins[at, disjunct] = np.maximum(margins[at, disjunct], better)
        return margins

    margins = np.vstack([chunk(k) for k in range(0, len(lo), SCORE_CHUNK)])
    return np.where(open_, margins, np.inf).min(axis=1)  # type: ignore[no-any-return]


def _lookahead_dimension(chain: Chain, lo: FloatArray, hi: FloatArray,
                         open_: npt.NDArray[np.bool_], groups: list[npt.NDArray[np.int64]],
                         scale: FloatArray, min_ratio: float, inherit: _Inherited | None = None,
                         combo: tuple[Combination, npt.NDArray[np.int64]] | None = None
                         ) -> tuple[npt.NDArray[np.int64], FloatArray]:
    """Per box, the dimension whose halves have the best worse-half score: both halves of
    every dimension are bounded (2 n boxes per box, in one batch), and the worse of the two
    scores (`_box_scores`) is maximised, the sum breaking ties, among the sides at least
    `min_ratio` times the widest (relative to the root box): a purely greedy choice can
    keep halving one side that helps a little each time, leaving boxes that are very thin
    in one dimension and wide in another, whose bounds never close. Returns the dimensions and
    the (2, B) scores of the chosen halves, which the caller uses to drop refuted halves.
    `inherit`: the boxes' own ReLU input bounds, which bound their halves' (`_box_scores`);
    `combo`: each box's searched combination and its disjunct, which bound its halves too."""
    n_box, n = lo.shape
    dims = np.tile(np.arange(n), n_box)
    rep = np.repeat(np.arange(n_box), n)
    l_lo, l_hi, r_lo, r_hi = _halves(lo[rep], hi[rep], dims)
    halves_inherit = None if inherit is None else {
        k: (np.vstack([b_lo[rep], b_lo[rep]]), np.vstack([b_hi[rep], b_hi[rep]]))
        for k, (b_lo, b_hi) in inherit.items()}
    halves_combo = None if combo is None else (combo[0].take(np.r_[rep, rep]),
                                               np.r_[combo[1][rep], combo[1][rep]])
    scores = _box_scores(chain, np.vstack([l_lo, r_lo]), np.vstack([l_hi, r_hi]),
                         np.vstack([open_[rep], open_[rep]]), groups,
                         halves_inherit, halves_combo).reshape(2, n_box, n)
    worse, both = np.minimum(scores[0], scores[1]), scores[0] + scores[1]
    finite_both = np.where(np.isfinite(both), both, 1e300)
    value = np.where(np.isfinite(worse), worse, 1e300) + 1e-6 * np.tanh(finite_both)
    relative = (hi - lo) / scale
    wide = relative >= min_ratio * relative.max(axis=1, keepdims=True)
    best = _splittable_argmax(np.where(wide, value, -2e300), lo, hi)
    rows = np.arange(n_box)
    return best, scores[:, rows, best]


def _local_attack(net: Network, a: FloatArray, b: FloatArray, rows: list[FloatArray],
                  x: FloatArray, lo: FloatArray, hi: FloatArray, steps: int) -> FloatArray:
    """A few projected signed-gradient ascent steps (`core.ascent.ascend` on the falsifier's
    objective, ``min_{r in d} (b_r - A_r f(x))``) from the starts `x` (n, inputs), each kept
    in its own box ``lo[k]..hi[k]`` and attacking the disjunct whose row indices are
    ``rows[k]``; returns every visited point (they are re-checked together)."""
    k_max = max(len(r) for r in rows)
    sel = np.stack([np.r_[r, np.repeat(r[:1], k_max - len(r))] for r in rows]).astype(np.int64)
    width = hi - lo
    seen: list[FloatArray] = []

    def visit(z: FloatArray, value: FloatArray) -> None:
        seen.append(z)

    ascend(x, SlackOfOwnDisjunct(net, a[sel], b[sel]),
           signed_step(lo, hi, lambda it: (0.2 * (1.0 - it / steps) + 0.005) * width), steps,
           visit)
    return np.vstack(seen)


def _try_points(net: Network, prop: VnnlibProperty, a: FloatArray, b: FloatArray,
                groups: list[npt.NDArray[np.int64]], points: FloatArray, tries: int
                ) -> tuple[WitnessCheck | None, FloatArray]:
    """Run `points` forward; re-check the (at most `tries`) most unsafe ones with
    `check_counterexample`. Returns the first that passes (or None) and every point's
    unsafe margin (`_unsafe_margin`, >= 0: unsafe in float64)."""
    if len(points) == 0:
        return None, np.empty(0)
    margin = _unsafe_margin(a, b, groups, net.forward(points))
    hits = np.flatnonzero(margin >= 0)
    for k in hits[np.argsort(-margin[hits])][:tries]:
        check = check_counterexample(net, prop, points[k])
        if check.verified:
            return check, margin
    return None, margin


_Inherited = dict[int, tuple[FloatArray, FloatArray]]
"""Per ReLU layer index, (B, n_k) lower and upper bounds of its input on each box."""


@dataclass
class _Queue:
    """Open boxes, smallest score (worst bound) first, each with its open-disjunct mask, its
    depth in the split tree and its parent's ReLU input bounds (flattened, `_pack`)."""

    heap: list[tuple[float, int, FloatArray, FloatArray, npt.NDArray[np.bool_], int, FloatArray]]
    counter: itertools.count = field(default_factory=itertools.count)

    def push(self, score: float, lo: FloatArray, hi: FloatArray,
             alive: npt.NDArray[np.bool_], depth: int, inherited: FloatArray) -> None:
        heapq.heappush(self.heap, (score, next(self.counter), lo, hi, alive, depth, inherited))

    def pop_batch(self, size: int) -> tuple[FloatArray, FloatArray, npt.NDArray[np.bool_],
                                            npt.NDArray[np.int64], FloatArray]:
        items = [heapq.heappop(self.heap) for _ in range(min(size, len(self.heap)))]
        return (np.stack([i[2] for i in items]), np.stack([i[3] for i in items]),
                np.stack([i[4] for i in items]), np.array([i[5] for i in items]),
                np.stack([i[6] for i in items]))


def _relu_sizes(chain: Chain) -> list[tuple[int, int]]:
    """(layer index, input size) of every ReLU layer of the chain."""
    sizes = []
    for k, layer in enumerate(chain.layers):
        if layer[0] == "relu":
            w = chain.layers[k - 1][1]
            assert isinstance(w, np.ndarray)
            sizes.append((k, w.shape[0]))
    return sizes


def _pack(chain: Chain, state: list[tuple[FloatArray, FloatArray]]) -> FloatArray:
    """The ReLU input bounds of a `ChainPass` state as one (B, 2 sum n_k) array."""
    return np.hstack([np.hstack([state[k][0], state[k][1]]) for k, _ in _relu_sizes(chain)])


def _unpack(chain: Chain, packed: FloatArray) -> _Inherited:
    """Inverse of `_pack`."""
    out, at = {}, 0
    for k, n in _relu_sizes(chain):
        out[k] = (packed[:, at:at + n], packed[:, at + n:at + 2 * n])
        at += 2 * n
    return out


def _falsify_batch(net: Network, prop: VnnlibProperty, a: FloatArray, b: FloatArray,
                   groups: list[npt.NDArray[np.int64]], lo: FloatArray, hi: FloatArray,
                   coef: FloatArray, worst: npt.NDArray[np.int64], attack_boxes: int,
                   attack_steps: int, polish_points: int) -> WitnessCheck | None:
    """Counterexample search on open boxes (sorted worst first): centres and each worst
    disjunct's rows' minimising vertices (`bound_vertices` per box), then `_local_attack`
    from the centres and vertices of `attack_boxes` of them."""
    centres = 0.5 * lo + 0.5 * hi
    row_sets = [groups[d] for d in worst]
    vertices = [np.where(coef[k, rows] < 0, hi[k], lo[k]) for k, rows in enumerate(row_sets)]
    found, margin = _try_points(net, prop, a, b, groups, np.vstack([centres, *vertices]), 3)
    if found is not None or attack_boxes <= 0 or attack_steps <= 0:
        return found
    # half the attacks on the boxes with the worst bounds, half on those whose centre comes
    # closest to the unsafe set (where the counterexamples usually are)
    nearest = np.argsort(-margin[:len(lo)])
    chosen = list(dict.fromkeys([*range(min(attack_boxes // 2, len(lo))),
                                 *nearest[:attack_boxes - attack_boxes // 2].tolist()]))
    starts = np.vstack([centres[chosen], *[vertices[k] for k in chosen]])
    owner = np.r_[chosen, np.repeat(chosen, [len(vertices[k]) for k in chosen])].astype(np.int64)
    visited = _local_attack(net, a, b, [row_sets[k] for k in owner], starts, lo[owner],
                            hi[owner], attack_steps)
    found, margin = _try_points(net, prop, a, b, groups, visited, tries=3)
    if found is not None or polish_points <= 0:
        return found
    return _polish_best(net, prop, a, b, groups, visited, margin, polish_points)


def _polish_best(net: Network, prop: VnnlibProperty, a: FloatArray,
                 b: FloatArray, groups: list[npt.NDArray[np.int64]], points: FloatArray,
                 margin: FloatArray, count: int) -> WitnessCheck | None:
    """`polish` (the LP on one activation region) from the `count` points nearest the unsafe
    set, each for the disjunct it comes closest to, within the property's whole input box;
    the LP's points are re-checked like every other candidate."""
    nearest = points[np.argsort(-margin)[:count]]
    slack = b[None, :] - net.forward(nearest) @ a.T
    candidates = []
    for x, row_slack in zip(nearest, slack, strict=True):
        d = int(np.argmax([row_slack[g].min() for g in groups]))
        got = polish(net, a, b, x, groups[d], prop.input_lower.astype(np.float64),
                     prop.input_upper.astype(np.float64))
        if got is not None and got[1] > 0:
            candidates.append(got[0])
    if not candidates:
        return None
    return _try_points(net, prop, a, b, groups, np.vstack(candidates), tries=len(candidates))[0]


@dataclass(frozen=True)
class SplitOptions:
    """Settings of `split_search`.

    At most ``batch`` boxes are bounded per numpy pass (the cost per box falls with the batch
    up to a few hundred boxes), fewer when the last batch's cost per box says a batch would
    take more than ``batch_s`` seconds or the time left (wide networks, lookahead); ``branching`` is a rule of `choose_dimension`; each batch runs
    `_local_attack` for ``attack_steps`` steps from the centre and vertices of its
    ``attack_boxes`` worst boxes and polishes the ``polish_points`` visited points nearest
    the unsafe set by `pattern_lp.polish` (0: off); the disjuncts left open by CROWN are
    bounded again with ``optimise_steps`` steps of the weight and slope search of
    `optimised_margins` (0: off); the ReLU inputs of a popped box are bounded by its
    parent's bounds, the interval rule and, every ``crown_every`` levels of the split tree,
    CROWN; with ``lookahead_inherit`` the lookahead bounds each half from its box's ReLU input
    bounds and the interval rule, with CROWN on the last node only (on reach_prob_density
    robot_3, 20 s of search bounded 14,200 boxes with it and 1,900 without, and the tree it
    grows closed in 101 s); the search gives up (``unknown``) when more than
    ``max_boxes`` boxes are open at once (memory).
    """

    batch: int = 256
    batch_s: float = 0.5
    branching: str = "lookahead"
    lookahead_ratio: float = 0.25
    attack_boxes: int = 8
    attack_steps: int = 10
    max_boxes: int = 2_000_000
    optimise_steps: int = 20
    polish_points: int = 4
    crown_every: int = 1
    lookahead_inherit: bool = True
    lookahead_combination: bool = True


def split_search(net: Network, chain: Chain, prop: VnnlibProperty, a: FloatArray, b: FloatArray,
                 groups: list[npt.NDArray[np.int64]], alive: list[int], deadline: float,
                 options: SplitOptions | None = None) -> SplitOutcome:
    """Decide the property by input splitting (module docstring) before `deadline`.

    Parameters
    ----------
    net : Network
        The network (counterexamples are run and re-checked on it).
    chain : Chain
        `as_chain` of ``spec_network(net, a, b)``: its last node is ``s = A y - b``.
    prop : VnnlibProperty
    a, b, groups : the property's stacked rows and each disjunct's row indices (`property_rows`).
    alive : the disjuncts still possible on the whole box; the others are known refuted.
    deadline : float
        `time.perf_counter` value at which to stop with ``timeout``.
    options : SplitOptions, optional

    Returns
    -------
    SplitOutcome
        ``unsat`` when every leaf box is refuted by sound bounds; ``sat`` with a verified
        counterexample; ``timeout``; ``unknown`` when a box cannot be halved any more or too
        many boxes are open. ``stats`` counts the boxes bounded and the boxes per second.
    """
    opts = options or SplitOptions()
    started = time.perf_counter()
    lo0, hi0 = prop.input_lower.astype(np.float64), prop.input_upper.astype(np.float64)
    scale = np.maximum(hi0 - lo0, np.finfo(np.float64).tiny)
    root = np.zeros(len(groups), dtype=bool)
    root[list(alive)] = True
    queue = _Queue([])
    unknown = np.concatenate([np.r_[np.full(n, -np.inf), np.full(n, np.inf)]
                              for _, n in _relu_sizes(chain)])
    queue.push(-np.inf, lo0, hi0, root, 0, unknown)
    stats: dict[str, Any] = {"split_boxes": 0, "split_batches": 0, "split_stuck": 0}
    size = 1

    def outcome(result: str, check: WitnessCheck | None = None,
                message: str = "") -> SplitOutcome:
        elapsed = time.perf_counter() - started
        stats["split_s"] = elapsed
        stats["split_boxes_per_s"] = stats["split_boxes"] / max(elapsed, 1e-9)
        stats["split_open"] = len(queue.heap)
        return SplitOutcome(result, check, message, stats)

    while queue.heap:
        if time.perf_counter() >= deadline:
            return outcome("timeout", message=f"input splitting: {len(queue.heap)} boxes open "
                                              "at the time limit")
        if len(queue.heap) > opts.max_boxes:
            return outcome("unknown", message=f"input splitting: more than {opts.max_boxes} "
                                              "boxes open")
        lo, hi, open_, depth, inherited = queue.pop_batch(size)
        t0 = time.perf_counter()
        found = _expand(net, chain, prop, a, b, groups, (lo, hi, open_, depth, inherited), scale,
                        opts, queue, stats)
        per_box = (time.perf_counter() - t0) / len(lo)
        left = deadline - time.perf_counter()
        size = int(np.clip(min(opts.batch_s, left) / max(per_box, 1e-9), 1, opts.batch))
        if found is not None:
            return outcome("sat", found)
    if stats["split_stuck"]:
        return outcome("unknown", message=f"input splitting: {stats['split_stuck']} boxes too "
                                          "small to halve stay unrefuted")
    return outcome("unsat")


def _expand(net: Network, chain: Chain, prop: VnnlibProperty, a: FloatArray, b: FloatArray,
            groups: list[npt.NDArray[np.int64]], batch: tuple[Any, ...], scale: FloatArray,
            opts: SplitOptions, queue: _Queue, stats: dict[str, Any]) -> WitnessCheck | None:
    """One batch (`_Queue.pop_batch`'s arrays): bound the boxes, drop the refuted ones, try
    to falsify the rest (worst first) and push their halves; returns a verified
    counterexample or None."""
    lo, hi, open_, depth, inherited = batch
    deep = None if opts.crown_every <= 1 else depth % opts.crown_every == 0
    crown = chain_pass(chain, lo, hi, _unpack(chain, inherited), deep, lower_only=True)
    bounds = crown.bounds
    stats["split_boxes"] += len(lo)
    stats["split_batches"] += 1
    margins = _disjunct_margins(bounds.lower, groups)
    open_ = open_ & (margins <= 0.0)
    pairs = None
    if opts.optimise_steps > 0 and open_.any():
        margins, *pairs = _optimise_open(chain, crown, open_, margins, groups,
                                         opts.optimise_steps)
        stats["split_optimised"] = stats.get("split_optimised", 0) + int(open_.sum())
        open_ = open_ & (margins <= 0.0)
    keep = np.flatnonzero(open_.any(axis=1))
    if keep.size == 0:
        return None
    masked = np.where(open_[keep], margins[keep], np.inf)
    order = keep[np.argsort(masked.min(axis=1))]
    lo, hi, open_, coef = lo[order], hi[order], open_[order], bounds.coef[order]
    masked = np.where(open_, margins[order], np.inf)
    worst, score = masked.argmin(axis=1), masked.min(axis=1)
    found = _falsify_batch(net, prop, a, b, groups, lo, hi, coef, worst, opts.attack_boxes,
                           opts.attack_steps, opts.polish_points)
    if found is not None:
        return found
    own = _pack(chain, crown.state)[order]
    combo = None
    if pairs is not None and opts.lookahead_combination:
        combos, boxes, disjuncts = pairs
        pair_of = {(int(i), int(d)): p for p, (i, d) in enumerate(zip(boxes, disjuncts,
                                                                      strict=True))}
        index = np.array([pair_of[(int(i), int(d))] for i, d in zip(order, worst, strict=True)])
        combo = (combos.take(index), worst)
    dims, child_scores = _split_choice(net, chain, lo, hi, open_, coef, worst,
                                       bounds.lower[order], groups, a, scale, opts,
                                       _unpack(chain, own) if opts.lookahead_inherit else None,
                                       combo)
    can_split = lo[np.arange(len(lo)), dims] < hi[np.arange(len(lo)), dims]
    mid = 0.5 * lo[np.arange(len(lo)), dims] + 0.5 * hi[np.arange(len(lo)), dims]
    can_split &= (mid > lo[np.arange(len(lo)), dims]) & (mid < hi[np.arange(len(lo)), dims])
    stats["split_stuck"] += int(np.sum(~can_split))
    l_lo, l_hi, r_lo, r_hi = _halves(lo, hi, dims)
    for k in np.flatnonzero(can_split):
        for half, (b_lo, b_hi) in enumerate(((l_lo, l_hi), (r_lo, r_hi))):
            child = score[k] if child_scores is None else child_scores[half, k]
            if child <= 0.0:  # a half the lookahead already refuted is not pushed
                queue.push(float(child), b_lo[k], b_hi[k], open_[k], int(depth[order[k]]) + 1,
                           own[k])
    return None


def _optimise_open(chain: Chain, crown: ChainPass, open_: npt.NDArray[np.bool_],
                   margins: FloatArray, groups: list[npt.NDArray[np.int64]], steps: int
                   ) -> tuple[FloatArray, Combination, npt.NDArray[np.int64],
                              npt.NDArray[np.int64]]:
    """`margins` with every open (box, disjunct) pair's entry raised to the sound bound of the
    best non-negative combination of the disjunct's rows (`optimised_margins`, `steps` slope
    and weight search steps): a disjunct none of whose rows is refuted alone may still be
    impossible on the box. Also returns the combinations found and their (box, disjunct)
    pairs."""
    boxes, disjuncts = np.nonzero(open_)
    mask = np.zeros((len(boxes), crown.bounds.lower.shape[1]), dtype=bool)
    for d, rows in enumerate(groups):
        mask[np.ix_(disjuncts == d, rows)] = True
    better = margins.copy()
    found, combo = optimised_margins(chain, crown, boxes, mask, steps)
    better[boxes, disjuncts] = np.maximum(margins[boxes, disjuncts], found)
    return better, combo, boxes, disjuncts


def _split_choice(net: Network, chain: Chain, lo: FloatArray, hi: FloatArray,
                  open_: npt.NDArray[np.bool_], coef: FloatArray, worst: npt.NDArray[np.int64],
                  lower: FloatArray, groups: list[npt.NDArray[np.int64]], a: FloatArray,
                  scale: FloatArray, opts: SplitOptions, inherit: _Inherited | None,
                  combo: tuple[Combination, npt.NDArray[np.int64]] | None = None
                  ) -> tuple[npt.NDArray[np.int64], FloatArray | None]:
    """The dimension to halve per box by ``opts.branching``, and with ``lookahead`` the
    halves' scores (None otherwise: the halves inherit the parent's score)."""
    if opts.branching == "lookahead":
        return _lookahead_dimension(chain, lo, hi, open_, groups, scale, opts.lookahead_ratio,
                                    inherit, combo)
    rows = np.array([groups[d][np.argmax(lower[k, groups[d]])] for k, d in enumerate(worst)])
    gradient = None
    if opts.branching == "gradient":
        gradient = input_gradient(net, 0.5 * lo + 0.5 * hi, a[rows])
    return choose_dimension(opts.branching, lo, hi, coef, rows, scale, gradient), None
