"""The SCIP plugins milpverify adds to a solve: the model's cut separators, the node
propagator of `SolveOptions.node_propagator`, its local cuts and its branching rule (see the
`milpverify.solve.scip` docstring for what each does and when it runs).

pyscipopt is imported only inside the functions of this module.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from milpverify.encode.model import MilpModel
from milpverify.solve.base import NodePropagator

#: SCIP's infinity (its default ``numerics/infinity``): bounds at or beyond it are infinite.
SCIP_INFINITY = 1e20


# ---------------------------------------------------------------------------- separation
SEPARATOR_NAME = "milpverify_cuts"
"""SCIP name of the plugin that runs a model's `Separator`s: tune it with the parameters
``separating/milpverify_cuts/freq`` (default 1: every node; 0: root only; -1: off),
``.../priority`` and ``.../maxbounddist`` through ``solver_params``."""


MAX_CUTS_PER_ROUND = 100
"""At most this many cuts per separator and separation round (most violated first)."""


def _attach_separators(scip: Any, model: MilpModel, variables: list[Any]) -> Any:
    """Include one SCIP separator plugin calling every `Separator` of ``model``."""
    ps = _ps()
    separators = model.separators
    read = np.unique(np.concatenate([np.asarray(s.variables, dtype=np.int64)
                                     for s in separators]))
    read_vars = [variables[j] for j in read.tolist()]
    n = model.n_vars

    class _ModelCuts(ps.Sepa):  # type: ignore[misc,name-defined]
        cuts = 0
        rounds = 0

        def sepaexeclp(self) -> dict[str, Any]:
            m = self.model
            values = np.zeros(n)
            values[read] = [m.getSolVal(None, v) for v in read_vars]
            added = 0
            for sep in separators:
                cuts = sep.separate(values, max_cuts=MAX_CUTS_PER_ROUND)
                if not cuts.count:
                    continue
                added += _add_cuts(m, self, cuts, range(cuts.count), variables.__getitem__,
                                   "cut", self.cuts + added, local=False)
            self.cuts += added
            self.rounds += 1
            result = ps.SCIP_RESULT.SEPARATED if added else ps.SCIP_RESULT.DIDNOTFIND
            return {"result": result}

    plugin = _ModelCuts()
    scip.includeSepa(plugin, SEPARATOR_NAME, "cuts of the model's separators",
                     priority=100_000, freq=1)
    return plugin


def _add_cuts(m: Any, sepa: Any, cuts: Any, chosen: Iterable[int],
              var_of: Callable[[int], Any], name: str, first: int, *, local: bool) -> int:
    """Add the rows `chosen` of `cuts` (``sum_j vals_j x_j <= rhs``; model column j is SCIP
    variable ``var_of(j)``) as removable cuts named `name` + first, first + 1, ...; valid
    only in the node's subtree when `local`. Returns how many were added."""
    order = np.argsort(cuts.rows, kind="stable")
    cols, vals = cuts.cols[order], cuts.vals[order]
    starts = np.searchsorted(cuts.rows[order], np.arange(cuts.count + 1))
    added = 0
    for r in chosen:
        row = m.createEmptyRowSepa(sepa, f"{name}{first + added}", lhs=None,
                                   rhs=float(cuts.rhs[r]), local=local, removable=True)
        m.cacheRowExtensions(row)
        for j, v in zip(cols[starts[r]:starts[r + 1]].tolist(),
                        vals[starts[r]:starts[r + 1]].tolist()):
            m.addVarToRow(row, var_of(j), v)
        m.flushRowExtensions(row)
        m.addCut(row)
        added += 1
    return added


PROPAGATOR_NAME = "milpverify_nodes"
"""SCIP name of the plugin that runs ``SolveOptions.node_propagator``."""


