"""A run directory: its layout, environment record, resume checks and the execution of its tasks."""

from __future__ import annotations

import contextlib
import datetime as _dt
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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from milpverify.errors import InvalidInputError
from milpverify.runs.datasets import parse_indices
from milpverify.runs.executors import TaskList, _process_pool, _ray_tasks, _serial
from milpverify.runs.metrics import MethodSummary, combine, summarize, summary_table
from milpverify.runs.results_file import ResultsFile, atomic_write
from milpverify.runs.tasks import (
    DEFAULT_METHODS,
    METHODS,
    NORM_METHODS,
    TORCH_METHODS,
    RunSpec,
    _resolve_model,
    load_inputs,
    method_function,
    parsed_property,
)

log = logging.getLogger(__name__)


#: run.json options that must match for a rerun to resume (they change the rows or the summary).
RESUME_KEYS = ("command", "model", "data", "pixel_divisor", "eps", "eps_cap", "time_limit_s",
               "methods", "backend", "domain", "method_options", "property", "mean", "std",
               "norm")

#: Below this accuracy on the selected images a run warns: the preprocessing is likely wrong.
LOW_ACCURACY = 0.5

#: Value of a resume key in a run.json written before the key existed.
RESUME_DEFAULTS = {"norm": "linf"}


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

    Asked in this process when pyscipopt is loaded already (`_prepare` checks the backend
    of the exact method), else in a child interpreter, so a parent that does not solve
    never loads it; the child costs about 0.5 s before any row starts.
    """
    if "pyscipopt" in sys.modules:
        from milpverify.solve.scip import scip_version as loaded_version
        return loaded_version()
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
    from milpverify._version import __version__
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


def _check_resume(previous: Mapping[str, Any], options: Mapping[str, Any], path: Path, *,
                  ignore: Sequence[str] = ()) -> None:
    old = previous.get("options", {})
    def was(k: str) -> Any:
        return old.get(k, RESUME_DEFAULTS.get(k))
    diffs = [f"`{k}` was {was(k)!r}, now {options.get(k)!r}"
             for k in RESUME_KEYS if k not in ignore and was(k) != options.get(k)]
    if diffs:
        raise InvalidInputError(
            f"Cannot resume the run in {str(path.parent)!r}: its options differ "
            f"({'; '.join(diffs)}). Use another output path, the same options, or --rerun "
            "to discard the existing results.")


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
        method and others, also ``"combined"`` (`milpverify.runs.metrics.combine`).
    summaries_correct : dict[str, MethodSummary]
        The same over correctly classified points only.
    computed, skipped : int
        Rows computed by this call, and rows found already written (resumed).
    files : dict[str, Path]
        Files written, by role.
    spec : RunSpec
        The validated options of the run.
    warnings : list of str
        Problems with the run's inputs (e.g. a network that misclassifies most of the
        selected images: wrong preprocessing); also in the run log and summary.md.
    """

    out: Path
    rows: list[dict[str, Any]]
    summaries: dict[str, MethodSummary]
    summaries_correct: dict[str, MethodSummary]
    computed: int
    skipped: int
    files: dict[str, Path]
    spec: RunSpec
    warnings: list[str] = field(default_factory=list)

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


