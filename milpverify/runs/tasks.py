"""One task of a run (an image and an estimator), the estimator registry, and how a task is
executed.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from milpverify.core.witness import counting_rejections
from milpverify.errors import InvalidInputError
from milpverify.ir.network import Network
from milpverify.runs.datasets import DATA_DIR, DEFAULT_IMAGES, default_name, embedded_net, load_npz

#: Estimators `evaluate` knows, in the order they are run for each image.
METHODS = ("exact", "lp", "pgd", "fgsm", "lbfgs")


#: Methods that measure in each norm (they take a `norm` argument, except L-inf-only fgsm
#: and lbfgs): exact everywhere, the LP restriction for L-inf/L1, PGD for L-inf/L2.
NORM_METHODS = {"linf": METHODS, "l1": ("exact", "lp"), "l2": ("exact", "pgd")}


#: Methods that need torch (their versions are recorded only when one of them runs).
TORCH_METHODS = frozenset({"pgd", "fgsm", "lbfgs"})


DEFAULT_METHODS = ("exact", "lp", "pgd", "fgsm")


# ---------------------------------------------------------------------------- the run spec
@dataclass(frozen=True)
class RunSpec:
    """Everything a worker needs to compute one row: validated, picklable, JSON-ready.

    `model_path` / `data_path` are absolute; `data_path` is None for the embedded images.
    `method_options[m]` are extra keyword arguments of method m's function.
    `property` is None (plain rho) or a `properties.parse_property` string ("topk:K",
    "affinity:/absolute/groups.json"); the exact method then computes `rho_property`.
    `mean` / `std` (per channel, or None) are the input normalisation the network expects
    but does not contain; it is prepended to the graph (`milpverify.runs.normalise`).
    `verbose` lets the exact method's MILP solver print its log on stdout; it changes no
    row, so it is not among the `options` a resumed run must match.
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
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    norm: str = "linf"
    verbose: bool = False

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
            "mean": None if self.mean is None else list(self.mean),
            "std": None if self.std is None else list(self.std),
            "norm": self.norm,
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
    name = default_name(text)
    if name is not None:
        entry = embedded_net(name)
        return text, str(entry.path), entry.pixel_divisor
    path = Path(text)
    if not path.is_file():
        raise InvalidInputError(f"Model file not found: {text!r}; pass an .onnx file or "
                                "'default' for the embedded network.")
    return text, str(path.resolve()), 255.0


# ---------------------------------------------------------------------------- worker side
_LOADED: dict[tuple[Any, ...], tuple[Network, npt.NDArray[np.float64],
                                     npt.NDArray[np.int64]]] = {}


def load_inputs(spec: RunSpec) -> tuple[Network, npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """The network (with `spec`'s input normalisation) and the *whole* data set (scaled),
    cached per process."""
    key = (spec.model_path, spec.data_path, spec.pixel_divisor, spec.mean, spec.std)
    if key not in _LOADED:
        from milpverify.runs.normalise import load_network
        data = spec.data_path or str(DATA_DIR / DEFAULT_IMAGES)
        images, labels = load_npz(data, pixel_divisor=spec.pixel_divisor)
        _LOADED[key] = (load_network(spec.model_path, spec.mean, spec.std), images, labels)
    return _LOADED[key]


@lru_cache(maxsize=8)
def parsed_property(spec: str) -> Any:
    """`properties.parse_property(spec)`, once per process (it may read a groups file)."""
    from milpverify.properties.spec import parse_property
    return parse_property(spec)


def method_function(method: str, prop: str | None = None
                    ) -> tuple[Callable[..., Any], dict[str, Any]]:
    """The function computing `method` and its base keyword arguments (before options).

    With a property (`RunSpec.property`) the exact method is `rho_property` for it.
    """
    if method == "exact" and prop:
        from milpverify.properties.rho import rho_property
        return rho_property, {"threads": 1, "prop": parsed_property(prop)}
    if method == "exact":
        from milpverify.verify import rho
        return rho, {"threads": 1}
    if method == "lp":
        from milpverify.core.restriction import lp_restriction
        return lp_restriction, {"target": "all"}
    from milpverify.core import attacks
    if method in ("pgd", "fgsm", "lbfgs"):
        return getattr(attacks, method), {}
    raise InvalidInputError(f"Unknown method {method!r}; choose from {', '.join(METHODS)}.")


class _Collect(logging.Handler):
    """Keeps the messages (INFO and above) of milpverify's loggers during one task (they go
    to the run log)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.levelname.lower()}: {record.getMessage()}")


@contextlib.contextmanager
def _captured_logs() -> Iterator[_Collect]:
    """Route milpverify log records and warnings of one task into a handler (not stderr).

    Keeps the progress bar readable. The logger is opened to info level for the task, so
    the run log keeps info records that the terminal shows only with ``--verbose``.
    """
    logger = logging.getLogger("milpverify")
    handler, propagate, level = _Collect(), logger.propagate, logger.level
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield handler
        finally:
            logger.removeHandler(handler)
            logger.propagate = propagate
            logger.setLevel(level)
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
    exception in `message` (bracket [0, inf]), so one bad image does not stop a run. An
    image with NaN pixels is such a row too, with `pred` -1 (it has no prediction).
    """
    net, images, labels = load_inputs(spec)
    x = images[index]
    if np.isnan(x).any():
        message = (f"image {int(index)} has {int(np.isnan(x).sum())} NaN pixel(s); "
                   "nothing computed")
        row = {"index": int(index), "label": int(labels[index]), "pred": -1, "method": method,
               "lower": 0.0, "upper": math.inf, "status": "error", "witness_verified": False,
               "adversarial_label": None, "message": message, "seconds": 0.0}
        return TaskResult(row, None, [f"error: {message}"])
    pred = int(np.argmax(net.forward(x)[0]))
    row: dict[str, Any] = {"index": int(index), "label": int(labels[index]), "pred": pred,
                           "method": method}
    fn, kwargs = method_function(method, spec.property)
    kwargs = {**kwargs, "domain": spec.domain, **spec.method_options.get(method, {})}
    if method == "exact":
        kwargs.update(eps_cap=spec.eps_cap, time_limit_s=spec.time_limit_s,
                      backend=spec.backend, verbose=spec.verbose)
        if spec.backend == "scip":
            # SCIP's own Ctrl-C handler would end only the current solve and the batch would
            # go on; without it Ctrl-C stops the run (finished rows are already on disk).
            kwargs["solver_params"] = {"misc/catchctrlc": False,
                                       **(kwargs.get("solver_params") or {})}
    if method in ("exact", "lp", "pgd"):
        kwargs["norm"] = spec.norm
    witness = None
    start = time.perf_counter()
    with _captured_logs() as captured, counting_rejections() as rejected:
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
    # Candidates of every method that failed their re-check (routine near ties).
    row["witness_rejections"] = rejected.count
    return TaskResult(row, witness, captured.messages)
