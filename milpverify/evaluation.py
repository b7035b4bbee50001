"""Dataset runs: rho by several estimators over many images, resumable and parallel.

One runner (`run`) serves `evaluate` (a run directory with results, summary and figures) and
`rho_table` (one CSV of exact rho). Rows are computed by `run_task` in this process, in a
spawned process pool, or as Ray tasks, and written only by this process, one complete
line per `write` followed by flush and `os.fsync`, so a killed run loses only in-flight
rows. Rerunning the same command skips the (index, method) rows already written.

(The module is not called ``evaluate`` because ``milpverify.evaluate`` is the function.)
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import hashlib
import importlib.metadata
import inspect
import io
import json
import logging
import math
import os
import platform
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from milpverify.datasets import (DATA_DIR, DEFAULT_IMAGES, DEFAULT_NET, embedded_net, load_npz,
                                 parse_indices)
from milpverify.errors import InvalidInputError, SolverError
from milpverify.ir.network import Network
from milpverify.metrics import MethodSummary, combine, summarize, summary_table

#: Estimators `evaluate` knows, in the order they are run for each image.
METHODS = ("exact", "lp", "pgd", "fgsm", "lbfgs")
#: Methods that need torch (their versions are recorded only when one of them runs).
TORCH_METHODS = frozenset({"pgd", "fgsm", "lbfgs"})
DEFAULT_METHODS = ("exact", "lp", "pgd", "fgsm")
#: Columns of results.csv, in order. Timing columns vary between runs; the rest do not
#: (for deterministic estimators).
COLUMNS = ("index", "label", "pred", "method", "lower", "upper", "status", "witness_verified",
           "adversarial_label", "seconds", "bounds_s", "build_s", "solve_s", "total_s",
           "binaries", "unstable_relus", "nodes", "message")
TIMING_COLUMNS = ("seconds", "bounds_s", "build_s", "solve_s", "total_s")
#: run.json options that must match for a rerun to resume (they change the rows or the summary).
RESUME_KEYS = ("command", "model", "data", "pixel_divisor", "eps", "eps_cap", "time_limit_s",
               "methods", "backend", "domain", "method_options", "property")
#: Environment of worker processes: one BLAS / OpenMP thread each (workers are the parallelism).
WORKER_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- the run spec
@dataclass(frozen=True)
class RunSpec:
    """Everything a worker needs to compute one row: validated, picklable, JSON-ready.

    `model_path` / `data_path` are absolute; `data_path` is None for the embedded images.
    `method_options[m]` are extra keyword arguments of method m's function.
    `property` is None (plain rho) or a `properties.parse_property` string ("topk:K",
    "affinity:/absolute/groups.json"); the exact method then computes `rho_property`.
    """

    command: str
    model: str
    model_path: str
    data_path: str | None
    pixel_divisor: float
    eps: float | None
    eps_cap: float | None
    time_limit_s: float
    methods: tuple[str, ...]
    backend: str = "scip"
    domain: tuple[float, float] = (0.0, 1.0)
    method_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    property: str | None = None

    def options(self) -> dict[str, Any]:
        """The options recorded in run.json and compared on resume."""
        return {
            "command": self.command, "model": _file_id(self.model_path),
            "data": _file_id(self.data_path) if self.data_path else "embedded:" + DEFAULT_IMAGES,
            "model_arg": self.model, "model_path": self.model_path, "data_path": self.data_path,
            "pixel_divisor": self.pixel_divisor, "eps": self.eps, "eps_cap": self.eps_cap,
            "time_limit_s": self.time_limit_s, "methods": list(self.methods),
            "backend": self.backend, "domain": list(self.domain),
            "method_options": {m: dict(o) for m, o in sorted(self.method_options.items())},
            # The parsed property's name (groups and semantics, not the file's path).
            "property": parsed_property(self.property).name if self.property else None,
        }


@lru_cache(maxsize=16)
def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _file_id(path: str) -> str:
    """`sha256:<hex>` of a file: the identity of a model or data set across paths."""
    return "sha256:" + _sha256(path)


def _resolve_model(model: str | os.PathLike[str]) -> tuple[str, str, float]:
    """(model argument, absolute ONNX path, default pixel divisor)."""
    text = os.fspath(model)
    if text == "default" or text.startswith("default:"):
        entry = embedded_net(text.partition(":")[2] or DEFAULT_NET)
        return text, str(entry.path), entry.pixel_divisor
    path = Path(text)
    if not path.is_file():
        raise InvalidInputError(f"Model file not found: {text!r}; pass an .onnx file or "
                                "'default' for the embedded network.")
    return text, str(path.resolve()), 255.0


# ---------------------------------------------------------------------------- worker side
_LOADED: dict[tuple[str, str | None, float], tuple[Network, npt.NDArray[np.float64],
                                                   npt.NDArray[np.int64]]] = {}


def load_inputs(spec: RunSpec) -> tuple[Network, npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """The network and the *whole* data set (scaled), cached per process."""
    key = (spec.model_path, spec.data_path, spec.pixel_divisor)
    if key not in _LOADED:
        from milpverify.frontends.onnx import load_onnx
        data = spec.data_path or str(DATA_DIR / DEFAULT_IMAGES)
        images, labels = load_npz(data, pixel_divisor=spec.pixel_divisor)
        _LOADED[key] = (load_onnx(spec.model_path), images, labels)
    return _LOADED[key]


@lru_cache(maxsize=8)
def parsed_property(spec: str) -> Any:
    """`properties.parse_property(spec)`, once per process (it may read a groups file)."""
    from milpverify.properties import parse_property
    return parse_property(spec)


def method_function(method: str, prop: str | None = None
                    ) -> tuple[Callable[..., Any], dict[str, Any]]:
    """The function computing `method` and its base keyword arguments (before options).

    With a property (`RunSpec.property`) the exact method is `rho_property` for it.
    """
    if method == "exact" and prop:
        from milpverify.properties import rho_property
        return rho_property, {"threads": 1, "prop": parsed_property(prop)}
    if method == "exact":
        from milpverify.verify import rho
        return rho, {"threads": 1}
    if method == "lp":
        from milpverify.restriction import lp_restriction
        return lp_restriction, {"target": "all"}
    from milpverify import attacks
    if method in ("pgd", "fgsm", "lbfgs"):
        return getattr(attacks, method), {}
    raise InvalidInputError(f"Unknown method {method!r}; choose from {', '.join(METHODS)}.")


class _Collect(logging.Handler):
    """Keeps the messages of milpverify's loggers during one task (they go to the run log)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.levelname.lower()}: {record.getMessage()}")


