"""Certify relaxed properties at a radius, sharing bounds, attacks and proofs across the values of
K.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy.typing as npt

from milpverify.bounds.base import Bounds
from milpverify.core.decide import MilpRun
from milpverify.core.query import (
    SOLVER_SLACK,
    Query,
    check_positive,
    check_share,
    query_box,
    validate_query,
)
from milpverify.core.refute import can_refute
from milpverify.core.results import Certificate, Verdict
from milpverify.core.witness import WitnessCheck
from milpverify.ir.network import Network
from milpverify.ir.ops import FloatArray
from milpverify.properties.pairs import (
    OutputBounds,
    PairPlan,
    plan_pairs,
    property_bounds,
    refute_pairs,
)
from milpverify.properties.query import TopKQuery, check_property_witness, pgd_topk, topk_query
from milpverify.properties.rho import check_options, decide_at_radius
from milpverify.properties.spec import Property, RelaxedTopK, affinity_of
from milpverify.solve import get_backend
from milpverify.verify import FIRST_MILP_SHARE, RELU_SPLIT_SHARE, TIGHTENED_BOUNDS


# ============================================================================ certify
def certify_properties(net: Network, x: npt.ArrayLike, props: Sequence[Property], eps: float,
                       *, time_limit_s: float = 60.0, norm: str = "linf",
                       domain: tuple[float, float] = (0.0, 1.0), backend: str = "scip",
                       bounds_method: str = "progressive", attack: str | None = "pgd",
                       encoding: str = "pairs", difference_bounds: bool = True,
                       threads: int = 1, solver_params: dict[str, object] | None = None,
                       relu_split: float = RELU_SPLIT_SHARE) -> list[Certificate]:
    """Decide several properties at one (x, eps), sharing the attack and the bounds.

    Per property as `milpverify.verify.certify`: "not_robust" only with a witness that
    passed `check_property_witness`; "robust" only with a proof (bounds, ReLU splitting, or
    an infeasible MILP whose rows were relaxed by `SOLVER_SLACK`); "unknown" otherwise.
    Shared work: every verified witness is re-checked against every property; bounds on
    the eps-box are computed once (symbolic first, then `bounds_method` if still needed);
    pairs ruled out by ReLU splitting are ruled out for every property; a proof for a
    property whose certifying k's are a subset of another's proves that one too (some k of
    the subset survives everywhere); and properties with the same certifying k's at x
    (e.g. RTK-3 and an affinity whose groups fit T_1..T_3) share one answer. Both are noted
    in `stats["implied_by"]`.

    Parameters
    ----------
    net : Network
    x : array
    props : list of RelaxedTopK / Affinity
    eps : float
    time_limit_s : float
        Budget per property: the shared steps (attack, bounds, ReLU splitting; bounds get at
        most half of it) count against each property's MILPs, other properties' solves do
        not.
    norm, domain, backend, bounds_method, threads, solver_params
        As in `milpverify.verify.certify`.
    attack : {"pgd", None}
        L-inf PGD on the violation (30 signed-gradient steps from x) for what the symbolic
        bounds leave open, before the (costlier) `bounds_method` bounds.
    encoding, difference_bounds
        As in `rho_property`.
    relu_split : float
        As in `milpverify.verify.certify`, on chains of affine maps and ReLUs: alpha-CROWN
        bounds, a first MILP per property (`FIRST_MILP_SHARE` of its time left), then
        branch and bound on ReLU phases (`pairs.refute_pairs`) in `relu_split` of the time
        left tries to keep some top-k set everywhere: it rules out, one k at a time (the k
        with the fewest pairs first), every pair that could change it; the pairs it rules
        out leave every property's MILP. Then `bounds_method`'s bounds and the last MILPs.
        0: `bounds_method`'s bounds and one MILP per property.

    Returns
    -------
    list of Certificate
        In the order of `props`; `label` is the top-1 label at x.

    Example
    -------
    >>> [c.verdict for c in certify_properties(net, x, [RelaxedTopK(1), RelaxedTopK(3)], 0.1)]
    ['not_robust', 'robust']
    """
    check_positive("eps", eps, allow_none=False)
    check_positive("time_limit_s", time_limit_s, allow_none=False)
    check_share("relu_split", relu_split)
    q = validate_query(net, x, norm=norm, domain=domain, margin=0.0, target=None, label=None)
    queries = [topk_query(net, q.x, p) for p in props]
    check_options(attack, encoding, bounds_method)
    get_backend(backend)  # a bad name fails before any work
    batch = _Batch(net, q, queries, float(eps), time_limit_s, difference_bounds,
                   (backend, threads, solver_params), encoding)
    batch.try_witnesses()
    # 1. Symbolic bounds (cheap) may prove everything; 2. the attack looks for witnesses,
    # once per distinct set of certifying k's, most k's first (its witness also breaks
    # every property with fewer k's); 3. the requested bounds for what is left (with ReLU
    # splitting: alpha-CROWN bounds, a short MILP each, the splitting, then those bounds).
    found_bounds = batch.bound("symbolic") if batch.pending() else None
    if attack == "pgd" and norm == "linf" and batch.pending():
        batch.attack()
    split = relu_split > 0 and can_refute(net)
    cheap_first = split and bounds_method in TIGHTENED_BOUNDS
    if batch.pending() and bounds_method != "symbolic":
        found_bounds = batch.bound("alpha" if cheap_first else bounds_method)
    if split and batch.pending():
        assert found_bounds is not None
        for n in batch.pending():
            batch.decide(n, found_bounds, FIRST_MILP_SHARE, final=False)
        batch.refute(found_bounds, relu_split)
        if cheap_first and batch.pending():
            found_bounds = batch.bound(bounds_method)
    for n in batch.pending():
        assert found_bounds is not None
        batch.decide(n, found_bounds, 1.0, final=True)
    return [batch.done[n] for n in range(len(queries))]


@dataclass
class _Batch:
    """The state `certify_properties` shares across its properties: settled certificates
    (a verdict settles every property it implies), the verified witnesses found so far (each
    re-checked against every open property), and the pair plans of the latest bounds."""

    net: Network
    q: Query
    queries: list[TopKQuery]
    eps: float
    time_limit_s: float
    difference_bounds: bool
    solver: tuple[str, int, dict[str, object] | None]  # backend, threads, solver_params
    encoding: str
    start: float = field(default_factory=time.perf_counter)
    shared: dict[str, float] = field(default_factory=dict)
    done: dict[int, Certificate] = field(default_factory=dict)
    plans: dict[int, PairPlan] = field(default_factory=dict)
    refuted: frozenset[tuple[int, int]] = frozenset()  # pairs ReLU splitting ruled out
    # set from the queries in __post_init__
    box: tuple[FloatArray, FloatArray] = field(init=False)
    own: dict[int, dict[str, float]] = field(init=False)  # per property: its MILP timings
    stats: dict[int, dict[str, Any]] = field(init=False)
    witnesses: list[FloatArray] = field(init=False)  # x first: x itself may violate

    def __post_init__(self) -> None:
        self.box = query_box(self.q, self.eps)
        self.own = {n: {} for n in range(len(self.queries))}
        self.stats = {n: {"property": qu.name, "certifying_ks": list(qu.ks)}
                      for n, qu in enumerate(self.queries)}
        self.witnesses = [self.q.x]

    def time_left(self, n: int | None = None) -> float:
        """Seconds left of the budget after the shared steps and (with `n`) the property's
        own MILPs."""
        own = 0.0 if n is None else self.own[n].get("milp_s", 0.0)
        return self.time_limit_s - sum(self.shared.values()) - own

    def settle(self, n: int, verdict: Verdict, witness: WitnessCheck | None,
               message: str = "") -> None:
        """Certificate `n`, and every open property it implies (the same certifying k's at
        this x, or, when robust, a superset of them)."""
        queries = self.queries
        timings = dict(self.shared)
        timings.update(self.own[n])
        timings["total_s"] = time.perf_counter() - self.start
        self.done[n] = Certificate(verdict, self.eps, queries[n].order[0],
                                   None if witness is None else witness.witness,
                                   witness is not None,
                                   None if witness is None else witness.adversarial_label,
                                   timings, self.stats[n], message)
        for m, other in enumerate(queries):
            same = set(queries[n].ks) == set(other.ks)
            if m not in self.done and (same or (verdict == Verdict.ROBUST
                                                and set(queries[n].ks) <= set(other.ks))):
                # Same certifying k's at this x: the same property here, whatever the verdict.
                self.stats[m]["implied_by"] = queries[n].name
                reason = message.split(": ", 1)[-1] if message.startswith("implied by") \
                    else message
                self.settle(m, verdict, witness,
                            f"implied by {queries[n].name}" + (f": {reason}" if reason else ""))

    def try_witnesses(self) -> None:
        """Settle every open property that a known witness violates within eps."""
        q = self.q
        for n, qu in enumerate(self.queries):
            for w in self.witnesses:
                if n in self.done:
                    break
                check = check_property_witness(self.net, q.x, w, qu, domain=q.domain,
                                               norm=q.norm)
                if check.verified and check.distance <= self.eps * (1 + 1e-12):
                    self.settle(n, Verdict.NOT_ROBUST, check)

    def pending(self, reverse: bool = False) -> list[int]:
        return sorted((n for n in range(len(self.queries)) if n not in self.done),
                      key=lambda n: len(self.queries[n].ks), reverse=reverse)

    def bound(self, method: str) -> tuple[Bounds, OutputBounds]:
        """Bounds on the eps-box; the pair plans of the open properties; proofs by bounds."""
        t0 = time.perf_counter()
        budget = max(0.5 * self.time_limit_s - sum(self.shared.values()), 1e-3)
        found = property_bounds(self.net, self.box, method, time_limit_s=budget,
                                differences=self.difference_bounds)
        self.shared["bounds_s"] = self.shared.get("bounds_s", 0.0) + time.perf_counter() - t0
        for n in self.pending():
            self.stats[n]["unstable_relus"] = found[0].unstable
        self.plan(found[1], "proven by bounds and ReLU splitting" if self.refuted
                  else "proven by bounds alone")
        return found

    def plan(self, out: OutputBounds, proof: str) -> None:
        """The pair plans of the open properties under `out` and the refuted pairs; a
        property with a top-k set no pair can change is proven (by `proof`)."""
        for n in self.pending():
            self.plans[n] = plan_pairs(self.queries[n], out, -SOLVER_SLACK, self.refuted)
            self.stats[n].update(self.plans[n].stats)
        for n in self.pending():
            if n not in self.done and self.plans[n].impossible is not None:
                self.settle(n, Verdict.ROBUST, None, proof)

    def decide(self, n: int, found: tuple[Bounds, OutputBounds], share: float, final: bool
               ) -> None:
        """Property `n`'s MILP with `share` of its time left; settled when `final` or
        decided. Its witness is tried against every open property."""
        if n in self.done:
            return
        t0 = time.perf_counter()
        run = MilpRun(*self.solver, self.own[n], self.stats[n])
        verdict, witness, message = decide_at_radius(
            self.net, self.q, self.queries[n], *found, self.plans[n], self.box, self.eps,
            t0 + share * self.time_left(n), run, self.encoding)
        self.own[n]["milp_s"] = self.own[n].get("milp_s", 0.0) + time.perf_counter() - t0
        if witness is not None:
            self.witnesses.append(witness.witness)
        if final or verdict != Verdict.UNKNOWN:
            self.settle(n, verdict, witness, message)
        self.try_witnesses()

    def refute(self, found: tuple[Bounds, OutputBounds], share: float) -> None:
        """ReLU splitting in `share` of the time left: per open (property, k), the k with
        the fewest pairs left first, every pair that could change T_k; the refuted pairs
        leave every plan."""
        t0 = time.perf_counter()
        tried = self.pending()
        if not tried:
            return
        until = t0 + share * min(self.time_left(n) for n in tried)
        serves: dict[tuple[tuple[int, int], ...], set[int]] = {}  # a k's pairs -> properties
        for n in tried:
            for k in self.plans[n].ks:
                serves.setdefault(tuple(sorted(self.plans[n].pairs[k])), set()).add(n)
        tries = sorted(serves, key=len)
        stats: dict[str, Any] = {"relu_domains": 0}
        for i, pairs in enumerate(tries):
            now = time.perf_counter()
            if now >= until or not self.pending():
                break
            pairs = [p for p in pairs if p not in self.refuted]
            if not pairs or serves[tries[i]] <= set(self.done):
                continue
            out = found[1]
            refuted, info = refute_pairs(self.net, found[0], out,
                                         sorted(pairs, key=lambda p: out.upper_diff[p[1], p[0]]),
                                         -SOLVER_SLACK, now + (until - now) / (len(tries) - i))
            stats["relu_domains"] += info.get("relu_domains", 0)
            self.refuted = self.refuted | frozenset(refuted)
            self.shared["relu_split_s"] = time.perf_counter() - t0  # before a settle copies it
            for n in tried:
                self.stats[n].update(relu_refuted_pairs=sorted(self.refuted),
                                     relu_domains=stats["relu_domains"])
            self.plan(out, "proven by ReLU splitting")
        self.shared["relu_split_s"] = time.perf_counter() - t0

    def attack(self) -> None:
        """PGD once per distinct set of certifying k's, most k's first; every witness is
        tried against every open property."""
        t0 = time.perf_counter()
        tried: set[tuple[int, ...]] = set()
        for n in self.pending(reverse=True):
            if n not in self.done and self.queries[n].ks not in tried:
                tried.add(self.queries[n].ks)
                found = pgd_topk(self.net, self.q, self.queries[n], self.eps, restarts=1,
                                 deadline=self.start + self.time_limit_s)
                if found is not None:
                    self.witnesses.append(found.witness)
                    self.try_witnesses()
        self.shared["attack_s"] = time.perf_counter() - t0


def certify_property(net: Network, x: npt.ArrayLike, prop: Property, eps: float,
                     **options: Any) -> Certificate:
    """Decide one property at radius eps (`certify_properties` with one property).

    Example
    -------
    >>> certify_property(net, x, RelaxedTopK(2), 0.1).verdict
    'robust'
    """
    return certify_properties(net, x, [prop], eps, **options)[0]


def certify_topk(net: Network, x: npt.ArrayLike, K: int, eps: float, **options: Any
                 ) -> Certificate:
    """Decide relaxed top-K robustness at radius eps (options of `certify_properties`).

    Example
    -------
    >>> certify_topk(net, x, 3, 2 / 255, time_limit_s=20).verdict
    'robust'
    """
    return certify_property(net, x, RelaxedTopK(K), eps, **options)


def certify_affinity(net: Network, x: npt.ArrayLike,
                     groups: Sequence[Sequence[int]] | str | Path, eps: float, *,
                     semantics: str = "subset", **options: Any) -> Certificate:
    """Decide affinity robustness at radius eps; `groups` as in `rho_affinity`.

    Example
    -------
    >>> certify_affinity(net, x, [[0, 1, 8, 9], [2, 3, 4, 5, 6, 7]], 2 / 255).verdict
    'robust'
    """
    return certify_property(net, x, affinity_of(groups, semantics), eps, **options)
