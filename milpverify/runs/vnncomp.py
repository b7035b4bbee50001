"""Run every instance of a VNN-COMP benchmark folder into a resumable CSV."""

from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

from milpverify.errors import InvalidInputError, MilpVerifyError
from milpverify.ir.network import Network
from milpverify.ir.ops import FloatArray
from milpverify.runs.results_file import ResultsFile
from milpverify.vnn.decide import milp_solvers
from milpverify.vnn.options import VnnlibOptions
from milpverify.vnn.results import RESULT_COLUMNS, VnnlibResult
from milpverify.vnn.shared_rho import linf_robustness_form, shared_rho_decisions
from milpverify.vnn.spec import read_vnnlib
from milpverify.vnn.verify import verify_vnnlib

PathLike = Union[str, "os.PathLike[str]"]


# ---------------------------------------------------------------------------- runner
@dataclass(frozen=True)
class Instance:
    """One row of a VNN-COMP ``instances.csv``: paths relative to the benchmark folder."""

    onnx: str
    vnnlib: str
    timeout_s: float


def read_instances(path: PathLike) -> list[Instance]:
    """Read ``instances.csv`` (rows ``onnx,vnnlib,timeout``, no header).

    Raises
    ------
    InvalidInputError
        Missing file, or a row that is not ``path,path,positive number``.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise InvalidInputError(f"instances file not found: {str(p)!r}") from e
    out = []
    for k, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or not "".join(row).strip():
            continue
        try:
            onnx_path, vnnlib_path, timeout = (c.strip() for c in row)
            value = float(timeout)
        except ValueError as e:
            raise InvalidInputError(f"{p}:{k}: expected 'onnx,vnnlib,timeout', got "
                                    f"{','.join(row)[:80]!r}") from e
        if not (math.isfinite(value) and value > 0):
            raise InvalidInputError(f"{p}:{k}: timeout must be a positive number, got {timeout!r}")
        out.append(Instance(onnx_path, vnnlib_path, value))
    return out


def _row(inst: Instance, result: VnnlibResult, seconds: float, group: str) -> dict[str, Any]:
    message = " ".join(result.message.split())[:300]
    return {"onnx": inst.onnx, "vnnlib": inst.vnnlib, "result": result.result,
            "seconds": f"{seconds:.3f}", "timeout": f"{inst.timeout_s:g}",
            "decided_by": result.decided_by, "group": group, "message": message}


def _counterexample_name(inst: Instance) -> str:
    def stem(p: str) -> str:
        name = Path(p).name
        for suffix in (".gz", ".onnx", ".vnnlib"):
            name = name[: -len(suffix)] if name.endswith(suffix) else name
        return name
    return f"{stem(inst.onnx)}__{stem(inst.vnnlib)}.txt"


def run_vnncomp(benchdir: PathLike, out: PathLike, *,
                instances: PathLike | Sequence[Instance] = "instances.csv",
                shared_rho: bool = False, rho_fraction: float = 0.5, rerun: bool = False,
                backend: str = "scip", options: VnnlibOptions | None = None,
                result_dir: PathLike | None = None, progress: bool = True,
                max_total_s: float | None = None,
                on_row: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Run every instance of a VNN-COMP benchmark folder with its own timeout.

    One CSV row per instance (`RESULT_COLUMNS`) is appended to `out` as soon as it is known,
    flushed and fsync'ed, so an interrupted run resumes where it stopped: instances already
    in `out` are skipped unless `rerun`.

    Parameters
    ----------
    benchdir : path
        The benchmark folder; instance paths are relative to it.
    out : path
        The results CSV (created with a header if missing).
    instances : path or sequence of Instance
        ``instances.csv`` (relative to `benchdir` unless absolute) or the instances to run.
    shared_rho : bool
        Group L-inf robustness instances by (network, centre, label) and answer each group
        with one exact rho (`shared_rho_decisions`); instances it leaves open fall back to
        `verify_vnnlib` with what is left of their own timeout. A group's rho gets
        ``rho_fraction`` times the smallest timeout in the group; every instance's
        ``seconds`` includes the group's rho time and its ``group`` column names the group
        (so the wall time of a group is the largest ``seconds`` in it).
    rerun : bool
        Run instances already in `out` again (rows are appended; a later row of an
        instance wins when the file is read).
    backend, options
        Passed to `verify_vnnlib` (shared rho uses the first of several solvers).
    result_dir : path, optional
        Also write one VNN-COMP result file per instance there.
    progress : bool
        Show a tqdm progress bar on stderr.
    max_total_s : float, optional
        Start no new instance (or shared-rho group) after this many seconds; the rest is
        left for a later (resumed) run.
    on_row : callable, optional
        Called with each row dict after it is written.

    Returns
    -------
    list of dict
        The rows written by this call.

    Example
    -------
    >>> run_vnncomp("vnncomp/mnist_fc_2022", "results.csv")
    """
    base = Path(benchdir)
    if not base.is_dir():
        raise InvalidInputError(f"benchmark folder not found: {str(base)!r}")
    milp_solvers(backend)  # a bad name is one error, not one "error" row per instance
    if isinstance(instances, (str, os.PathLike)):
        path = Path(instances)
        todo_all = read_instances(path if path.is_absolute() else base / path)
    else:
        todo_all = list(instances)
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    writer = ResultsFile(out_path, RESULT_COLUMNS, key=("onnx", "vnnlib"), parse=None,
                         adopt_header=True)
    done = set() if rerun else {k for k, r in writer.rows.items() if r.get("result")}
    todo = [i for i in todo_all if (i.onnx, i.vnnlib) not in done]
    if result_dir is not None:
        Path(result_dir).mkdir(parents=True, exist_ok=True)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(todo_all), initial=len(todo_all) - len(todo), unit="inst",
                   desc="vnncomp", dynamic_ncols=True)
    run = _Run(base, writer, backend, options, result_dir, on_row, bar)
    run_start = time.perf_counter()
    try:
        groups = _shared_groups(todo, base, run.network) if shared_rho else [[i] for i in todo]
        for number, group in enumerate(groups):
            if max_total_s is not None and time.perf_counter() - run_start >= max_total_s:
                break
            if len(group) == 1:
                run.one(group[0], group[0].timeout_s, 0.0)
            else:
                run.shared(group, f"rho{number}", rho_fraction)
    finally:
        writer.close()
        if bar is not None:
            bar.close()
    return run.rows