@contextlib.contextmanager
def _captured_logs() -> Iterator[list[str]]:
    """Route milpverify log records and warnings of one task into a list (not stderr).

    Keeps the progress bar readable: witness rejections can log dozens of lines per image.
    """
    logger = logging.getLogger("milpverify")
    handler, propagate = _Collect(), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield handler.messages
        finally:
            logger.removeHandler(handler)
            logger.propagate = propagate
            handler.messages.extend(f"warning: {w.message}" for w in caught)


@dataclass(frozen=True)
class TaskResult:
    """One computed row, its witness (or None) and the log lines of its computation."""

    row: dict[str, Any]
    witness: npt.NDArray[np.float64] | None
    logs: list[str]


def run_task(spec: RunSpec, index: int, method: str) -> TaskResult:
    """Compute the row of (image `index`, `method`). Never raises for a bad solve.

    An exception inside the estimator becomes a row with status ``error`` and the
    exception in `message` (bracket [0, inf]), so one bad image does not stop a run.
    """
    net, images, labels = load_inputs(spec)
    x = images[index]
    pred = int(np.argmax(net.forward(x)[0]))
    row: dict[str, Any] = {"index": int(index), "label": int(labels[index]), "pred": pred,
                           "method": method}
    fn, kwargs = method_function(method, spec.property)
    kwargs = {**kwargs, "domain": spec.domain, **spec.method_options.get(method, {})}
    if method == "exact":
        kwargs.update(eps_cap=spec.eps_cap, time_limit_s=spec.time_limit_s,
                      backend=spec.backend)
    witness = None
    start = time.perf_counter()
    with _captured_logs() as logs:
        try:
            result = fn(net, x, **kwargs)
        except Exception as exc:  # noqa: BLE001 - recorded as an error row, see docstring
            row.update(lower=0.0, upper=math.inf, status="error", witness_verified=False,
                       adversarial_label=None,
                       message=f"{type(exc).__name__}: {exc}")
        else:
            row.update(lower=float(result.lower), upper=float(result.upper),
                       status=str(result.status), witness_verified=bool(result.witness_verified),
                       adversarial_label=result.adversarial_label, message=result.message)
            for key in ("bounds_s", "build_s", "solve_s", "total_s"):
                row[key] = result.timings.get(key)
            for key in ("binaries", "unstable_relus", "nodes"):
                row[key] = result.stats.get(key)
            if result.witness is not None and result.witness_verified:
                witness = np.asarray(result.witness, dtype=np.float64).reshape(x.shape)
    row["seconds"] = time.perf_counter() - start
    return TaskResult(row, witness, logs)


def _init_worker() -> None:
    """Process-pool initializer: die with the parent (Linux), one thread per library."""
    os.environ.update(WORKER_ENV)
    if sys.platform.startswith("linux"):
        import ctypes
        import signal
        with contextlib.suppress(OSError, AttributeError):
            # PR_SET_PDEATHSIG = 1: a SIGKILLed parent must not leave solvers running.
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


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
    for key in ("binaries", "unstable_relus", "nodes"):
        row[key] = opt(raw[key], lambda t: int(float(t)))
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
    mid-write) is dropped and the file rewritten atomically without it. Any other
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
        if not text:
            text = header
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
            # A duplicate can only come from outside edits; the first row wins.
            self.rows.setdefault((row["index"], row["method"]), row)
        if self.dropped_partial:
            atomic_write(self.path, text.encode())

    def append(self, row: Mapping[str, Any]) -> None:
        """Write one row as one line, flush and fsync; skip rows already present."""
        key = (int(row["index"]), str(row["method"]))
        if key in self.rows:
            return
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


