"""Gradient falsifier for VNN-LIB properties: projected signed-gradient ascent on the unsafe slack
from many starts.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from milpverify.core.ascent import ascend, signed_step
from milpverify.core.region import input_gradient
from milpverify.core.witness import WitnessCheck
from milpverify.errors import InvalidInputError
from milpverify.ir.network import Network
from milpverify.ir.ops import FloatArray
from milpverify.vnn.check import check_counterexample
from milpverify.vnn.spec import VnnlibProperty


# ---------------------------------------------------------------------------- options
@dataclass(frozen=True)
class FalsifierOptions:
    """Projected-gradient falsifier settings (see `falsify`).

    ``restarts`` starts per disjunct (the box centre, then uniform random points);
    ``steps`` signed-gradient steps per round with a step that decays linearly from
    ``step_start`` to ``step_end`` times the box width; rounds repeat with new random
    starts until ``time_limit_s``. At most ``max_disjuncts`` disjuncts are attacked (those
    the bounds leave possible, in file order).
    """

    time_limit_s: float = 1.0
    restarts: int = 4
    steps: int = 50
    step_start: float = 0.25
    step_end: float = 0.01
    max_disjuncts: int = 64
    seed: int = 0


# ---------------------------------------------------------------------------- falsifier
def falsify(net: Network, prop: VnnlibProperty, *, options: FalsifierOptions | None = None,
            disjuncts: Sequence[int] | None = None, starts: npt.ArrayLike | None = None,
            start_disjuncts: npt.ArrayLike | None = None) -> WitnessCheck | None:
    """Search the property's box for a counterexample by projected signed-gradient ascent.

    For each disjunct ``d`` separately (targeted), maximise ``min_r (b_dr - (A_d f(x))_r)``
    over the box from several starts; every point reaching ``>= 0`` is re-checked with
    `check_counterexample` and the first verified one is returned. Gradients come from a
    numpy reverse pass through the IR (`core.region.input_gradient`), so no torch is needed.

    Parameters
    ----------
    net : Network
    prop : VnnlibProperty
    options : FalsifierOptions, optional
    disjuncts : sequence of int, optional
        Indices into ``prop.unsafe`` to attack (default all, capped by
        ``options.max_disjuncts``).
    starts : array, optional
        Extra starting points (n, input_size), e.g. a solver point that just failed the
        re-check, or the vertices where a bound's relaxation is smallest; they are tried
        first.
    start_disjuncts : array of int, optional
        With `starts`: the disjunct (an index into ``prop.unsafe``) each start attacks;
        starts whose disjunct is not attacked are dropped. Default: every start attacks
        every disjunct.

    Returns
    -------
    WitnessCheck or None
        A verified counterexample, or None if none was found in the time limit (which
        proves nothing).

    Example
    -------
    >>> found = falsify(net, spec.properties[0], options=FalsifierOptions(time_limit_s=2))
    """
    opts = options or FalsifierOptions()
    start_time = time.perf_counter()
    deadline = start_time + opts.time_limit_s
    lo, hi = prop.input_lower, prop.input_upper
    width = hi - lo
    chosen = list(range(len(prop.unsafe)) if disjuncts is None else disjuncts)
    chosen = chosen[: opts.max_disjuncts]
    if not chosen:
        return None
    for d in chosen:
        if prop.unsafe[d].A.shape[0] == 0:  # no rows: every point of the box is unsafe
            return _verified_or_none(check_counterexample(net, prop, 0.5 * (lo + hi)))
    a_list = [prop.unsafe[d].A for d in chosen]
    b_list = [prop.unsafe[d].b for d in chosen]
    k = max(x.shape[0] for x in a_list)
    # Rows padded to k per disjunct; padding repeats the disjunct's first row (same min).
    a_pad = np.stack([np.vstack([x, np.repeat(x[:1], k - x.shape[0], axis=0)]) for x in a_list])
    b_pad = np.stack([np.r_[x, np.repeat(x[:1], k - x.shape[0])] for x in b_list])
    rng = np.random.default_rng(opts.seed)
    n_d = len(chosen)
    # round 0 first tries the extra starts: each against its own disjunct, or against all
    extra_x, extra_owner = np.empty((0, lo.size)), np.empty(0, dtype=np.int64)
    if starts is not None:
        extra = np.clip(np.atleast_2d(np.asarray(starts, dtype=np.float64)).reshape(-1, lo.size),
                        lo, hi)
        if start_disjuncts is None:
            extra_x = np.tile(extra, (n_d, 1))
            extra_owner = np.repeat(np.arange(n_d), len(extra))
        else:
            slot = {d: k for k, d in enumerate(chosen)}
            wanted = [slot.get(int(d), -1) for d in np.asarray(start_disjuncts).reshape(-1)]
            if len(wanted) != len(extra):
                raise InvalidInputError(f"`start_disjuncts` names {len(wanted)} disjuncts for "
                                        f"{len(extra)} starts; give one per start.")
            owner_of = np.array(wanted, dtype=np.int64)
            extra_x, extra_owner = extra[owner_of >= 0], owner_of[owner_of >= 0]

    def step_size(it: int) -> FloatArray:
        """Decays linearly from `step_start` to `step_end` of the box width."""
        frac = it / max(opts.steps - 1, 1)
        return (opts.step_start + (opts.step_end - opts.step_start) * frac) * width

    round_ = 0
    while time.perf_counter() < deadline:
        if round_ == 0:
            z = np.r_[0.5 * (lo + hi)[None],
                      rng.uniform(lo, hi, size=(max(opts.restarts - 1, 0), lo.size))]
        else:
            z = rng.uniform(lo, hi, size=(opts.restarts, lo.size))
        per = z.shape[0]
        x = np.tile(z, (n_d, 1))            # rows: disjunct-major
        owner = np.repeat(np.arange(n_d), per)
        if round_ == 0:
            x, owner = np.r_[extra_x, x], np.r_[extra_owner, owner]
        found = ascend(x, SlackOfOwnDisjunct(net, a_pad[owner], b_pad[owner]),
                       signed_step(lo, hi, step_size), opts.steps,
                       lambda x, value: _first_counterexample(net, prop, x, value), deadline)
        if found is not None:
            return found
        round_ += 1
    return None


@dataclass
class SlackOfOwnDisjunct:
    """The objective of `falsify` (and of the input-splitting search's local attack): per
    row, ``min_r (b - A y)_r`` over its own disjunct's rows (padded to one count), and the
    gradient of that worst row."""

    net: Network
    a_rows: FloatArray  # (rows, k, outputs)
    b_rows: FloatArray  # (rows, k)

    def __call__(self, x: FloatArray, with_grad: bool) -> tuple[FloatArray, FloatArray | None]:
        y = self.net.forward(x)
        slack = self.b_rows - np.einsum("bko,bo->bk", self.a_rows, y)
        worst = slack.argmin(axis=1)
        value = slack[np.arange(len(x)), worst]
        if not with_grad:
            return value, None
        # d value / d y = -A[worst row]; ascend
        out_grad = -self.a_rows[np.arange(len(x)), worst]
        return value, input_gradient(self.net, x, out_grad.reshape(len(x), y.shape[1]))


def _first_counterexample(net: Network, prop: VnnlibProperty, x: FloatArray,
                          value: FloatArray) -> WitnessCheck | None:
    """Re-check the 3 rows with the largest non-negative slack; the first verified one."""
    hits = np.flatnonzero(value >= 0)
    for row in hits[np.argsort(-value[hits])][:3]:
        found = check_counterexample(net, prop, x[row])
        if found.verified:
            return found
    return None


def _verified_or_none(check: WitnessCheck) -> WitnessCheck | None:
    return check if check.verified else None


def _vertex_starts(bounds: Any, groups: list[npt.NDArray[np.int64]],
                   alive: list[int]) -> tuple[FloatArray, npt.NDArray[np.int64]]:
    """Attack starts from the bounds: for every row ``r`` of an open disjunct, the box
    vertices at which the relaxation's lower bounds of ``s_r`` are attained
    (`bound_vertices`), each paired with its disjunct."""
    vertices = np.asarray(bounds.details.get("output_vertices", np.empty((0, 0))))
    n_rows = sum(len(g) for g in groups)
    if vertices.size == 0 or vertices.shape[0] % (2 * n_rows):
        return np.empty((0, vertices.shape[-1])), np.empty(0, dtype=np.int64)
    lower_rows = vertices.reshape(-1, 2 * n_rows, vertices.shape[1])[:, :n_rows]
    rows = [(d, r) for d in alive for r in groups[d]]
    starts = lower_rows[:, [r for _, r in rows]].reshape(-1, vertices.shape[1])
    owners = np.tile(np.array([d for d, _ in rows], dtype=np.int64), lower_rows.shape[0])
    return starts, owners


def _attack(net: Network, prop: VnnlibProperty, bounds: Any,
            groups: list[npt.NDArray[np.int64]], alive: list[int], falsifier: FalsifierOptions,
            attack_s: float, deadline: float, timings: dict[str, float]
            ) -> WitnessCheck | None:
    """`falsify` the open disjuncts for at most `attack_s` (and not past `deadline`), from
    random starts and from the bounds' vertices (`_vertex_starts`)."""
    t0 = time.perf_counter()
    starts, owners = _vertex_starts(bounds, groups, alive)
    found = falsify(net, prop, options=replace(falsifier,
                                               time_limit_s=min(attack_s, deadline - t0)),
                    disjuncts=alive, starts=starts, start_disjuncts=owners)
    timings["attack_s"] = timings.get("attack_s", 0.0) + time.perf_counter() - t0
    return found