def _attach_propagator(scip: Any, propagator: NodePropagator, variables: list[Any]) -> Any:
    """Include one SCIP propagator plugin calling ``propagator`` at every node."""
    ps = _ps()
    read = np.asarray(propagator.variables, dtype=np.int64)
    originals = [variables[j] for j in read.tolist()]
    n = len(originals)

    class _NodeBounds(ps.Prop):  # type: ignore[misc,name-defined]
        calls = 0
        cutoffs = 0
        tightened = 0
        seconds = 0.0
        last: tuple[np.ndarray, np.ndarray] | None = None
        tvars: list[Any] | None = None
        sepa: Any = None

        def propexec(self, proptiming: Any) -> dict[str, Any]:
            m = self.model
            if m.inProbing():
                return {"result": ps.SCIP_RESULT.DIDNOTRUN}
            t0 = time.perf_counter()
            if self.tvars is None:
                tvars = [m.getTransformedVar(v) for v in originals]
                # SCIP keeps no local bounds of multi-aggregated variables: those are
                # passed as unbounded and never tightened
                self.read = np.array([v.getStatus() != "MULTAGGR" for v in tvars])
                self.tvars = tvars
                self.live = [v for v, r in zip(tvars, self.read.tolist()) if r]
            tv = self.tvars
            live = self.live
            lo = np.full(n, -SCIP_INFINITY)
            up = np.full(n, SCIP_INFINITY)
            lo[self.read] = np.fromiter((v.getLbLocal() for v in live), np.float64, len(live))
            up[self.read] = np.fromiter((v.getUbLocal() for v in live), np.float64, len(live))
            if self.last is not None and np.array_equal(lo, self.last[0]) \
                    and np.array_equal(up, self.last[1]):
                self.seconds += time.perf_counter() - t0
                return {"result": ps.SCIP_RESULT.DIDNOTFIND}
            self.last = (lo, up)
            self.calls += 1
            out = propagator.propagate(np.where(lo <= -SCIP_INFINITY, -np.inf, lo),
                                       np.where(up >= SCIP_INFINITY, np.inf, up))
            result = ps.SCIP_RESULT.DIDNOTFIND
            if out is None:
                self.cutoffs += 1
                result = ps.SCIP_RESULT.CUTOFF
            else:
                new_lo, new_up = (np.clip(b, -SCIP_INFINITY, SCIP_INFINITY) for b in out)
                new_lo = np.where(self.read, new_lo, lo)
                new_up = np.where(self.read, new_up, up)
                changed = 0
                for j in np.flatnonzero(new_lo > lo).tolist():
                    infeasible, done = m.tightenVarLb(tv[j], float(new_lo[j]))
                    if infeasible:
                        result = ps.SCIP_RESULT.CUTOFF
                        break
                    changed += bool(done)
                if result != ps.SCIP_RESULT.CUTOFF:
                    for j in np.flatnonzero(new_up < up).tolist():
                        infeasible, done = m.tightenVarUb(tv[j], float(new_up[j]))
                        if infeasible:
                            result = ps.SCIP_RESULT.CUTOFF
                            break
                        changed += bool(done)
                if result == ps.SCIP_RESULT.CUTOFF:
                    self.cutoffs += 1
                elif changed:
                    self.tightened += changed
                    result = ps.SCIP_RESULT.REDUCEDDOM
                    # the node's bounds are now the tightened ones
                    lo, up = lo.copy(), up.copy()
                    lo[self.read] = np.fromiter((v.getLbLocal() for v in live), np.float64,
                                                len(live))
                    up[self.read] = np.fromiter((v.getUbLocal() for v in live), np.float64,
                                                len(live))
                    self.last = (lo, up)
            self.seconds += time.perf_counter() - t0
            return {"result": result}

    plugin = _NodeBounds()
    scip.includeProp(plugin, PROPAGATOR_NAME, "network-aware node bounds",
                     presolpriority=0, presolmaxrounds=0,
                     proptiming=ps.SCIP_PROPTIMING.BEFORELP, priority=-100, freq=1,
                     delay=True)
    if callable(getattr(propagator, "branch_scores", None)):
        _attach_branching(scip, propagator, plugin)
    if callable(getattr(propagator, "local_cuts", None)):
        plugin.sepa = _attach_local_cuts(scip, propagator, plugin, read)
    return plugin


LOCAL_SEPARATOR_NAME = "milpverify_local"
"""SCIP name of the separator that adds a propagator's ``local_cuts`` as local rows."""


