"""VNN-COMP: decide VNN-LIB specifications exactly (`verify_vnnlib`) and run benchmark folders.

Owns the VNN-LIB decision pipeline (spec layer -> symbolic bounds -> falsifier ->
optimised-slope bounds -> falsifier -> feasibility MILP -> bound tightening -> optimised
slopes on the tightened bounds -> feasibility MILP -> counterexample re-check; the
falsifier also starts from the vertices where the bounds' relaxation of each spec row is
smallest), the shared-rho shortcut for L-inf robustness specs, and the resumable instance
runner behind ``milpverify vnncomp``.
"""

from __future__ import annotations

import csv
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Union

import numpy as np
import numpy.typing as npt

from milpverify.bounds import alpha_bounds
from milpverify.encode.ideal import relu_cut_separators
from milpverify.encode.milp import NetworkEncoding, Term, encode_network
from milpverify.encode.model import MilpModel
from milpverify.encode.objective import Disjunct, add_unsafe_set, build_unsafe_problem
from milpverify.errors import InvalidInputError, MilpVerifyError
from milpverify.ir import ops
from milpverify.ir.network import Network
from milpverify.ir.ops import FloatArray
from milpverify.solve import get_backend
from milpverify.solve.base import SolveOptions, SolveStatus
from milpverify.tighten import compute_bounds
from milpverify.verify import SOLVER_SLACK, WITNESS_MARGIN
from milpverify.vnnlib import VnnlibProperty, VnnlibSpec, read_vnnlib, write_result
from milpverify.witness import onnx_logits

__all__ = [
    "CounterexampleCheck", "FalsifierOptions", "Instance", "LinfRobustnessForm",
    "RESULT_COLUMNS", "SPEC_NODE", "VnnlibOptions", "VnnlibResult", "check_counterexample",
    "falsify", "linf_robustness_form", "milp_solvers", "read_instances", "run_vnncomp",
    "shared_rho_decisions", "spec_network", "verify_vnnlib",
]

PathLike = Union[str, "os.PathLike[str]"]
#: Name of the node `spec_network` appends: ``s = A y - b`` over all rows of a property.
SPEC_NODE = "vnnlib/spec"
#: Columns of the results CSV written by `run_vnncomp` (the first four are VNN-COMP's;
#: ``group`` names the shared-rho group an instance was answered in, empty otherwise).
RESULT_COLUMNS = ("onnx", "vnnlib", "result", "seconds", "timeout", "decided_by", "group",
                  "message")


# ---------------------------------------------------------------------------- results
@dataclass(frozen=True)
class VnnlibResult:
    """Answer to one VNN-LIB instance.

    Attributes
    ----------
    result : str
        ``"sat"`` (a counterexample passed the re-check), ``"unsat"`` (proven), ``"timeout"``
        (the time limit ran out first), ``"unknown"`` (gave up for another reason, e.g. the
        solver's points never survived the re-check), or ``"error"``.
    x, y : ndarray or None
        For ``sat``: the flat input (C order of the ONNX input; float32-representable values
        inside the box) and onnxruntime's outputs at it (numpy float64 outputs when the
        network has no ONNX origin).
    decided_by : str
        ``"bounds"``, ``"attack"``, ``"milp"``, ``"rho"`` (shared rho) or ``""``.
    timings : dict[str, float]
        Seconds per stage (``bounds_s``, ``attack_s``, ``tighten_s``, ``build_s``,
        ``solve_s``, ``total_s``).
    stats : dict[str, Any]
        Counts: ``disjuncts``, ``disjuncts_left``, ``unstable_symbolic``,
        ``unstable_tightened``, ``binaries``, ``nodes``.
    message : str
        Why, for anything but a clean ``sat``/``unsat``.
    """

    result: str
    x: FloatArray | None = None
    y: FloatArray | None = None
    decided_by: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    message: str = ""

    @property
    def counterexample(self) -> tuple[FloatArray, FloatArray] | None:
        """``(x, y)`` for ``sat``, else None."""
        if self.result != "sat" or self.x is None or self.y is None:
            return None
        return self.x, self.y

    def write(self, path: PathLike) -> None:
        """Write the VNN-COMP result file (first line the result, then the counterexample)."""
        write_result(path, self.result, self.counterexample)


@dataclass(frozen=True)
class CounterexampleCheck:
    """A candidate input re-run on the original network against one property.

    ``margin_* = max_d min_r (b_dr - (A_d y)_r)``: the point is unsafe when it is ``>= 0``
    (``+inf`` for a disjunct without rows). `verified` requires the rounded point inside
    the box and both margins ``>= 0``.
    """

    verified: bool
    x: FloatArray
    y_numpy: FloatArray
    y_onnx: FloatArray | None
    in_box: bool
    margin_numpy: float
    margin_onnx: float | None
    message: str

    @property
    def y(self) -> FloatArray:
        """The outputs to report: onnxruntime's when available, else numpy's."""
        return self.y_onnx if self.y_onnx is not None else self.y_numpy


# ---------------------------------------------------------------------------- options
@dataclass(frozen=True)
class FalsifierOptions:
    """Projected-gradient falsifier settings (see `falsify`).

    ``restarts`` starts per disjunct (the box centre, then uniform random points);
    ``steps`` signed-gradient steps per round with a step that decays linearly from
    ``step_start`` to ``step_end`` times the box width; rounds repeat with new random
    starts until ``time_limit_s``. At most ``max_disjuncts`` disjuncts are attacked (those
    the bounds leave possible, in file order).
    """

    time_limit_s: float = 1.0
    restarts: int = 4
    steps: int = 50
    step_start: float = 0.25
    step_end: float = 0.01
    max_disjuncts: int = 64
    seed: int = 0


