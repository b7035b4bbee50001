"""Figures of an evaluation run: the rho-CDF per method (Bastani et al. Fig. 3) and a grid of
original / adversarial / scaled perturbation images (Fig. 2). The only matplotlib importer.

Figures are built with `matplotlib.figure.Figure` and the Agg canvas directly, so the global
pyplot backend (e.g. a notebook's inline backend) is never changed. They are saved at
`DPI` dots per inch in the format of the file's suffix (png, svg, pdf), with the
colour-blind-safe Okabe-Ito palette, the legend outside the data and a colour bar on the
perturbation maps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from milpverify.runs.metrics import brackets, cdf_band, select

#: One colour per method, stable across figures: the Okabe-Ito palette (distinguishable with
#: the common colour-vision deficiencies).
METHOD_COLORS = {"exact": "#000000", "lp": "#0072B2", "pgd": "#D55E00", "fgsm": "#E69F00",
                 "lbfgs": "#009E73", "combined": "#CC79A7"}

#: Resolution of saved raster figures (dots per inch).
DPI = 200

#: File formats a figure can be saved in (the suffix of its path).
FIGURE_FORMATS = ("png", "svg", "pdf")


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | Path | None) -> None:
    """Save in the format of `path`'s suffix (png when it has none of `FIGURE_FORMATS`)."""
    if path is not None:
        suffix = Path(path).suffix.lstrip(".").lower()
        fig.savefig(str(path), format=suffix if suffix in FIGURE_FORMATS else "png", dpi=DPI,
                    bbox_inches="tight")


def plot_rho_cdf(rows: Sequence[Mapping[str, Any]], *, methods: Sequence[str] | None = None,
                 eps: float | None = None, population: str = "all",
                 eps_max: float | None = None, pixel_divisor: float | None = None,
                 path: str | Path | None = None) -> Figure:
    """Fraction of points with rho <= eps as a function of eps, one curve per method.

    Points whose bracket is open (exact solves that timed out) make the curve a band
    between "certainly <= eps" and "possibly <= eps" (`metrics.cdf_band`). The population
    is the paper's (all points; see `milpverify.runs.metrics`) unless `population="correct"`.

    Parameters
    ----------
    rows : results-table rows (`method`, `label`, `pred`, `status`, `lower`, `upper`)
    methods : methods to draw (default: in order of appearance)
    eps : draw a vertical line at this eps
    eps_max : right end of the x axis (default: largest finite bound, at least `eps`)
    pixel_divisor : also label the top axis in pixels (eps * pixel_divisor)
    path : save a PNG here

    Returns
    -------
    matplotlib.figure.Figure

    Example
    -------
    >>> plot_rho_cdf(result.rows, eps=0.1, path="rho_cdf.png")
    """
    order = list(methods) if methods is not None else list(dict.fromkeys(r["method"]
                                                                         for r in rows))
    chosen = select(rows, population=population)
    finite = [float(r[k]) for r in chosen for k in ("lower", "upper")
              if math.isfinite(float(r[k]))]
    right = eps_max if eps_max is not None else max([*finite, eps or 0.0, 1e-3]) * 1.05
    grid = np.linspace(0.0, right, 400)
    fig = _new_figure(6.0, 4.0)
    ax = fig.add_subplot()
    for method in order:
        b = brackets(select(chosen, method=method))
        if len(b) == 0:
            continue
        low, high = cdf_band(b, grid)
        color = METHOD_COLORS.get(method)
        ax.step(grid, low, where="post", color=color, label=f"{method} (n={len(b)})")
        if np.any(high != low):
            ax.fill_between(grid, low, high, step="post", color=color, alpha=0.25,
                            label=f"{method}: open brackets")
    if eps is not None:
        ax.axvline(eps, color="grey", linestyle=":", label=f"ε = {eps:g}")
    ax.set_xlim(0.0, right)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("ε (L∞, input units)")
    who = "test points" if population == "all" else "correctly classified points"
    ax.set_ylabel(f"fraction of {who} with ρ ≤ ε")
    if pixel_divisor:
        scale = float(pixel_divisor)

        def to_pixels(v: Any) -> Any:
            return np.asarray(v) * scale

        def from_pixels(v: Any) -> Any:
            return np.asarray(v) / scale

        top = ax.secondary_xaxis("top", functions=(to_pixels, from_pixels))
        top.set_xlabel("ε (pixels)")
    ax.grid(alpha=0.3)
    # Outside the axes: inside, it hid the curves' upper ends (where they reach 1).
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8)
    save_figure(fig, path)
    return fig


