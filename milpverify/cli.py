"""Command-line front end: `milpverify <subcommand> ...` (argparse; no logic of its own).

A subcommand is one `Subcommand(name, help, add_arguments, run)` in `SUBCOMMANDS`; add one
with `register_subcommand`. `run(args) -> int` returns the exit code. A `MilpVerifyError`
becomes one line `milpverify: error: ...` on stderr and exit code 1 (`--debug` also prints
the traceback); usage errors exit with 2; failed writes, a closed pipe and Ctrl-C end as
`milpverify.runs.cli_io` describes (1, 141, 130).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from milpverify.errors import MilpVerifyError, UnsupportedModelError

PROG = "milpverify"


@dataclass(frozen=True)
class Subcommand:
    """One CLI subcommand: its flags and the function that runs it."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


SUBCOMMANDS: dict[str, Subcommand] = {}


def register_subcommand(name: str, help: str,
                        add_arguments: Callable[[argparse.ArgumentParser], None],
                        run: Callable[[argparse.Namespace], int]) -> Subcommand:
    """Add a subcommand to `SUBCOMMANDS` (names must be unique)."""
    if name in SUBCOMMANDS:
        raise RuntimeError(f"subcommand {name!r} registered twice")
    SUBCOMMANDS[name] = Subcommand(name, help, add_arguments, run)
    return SUBCOMMANDS[name]


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per registered subcommand."""
    from milpverify._version import __version__
    from milpverify.runs.cli_io import OneLineParser
    parser = OneLineParser(
        prog=PROG, description="Exact pointwise robustness of ReLU networks with MILP.",
        epilog="Exit codes: 0 done, 1 error, 2 bad command line, 130 interrupted (Ctrl-C), "
               "141 standard output closed early.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback when an error occurs")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for sub in SUBCOMMANDS.values():
        sub_parser = subparsers.add_parser(sub.name, help=sub.help, description=sub.help)
        # Also accepted after the subcommand; SUPPRESS keeps a top-level --debug.
        sub_parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                help="show the full traceback when an error occurs")
        sub_parser.add_argument("--verbose", action="store_true",
                                help="also print info and debug messages on stderr, and "
                                     "(rho, evaluate, vnnlib, vnncomp) the MILP solver's log on stdout")
        sub.add_arguments(sub_parser)
        SUBPARSERS[sub.name] = sub_parser
    return parser


#: The parser of each subcommand (filled by `build_parser`), to suggest its flags on a typo.
SUBPARSERS: dict[str, argparse.ArgumentParser] = {}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI on `argv` (default `sys.argv[1:]`); returns the exit code.

    Example
    -------
    >>> main(["info", "default"])
    0
    """
    from milpverify.runs.cli_io import EXIT_USAGE, UsageError, nearest_flags
    parser = build_parser()
    try:
        args, extras = parser.parse_known_args(argv)
        if extras:
            sub = SUBPARSERS.get(getattr(args, "command", ""), parser)
            sub.error(f"unrecognized arguments: {' '.join(extras)}"
                      + nearest_flags(extras, sub))
    except UsageError as exc:  # one line, no usage dump; exit 2
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exc:  # --help / --version (0)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    from milpverify.runs.cli_io import run_guarded
    out = getattr(args, "out", None)
    return run_guarded(lambda: SUBCOMMANDS[args.command].run(args),
                       debug=getattr(args, "debug", False), out=None if out is None else str(out),
                       resumable=args.command in RESUMABLE,
                       verbose=getattr(args, "verbose", False))


#: Subcommands whose rerun resumes from the rows already written.
RESUMABLE = frozenset({"rho", "evaluate", "vnncomp"})


def _deprecated(parser: argparse.ArgumentParser, old: str, new: str, dest: str,
                **kwargs: Any) -> None:
    from milpverify.runs.cli_io import add_deprecated
    add_deprecated(parser, old, new, dest, **kwargs)


def _add_normalisation_arguments(parser: argparse.ArgumentParser) -> None:
    """`--mean` / `--std`: a normalisation the network expects but its graph lacks."""
    parser.add_argument("--mean", metavar="M[,M,...]",
                        help="subtract this per channel after dividing by the pixel divisor "
                             "(e.g. 0.485,0.456,0.406 for OVAL's cifar_base_kw); for networks "
                             "trained on normalised inputs whose graph does not normalise")
    parser.add_argument("--std", metavar="S[,S,...]",
                        help="then divide by this per channel (e.g. 0.225); distances stay "
                             "in pixels / divisor")