@dataclass(frozen=True)
class VnnlibOptions:
    """How `verify_vnnlib` spends its time (defaults chosen by `benchmarks/vnncomp.py`).

    Attributes
    ----------
    attack : bool
        Run `falsify` on the disjuncts left after symbolic bounds, and again after the
        optimised-slope bounds; besides random starts, each disjunct is attacked from the
        box vertices at which the bounds' relaxation of its rows is smallest
        (``details["output_vertices"]`` of the bounds).
    attack_fraction : float
        Falsifier budget as a fraction of the timeout (capped by ``falsifier.time_limit_s``).
    alpha : bool
        After symbolic bounds and the falsifier, optimised-slope bounds
        (`milpverify.bounds.alpha`) on the properties still open; every later stage (MILPs,
        tightening) starts from them.
    alpha_fraction : float
        Their budget as a fraction of the property's time left.
    first_milp_fraction : float
        Before any tightening, run the MILP on the symbolic bounds for this fraction of the
        time left (0 disables this first try). Measured: many instances fall at the root
        there, where tightening would have cost more than the whole solve; those fall
        within 10 % of the time (every mnist_fc and eran instance it decides), and
        the rest goes better to the MILP on tightened bounds: 0.1 instead of 0.3 gained
        eran ``idx_2697`` and cut mnist_fc 256x4 ``prop_0_0.05`` from 168 s to 98 s
        (`benchmarks/results/vnncomp_devices.md`).
    tighten : bool
        Then LP bound tightening (`compute_bounds(method="progressive")`) and a second MILP.
    alpha_after_tighten : bool
        With `alpha`, optimise the slopes again on the tightened bounds: the spec rows'
        relaxation then uses the LP-tightened intermediate bounds. Measured: eran
        ``idx_3857`` decided by these bounds (198 s; a time-out without), none lost
        (`benchmarks/results/vnncomp_devices.md`).
    tighten_min_unstable : int
        Skip tightening when symbolic bounds leave fewer unstable ReLUs than this.
    tighten_fraction : float
        Tightening budget as a fraction of the time left after the first MILP.
    split_disjuncts : bool
        The last MILP (after tightening) becomes one MILP per remaining disjunct (tighter
        relaxation, no choice binaries), the one the bounds come nearest to refuting
        first, each allowed all the time left, instead of one MILP with a binary per
        disjunct; with `threads` > 1, that many of them run at once. The first MILP stays
        joint. Measured with `root_cut_rounds` 20 (`benchmarks/results/vnncomp_devices.md`):
        eran ``idx_1385`` unsat in each of 4 runs, 177-290 s (a time-out in every joint
        run); eran ``idx_2697`` unsat in 1 of 3 runs (as with the joint MILP); mnist_fc
        256x6 ``prop_3_0.05`` unsat in 176 s (a time-out with the joint MILP).
    root_cut_rounds : int or None
        At most this many cut separation rounds at the root of the decision MILPs (SCIP's
        ``separating/maxroundsroot``; other backends ignore it; ``solver_params`` overrides
        it); None keeps the solver's default (unlimited for SCIP). Measured on eran
        ``idx_1385``'s hardest disjunct: 105 rounds in 62 s raised the dual bound by about
        1e-4 each; with 20 it was infeasible in 61 s instead of 115 s.
    milp_objective : bool
        Minimise ``t`` subject to ``s_r <= t`` for the rows of the chosen disjunct, with
        ``t <= slack`` (so the feasible set is the same), instead of a pure feasibility
        problem: SCIP's root cuts then cut off the LP point that minimises ``t`` and raise
        a dual bound until it passes the slack; without an objective they cut off any LP
        vertex. Measured (`benchmarks/results/vnncomp_devices.md`, ``--milp-form
        objective``): eran ``idx_2697`` unsat in 215 s (27 of 36; a time-out in 2 of 3
        feasibility runs), but mnist_fc 256x6 ``prop_3_0.05`` lost and three 256x4
        instances 1.4-2.2x slower (branching: slower nodes), so feasibility stays the
        default.
    disjunct_tighten_fraction : float
        With `split_disjuncts`, before each disjunct's MILP, LP-tighten the bounds over
        the inputs whose spec outputs satisfy that disjunct (`compute_bounds(method="lp",
        output_constraint=)`, the disjunct's rows added to every LP) for this fraction of
        the time left; 0 (default) skips it. Scratch (eran ``idx_2697``'s hardest disjunct,
        pickled bounds): a first hand-written pass (181 s) left 493 of 497 ReLUs unstable
        and the feasibility MILP was then infeasible in 43 s at 2 nodes (a time-out at
        240 s before, and with 4 other SCIP seeds); this function's pass with 250 s proved
        that disjunct empty by its LP bounds in 190 s (passes of 44-84 s did not help), and
        made ``idx_1385``'s hardest one infeasible in 40 s after 200 s. In the pipeline it
        loses (`benchmarks/results/vnncomp_devices.md`, 0.5): eran ``idx_1385`` lost,
        ``idx_225`` 194 s instead of 169 s, ``idx_2697`` and ``idx_2954`` still time-outs;
        with 7-9 disjuncts open and about 125 s left a pass per disjunct does not fit.
    ideal_cuts : bool
        Let the MILP backend separate cuts of the ideal ReLU formulation
        (`milpverify.encode.ideal`; SCIP only, other backends ignore them). Measured
        (`benchmarks/results/vnncomp_devices.md`): one time-out solved of 14 tried on
        mnist_fc and one of 13 on eran; the instances the MILP decided before all still
        decided, in about the same total time.
    threads : int
        Threads of the solvers and of torch, neurons of the bound tightening solved at once
        (`compute_bounds(threads=)`) and MILPs solved at once (each with one thread; see
        `_solve_disjuncts`: with ``backend="scip+highs"`` at least one worker per solver).
        Before the stalled-LP restart of the tightening (`tighten.LP_RESOLVE_ITERATIONS_PER_DIM`,
        7e76ed6) not a gain: eran one instance at a time with 2 threads
        (`benchmarks/results/vnncomp_eran_scip_t2.csv`, ``scip_highs_t2``) decided
        ``idx_225`` and ``idx_2971`` faster (133 s and 101-105 s against 156-169 s) but lost
        ``idx_1385`` and ``idx_3539``. After it (``vnncomp_eran_t2_lp_restart.csv``, the four
        slowest solved and the eight time-outs of the 1-thread default): ``idx_3539``,
        ``idx_1385``, ``idx_2697``, ``idx_2954`` in 118-146 s (163-173 s with one thread, two
        instances side by side), the time-outs stay. Not yet measured on every instance.
    solver_params : dict
        Passed to the backend (SCIP parameter names for "scip").
    falsifier : FalsifierOptions
    """

    attack: bool = True
    attack_fraction: float = 0.1
    alpha: bool = True
    alpha_fraction: float = 0.15
    first_milp_fraction: float = 0.1
    tighten: bool = True
    alpha_after_tighten: bool = True
    tighten_min_unstable: int = 0
    tighten_fraction: float = 0.5
    split_disjuncts: bool = True
    root_cut_rounds: int | None = 20
    milp_objective: bool = False
    disjunct_tighten_fraction: float = 0.0
    ideal_cuts: bool = True
    threads: int = 1
    solver_params: dict[str, object] = field(default_factory=dict)
    falsifier: FalsifierOptions = field(default_factory=FalsifierOptions)

    def __post_init__(self) -> None:
        rounds = self.root_cut_rounds
        if rounds is not None and (isinstance(rounds, bool)
                                   or not isinstance(rounds, (int, np.integer)) or rounds < 0):
            raise InvalidInputError(f"`root_cut_rounds` must be an integer >= 0 or None (the "
                                    f"solver's default); got {rounds!r}.")
        if (isinstance(self.threads, bool) or not isinstance(self.threads, (int, np.integer))
                or self.threads < 1):
            raise InvalidInputError(f"`threads` must be an integer >= 1; got {self.threads!r}.")
        fraction = self.disjunct_tighten_fraction
        if (isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.floating))
                or not 0 <= fraction < 1):
            raise InvalidInputError(f"`disjunct_tighten_fraction` must be a number in [0, 1); "
                                    f"got {fraction!r}.")


def root_cut_rounds_flag(value: int | None) -> dict[str, int | None]:
    """A ``--root-cut-rounds N`` flag as `VnnlibOptions` keywords: nothing when the flag is
    absent (the option's default), None (the solver's default) when N < 0, else N."""
    if value is None:
        return {}
    return {"root_cut_rounds": None if value < 0 else value}


MILP_FORMS = ("objective", "feasibility")
"""Values of the ``--milp-form`` flag (`VnnlibOptions.milp_objective` true or false)."""


def milp_form_flag(value: str | None) -> dict[str, bool]:
    """A ``--milp-form objective|feasibility`` flag as `VnnlibOptions` keywords: nothing when
    the flag is absent (the option's default)."""
    if value is None:
        return {}
    if value not in MILP_FORMS:
        raise InvalidInputError(f"`--milp-form` must be one of {', '.join(MILP_FORMS)}; "
                                f"got {value!r}.")
    return {"milp_objective": value == "objective"}


# ---------------------------------------------------------------------------- helpers
def _rows(prop: VnnlibProperty) -> tuple[FloatArray, FloatArray, list[npt.NDArray[np.int64]]]:
    """All rows of a property stacked (``prop.unsafe`` is never empty), and the row indices
    of each disjunct."""
    a = np.vstack([c.A for c in prop.unsafe])
    b = np.concatenate([c.b for c in prop.unsafe])
    starts = np.cumsum([0] + [c.A.shape[0] for c in prop.unsafe])
    return a, b, [np.arange(s, e) for s, e in zip(starts[:-1], starts[1:])]


