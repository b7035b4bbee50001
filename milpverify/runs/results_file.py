"""The resumable results CSV: one fsynced row per task, a partial last line recovered on resume."""

from __future__ import annotations

import contextlib
import csv
import io
import os
from collections.abc import Callable, Mapping
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
        return repr(value)
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
    """The append-only results CSV: recovered on open, one fsynced line per row.

    On open an existing file is read; a last line without its newline (the run was killed
    mid-write) is dropped and the file rewritten atomically without it. When an (index,
    method) appears twice, the later line (a retry) wins. Any other
    malformed line is an error: the file is not ours to repair.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[tuple[int, str], dict[str, Any]] = {}
        self.dropped_partial = False
        header = ",".join(COLUMNS) + "\n"
        if not path.exists():
            atomic_write(path, header.encode())
        else:
            self._recover(header)
        # Held open for the whole run (closed by `close`): one append handle, no reopen per row.
        self._file = open(path, "a", encoding="utf-8", newline="")  # noqa: SIM115

    def _recover(self, header: str) -> None:
        text = self.path.read_text(encoding="utf-8")
        if not text.endswith("\n"):
            text = text[: text.rfind("\n") + 1]  # drop the truncated last line
            self.dropped_partial = True
        legacy = ",".join(LEGACY_COLUMNS) + "\n"
        if not text:
            text = header
        elif text.startswith(legacy):
            text = self._upgrade(text)
        elif not text.startswith(header):
            raise InvalidInputError(
                f"{str(self.path)!r} does not start with the expected header ({header.strip()!r}); "
                "it was written by another program or version. Use another output path or "
                "--rerun to start over.")
        for n, raw in enumerate(csv.DictReader(io.StringIO(text)), start=2):
            if None in raw or any(v is None for v in raw.values()):
                raise InvalidInputError(f"{str(self.path)!r} line {n} has the wrong number of "
                                        "fields; use --rerun to start over.")
            try:
                row = _parse_row(raw)
            except ValueError as exc:
                raise InvalidInputError(f"{str(self.path)!r} line {n} cannot be read ({exc}); "
                                        "use --rerun to start over.") from exc
            # A later row of the same (index, method) is a retry (`replace`).
            self.rows[(row["index"], row["method"])] = row
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
        """Write one row as one line, flush and fsync; skip rows already present."""
        if (int(row["index"]), str(row["method"])) in self.rows:
            return
        self._write(row)

    def replace(self, row: Mapping[str, Any]) -> None:
        """A retried row: appended like `append`, and it wins over the earlier line of its
        (index, method) when the file is read (`_recover`)."""
        self._write(row)

    def _write(self, row: Mapping[str, Any]) -> None:
        key = (int(row["index"]), str(row["method"]))
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow([_format(row.get(c)) for c in COLUMNS])
        self._file.write(buf.getvalue())
        self._file.flush()
        os.fsync(self._file.fileno())
        self.rows[key] = _parse_row(dict(zip(COLUMNS, next(csv.reader([buf.getvalue()])),
                                             strict=True)))

    def close(self) -> None:
        """Close the file handle."""
        self._file.close()
