"""VNN-COMP benchmark: `mnist_fc` (2022, 90 instances), the ReLU half of `eran` (2021, 36), and
the 2022 control benchmarks `reach_prob_density` (36) and `rl_benchmarks` (296; quick: every 10th).

Runs `milpverify.runs.vnncomp.run_vnncomp` with the official per-instance timeouts and compares
the answers with the consensus ground truth in `shared/data/vnncomp/*/results_*_consensus.csv`
(`violated` = sat, `holds` = unsat) and with the published VNN-COMP tool results.

Writes (resumable: instances already in a CSV are skipped on the next run)

* `benchmarks/results/vnncomp_<bench>.csv`: one row per instance (`--tag T` writes
  `vnncomp_<bench>_T.csv` instead, for a side-by-side comparison; the summary covers the
  default CSVs only);
* `benchmarks/results/vnncomp.md`: solved / wrong / timeout per network next to the
  VNN-COMP tools on the same instances, machine and versions.

Usage::

    # the <= 25 min subset: every 256x2 instance + every 10th of the others
    python benchmarks/vnncomp.py --subset quick --max-minutes 25
    # everything (up to ~2.5 h worst case), resumable
    python benchmarks/vnncomp.py --subset full
    # shared rho on mnist_fc pairs, written to vnncomp_mnist_fc_shared_rho.csv
    python benchmarks/vnncomp.py --bench mnist_fc --shared-rho --tag shared_rho
    # reach_prob_density with every timeout capped at 60 s
    python benchmarks/vnncomp.py --bench reach_prob_density --subset full \
        --timeout-cap 60
    # only rebuild vnncomp.md from the CSVs
    python benchmarks/vnncomp.py --summarize-only
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import os
import platform
import re
import sys
import time
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy is imported

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from _common import cpu_name  # noqa: E402

import milpverify  # noqa: E402
from milpverify.runs.vnncomp import Instance, read_instances, run_vnncomp
from milpverify.vnn.falsify import FalsifierOptions
from milpverify.vnn.options import MILP_FORMS, VnnlibOptions, milp_form_flag, root_cut_rounds_flag

DATA = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results"
BENCHES = {
    "mnist_fc": ("vnncomp/mnist_fc_2022", "instances.csv", "results_vnncomp2022_consensus.csv",
                 "reference/vnncomp/mnist_fc_2022_votes_and_abcrown_times.csv"),
    "eran": ("vnncomp/eran_mnist_2021", "instances_relu_only.csv",
             "results_vnncomp2021_consensus.csv",
             "reference/vnncomp/eran_mnist_2021_votes_and_abcrown_times.csv"),
    "reach_prob_density": ("vnncomp/reach_prob_density_2022", "instances.csv",
                           "results_vnncomp2022_consensus.csv", None),
    "rl": ("vnncomp/rl_benchmarks_2022", "instances.csv", "results_vnncomp2022_consensus.csv",
           None),
}
#: Published solved counts on the whole benchmark (README section 5).
PUBLISHED = {
    "mnist_fc": "α,β-CROWN 84/90 (GPU + Gurobi), VeriNet 71, Marabou 60, nnenum 59",
    "eran": "α,β-CROWN 34/36, VeriNet 28, Debona 28, ERAN 27, Marabou 19",
    "reach_prob_density": "α,β-CROWN, nnenum, VeriNet 36/36, MN-BaB 34, PeregriNN 32, "
                          "Marabou 31",
    "rl": "see the consensus CSV (290+ of 296 decided by the best tools)",
}
#: Tools shown per benchmark (names as in the consensus CSV).
TOOLS = {
    "mnist_fc": ("alpha_beta_crown", "verinet", "marabou", "nnenum"),
    "eran": ("VeriNet", "Debona", "ERAN", "Marabou"),
    "reach_prob_density": ("alpha_beta_crown", "nnenum", "verinet", "marabou"),
    "rl": ("alpha_beta_crown", "nnenum", "verinet", "marabou"),
}
QUICK_STRIDE = 10
def select(bench: str, instances: list[Instance], subset: str, only: str | None
           ) -> list[Instance]:
    """The instances to run: all, or (quick) every 256x2 one plus every 10th of the rest."""
    if only:
        pattern = re.compile(only)
        instances = [i for i in instances if pattern.search(f"{i.onnx} {i.vnnlib}")]
    if subset == "full":
        return instances
    easy = [i for i in instances if "256x2" in i.onnx]
    rest = [i for i in instances if "256x2" not in i.onnx]
    return easy + rest[::QUICK_STRIDE]


def easy_first(base: Path, instances: list[Instance]) -> list[Instance]:
    """Order by the number of unstable ReLUs under symbolic bounds (about 1 s each), so a
    run capped by `--max-minutes` spends its time on the instances it can decide."""
    from milpverify import load_onnx
    from milpverify.bounds.tighten import compute_bounds
    from milpverify.vnn.decide import spec_network
    from milpverify.vnn.spec import read_vnnlib
    nets: dict[str, milpverify.Network] = {}
    keys = []
    for inst in instances:
        net = nets.setdefault(inst.onnx, load_onnx(base / inst.onnx))
        prop = read_vnnlib(base / inst.vnnlib).properties[0]
        a = np.vstack([c.A for c in prop.unsafe])
        b = np.concatenate([c.b for c in prop.unsafe])
        bounds = compute_bounds(spec_network(net, a, b), prop.input_lower, prop.input_upper,
                                method="symbolic")
        keys.append(bounds.unstable)
    return [inst for _, inst in sorted(zip(keys, instances), key=lambda t: t[0])]


def truth_table(bench: str) -> dict[tuple[str, str], dict[str, str]]:
    folder, _, consensus, reference = BENCHES[bench]
    out: dict[tuple[str, str], dict[str, str]] = {}
    with open(DATA / folder / consensus, newline="") as fh:
        for row in csv.DictReader(fh):
            key = (Path(row["onnx"]).name, Path(row["vnnlib"]).name)
            truth = row.get("ground_truth") or row["consensus"]
            out[key] = {"truth": truth if truth in ("holds", "violated") else "unknown",
                        "tools": row["tools_holds"] + " " + row["tools_violated"],
                        "fastest_s": row.get("fastest_time_s", "")}
    if reference is None:  # the 2022 control benchmarks: no separate α,β-CROWN table
        for info in out.values():
            info["abcrown"] = ""
        with open(DATA / folder / consensus, newline="") as fh:
            for row in csv.DictReader(fh):
                key = (Path(row["onnx"]).name, Path(row["vnnlib"]).name)
                out[key]["abcrown"] = {"holds": "unsat", "violated": "sat"}.get(
                    row.get("alpha_beta_crown", ""), "")
        return out
    with open(DATA / reference, newline="") as fh:
        for row in csv.DictReader(fh):
            onnx = Path(row.get("onnx") or "mnist_relu_9_200.onnx").name
            key = (onnx, Path(row["vnnlib"]).name)
            if key in out:
                out[key]["abcrown"] = row["abcrown_result"]
                out[key]["abcrown_s"] = row["abcrown_time_s"]
    return out


def csv_path(bench: str, tag: str) -> Path:
    return RESULTS / (f"vnncomp_{bench}_{tag}.csv" if tag else f"vnncomp_{bench}.csv")


def options_from(args: argparse.Namespace) -> VnnlibOptions:
    params: dict[str, object] = {}
    for item in args.solver_param or []:
        name, _, value = item.partition("=")
        params[name] = float(value) if re.fullmatch(r"[-+.0-9eE]+", value) else value
    return VnnlibOptions(attack=not args.no_attack, alpha=not args.no_alpha,
                         alpha_after_tighten=not args.no_alpha_after_tighten,
                         tighten=not args.no_tighten, first_milp_fraction=args.first_milp_fraction,
                         tighten_fraction=args.tighten_fraction,
                         split_disjuncts=not args.joint_disjuncts,
                         ideal_cuts=not args.no_ideal_cuts,
                         disjunct_tighten_fraction=args.disjunct_tighten,
                         threads=args.threads,
                         input_split=not args.no_input_split,
                         relu_split_fraction=args.relu_split,
                         **milp_form_flag(args.milp_form),
                         solver_params=params,
                         falsifier=FalsifierOptions(time_limit_s=args.attack_s),
                         **root_cut_rounds_flag(args.root_cut_rounds))


# ---------------------------------------------------------------------------- summary
def summarize_csv(bench: str, path: Path) -> tuple[list[str], dict[str, int]]:
    """Markdown table rows per network for one results CSV, and the totals."""
    truth = truth_table(bench)
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    nets: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        nets.setdefault(Path(row["onnx"]).name, []).append(row)
    lines = []
    total = {"run": 0, "solved": 0, "wrong": 0}
    for net, group in sorted(nets.items()):
        counts = {"sat": 0, "unsat": 0, "timeout": 0, "unknown": 0, "error": 0}
        wrong = 0
        agree_abcrown = 0
        tools = {t: 0 for t in TOOLS[bench]}
        abcrown_solved = 0
        for row in group:
            if row["result"] in ("sat", "unsat") and float(row["seconds"]) > float(row["timeout"]):
                row = {**row, "result": "timeout"}  # VNN-COMP: an answer after the timeout
            counts[row["result"]] = counts.get(row["result"], 0) + 1
            info = truth[(net, Path(row["vnnlib"]).name)]
            if (row["result"], info["truth"]) in (("sat", "holds"), ("unsat", "violated")):
                wrong += 1
            if row["result"] in ("sat", "unsat") and row["result"] == info.get("abcrown"):
                agree_abcrown += 1
            for t in tools:
                tools[t] += t in info["tools"].split()
            abcrown_solved += info.get("abcrown") in ("sat", "unsat")
        solved = counts["sat"] + counts["unsat"]
        secs = [float(r["seconds"]) for r in group if r["result"] in ("sat", "unsat")]
        med = f"{float(np.median(secs)):.1f}" if secs else "–"
        fastest = [float(info["fastest_s"]) for info in
                   (truth[(net, Path(r["vnnlib"]).name)] for r in group) if info.get("fastest_s")]
        med += f" / {float(np.median(fastest)):.1f}" if fastest else ""
        ref = " / ".join(str(tools[t]) for t in tools)
        lines.append(f"| {net} | {len(group)} | {solved} ({counts['sat']} sat, {counts['unsat']} "
                     f"unsat) | **{wrong}** | {counts['timeout']} | "
                     f"{counts['unknown'] + counts['error']} | {med} | {abcrown_solved} | {ref} |")
        total["run"] += len(group)
        total["solved"] += solved
        total["wrong"] += wrong
    return lines, total


def _wall(rows: list[dict[str, str]]) -> float:
    """Wall time of rows: a shared-rho group (same `group`) counts once, at its largest time."""
    groups: dict[str, float] = {}
    total = 0.0
    for row in rows:
        if row.get("group"):
            groups[row["group"]] = max(groups.get(row["group"], 0.0), float(row["seconds"]))
        else:
            total += float(row["seconds"])
    return total + sum(groups.values())


def decided_by_counts(path: Path) -> str:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    counts: dict[str, int] = {}
    for row in rows:
        if row["result"] in ("sat", "unsat"):
            key = f"{row['result']} by {row['decided_by'] or '?'}"
            counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))


def versions() -> str:
    import onnxruntime
    import pyscipopt
    import scipy
    try:
        scip = pyscipopt.Model().version()
    except AttributeError:
        scip = "?"
    return (f"Python {platform.python_version()}, milpverify {milpverify.__version__}, SCIP "
            f"{scip}, pyscipopt {pyscipopt.__version__}, numpy {np.__version__}, scipy "
            f"{scipy.__version__}, onnxruntime {onnxruntime.__version__}")




def write_summary(notes: list[str]) -> Path:
    out = RESULTS / "vnncomp.md"
    lines = ["# VNN-COMP benchmark: mnist_fc (2022), eran ReLU (2021), reach_prob_density and "
             "rl_benchmarks (2022)", "",
             f"- updated: {datetime.datetime.now().isoformat(timespec='seconds')}",
             f"- machine: {platform.platform()}, CPU: {cpu_name()} ({os.cpu_count()} logical "
             f"cores); load average now {', '.join(f'{v:.1f}' for v in os.getloadavg())}",
             f"- {versions()}",
             "- single process, 1 solver thread, official per-instance timeouts "
             "(mnist_fc 256x2: 120 s, 256x4/256x6: 300 s; eran: 300 s; the 2022 control "
             "benchmarks were run with `--timeout-cap 60`); `seconds` includes loading the "
             "spec. The 2-core machine was shared with other jobs while these numbers were "
             "taken, so times are pessimistic.",
             "- wrong = sat on a `holds` instance or unsat on a `violated` one (consensus ground "
             "truth); eran has no `violated` instances and 8 with unknown truth.",
             "- reference columns count, on the *same instances*, the answers of the VNN-COMP "
             "tools (α,β-CROWN from the reference table; the others from the consensus CSV).",
             ""]
    for bench in BENCHES:
        path = RESULTS / f"vnncomp_{bench}.csv"
        if path.exists():
            table, total = summarize_csv(bench, path)
            tools = " / ".join(TOOLS[bench])
            lines += [f"## {bench} — `{path.name}`", "",
                      f"Published, all instances: {PUBLISHED[bench]}.", "",
                      f"| network | run | solved | wrong | timeout | unknown/error | median s "
                      f"(solved) / fastest 2022 tool (all run) | α,β-CROWN solved | {tools} answered |",
                      "|---|---|---|---|---|---|---|---|---|", *table,
                      f"| **total** | {total['run']} | **{total['solved']}** | "
                      f"**{total['wrong']}** | | | | | |", "",
                      f"How they were decided: {decided_by_counts(path)}.", ""]
    devices = RESULTS / "vnncomp_devices.md"
    if devices.exists():
        lines += [devices.read_text(encoding="utf-8").strip(), ""]
    if notes:
        lines += ["## This run", "", *notes, ""]
    out.write_text("\n".join(lines), encoding="utf-8")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bench", choices=[*BENCHES, "all"], default="all")
    parser.add_argument("--subset", choices=["quick", "full"], default="quick")
    parser.add_argument("--only", default=None, help="regex on 'onnx vnnlib' of an instance")
    parser.add_argument("--tag", default="", help="suffix of the CSV name (a variant)")
    parser.add_argument("--shared-rho", action="store_true")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="start no new instance after this many minutes (resumable)")
    parser.add_argument("--easy-first", action="store_true",
                        help="run instances with fewer unstable ReLUs (symbolic bounds) first")
    parser.add_argument("--no-attack", action="store_true")
    parser.add_argument("--attack-s", type=float, default=FalsifierOptions().time_limit_s)
    parser.add_argument("--no-alpha", action="store_true")
    parser.add_argument("--no-alpha-after-tighten", action="store_true",
                        help="no second optimised-slope pass on the LP-tightened bounds")
    parser.add_argument("--no-tighten", action="store_true")
    parser.add_argument("--first-milp-fraction", type=float,
                        default=VnnlibOptions().first_milp_fraction)
    parser.add_argument("--tighten-fraction", type=float, default=VnnlibOptions().tighten_fraction)
    parser.add_argument("--joint-disjuncts", action="store_true",
                        help="after tightening, one MILP with a binary per disjunct instead of "
                             "one MILP per disjunct")
    parser.add_argument("--root-cut-rounds", type=int, default=None,
                        help="SCIP root cut rounds of the decision MILPs (default: "
                             "VnnlibOptions.root_cut_rounds; -1: SCIP's default)")
    parser.add_argument("--no-ideal-cuts", action="store_true",
                        help="SCIP does not separate ideal-formulation ReLU cuts")
    parser.add_argument("--milp-form", choices=MILP_FORMS, default=None,
                        help="decision MILPs minimise the unsafe margin ('objective') or are "
                             "pure feasibility problems (default: VnnlibOptions.milp_objective)")
    parser.add_argument("--disjunct-tighten", type=float,
                        default=VnnlibOptions().disjunct_tighten_fraction, metavar="F",
                        help="LP-tighten the bounds over each split MILP's disjunct first, for "
                             "fraction F of the time left (default: "
                             "VnnlibOptions.disjunct_tighten_fraction)")
    parser.add_argument("--solver-param", action="append", metavar="NAME=VALUE")
    parser.add_argument("--threads", type=int, default=1,
                        help="solver/torch threads, neurons of the tightening and split MILPs "
                             "solved at once")
    parser.add_argument("--backend", default="scip",
                        help="solver of the decision MILPs; 'scip+highs': a SCIP and a HiGHS "
                             "worker share the MILPs and race on the last (use --threads 2)")
    parser.add_argument("--timeout-cap", type=float, default=None, metavar="S",
                        help="run every instance with min(its timeout, S) seconds")
    parser.add_argument("--relu-split", type=float,
                        default=VnnlibOptions().relu_split_fraction, metavar="F",
                        help="share of the time left for ReLU splitting (0: off)")
    parser.add_argument("--no-input-split", action="store_true",
                        help="no input-splitting stage (VnnlibOptions.input_split)")
    parser.add_argument("--summarize-only", action="store_true")
    parser.add_argument("--note", action="append", default=[],
                        help="extra line for the notes of this run in vnncomp.md")
    args = parser.parse_args()
    notes: list[str] = []
    if not args.summarize_only:
        started = time.perf_counter()
        load0 = os.getloadavg()
        benches = list(BENCHES) if args.bench == "all" else [args.bench]
        ran = []
        for bench in benches:
            folder, inst_file, _, _ = BENCHES[bench]
            base = DATA / folder
            chosen = select(bench, read_instances(base / inst_file), args.subset, args.only)
            if args.timeout_cap is not None:
                chosen = [dataclasses.replace(i, timeout_s=min(i.timeout_s, args.timeout_cap))
                          for i in chosen]
            if args.easy_first:
                chosen = easy_first(base, chosen)
            left = None
            if args.max_minutes is not None:
                left = args.max_minutes * 60 - (time.perf_counter() - started)
                if left <= 0:
                    break
            rows = run_vnncomp(base, csv_path(bench, args.tag), instances=chosen,
                               shared_rho=args.shared_rho, options=options_from(args),
                               backend=args.backend,
                               max_total_s=left)
            ran.append(f"{bench}: {len(rows)} new rows")
        load1 = os.getloadavg()
        cmd = " ".join(["python benchmarks/vnncomp.py", *sys.argv[1:]])
        notes = [f"- {datetime.datetime.now().isoformat(timespec='minutes')}: `{cmd}` — "
                f"{'; '.join(ran)}; wall {time.perf_counter() - started:.0f} s; load "
                f"average {load0[0]:.1f} at start, {load1[0]:.1f} at end",
                *[f"- {n}" for n in args.note]]
    print(f"wrote {write_summary(notes)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