def spec_network(net: Network, a: FloatArray, b: FloatArray) -> Network:
    """`net` with one more node ``SPEC_NODE`` computing ``s = A y - b`` (y the outputs).

    Bounding ``s`` by back-substitution through the whole network (instead of bounding y
    and then ``A y`` by intervals) keeps the correlation between outputs: for the
    misclassification rows ``y_label - y_j`` this is what proves most instances. A row is
    satisfied (``A_r y <= b_r``) exactly when ``s_r <= 0``.
    """
    if a.shape[0] == 0:
        raise InvalidInputError("spec_network needs at least one output row")
    if SPEC_NODE in net.graph:
        raise InvalidInputError(f"the network already has a node named {SPEC_NODE!r}")
    spec = ops.Affine((net.output,), (a.shape[0],), np.asarray(a, dtype=np.float64),
                      -np.asarray(b, dtype=np.float64))
    return net.replace([*net.items(), (SPEC_NODE, spec)], SPEC_NODE,
                       notes=[f"VNN-LIB spec layer: {a.shape[0]} output rows A y - b"])


def _float32_in_box(x: FloatArray, lower: FloatArray, upper: FloatArray) -> FloatArray:
    """Nearest float32 values to `x` clipped into the box, nudged inward where rounding left it.

    The ONNX model runs in float32 and VNN-COMP re-runs the written X values as float32, so
    the checked point must be float32 and inside the (float64) box. A coordinate whose box
    holds no float32 value stays outside (and the check rejects the point).
    """
    x32 = np.clip(np.asarray(x, dtype=np.float64).reshape(-1), lower, upper).astype(np.float32)
    high = x32.astype(np.float64) > upper
    x32[high] = np.nextafter(x32[high], np.float32(-np.inf))
    low = x32.astype(np.float64) < lower
    x32[low] = np.nextafter(x32[low], np.float32(np.inf))
    return x32.astype(np.float64)


def _unsafe_margin(a: FloatArray, b: FloatArray, groups: list[npt.NDArray[np.int64]],
                   y: FloatArray) -> FloatArray:
    """``max_d min_{r in d} (b_r - (A y)_r)`` per row of the batch `y` (n, outputs)."""
    slack = b[None, :] - y @ a.T
    out = np.full(y.shape[0], -np.inf)
    for g in groups:
        value = slack[:, g].min(axis=1) if len(g) else np.full(y.shape[0], np.inf)
        out = np.maximum(out, value)
    return out


def check_counterexample(net: Network, prop: VnnlibProperty, x: npt.ArrayLike
                         ) -> CounterexampleCheck:
    """Round `x` to float32 inside the property's box and re-run it on the original model.

    Parameters
    ----------
    net : Network
        The network; when it has an ONNX origin the point is also run by onnxruntime on the
        original file (`milpverify.witness.onnx_logits`).
    prop : VnnlibProperty
    x : array
        A flat input (C order of the ONNX input) or anything `net.as_batch` accepts.

    Returns
    -------
    CounterexampleCheck
        ``verified`` iff the rounded point lies in the box and both numpy float64 and
        onnxruntime outputs satisfy some disjunct ``A y <= b`` (no tolerance).

    Example
    -------
    >>> check_counterexample(net, spec.properties[0], x).verified
    True
    """
    point = _float32_in_box(net.as_batch(x)[0], prop.input_lower, prop.input_upper)
    in_box = bool(np.all(point >= prop.input_lower) and np.all(point <= prop.input_upper))
    a, b, groups = _rows(prop)
    y_np = net.forward(point)[0]
    margin_np = float(_unsafe_margin(a, b, groups, y_np[None])[0])
    ref = onnx_logits(net, point)
    y_ort = None if ref is None else ref[0]
    margin_ort = None if y_ort is None else float(_unsafe_margin(a, b, groups, y_ort[None])[0])
    verified = in_box and margin_np >= 0 and (margin_ort is None or margin_ort >= 0)
    message = "" if verified else (
        f"counterexample rejected: in_box={in_box}, numpy margin {margin_np:.3g}, "
        f"onnxruntime margin {'n/a' if margin_ort is None else f'{margin_ort:.3g}'} "
        "(need >= 0)")
    return CounterexampleCheck(verified, point, y_np, y_ort, in_box, margin_np, margin_ort,
                               message)


# ---------------------------------------------------------------------------- falsifier
def _input_gradient(net: Network, x: FloatArray, out_grad: FloatArray) -> FloatArray:
    """``d (sum_k out_grad[k] . f(x_k)) / d x`` by reverse mode through the IR (numpy).

    Piecewise-linear ops only: linear ops pass ``g M``; ReLU passes g where its input is
    positive; MaxPool routes g to the first maximal window entry; Add copies g to both
    arguments; Concat scatters g back to its inputs.
    """
    values = net.forward_all(x, flat=True)
    grads: dict[str, FloatArray] = {net.output: out_grad}
    for name in reversed(net.order):
        op = net.op(name)
        g = grads.pop(name, None)
        if g is None or isinstance(op, ops.Input):
            if isinstance(op, ops.Input):
                return g if g is not None else np.zeros_like(values[name])
            continue
        parts: list[tuple[str, FloatArray]]
        if isinstance(op, ops.LinearOp):
            matrix, _ = op.linear_map
            back = g @ matrix if isinstance(matrix, np.ndarray) else (matrix.T @ g.T).T
            parts = [(op.inputs[0], np.asarray(back))]
        elif isinstance(op, ops.Relu):
            parts = [(op.inputs[0], g * (values[op.inputs[0]] > 0))]
        elif isinstance(op, ops.MaxPool):
            src = values[op.inputs[0]]
            padded = np.concatenate([src, np.full((src.shape[0], 1), -np.inf)], axis=1)
            win = op.windows
            arg = np.take_along_axis(np.broadcast_to(win, (src.shape[0], *win.shape)),
                                     padded[:, win].argmax(axis=-1)[..., None], axis=-1)[..., 0]
            back = np.zeros_like(src)
            rows = np.repeat(np.arange(src.shape[0]), win.shape[0])
            np.add.at(back, (rows, arg.reshape(-1)), g.reshape(-1))
            parts = [(op.inputs[0], back)]
        elif isinstance(op, ops.Add):
            parts = [(op.inputs[0], g), (op.inputs[1], g)]
        elif isinstance(op, ops.Concat):
            joined = np.zeros((g.shape[0], sum(net.op(i).size for i in op.inputs)))
            np.add.at(joined, (slice(None), op.index), g)
            sizes = np.cumsum([0] + [net.op(i).size for i in op.inputs])
            parts = [(i, joined[:, s:e]) for i, s, e in zip(op.inputs, sizes[:-1], sizes[1:])]
        else:  # every IR op is listed above; a new op must get a rule here
            raise InvalidInputError(f"falsifier has no gradient rule for {type(op).__name__}")
        for arg_name, back in parts:
            grads[arg_name] = grads[arg_name] + back if arg_name in grads else back
    raise InvalidInputError("network has no input node")  # unreachable for a valid Network