# ---------------------------------------------------------------------------- layout, run.json
@dataclass(frozen=True)
class Layout:
    """Where a run writes: results CSV, run.json, witnesses, log, and (evaluate) the report."""

    results: Path
    run_json: Path
    witnesses: Path
    adversarial: Path
    log: Path
    lock: Path
    report_dir: Path | None = None

    @classmethod
    def run_dir(cls, out: Path) -> Layout:
        """`evaluate`: everything inside the directory `out`."""
        return cls(out / "results.csv", out / "run.json", out / "witnesses",
                   out / "adversarial.npz", out / "run.log", out / ".lock", out)

    @classmethod
    def csv_file(cls, out: Path) -> Layout:
        """`rho_table`: `out` is the CSV; the rest sits beside it as `<stem>.*`."""
        stem = out.with_suffix("")
        return cls(out, Path(f"{stem}.run.json"), Path(f"{stem}.witnesses"),
                   Path(f"{stem}.adversarial.npz"), Path(f"{stem}.log"), Path(f"{stem}.lock"))

    def all_files(self) -> list[Path]:
        """Files and folders a `--rerun` removes."""
        files = [self.results, self.run_json, self.witnesses, self.adversarial, self.log]
        if self.report_dir is not None:
            files += [self.report_dir / n for n in ("summary.md", "rho_cdf.png",
                                                    "adversarial_examples.png")]
        return files


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


@lru_cache(maxsize=1)
def scip_version() -> str | None:
    """SCIP's own version (pyscipopt `Model().version()`), or None without pyscipopt.

    Asked in a child interpreter: pyscipopt is confined to `milpverify.solve.scip`, and
    the parent of a process-pool run never needs to load it.
    """
    code = "import pyscipopt; print(pyscipopt.Model().version())"
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=60, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or None


def environment(methods: Sequence[str], ray_used: bool) -> dict[str, Any]:
    """Versions and machine facts for run.json (torch only when a torch method runs)."""
    from milpverify import __version__
    versions: dict[str, Any] = {
        "milpverify": __version__, "python": platform.python_version(),
        "numpy": _version("numpy"), "scipy": _version("scipy"),
        "onnxruntime": _version("onnxruntime"), "pyscipopt": _version("pyscipopt"),
        "scip": scip_version() if "exact" in methods else None,
        "highspy": _version("highspy") if "lp" in methods else None,
    }
    if TORCH_METHODS & set(methods):
        versions["torch"] = _version("torch")
    if ray_used:
        versions["ray"] = _version("ray")
    affinity = getattr(os, "sched_getaffinity", None)
    machine = {"platform": platform.platform(), "host": platform.node(),
               "cpu_count": os.cpu_count(),
               "cpus_usable": len(affinity(0)) if affinity else os.cpu_count(),
               "cpu_model": _cpu_model()}
    return {"versions": {k: v for k, v in versions.items() if v is not None},
            "machine": machine}


def _check_resume(previous: Mapping[str, Any], options: Mapping[str, Any], path: Path) -> None:
    old = previous.get("options", {})
    diffs = [f"`{k}` was {old.get(k)!r}, now {options.get(k)!r}"
             for k in RESUME_KEYS if old.get(k) != options.get(k)]
    if diffs:
        raise InvalidInputError(
            f"Cannot resume the run in {str(path.parent)!r}: its options differ "
            f"({'; '.join(diffs)}). Use another output path, the same options, or --rerun "
            "to discard the existing results.")


# ---------------------------------------------------------------------------- executors
TaskList = list[tuple[int, str]]


def _serial(spec: RunSpec, tasks: TaskList) -> Iterator[TaskResult]:
    for index, method in tasks:
        yield run_task(spec, index, method)


@contextlib.contextmanager
def _worker_environment() -> Iterator[None]:
    """Set `WORKER_ENV` while workers are spawned (they read it before importing numpy)."""
    saved = {k: os.environ.get(k) for k in WORKER_ENV}
    os.environ.update(WORKER_ENV)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _process_pool(spec: RunSpec, tasks: TaskList, workers: int) -> Iterator[TaskResult]:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    # spawn: a fresh interpreter per worker (no forked SCIP / torch / onnxruntime state).
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context,
                               initializer=_init_worker)
    try:
        # Spawned workers start inside `submit`; they must see WORKER_ENV before numpy loads.
        with _worker_environment():
            pending = {pool.submit(run_task, spec, i, m) for i, m in tasks}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
    except BrokenProcessPool as exc:
        pool.shutdown(wait=False, cancel_futures=True)
        raise SolverError(f"A worker process died ({exc}); the rows written so far are kept. "
                          "Rerun the same command to resume.") from exc
    except BaseException:
        # Interrupted (Ctrl-C, or the consumer failed): do not wait for running solves.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _ray_tasks(spec: RunSpec, tasks: TaskList, address: str, workers: int
               ) -> Iterator[TaskResult]:
    try:
        import ray
    except ImportError as exc:
        raise SolverError("--ray needs the ray package, which is not installed "
                          "(pip install 'milpverify[ray]').") from exc
    started = False
    if not ray.is_initialized():
        env = {"env_vars": dict(WORKER_ENV)}
        if address == "local":
            ray.init(num_cpus=workers, include_dashboard=False, runtime_env=env,
                     log_to_driver=False)
        else:
            ray.init(address=address, runtime_env=env, log_to_driver=False)
        started = True
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(run_task)
        pending = [remote.remote(spec, i, m) for i, m in tasks]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])
    finally:
        if started:
            ray.shutdown()


