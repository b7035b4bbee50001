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

import argparse
import contextlib
import difflib
import errno
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn, TextIO

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


class _MilpverifyOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.name == PROG or record.name.startswith(PROG + ".")


class _OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{PROG}: {record.levelname.lower()}: {' '.join(record.getMessage().split())}"


@contextlib.contextmanager
def cli_logging(verbose: bool = False) -> Any:
    """Print milpverify's log records on stderr as `milpverify: warning: ...` lines.

    Warnings always (e.g. a network that misclassifies most of the selected images);
    with `verbose` also info and debug records (rejected witnesses, solver stages).
    Records logged inside a batch task go to the run's log file instead (see
    `milpverify.runs.tasks`). The handler sits on the root logger, so the task capture,
    which stops propagation, keeps them off the terminal.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLine())
    handler.addFilter(_MilpverifyOnly())
    root, logger = logging.getLogger(), logging.getLogger(PROG)
    saved = logger.level
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING)
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        logger.setLevel(saved)


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
                resumable: bool = False, verbose: bool = False) -> int:
    """Run `command` (a subcommand) and turn every way it can fail into an exit code.

    `out` is the command's output path (named when a write fails without a path of its
    own); `resumable` says whether rerunning the command resumes (it prints the hint);
    `verbose` shows info and debug log records (`cli_logging`).
    """
    saved = sys.stdout
    sys.stdout = _GuardedStream(saved, "standard output")  # type: ignore[assignment]
    try:
        with cli_logging(verbose):
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
    except UsageError as exc:  # a flag combination found wrong after parsing
        _error(str(exc))
        return EXIT_USAGE
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


# ---------------------------------------------------------------------------- usage errors
class UsageError(Exception):
    """A command line argparse rejects; `main` prints it as one line and exits 2."""


class OneLineParser(argparse.ArgumentParser):
    """An `ArgumentParser` whose errors are one `milpverify: error:` line, without the usage
    dump (`--help` shows that); the caller adds the nearest flag for a typo."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.split(" ", 1)[1] if " " in self.prog else ""
        hint = f"'{PROG} {command} --help'" if command else f"'{PROG} --help'"
        suggestion = ""
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)$", message)
        if choice:
            options = re.findall(r"'([^']*)'", choice.group(2))
            match = difflib.get_close_matches(choice.group(1), options, n=1, cutoff=0.6)
            suggestion = f"did you mean '{match[0]}'? " if match else ""
        raise UsageError(f"{message} ({suggestion}see {hint})")


def nearest_flags(extras: list[str], parser: argparse.ArgumentParser) -> str:
    """' (did you mean --x?)' for the first unknown `--flag` of `extras` close to a known one."""
    known = [o for action in parser._actions for o in action.option_strings
             if o.startswith("--")]
    for token in extras:
        flag = token.split("=", 1)[0]
        if flag.startswith("--"):
            match = difflib.get_close_matches(flag, known, n=1, cutoff=0.75)
            if match:
                return f" (did you mean {match[0]}?)"
    return ""


class DeprecatedFlag(argparse.Action):
    """An old spelling of a flag: stores into the new flag's destination and warns once.

    `argparse.SUPPRESS` keeps it out of `--help`; the note names the spelling to use.
    """

    def __init__(self, option_strings: list[str], dest: str, *, new: str, **kwargs: Any) -> None:
        self.new = new
        kwargs.setdefault("help", argparse.SUPPRESS)
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        print(f"{PROG}: warning: {option_string} is deprecated; use {self.new}",
              file=sys.stderr)
        setattr(namespace, self.dest, True if self.nargs == 0 else values)


def add_deprecated(parser: argparse.ArgumentParser, old: str, new: str, dest: str,
                   **kwargs: Any) -> None:
    """Accept `old` as a deprecated spelling of `new` (same destination `dest`)."""
    parser.add_argument(old, action=DeprecatedFlag, new=new, dest=dest,
                        default=argparse.SUPPRESS, **kwargs)