def falsify(net: Network, prop: VnnlibProperty, *, options: FalsifierOptions | None = None,
            disjuncts: Sequence[int] | None = None, starts: npt.ArrayLike | None = None,
            start_disjuncts: npt.ArrayLike | None = None) -> CounterexampleCheck | None:
    """Search the property's box for a counterexample by projected signed-gradient ascent.

    For each disjunct ``d`` separately (targeted), maximise ``min_r (b_dr - (A_d f(x))_r)``
    over the box from several starts; every point reaching ``>= 0`` is re-checked with
    `check_counterexample` and the first verified one is returned. Gradients come from a
    numpy reverse pass through the IR (`_input_gradient`), so no torch is needed.

    Parameters
    ----------
    net : Network
    prop : VnnlibProperty
    options : FalsifierOptions, optional
    disjuncts : sequence of int, optional
        Indices into ``prop.unsafe`` to attack (default all, capped by
        ``options.max_disjuncts``).
    starts : array, optional
        Extra starting points (n, input_size), e.g. a solver point that just failed the
        re-check, or the vertices where a bound's relaxation is smallest; they are tried
        first.
    start_disjuncts : array of int, optional
        With `starts`: the disjunct (an index into ``prop.unsafe``) each start attacks;
        starts whose disjunct is not attacked are dropped. Default: every start attacks
        every disjunct.

    Returns
    -------
    CounterexampleCheck or None
        A verified counterexample, or None if none was found in the time limit (which
        proves nothing).

    Example
    -------
    >>> found = falsify(net, spec.properties[0], options=FalsifierOptions(time_limit_s=2))
    """
    opts = options or FalsifierOptions()
    start_time = time.perf_counter()
    deadline = start_time + opts.time_limit_s
    lo, hi = prop.input_lower, prop.input_upper
    width = hi - lo
    chosen = list(range(len(prop.unsafe)) if disjuncts is None else disjuncts)
    chosen = chosen[: opts.max_disjuncts]
    if not chosen:
        return None
    for d in chosen:
        if prop.unsafe[d].A.shape[0] == 0:  # no rows: every point of the box is unsafe
            return _verified_or_none(check_counterexample(net, prop, 0.5 * (lo + hi)))
    a_list = [prop.unsafe[d].A for d in chosen]
    b_list = [prop.unsafe[d].b for d in chosen]
    k = max(x.shape[0] for x in a_list)
    n_out = a_list[0].shape[1]
    # Rows padded to k per disjunct; padding repeats the disjunct's first row (same min).
    a_pad = np.stack([np.vstack([x, np.repeat(x[:1], k - x.shape[0], axis=0)]) for x in a_list])
    b_pad = np.stack([np.r_[x, np.repeat(x[:1], k - x.shape[0])] for x in b_list])
    rng = np.random.default_rng(opts.seed)
    n_d = len(chosen)
    # round 0 first tries the extra starts: each against its own disjunct, or against all
    extra_x, extra_owner = np.empty((0, lo.size)), np.empty(0, dtype=np.int64)
    if starts is not None:
        extra = np.clip(np.atleast_2d(np.asarray(starts, dtype=np.float64)).reshape(-1, lo.size),
                        lo, hi)
        if start_disjuncts is None:
            extra_x = np.tile(extra, (n_d, 1))
            extra_owner = np.repeat(np.arange(n_d), len(extra))
        else:
            slot = {d: k for k, d in enumerate(chosen)}
            wanted = [slot.get(int(d), -1) for d in np.asarray(start_disjuncts).reshape(-1)]
            if len(wanted) != len(extra):
                raise InvalidInputError(f"`start_disjuncts` names {len(wanted)} disjuncts for "
                                        f"{len(extra)} starts; give one per start.")
            owner_of = np.array(wanted, dtype=np.int64)
            extra_x, extra_owner = extra[owner_of >= 0], owner_of[owner_of >= 0]
    round_ = 0
    while time.perf_counter() < deadline:
        if round_ == 0:
            z = np.r_[0.5 * (lo + hi)[None],
                      rng.uniform(lo, hi, size=(max(opts.restarts - 1, 0), lo.size))]
        else:
            z = rng.uniform(lo, hi, size=(opts.restarts, lo.size))
        per = z.shape[0]
        x = np.tile(z, (n_d, 1))            # rows: disjunct-major
        owner = np.repeat(np.arange(n_d), per)
        if round_ == 0:
            x, owner = np.r_[extra_x, x], np.r_[extra_owner, owner]
        a_rows, b_rows = a_pad[owner], b_pad[owner]            # (B, k, out), (B, k)
        for step in range(opts.steps + 1):
            y = net.forward(x)
            slack = b_rows - np.einsum("bko,bo->bk", a_rows, y)
            worst = slack.argmin(axis=1)
            value = slack[np.arange(len(x)), worst]
            hits = np.flatnonzero(value >= 0)
            for row in hits[np.argsort(-value[hits])][:3]:
                found = check_counterexample(net, prop, x[row])
                if found.verified:
                    return found
            if step == opts.steps or time.perf_counter() >= deadline:
                break
            # d value / d y = -A[worst row]; ascend
            out_grad = -a_rows[np.arange(len(x)), worst]
            grad = _input_gradient(net, x, out_grad.reshape(len(x), n_out))
            frac = step / max(opts.steps - 1, 1)
            alpha = opts.step_start + (opts.step_end - opts.step_start) * frac
            x = np.clip(x + alpha * width * np.sign(grad), lo, hi)
        round_ += 1
    return None


def _verified_or_none(check: CounterexampleCheck) -> CounterexampleCheck | None:
    return check if check.verified else None


# ---------------------------------------------------------------------------- one property
@dataclass
class _PropertyOutcome:
    result: str                                # sat / unsat / timeout / unknown / error
    check: CounterexampleCheck | None = None
    decided_by: str = ""
    message: str = ""


def _possible(bounds_lower: FloatArray, groups: list[npt.NDArray[np.int64]],
              alive: list[int]) -> list[int]:
    """Disjuncts not refuted by the bounds: every row can still reach ``s_r <= 0``."""
    return [d for d in alive if np.all(bounds_lower[groups[d]] <= 0.0)]


def _nearest_refuted_first(bounds: Any, groups: list[npt.NDArray[np.int64]],
                           alive: list[int]) -> list[int]:
    """`alive` ordered by how close the bounds come to refuting each disjunct: the largest
    ``max_r lower(s_r)`` (a disjunct falls when one of its rows is positive) first."""
    lower = bounds.flat(SPEC_NODE)[0]
    return sorted(alive, key=lambda d: -float(np.max(lower[groups[d]])))


def milp_solvers(backend: str) -> tuple[str, ...]:
    """The solvers named by `backend`: one name, or several joined by ``+`` (e.g.
    ``"scip+highs"``), each checked by `get_backend`."""
    solvers = tuple(part.strip().lower() for part in str(backend).split("+"))
    if not all(solvers):
        raise InvalidInputError(f"backend {backend!r}: give one solver name or several joined "
                                "by '+', e.g. 'scip+highs'")
    for name in solvers:
        get_backend(name)
    return solvers