def _load_model(args: argparse.Namespace, **options: Any) -> Any:
    """The network of `args.model`, with `--mean` / `--std` prepended when given."""
    from milpverify.frontends.onnx import load_onnx
    from milpverify.runs.normalise import check_normalisation, normalised_model, parse_channels
    norm = check_normalisation(parse_channels("mean", getattr(args, "mean", None)),
                               parse_channels("std", getattr(args, "std", None)))
    path = _model_path(args.model)
    return load_onnx(path if norm is None else normalised_model(path, *norm), **options)


# ---------------------------------------------------------------------------- info
def _add_info_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL",
                        help="ONNX file (.onnx or .onnx.gz), or 'default' for the bundled "
                             "784-32-16-10 MLP ('default:planet_lenet' for the Planet LeNet)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--no-simplify", action="store_true",
                        help="show the graph as converted, before simplification")


def _model_path(model: str) -> str:
    from milpverify.frontends.embedded import default_name, embedded_net
    name = default_name(model)
    return model if name is None else str(embedded_net(name).path)


def _run_info(args: argparse.Namespace) -> int:
    from milpverify.frontends.onnx import load_onnx
    from milpverify.runs.info import format_info, info_report
    path = _model_path(args.model)
    try:
        net = load_onnx(path, simplify_graph=not args.no_simplify)
    except UnsupportedModelError as exc:
        # The list of unsupported nodes is the report, so it goes to stdout.
        if args.json:
            print(json.dumps({"model": path, "supported": False, "unsupported": str(exc)},
                             indent=1))
        else:
            print(f"Model: {path}\nSupported: no\n{exc}")
        return 1
    report = info_report(net, path)
    print(json.dumps(report, indent=1) if args.json else format_info(report))
    return 0


register_subcommand("info", "summarise a model: nodes, neurons, ReLUs, parameters, support",
                    _add_info_arguments, _run_info)


# ---------------------------------------------------------------------------- export
def _add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL",
                        help="ONNX file, or 'default' ('default:NAME') for an embedded net")
    parser.add_argument("--data", metavar="FILE",
                        help=".npz file with arrays 'images' and 'labels' (optional for "
                             "'default': the embedded MNIST images)")
    parser.add_argument("--indices", type=int, dest="index", metavar="I",
                        help="which image of --data (one index: export writes one query)")
    parser.add_argument("--eps", type=float, metavar="E",
                        help="certify query: is there an adversarial point within E? "
                             "(feasibility model)")
    parser.add_argument("--eps-cap", type=float, metavar="C",
                        help="rho query: minimise the distance within the cap C "
                             "(default without --eps: the whole domain)")
    parser.add_argument("--pixel-divisor", type=float, metavar="D",
                        help="images are divided by D (default 255; for 'default' the "
                             "embedded net's divisor)")
    _add_normalisation_arguments(parser)
    parser.add_argument("--norm", default="linf", choices=("linf", "l1"))
    parser.add_argument("--bounds-method", default="symbolic",
                        choices=("interval", "symbolic", "alpha", "lp", "mip", "progressive"),
                        help="bounds for the big-M constants (default: symbolic)")
    parser.add_argument("--format", metavar="FORMAT",
                        help="'lp' (CPLEX LP) or 'mps' (free MPS); default: the suffix of --out")
    parser.add_argument("--generic-names", action="store_true",
                        help="write x<j>/c<i> instead of readable names")
    parser.add_argument("--out", required=True, metavar="FILE", help="file to write")
    _deprecated(parser, "--index", "--indices", "index", type=int, metavar="I")


def _export_sample(args: argparse.Namespace) -> Any:
    """The image `--indices I` of `--data` (or of the embedded images), scaled."""
    from milpverify.errors import InvalidInputError
    from milpverify.runs.datasets import (
        DATA_DIR,
        DEFAULT_IMAGES,
        default_name,
        embedded_net,
        load_npz,
    )
    if args.index is None:  # not `required=True`: the deprecated --index may give it
        from milpverify.runs.cli_io import UsageError
        raise UsageError("the following arguments are required: --indices "
                         f"(see '{PROG} export --help')")
    divisor = args.pixel_divisor
    data = args.data
    name = default_name(args.model)
    if name is not None:
        entry = embedded_net(name)
        divisor = entry.pixel_divisor if divisor is None else divisor
        data = data or DATA_DIR / DEFAULT_IMAGES
    elif data is None:
        raise InvalidInputError(f"`--data` is required for model {args.model!r} (an .npz file "
                                "with arrays 'images' and 'labels'); only 'default' has "
                                "embedded images.")
    images, _ = load_npz(data, pixel_divisor=255.0 if divisor is None else divisor,
                         indices=[args.index])
    return images[0]


