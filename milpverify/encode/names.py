"""Lazy names of a model's variables and rows: one prefix per block, numbered on demand."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from milpverify.errors import InvalidModelError


@dataclass(frozen=True, slots=True)
class NameBlock:
    """Names of a contiguous block of variables or rows.

    Item ``start + k`` (``0 <= k < count``) is named ``f"{prefix}[{offset + k}]"``.
    """

    start: int
    count: int
    prefix: str
    offset: int

    def name(self, k: int) -> str:
        """Name of the ``k``-th item of the block (``0 <= k < count``)."""
        return f"{self.prefix}[{self.offset + k}]"

    def names(self) -> list[str]:
        """All names of the block, in order."""
        p = self.prefix
        return [f"{p}[{i}]" for i in range(self.offset, self.offset + self.count)]


class NameTable:
    """Lazily generated names: one `NameBlock` per `add_*` call, numbering per prefix."""

    __slots__ = ("blocks", "_starts", "_next_index")

    def __init__(self) -> None:
        self.blocks: list[NameBlock] = []
        self._starts: list[int] = []
        self._next_index: dict[str, int] = {}

    def add(self, start: int, count: int, prefix: str) -> None:
        if not isinstance(prefix, str) or not prefix or any(ch.isspace() for ch in prefix):
            raise InvalidModelError(
                f"name prefix must be a non-empty string without whitespace, got {prefix!r}")
        if count == 0:
            return
        offset = self._next_index.get(prefix, 0)
        self._next_index[prefix] = offset + count
        self.blocks.append(NameBlock(start, count, prefix, offset))
        self._starts.append(start)

    def name(self, i: int, total: int, what: str) -> str:
        i = int(i)
        if not 0 <= i < total:
            raise IndexError(f"{what} index {i} out of range [0, {total})")
        b = self.blocks[int(np.searchsorted(self._starts, i, side="right")) - 1]
        return b.name(i - b.start)

    def all(self) -> list[str]:
        out: list[str] = []
        for b in self.blocks:
            out.extend(b.names())
        return out

    def copy(self) -> NameTable:
        new = NameTable()
        new.blocks = list(self.blocks)
        new._starts = list(self._starts)
        new._next_index = dict(self._next_index)
        return new