def _solve_disjuncts(aug: Network, bounds: Any, prop: VnnlibProperty,
                     groups: list[npt.NDArray[np.int64]], alive: list[int], net: Network,
                     deadline: float, backend: str, opts: VnnlibOptions,
                     timings: dict[str, float], stats: dict[str, Any], split: bool = False
                     ) -> tuple[_PropertyOutcome, list[int]]:
    """Feasibility MILP(s) over the spec outputs; returns the outcome and the disjuncts
    still open (those not proven impossible).

    With `split`, one MILP per disjunct in `_nearest_refuted_first` order, else one MILP
    for all. ``max(opts.threads, solvers)`` workers share them (`milp_solvers`; with
    several workers each solver runs one thread): worker k runs solver ``k % solvers``
    and starts the next MILP nobody has started, even workers from the front of the
    order and odd ones from the back, so that with two the hardest MILP gets a solver at
    once. With nothing left to start, a worker joins a MILP only other solvers are
    running: a race, the first proof cancels the rest. A counterexample cancels
    everything.
    """
    solvers = milp_solvers(backend)
    n_rows = aug.num_classes
    batches = ([[d] for d in _nearest_refuted_first(bounds, groups, alive)] if split
               else [list(alive)])
    workers = max(opts.threads, len(solvers))
    solve_opts = replace(opts, threads=1) if workers > 1 else opts
    lock = threading.Lock()
    running: list[set[str]] = [set() for _ in batches]
    tried: list[set[str]] = [set() for _ in batches]
    cancels = [threading.Event() for _ in batches]
    decided: dict[int, _PropertyOutcome] = {}
    undecided: dict[int, _PropertyOutcome] = {}
    found_sat = threading.Event()

    def pick(solver: str, backwards: bool) -> int | None:
        order = range(len(batches) - 1, -1, -1) if backwards else range(len(batches))
        open_ = [i for i in order if i not in decided and solver not in running[i] | tried[i]]
        free = [i for i in open_ if not running[i]]
        return (free or open_ or [None])[0]

    def work(k: int) -> None:
        solver = solvers[k % len(solvers)]
        while True:
            with lock:
                if found_sat.is_set() or time.perf_counter() >= deadline:
                    return
                i = pick(solver, backwards=k % 2 == 1)
                if i is None:
                    return
                running[i].add(solver)
            own_timings: dict[str, float] = {}
            own_stats: dict[str, Any] = {}
            outcome = _solve_batch(aug, bounds, prop, groups, batches[i], n_rows, net,
                                   deadline, solver, solve_opts, own_timings, own_stats,
                                   cancels[i])
            with lock:
                running[i].discard(solver)
                tried[i].add(solver)
                for key, value in own_timings.items():
                    timings[key] = timings.get(key, 0.0) + value
                stats["nodes"] = stats.get("nodes", 0) + own_stats.get("nodes", 0)
                stats["binaries"] = max(stats.get("binaries", 0), own_stats.get("binaries", 0))
                if i in decided:
                    continue  # another solver proved it first (this one was cancelled)
                if outcome.result in ("sat", "unsat"):
                    decided[i] = outcome
                    cancels[i].set()
                    if outcome.result == "sat":
                        found_sat.set()
                        for event in cancels:
                            event.set()
                else:
                    undecided[i] = outcome

    if workers > 1:
        with ThreadPoolExecutor(workers, thread_name_prefix="milp") as pool:
            list(pool.map(work, range(workers)))
    else:
        work(0)
    for i, outcome in decided.items():
        if outcome.result == "sat":
            return outcome, batches[i]
    still_open = [d for i, batch in enumerate(batches) if i not in decided for d in batch]
    if not still_open:
        return _PropertyOutcome("unsat", decided_by="milp"), []
    left = [undecided.get(i, _PropertyOutcome("timeout", message="time limit reached"))
            for i in range(len(batches)) if i not in decided]
    for word in ("error", "timeout", "unknown"):
        hit = [o for o in left if o.result == word]
        if hit:
            message = "; ".join(dict.fromkeys(o.message for o in hit))
            return _PropertyOutcome(word, message=message), still_open
    return left[0], still_open  # unreachable: outcomes are the words above


def _selection(groups: list[npt.NDArray[np.int64]], batch: list[int], n_rows: int,
               rhs: float) -> list[Disjunct]:
    out = []
    for d in batch:
        sel = np.zeros((len(groups[d]), n_rows))
        sel[np.arange(len(groups[d])), groups[d]] = 1.0
        out.append(Disjunct(sel, np.full(len(groups[d]), rhs), str(d)))
    return out


def _build_milp(aug: Network, bounds: Any, prop: VnnlibProperty,
                groups: list[npt.NDArray[np.int64]], batch: list[int], n_rows: int, rhs: float,
                objective: bool, ideal_cuts: bool = False) -> tuple[Any, npt.NDArray[np.int64]]:
    """The unsafe-set MILP over the spec outputs ``s``: ``OR_d AND_{r in d} s_r <= rhs``
    (`_unsafe_model`), carrying the ReLU cut separators with `ideal_cuts`."""
    model, input_vars, encoding = _unsafe_model(aug, bounds, prop, groups, batch, n_rows, rhs,
                                                objective)
    if ideal_cuts:
        for separator in relu_cut_separators(aug, bounds, encoding):
            model.add_separator(separator)
    return model, input_vars


def _unsafe_model(aug: Network, bounds: Any, prop: VnnlibProperty,
                  groups: list[npt.NDArray[np.int64]], batch: list[int], n_rows: int,
                  rhs: float, objective: bool
                  ) -> tuple[MilpModel, npt.NDArray[np.int64], NetworkEncoding]:
    """The unsafe-set MILP, its input variables and the network's encoding.

    With `objective`: a variable ``t in [t_lo, rhs]``, ``u = s - t`` and the disjunction
    ``OR_d AND_r u_r <= 0``, minimising t. ``t_lo = min_d max_r lower(s_r)`` is a valid
    lower bound, and ``t <= rhs`` keeps the feasible inputs exactly those of the
    feasibility form.
    """
    if not objective:
        problem = build_unsafe_problem(aug, None, bounds, prop.input_lower, prop.input_upper,
                                       _selection(groups, batch, n_rows, rhs),
                                       with_distance=False)
        return problem.model, problem.input_vars, problem.encoding
    model = MilpModel()
    xv = model.add_vars(aug.input_size, prop.input_lower, prop.input_upper, name="input")
    used = np.zeros(n_rows, dtype=bool)
    for d in batch:
        used[groups[d]] = True
    enc = encode_network(aug, bounds, model, Term.of_vars(xv), outputs=used)
    s_lo, s_hi = bounds.flat(SPEC_NODE)
    t_lo = min(float(np.max(s_lo[groups[d]])) for d in batch)
    t_lo = min(t_lo, rhs)
    t = int(model.add_vars(1, t_lo, rhs, name="unsafe.t")[0])
    rows = np.flatnonzero(used)
    u = model.add_vars(len(rows), s_lo[rows] - rhs, s_hi[rows] - t_lo, name="unsafe.u")
    term = enc.terms[SPEC_NODE]
    for k, r in enumerate(rows):  # u_k - s_r + t = 0 (s_r constant: u_k + t = s_r)
        if term.var[r] >= 0:
            model.add_rows(np.zeros(3, dtype=np.int64), np.array([u[k], term.var[r], t]),
                           np.array([1.0, -1.0, 1.0]), 1, 0.0, 0.0, name=f"unsafe.u[{r}]")
        else:
            model.add_rows(np.zeros(2, dtype=np.int64), np.array([u[k], t]),
                           np.array([1.0, 1.0]), 1, term.const[r], term.const[r],
                           name=f"unsafe.u[{r}]")
    position = {int(r): k for k, r in enumerate(rows)}
    u_lo, u_hi = s_lo[rows] - rhs, s_hi[rows] - t_lo
    disjuncts = []
    for d in batch:
        sel = np.zeros((len(groups[d]), len(rows)))
        sel[np.arange(len(groups[d])), [position[int(r)] for r in groups[d]]] = 1.0
        disjuncts.append(Disjunct(sel, np.zeros(len(groups[d])), str(d)))
    add_unsafe_set(model, Term.of_vars(u), disjuncts, u_lo, u_hi)
    model.set_objective(np.array([t]), np.array([1.0]))
    return model, xv, enc


def _milp_params(backend: str, opts: VnnlibOptions) -> dict[str, object]:
    """Solver parameters of the decision MILPs: `root_cut_rounds` (SCIP), then
    ``opts.solver_params``."""
    params: dict[str, object] = {}
    if backend == "scip" and opts.root_cut_rounds is not None:
        params["separating/maxroundsroot"] = int(opts.root_cut_rounds)
    return {**params, **opts.solver_params}


