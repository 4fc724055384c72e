"""Figure 1 replica: per dataset, downstream metric against ImageNet top-1 with the all-model fit and the fit
over models at or above the threshold. matplotlib only; the fits and their curves come from analysis.

Exercised by `repro figures`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from repro.analysis import fitted_values  # noqa: E402

ALL_COLOR, ABOVE_COLOR = "#7f7f7f", "#d62728"


def figure1(summary, slopes: dict, out: Path, *, title_note: str = "", label_points: bool = True) -> Path:
    """Write the figure (PNG, format from the suffix) atomically and return its path."""
    table = summary[summary["status"] == "ok"]
    names = sorted(slopes["datasets"])
    if not names:
        raise ValueError("no dataset has results to plot")
    columns = min(3, len(names))
    rows = math.ceil(len(names) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 4.0 * rows), squeeze=False)
    threshold = slopes["threshold_top1_percent"]
    scale = slopes.get("transform", "linear")
    for ax, name in zip(axes.flat, names):
        entry = slopes["datasets"][name]
        rows_d = table[table["dataset"] == name]
        x = rows_d["imagenet_top1"].to_numpy(float)
        y = rows_d["value"].to_numpy(float) * 100
        above = x >= threshold
        ax.scatter(x[~above], y[~above], color=ALL_COLOR, zorder=3)
        ax.scatter(x[above], y[above], color=ABOVE_COLOR, zorder=3)
        if label_points:
            for xi, yi, label in zip(x, y, rows_d["model_display"]):
                ax.annotate(label, (xi, yi), fontsize=6, xytext=(3, 3), textcoords="offset points")
        for key, color, text in (("all", ALL_COLOR, "all models"),
                                 ("above_threshold", ABOVE_COLOR, f"top-1 >= {threshold:g}%")):
            fit = entry[key]
            if fit["slope"] is None:
                continue
            xs = x if key == "all" else x[above]
            line_x = np.linspace(xs.min(), xs.max(), 50)  # a curve when the fit was made on logit/probit axes
            line_y = fitted_values(fit, line_x / 100, scale) * 100
            ax.plot(line_x, line_y, color=color, label=f"{text}: slope {fit['slope']:.2f}")
        ax.set_title(name)
        ax.set_xlabel("ImageNet top-1 (%)")
        ax.set_ylabel(f"{entry['metric']} (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    if title_note:
        fig.suptitle(title_note, fontsize=10)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")
    fig.savefig(tmp, dpi=150)
    plt.close(fig)
    os.replace(tmp, out)
    return out
