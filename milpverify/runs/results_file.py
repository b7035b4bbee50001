"""The resumable results CSV: one fsynced row per task, a partial last line recovered on resume."""

from __future__ import annotations

import contextlib
import csv
import io
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from milpverify.errors import InvalidInputError

#: Columns of results.csv, in order. Timing columns vary between runs; the rest do not
#: (for deterministic estimators).
COLUMNS = ("index", "label", "pred", "method", "lower", "upper", "status", "witness_verified",
           "adversarial_label", "seconds", "bounds_s", "build_s", "solve_s", "total_s",
           "binaries", "unstable_relus", "nodes", "witness_rejections", "message")

#: Columns of files written before `witness_rejections` existed; such a file is upgraded
#: (rewritten with an empty `witness_rejections` cell per row) when a run resumes it.
LEGACY_COLUMNS = tuple(c for c in COLUMNS if c != "witness_rejections")


TIMING_COLUMNS = ("seconds", "bounds_s", "build_s", "solve_s", "total_s")


# ---------------------------------------------------------------------------- results file
def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(float(value))  # numpy floats too, without their type name
    return " ".join(str(value).split())  # one physical line per row, always


def _parse_row(raw: Mapping[str, str]) -> dict[str, Any]:
    """Typed row from CSV text (empty cells become None)."""
    def opt(text: str, kind: Callable[[str], Any]) -> Any:
        return None if text == "" else kind(text)

    row: dict[str, Any] = {k: raw[k] for k in COLUMNS}
    for key in ("index", "label", "pred"):
        row[key] = int(raw[key])
    row["adversarial_label"] = opt(raw["adversarial_label"], int)
    row["witness_verified"] = raw["witness_verified"] == "True"
    for key in ("lower", "upper", *TIMING_COLUMNS):
        row[key] = opt(raw[key], float)
    for key in ("binaries", "unstable_relus", "nodes", "witness_rejections"):
        row[key] = opt(raw.get(key) or "", lambda t: int(float(t)))
    return row


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file, fsync and rename (all or nothing)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class ResultsFile:
    """An append-only results CSV: recovered on open, one fsynced line per row.

    The one writer of every run that must survive a kill (`evaluate`, `rho`, `vnncomp`).
    On open an existing file is read; a last line without its newline (the run was killed
    mid-write) is dropped and the file rewritten atomically without it. Rows are kept by
    their `key` columns; when a key appears twice, the later line (a retry or a rerun)
    wins. Any other malformed line is an error: the file is not ours to repair.

    Parameters
    ----------
    path : Path
        The CSV file; created with its header if missing.
    columns : sequence of str
        The columns of a new file, in order (default: `evaluate`'s `COLUMNS`).
    key : sequence of str
        The columns that name a row (default ``("index", "method")``).
    parse : callable, optional
        Typed row from the CSV text of one row (default `_parse_row` for `COLUMNS`; None
        keeps the text).
    adopt_header : bool
        False (default): an existing file must start with `columns` (or the legacy
        layout, which is upgraded). True: an existing file's own header is kept and rows are
        written in its columns (cells it lacks are dropped, columns it has and a row lacks
        stay empty), for files older versions wrote.
    """

    def __init__(self, path: Path, columns: Sequence[str] = COLUMNS,
                 key: Sequence[str] = ("index", "method"),
                 parse: Callable[[Mapping[str, str]], dict[str, Any]] | None = _parse_row,
                 adopt_header: bool = False) -> None:
        self.path = path
        self.columns = tuple(columns)
        self.key_columns = tuple(key)
        self._parse = parse if parse is not None else dict
        self.adopt_header = adopt_header
        self.rows: dict[tuple[Any, ...], dict[str, Any]] = {}
        self.dropped_partial = False
        if not path.exists() or path.stat().st_size == 0:
            atomic_write(path, self._header().encode())
        else:
            self._recover()
        # Held open for the whole run (closed by `close`): one append handle, no reopen per row.
        self._file = open(path, "a", encoding="utf-8", newline="")  # noqa: SIM115

    def _header(self) -> str:
        return ",".join(self.columns) + "\n"

    def key(self, row: Mapping[str, Any]) -> tuple[Any, ...]:
        """The row's key: its `key` columns (typed as `parse` types them)."""
        return tuple(row.get(c) for c in self.key_columns)

    def _recover(self) -> None:
        text = self.path.read_text(encoding="utf-8")
        if not text.endswith("\n"):
            text = text[: text.rfind("\n") + 1]  # drop the truncated last line
            self.dropped_partial = True
        if text and self.adopt_header:
            self.columns = tuple(next(csv.reader([text[: text.index("\n")]])))
        legacy = ",".join(LEGACY_COLUMNS) + "\n"
        if not text:
            text = self._header()
        elif self.columns == COLUMNS and text.startswith(legacy):
            text = self._upgrade(text)
        elif not text.startswith(self._header()):
            raise InvalidInputError(
                f"{str(self.path)!r} does not start with the expected header "
                f"({self._header().strip()!r}); it was written by another program or version. "
                "Use another output path or --rerun to start over.")
        for n, raw in enumerate(csv.DictReader(io.StringIO(text)), start=2):
            if None in raw or any(v is None for v in raw.values()):
                raise InvalidInputError(f"{str(self.path)!r} line {n} has the wrong number of "
                                        "fields; use --rerun to start over.")
            try:
                row = self._parse(raw)
            except ValueError as exc:
                raise InvalidInputError(f"{str(self.path)!r} line {n} cannot be read ({exc}); "
                                        "use --rerun to start over.") from exc
            self.rows[self.key(row)] = row  # a later line of the same key wins
        if self.dropped_partial:
            atomic_write(self.path, text.encode())

    def _upgrade(self, text: str) -> str:
        """Rewrite a file with `LEGACY_COLUMNS` in the current layout (nothing is lost)."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(COLUMNS)
        for raw in csv.DictReader(io.StringIO(text)):
            writer.writerow([raw.get(c) or "" for c in COLUMNS])
        atomic_write(self.path, buf.getvalue().encode())
        return buf.getvalue()

    def append(self, row: Mapping[str, Any]) -> None:
        """Write one row as one line, flush and fsync; skip rows whose key is present."""
        line = self._line(row)
        parsed = self._parse(line)
        if self.key(parsed) not in self.rows:
            self._write(line, parsed)

    def replace(self, row: Mapping[str, Any]) -> None:
        """A retried or rerun row: appended like `append`, and it wins over the earlier line
        of its key when the file is read (`_recover`)."""
        line = self._line(row)
        self._write(line, self._parse(line))

    def _line(self, row: Mapping[str, Any]) -> dict[str, str]:
        return {c: _format(row.get(c)) for c in self.columns}

    def _write(self, line: dict[str, str], parsed: dict[str, Any]) -> None:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(line.values())
        self._file.write(buf.getvalue())
        self._file.flush()
        os.fsync(self._file.fileno())
        self.rows[self.key(parsed)] = parsed

    def close(self) -> None:
        """Close the file handle."""
        self._file.close()