def _solve_batch(aug: Network, bounds: Any, prop: VnnlibProperty,
                 groups: list[npt.NDArray[np.int64]], batch: list[int], n_rows: int,
                 net: Network, deadline: float, backend: str, opts: VnnlibOptions,
                 timings: dict[str, float], stats: dict[str, Any],
                 cancel: threading.Event | None = None) -> _PropertyOutcome:
    solver = get_backend(backend)
    message = ""
    if len(batch) == 1 and opts.disjunct_tighten_fraction > 0:
        bounds = _disjunct_bounds(aug, bounds, prop, _selection(groups, batch, n_rows,
                                                                SOLVER_SLACK)[0], deadline,
                                  opts, timings)
        if bounds is None:
            return _PropertyOutcome("unsat", decided_by="bounds")
    # s <= SOLVER_SLACK: infeasible proves unsat although SCIP accepts ~1e-6 violations;
    # then s <= -WITNESS_MARGIN for a point that survives float32 rounding and onnxruntime.
    for attempt, rhs in enumerate((SOLVER_SLACK, -WITNESS_MARGIN)):
        t0 = time.perf_counter()
        model, input_vars = _build_milp(aug, bounds, prop, groups, batch, n_rows, rhs,
                                        opts.milp_objective,
                                        opts.ideal_cuts and backend == "scip")
        timings["build_s"] = timings.get("build_s", 0.0) + time.perf_counter() - t0
        stats["binaries"] = max(stats.get("binaries", 0), int(model.n_integer))
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            return _PropertyOutcome("timeout", message="time limit reached before the solve")
        options = SolveOptions(time_limit_s=remaining, threads=opts.threads,
                               stop_at_first_feasible=True, cancel=cancel,
                               solver_params=_milp_params(backend, opts))
        t1 = time.perf_counter()
        result = solver.solve(model, options)
        timings["solve_s"] = timings.get("solve_s", 0.0) + time.perf_counter() - t1
        stats["nodes"] = stats.get("nodes", 0) + result.nodes
        if result.status == SolveStatus.ERROR:
            return _PropertyOutcome("error", message=f"solver error: {result.message}")
        if result.status.no_solution_proven:
            if attempt == 0:
                return _PropertyOutcome("unsat", decided_by="milp")
            return _PropertyOutcome(
                "unknown", message=f"unsafe points exist only within {WITNESS_MARGIN:g} of the "
                                   "boundary of the unsafe set (not resolved)")
        if result.x is None:
            return _PropertyOutcome("timeout", message=f"solver stopped: {result.status.value}")
        point = result.x[input_vars]
        check = check_counterexample(net, prop, point)
        if check.verified:
            return _PropertyOutcome("sat", check, "milp")
        # A few falsifier steps from the solver point usually cross the boundary.
        polish = FalsifierOptions(time_limit_s=min(2.0, max(deadline - time.perf_counter(), 0)),
                                  restarts=1, steps=20, step_start=1e-3, step_end=1e-5)
        found = falsify(net, prop, options=polish, disjuncts=batch, starts=point[None])
        if found is not None:
            return _PropertyOutcome("sat", found, "milp")
        message = check.message
    return _PropertyOutcome("unknown", message=f"the solver's points failed the re-check: "
                                               f"{message}")


def _disjunct_bounds(aug: Network, bounds: Any, prop: VnnlibProperty, disjunct: Disjunct,
                     deadline: float, opts: VnnlibOptions, timings: dict[str, float]) -> Any:
    """`bounds` LP-tightened over the inputs whose spec outputs satisfy `disjunct` (at
    ``SOLVER_SLACK``, so valid for its MILP at either right-hand side), for
    `disjunct_tighten_fraction` of the time left; None if they prove no input does."""
    budget = opts.disjunct_tighten_fraction * (deadline - time.perf_counter())
    if budget <= 0:
        return bounds
    t0 = time.perf_counter()
    out = compute_bounds(aug, prop.input_lower, prop.input_upper, method="lp", base=bounds,
                         time_limit_s=budget, threads=opts.threads,
                         output_constraint=(disjunct.A, disjunct.b))
    timings["disjunct_tighten_s"] = (timings.get("disjunct_tighten_s", 0.0)
                                     + time.perf_counter() - t0)
    lower = out.flat(SPEC_NODE)[0]  # A selects rows (0/1): A @ lower bounds A s below
    if out.details["empty"] or np.any(disjunct.A @ lower > disjunct.b):
        return None
    return out


def _vertex_starts(bounds: Any, groups: list[npt.NDArray[np.int64]],
                   alive: list[int]) -> tuple[FloatArray, npt.NDArray[np.int64]]:
    """Attack starts from the bounds: for every row ``r`` of an open disjunct, the box
    vertices at which the relaxation's lower bounds of ``s_r`` are attained
    (`bound_vertices`), each paired with its disjunct."""
    vertices = np.asarray(bounds.details.get("output_vertices", np.empty((0, 0))))
    n_rows = sum(len(g) for g in groups)
    if vertices.size == 0 or vertices.shape[0] % (2 * n_rows):
        return np.empty((0, vertices.shape[-1])), np.empty(0, dtype=np.int64)
    lower_rows = vertices.reshape(-1, 2 * n_rows, vertices.shape[1])[:, :n_rows]
    rows = [(d, r) for d in alive for r in groups[d]]
    starts = lower_rows[:, [r for _, r in rows]].reshape(-1, vertices.shape[1])
    owners = np.tile(np.array([d for d, _ in rows], dtype=np.int64), lower_rows.shape[0])
    return starts, owners


def _attack(net: Network, prop: VnnlibProperty, bounds: Any,
            groups: list[npt.NDArray[np.int64]], alive: list[int], falsifier: FalsifierOptions,
            attack_s: float, deadline: float, timings: dict[str, float]
            ) -> CounterexampleCheck | None:
    """`falsify` the open disjuncts for at most `attack_s` (and not past `deadline`), from
    random starts and from the bounds' vertices (`_vertex_starts`)."""
    t0 = time.perf_counter()
    starts, owners = _vertex_starts(bounds, groups, alive)
    found = falsify(net, prop, options=replace(falsifier,
                                               time_limit_s=min(attack_s, deadline - t0)),
                    disjuncts=alive, starts=starts, start_disjuncts=owners)
    timings["attack_s"] = timings.get("attack_s", 0.0) + time.perf_counter() - t0
    return found


def _optimised_slopes(aug: Network, prop: VnnlibProperty, bounds: Any, deadline: float,
                      opts: VnnlibOptions, timings: dict[str, float]) -> Any:
    """`alpha_bounds` on top of `bounds` (inside them) within `alpha_fraction` of the time
    left, its seconds added to ``timings["alpha_s"]``."""
    t0 = time.perf_counter()
    out = alpha_bounds(aug, prop.input_lower, prop.input_upper, base=bounds,
                       time_limit_s=max(opts.alpha_fraction * (deadline - t0), 1e-3),
                       threads=opts.threads)
    timings["alpha_s"] = timings.get("alpha_s", 0.0) + time.perf_counter() - t0
    return out


