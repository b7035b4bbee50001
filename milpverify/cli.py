"""Command-line front end: `milpverify <subcommand> ...` (argparse; no logic of its own).

A subcommand is one `Subcommand(name, help, add_arguments, run)` in `SUBCOMMANDS`; add one
with `register_subcommand`. `run(args) -> int` returns the exit code. A `MilpVerifyError`
becomes one line `milpverify: error: ...` on stderr and exit code 1 (`--debug` also prints
the traceback); usage errors exit with 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
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
    from milpverify import __version__
    parser = argparse.ArgumentParser(
        prog=PROG, description="Exact pointwise robustness of ReLU networks with MILP.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback when an error occurs")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for sub in SUBCOMMANDS.values():
        sub_parser = subparsers.add_parser(sub.name, help=sub.help, description=sub.help)
        # Also accepted after the subcommand; SUPPRESS keeps a top-level --debug.
        sub_parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                help="show the full traceback when an error occurs")
        sub.add_arguments(sub_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI on `argv` (default `sys.argv[1:]`); returns the exit code.

    Example
    -------
    >>> main(["info", "default"])
    0
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: usage error (2), --help / --version (0)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return SUBCOMMANDS[args.command].run(args)
    except MilpVerifyError as exc:
        if getattr(args, "debug", False):
            traceback.print_exc()
        message = " ".join(str(exc).split())
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 1


# ---------------------------------------------------------------------------- info
def _add_info_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL",
                        help="ONNX file (.onnx or .onnx.gz), or 'default' for the embedded "
                             "Planet LeNet ('default:NAME' for another embedded net)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--no-simplify", action="store_true",
                        help="show the graph as converted, before simplification")


def _model_path(model: str) -> str:
    if model == "default" or model.startswith("default:"):
        from milpverify.datasets import DEFAULT_NET, embedded_net
        return str(embedded_net(model.partition(":")[2] or DEFAULT_NET).path)
    return model


def info_report(net: Any, model: str) -> dict[str, Any]:
    """The `info` report of a loaded network as a JSON-ready dict."""
    relu_sizes = {name: net.op(name).size for name in net.relu_nodes}
    nodes = [{**row, "relus": relu_sizes.get(row["name"], 0)} for row in net.summary()]
    hidden = [row for row in nodes if row["op"] != "input"]
    return {
        "model": model,
        "supported": True,
        "input": {"name": net.input, "shape": list(net.input_shape), "size": net.input_size,
                  "onnx_name": net.origin.input_name,
                  "onnx_shape": list(net.origin.input_shape) if net.origin.input_shape else None},
        "classes": net.num_classes,
        "output": net.output,
        "nodes": nodes,
        "relus_per_layer": relu_sizes,
        "totals": {"nodes": len(nodes), "neurons": sum(r["neurons"] for r in hidden),
                   "relus": sum(relu_sizes.values()), "relu_layers": len(relu_sizes),
                   "maxpool_neurons": sum(r["neurons"] for r in hidden if r["op"] == "maxpool"),
                   "parameters": sum(r["parameters"] for r in nodes)},
        "input_normalisation_folded": any("input normalisation" in n for n in net.notes),
        "notes": list(net.notes),
    }


def _format_info(report: dict[str, Any]) -> str:
    inp, totals = report["input"], report["totals"]
    lines = [f"Model: {report['model']}",
             f"Input: {inp['name']!r} shape {inp['shape']} ({inp['size']} values)"
             + (f"; ONNX input {inp['onnx_name']!r} {inp['onnx_shape']}" if inp["onnx_shape"]
                else ""),
             f"Classes: {report['classes']} (output node {report['output']!r})",
             "Input normalisation folded: "
             + ("yes" if report["input_normalisation_folded"] else "no"),
             ""]
    header = ("name", "op", "shape", "neurons", "relus", "parameters")
    rows = [(r["name"], r["op"], "x".join(map(str, r["shape"])), str(r["neurons"]),
             str(r["relus"]), str(r["parameters"])) for r in report["nodes"]]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i < 3 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    lines += [fmt(header), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)]
    lines += ["", f"Totals: {totals['nodes']} nodes, {totals['neurons']} neurons, "
                  f"{totals['relus']} ReLUs in {totals['relu_layers']} layer"
                  + ("" if totals["relu_layers"] == 1 else "s")
                  + (f", {totals['maxpool_neurons']} max-pool outputs"
                     if totals["maxpool_neurons"] else "")
                  + f", {totals['parameters']} parameters"]
    relus = ", ".join(f"{name}: {n}" for name, n in report["relus_per_layer"].items())
    lines.append(f"ReLUs per layer: {relus or 'none'}")
    lines.append("Notes:")
    lines += [f"  - {note}" for note in report["notes"]]
    lines.append("Supported: yes (every node converts to the milpverify IR)")
    return "\n".join(lines)


def _run_info(args: argparse.Namespace) -> int:
    from milpverify.frontends.onnx import load_onnx
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
    print(json.dumps(report, indent=1) if args.json else _format_info(report))
    return 0


register_subcommand("info", "summarise a model: nodes, neurons, ReLUs, parameters, support",
                    _add_info_arguments, _run_info)


__all__ = ["SUBCOMMANDS", "Subcommand", "build_parser", "info_report", "main",
           "register_subcommand"]
