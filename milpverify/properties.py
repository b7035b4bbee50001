r"""Relaxed top-K (RTK) and affinity robustness (Leino & Fredrikson, NeurIPS 2021), exactly.

Both properties say "some top-k set of x survives": with the labels sorted by their logit at
x (`order`, ties broken by the lower index) and `T_k = order[:k]`, the property holds at x'
iff *some* k in a set `ks` of "certifying" k's (fixed by x) keeps `F^k(x') = T_k`:

- relaxed top-K (`RelaxedTopK(K)`): `ks = {1, ..., K}`;
- affinity (`Affinity(groups)`): `ks = {k : T_k ⊆ S for some group S}` (the reading of the
  paper's code, `gloro.relaxations`, default ``semantics="subset"``), or with
  ``semantics="full"`` `ks = {|S| : T_{|S|} = S}` (the slides' formula
  `F^{|S|}(x) ⊆ S` read literally: as `|F^{|S|}(x)| = |S|`, the group must *be* the top-|S|
  set at x). A group that no top-k set of x fits never certifies; when no group does,
  `ks` is empty and x itself violates the property (distance 0).

Tie convention (as in `rho`: ties count as adversarial): `F^k(x') = T_k` iff
`min_{i in T_k} y_i > max_{j not in T_k} y_j`, so the top-k set is *changed* at x' iff
some pair (i in T_k, j not in T_k) has `y_j - y_i >= 0`. The property is violated iff

    AND_{k in ks}  OR_{i in T_k, j not in T_k}  y_j - y_i >= 0,

a conjunction of disjunctions, encoded with binaries over the same network MILP as `rho`
(`encode_network`). `violation(y) = min_{k in ks} (max_{j not in T_k} y_j - min_{i in T_k} y_i)`
is `>= 0` exactly on that set; K = 1 is ordinary misclassification.
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
import numpy.typing as npt

from milpverify.bounds import symbolic_bounds
from milpverify.bounds.base import Bounds
from milpverify.encode.milp import Term, encode_network
from milpverify.encode.model import MilpModel
from milpverify.encode.objective import RobustnessProblem, add_distance
from milpverify.errors import InvalidInputError
from milpverify.ir import ops
from milpverify.ir.network import Network
from milpverify.ir.ops import FloatArray, IntArray
from milpverify.restriction import affine_rows, region_constraints, region_of, violated_rows
from milpverify.results import Certificate, RhoResult, RhoStatus, Verdict, norm_distance
from milpverify.solve import get_backend
from milpverify.solve.base import SolveOptions, SolveStatus
from milpverify.tighten import METHODS as BOUND_METHODS
from milpverify.tighten import compute_bounds
from milpverify.verify import (DEFAULT_TOLERANCE, SOLVER_SLACK, WITNESS_MARGIN, Query, query_box,
                               check_positive, max_radius, proven_beyond, solver_parameters,
                               validate_query)
from milpverify.witness import RAY_STEPS, WitnessCheck, float32_toward, onnx_logits

__all__ = [
    "DIFFERENCE_NODE", "ENCODINGS", "Affinity", "OutputBounds", "PairPlan", "Property",
    "RelaxedTopK", "TopKQuery", "add_topk_changed", "build_property_problem",
    "certify_affinity", "certify_properties", "certify_property", "certify_topk",
    "check_property_witness", "load_affinity", "load_groups", "parse_property", "plan_pairs",
    "property_bounds", "rho_affinity", "rho_property", "rho_topk",
    "topk_query",
]

log = logging.getLogger(__name__)

#: Rounds of "prove nothing within best - tolerance, or find a closer point" in
#: `rho_property` (the descent of `verify.rho`).
DESCENT_ROUNDS = 4

#: Encodings of "every top-k set in ks changed" (see `add_topk_changed`).
ENCODINGS = ("pairs", "select")
SEMANTICS = ("subset", "full")


# ============================================================================ properties
@dataclass(frozen=True)
class RelaxedTopK:
    """Relaxed top-K robustness: some k <= K keeps its top-k set (K = 1: plain robustness)."""

    K: int

    @property
    def name(self) -> str:
        return f"topk:{self.K}"

    def validate(self, num_classes: int) -> None:
        if isinstance(self.K, bool) or not isinstance(self.K, (int, np.integer)) \
                or not 1 <= self.K <= num_classes:
            raise InvalidInputError(
                f"`K` must be an integer in [1, {num_classes}] (the network has {num_classes} "
                f"classes); got {self.K!r}.")

    def certifying_ks(self, order: Sequence[int]) -> tuple[int, ...]:
        """`(1, ..., K)`."""
        return tuple(range(1, int(self.K) + 1))


@dataclass(frozen=True)
class Affinity:
    """Affinity robustness w.r.t. `groups`: a top-k set inside a group survives.

    `semantics="subset"` (default): k certifies when `T_k ⊆ S` for some group S
    (Leino & Fredrikson's implementation). `semantics="full"`: only k = |S| with
    `T_{|S|} = S` certifies (the formula `F^{|S|}(x) ⊆ S` taken literally).
    """

    groups: tuple[tuple[int, ...], ...]
    semantics: str = "subset"

    def __post_init__(self) -> None:
        object.__setattr__(self, "groups", _check_groups(self.groups, "`groups`"))
        if self.semantics not in SEMANTICS:
            raise InvalidInputError(
                f"`semantics` must be 'subset' or 'full'; got {self.semantics!r}.")

    @property
    def name(self) -> str:
        return f"affinity:{self.semantics}:" + "|".join(
            ",".join(str(c) for c in g) for g in self.groups)

    def validate(self, num_classes: int) -> None:
        bad = sorted({c for g in self.groups for c in g if not 0 <= c < num_classes})
        if bad:
            raise InvalidInputError(
                f"affinity groups use labels {bad} outside [0, {num_classes}) (the network "
                f"has {num_classes} classes).")

    def certifying_ks(self, order: Sequence[int]) -> tuple[int, ...]:
        """The k whose top-k set at x fits a group (see the class docstring)."""
        sets = [frozenset(g) for g in self.groups]
        if self.semantics == "full":
            return tuple(sorted({len(s) for s in sets if frozenset(order[:len(s)]) == s}))
        biggest = max(len(s) for s in sets)
        return tuple(k for k in range(1, min(biggest, len(order)) + 1)
                     if any(frozenset(order[:k]) <= s for s in sets))


Property = Union[RelaxedTopK, Affinity]


def _check_groups(groups: Any, what: str) -> tuple[tuple[int, ...], ...]:
    """Groups as a tuple of tuples of ints; InvalidInputError naming `what` otherwise."""
    if isinstance(groups, (str, bytes)) or not isinstance(groups, Sequence) or not groups:
        raise InvalidInputError(f"{what} must be a non-empty list of label lists, e.g. "
                                f"[[0, 1, 8, 9], [2, 3, 4, 5, 6, 7]]; got {groups!r}.")
    out = []
    for pos, group in enumerate(groups):
        if isinstance(group, (str, bytes)) or not isinstance(group, Sequence) or not group:
            raise InvalidInputError(f"{what}[{pos}] must be a non-empty list of labels; "
                                    f"got {group!r}.")
        labels = []
        for c in group:
            if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 0:
                raise InvalidInputError(f"{what}[{pos}] contains {c!r}; labels are integers "
                                        ">= 0.")
            labels.append(int(c))
        if len(set(labels)) != len(labels):
            raise InvalidInputError(f"{what}[{pos}] lists a label twice: {labels}.")
        out.append(tuple(labels))
    return tuple(out)


def _read_groups_file(path: str | Path) -> dict[str, Any]:
    """The validated JSON object of a groups file (see `load_groups`)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInputError(f"cannot read affinity groups file {str(p)!r}: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"affinity groups file {str(p)!r} is not valid JSON: {exc}"
                                ) from exc
    if not isinstance(data, dict) or "groups" not in data:
        raise InvalidInputError(
            f"affinity groups file {str(p)!r} must hold an object with a \"groups\" key, e.g. "
            '{"groups": [[0, 1, 8, 9], [2, 3, 4, 5, 6, 7]]}.')
    extra = sorted(set(data) - {"groups", "names", "semantics"})
    if extra:
        warnings.warn(f"affinity groups file {str(p)!r}: ignoring unknown keys {extra}",
                      UserWarning, stacklevel=3)
    data["groups"] = _check_groups(data["groups"], f"\"groups\" in {str(p)!r}")
    names = data.get("names")
    if names is not None and (not isinstance(names, list) or len(names) != len(data["groups"])):
        raise InvalidInputError(f"\"names\" in {str(p)!r} must list one name per group "
                                f"({len(data['groups'])}).")
    if data.get("semantics", "subset") not in SEMANTICS:
        raise InvalidInputError(f"\"semantics\" in {str(p)!r} must be 'subset' or 'full'; "
                                f"got {data['semantics']!r}.")
    return data


def load_groups(path: str | Path) -> list[list[int]]:
    """Read affinity groups from a JSON file.

    Format: ``{"groups": [[0, 1, 8, 9], [2, 3, 4, 5, 6, 7]]}``, optionally with
    ``"names": ["vehicles", "animals"]`` (one string per group, for readers) and
    ``"semantics": "subset" | "full"`` (see `Affinity`; read by `load_affinity`). Groups may
    overlap; a label may be in no group. Unknown keys give a warning.

    Raises
    ------
    InvalidInputError
        Missing or unreadable file, invalid JSON, no ``"groups"`` key, groups that are not
        non-empty lists of distinct non-negative integers, a bad ``"names"`` or
        ``"semantics"``.

    Example
    -------
    >>> load_groups("cifar10_groups.json")
    [[0, 1, 8, 9], [2, 3, 4, 5, 6, 7]]
    """
    return [list(g) for g in _read_groups_file(path)["groups"]]


def load_affinity(path: str | Path) -> Affinity:
    """`Affinity(groups, semantics)` from a groups file (`load_groups`; semantics default "subset").

    Example
    -------
    >>> load_affinity("cifar10_groups.json").semantics
    'subset'
    """
    data = _read_groups_file(path)
    return Affinity(data["groups"], data.get("semantics", "subset"))


def parse_property(spec: str) -> Property:
    """`"topk:K"` -> `RelaxedTopK(K)`; `"affinity:FILE.json"` -> `load_affinity(FILE)`.

    The parser behind the CLI option ``--property``.

    Raises
    ------
    InvalidInputError
        Any other form, a K that is not an integer, or a bad groups file.

    Example
    -------
    >>> parse_property("topk:3")
    RelaxedTopK(K=3)
    """
    kind, sep, arg = str(spec).partition(":")
    if kind == "topk" and sep:
        try:
            return RelaxedTopK(int(arg))
        except ValueError:
            raise InvalidInputError(f"`--property topk:K` needs an integer K; got {spec!r}."
                                    ) from None
    if kind == "affinity" and sep and arg:
        return load_affinity(arg)
    raise InvalidInputError(f"unknown property {spec!r}; use 'topk:K' (relaxed top-K, K >= 1) "
                            "or 'affinity:FILE.json' (groups file {\"groups\": [[...], ...]}).")


# ============================================================================ the query at x
@dataclass(frozen=True)
class TopKQuery:
    """`order` (labels by logit at x, descending, stable) and the certifying `ks`."""

    order: tuple[int, ...]
    ks: tuple[int, ...]
    name: str

    @property
    def rank(self) -> IntArray:
        r = np.empty(len(self.order), dtype=np.int64)
        r[list(self.order)] = np.arange(len(self.order))
        return r

    def violation(self, logits: FloatArray) -> float:
        """`min_{k in ks} (max_{j not in T_k} y_j - min_{i in T_k} y_i)`: >= 0 iff violated.

        `+inf` when `ks` is empty (nothing certifies); `-inf` when k = #classes is in ks.
        """
        y = np.asarray(logits, dtype=np.float64).reshape(-1)[list(self.order)]
        best = math.inf
        for k in self.ks:
            outside = y[k:].max() if k < len(y) else -math.inf
            best = min(best, float(outside - y[:k].min()))
        return best

    def active_pair(self, logits: FloatArray) -> tuple[int, int]:
        """(i, j) attaining the violation: the pair whose `y_j - y_i` an attack should raise."""
        y = np.asarray(logits, dtype=np.float64).reshape(-1)
        best, pair = math.inf, (self.order[0], self.order[-1])
        for k in self.ks:
            if k >= len(self.order):
                continue
            inside, outside = list(self.order[:k]), list(self.order[k:])
            i = inside[int(np.argmin(y[inside]))]
            j = outside[int(np.argmax(y[outside]))]
            if y[j] - y[i] < best:
                best, pair = y[j] - y[i], (i, j)
        return pair


def topk_query(net: Network, x: npt.ArrayLike, prop: Property) -> TopKQuery:
    """The labels ordered by their logit at x and the certifying k's of `prop` there.

    Raises
    ------
    InvalidInputError
        `prop` is not a RelaxedTopK/Affinity or does not fit the network's classes.

    Example
    -------
    >>> topk_query(net, x, RelaxedTopK(2)).ks
    (1, 2)
    """
    x = net.as_batch(x)[0]
    if not isinstance(prop, (RelaxedTopK, Affinity)):
        raise InvalidInputError(f"`prop` must be a RelaxedTopK or Affinity; got "
                                f"{type(prop).__name__}.")
    prop.validate(net.num_classes)
    logits = net.forward(x)[0]
    order = tuple(int(c) for c in np.argsort(-logits, kind="stable"))
    return TopKQuery(order, prop.certifying_ks(order), prop.name)


# ============================================================================ witnesses
def check_property_witness(net: Network, x: npt.ArrayLike, witness: npt.ArrayLike,
                           prop: Property | TopKQuery, *,
                           domain: tuple[float, float] | None = (0.0, 1.0), norm: str = "linf",
                           required_margin: float = 0.0) -> WitnessCheck:
    """Re-run `witness` and decide whether it violates `prop` at x.

    The witness is rounded to float32 toward x (`witness.float32_toward`, as
    `check_witness` does). Verified iff it lies in `domain` and `violation >=
    required_margin` both in numpy float64 and in onnxruntime on the original model (when
    the network has an ONNX origin): every certifying top-k set of x is changed.
    `margin_numpy` / `margin_onnx` of the returned `WitnessCheck` hold the two violations,
    `adversarial_label` the witness's top-1 label.

    Example
    -------
    >>> check_property_witness(net, x, r.witness, RelaxedTopK(3)).verified
    True
    """
    x0 = net.as_batch(x)[0]
    query = prop if isinstance(prop, TopKQuery) else topk_query(net, x0, prop)
    w = float32_toward(net.as_batch(witness)[0], x0)
    in_domain = domain is None or bool(np.all(w >= domain[0]) and np.all(w <= domain[1]))
    logits = net.forward(w)[0]
    v_np = query.violation(logits)
    ref = onnx_logits(net, w)
    v_ort = None if ref is None else query.violation(ref[0])
    verified = in_domain and v_np >= required_margin and (v_ort is None or
                                                          v_ort >= required_margin)
    message = "" if verified else (
        f"{query.name} witness rejected: in_domain={in_domain}, numpy violation {v_np:.3g}, "
        f"onnxruntime violation {v_ort if v_ort is None else f'{v_ort:.3g}'} "
        f"(need >= {required_margin:g})")
    return WitnessCheck(verified, w.reshape(net.input_shape), norm_distance(w, x0, norm),
                        in_domain, v_np, v_ort, int(np.argmax(logits)), message)


def _repair(net: Network, q: Query, query: TopKQuery, point: FloatArray,
            box: tuple[FloatArray, FloatArray]) -> WitnessCheck | None:
    """`witness.repair_witness` for a property: re-check `x + (1 + s)(point - x)`, clipped
    to `box`, for s in `RAY_STEPS`; the first verified candidate, or None (logged)."""
    p0 = net.as_batch(point)[0]
    last = None
    for step in RAY_STEPS:
        cand = np.clip(q.x + (1.0 + step) * (p0 - q.x), box[0], box[1])
        last = check_property_witness(net, q.x, cand, query, domain=q.domain, norm=q.norm)
        if last.verified:
            return last
    if last is not None:
        log.warning(last.message)
    return None


# ============================================================================ attack
def _pgd(net: Network, q: Query, query: TopKQuery, eps: float, *, steps: int = 30,
         restarts: int = 2, seed: int = 0) -> WitnessCheck | None:
    """L-inf PGD on the violation in the eps-box (numpy: gradients from the local affine map).

    Restart 0 starts at x, the others uniformly in the box; each step raises `y_j - y_i` of
    the pair attaining the violation by a signed step `2.5 eps / steps`. Returns the first
    candidate that passes `check_property_witness`, or None.
    """
    if not query.ks:
        return None
    low, high = query_box(q, eps)
    rng = np.random.default_rng(seed)
    z = np.repeat(q.x[None], restarts, axis=0)
    if restarts > 1:
        z[1:] = rng.uniform(low, high, size=(restarts - 1, q.x.size))
    alpha = 2.5 * eps / steps
    for it in range(steps + 1):
        logits = net.forward(z)
        for r in range(restarts):
            if query.violation(logits[r]) >= 0:
                check = check_property_witness(net, q.x, z[r], query, domain=q.domain,
                                               norm=q.norm)
                if check.verified:
                    return check
            if it == steps:
                continue
            i, j = query.active_pair(logits[r])
            g = np.zeros((1, net.num_classes))
            g[0, j], g[0, i] = 1.0, -1.0
            grad, _ = affine_rows(net, region_of(net, z[r])[0], net.output, g)
            z[r] = np.clip(z[r] + alpha * np.sign(grad[0]), low, high)
    return None


def _pgd_bisect(net: Network, q: Query, query: TopKQuery, eps: float, steps: int
                ) -> WitnessCheck | None:
    """PGD at `eps`, then `steps` bisections on [0, best distance]; the closest witness."""
    best = _pgd(net, q, query, eps)
    if best is None:
        return None
    lo, hi = 0.0, best.distance
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        found = _pgd(net, q, query, mid)
        if found is not None and found.distance < best.distance:
            best, hi = found, min(mid, found.distance)
        else:
            lo = mid
    return best


def _refine_in_region(net: Network, q: Query, query: TopKQuery, found: WitnessCheck, *,
                     max_rounds: int = 30) -> WitnessCheck:
    """The nearest violating point of `found`'s activation region, if it is closer.

    `verify._refine` for a property: in the region the network is affine, `y = A x' + c`;
    keeping, for each certifying k, the pair (i, j) that changes T_k most at the witness,

        minimise ||x' - x||  s.t.  (A_j - A_i) x' + c_j - c_i >= 0 (each kept pair),
                                   region rows, x' in domain

    is an LP (region rows added lazily, as in `restriction.lp_restriction`). Its point is
    re-checked (`_repair`); `found` is returned unless a verified closer point results.
    """
    w = net.as_batch(found.witness)[0]
    region, values = region_of(net, w)
    y = values[net.output]
    pairs = set()
    for k in query.ks:
        inside, outside = list(query.order[:k]), list(query.order[k:])
        if not outside:
            return found
        pairs.add((inside[int(np.argmin(y[inside]))], outside[int(np.argmax(y[outside]))]))
    g = np.zeros((len(pairs), net.num_classes))
    for r, (i, j) in enumerate(sorted(pairs)):
        g[r, j], g[r, i] = 1.0, -1.0
    a, c = affine_rows(net, region, net.output, g)
    model = MilpModel()
    xv = model.add_vars(net.input_size, q.domain[0], q.domain[1], name="input")
    model.add_matrix_rows(a, xv, -c, np.inf, name="topk/kept_pairs")
    add_distance(model, q.x, xv, q.norm, found.distance)
    added: set[tuple[str, int]] = set()
    point = None
    for _ in range(max_rounds):
        result = get_backend("highs").solve(model, SolveOptions())
        if result.x is None:
            return found
        point = result.x[xv]
        fresh = []
        for name, idx in violated_rows(net, region, point):
            new = np.array([i for i in idx if (name, int(i)) not in added], dtype=np.int64)
            if len(new):
                fresh.append((name, new))
        if not fresh:
            break
        for name, idx in fresh:
            ra, rc = region_constraints(net, region, name, idx)
            model.add_matrix_rows(ra, xv, -rc, np.inf, name="region")
            added.update((name, int(i)) for i in idx)
    if point is None:
        return found
    check = _repair(net, q, query, point, query_box(q, found.distance))
    return check if check is not None and check.distance < found.distance else found


# ============================================================================ the MILP
@dataclass
class PairPlan:
    """Which pairs can still change which top-k sets in a box (from output bounds).

    `diff_lower[j, i] <= y_j - y_i <= diff_upper[j, i]` over the box. `pairs[k]` lists the
    pairs (i, j) that can change T_k (`diff_upper >= margin`). `ks` are the k still to be
    changed (a k with a pair whose `diff_lower >= margin` changes everywhere and is dropped);
    `impossible` names a k that no pair can change (then the property holds in the box).
    """

    ks: list[int]
    pairs: dict[int, list[tuple[int, int]]]
    diff_lower: FloatArray
    diff_upper: FloatArray
    out_lower: FloatArray
    out_upper: FloatArray
    impossible: int | None = None
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OutputBounds:
    """Bounds of the logits, `lower <= y <= upper`, and of all their differences,
    `lower_diff[j, i] <= y_j - y_i <= upper_diff[j, i]`, over a box."""

    lower: FloatArray
    upper: FloatArray
    lower_diff: FloatArray
    upper_diff: FloatArray


#: Name of the node appended to bound every difference y_j - y_i directly.
DIFFERENCE_NODE = "milpverify/differences"


def property_bounds(net: Network, box: tuple[FloatArray, FloatArray], method: str, *,
                    time_limit_s: float | None = None, base: Bounds | None = None,
                    differences: bool = True) -> tuple[Bounds, OutputBounds]:
    """Bounds of every node over `box`, and of the logits and all their differences.

    With `differences`, the network is extended by one Affine node with a row `e_c` per
    class and a row `e_j - e_i` per pair i < j, and bounded as a whole (as
    `verify.query_bounds` does for the margins): back-substituting from `y_j - y_i` lets
    the correlated parts of y_j and y_i cancel before any ReLU is relaxed, far tighter than
    `u_j - l_i`. Without it the
    differences are `[l_j - u_i, u_j - l_i]`. With `base` (bounds valid over a box that
    contains `box`) one symbolic pass intersected with it is run instead of `method`.
    The returned `Bounds` also hold every node of `net` (the encoder reads those).
    """
    c = net.num_classes
    spec = net
    if differences and c > 1:
        i_idx, j_idx = np.triu_indices(c, k=1)
        d = np.zeros((len(i_idx), c))
        d[np.arange(len(i_idx)), j_idx] = 1.0
        d[np.arange(len(i_idx)), i_idx] = -1.0
        # The logits themselves too: in the extended network they are no longer the
        # output, so only these rows give them back-substituted (not interval) bounds.
        rows = np.vstack([np.eye(c), d])
        spec = net.replace([*net.items(), (DIFFERENCE_NODE, ops.Affine(
            (net.output,), (len(rows),), rows, np.zeros(len(rows))))], DIFFERENCE_NODE)
    if base is not None:
        bounds = symbolic_bounds(spec, box[0], box[1], base=base)
    else:
        bounds = compute_bounds(spec, box[0], box[1], method=method, time_limit_s=time_limit_s)
    lo, up = bounds.flat(net.output)
    if spec is not net:
        low, high = bounds.flat(DIFFERENCE_NODE)
        lo, up = np.maximum(lo, low[:c]), np.minimum(up, high[:c])
    lower_diff = lo[:, None] - up[None, :]
    upper_diff = up[:, None] - lo[None, :]
    if spec is not net:
        dl, du = low[c:], high[c:]
        # row r bounds y_j - y_i in [dl, du], hence y_i - y_j in [-du, -dl]
        lower_diff[j_idx, i_idx] = np.maximum(lower_diff[j_idx, i_idx], dl)
        upper_diff[j_idx, i_idx] = np.minimum(upper_diff[j_idx, i_idx], du)
        lower_diff[i_idx, j_idx] = np.maximum(lower_diff[i_idx, j_idx], -du)
        upper_diff[i_idx, j_idx] = np.minimum(upper_diff[i_idx, j_idx], -dl)
    return bounds, OutputBounds(lo, up, lower_diff, upper_diff)


def plan_pairs(query: TopKQuery, out: OutputBounds, margin: float) -> PairPlan:
    """The `PairPlan` of `query` under `out` for rows `y_j - y_i >= margin`."""
    plan = PairPlan([], {}, out.lower_diff, out.upper_diff, out.lower, out.upper)
    n = len(query.order)
    for k in query.ks:
        inside, outside = query.order[:k], query.order[k:]
        cand = [(i, j) for i in inside for j in outside if out.upper_diff[j, i] >= margin]
        if not cand:
            plan.impossible = k
            break
        if any(out.lower_diff[j, i] >= margin for i, j in cand):
            continue  # T_k is changed everywhere in the box
        plan.ks.append(k)
        plan.pairs[k] = cand
    plan.stats = {"open_ks": list(plan.ks),
                  "pairs_total": sum(k * (n - k) for k in query.ks),
                  "pairs_possible": len({p for ps in plan.pairs.values() for p in ps})}
    return plan


def _terms(outputs: Term, coeffs: list[tuple[int, float]], extra: list[tuple[int, float]] = ()
           ) -> tuple[IntArray, FloatArray, float]:
    """Columns, values and constant of `sum c * y_o` (+ `sum c * var`) over output Terms."""
    cols, vals, const = [], [], 0.0
    for o, c in coeffs:
        if outputs.var[o] >= 0:
            cols.append(int(outputs.var[o]))
            vals.append(c)
        else:
            const += c * float(outputs.const[o])
    for v, c in extra:
        cols.append(int(v))
        vals.append(c)
    return np.asarray(cols, dtype=np.int64), np.asarray(vals, dtype=np.float64), const


def _row(model: MilpModel, outputs: Term, coeffs: list[tuple[int, float]], upper: float,
         name: str, extra: list[tuple[int, float]] = ()) -> None:
    """One row `sum coeffs * y (+ extra) <= upper`."""
    cols, vals, const = _terms(outputs, coeffs, extra)
    model.add_rows(np.zeros(len(cols), dtype=np.int64), cols, vals, 1, -np.inf, upper - const,
                   name=name)


def add_topk_changed(model: MilpModel, outputs: Term, plan: PairPlan, margin: float, *,
                     encoding: str = "pairs", relax: bool = False) -> IntArray:
    r"""Require every top-k set in `plan.ks` to be changed: AND_k OR_{(i,j) in P_k} y_j - y_i >= m.

    `m = margin`; `P_k = plan.pairs[k]`. A pair that is the only one left for some k is
    forced: the row `y_i - y_j <= -m` (no binary), and every k containing it is satisfied.

    ``encoding="pairs"``: one binary `z_ij` per remaining pair, shared by every k the pair
    can change (i in T_k, j not in T_k), with `M_ij = max(y_i - y_j) + m` from
    `plan.diff_*`:

        y_i - y_j + M_ij z_ij <= M_ij - m,      sum_{(i,j) in P_k} z_ij >= 1  (each k).

    ``encoding="select"``: per k, pick one insider and one outsider through a threshold
    t_k in `[T_lo, T_hi] = [min_I l_i + m, max(max_J u_j, T_lo)]` (I, J: insiders and
    outsiders of `P_k`; l, u output bounds), binaries a_j (j in J), b_i (i in I):

        t_k - y_j + (T_hi - l_j) a_j <= T_hi - l_j          (a_j = 1: y_j >= t_k)
        y_i - t_k + (u_i + m - T_lo) b_i <= u_i - T_lo      (b_i = 1: y_i + m <= t_k)
        sum_j a_j = 1,  sum_i b_i = 1,

    so some j >= t_k >= some i + m: |I| + |J| binaries per k instead of up to |I| |J|.
    Returns the binary variable indices.
    """
    if encoding not in ENCODINGS:
        raise InvalidInputError(f"`encoding` must be one of {ENCODINGS}; got {encoding!r}.")
    forced = {ps[0] for ps in plan.pairs.values() if len(ps) == 1}
    for i, j in sorted(forced):
        _row(model, outputs, [(i, 1.0), (j, -1.0)], -margin, f"topk/pair[{i},{j}]")
    open_ks = [k for k in plan.ks if not forced.intersection(plan.pairs[k])]
    binaries: list[int] = []
    if encoding == "pairs":
        used = sorted({p for k in open_ks for p in plan.pairs[k]})
        z = model.add_vars(len(used), 0.0, 1.0, integer=not relax, name="topk.pair")
        index = dict(zip(used, z))
        for (i, j), var in index.items():
            big = max(-plan.diff_lower[j, i] + margin, 0.0)
            _row(model, outputs, [(i, 1.0), (j, -1.0)], big - margin, f"topk/pair[{i},{j}]",
                 [(var, big)])
        for k in open_ks:
            cols = np.array([index[p] for p in plan.pairs[k]], dtype=np.int64)
            model.add_rows(np.zeros(len(cols), dtype=np.int64), cols, np.ones(len(cols)), 1,
                           1.0, np.inf, name=f"topk/changed[{k}]")
        return np.asarray(z, dtype=np.int64)
    lo, up = plan.out_lower, plan.out_upper
    for k in open_ks:
        inside = sorted({i for i, _ in plan.pairs[k]})
        outside = sorted({j for _, j in plan.pairs[k]})
        t_lo = float(min(lo[i] for i in inside)) + margin
        t_hi = max(float(max(up[j] for j in outside)), t_lo)
        t = int(model.add_vars(1, t_lo, t_hi, name=f"topk[{k}].threshold")[0])
        for side, members in (("out", outside), ("in", inside)):
            choose = len(members) > 1
            sel = model.add_vars(len(members) if choose else 0, 0.0, 1.0, integer=not relax,
                                 name=f"topk[{k}].{side}")
            binaries.extend(int(v) for v in sel)
            for pos, c in enumerate(members):
                if side == "out":   # t - y_j <= M (1 - a_j)
                    big = max(t_hi - float(lo[c]), 0.0)
                    coeffs, rhs = [(c, -1.0)], 0.0
                else:               # y_i - t <= -m + M (1 - b_i)
                    big = max(float(up[c]) + margin - t_lo, 0.0)
                    coeffs, rhs = [(c, 1.0)], -margin
                extra = [(t, 1.0 if side == "out" else -1.0)]
                if choose:
                    extra.append((int(sel[pos]), big))
                    rhs += big
                _row(model, outputs, coeffs, rhs, f"topk[{k}]/{side}[{c}]", extra)
            if choose:
                model.add_rows(np.zeros(len(sel), dtype=np.int64), sel, np.ones(len(sel)), 1,
                               1.0, 1.0, name=f"topk[{k}]/{side}/one")
    return np.asarray(binaries, dtype=np.int64)


def build_property_problem(net: Network, x: FloatArray | None, bounds: Bounds, plan: PairPlan,
                           box_lower: FloatArray, box_upper: FloatArray, *, margin: float,
                           norm: str = "linf", radius: float = 0.0, encoding: str = "pairs",
                           relax: bool = False, with_distance: bool = True) -> RobustnessProblem:
    """Input box + network + "every top-k set in `plan.ks` changed" (+ distance to x)."""
    model = MilpModel()
    input_vars = model.add_vars(net.input_size, box_lower, box_upper, name="input")
    used = np.zeros(net.num_classes, dtype=bool)
    for ps in plan.pairs.values():
        for i, j in ps:
            used[[i, j]] = True
    encoding_ = encode_network(net, bounds, model, Term.of_vars(input_vars), outputs=used,
                               relax=relax)
    choice = add_topk_changed(model, encoding_.terms[net.output], plan, margin,
                              encoding=encoding, relax=relax)
    t = None
    if with_distance:
        assert x is not None
        t = add_distance(model, x, input_vars, norm, radius)
    return RobustnessProblem(model, encoding_, input_vars, t, [], choice)


# ============================================================================ rho
def rho_property(net: Network, x: npt.ArrayLike, prop: Property, *, norm: str = "linf",
                 eps_cap: float | None = None, domain: tuple[float, float] = (0.0, 1.0),
                 time_limit_s: float = 60.0, backend: str = "scip",
                 bounds_method: str = "progressive", upper_bound: str | None = "pgd",
                 encoding: str = "pairs", difference_bounds: bool = True, threads: int = 1,
                 tolerance: float = DEFAULT_TOLERANCE,
                 solver_params: dict[str, object] | None = None) -> RhoResult:
    """Exact distance from x to the nearest x' that violates `prop` (RTK or affinity).

    The pipeline, bracket and statuses of `milpverify.verify.rho`: symbolic bounds on the
    capped box (they may prove the property there already), a PGD upper bound on the
    violation that shrinks the box, final bounds with `bounds_method`, a feasibility MILP
    when no witness is known yet, then the distance MILP of `build_property_problem` cut
    off at the best witness. `upper` is always the distance of a witness that passed
    `check_property_witness` (numpy float64 and onnxruntime both show every certifying
    top-k set changed); a solver point that fails is pushed along its ray
    (`witness.RAY_STEPS`) and re-checked, else discarded and the bracket stays open.

    Parameters
    ----------
    net : Network
    x : array
        One input inside `domain`.
    prop : RelaxedTopK or Affinity
    norm : {"linf", "l1"}
    eps_cap : float, optional
        Only search `||x' - x|| <= eps_cap` ("robust_at_cap" with `lower = eps_cap`).
    domain : (low, high)
    time_limit_s : float
        Budget of the whole query.
    backend : str
        MILP backend ("scip", "highs", "pyomo:SOLVER").
    bounds_method : str
        "interval", "symbolic", "alpha", "lp", "mip" or "progressive" (default).
    upper_bound : {"pgd", None}
        Heuristic run first (L-inf only).
    encoding : {"pairs", "select"}
        Property encoding (`add_topk_changed`).
    difference_bounds : bool
        Bound every `y_j - y_i` by back-substitution (`property_bounds`): prunes pairs and
        tightens the big-M constants.
    threads : int
    tolerance : float
        Bracket width under which the answer is "optimal".
    solver_params : dict, optional
        Passed to the backend on top of `verify.SCIP_DEFAULTS`.

    Returns
    -------
    RhoResult
        `label` is the top-1 label at x, `adversarial_label` the witness's top-1;
        `stats`: "property", "certifying_ks", "open_ks", "pairs_possible", "binaries", ...

    Raises
    ------
    InvalidInputError
        Bad `x`, `prop`, `eps_cap`, `domain`, options.

    Example
    -------
    >>> rho_property(net, x, RelaxedTopK(2), eps_cap=0.1).upper
    """
    check_positive("eps_cap", eps_cap)
    check_positive("time_limit_s", time_limit_s, allow_none=False)
    check_positive("tolerance", tolerance, allow_none=False)
    q = validate_query(net, x, norm=norm, domain=domain, margin=0.0, target=None, label=None)
    query = topk_query(net, q.x, prop)
    _check_options(upper_bound, encoding, bounds_method)
    solver = get_backend(backend)
    start = time.perf_counter()
    timings: dict[str, float] = {}
    stats: dict[str, Any] = {"property": query.name, "certifying_ks": list(query.ks)}
    cap = eps_cap if eps_cap is not None else max_radius(q)
    proven_cap = cap if eps_cap is not None else math.inf

    def finish(lower: float, status: RhoStatus, witness: WitnessCheck | None, message: str = ""
               ) -> RhoResult:
        timings["total_s"] = time.perf_counter() - start
        upper = witness.distance if witness is not None else math.inf
        lower = min(lower, upper)
        if status == RhoStatus.TIME_LIMIT and upper - lower <= tolerance:
            status = RhoStatus.OPTIMAL
        return RhoResult(lower, upper, status, query.order[0],
                         None if witness is None else witness.adversarial_label,
                         None if witness is None else witness.witness, witness is not None,
                         timings, stats, "exact", q.norm, message)

    def beyond(radius: float, best: WitnessCheck | None) -> RhoResult:
        return proven_beyond(radius, proven_cap, best, finish, tolerance)

    def bound(box: tuple[FloatArray, FloatArray], method: str, budget: float | None = None,
              base: Bounds | None = None) -> tuple[Bounds, OutputBounds, PairPlan]:
        t0 = time.perf_counter()
        bounds, out = property_bounds(net, box, method, time_limit_s=budget, base=base,
                                      differences=difference_bounds)
        plan = plan_pairs(query, out, -SOLVER_SLACK)
        timings["bounds_s"] = timings.get("bounds_s", 0.0) + time.perf_counter() - t0
        stats["unstable_relus"] = bounds.unstable
        stats.update(plan.stats)
        return bounds, out, plan

    at_x = check_property_witness(net, q.x, q.x, query, domain=q.domain, norm=q.norm)
    if at_x.verified:
        return finish(0.0, RhoStatus.OPTIMAL, at_x, "x itself violates the property" + (
            "" if query.ks else ": no top-k set of x fits a group"))

    # 1. Cheap bounds on the capped box: they may already keep some T_k everywhere.
    box = query_box(q, cap)
    bounds, out, plan = bound(box, "symbolic")
    if plan.impossible is not None:
        return beyond(cap, None)

    # 2. A verified PGD witness shrinks the box.
    t0 = time.perf_counter()
    best = None
    if upper_bound == "pgd" and q.norm == "linf":
        best = _pgd_bisect(net, q, query, cap, steps=8)
        best = None if best is None else _refine_in_region(net, q, query, best)
        stats["heuristic"] = "pgd"
    timings["upper_bound_s"] = time.perf_counter() - t0
    radius = min(cap, best.distance) if best is not None else cap

    # 3. Final bounds on the (shrunk) box with the requested method.
    if radius < cap or bounds_method != "symbolic":
        box = query_box(q, radius)
        budget = max((time_limit_s - (time.perf_counter() - start)) * 0.5, 1e-3)
        bounds, out, plan = bound(box, bounds_method, budget)
    if plan.impossible is not None:
        return beyond(radius, best)

    deadline = start + time_limit_s
    if best is None:
        # 4. Nothing known inside the radius: a feasibility MILP proves rho > radius or
        # gives a first witness.
        verdict, found, message = _decide(net, q, query, bounds, out, plan, box, radius,
                                          deadline, solver, backend, encoding, threads,
                                          solver_params, timings, stats)
        if verdict == Verdict.ROBUST:
            return beyond(radius, None)
        if found is None:
            return finish(0.0, RhoStatus.TIME_LIMIT, None, message)
        best = _refine_in_region(net, q, query, found)
        stats["first_witness"] = "feasibility MILP"
    # 5. Close the bracket by descent (as `verify.rho`): a feasibility MILP on the box of
    # radius best - 0.99 tolerance proves the bracket or yields a closer point.
    outer = (bounds, out, plan)  # bounds valid on a box containing the best witness
    for round_ in range(DESCENT_ROUNDS):
        radius = min(radius, best.distance - 0.99 * tolerance)
        if radius <= 0:
            return finish(0.0, RhoStatus.OPTIMAL, best)
        box = query_box(q, radius)
        bounds, out, plan = bound(box, "symbolic", base=bounds)
        if plan.impossible is not None:
            return beyond(radius, best)
        verdict, found, message = _decide(net, q, query, bounds, out, plan, box, radius,
                                          deadline, solver, backend, encoding, threads,
                                          solver_params, timings, stats)
        stats["descent_rounds"] = round_ + 1
        if verdict == Verdict.ROBUST:
            return beyond(radius, best)
        if found is None:
            break
        best = _refine_in_region(net, q, query, found)
        outer = (bounds, out, plan)
    # 6. Fallback: the distance MILP on the box of the best witness, its distance as cutoff.
    radius = best.distance
    box = query_box(q, radius)
    bounds, out, plan = outer
    t1 = time.perf_counter()
    problem = build_property_problem(net, q.x, bounds, plan, box[0], box[1],
                                     margin=-SOLVER_SLACK, norm=q.norm, radius=radius,
                                     encoding=encoding)
    timings["build_s"] = timings.get("build_s", 0.0) + time.perf_counter() - t1
    stats["binaries"] = int(problem.model.n_integer)
    stats["property_binaries"] = len(problem.choice_vars)
    remaining = deadline - time.perf_counter()
    if remaining <= 0:
        return finish(0.0, RhoStatus.TIME_LIMIT, best, "time limit reached before the solve")
    options = SolveOptions(time_limit_s=remaining, threads=threads,
                           objective_cutoff=best.distance,
                           solver_params=solver_parameters(backend, solver_params, tolerance))
    t2 = time.perf_counter()
    result = solver.solve(problem.model, options)
    timings["solve_s"] = timings.get("solve_s", 0.0) + time.perf_counter() - t2
    stats["nodes"] = stats.get("nodes", 0) + result.nodes

    if result.status == SolveStatus.ERROR:
        return finish(0.0, RhoStatus.ERROR, best, f"solver error: {result.message}")
    if result.status.no_solution_proven:
        return beyond(radius, best)
    if result.x is not None:
        found = _repair(net, q, query, result.x[problem.input_vars], box)
        if found is not None and found.distance < best.distance:
            best = found
    lower = max(0.0, result.dual_bound)
    if result.status == SolveStatus.OPTIMAL:
        status = RhoStatus.OPTIMAL if best.distance - lower <= tolerance else RhoStatus.TIME_LIMIT
        return finish(lower, status, best)
    return finish(lower, RhoStatus.TIME_LIMIT, best, f"solver stopped: {result.status.value}")


def _decide(net: Network, q: Query, query: TopKQuery, bounds: Bounds, out: OutputBounds,
            plan: PairPlan, box: tuple[FloatArray, FloatArray], eps: float, deadline: float,
            solver: Any, backend: str, encoding: str, threads: int,
            solver_params: dict[str, object] | None, timings: dict[str, float],
            stats: dict[str, Any]) -> tuple[Verdict, WitnessCheck | None, str]:
    """Is there a violating point in `box` (radius `eps`)? `verify._decide` for a property.

    First with the rows relaxed by SOLVER_SLACK: infeasible proves the property in the box.
    A point found that way may only tie within tolerance; then a second solve asks for
    `y_j - y_i >= WITNESS_MARGIN` so the witness survives the float64/onnxruntime re-check.
    """
    tie = f"violations exist only within {WITNESS_MARGIN:g} of the boundary (not resolved)"
    message = "time limit reached before the solve"
    for attempt, row_margin in enumerate((-SOLVER_SLACK, WITNESS_MARGIN)):
        if attempt:
            plan = plan_pairs(query, out, row_margin)
            if plan.impossible is not None:
                return Verdict.UNKNOWN, None, tie
        t1 = time.perf_counter()
        problem = build_property_problem(net, None, bounds, plan, box[0], box[1],
                                         margin=row_margin, encoding=encoding,
                                         with_distance=False)
        timings["build_s"] = timings.get("build_s", 0.0) + time.perf_counter() - t1
        stats["binaries"] = int(problem.model.n_integer)
        stats["property_binaries"] = len(problem.choice_vars)
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            break
        options = SolveOptions(time_limit_s=remaining, threads=threads,
                               stop_at_first_feasible=True,
                               solver_params=solver_parameters(backend, solver_params, None))
        t2 = time.perf_counter()
        result = solver.solve(problem.model, options)
        timings["solve_s"] = timings.get("solve_s", 0.0) + time.perf_counter() - t2
        stats["nodes"] = stats.get("nodes", 0) + result.nodes
        if result.status.no_solution_proven:
            if attempt == 0:
                return Verdict.ROBUST, None, "MILP infeasible"
            return Verdict.UNKNOWN, None, tie
        if result.x is None:
            return Verdict.UNKNOWN, None, f"solver stopped: {result.status.value}"
        found = _repair(net, q, query, result.x[problem.input_vars], box)
        if found is not None and found.distance <= eps * (1 + 1e-12):
            return Verdict.NOT_ROBUST, found, ""
        message = "the solver's point failed the witness re-check"
    return Verdict.UNKNOWN, None, message


def _check_options(upper_bound: str | None, encoding: str, bounds_method: str) -> None:
    if upper_bound not in ("pgd", None, "none"):
        raise InvalidInputError(f"`upper_bound`/`attack` must be 'pgd' or None; got "
                                f"{upper_bound!r}.")
    if encoding not in ENCODINGS:
        raise InvalidInputError(f"`encoding` must be one of {ENCODINGS}; got {encoding!r}.")
    if bounds_method not in BOUND_METHODS:
        raise InvalidInputError(f"`bounds_method` must be one of {', '.join(BOUND_METHODS)}; "
                                f"got {bounds_method!r}.")


def rho_topk(net: Network, x: npt.ArrayLike, K: int, **options: Any) -> RhoResult:
    """Exact relaxed top-K robustness radius: `rho_property(net, x, RelaxedTopK(K), ...)`.

    K = 1 is `rho` itself; the radius is non-decreasing in K. Keyword options (`eps_cap`,
    `domain`, `time_limit_s`, `backend`, ...) as in `rho_property`.

    Example
    -------
    >>> rho_topk(net, x, 3, eps_cap=8 / 255).status
    'optimal'
    """
    return rho_property(net, x, RelaxedTopK(K), **options)


def rho_affinity(net: Network, x: npt.ArrayLike, groups: Sequence[Sequence[int]] | str | Path,
                 *, semantics: str = "subset", **options: Any) -> RhoResult:
    """Exact affinity robustness radius; `groups` is a list of label lists or a JSON file.

    Example
    -------
    >>> rho_affinity(net, x, [[0, 1, 8, 9], [2, 3, 4, 5, 6, 7]]).upper
    """
    return rho_property(net, x, _affinity(groups, semantics), **options)


def _affinity(groups: Sequence[Sequence[int]] | str | Path, semantics: str) -> Affinity:
    if isinstance(groups, (str, Path)):
        groups = load_groups(groups)
    return Affinity(_check_groups(groups, "`groups`"), semantics)


# ============================================================================ certify
def certify_properties(net: Network, x: npt.ArrayLike, props: Sequence[Property], eps: float,
                       *, time_limit_s: float = 60.0, norm: str = "linf",
                       domain: tuple[float, float] = (0.0, 1.0), backend: str = "scip",
                       bounds_method: str = "progressive", attack: str | None = "pgd",
                       encoding: str = "pairs", difference_bounds: bool = True,
                       threads: int = 1, solver_params: dict[str, object] | None = None
                       ) -> list[Certificate]:
    """Decide several properties at one (x, eps), sharing the attack and the bounds.

    Per property as `milpverify.verify.certify`: "not_robust" only with a witness that
    passed `check_property_witness`; "robust" only with a proof (bounds, or an infeasible
    MILP whose rows were relaxed by `SOLVER_SLACK`); "unknown" otherwise. Shared work:
    every verified witness is re-checked against every property; bounds on the eps-box are
    computed once (symbolic first, then `bounds_method` if still needed); a proof for a
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
        Budget per property: the shared steps (attack, bounds; bounds get at most half of
        it) count against each property's MILP, other properties' solves do not.
    norm, domain, backend, bounds_method, threads, solver_params
        As in `milpverify.verify.certify`.
    attack : {"pgd", None}
        L-inf PGD on the violation (30 signed-gradient steps from x) for what the symbolic
        bounds leave open, before the (costlier) `bounds_method` bounds.
    encoding, difference_bounds
        As in `rho_property`.

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
    q = validate_query(net, x, norm=norm, domain=domain, margin=0.0, target=None, label=None)
    queries = [topk_query(net, q.x, p) for p in props]
    _check_options(attack, encoding, bounds_method)
    solver = get_backend(backend)
    start = time.perf_counter()
    shared: dict[str, float] = {}
    done: dict[int, Certificate] = {}
    own: dict[int, dict[str, float]] = {n: {} for n in range(len(queries))}
    stats: dict[int, dict[str, Any]] = {n: {"property": qu.name, "certifying_ks": list(qu.ks)}
                                        for n, qu in enumerate(queries)}
    witnesses: list[FloatArray] = [q.x]

    def settle(n: int, verdict: Verdict, witness: WitnessCheck | None, message: str = "") -> None:
        timings = dict(shared)
        timings.update(own[n])
        timings["total_s"] = time.perf_counter() - start
        done[n] = Certificate(verdict, float(eps), queries[n].order[0],
                              None if witness is None else witness.witness, witness is not None,
                              None if witness is None else witness.adversarial_label, timings,
                              stats[n], message)
        for m, other in enumerate(queries):
            same = set(queries[n].ks) == set(other.ks)
            if m not in done and (same or (verdict == Verdict.ROBUST
                                           and set(queries[n].ks) <= set(other.ks))):
                # Same certifying k's at this x: the same property here, whatever the verdict.
                stats[m]["implied_by"] = queries[n].name
                reason = message.split(": ", 1)[-1] if message.startswith("implied by") \
                    else message
                settle(m, verdict, witness,
                       f"implied by {queries[n].name}" + (f": {reason}" if reason else ""))

    def try_witnesses() -> None:
        for n, qu in enumerate(queries):
            for w in witnesses:
                if n in done:
                    break
                check = check_property_witness(net, q.x, w, qu, domain=q.domain, norm=q.norm)
                if check.verified and check.distance <= eps * (1 + 1e-12):
                    settle(n, Verdict.NOT_ROBUST, check)

    def pending(reverse: bool = False) -> list[int]:
        return sorted((n for n in range(len(queries)) if n not in done),
                      key=lambda n: len(queries[n].ks), reverse=reverse)

    def bound(method: str) -> tuple[Bounds, OutputBounds]:
        t0 = time.perf_counter()
        budget = max(0.5 * time_limit_s - (t0 - start), 1e-3)
        found = property_bounds(net, box, method, time_limit_s=budget,
                                differences=difference_bounds)
        for n in pending():
            plans[n] = plan_pairs(queries[n], found[1], -SOLVER_SLACK)
            stats[n].update(plans[n].stats)
            stats[n]["unstable_relus"] = found[0].unstable
        shared["bounds_s"] = shared.get("bounds_s", 0.0) + time.perf_counter() - t0
        for n in pending():
            if n not in done and plans[n].impossible is not None:
                settle(n, Verdict.ROBUST, None, "proven by bounds alone")
        return found

    box = query_box(q, eps)
    plans: dict[int, PairPlan] = {}
    try_witnesses()
    # 1. Symbolic bounds (cheap) may prove everything; 2. the attack looks for witnesses,
    # once per distinct set of certifying k's, most k's first (its witness also breaks
    # every property with fewer k's); 3. the requested bounds for what is left.
    found_bounds = bound("symbolic") if pending() else None
    if attack == "pgd" and norm == "linf" and pending():
        t0 = time.perf_counter()
        tried: set[tuple[int, ...]] = set()
        for n in pending(reverse=True):
            if n not in done and queries[n].ks not in tried:
                tried.add(queries[n].ks)
                found = _pgd(net, q, queries[n], eps, restarts=1)
                if found is not None:
                    witnesses.append(found.witness)
                    try_witnesses()
        shared["attack_s"] = time.perf_counter() - t0
    if pending() and bounds_method != "symbolic":
        found_bounds = bound(bounds_method)

    shared_s = time.perf_counter() - start
    for n in pending():
        if n in done:
            continue
        assert found_bounds is not None
        deadline = time.perf_counter() + time_limit_s - shared_s
        verdict, witness, message = _decide(net, q, queries[n], *found_bounds, plans[n], box,
                                            eps, deadline, solver, backend, encoding, threads,
                                            solver_params, own[n], stats[n])
        if witness is not None:
            witnesses.append(witness.witness)
        settle(n, verdict, witness, message)
        try_witnesses()
    return [done[n] for n in range(len(queries))]


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
    return certify_property(net, x, _affinity(groups, semantics), eps, **options)
