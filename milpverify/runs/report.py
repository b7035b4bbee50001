"""The report of a run: summary tables and figures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from milpverify.runs.datasets import DEFAULT_IMAGES
from milpverify.runs.metrics import summary_table
from milpverify.runs.results_file import atomic_write
from milpverify.runs.runner import Layout, RunResult, _compact, _witnesses
from milpverify.runs.tasks import RunSpec, load_inputs


# ---------------------------------------------------------------------------- reports
def figure_formats(formats: str | Sequence[str]) -> tuple[str, ...]:
    """`"png,svg"` or a sequence as a checked tuple of `plots.FIGURE_FORMATS`."""
    from milpverify.errors import InvalidInputError
    from milpverify.runs.plots import FIGURE_FORMATS
    items = [f.strip().lower().lstrip(".") for f in
             (formats.split(",") if isinstance(formats, str) else formats)]
    items = list(dict.fromkeys(f for f in items if f))
    bad = [f for f in items if f not in FIGURE_FORMATS]
    if bad or not items:
        raise InvalidInputError(f"`figure_format` must be one or more of "
                                f"{', '.join(FIGURE_FORMATS)} (comma-separated); got "
                                f"{formats!r}.")
    return tuple(items)


def _report(spec: RunSpec, result: RunResult, layout: Layout, selected: Sequence[int], *,
            formats: Sequence[str] = ("png",), grid_size: int = 8) -> None:
    """summary.md and the two figures (in each of `formats`) of an `evaluate` run directory;
    the adversarial-example grid shows at most `grid_size` images."""
    from milpverify.runs import plots
    assert layout.report_dir is not None
    out = layout.report_dir
    cdf = out / f"rho_cdf.{formats[0]}"
    grid = out / f"adversarial_examples.{formats[0]}"
    figure = plots.plot_rho_cdf(result.rows, methods=spec.methods, eps=spec.eps,
                                pixel_divisor=spec.pixel_divisor)
    for fmt in formats:
        plots.save_figure(figure, out / f"rho_cdf.{fmt}")
    preference = {m: k for k, m in enumerate(spec.methods)}
    best: dict[int, tuple[Mapping[str, Any], npt.NDArray[np.float64]]] = {}
    for row, w in _witnesses(spec, result.rows, layout):
        current = best.get(row["index"])
        if current is None or (row["upper"], preference[row["method"]]) < \
                (current[0]["upper"], preference[current[0]["method"]]):
            best[row["index"]] = (row, w)
    _, images, _ = load_inputs(spec)
    chosen = [best[i] for i in sorted(best)][:grid_size]
    figure = plots.plot_adversarial_grid(
        [images[r["index"]] for r, _ in chosen], [w for _, w in chosen],
        [(f"#{r['index']}: label {r['label']}, predicted {r['pred']}",
          f"{r['method']}: {r['adversarial_label']} at ρ ≤ {r['upper']:.4g} "
          f"({r['upper'] * spec.pixel_divisor:.3g} px)") for r, _ in chosen],
        domain=spec.domain, max_images=grid_size)
    for fmt in formats:
        plots.save_figure(figure, out / f"adversarial_examples.{fmt}")
    eps = spec.eps
    assert eps is not None
    lines = [
        "# milpverify evaluate",
        "",
        f"- model: `{spec.model}` ({spec.model_path})",
        f"- data: `{spec.data_path or 'embedded ' + DEFAULT_IMAGES}`, {len(selected)} images "
        f"({_compact(selected)}), pixels / {spec.pixel_divisor:g}"
        + ("" if spec.mean is None else
           f", then (x - mean) / std with mean {list(spec.mean)}, std {list(spec.std or ())}"),
        f"- ε = {eps:g} ({eps * spec.pixel_divisor:.3g} pixels); exact: eps_cap = "
        f"{spec.eps_cap}, time limit {spec.time_limit_s:g} s per image, backend {spec.backend}",
        f"- property: {spec.options()['property'] or 'plain robustness (top-1 label)'}"
        + (" — ρ is the distance to the nearest input violating it" if spec.property else ""),
        f"- rows: {len(result.rows)} ({result.computed} computed now, {result.skipped} resumed)",
        *(f"- **warning**: {w}" for w in result.warnings),
        "",
        "## All evaluated points (Bastani et al. 2016, §2)",
        "",
        result.summary_markdown(),
        "",
        "## Correctly classified points only",
        "",
        summary_table(result.summaries_correct, pixel_divisor=spec.pixel_divisor),
        "",
        "## Definitions",
        "",
        "φ(ε) = |{x : ρ(x) ≤ ε}| / |X| and μ(ε) = mean of ρ(x) over {x : ρ(x) ≤ ε}, with ρ "
        "measured against the *predicted* label and X all evaluated points (the paper's "
        "estimators; it does not drop misclassified points). The second table restricts X "
        "to correctly classified points.",
        "",
        "Heuristics (lp, pgd, fgsm, lbfgs) use their estimate ρ̂ = upper bound (∞ when "
        "nothing was found), so their φ is a lower bound of the true φ. The exact method "
        "uses the proven bracket [lower, upper]: a point counts as certainly adversarial at "
        "ε when upper ≤ ε, certainly not when lower > ε (or ρ > lower = ε was proven, status "
        "robust_at_cap), and unknown otherwise; φ and μ are then printed as [min, max] over "
        "all values consistent with the brackets (see `milpverify.runs.metrics`). Error rows "
        "count as unknown. The row `combined` (when the exact method ran with others) is the "
        "exact bracket with its upper end lowered to the best verified upper bound of any "
        "method.",
        "",
        f"![ρ CDF]({cdf.name})",
        "",
        f"![adversarial examples]({grid.name})",
        "",
    ]
    atomic_write(out / "summary.md", "\n".join(lines).encode())
    result.files.update(summary=out / "summary.md", rho_cdf=cdf, adversarial_examples=grid)
