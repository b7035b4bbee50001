"""How a command-line run ends when something outside it fails: never with a traceback.

- A `MilpVerifyError` (a user mistake or a solver failure) is one line
  `milpverify: error: ...` on stderr, exit code 1.
- A failed write (read-only or full disk, a full standard output) is one such line naming
  the path and the reason, exit code 1.
- A closed pipe (`milpverify info default | head -1`) ends quietly, as Unix tools do, with
  exit code 141 (128 + SIGPIPE, what a shell reports for a tool killed by a closed pipe).
- Ctrl-C ends with one line saying that the finished rows are kept and how to resume,
  exit code 130 (128 + SIGINT).

`--debug` prints the traceback as well.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, TextIO

from milpverify.errors import MilpVerifyError

PROG = "milpverify"

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

#: Errors that mean "the file cannot be written" rather than "the file is not there".
_WRITE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EISDIR,
                 errno.EFBIG, errno.EDQUOT, errno.ENOTDIR, errno.ETXTBSY}


class StreamWriteError(Exception):
    """Writing to standard output failed (other than a closed pipe)."""

    def __init__(self, name: str, cause: OSError) -> None:
        super().__init__(f"cannot write {name}: {cause.strerror or cause}")


class _GuardedStream:
    """A text stream whose failed writes raise `StreamWriteError` naming the stream.

    Without it a full `/dev/full` as stdout surfaces as a bare `OSError` from some
    `print`, and nothing tells it apart from a failed results file.
    """

    def __init__(self, stream: TextIO, name: str) -> None:
        self._stream, self._name = stream, name

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise StreamWriteError(self._name, exc) from exc

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise StreamWriteError(self._name, exc) from exc

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _detach_stdout() -> None:
    """Point descriptor 1 at the null device so the exit-time flush cannot fail again."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.__stdout__.fileno())
        os.close(null)


def os_error_message(exc: OSError, out: str | None) -> str:
    """`cannot write 'PATH': reason` for an `OSError` (the path is `out` when the error
    does not name one, as for a write that fails on an already open file)."""
    path = exc.filename if exc.filename is not None else out
    reason = exc.strerror or str(exc)
    verb = "cannot write" if exc.errno in _WRITE_ERRNOS or exc.filename is None else "cannot open"
    where = f" {str(path)!r}" if path is not None else ""
    return f"{verb}{where}: {reason}"


def interrupted_message(out: str | None, resumable: bool) -> str:
    """The line printed after Ctrl-C."""
    if out and resumable:
        return (f"interrupted; the finished rows are kept in {out!r}: run the same command "
                "again to resume")
    return "interrupted"


def _error(message: str) -> None:
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)


def run_guarded(command: Callable[[], int], *, debug: bool = False, out: str | None = None,
                resumable: bool = False) -> int:
    """Run `command` (a subcommand) and turn every way it can fail into an exit code.

    `out` is the command's output path (named when a write fails without a path of its
    own); `resumable` says whether rerunning the command resumes (it prints the hint).
    """
    saved = sys.stdout
    sys.stdout = _GuardedStream(saved, "standard output")  # type: ignore[assignment]
    try:
        code = command()
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        _detach_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(f"\n{PROG}: {interrupted_message(out, resumable)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except StreamWriteError as exc:
        _detach_stdout()
        _error(str(exc))
        return EXIT_ERROR
    except (MilpVerifyError, OSError) as exc:
        if debug:
            traceback.print_exc()
        _error(os_error_message(exc, out) if isinstance(exc, OSError) else str(exc))
        return EXIT_ERROR
    finally:
        sys.stdout = saved
