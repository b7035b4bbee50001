"""Dataset runs: rho by several estimators over many images, resumable and parallel.

One runner (`run`) serves `evaluate` (a run directory with results, summary and figures) and
`rho_table` (one CSV of exact rho). Rows are computed by `run_task` in this process, in a
spawned process pool, or as Ray tasks, and written only by this process, one complete
line per `write` followed by flush and `os.fsync`, so a killed run loses only in-flight
rows. Rerunning the same command skips the (index, method) rows already written.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from milpverify.errors import InvalidInputError
from milpverify.runs.report import _report, figure_formats
from milpverify.runs.runner import Layout, RunResult, _prepare, retry_statuses, run


# ---------------------------------------------------------------------------- public API
def evaluate(model: str | os.PathLike[str], *, eps: float, out: str | os.PathLike[str],
             data: str | os.PathLike[str] | None = None,
             indices: str | Sequence[int] | None = None,
             methods: str | Sequence[str] | None = None, time_limit_s: float = 60.0,
             pixel_divisor: float | None = None, eps_cap: float | None = None,
             backend: str = "scip", method_options: Mapping[str, Mapping[str, Any]] | None = None,
             workers: int = 1, ray: str | None = None, rerun: bool = False,
             quiet: bool = False, report: bool = True, property: str | None = None,
             mean: str | float | Sequence[float] | None = None,
             std: str | float | Sequence[float] | None = None,
             figure_format: str | Sequence[str] = "png", figure_grid: int = 8,
             retry: str | Sequence[str] | None = None, norm: str = "linf",
             verbose: bool = False) -> RunResult:
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
    methods : str or sequence of str, optional
        Any of ``exact`` (`milpverify.verify.rho`), ``lp`` (`lp_restriction`, all target
        labels), ``pgd``, ``fgsm``, ``lbfgs`` (`milpverify.core.attacks`); comma-separated or a list.
        Default: those of ``DEFAULT_METHODS`` (exact, lp, pgd, fgsm) that measure in `norm`.
    time_limit_s : float
        Per-image budget of the exact method (heuristics have their own iteration limits).
    pixel_divisor : float, optional
        Images are divided by this (default 255; the embedded net's own divisor).
    mean, std : float, sequence of float or "a,b,c", optional
        Per-channel normalisation ``(x - mean) / std`` the network was trained with but
        does not contain (e.g. OVAL's ``cifar_base_kw``: mean 0.485,0.456,0.406, std
        0.225). It is prepended to the network; rho stays a distance in pixels / divisor.
        A run whose network gets fewer than half of the selected images right warns.
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
    verbose : bool
        The exact method's MILP solver prints its log on stdout (SCIP / HiGHS are silent
        otherwise); not recorded among the options, so a rerun may change it.
    report : bool
        Write summary.md and the figures (matplotlib).
    figure_format : str or sequence of str
        Formats of the figures, any of ``png``, ``svg``, ``pdf`` (``"png,pdf"``); summary.md
        shows the first.
    figure_grid : int
        At most this many images in the adversarial-example figure (default 8).
    retry : str or sequence of str, optional
        Compute rows with these statuses again (``time_limit``, ``error``, ``not_found``),
        e.g. ``retry="time_limit"`` with a larger `time_limit_s`; see `runner.run`.
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
                              prop=property, mean=mean, std=std, norm=norm,
                              verbose=verbose)
    formats = figure_formats(figure_format)
    if isinstance(figure_grid, bool) or not isinstance(figure_grid, int) or figure_grid < 1:
        raise InvalidInputError(f"`figure_grid` must be an integer >= 1; got {figure_grid!r}.")
    layout = Layout.run_dir(Path(os.fspath(out)))
    if layout.report_dir is not None and layout.report_dir.exists() \
            and not layout.report_dir.is_dir():
        raise InvalidInputError(f"`out` {os.fspath(out)!r} exists and is not a directory.")
    result = run(spec, selected, layout, workers=workers, ray=ray, rerun=rerun, quiet=quiet,
                 retry=retry_statuses(retry))
    if report:
        _report(spec, result, layout, selected, formats=formats, grid_size=figure_grid)
    return result


def rho_table(model: str | os.PathLike[str], *, out: str | os.PathLike[str],
              data: str | os.PathLike[str] | None = None,
              indices: str | Sequence[int] | None = None, eps_cap: float | None = None,
              time_limit_s: float = 120.0, pixel_divisor: float | None = None,
              backend: str = "scip", workers: int = 1, ray: str | None = None,
              rerun: bool = False, quiet: bool = False, property: str | None = None,
              mean: str | float | Sequence[float] | None = None,
              std: str | float | Sequence[float] | None = None,
              retry: str | Sequence[str] | None = None, norm: str = "linf",
              verbose: bool = False) -> RunResult:
    """Exact rho for many images into one resumable CSV: `evaluate` with methods=exact.

    Writes `out` (the rows), and beside it ``<stem>.run.json``, ``<stem>.adversarial.npz``,
    ``<stem>.log`` and ``<stem>.witnesses/``. Parameters as in `evaluate`; without
    `eps_cap` rho is searched over the whole domain; `mean` / `std`, `retry` and `verbose` as in
    `evaluate`. With `property` ("topk:K" or "affinity:FILE.json") each row is the exact distance to the nearest violation of that
    property (`milpverify.properties.rho_property`).

    Example
    -------
    >>> rho_table("default", indices="0:3", out="rho.csv").summaries["exact"].statuses
    """
    spec, selected = _prepare("rho", model, data=data, indices=indices, eps=None,
                              eps_cap=eps_cap, methods=("exact",), time_limit_s=time_limit_s,
                              pixel_divisor=pixel_divisor, backend=backend, method_options=None,
                              workers=workers, ray=ray, prop=property, mean=mean, std=std,
                              norm=norm, verbose=verbose)
    out_path = Path(os.fspath(out))
    if out_path.is_dir():
        raise InvalidInputError(f"`out` {os.fspath(out)!r} is a directory; rho writes a CSV "
                                "file (e.g. results.csv).")
    return run(spec, selected, Layout.csv_file(out_path), workers=workers, ray=ray,
               rerun=rerun, quiet=quiet, retry=retry_statuses(retry))