@dataclass
class _Run:
    """One `run_vnncomp` call: runs instances (alone, or a group after its shared rho) and
    records each row as soon as it is known."""

    base: Path
    writer: ResultsFile
    backend: str
    options: VnnlibOptions | None
    result_dir: PathLike | None
    on_row: Callable[[dict[str, Any]], None] | None
    bar: Any
    rows: list[dict[str, Any]] = field(default_factory=list)
    nets: dict[str, Network] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def record(self, inst: Instance, result: VnnlibResult, seconds: float, group: str = ""
               ) -> None:
        row = _row(inst, result, seconds, group)
        self.writer.replace(row)
        self.rows.append(row)
        if self.result_dir is not None:
            result.write(Path(self.result_dir) / _counterexample_name(inst))
        self.counts[result.result] = self.counts.get(result.result, 0) + 1
        if self.bar is not None:
            self.bar.set_postfix(self.counts, refresh=False)
            self.bar.update(1)
        if self.on_row is not None:
            self.on_row(row)

    def network(self, inst: Instance) -> Network:
        if inst.onnx not in self.nets:
            from milpverify.frontends.onnx import load_onnx
            self.nets[inst.onnx] = load_onnx(self.base / inst.onnx)
        return self.nets[inst.onnx]

    def one(self, inst: Instance, budget: float, spent: float, group: str = "") -> None:
        """`verify_vnnlib` with what is left of the instance's budget."""
        t0 = time.perf_counter()
        try:
            if budget <= 0:
                result = VnnlibResult("timeout", message="no time left after the shared rho")
            else:
                result = verify_vnnlib(self.network(inst), self.base / inst.vnnlib,
                                       timeout_s=budget, backend=self.backend,
                                       options=self.options)
        except MilpVerifyError as exc:
            result = VnnlibResult("error", message=f"{type(exc).__name__}: {exc}")
        self.record(inst, result, spent + time.perf_counter() - t0, group)

    def shared(self, group: list[Instance], name: str, rho_fraction: float) -> None:
        """One rho answers the group's robustness specs; an instance it leaves open runs on
        its own with the rest of its timeout."""
        t0 = time.perf_counter()
        budget = rho_fraction * min(i.timeout_s for i in group)
        try:
            specs = [read_vnnlib(self.base / i.vnnlib) for i in group]
            answers, _ = shared_rho_decisions(self.network(group[0]), specs,
                                              time_limit_s=budget,
                                              backend=milp_solvers(self.backend)[0])
        except MilpVerifyError as exc:
            answers = [None] * len(group)
            note = f"shared rho failed: {type(exc).__name__}: {exc}"
        else:
            note = ""
        spent = time.perf_counter() - t0
        for inst, answer in zip(group, answers):
            if answer is not None and spent <= inst.timeout_s:
                self.record(inst, answer, spent, name)
            else:
                self.one(inst, inst.timeout_s - spent, spent, name)
                if note:
                    last = self.rows[-1]
                    last["message"] = (note + "; " + last["message"]).strip("; ")


def _shared_groups(todo: Sequence[Instance], base: Path,
                   network: Callable[[Instance], Network]) -> list[list[Instance]]:
    """Group instances of one network whose specs are L-inf robustness around one centre.

    Groups keep the order of their first member; instances not in robustness form, or
    alone in their group, run on their own.
    """
    reps: list[tuple[str, int, FloatArray]] = []
    groups: list[list[Instance]] = []
    for inst in todo:
        form = None
        try:
            spec = read_vnnlib(base / inst.vnnlib)
            if spec.n_inputs == network(inst).input_size:
                form = linf_robustness_form(spec)
        except MilpVerifyError:
            form = None  # the per-instance run reports the error
        if form is None:
            groups.append([inst])
            reps.append(("", -1, np.zeros(0)))
            continue
        for k, (onnx_path, label, centre) in enumerate(reps):
            if (onnx_path == inst.onnx and label == form.label and centre.shape == form.centre.shape
                    and linf_robustness_form(spec, centre=centre) is not None
                    and np.max(np.abs(centre - form.centre)) <= 1e-6):
                groups[k].append(inst)
                break
        else:
            groups.append([inst])
            reps.append((inst.onnx, form.label, form.centre))
    return groups
