"""Figure 1 replica and its Appendix-B variant: per dataset, downstream metric against ImageNet top-1 with the
all-model fit and the fit over models at or above the threshold. matplotlib only; every fit, band and spline
comes from analysis (results/slopes.json) and every per-model interval from results/summary.csv.

Exercised by `repro figures` (PNG and PDF in paper/figures/).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from repro.analysis import fitted_values, imagenet_rows  # noqa: E402

ALL_COLOR, ABOVE_COLOR, SPLINE_COLOR, REFERENCE_COLOR = "#7f7f7f", "#d62728", "#1f77b4", "#2ca02c"
# Fixed so the same figure gives the same bytes (PDF creation dates, PNG software tag): reruns stay no-ops.
_METADATA = {".png": {"Software": None}, ".pdf": {"CreationDate": None, "Producer": None, "Creator": None}}


def _panels(names: Sequence[str]):
    columns = min(3, len(names))
    rows = math.ceil(len(names) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 4.0 * rows), squeeze=False)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    return fig, axes


def _save(fig, outs: Path | Sequence[Path]) -> list[Path]:
    """Write the figure to every path (format from the suffix), each atomically."""
    paths = [Path(outs)] if isinstance(outs, (str, Path)) else [Path(o) for o in outs]
    fig.tight_layout()
    for out in paths:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")
        fig.savefig(tmp, dpi=150, metadata=_METADATA.get(out.suffix.lower()))
        os.replace(tmp, out)
    plt.close(fig)
    return paths


def _points(table, name: str):
    """The runs drawn on the ImageNet axis: only those that loaded ImageNet weights (analysis.imagenet_rows)."""
    rows = imagenet_rows(table[table["dataset"] == name]).sort_values("imagenet_top1")
    return rows, rows["imagenet_top1"].to_numpy(float), rows["value"].to_numpy(float) * 100


def _reference(ax, entry: dict) -> None:
    """Random-init runs ("no ImageNet pretraining"): a horizontal line at their metric, never a point on the
    ImageNet axis, since they have no ImageNet accuracy; their interval, when known, as a shaded strip."""
    for ref in entry.get("reference") or []:
        y = ref["value"] * 100
        ax.axhline(y, color=REFERENCE_COLOR, linestyle=":", linewidth=1.5,
                   label=f"{ref['model_display']}: {y:.1f} (no ImageNet pretraining)")
        if ref.get("low") is not None and ref.get("high") is not None:
            ax.axhspan(ref["low"] * 100, ref["high"] * 100, color=REFERENCE_COLOR, alpha=0.08, linewidth=0)


def _fit_lines(ax, entry: dict, x: np.ndarray, threshold: float, scale: str, bands: bool) -> None:
    above = x >= threshold
    for key, color, text in (("all", ALL_COLOR, "all models"),
                             ("above_threshold", ABOVE_COLOR, f"top-1 >= {threshold:g}%")):
        fit = entry[key]
        if fit["slope"] is None:
            continue
        xs = x if key == "all" else x[above]
        line_x = np.linspace(xs.min(), xs.max(), 50)  # a curve when the fit was made on logit/probit axes
        line_y = fitted_values(fit, line_x / 100, scale) * 100
        ci = fit["ci"]
        interval = "" if ci["low"] is None else f" [{ci['low']:.2f}, {ci['high']:.2f}]"
        ax.plot(line_x, line_y, color=color, label=f"{text}: slope {fit['slope']:.2f}{interval}")
        band = fit.get("band")
        if bands and band:
            ax.fill_between(np.array(band["grid"]) * 100, np.array(band["low"]) * 100,
                            np.array(band["high"]) * 100, color=color, alpha=0.15, linewidth=0)


def _finish(ax, name: str, metric: str) -> None:
    ax.set_title(name)
    ax.set_xlabel("ImageNet top-1 (%)")
    ax.set_ylabel(f"{metric} (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6.5, loc="best", framealpha=0.6)


def figure1(summary, slopes: dict, out: Path | Sequence[Path], *, title_note: str = "",
            label_points: bool = True) -> Path:
    """The Figure 1 replica: points labelled by model, the all-model fit in grey and the fit over models at or
    above the threshold in red. Written to each of `out` (PNG/PDF by suffix); returns the first path."""
    table = summary[summary["status"] == "ok"]
    names = sorted(slopes["datasets"])
    if not names:
        raise ValueError("no dataset has results to plot")
    fig, axes = _panels(names)
    threshold = slopes["threshold_top1_percent"]
    scale = slopes.get("transform", "linear")
    for ax, name in zip(axes.flat, names):
        entry = slopes["datasets"][name]
        rows, x, y = _points(table, name)
        above = x >= threshold
        ax.scatter(x[~above], y[~above], color=ALL_COLOR, zorder=3)
        ax.scatter(x[above], y[above], color=ABOVE_COLOR, zorder=3)
        if label_points:
            for xi, yi, label in zip(x, y, rows["model_display"]):
                ax.annotate(label, (xi, yi), fontsize=6, xytext=(3, 3), textcoords="offset points")
        _fit_lines(ax, entry, x, threshold, scale, bands=False)
        _reference(ax, entry)
        _finish(ax, name, entry["metric"])
    if title_note:
        fig.suptitle(title_note, fontsize=10)
    return _save(fig, out)[0]


def figure_appendix_b(summary, slopes: dict, out: Path | Sequence[Path], *, title_note: str = "") -> Path:
    """The Appendix-B variant: each model's interval as an error bar (summary's value_low/value_high), both fits
    with their pointwise bootstrap bands, and the smoothing spline through all models."""
    table = summary[summary["status"] == "ok"]
    names = sorted(slopes["datasets"])
    if not names:
        raise ValueError("no dataset has results to plot")
    fig, axes = _panels(names)
    threshold = slopes["threshold_top1_percent"]
    scale = slopes.get("transform", "linear")
    level = slopes.get("bootstrap", {}).get("level")
    for ax, name in zip(axes.flat, names):
        entry = slopes["datasets"][name]
        rows, x, y = _points(table, name)
        low = rows["value_low"].to_numpy(float) * 100 if "value_low" in rows else np.full(len(x), np.nan)
        high = rows["value_high"].to_numpy(float) * 100 if "value_high" in rows else np.full(len(x), np.nan)
        has = ~(np.isnan(low) | np.isnan(high))
        above = x >= threshold
        for mask, color in ((~above, ALL_COLOR), (above, ABOVE_COLOR)):
            ax.errorbar(x[mask & has], y[mask & has], yerr=[y[mask & has] - low[mask & has],
                        high[mask & has] - y[mask & has]], fmt="o", color=color, ms=4, capsize=2, zorder=3)
            ax.scatter(x[mask & ~has], y[mask & ~has], color=color, s=16, zorder=3)
        _fit_lines(ax, entry, x, threshold, scale, bands=True)
        _reference(ax, entry)
        # The view follows the measurements: a band or a spline over few models may swing far outside them.
        refs = [r["value"] * 100 for r in entry.get("reference") or []]
        seen = np.concatenate([y, low[has], high[has], refs])
        margin = 0.15 * max(np.ptp(seen), 1.0)
        ax.set_ylim(seen.min() - margin, seen.max() + margin)
        spline = entry.get("spline") or {}
        if spline.get("values"):
            ax.plot(np.array(spline["grid"]) * 100, np.array(spline["values"]) * 100, color=SPLINE_COLOR,
                    linestyle="--", label="smoothing spline (GCV)")
        elif spline.get("reason"):
            ax.text(0.02, 0.02, f"no spline: {spline['reason']}", transform=ax.transAxes, fontsize=6)
        _finish(ax, name, entry["metric"])
    share = f"{level:.0%} " if level else ""
    note = f"error bars: per-model {share}intervals;\nshaded: pointwise {share}bootstrap bands of the fits"
    fig.suptitle(f"{title_note}\n{note}" if title_note else note, fontsize=9)
    return _save(fig, out)[0]
