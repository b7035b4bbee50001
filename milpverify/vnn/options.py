"""The stage switches and budgets of a VNN-LIB decision."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from milpverify.bounds.relu_split import ReluSplitOptions
from milpverify.core.query import check_share
from milpverify.errors import InvalidInputError
from milpverify.vnn.falsify import FalsifierOptions
from milpverify.vnn.input_split import BRANCHING, SplitOptions


@dataclass(frozen=True)
class VnnlibOptions:
    """How `verify_vnnlib` spends its time.

    The defaults are the variant that decided the most VNN-COMP mnist_fc and eran instances
    in `benchmarks/vnncomp.py`; `benchmarks/results/vnncomp.md` ("Why each stage is on")
    holds the measurement behind each switch.

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
        Before any tightening, run the MILP on the current bounds for this fraction of the
        time left (0 disables it): many instances fall at its root, where tightening would
        cost more than the whole solve; the rest go better to the MILP on tightened bounds.
    tighten : bool
        Then LP bound tightening (`compute_bounds(method="progressive")`) and a second MILP.
    alpha_after_tighten : bool
        With `alpha`, optimise the slopes again on the tightened bounds, so the spec rows'
        relaxation uses the LP-tightened intermediate bounds.
    tighten_min_unstable : int
        Skip tightening when symbolic bounds leave fewer unstable ReLUs than this.
    tighten_fraction : float
        Tightening budget as a fraction of the time left after the first MILP.
    split_disjuncts : bool
        The last MILP (after tightening) becomes one MILP per remaining disjunct (tighter
        relaxation, no choice binaries), the one the bounds come nearest to refuting
        first, each allowed all the time left, instead of one MILP with a binary per
        disjunct; with `threads` > 1, that many of them run at once. The first MILP stays
        joint.
    root_cut_rounds : int or None
        At most this many cut separation rounds at the root of the decision MILPs (SCIP's
        ``separating/maxroundsroot``; other backends ignore it; ``solver_params`` overrides
        it); None keeps the solver's default (unlimited for SCIP). Late rounds raise the dual
        bound very little and cost as much as the early ones.
    milp_objective : bool
        Minimise ``t`` subject to ``s_r <= t`` for the rows of the chosen disjunct, with
        ``t <= slack`` (so the feasible set is the same), instead of a pure feasibility
        problem: SCIP's root cuts then cut off the LP point that minimises ``t``. Fewer but
        slower nodes; off by default.
    disjunct_tighten_fraction : float
        With `split_disjuncts`, before each disjunct's MILP, LP-tighten the bounds over
        the inputs whose spec outputs satisfy that disjunct (`compute_bounds(method="lp",
        output_constraint=)`, the disjunct's rows added to every LP) for this fraction of
        the time left; 0 (default) skips it: with several disjuncts open a pass per
        disjunct does not fit in the time left.
    ideal_cuts : bool
        Let the MILP backend separate cuts of the ideal ReLU formulation
        (`milpverify.encode.ideal`; SCIP only, other backends ignore them).
    threads : int
        Threads of the solvers and of torch, neurons of the bound tightening solved at once
        (`compute_bounds(threads=)`) and MILPs solved at once (each with one thread; see
        `_solve_disjuncts`: with ``backend="scip+highs"`` at least one worker per solver).
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
        rest when it neither proves nor falsifies. On the 109 VNN-COMP 2022 control
        instances it applies to (``reach_prob_density``, the ``rl_benchmarks`` subset) the
        later stages decided none, and robot's holds instances need 25-49 s of splitting
        (`benchmarks/results/vnncomp_devices.md`).
    input_split_attack_s : float
        The first falsifier's budget (at most ``falsifier.time_limit_s``) when input
        splitting applies: the split search falsifies on its boxes too (with LP polishing),
        so a long first attack only delays the unsat answers.
    splitter : SplitOptions
    relu_split_fraction : float
        On networks that are chains of affine maps and ReLUs (and not input-split), after
        the bound tightening and before the last MILPs, try to refute each disjunct still
        open by branch and bound on ReLU phases (`milpverify.bounds.relu_split`) for this
        fraction of the time left, shared among the disjuncts; the MILPs get the rest and
        the disjuncts it did not refute. 0 (default) skips it: on the mnist_fc instances the
        MILP after tightening decides, SCIP's LP-based tree is faster on this 2-core CPU
        (`benchmarks/results/vnncomp.md`).
    relu_splitter : ReluSplitOptions
    solver_params : dict
        Passed to the backend (SCIP parameter names for "scip").
    falsifier : FalsifierOptions
    verbose : bool
        Let the MILP solver print its log on stdout (the CLI's ``--verbose``).
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
    input_split_fraction: float = 0.9
    input_split_attack_s: float = 0.2
    splitter: SplitOptions = field(default_factory=SplitOptions)
    relu_split_fraction: float = 0.0
    relu_splitter: ReluSplitOptions = field(default_factory=ReluSplitOptions)
    solver_params: dict[str, object] = field(default_factory=dict)
    falsifier: FalsifierOptions = field(default_factory=FalsifierOptions)
    verbose: bool = False

    def __post_init__(self) -> None:
        rounds = self.root_cut_rounds
        if rounds is not None and (isinstance(rounds, bool)
                                   or not isinstance(rounds, (int, np.integer)) or rounds < 0):
            raise InvalidInputError(f"`root_cut_rounds` must be an integer >= 0 or None (the "
                                    f"solver's default); got {rounds!r}.")
        if (isinstance(self.threads, bool) or not isinstance(self.threads, (int, np.integer))
                or self.threads < 1):
            raise InvalidInputError(f"`threads` must be an integer >= 1; got {self.threads!r}.")
        check_share("disjunct_tighten_fraction", self.disjunct_tighten_fraction)
        check_share("relu_split_fraction", self.relu_split_fraction)
        if not _is_number(self.input_split_fraction) or not 0 < self.input_split_fraction <= 1:
            raise InvalidInputError(f"`input_split_fraction` must be a number in (0, 1]; got "
                                    f"{self.input_split_fraction!r}.")
        if not _is_number(self.input_split_attack_s) or not self.input_split_attack_s >= 0:
            raise InvalidInputError(f"`input_split_attack_s` must be a number >= 0; got "
                                    f"{self.input_split_attack_s!r}.")
        if self.splitter.branching not in BRANCHING:
            raise InvalidInputError(f"`splitter.branching` must be one of "
                                    f"{', '.join(BRANCHING)}; got {self.splitter.branching!r}.")


def _is_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float, np.integer,
                                                              np.floating))


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