def _decide_property(net: Network, prop: VnnlibProperty, deadline: float, backend: str,
                     opts: VnnlibOptions, attack_s: float, timings: dict[str, float],
                     stats: dict[str, Any]) -> _PropertyOutcome:
    a, b, groups = _rows(prop)
    stats["disjuncts"] = stats.get("disjuncts", 0) + len(groups)
    if any(len(g) == 0 for g in groups):  # a disjunct without rows: the whole box is unsafe
        check = check_counterexample(net, prop, 0.5 * (prop.input_lower + prop.input_upper))
        if check.verified:
            return _PropertyOutcome("sat", check, "bounds")
        return _PropertyOutcome("unknown", message=check.message)
    aug = spec_network(net, a, b)
    t0 = time.perf_counter()
    bounds = compute_bounds(aug, prop.input_lower, prop.input_upper, method="symbolic")
    timings["bounds_s"] = timings.get("bounds_s", 0.0) + time.perf_counter() - t0
    stats["unstable_symbolic"] = stats.get("unstable_symbolic", 0) + bounds.unstable
    alive = _possible(bounds.flat(SPEC_NODE)[0], groups, list(range(len(groups))))
    if not alive:
        return _PropertyOutcome("unsat", decided_by="bounds")
    s_upper = bounds.flat(SPEC_NODE)[1]
    for d in alive:  # every row of d holds on the whole box: any point is a counterexample
        if np.all(s_upper[groups[d]] <= -WITNESS_MARGIN):
            check = check_counterexample(net, prop, 0.5 * (prop.input_lower + prop.input_upper))
            if check.verified:
                return _PropertyOutcome("sat", check, "bounds")
    if opts.attack and attack_s > 0:
        found = _attack(net, prop, bounds, groups, alive, opts.falsifier, attack_s, deadline,
                        timings)
        if found is not None:
            return _PropertyOutcome("sat", found, "attack")
    # Optimised slopes after the (cheap) falsifier: what it answers never pays for them.
    if opts.alpha and bounds.unstable:
        bounds = _optimised_slopes(aug, prop, bounds, deadline, opts, timings)
        stats["unstable_alpha"] = stats.get("unstable_alpha", 0) + bounds.unstable
        alive = _possible(bounds.flat(SPEC_NODE)[0], groups, alive)
        if not alive:
            return _PropertyOutcome("unsat", decided_by="bounds")
        if opts.attack and attack_s > 0:  # again from where the optimised bounds point
            found = _attack(net, prop, bounds, groups, alive,
                            replace(opts.falsifier, restarts=1), attack_s, deadline, timings)
            if found is not None:
                return _PropertyOutcome("sat", found, "attack")
    remaining = deadline - time.perf_counter()
    if remaining <= 0:
        return _PropertyOutcome("timeout", message="time limit reached after the bounds")
    if opts.first_milp_fraction > 0 and opts.tighten:
        outcome, alive = _solve_disjuncts(
            aug, bounds, prop, groups, alive, net,
            time.perf_counter() + opts.first_milp_fraction * remaining, backend, opts,
            timings, stats)
        if outcome.result in ("sat", "unsat", "error") or not alive:
            return outcome
        remaining = deadline - time.perf_counter()
    if opts.tighten and bounds.unstable >= opts.tighten_min_unstable and remaining > 0:
        t0 = time.perf_counter()
        bounds = compute_bounds(aug, prop.input_lower, prop.input_upper, method="progressive",
                                time_limit_s=max(remaining * opts.tighten_fraction, 1e-3),
                                base=bounds, threads=opts.threads)
        timings["tighten_s"] = timings.get("tighten_s", 0.0) + time.perf_counter() - t0
        if opts.alpha and opts.alpha_after_tighten and bounds.unstable:
            bounds = _optimised_slopes(aug, prop, bounds, deadline, opts, timings)
        stats["unstable_tightened"] = stats.get("unstable_tightened", 0) + bounds.unstable
        alive = _possible(bounds.flat(SPEC_NODE)[0], groups, alive)
        if not alive:
            return _PropertyOutcome("unsat", decided_by="bounds")
    stats["disjuncts_left"] = stats.get("disjuncts_left", 0) + len(alive)
    if deadline - time.perf_counter() <= 0:
        return _PropertyOutcome("timeout", message="time limit reached before the MILP")
    outcome, _ = _solve_disjuncts(aug, bounds, prop, groups, alive, net, deadline, backend,
                                  opts, timings, stats, split=opts.split_disjuncts)
    return outcome


def _as_network(net_or_path: Network | PathLike) -> Network:
    if isinstance(net_or_path, Network):
        return net_or_path
    from milpverify.frontends.onnx import load_onnx
    return load_onnx(net_or_path)


