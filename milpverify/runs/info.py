"""The `milpverify info` report of a loaded network: its nodes, neurons, ReLUs and parameters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


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
        "dropped_output": net.dropped_output,
    }


def format_info(report: dict[str, Any]) -> str:
    """The `info` report as the text `milpverify info` prints."""
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


__all__ = ["format_info", "info_report"]
