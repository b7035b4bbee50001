"""Relaxed robustness properties (Leino & Fredrikson): relaxed top-K and affinity groups, parsed
from the CLI or a JSON file.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np

from milpverify.errors import InvalidInputError

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


def affinity_of(groups: Sequence[Sequence[int]] | str | Path, semantics: str) -> Affinity:
    if isinstance(groups, (str, Path)):
        groups = load_groups(groups)
    return Affinity(_check_groups(groups, "`groups`"), semantics)