# ---------------------------------------------------------------------------- the runner
@dataclass(frozen=True)
class RunResult:
    """What a run produced.

    Attributes
    ----------
    out : Path
        The run directory (`evaluate`) or the CSV (`rho_table`).
    rows : list of dict
        The requested rows (typed; columns `COLUMNS`), sorted by index then method order.
    summaries : dict[str, MethodSummary]
        Per method over all requested points (the paper's population); with the exact
        method and others, also ``"combined"`` (`milpverify.metrics.combine`).
    summaries_correct : dict[str, MethodSummary]
        The same over correctly classified points only.
    computed, skipped : int
        Rows computed by this call, and rows found already written (resumed).
    files : dict[str, Path]
        Files written, by role.
    spec : RunSpec
        The validated options of the run.
    """

    out: Path
    rows: list[dict[str, Any]]
    summaries: dict[str, MethodSummary]
    summaries_correct: dict[str, MethodSummary]
    computed: int
    skipped: int
    files: dict[str, Path]
    spec: RunSpec

    def summary_markdown(self) -> str:
        """The per-method Markdown table (paper's population; distances also in pixels)."""
        return summary_table(self.summaries, pixel_divisor=self.spec.pixel_divisor)


def _check_number(name: str, value: Any, *, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value <= 0:
        raise InvalidInputError(f"`{name}` must be a finite number > 0; got {value!r}.")
    return float(value)


def _methods(methods: str | Sequence[str]) -> tuple[str, ...]:
    items = [m.strip().lower() for m in (methods.split(",") if isinstance(methods, str)
                                         else methods)]
    items = [m for m in items if m]
    unknown = [m for m in items if m not in METHODS]
    if unknown or not items:
        raise InvalidInputError(f"Unknown method(s) {', '.join(map(repr, unknown)) or '(none)'}"
                                f" in `methods`; choose from {', '.join(METHODS)}.")
    if len(set(items)) != len(items):
        raise InvalidInputError(f"`methods` lists a method twice: {items}.")
    return tuple(items)


def _method_options(options: Mapping[str, Mapping[str, Any]] | None, methods: Sequence[str],
                    prop: str | None = None) -> dict[str, dict[str, Any]]:
    """Validate extra keyword arguments per method against each function's signature."""
    checked: dict[str, dict[str, Any]] = {}
    for method, opts in (options or {}).items():
        if method not in methods:
            raise InvalidInputError(f"`method_options` names {method!r}, which is not in "
                                    f"`methods` {list(methods)}.")
        fn, _ = method_function(method, prop)
        params = set(inspect.signature(fn).parameters) - {"net", "x", "prop"}
        # Set by the run's own options; the base defaults of `method_function` may be overridden.
        reserved = {"domain", *(("eps_cap", "time_limit_s", "backend")
                                if method == "exact" else ())}
        bad = sorted(set(opts) - params) + sorted(set(opts) & reserved)
        if bad:
            raise InvalidInputError(
                f"`method_options[{method!r}]` has {bad}, which {fn.__name__} does not take "
                f"here; allowed: {sorted(params - reserved)}.")
        try:
            json.dumps(dict(opts))
        except TypeError as exc:
            raise InvalidInputError(f"`method_options[{method!r}]` must be JSON values "
                                    f"({exc}).") from exc
        checked[method] = dict(opts)
    return checked


def _property_spec(prop: str | None, methods: Sequence[str]) -> str | None:
    """The property string a worker re-parses (an affinity file made absolute), checked now."""
    if prop is None:
        return None
    if not isinstance(prop, str) or not prop.strip():
        raise InvalidInputError(f"`property` must be 'topk:K' or 'affinity:FILE.json'; "
                                f"got {prop!r}.")
    if tuple(methods) != ("exact",):
        raise InvalidInputError(
            f"`property` {prop!r} needs methods 'exact' alone (the exact distance to the "
            f"nearest violation); {', '.join(m for m in methods if m != 'exact')} estimate "
            "plain rho only.")
    kind, _, arg = prop.strip().partition(":")
    if kind == "affinity" and arg:
        prop = f"affinity:{Path(arg).resolve()}"
    parsed_property(prop)  # InvalidInputError for a bad K, a bad or missing groups file
    return prop


def _prepare(command: str, model: str | os.PathLike[str], *, data: str | os.PathLike[str] | None,
             indices: str | Sequence[int] | None, eps: float | None, eps_cap: float | None,
             methods: str | Sequence[str], time_limit_s: float, pixel_divisor: float | None,
             backend: str, method_options: Mapping[str, Mapping[str, Any]] | None,
             workers: int, ray: str | None, prop: str | None = None
             ) -> tuple[RunSpec, list[int]]:
    """The validation front door: every option is checked before anything is computed."""
    model_arg, model_path, default_divisor = _resolve_model(model)
    eps = _check_number("eps", eps, allow_none=command == "rho")
    eps_cap = _check_number("eps_cap", eps_cap, allow_none=True)
    time_limit_s = float(_check_number("time_limit_s", time_limit_s) or 0.0)
    divisor = float(_check_number("pixel_divisor", pixel_divisor, allow_none=True)
                    or default_divisor)
    chosen = _methods(methods)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InvalidInputError(f"`workers` must be an integer >= 1; got {workers!r}.")
    if ray is not None and not (isinstance(ray, str) and ray.strip()):
        raise InvalidInputError(f"`ray` must be 'local', 'auto' or a cluster address; got {ray!r}.")
    if data is None and not model_arg.startswith("default"):
        raise InvalidInputError(f"`data` is required for model {model_arg!r} (an .npz file with "
                                "'images' and 'labels'); only 'default' has embedded images.")
    prop = _property_spec(prop, chosen)
    if "exact" in chosen:
        from milpverify.solve import get_backend
        get_backend(backend)  # an unknown or missing solver is reported now, not per image
    data_path = None
    if data is not None:
        file = Path(os.fspath(data))
        if not file.is_file():
            raise InvalidInputError(f"Data file not found: {os.fspath(data)!r}.")
        data_path = str(file.resolve())
    spec = RunSpec(command, model_arg, model_path, data_path, divisor, eps,
                   eps_cap if eps_cap is not None or command == "rho" else eps,
                   time_limit_s, chosen, backend, (0.0, 1.0),
                   _method_options(method_options, chosen, prop), prop)
    net, images, _ = load_inputs(spec)
    if prop:
        parsed_property(prop).validate(net.num_classes)
    n = len(images)
    if indices is None:
        selected = list(range(n))
    elif isinstance(indices, str):
        selected = parse_indices(indices, n)
    else:
        selected = [int(i) for i in indices]
    if not selected:
        raise InvalidInputError(f"`indices` {indices!r} selects no images (of {n}).")
    bad = [i for i in selected if not 0 <= i < n]
    if bad:
        raise InvalidInputError(f"`indices` {bad[:5]} out of range for {n} images "
                                f"(valid: 0..{n - 1}).")
    if len(set(selected)) != len(selected):
        raise InvalidInputError("`indices` selects an image twice.")
    net.as_batch(images[selected[0]])  # shape check with the network's own message
    lo, hi = spec.domain
    batch = images[selected]
    if batch.min() < lo or batch.max() > hi:
        raise InvalidInputError(
            f"Images divided by `pixel_divisor` {divisor:g} lie in [{batch.min():g}, "
            f"{batch.max():g}], outside the domain [{lo:g}, {hi:g}]; pass the divisor the "
            "network expects (255 for most, 256 for Planet).")
    return spec, selected


def run(spec: RunSpec, selected: Sequence[int], layout: Layout, *, workers: int = 1,
        ray: str | None = None, rerun: bool = False, quiet: bool = False) -> RunResult:
    """Compute every missing (index, method) row of `selected` and return all of them."""
    layout.results.parent.mkdir(parents=True, exist_ok=True)
    if layout.report_dir is not None:
        layout.report_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(layout.lock):
        if rerun:
            _remove(layout.all_files())
        options = spec.options()
        previous = _read_json(layout.run_json)
        if previous is None and layout.results.exists():
            raise InvalidInputError(
                f"{str(layout.results)!r} exists without {layout.run_json.name}, so its options "
                "are unknown; use another output path or --rerun to start over.")
        if previous is not None:
            _check_resume(previous, options, layout.run_json)
        now = _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")
        invocation = {"started": now, "indices": _compact(selected), "workers": workers,
                      "ray": ray, "argv": sys.argv}
        meta = {"format": "milpverify-run/1", "options": options,
                "started": previous["started"] if previous else now,
                "invocations": [*(previous or {}).get("invocations", []), invocation],
                **environment(spec.methods, ray is not None)}
        atomic_write(layout.run_json, (json.dumps(meta, indent=1) + "\n").encode())

        results = ResultsFile(layout.results)
        try:
            tasks = [(i, m) for i in selected for m in spec.methods
                     if (i, m) not in results.rows]
            skipped = len(selected) * len(spec.methods) - len(tasks)
            _execute(spec, tasks, results, layout, workers=workers, ray=ray, quiet=quiet,
                     total=len(selected) * len(spec.methods))
        finally:
            results.close()
    order = {m: k for k, m in enumerate(spec.methods)}
    rows = sorted((results.rows[(i, m)] for i in selected for m in spec.methods),
                  key=lambda r: (r["index"], order[r["method"]]))
    files = {"results": layout.results, "run_json": layout.run_json}
    _write_adversarial(spec, rows, layout)
    if layout.adversarial.exists():
        files["adversarial"] = layout.adversarial
    table, names = rows, list(spec.methods)
    if "exact" in spec.methods and len(spec.methods) > 1:
        # The exact bracket tightened by every method's verified upper bound.
        table, names = [*rows, *combine(rows)], [*names, "combined"]
    return RunResult(layout.results if layout.report_dir is None else layout.report_dir, rows,
                     summarize(table, spec.eps, methods=names),
                     summarize(table, spec.eps, methods=names, population="correct"),
                     len(tasks), skipped, files, spec)


def _compact(selected: Sequence[int]) -> str:
    """`"0:100"` for a contiguous range, else the comma list."""
    s = list(selected)
    if s == list(range(s[0], s[0] + len(s))):
        return f"{s[0]}:{s[0] + len(s)}"
    return ",".join(map(str, s))


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"{str(path)!r} is not readable JSON ({exc}); use --rerun to "
                                "start over.") from exc
    if not isinstance(data, dict) or "options" not in data:
        raise InvalidInputError(f"{str(path)!r} is not a milpverify run file; use another "
                                "output path or --rerun.")
    return data


