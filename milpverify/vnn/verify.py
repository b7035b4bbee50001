"""`verify_vnnlib`: decide every property of a VNN-LIB spec on a network within one time budget."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Union

from milpverify.core.witness import WitnessCheck
from milpverify.errors import InvalidInputError, UnsupportedModelError
from milpverify.ir.network import Network
from milpverify.vnn.decide import _decide_property, _PropertyOutcome, milp_solvers
from milpverify.vnn.options import VnnlibOptions
from milpverify.vnn.results import VnnlibResult
from milpverify.vnn.spec import VnnlibSpec, read_vnnlib

PathLike = Union[str, "os.PathLike[str]"]


def _as_network(net_or_path: Network | PathLike) -> Network:
    if isinstance(net_or_path, Network):
        return net_or_path
    from milpverify.frontends.onnx import load_onnx
    return load_onnx(net_or_path)


def spec_for(spec_or_path: VnnlibSpec | PathLike, net: Network) -> VnnlibSpec:
    """The spec, read if given as a path, checked against `net`: sizes match and the network
    keeps its output values (no dropped trailing Softmax). Raises `MilpVerifyError`."""
    if net.dropped_output is not None:
        raise UnsupportedModelError(
            f"{net.origin.description} ends in {net.dropped_output}, which was dropped because "
            "it keeps the ranking of the outputs; VNN-LIB properties constrain output values, "
            "which it changes non-linearly. Export the network without it and state the "
            "property on its logits.")
    if isinstance(spec_or_path, VnnlibSpec):
        spec = spec_or_path
    else:
        spec = read_vnnlib(Path(spec_or_path))
    if spec.n_inputs != net.input_size or spec.n_outputs != net.num_classes:
        raise InvalidInputError(
            f"the spec declares {spec.n_inputs} inputs X_i and {spec.n_outputs} outputs Y_j, "
            f"but the network has {net.input_size} inputs (shape {list(net.input_shape)}) and "
            f"{net.num_classes} outputs; VNN-LIB X_i are the flat inputs in C order.")
    return spec


def verify_vnnlib(net_or_path: Network | PathLike, spec_or_path: VnnlibSpec | PathLike, *,
                  timeout_s: float = 120.0, backend: str = "scip",
                  options: VnnlibOptions | None = None) -> VnnlibResult:
    """Decide a VNN-LIB specification exactly: is some input in the box mapped into the unsafe set?

    Per property: bounds of ``s = A y - b`` over its box by symbolic back-substitution through
    the network and the spec rows (`spec_network`) drop refuted disjuncts (none left: that
    property is unsat); the falsifier (`falsify`, random starts and the bounds' vertices)
    tries the rest; optimised-slope bounds drop more, the falsifier tries again from their
    vertices; then a feasibility MILP (one binary per disjunct, stop at the first feasible
    point), LP bound tightening (then the optimised slopes again, on the tightened bounds)
    and a second MILP decide (see `VnnlibOptions`).
    A MILP with the unsafe rows relaxed by ``SOLVER_SLACK`` being infeasible proves unsat; a
    point is reported only after `check_counterexample` (float32 point inside the box,
    numpy float64 and onnxruntime outputs both unsafe), re-solving with the strict margin
    ``WITNESS_MARGIN`` when the first point fails.

    Parameters
    ----------
    net_or_path : Network or path
        The network, or an ``.onnx``/``.onnx.gz`` file.
    spec_or_path : VnnlibSpec or path
        The parsed spec, or a ``.vnnlib``/``.vnnlib.gz`` file.
    timeout_s : float
        Wall-clock budget from the call (loading and parsing included).
    backend : str
        Solver of the decision MILPs ("scip" default), or several joined by ``+``:
        ``"scip+highs"`` runs a SCIP worker and a HiGHS worker (one thread each, so meant
        for ``options.threads`` >= 2) that take the open disjuncts' MILPs from both ends
        of the order and race on the last one (`_solve_disjuncts`).
    options : VnnlibOptions, optional

    Returns
    -------
    VnnlibResult

    Raises
    ------
    InvalidInputError
        Missing files, a spec whose sizes do not match the network, a bad timeout.
    InvalidModelError, UnsupportedModelError
        The model cannot be read or encoded.

    Example
    -------
    >>> r = verify_vnnlib("mnist-net_256x2.onnx", "prop_0_0.03.vnnlib", timeout_s=120)
    >>> r.result
    'unsat'
    """
    start = time.perf_counter()
    if not (isinstance(timeout_s, (int, float)) and math.isfinite(timeout_s) and timeout_s > 0):
        raise InvalidInputError(f"`timeout_s` must be a finite number > 0; got {timeout_s!r}.")
    opts = options or VnnlibOptions()
    deadline = start + float(timeout_s)
    timings: dict[str, float] = {}
    stats: dict[str, Any] = {}
    net = _as_network(net_or_path)
    spec = spec_for(spec_or_path, net)
    timings["load_s"] = time.perf_counter() - start
    milp_solvers(backend)  # fail early when a solver is missing or unknown

    def done(result: str, check: WitnessCheck | None = None, by: str = "",
             message: str = "") -> VnnlibResult:
        timings["total_s"] = time.perf_counter() - start
        return VnnlibResult(result, None if check is None else check.x,
                            None if check is None else check.y, by, timings, stats, message)

    if not spec.properties:
        return done("unsat", by="bounds", message="the unsafe set is empty")
    outcomes: list[_PropertyOutcome] = []
    attack_s = min(opts.attack_fraction * timeout_s, opts.falsifier.time_limit_s)
    for k, prop in enumerate(spec.properties):
        share = (deadline - time.perf_counter()) / (len(spec.properties) - k)
        outcome = _decide_property(net, prop, time.perf_counter() + share, backend, opts,
                                   attack_s, timings, stats)
        if outcome.result == "sat":
            return done("sat", outcome.check, outcome.decided_by)
        outcomes.append(outcome)
    if all(o.result == "unsat" for o in outcomes):
        used = {o.decided_by for o in outcomes}
        by = next((w for w in ("milp", "relu_split", "input_split") if w in used), "bounds")
        return done("unsat", by=by)
    for word in ("error", "timeout", "unknown"):
        hit = [o for o in outcomes if o.result == word]
        if hit:
            return done(word, message="; ".join(o.message for o in hit if o.message))
    return done("unknown")  # unreachable: every outcome is one of the words above
