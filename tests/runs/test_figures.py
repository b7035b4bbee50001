"""Figures: png/svg/pdf at >= 150 dpi, the legend outside the data, the Okabe-Ito palette,
a colour bar on each perturbation map, and a grid size."""

from __future__ import annotations

import numpy as np
from matplotlib.colors import to_hex

from milpverify.cli import main
from milpverify.runs import plots


def _rows():
    return [{"index": i, "method": m, "status": "upper_bound", "lower": 0.0,
             "upper": 0.01 * (i + 1) * (1 + k), "label": 1, "pred": 1, "seconds": 1.0}
            for i in range(5) for k, m in enumerate(("lp", "pgd"))]


def test_cdf_legend_outside_axes_and_palette():
    fig = plots.plot_rho_cdf(_rows(), eps=0.03)
    ax = fig.axes[0]
    legend = ax.get_legend()
    renderer = fig.canvas.get_renderer()
    assert legend.get_window_extent(renderer).x0 >= ax.get_window_extent(renderer).x1
    colours = {line.get_label().split()[0]: to_hex(line.get_color()) for line in ax.lines
               if "(n=" in line.get_label()}
    assert colours == {"lp": "#0072b2", "pgd": "#d55e00"}


def test_perturbation_maps_have_a_colour_bar():
    x = np.full((1, 4, 4), 0.5)
    fig = plots.plot_adversarial_grid([x, x], [x + 0.01, x - 0.02], [("a", "b"), ("c", "d")])
    assert len(fig.axes) == 2 * 3 + 2  # three panels per row, one colour bar per row


def test_save_formats_and_dpi(tmp_path):
    fig = plots.plot_rho_cdf(_rows())
    for fmt in plots.FIGURE_FORMATS:
        plots.save_figure(fig, tmp_path / f"f.{fmt}")
    assert (tmp_path / "f.svg").read_text().lstrip().startswith("<?xml")
    assert (tmp_path / "f.pdf").read_bytes().startswith(b"%PDF")
    from PIL import Image
    with Image.open(tmp_path / "f.png") as png:
        assert png.info["dpi"][0] >= 150


def test_evaluate_figure_flags(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["evaluate", "default", "--indices", "0:3", "--eps", "0.1", "--methods", "fgsm",
                 "--quiet", "--figure-format", "svg,pdf", "--figure-grid", "2",
                 "--out", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"rho_cdf.svg", "rho_cdf.pdf", "adversarial_examples.svg",
            "adversarial_examples.pdf"} <= names and "rho_cdf.png" not in names
    assert "![ρ CDF](rho_cdf.svg)" in (out / "summary.md").read_text()
    # two rows of three panels plus their colour bars
    assert (out / "adversarial_examples.svg").read_text().count('id="axes_') == 8
    assert main(["evaluate", "default", "--eps", "0.05", "--figure-format", "gif",
                 "--out", str(tmp_path / "x")]) == 1
    assert "`figure_format` must be one or more of png, svg, pdf" in capsys.readouterr().err