def _methods(methods: str | Sequence[str] | None, norm: str = "linf") -> tuple[str, ...]:
    """The validated methods; None means `DEFAULT_METHODS` that measure in `norm`."""
    if norm not in NORM_METHODS:
        raise InvalidInputError(f"`norm` must be one of {', '.join(map(repr, NORM_METHODS))}; "
                                f"got {norm!r}.")
    if methods is None:
        return tuple(m for m in DEFAULT_METHODS if m in NORM_METHODS[norm])
    items = [m.strip().lower() for m in (methods.split(",") if isinstance(methods, str)
                                         else methods)]
    items = [m for m in items if m]
    unknown = [m for m in items if m not in METHODS]
    if unknown or not items:
        raise InvalidInputError(f"Unknown method(s) {', '.join(map(repr, unknown)) or '(none)'}"
                                f" in `methods`; choose from {', '.join(METHODS)}.")
    if len(set(items)) != len(items):
        raise InvalidInputError(f"`methods` lists a method twice: {items}.")
    other = [m for m in items if m not in NORM_METHODS[norm]]
    if other:
        raise InvalidInputError(f"method(s) {', '.join(other)} do not measure in norm {norm!r}; "
                                f"with it use {', '.join(NORM_METHODS[norm])}.")
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
                                if method == "exact" else ()),
                    *(("norm",) if method in ("exact", "lp", "pgd") else ())}
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
             methods: str | Sequence[str] | None, time_limit_s: float,
             pixel_divisor: float | None, backend: str,
             method_options: Mapping[str, Mapping[str, Any]] | None,
             workers: int, ray: str | None, prop: str | None = None,
             mean: Any = None, std: Any = None, norm: str = "linf", verbose: bool = False
             ) -> tuple[RunSpec, list[int]]:
    """The validation front door: every option is checked before anything is computed."""
    from milpverify.runs.normalise import check_normalisation, parse_channels
    model_arg, model_path, default_divisor = _resolve_model(model)
    normalisation = check_normalisation(parse_channels("mean", mean),
                                        parse_channels("std", std))
    eps = _check_number("eps", eps, allow_none=command == "rho")
    eps_cap = _check_number("eps_cap", eps_cap, allow_none=True)
    time_limit_s = float(_check_number("time_limit_s", time_limit_s) or 0.0)
    divisor = float(_check_number("pixel_divisor", pixel_divisor, allow_none=True)
                    or default_divisor)
    chosen = _methods(methods, norm)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InvalidInputError(f"`workers` must be an integer >= 1; got {workers!r}.")
    if ray is not None and not (isinstance(ray, str) and ray.strip()):
        raise InvalidInputError(f"`ray` must be 'local', 'auto' or a cluster address; got {ray!r}.")
    if data is None and not model_arg.startswith("default"):
        raise InvalidInputError(f"`data` is required for model {model_arg!r} (an .npz file with "
                                "'images' and 'labels'); only 'default' has embedded images.")
    prop = _property_spec(prop, chosen)
    if prop and norm == "l2":
        raise InvalidInputError("`property` supports norm 'linf' or 'l1'; got 'l2'.")
    if "exact" in chosen:
        from milpverify.core.query import check_norm_backend
        from milpverify.solve import get_backend
        check_norm_backend(norm, backend)
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
                   _method_options(method_options, chosen, prop), prop,
                   *(normalisation if normalisation is not None else (None, None)), norm,
                   verbose=bool(verbose))
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
    net.as_batch(np.nan_to_num(images[selected[0]]))  # shape check with the network's own message
    lo, hi = spec.domain
    batch = images[selected]
    if np.nanmin(batch, initial=lo) < lo or np.nanmax(batch, initial=hi) > hi:
        raise InvalidInputError(
            f"Images divided by `pixel_divisor` {divisor:g} lie in [{np.nanmin(batch):g}, "
            f"{np.nanmax(batch):g}], outside the domain [{lo:g}, {hi:g}]; pass the divisor the "
            "network expects (255 for most, 256 for Planet).")
    return spec, selected


def accuracy_warning(spec: RunSpec, selected: Sequence[int]) -> str | None:
    """A warning when the network classifies fewer than `LOW_ACCURACY` of the selected
    images correctly: then rho is mostly measured around wrong labels, and the usual cause
    is preprocessing (pixel divisor, or a normalisation the graph does not contain)."""
    net, images, labels = load_inputs(spec)
    chosen = [i for i in selected if not np.isnan(images[i]).any()]  # NaN: an error row
    if not chosen:
        return None
    accuracy = float(np.mean(net.predict(images[chosen]) == labels[chosen]))
    if accuracy >= LOW_ACCURACY:
        return None
    norm = ("" if spec.mean is None else
            f", normalised with mean {list(spec.mean)} and std {list(spec.std or ())}")
    return (f"the network classifies only {100 * accuracy:.1f}% of the {len(selected)} "
            f"selected images correctly (pixels / {spec.pixel_divisor:g}{norm}); check the "
            "preprocessing it was trained with (--pixel-divisor, --mean, --std)")


