"""The stage switches and budgets of a VNN-LIB decision."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from milpverify.errors import InvalidInputError
from milpverify.vnn.falsify import FalsifierOptions
from milpverify.vnn.input_split import BRANCHING, SplitOptions


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
    input_split : bool
        On networks with at most `input_split_max_inputs` inputs that are chains of affine
        maps and ReLUs, decide by input splitting (`milpverify.vnn.input_split`) right after
        the first falsifier, before the optimised slopes and the MILPs: over wide boxes it
        decides what one set of bounds cannot, and cheaply (VNN-COMP ``reach_prob_density``).
    input_split_max_inputs : int
        The largest input size input splitting is tried on (halving all sides of a box
        takes ``2**n`` boxes).
    input_split_fraction : float
        Its budget as a fraction of the property's time left; the later stages get the
        rest when it neither proves nor falsifies.
    splitter : SplitOptions
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
    input_split: bool = True
    input_split_max_inputs: int = 16
    input_split_fraction: float = 0.5
    splitter: SplitOptions = field(default_factory=SplitOptions)
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
        if not 0 < self.input_split_fraction <= 1:
            raise InvalidInputError(f"`input_split_fraction` must be in (0, 1]; got "
                                    f"{self.input_split_fraction!r}.")
        if self.splitter.branching not in BRANCHING:
            raise InvalidInputError(f"`splitter.branching` must be one of "
                                    f"{', '.join(BRANCHING)}; got {self.splitter.branching!r}.")


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
