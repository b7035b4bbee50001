"""`milpverify rho --workers 2` against `--workers 1`: wall time of the whole command.

Runs the command a user types, `milpverify rho default --data MNIST --indices 0:N --eps-cap C
--workers W`, once per worker count and repeat (in a fresh process, so start-up and imports
count), alternating the order between repeats so a change of machine load hits both. Besides
the wall time it records the CPU seconds of the command and all its workers, and the CPU
seconds the rest of the machine used meanwhile (from /proc/stat): on a shared machine a ratio
below the goal is then either our overhead (more CPU seconds with 2 workers) or CPU taken by
other jobs. Writes `workers_speedup.csv` (one row per command) and `workers_speedup.md`.

    python benchmarks/workers_speedup.py [--images 20] [--eps-cap 0.1] [--timeout 60]
           [--repeats 1] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine

REPO = Path(__file__).resolve().parents[1]
MNIST = REPO.parent / "shared" / "data" / "mnist" / "mnist_test.npz"
FIELDS = [
    "repeat",
    "workers",
    "wall_s",
    "cpu_s",
    "others_cpu_s",
    "idle_cpu_s",
    "rows_s_sum",
    "rows_s_max",
    "optimal",
    "rows",
    "load_before",
    "load_after",
]
#: Environment variables that set thread counts; the summary records what the runs saw.
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def cpu_jiffies() -> tuple[int, int]:
    """(busy, idle) clock ticks of the whole machine since boot (Linux /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields[:8]) - idle, idle


def run_once(workers: int, images: int, eps_cap: float, timeout: float, out: Path) -> dict:
    """One `milpverify rho` command; its wall time, its CPU time and the machine's."""
    command = [
        sys.executable,
        "-m",
        "milpverify",
        "rho",
        "default",
        "--data",
        str(MNIST),
        "--indices",
        f"0:{images}",
        "--eps-cap",
        f"{eps_cap:g}",
        "--timeout",
        f"{timeout:g}",
        "--workers",
        str(workers),
        "--quiet",
        "--out",
        str(out),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    tick = os.sysconf("SC_CLK_TCK")
    load_before = os.getloadavg()[0]
    usage, (busy, idle) = resource.getrusage(resource.RUSAGE_CHILDREN), cpu_jiffies()
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after, (busy_after, idle_after) = resource.getrusage(resource.RUSAGE_CHILDREN), cpu_jiffies()
    # Children's CPU includes the pool's workers: the command waits for them before exiting.
    cpu = (after.ru_utime + after.ru_stime) - (usage.ru_utime + usage.ru_stime)
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    seconds = [float(r["seconds"]) for r in rows]
    return {
        "workers": workers,
        "wall_s": wall,
        "cpu_s": cpu,
        "others_cpu_s": max((busy_after - busy) / tick - cpu, 0.0),
        "idle_cpu_s": (idle_after - idle) / tick,
        "rows_s_sum": sum(seconds),
        "rows_s_max": max(seconds),
        "optimal": sum(r["status"] == "optimal" for r in rows),
        "rows": len(rows),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }


def autogroup_note() -> str:
    """What Linux autogroup scheduling means for these numbers, if it is on."""
    try:
        enabled = Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        return ""
    if not enabled:
        return ""
    return (
        "Autogroup scheduling is on (`/proc/sys/kernel/sched_autogroup_enabled` = 1): the "
        "kernel shares CPU time between sessions, not processes, and the command and its "
        "workers are one session. While other sessions keep the CPUs busy (`idle cpu s` "
        "near 0), 2 workers therefore get about the CPU time 1 worker gets, and the wall "
        "ratio measures the other jobs, not milpverify."
    )


def summarise(results: list[dict], args: argparse.Namespace, command: str) -> str:
    by = {w: [r for r in results if r["workers"] == w] for w in (1, 2)}
    ratios = [a["wall_s"] / b["wall_s"] for a, b in zip(by[1], by[2])]
    lines = [
        f"# `--workers 2` against `--workers 1`: `rho default`, MNIST test 0-{args.images - 1}",
        "",
        f"Machine: {machine()}",
        "",
        "Thread variables seen by the runs: "
        + ", ".join(f"{v}={os.environ.get(v, 'unset')}" for v in THREAD_VARS),
        "",
        f"Command: `{command}`",
        "",
        (
            "Each row is one `milpverify rho ... --workers W --quiet` in a fresh process. "
            "`cpu s` is the CPU time of the command and its workers; `others cpu s` is what "
            "the rest of the machine used during it; `idle cpu s` is what nobody used "
            f"(the machine has {os.cpu_count()} CPUs, so a run of wall time T offers "
            f"{os.cpu_count()}T CPU seconds). `rows s` is the sum (max) of the per-image "
            "wall times inside the workers."
        ),
        "",
        (
            "| repeat | workers | wall s | cpu s | others cpu s | idle cpu s "
            "| rows s sum (max) | optimal | load 1-min before / after |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['repeat']} | {r['workers']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} "
            f"| {r['others_cpu_s']:.1f} | {r['idle_cpu_s']:.1f} | {r['rows_s_sum']:.1f} "
            f"({r['rows_s_max']:.1f}) | {r['optimal']}/{r['rows']} "
            f"| {r['load_before']:.2f} / {r['load_after']:.2f} |"
        )
    lines += [
        "",
        "Speed-up (wall 1 worker / wall 2 workers) per repeat: "
        + ", ".join(f"{x:.2f}x" for x in ratios)
        + f"; median {statistics.median(ratios):.2f}x (goal on an idle machine: 1.7x).",
        "",
        "CPU seconds of 2 workers / of 1 worker per repeat (the work parallelism adds: "
        "a second interpreter's start-up, imports and first-call warm-up): "
        + ", ".join(f"{b['cpu_s'] / a['cpu_s']:.2f}" for a, b in zip(by[1], by[2]))
        + ". A bound, not a measurement: if both workers had a CPU of their own and stayed "
        "equally busy, the speed-up would be cpu s (1 worker) / (cpu s (2 workers) / 2) = "
        + ", ".join(f"{2 * a['cpu_s'] / b['cpu_s']:.2f}x" for a, b in zip(by[1], by[2]))
        + "; the serial start of the command and an uneven last image lower it.",
    ]
    if note := autogroup_note():
        lines += ["", note]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--eps-cap", type=float, default=0.1)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    if not MNIST.is_file():
        sys.exit(f"needs {MNIST} (the shared data beside the repository)")
    command = (
        f"python benchmarks/workers_speedup.py --images {args.images} "
        f"--eps-cap {args.eps_cap:g} --timeout {args.timeout:g} --repeats {args.repeats}"
    )
    results: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            # Alternate the order so a load change during the benchmark hits both counts.
            for workers in (1, 2) if repeat % 2 == 0 else (2, 1):
                row = {
                    "repeat": repeat,
                    **run_once(
                        workers,
                        args.images,
                        args.eps_cap,
                        args.timeout,
                        Path(tmp) / f"w{workers}_r{repeat}.csv",
                    ),
                }
                results.append(row)
                print(
                    f"repeat {repeat} workers {workers}: wall {row['wall_s']:.1f} s, "
                    f"cpu {row['cpu_s']:.1f} s, others {row['others_cpu_s']:.1f} s",
                    flush=True,
                )
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "workers_speedup.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, FIELDS)
        writer.writeheader()
        writer.writerows(
            {k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()} for r in results
        )
    text = summarise(results, args, command)
    (args.out / "workers_speedup.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