def _as_image(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """[C, H, W] or [H, W] or flat square -> something `imshow` takes ([H, W] or [H, W, 3])."""
    a = np.asarray(x, dtype=np.float64)
    a = a.reshape(a.shape[-3:]) if a.ndim > 3 else a
    if a.ndim == 3:
        return a[0] if a.shape[0] == 1 else np.moveaxis(a, 0, -1)
    if a.ndim == 1:
        side = int(round(math.sqrt(a.size)))
        return a.reshape(side, side) if side * side == a.size else a[None, :]
    return a


def plot_adversarial_grid(originals: Sequence[npt.NDArray[np.float64]],
                          witnesses: Sequence[npt.NDArray[np.float64]],
                          titles: Sequence[tuple[str, str]], *, max_images: int = 8,
                          domain: tuple[float, float] = (0.0, 1.0),
                          path: str | Path | None = None) -> Figure:
    """Rows of original / adversarial / perturbation (scaled to its own L-inf norm).

    Parameters
    ----------
    originals, witnesses : images (input shape) in `domain`
    titles : per row, (title of the original, title of the adversarial example)
    max_images : at most this many rows

    Returns
    -------
    matplotlib.figure.Figure

    Example
    -------
    >>> plot_adversarial_grid([x], [r.witness], [("label 7", "adv 3, ρ=0.09")])
    """
    n = min(len(originals), len(witnesses), max_images)
    fig = _new_figure(6.0, max(2.0 * n, 2.0))
    if n == 0:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no adversarial examples", ha="center", va="center")
        ax.axis("off")
        save_figure(fig, path)
        return fig
    axes = fig.subplots(n, 3, squeeze=False)
    lo, hi = domain
    for i in range(n):
        x, w = np.asarray(originals[i], float), np.asarray(witnesses[i], float)
        delta = w - x
        scale = float(np.max(np.abs(delta))) or 1.0
        gray = {"cmap": "gray", "vmin": lo, "vmax": hi}
        img_x, img_w = _as_image(x), _as_image(w)
        axes[i, 0].imshow(img_x, **(gray if img_x.ndim == 2 else {}))
        axes[i, 1].imshow(img_w, **(gray if img_w.ndim == 2 else {}))
        d = _as_image(delta)
        what = "perturbation"
        if d.ndim == 3:  # colour: the mean over channels, so one colour bar reads it
            d, what = d.mean(axis=-1), "mean perturbation"
        shown = axes[i, 2].imshow(d, cmap="RdBu_r", vmin=-scale, vmax=scale)
        bar = fig.colorbar(shown, ax=axes[i, 2], fraction=0.046, pad=0.04)
        bar.set_label("x' - x", fontsize=7)
        bar.ax.tick_params(labelsize=6)
        axes[i, 0].set_title(titles[i][0], fontsize=8)
        axes[i, 1].set_title(titles[i][1], fontsize=8)
        axes[i, 2].set_title(f"{what} (max |x' - x| {scale:.3g})", fontsize=8)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    save_figure(fig, path)
    return fig


__all__ = ["DPI", "FIGURE_FORMATS", "METHOD_COLORS", "plot_adversarial_grid", "plot_rho_cdf",
           "save_figure"]