def _remove(paths: Sequence[Path]) -> None:
    import shutil
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an advisory lock so two runs never append to the same file (released on death)."""
    import fcntl
    with open(lock_path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise InvalidInputError(f"Another milpverify run is writing to "
                                    f"{str(lock_path.parent)!r} (lock {lock_path.name}); wait "
                                    "for it or use another output path.") from exc
        yield


def _execute(spec: RunSpec, tasks: TaskList, results: ResultsFile, layout: Layout, *,
             workers: int, ray: str | None, quiet: bool, total: int) -> None:
    """Run `tasks` on the chosen executor; write each result as it completes."""
    from tqdm import tqdm
    if not tasks:
        return
    counts = {m: sum(1 for (_, mm) in results.rows if mm == m) for m in spec.methods}
    per_method = total // len(spec.methods)
    if ray is not None:
        stream = _ray_tasks(spec, tasks, ray, workers)
    elif workers > 1 and len(tasks) > 1:
        stream = _process_pool(spec, tasks, min(workers, len(tasks)))
    else:
        stream = _serial(spec, tasks)
    bar = tqdm(total=total, initial=total - len(tasks), desc=spec.command, unit="row",
               file=sys.stderr, disable=quiet, dynamic_ncols=True)
    try:
        with open(layout.log, "a", encoding="utf-8") as log_file:
            for result in stream:
                row = result.row
                if result.witness is not None:
                    layout.witnesses.mkdir(exist_ok=True)
                    buf = io.BytesIO()
                    np.save(buf, result.witness)
                    atomic_write(layout.witnesses / f"{row['index']}_{row['method']}.npy",
                                 buf.getvalue())
                results.append(row)
                if result.logs:
                    log_file.writelines(f"[{row['index']} {row['method']}] {line}\n"
                                        for line in result.logs)
                    log_file.flush()
                counts[row["method"]] += 1
                bar.set_postfix_str(" ".join(f"{m} {c}/{per_method}"
                                             for m, c in counts.items()), refresh=False)
                bar.update(1)
    finally:
        bar.close()
        if hasattr(stream, "close"):
            stream.close()


def _witnesses(spec: RunSpec, rows: Sequence[Mapping[str, Any]], layout: Layout
               ) -> list[tuple[Mapping[str, Any], npt.NDArray[np.float64]]]:
    found = []
    for row in rows:
        path = layout.witnesses / f"{row['index']}_{row['method']}.npy"
        if row["witness_verified"] and path.exists():
            found.append((row, np.load(path, allow_pickle=False)))
    return found


def _write_adversarial(spec: RunSpec, rows: Sequence[Mapping[str, Any]], layout: Layout) -> None:
    """adversarial.npz: every verified witness of the requested rows, with its original."""
    found = _witnesses(spec, rows, layout)
    if not found:
        return
    _, images, _ = load_inputs(spec)
    arrays: dict[str, Any] = {
        "index": np.asarray([r["index"] for r, _ in found], dtype=np.int64),
        "method": np.asarray([r["method"] for r, _ in found], dtype=str),
        "label": np.asarray([r["label"] for r, _ in found], dtype=np.int64),
        "pred": np.asarray([r["pred"] for r, _ in found], dtype=np.int64),
        "adversarial_label": np.asarray([r["adversarial_label"] for r, _ in found],
                                        dtype=np.int64),
        "distance": np.asarray([r["upper"] for r, _ in found], dtype=np.float64),
        "witness": np.stack([w for _, w in found]),
        "original": np.stack([images[r["index"]] for r, _ in found]),
    }
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write(layout.adversarial, buf.getvalue())


# ---------------------------------------------------------------------------- reports
def _report(spec: RunSpec, result: RunResult, layout: Layout, selected: Sequence[int]) -> None:
    """summary.md and the two figures of an `evaluate` run directory."""
    from milpverify import plots
    assert layout.report_dir is not None
    out = layout.report_dir
    cdf = out / "rho_cdf.png"
    grid = out / "adversarial_examples.png"
    plots.plot_rho_cdf(result.rows, methods=spec.methods, eps=spec.eps,
                       pixel_divisor=spec.pixel_divisor, path=cdf)
    preference = {m: k for k, m in enumerate(spec.methods)}
    best: dict[int, tuple[Mapping[str, Any], npt.NDArray[np.float64]]] = {}
    for row, w in _witnesses(spec, result.rows, layout):
        current = best.get(row["index"])
        if current is None or (row["upper"], preference[row["method"]]) < \
                (current[0]["upper"], preference[current[0]["method"]]):
            best[row["index"]] = (row, w)
    _, images, _ = load_inputs(spec)
    chosen = [best[i] for i in sorted(best)][:8]
    plots.plot_adversarial_grid(
        [images[r["index"]] for r, _ in chosen], [w for _, w in chosen],
        [(f"#{r['index']}: label {r['label']}, predicted {r['pred']}",
          f"{r['method']}: {r['adversarial_label']} at ρ ≤ {r['upper']:.4g} "
          f"({r['upper'] * spec.pixel_divisor:.3g} px)") for r, _ in chosen],
        domain=spec.domain, path=grid)
    eps = spec.eps
    assert eps is not None
    lines = [
        "# milpverify evaluate",
        "",
        f"- model: `{spec.model}` ({spec.model_path})",
        f"- data: `{spec.data_path or 'embedded ' + DEFAULT_IMAGES}`, {len(selected)} images "
        f"({_compact(selected)}), pixels / {spec.pixel_divisor:g}",
        f"- ε = {eps:g} ({eps * spec.pixel_divisor:.3g} pixels); exact: eps_cap = "
        f"{spec.eps_cap}, time limit {spec.time_limit_s:g} s per image, backend {spec.backend}",
        f"- property: {spec.options()['property'] or 'plain robustness (top-1 label)'}"
        + (" — ρ is the distance to the nearest input violating it" if spec.property else ""),
        f"- rows: {len(result.rows)} ({result.computed} computed now, {result.skipped} resumed)",
        "",
        "## All evaluated points (Bastani et al. 2016, §2)",
        "",
        result.summary_markdown(),
        "",
        "## Correctly classified points only",
        "",
        summary_table(result.summaries_correct, pixel_divisor=spec.pixel_divisor),
        "",
        "## Definitions",
        "",
        "φ(ε) = |{x : ρ(x) ≤ ε}| / |X| and μ(ε) = mean of ρ(x) over {x : ρ(x) ≤ ε}, with ρ "
        "measured against the *predicted* label and X all evaluated points (the paper's "
        "estimators; it does not drop misclassified points). The second table restricts X "
        "to correctly classified points.",
        "",
        "Heuristics (lp, pgd, fgsm, lbfgs) use their estimate ρ̂ = upper bound (∞ when "
        "nothing was found), so their φ is a lower bound of the true φ. The exact method "
        "uses the proven bracket [lower, upper]: a point counts as certainly adversarial at "
        "ε when upper ≤ ε, certainly not when lower > ε (or ρ > lower = ε was proven, status "
        "robust_at_cap), and unknown otherwise; φ and μ are then printed as [min, max] over "
        "all values consistent with the brackets (see `milpverify.metrics`). Error rows "
        "count as unknown. The row `combined` (when the exact method ran with others) is the "
        "exact bracket with its upper end lowered to the best verified upper bound of any "
        "method.",
        "",
        "![ρ CDF](rho_cdf.png)",
        "",
        "![adversarial examples](adversarial_examples.png)",
        "",
    ]
    atomic_write(out / "summary.md", "\n".join(lines).encode())
    result.files.update(summary=out / "summary.md", rho_cdf=cdf, adversarial_examples=grid)


# ---------------------------------------------------------------------------- public API
def evaluate(model: str | os.PathLike[str], *, eps: float, out: str | os.PathLike[str],
             data: str | os.PathLike[str] | None = None,
             indices: str | Sequence[int] | None = None,
             methods: str | Sequence[str] = DEFAULT_METHODS, time_limit_s: float = 60.0,
             pixel_divisor: float | None = None, eps_cap: float | None = None,
             backend: str = "scip", method_options: Mapping[str, Mapping[str, Any]] | None = None,
             workers: int = 1, ray: str | None = None, rerun: bool = False,
             quiet: bool = False, report: bool = True, property: str | None = None
             ) -> RunResult:
    """Estimate rho on many images with several methods; write a resumable run directory.

    Parameters
    ----------
    model : str or path
        An ONNX file, or ``"default"`` (``"default:NAME"``) for an embedded network.
    eps : float
        The threshold of phi(eps) and mu(eps), in input units (pixels / divisor).
    out : path
        Run directory: ``results.csv`` (one row per image and method), ``run.json``
        (options, versions, machine, start times), ``summary.md``, ``rho_cdf.png``,
        ``adversarial_examples.png``, ``adversarial.npz``, ``run.log`` (solver warnings),
        ``witnesses/``. Rerunning on an existing directory resumes it.
    data : path, optional
        ``.npz`` with ``images`` and ``labels``; optional for ``"default"`` (its 10 images).
    indices : str or sequence of int, optional
        Which images (``"0:100"``, ``"3,5,8"``, ``[1, 2]``); all when None.
    methods : str or sequence of str
        Any of ``exact`` (`milpverify.verify.rho`), ``lp`` (`lp_restriction`, all target
        labels), ``pgd``, ``fgsm``, ``lbfgs`` (`milpverify.attacks`); comma-separated or a list.
    time_limit_s : float
        Per-image budget of the exact method (heuristics have their own iteration limits).
    pixel_divisor : float, optional
        Images are divided by this (default 255; the embedded net's own divisor).
    eps_cap : float, optional
        Exact: search only ||x' - x|| <= eps_cap (default `eps`, enough for phi and mu;
        pass more for the CDF beyond eps).
    backend : str
        MILP backend of the exact method.
    method_options : dict, optional
        Extra keyword arguments per method, e.g. ``{"lbfgs": {"targets": "second"}}``.
    workers : int
        Processes (spawned; one SCIP / torch / BLAS thread each). 1 runs in this process.
    ray : str, optional
        Run as Ray tasks instead: ``"local"`` (start a local Ray with `workers` CPUs),
        ``"auto"`` or a cluster address (passed to ``ray.init``).
    rerun : bool
        Discard existing results in `out` and start over.
    quiet : bool
        No progress bar.
    report : bool
        Write summary.md and the figures (matplotlib).
    property : str, optional
        ``"topk:K"`` (relaxed top-K) or ``"affinity:FILE.json"`` (groups file, see
        `milpverify.properties.load_groups`): the exact method then computes the distance
        to the nearest input that violates this property (`rho_property`) instead of plain
        rho, so phi(eps) is the share of points *not* certified at eps. Needs
        ``methods="exact"``.

    Returns
    -------
    RunResult
        Rows, per-method `MethodSummary` (phi, mu as intervals), files written.

    Raises
    ------
    InvalidInputError
        Bad options, missing files, or `out` holds a run with different options.
    SolverError
        A worker process died, or Ray is missing.

    Notes
    -----
    Column ``seconds`` is the wall time of the estimator call in its process; the first
    torch method in a process includes importing torch. With ``workers > 1`` the workers
    are *spawned*, so a script calling `evaluate` needs the usual
    ``if __name__ == "__main__":`` guard. Only this process writes files; rows arrive in
    completion order (`RunResult.rows` is sorted).

    Example
    -------
    >>> res = evaluate("default", eps=0.05, methods="lp,fgsm", out="runs/demo")
    >>> res.summaries["lp"].phi
    """
    spec, selected = _prepare("evaluate", model, data=data, indices=indices, eps=eps,
                              eps_cap=eps_cap, methods=methods, time_limit_s=time_limit_s,
                              pixel_divisor=pixel_divisor, backend=backend,
                              method_options=method_options, workers=workers, ray=ray,
                              prop=property)
    layout = Layout.run_dir(Path(os.fspath(out)))
    if layout.report_dir is not None and layout.report_dir.exists() \
            and not layout.report_dir.is_dir():
        raise InvalidInputError(f"`out` {os.fspath(out)!r} exists and is not a directory.")
    result = run(spec, selected, layout, workers=workers, ray=ray, rerun=rerun, quiet=quiet)
    if report:
        _report(spec, result, layout, selected)
    return result


def rho_table(model: str | os.PathLike[str], *, out: str | os.PathLike[str],
              data: str | os.PathLike[str] | None = None,
              indices: str | Sequence[int] | None = None, eps_cap: float | None = None,
              time_limit_s: float = 120.0, pixel_divisor: float | None = None,
              backend: str = "scip", workers: int = 1, ray: str | None = None,
              rerun: bool = False, quiet: bool = False, property: str | None = None
              ) -> RunResult:
    """Exact rho for many images into one resumable CSV: `evaluate` with methods=exact.

    Writes `out` (the rows), and beside it ``<stem>.run.json``, ``<stem>.adversarial.npz``,
    ``<stem>.log`` and ``<stem>.witnesses/``. Parameters as in `evaluate`; without
    `eps_cap` rho is searched over the whole domain. With `property` ("topk:K" or
    "affinity:FILE.json") each row is the exact distance to the nearest violation of that
    property (`milpverify.properties.rho_property`).

    Example
    -------
    >>> rho_table("default", indices="0:3", out="rho.csv").summaries["exact"].statuses
    """
    spec, selected = _prepare("rho", model, data=data, indices=indices, eps=None,
                              eps_cap=eps_cap, methods=("exact",), time_limit_s=time_limit_s,
                              pixel_divisor=pixel_divisor, backend=backend, method_options=None,
                              workers=workers, ray=ray, prop=property)
    out_path = Path(os.fspath(out))
    if out_path.is_dir():
        raise InvalidInputError(f"`out` {os.fspath(out)!r} is a directory; rho writes a CSV "
                                "file (e.g. results.csv).")
    return run(spec, selected, Layout.csv_file(out_path), workers=workers, ray=ray,
               rerun=rerun, quiet=quiet)


__all__ = ["COLUMNS", "DEFAULT_METHODS", "METHODS", "RESUME_KEYS", "TIMING_COLUMNS", "Layout",
           "ResultsFile", "RunResult", "RunSpec", "TaskResult", "atomic_write", "environment",
           "evaluate", "load_inputs", "method_function", "rho_table", "run", "run_task",
           "scip_version"]