def _as_spec(spec_or_path: VnnlibSpec | PathLike, net: Network) -> VnnlibSpec:
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
    spec = _as_spec(spec_or_path, net)
    timings["load_s"] = time.perf_counter() - start
    milp_solvers(backend)  # fail early when a solver is missing or unknown

    def done(result: str, check: CounterexampleCheck | None = None, by: str = "",
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
        by = "milp" if any(o.decided_by == "milp" for o in outcomes) else "bounds"
        return done("unsat", by=by)
    for word in ("error", "timeout", "unknown"):
        hit = [o for o in outcomes if o.result == word]
        if hit:
            return done(word, message="; ".join(o.message for o in hit if o.message))
    return done("unknown")  # unreachable: every outcome is one of the words above


# ---------------------------------------------------------------------------- shared rho
@dataclass(frozen=True)
class LinfRobustnessForm:
    """A spec recognised as "some other output reaches y_label on an L-inf box around a centre".

    Attributes
    ----------
    label : int
    centre : ndarray
        Reconstructed centre (midpoint where the box is not clipped to the domain).
    radius : float
        Smallest r with ``box ⊆ {x : ||x - centre||_inf <= r}`` (rounded up).
    exact : bool
        The box equals ``[max(lo, c - r), min(hi, c + r)]`` up to float32 rounding (1e-7);
        when False the ball is larger than the box and only witnesses inside the box can
        answer the instance.
    lower, upper : ndarray
        The box as read.
    """

    label: int
    centre: FloatArray
    radius: float
    exact: bool
    lower: FloatArray
    upper: FloatArray


#: Reconstruction tolerance of `linf_robustness_form` (VNN-COMP writes float32 boxes).
RECONSTRUCTION_TOL = 1e-7


def _misclassification_label(prop: VnnlibProperty, n_out: int) -> int | None:
    """The label if the unsafe set is exactly ``OR_{j != label} y_j >= y_label``, else None."""
    if len(prop.unsafe) != n_out - 1:
        return None
    labels, others = set(), set()
    for c in prop.unsafe:
        if c.A.shape[0] != 1 or c.b[0] != 0.0:
            return None
        row = c.A[0]
        pos, neg = np.flatnonzero(row > 0), np.flatnonzero(row < 0)
        if len(pos) != 1 or len(neg) != 1 or row[pos[0]] != -row[neg[0]]:
            return None
        labels.add(int(pos[0]))
        others.add(int(neg[0]))
    if len(labels) != 1:
        return None
    label = labels.pop()
    return label if others == set(range(n_out)) - {label} else None


def _containing_radius(centre: FloatArray, lower: FloatArray, upper: FloatArray) -> float:
    """Smallest r (rounded up) with the box inside the L-inf ball of radius r at `centre`."""
    r = float(np.max(np.maximum(centre - lower, upper - centre)))
    return float(np.nextafter(r * (1.0 + 1e-12), np.inf))


def linf_robustness_form(spec: VnnlibSpec, *, domain: tuple[float, float] = (0.0, 1.0),
                         centre: npt.ArrayLike | None = None) -> LinfRobustnessForm | None:
    """Recognise a standard L-inf robustness spec (clipped box + misclassification set).

    Parameters
    ----------
    spec : VnnlibSpec
    domain : (low, high)
        The box must lie inside it (the clipping range).
    centre : array, optional
        Use this centre (e.g. another instance's) instead of reconstructing one.

    Returns
    -------
    LinfRobustnessForm or None
        None unless the spec has one property inside `domain` whose unsafe set is
        ``OR_{j != label} y_j >= y_label`` over all other outputs, and the centre lies in
        the box.
    """
    if len(spec.properties) != 1:
        return None
    prop = spec.properties[0]
    label = _misclassification_label(prop, spec.n_outputs)
    lo, hi = np.asarray(prop.input_lower), np.asarray(prop.input_upper)
    d_lo, d_hi = domain
    if label is None or np.any(lo < d_lo) or np.any(hi > d_hi):
        return None
    if centre is None:
        interior = (lo > d_lo) & (hi < d_hi)
        if not interior.any():
            return None
        eps = float(np.median(0.5 * (hi - lo)[interior]))
        c = 0.5 * (lo + hi)
        c = np.where((lo <= d_lo) & (hi < d_hi), np.maximum(d_lo, hi - eps), c)
        c = np.where((hi >= d_hi) & (lo > d_lo), np.minimum(d_hi, lo + eps), c)
    else:
        c = np.asarray(centre, dtype=np.float64).reshape(-1)
        if c.shape != lo.shape:
            return None
    if np.any(c < lo) or np.any(c > hi):
        return None
    r = _containing_radius(c, lo, hi)
    exact = bool(np.all(np.abs(np.maximum(d_lo, c - r) - lo) <= RECONSTRUCTION_TOL)
                 and np.all(np.abs(np.minimum(d_hi, c + r) - hi) <= RECONSTRUCTION_TOL))
    return LinfRobustnessForm(label, c, r, exact, lo, hi)


def shared_rho_decisions(net: Network, specs: Sequence[VnnlibSpec], *, time_limit_s: float,
                         backend: str = "scip", bounds_method: str = "progressive",
                         upper_bound: str | None = "pgd", threads: int = 1,
                         solver_params: dict[str, object] | None = None
                         ) -> tuple[list[VnnlibResult | None], Any]:
    """Answer several robustness specs around one centre with a single exact rho.

    The centre and label come from the first spec (`linf_robustness_form`); every spec
    must be in that form around the same centre and label. One
    ``rho(net, centre, eps_cap=max radius, label=label)`` then answers each spec:

    * ``unsat`` when its box lies in the ball of radius r around the centre and rho is proven
      above r (``lower > r``, or ``lower >= r`` with status ``robust_at_cap``);
    * ``sat`` when rho's witness, rounded to float32 into the spec's box, passes
      `check_counterexample` for that spec;
    * None (undecided) otherwise: the caller falls back to `verify_vnnlib`.

    Soundness never depends on the centre being the true image: containment and the
    counterexample are checked per spec.

    Returns
    -------
    (list of VnnlibResult or None, RhoResult)
    """
    from milpverify.verify import rho

    start = time.perf_counter()
    first = linf_robustness_form(specs[0])
    if first is None:
        raise InvalidInputError("the first spec is not an L-inf robustness spec")
    forms = [linf_robustness_form(s, centre=first.centre) for s in specs]
    if any(f is None or f.label != first.label for f in forms):
        raise InvalidInputError("every spec must be an L-inf robustness spec around the same "
                                "centre and label")
    cap = max(f.radius for f in forms if f is not None)
    res = rho(net, first.centre, eps_cap=cap, label=first.label, time_limit_s=time_limit_s,
              backend=backend, bounds_method=bounds_method, upper_bound=upper_bound,
              threads=threads, solver_params=solver_params)
    elapsed = time.perf_counter() - start
    out: list[VnnlibResult | None] = []
    for spec, form in zip(specs, forms):
        assert form is not None
        timings = {"rho_s": elapsed, "total_s": elapsed}
        stats = {"rho_status": str(res.status), "rho_lower": res.lower, "rho_upper": res.upper,
                 "radius": form.radius}
        proven = res.lower > form.radius or (res.status == "robust_at_cap"
                                             and res.lower >= form.radius)
        if proven and res.status != "error":
            out.append(VnnlibResult("unsat", decided_by="rho", timings=timings, stats=stats))
            continue
        if res.witness is not None and res.witness_verified:
            check = check_counterexample(net, spec.properties[0], res.witness)
            if check.verified:
                out.append(VnnlibResult("sat", check.x, check.y, "rho", timings, stats))
                continue
        out.append(None)
    return out, res


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


def _done_keys(out: Path) -> set[tuple[str, str]]:
    if not out.exists() or out.stat().st_size == 0:
        return set()
    with open(out, newline="", encoding="utf-8") as fh:
        return {(r["onnx"], r["vnnlib"]) for r in csv.DictReader(fh) if r.get("result")}


class _RowWriter:
    """Append rows to the results CSV, flushed and fsync'ed one by one (resumable runs)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists() or path.stat().st_size == 0
        columns: Sequence[str] = RESULT_COLUMNS
        if not new:  # keep the columns of an existing file (e.g. from an older version)
            with open(path, newline="", encoding="utf-8") as fh:
                columns = next(csv.reader(fh), None) or RESULT_COLUMNS
        self.fh = open(path, "a", newline="", encoding="utf-8")
        self.writer = csv.DictWriter(self.fh, fieldnames=list(columns), extrasaction="ignore")
        if new:
            self.writer.writeheader()
            self._sync()

    def _sync(self) -> None:
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def write(self, row: dict[str, Any]) -> None:
        self.writer.writerow(row)
        self._sync()

    def close(self) -> None:
        self.fh.close()


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
        Run instances already in `out` again (rows are appended, not replaced).
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
    done = set() if rerun else _done_keys(out_path)
    todo = [i for i in todo_all if (i.onnx, i.vnnlib) not in done]
    if result_dir is not None:
        Path(result_dir).mkdir(parents=True, exist_ok=True)
    writer = _RowWriter(out_path)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(todo_all), initial=len(todo_all) - len(todo), unit="inst",
                   desc="vnncomp", dynamic_ncols=True)
    rows: list[dict[str, Any]] = []
    nets: dict[str, Network] = {}
    counts: dict[str, int] = {}

    def record(inst: Instance, result: VnnlibResult, seconds: float, group: str = "") -> None:
        row = _row(inst, result, seconds, group)
        writer.write(row)
        rows.append(row)
        if result_dir is not None:
            result.write(Path(result_dir) / _counterexample_name(inst))
        counts[result.result] = counts.get(result.result, 0) + 1
        if bar is not None:
            bar.set_postfix(counts, refresh=False)
            bar.update(1)
        if on_row is not None:
            on_row(row)

    def network(inst: Instance) -> Network:
        if inst.onnx not in nets:
            from milpverify.frontends.onnx import load_onnx
            nets[inst.onnx] = load_onnx(base / inst.onnx)
        return nets[inst.onnx]

    def run_one(inst: Instance, budget: float, spent: float, group: str = "") -> None:
        t0 = time.perf_counter()
        try:
            if budget <= 0:
                result = VnnlibResult("timeout", message="no time left after the shared rho")
            else:
                result = verify_vnnlib(network(inst), base / inst.vnnlib, timeout_s=budget,
                                       backend=backend, options=options)
        except MilpVerifyError as exc:
            result = VnnlibResult("error", message=f"{type(exc).__name__}: {exc}")
        record(inst, result, spent + time.perf_counter() - t0, group)

    run_start = time.perf_counter()
    try:
        groups = _shared_groups(todo, base, network) if shared_rho else [[i] for i in todo]
        for number, group in enumerate(groups):
            if max_total_s is not None and time.perf_counter() - run_start >= max_total_s:
                break
            if len(group) == 1:
                run_one(group[0], group[0].timeout_s, 0.0)
                continue
            t0 = time.perf_counter()
            budget = rho_fraction * min(i.timeout_s for i in group)
            try:
                specs = [read_vnnlib(base / i.vnnlib) for i in group]
                answers, _ = shared_rho_decisions(network(group[0]), specs, time_limit_s=budget,
                                                  backend=milp_solvers(backend)[0])
            except MilpVerifyError as exc:
                answers = [None] * len(group)
                note = f"shared rho failed: {type(exc).__name__}: {exc}"
            else:
                note = ""
            spent = time.perf_counter() - t0
            name = f"rho{number}"
            for inst, answer in zip(group, answers):
                if answer is not None and spent <= inst.timeout_s:
                    record(inst, answer, spent, name)
                else:
                    run_one(inst, inst.timeout_s - spent, spent, name)
                    if note:
                        rows[-1]["message"] = (note + "; " + rows[-1]["message"]).strip("; ")
    finally:
        writer.close()
        if bar is not None:
            bar.close()
    return rows


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