#: Statuses `retry` may name: rows that another attempt can improve.
RETRY_STATUSES = ("time_limit", "error", "not_found")


def retry_statuses(retry: str | Sequence[str] | None) -> frozenset[str]:
    """`"time_limit,error"` or a sequence as a checked set of `RETRY_STATUSES`."""
    if retry is None:
        return frozenset()
    items = {s.strip().lower() for s in (retry.split(",") if isinstance(retry, str) else retry)}
    items.discard("")
    bad = sorted(items - set(RETRY_STATUSES))
    if bad or not items:
        raise InvalidInputError(f"`retry` must name statuses among {', '.join(RETRY_STATUSES)} "
                                f"(comma-separated); got {retry!r}.")
    return frozenset(items)


def run(spec: RunSpec, selected: Sequence[int], layout: Layout, *, workers: int = 1,
        ray: str | None = None, rerun: bool = False, quiet: bool = False,
        retry: frozenset[str] = frozenset()) -> RunResult:
    """Compute every missing (index, method) row of `selected` and return all of them.

    Rows already written whose status is in `retry` are computed again; the new row is
    appended and supersedes the old one (which stays until then, so an interrupted retry
    loses nothing). Retrying ``time_limit`` rows may use a different `time_limit_s`: that
    is the point of it, so the resume check allows it and run.json records the new one.

    A low accuracy on `selected` (`accuracy_warning`) is logged at warning level before
    anything is computed and written to the run log.
    """
    warning = accuracy_warning(spec, selected)
    if warning:
        log.warning(warning)
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
            _check_resume(previous, options, layout.run_json,
                          ignore=("time_limit_s",) if "time_limit" in retry else ())
        now = _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")
        invocation = {"started": now, "indices": _compact(selected), "workers": workers,
                      "ray": ray, "argv": sys.argv}
        meta = {"format": "milpverify-run/1", "options": options,
                "started": previous["started"] if previous else now,
                "invocations": [*(previous or {}).get("invocations", []), invocation],
                **environment(spec.methods, ray is not None)}
        atomic_write(layout.run_json, (json.dumps(meta, indent=1) + "\n").encode())

        results = ResultsFile(layout.results)
        if warning:
            with open(layout.log, "a", encoding="utf-8") as log_file:
                log_file.write(f"warning: {warning}\n")
        try:
            tasks = [(i, m) for i in selected for m in spec.methods
                     if (i, m) not in results.rows or results.rows[(i, m)]["status"] in retry]
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
                     len(tasks), skipped, files, spec, [warning] if warning else [])


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
    """Hold an advisory lock so two runs never append to the same file (released on death).

    The (empty) lock file is removed when the run ends, still holding the lock, so a
    finished run leaves only files with content.
    """
    import fcntl
    with open(lock_path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(f.fileno()).st_ino != os.stat(lock_path).st_ino:
                # Locked a file another run removed as it ended: someone may hold the new one.
                raise BlockingIOError("lock file replaced")
        except OSError as exc:
            raise InvalidInputError(f"Another milpverify run is writing to "
                                    f"{str(lock_path.parent)!r} (lock {lock_path.name}); wait "
                                    "for it or use another output path.") from exc
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                lock_path.unlink()


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
        for result in stream:
            row = result.row
            if result.witness is not None:
                layout.witnesses.mkdir(exist_ok=True)
                buf = io.BytesIO()
                np.save(buf, result.witness)
                atomic_write(layout.witnesses / f"{row['index']}_{row['method']}.npy",
                             buf.getvalue())
            if (row["index"], row["method"]) in results.rows:
                results.replace(row)  # a retry (see `run`)
            else:
                results.append(row)
            if result.logs:  # the log file exists only once there is something in it
                with open(layout.log, "a", encoding="utf-8") as log_file:
                    log_file.writelines(f"[{row['index']} {row['method']}] {line}\n"
                                        for line in result.logs)
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