def _run_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from milpverify.core.export import write_query
    from milpverify.errors import InvalidInputError
    from milpverify.solve.files import FORMATS
    fmt = (args.format or Path(args.out).suffix.lstrip(".")).lower()
    if fmt not in FORMATS:
        got = (f"got {args.format!r}" if args.format else
               f"no --format given and --out {args.out!r} does not end in .lp or .mps")
        raise InvalidInputError(f"`--format` must be {' or '.join(map(repr, FORMATS))}; {got}.")
    x = _export_sample(args)
    net = _load_model(args)
    query = write_query(net, x, args.out, format=fmt, eps=args.eps,
                        eps_cap=args.eps_cap, norm=args.norm,
                        bounds_method=args.bounds_method, generic_names=args.generic_names)
    model = query.model
    note = "; bounds alone prove it infeasible" if query.proven_by_bounds else ""
    print(f"wrote {args.out}: {query.kind} query, label {query.label}, {query.norm} radius "
          f"{query.radius:g}, {len(query.candidates)} candidate labels; {model.n_vars} "
          f"variables ({model.n_integer} integer), {model.n_rows} rows{note}")
    return 0


register_subcommand("export", "write the MILP of one rho or certify query as an LP/MPS file",
                    _add_export_arguments, _run_export)


# ---------------------------------------------------------------------------- vnnlib / vnncomp
def _add_vnnlib_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="ONNX file (.onnx or .onnx.gz)")
    parser.add_argument("spec", metavar="SPEC", help="VNN-LIB file (.vnnlib or .vnnlib.gz)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="wall-clock budget in seconds (default 120)")
    parser.add_argument("--out", metavar="RESULT", default=None,
                        help="write the VNN-COMP result file here (first line "
                             "sat|unsat|timeout|unknown|error, then the counterexample)")
    _add_vnnlib_options(parser)


def _add_vnnlib_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", default="scip",
                        help="MILP solver (default scip); 'scip+highs': a SCIP and a HiGHS "
                             "worker share the MILPs and race on the last (use --threads 2)")
    parser.add_argument("--no-attack", action="store_true",
                        help="skip the projected-gradient falsifier")
    parser.add_argument("--no-alpha", action="store_true",
                        help="skip the optimised-slope (alpha-CROWN) bounds before the MILP")
    parser.add_argument("--no-tighten", action="store_true",
                        help="skip LP bound tightening before the MILP")
    parser.add_argument("--joint-disjuncts", action="store_true",
                        help="after tightening, one MILP with a binary per disjunct instead of "
                             "one MILP per disjunct (nearest to refuted first)")
    parser.add_argument("--root-cut-rounds", type=int, default=None, metavar="N",
                        help="at most N cut rounds at the root of SCIP's decision MILPs "
                             "(default: VnnlibOptions.root_cut_rounds, 20; -1 for SCIP's own "
                             "default, unlimited)")
    parser.add_argument("--no-ideal-cuts", action="store_true",
                        help="do not let SCIP separate cuts of the ideal ReLU formulation")
    parser.add_argument("--milp-form", choices=("objective", "feasibility"), default=None,
                        help="decision MILPs minimise the unsafe margin ('objective') or are "
                             "pure feasibility problems (default: VnnlibOptions.milp_objective)")
    parser.add_argument("--disjunct-tighten", type=float, default=None, metavar="F",
                        help="before each split MILP, LP-tighten the bounds over the inputs "
                             "that satisfy its disjunct for fraction F of the time left "
                             "(default: VnnlibOptions.disjunct_tighten_fraction, 0: off)")
    parser.add_argument("--relu-split", type=float, default=None, metavar="F",
                        help="after tightening, try to refute each open disjunct by branch and "
                             "bound on ReLU phases for fraction F of the time left (chains of "
                             "affine maps and ReLUs; default: "
                             "VnnlibOptions.relu_split_fraction, 0: off)")
    parser.add_argument("--threads", type=int, default=1, metavar="N",
                        help="bound tightening solves N neurons at once and N split MILPs run "
                             "at once; also the solvers' and torch's thread count (default 1)")