def _attach_local_cuts(scip: Any, propagator: Any, prop_plugin: Any, read: np.ndarray) -> Any:
    """Include a separator adding ``propagator.local_cuts(lower, upper, values)`` (rows
    valid in the current node's subtree only) below the root."""
    ps = _ps()
    column = {int(j): k for k, j in enumerate(read.tolist())}

    class _LocalCuts(ps.Sepa):  # type: ignore[misc,name-defined]
        cuts = 0

        def sepaexeclp(self) -> dict[str, Any]:
            m = self.model
            tv = prop_plugin.tvars
            if tv is None or m.getDepth() == 0:
                return {"result": ps.SCIP_RESULT.DIDNOTRUN}
            t0 = time.perf_counter()
            live = prop_plugin.live
            n = len(tv)
            lo = np.full(n, -np.inf)
            up = np.full(n, np.inf)
            lo[prop_plugin.read] = np.fromiter((v.getLbLocal() for v in live), np.float64,
                                               len(live))
            up[prop_plugin.read] = np.fromiter((v.getUbLocal() for v in live), np.float64,
                                               len(live))
            lo[lo <= -SCIP_INFINITY] = -np.inf
            up[up >= SCIP_INFINITY] = np.inf
            values = np.zeros(int(read.max()) + 1 if n else 0)
            values[read] = [m.getSolVal(None, v) for v in tv]
            cuts = propagator.local_cuts(lo, up, values, MAX_CUTS_PER_ROUND)
            result = ps.SCIP_RESULT.DIDNOTFIND
            if cuts is None:
                result = ps.SCIP_RESULT.CUTOFF
            elif cuts.count:
                best = np.argsort(-cuts.violation, kind="stable")[:MAX_CUTS_PER_ROUND]
                self.cuts += _add_cuts(m, self, cuts, best.tolist(), lambda j: tv[column[j]],
                                       "local", self.cuts, local=True)
                result = ps.SCIP_RESULT.SEPARATED
            prop_plugin.seconds += time.perf_counter() - t0
            return {"result": result}

    sepa = _LocalCuts()
    scip.includeSepa(sepa, LOCAL_SEPARATOR_NAME, "big-M rows with a node's bounds",
                     priority=90_000, freq=1)
    return sepa


BRANCHRULE_NAME = "milpverify_scores"
"""SCIP name of the branching rule that follows a propagator's ``branch_scores``."""


def _attach_branching(scip: Any, propagator: Any, prop_plugin: Any) -> None:
    """Branch on the fractional candidate with the highest ``propagator.branch_scores()``
    (scores of the propagator's variables at the last node it propagated); when it gives
    None or no candidate scores above 0, SCIP's own rules branch."""
    ps = _ps()

    class _ScoreBranching(ps.Branchrule):  # type: ignore[misc,name-defined]
        position: dict[int, int] | None = None
        branched = 0

        def branchexeclp(self, allowaddcons: bool) -> dict[str, Any]:
            scores = propagator.branch_scores()
            if scores is None or prop_plugin.tvars is None:
                return {"result": ps.SCIP_RESULT.DIDNOTRUN}
            if self.position is None:
                self.position = {v.getIndex(): k for k, v in enumerate(prop_plugin.tvars)}
            m = self.model
            cands, _, _, _, n_prio, _ = m.getLPBranchCands()
            best, best_score = None, 0.0
            for v in cands[:n_prio]:
                k = self.position.get(v.getIndex())
                if k is not None and scores[k] > best_score:
                    best, best_score = v, float(scores[k])
            if best is None:
                return {"result": ps.SCIP_RESULT.DIDNOTRUN}
            m.branchVar(best)
            self.branched += 1
            return {"result": ps.SCIP_RESULT.BRANCHED}

    scip.includeBranchrule(_ScoreBranching(), BRANCHRULE_NAME,
                           "unstable ReLUs by the propagator's scores", priority=100_000,
                           maxdepth=-1, maxbounddist=1.0)


def _ps() -> Any:
    import pyscipopt  # the backend checked that it is installed before any plugin is added

    return pyscipopt