def _vnnlib_options(args: argparse.Namespace) -> Any:
    from milpverify.errors import InvalidInputError
    from milpverify.vnn.options import VnnlibOptions, milp_form_flag, root_cut_rounds_flag
    if args.threads < 1:
        raise InvalidInputError(f"`--threads` must be >= 1; got {args.threads}.")
    return VnnlibOptions(threads=args.threads, attack=not args.no_attack, alpha=not args.no_alpha,
                         tighten=not args.no_tighten, split_disjuncts=not args.joint_disjuncts,
                         ideal_cuts=not args.no_ideal_cuts, verbose=args.verbose,
                         **({} if args.disjunct_tighten is None
                            else {"disjunct_tighten_fraction": args.disjunct_tighten}),
                         **({} if args.relu_split is None
                            else {"relu_split_fraction": args.relu_split}),
                         **milp_form_flag(args.milp_form),
                         **root_cut_rounds_flag(args.root_cut_rounds))


def _run_vnnlib(args: argparse.Namespace) -> int:
    from milpverify.errors import InvalidInputError
    from milpverify.vnn.results import VnnlibResult
    from milpverify.vnn.verify import verify_vnnlib
    if not (args.timeout > 0):
        raise InvalidInputError(f"`--timeout` must be > 0; got {args.timeout}.")
    try:
        result = verify_vnnlib(args.model, args.spec, timeout_s=args.timeout,
                               backend=args.backend, options=_vnnlib_options(args))
    except MilpVerifyError as exc:
        # VNN-COMP expects a result file in every case: write "error", then report.
        if args.out:
            VnnlibResult("error", message=str(exc)).write(args.out)
        raise
    if args.out:
        result.write(args.out)
    detail = f" ({result.decided_by})" if result.decided_by else ""
    note = f": {result.message}" if result.message else ""
    print(f"{result.result}{detail} in {result.timings.get('total_s', 0.0):.2f} s{note}")
    return 0


def _add_vnncomp_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("benchdir", metavar="BENCHDIR",
                        help="benchmark folder; instance paths are relative to it")
    parser.add_argument("--instances", default="instances.csv",
                        help="CSV of onnx,vnnlib,timeout rows (default BENCHDIR/instances.csv)")
    parser.add_argument("--out", required=True, metavar="RESULTS_CSV",
                        help="results CSV (onnx, vnnlib, result, seconds, ...); rows already "
                             "there are skipped, new rows are appended as they finish")
    parser.add_argument("--rerun", action="store_true",
                        help="run instances already in the results CSV again")
    parser.add_argument("--shared-rho", action="store_true",
                        help="answer L-inf robustness instances around the same image with "
                             "one exact rho per (network, image)")
    parser.add_argument("--result-dir", default=None,
                        help="also write one VNN-COMP result file per instance here")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    _deprecated(parser, "--no-progress", "--quiet", "quiet", nargs=0)
    _add_vnnlib_options(parser)


def _run_vnncomp(args: argparse.Namespace) -> int:
    from milpverify.runs.vnncomp import run_vnncomp
    rows = run_vnncomp(args.benchdir, args.out, instances=args.instances,
                       shared_rho=args.shared_rho, rerun=args.rerun, backend=args.backend,
                       options=_vnnlib_options(args), result_dir=args.result_dir,
                       progress=not args.quiet)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["result"]] = counts.get(row["result"], 0) + 1
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "nothing to run"
    print(f"{len(rows)} instances run ({summary}); results in {args.out}")
    return 0


register_subcommand("vnnlib", "decide one VNN-LIB spec on an ONNX model (VNN-COMP result file)",
                    _add_vnnlib_parser, _run_vnnlib)
register_subcommand("vnncomp", "run every instance of a VNN-COMP benchmark folder (resumable)",
                    _add_vnncomp_parser, _run_vnncomp)


# ---------------------------------------------------------------------------- evaluate, rho
def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by `evaluate` and `rho` (one runner, see `milpverify.runs.evaluate`)."""
    parser.add_argument("model", metavar="MODEL",
                        help="ONNX file, or 'default' ('default:NAME') for an embedded net")
    parser.add_argument("--data", metavar="FILE.npz",
                        help=".npz with arrays 'images' and 'labels' (optional for 'default': "
                             "its 10 embedded MNIST images)")
    parser.add_argument("--indices", metavar="SEL",
                        help="images to use: 'START:STOP', 'START:STOP:STEP', 'I,J,K' "
                             "(default: all)")
    parser.add_argument("--pixel-divisor", type=float, metavar="D",
                        help="images are divided by D (default 255; the embedded net's own)")
    _add_normalisation_arguments(parser)
    parser.add_argument("--eps-cap", type=float, metavar="E",
                        help="exact: search only ||x' - x|| <= E (evaluate: default --eps; "
                             "rho: default the whole domain, which can be slow)")
    parser.add_argument("--backend", default="scip", help="MILP backend (default: scip)")
    parser.add_argument("--norm", default="linf", choices=("linf", "l1", "l2"),
                        help="distance of rho (default linf; l2 needs backend scip)")
    parser.add_argument("--property", metavar="PROP", default=None,
                        help="exact distance to the nearest violation of a relaxed property "
                             "instead of plain rho: 'topk:K' (relaxed top-K) or "
                             "'affinity:FILE.json' (groups file {\"groups\": [[...], ...]}); "
                             "evaluate: needs --methods exact")
    parallel = parser.add_mutually_exclusive_group()
    parallel.add_argument("--workers", type=int, default=1, metavar="N",
                          help="worker processes (default 1: in this process)")
    parallel.add_argument("--ray", metavar="ADDRESS",
                          help="run as Ray tasks: 'local' (start Ray here), 'auto', or an address")
    parser.add_argument("--rerun", action="store_true",
                        help="discard existing results at --out and start over")
    parser.add_argument("--retry", metavar="STATUS[,STATUS]",
                        help="compute rows with these statuses again (time_limit, error, "
                             "not_found), e.g. --retry time_limit with a larger --timeout")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    from milpverify.runs.tasks import DEFAULT_METHODS, METHODS
    _add_run_arguments(parser)
    parser.add_argument("--eps", type=float, required=True, metavar="E",
                        help="threshold of phi(eps) and mu(eps), in input units (pixels / D)")
    parser.add_argument("--methods", default=None, metavar="M,M",
                        help=f"comma-separated, from {', '.join(METHODS)} "
                             f"(default: {','.join(DEFAULT_METHODS)}, those that measure "
                             "in --norm)")
    parser.add_argument("--timeout", dest="time_limit_s", type=float, default=60.0, metavar="S",
                        help="per-image time limit of the exact method, seconds (default 60)")
    _deprecated(parser, "--time-limit-s", "--timeout", "time_limit_s", type=float, metavar="S")
    parser.add_argument("--out", required=True, metavar="RUNDIR",
                        help="run directory (created; an existing one is resumed)")
    parser.add_argument("--figure-format", default="png", metavar="FMT[,FMT]",
                        help="figure formats, any of png, svg, pdf (default png)")
    parser.add_argument("--figure-grid", type=int, default=8, metavar="N",
                        help="at most N images in adversarial_examples (default 8)")


def _run_evaluate(args: argparse.Namespace) -> int:
    from milpverify.runs.evaluate import evaluate
    result = evaluate(args.model, eps=args.eps, out=args.out, data=args.data,
                      indices=args.indices, methods=args.methods,
                      time_limit_s=args.time_limit_s, pixel_divisor=args.pixel_divisor,
                      eps_cap=args.eps_cap, backend=args.backend,
                      workers=args.workers, ray=args.ray, rerun=args.rerun, quiet=args.quiet,
                      property=args.property, mean=args.mean, std=args.std,
                      figure_format=args.figure_format, figure_grid=args.figure_grid,
                      retry=args.retry, norm=args.norm, verbose=args.verbose)
    print(result.summary_markdown())
    print(f"{result.computed} rows computed, {result.skipped} resumed; see "
          f"{result.files.get('summary', result.out)}")
    return 0


def _add_rho_arguments(parser: argparse.ArgumentParser) -> None:
    _add_run_arguments(parser)
    parser.add_argument("--timeout", dest="time_limit_s", type=float, default=120.0,
                        metavar="S", help="per-image time limit, seconds (default 120)")
    _deprecated(parser, "--time-limit-s", "--timeout", "time_limit_s", type=float, metavar="S")
    parser.add_argument("--out", required=True, metavar="FILE.csv",
                        help="results CSV (an existing one is resumed); <stem>.run.json, "
                             "<stem>.adversarial.npz, <stem>.log and <stem>.witnesses/ go beside it")


def _run_rho(args: argparse.Namespace) -> int:
    from milpverify.runs.evaluate import rho_table
    result = rho_table(args.model, out=args.out, data=args.data, indices=args.indices,
                       eps_cap=args.eps_cap, time_limit_s=args.time_limit_s,
                       pixel_divisor=args.pixel_divisor, backend=args.backend,
                       workers=args.workers, ray=args.ray, rerun=args.rerun, quiet=args.quiet,
                       property=args.property, mean=args.mean, std=args.std,
                       retry=args.retry, norm=args.norm, verbose=args.verbose)
    s = result.summaries["exact"]
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(s.statuses.items()))
    print(f"{len(result.rows)} images ({result.computed} computed, {result.skipped} resumed): "
          f"{statuses}; median {s.median_s:.3g} s, total {s.total_s:.4g} s; wrote {args.out}")
    return 0


register_subcommand("evaluate", "rho by several estimators over a data set: phi, mu, figures "
                    "(resumable run directory)", _add_evaluate_arguments, _run_evaluate)
register_subcommand("rho", "exact rho for each image of a data set into a resumable CSV",
                    _add_rho_arguments, _run_rho)


# ---------------------------------------------------------------------------- finetune
def _add_finetune_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL",
                        help="ONNX file to fine-tune ('default:NAME' for an embedded net)")
    parser.add_argument("--data", required=True, metavar="TRAIN.npz",
                        help=".npz with arrays 'images' and 'labels' (the training set)")
    parser.add_argument("--indices", default=None, metavar="RANGE",
                        help="training images, e.g. 2000:10000 (default: all)")
    parser.add_argument("--pixel-divisor", type=float, default=255.0, metavar="D",
                        help="images are divided by D (default 255); adversarial examples are "
                             "rounded to multiples of 1/D")
    _add_normalisation_arguments(parser)
    parser.add_argument("--method", default="lp", metavar="lp|pgd|lbfgs|fgsm",
                        help="algorithm that finds the adversarial examples (default lp)")
    parser.add_argument("--rounds", type=int, default=1, metavar="T",
                        help="fine-tuning rounds (default 1)")
    parser.add_argument("--margin", type=float, default=3.0, metavar="ALPHA",
                        help="required logit margin of the adversarial examples (default 3.0)")
    parser.add_argument("--lr-scale", type=float, default=0.1,
                        help="training continues at lr * lr-scale (default 0.1)")
    parser.add_argument("--lr", type=float, default=1e-3, help="base learning rate (Adam)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per round (default 1)")
    parser.add_argument("--examples-per-round", type=int, default=500, metavar="N",
                        help="random training points attacked per round (default 500)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--out", required=True, metavar="NEW.onnx",
                        help="fine-tuned ONNX file; the JSON log goes to NEW.finetune.json")


def _run_finetune(args: argparse.Namespace) -> int:
    from milpverify.runs.finetune import finetune_file
    model = _model_path(args.model)
    path, log_file, log = finetune_file(
        model, args.data, args.out, indices=args.indices, pixel_divisor=args.pixel_divisor,
        mean=args.mean, std=args.std, method=args.method, rounds=args.rounds, margin=args.margin,
        lr_scale=args.lr_scale,
        lr=args.lr, epochs=args.epochs, examples_per_round=args.examples_per_round,
        batch_size=args.batch_size, seed=args.seed, progress=not args.quiet)
    last = log["rounds"][-1]
    found = sum(r["kept"] for r in log["rounds"])
    print(f"{args.rounds} round(s) with {args.method}: {found} adversarial examples added; "
          f"train accuracy {100 * log['initial_accuracy']:.2f}% -> "
          f"{100 * last['train_accuracy']:.2f}%; wrote {path} and {log_file}")
    return 0


register_subcommand("finetune", "fine-tune a model on adversarial examples of an estimator "
                    "(Bastani et al. 2016), write the new ONNX and a JSON log",
                    _add_finetune_parser, _run_finetune)


__all__ = ["SUBCOMMANDS", "Subcommand", "build_parser", "main", "register_subcommand"]
