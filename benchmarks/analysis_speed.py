"""Speed of the analysis step on a table the size of the paper's study: 19 models x 6 datasets, 10,000 bootstrap
resamples per fit (the paper profile's setting). Target: under 2 s for `analysis.dataset_slopes` (12 fits with
their intervals and bands, 6 splines).

Baseline, measured in the same run: scipy.stats.bootstrap (paired, vectorized, method="percentile") computing the
same 12 slope intervals and nothing else, i.e. what the analysis would cost if it called scipy for its intervals.

    PYTHONPATH=src .venv/bin/python benchmarks/analysis_speed.py [--repeats 5] [--check]

`--check` exits 1 when the median time is over the target.

Second figure: `repro collect`'s per-model intervals (1,000 resamples of the test examples) at the paper's test-set
sizes (APTOS 732 images, kappa; Melanoma about 11,000, AUC; HPA 2,826 x 28 labels, macro F1), against a loop that
calls repro.metrics' scikit-learn function once per resample (timed on 50 resamples, per resample).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
from timing import timed
import pandas as pd

from repro.analysis import dataset_slopes

TARGET_SECONDS = 2.0
RESAMPLES = 10_000
# ImageNet top-1 of the paper's 19 models (docs: PAPER.md section 2); the metric values are synthetic.
TOP1 = [56.522, 58.178, 60.552, 67.668, 67.734, 69.362, 71.586, 72.17, 73.36, 74.434, 76.13, 77.618, 77.7, 78.312,
        79.86, 80.46, 82.06, 82.78, 83.42]
DATASETS = ["cct20", "aptos", "hpa", "melanoma", "cassava", "eurosat"]


def table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for d, name in enumerate(DATASETS):
        for i, top1 in enumerate(TOP1):
            value = 0.5 + 0.05 * d * top1 / 100 + rng.normal(0, 0.01)
            rows.append({"model": f"m{i}", "model_display": f"M{i}", "imagenet_top1": top1, "init": "imagenet",
                         "dataset": name, "metric": "accuracy", "value": value, "status": "ok"})
    return pd.DataFrame(rows)


def scipy_baseline(summary: pd.DataFrame, threshold: float) -> None:
    from scipy.stats import bootstrap

    def slope(x, y, axis=-1):
        xc = x - x.mean(axis, keepdims=True)
        return (xc * (y - y.mean(axis, keepdims=True))).sum(axis) / (xc**2).sum(axis)

    for _, rows in summary.groupby("dataset"):
        x, y = rows["imagenet_top1"].to_numpy() / 100, rows["value"].to_numpy()
        for mask in (np.ones(len(x), bool), x >= threshold / 100):
            bootstrap((x[mask], y[mask]), slope, paired=True, vectorized=True, n_resamples=RESAMPLES, rng=0,
                      method="percentile")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--check", action="store_true", help="exit 1 if the median is over the target")
    args = parser.parse_args()
    summary = table()
    dataset_slopes(summary, 70.0, 100, 0, 0.95)  # warm up imports (scipy, pandas groupby)
    ours = timed(lambda: dataset_slopes(summary, 70.0, RESAMPLES, 0, 0.95), args.repeats)
    base = timed(lambda: scipy_baseline(summary, 70.0), args.repeats)
    median, base_median = statistics.median(ours), statistics.median(base)
    print(f"table: {len(TOP1)} models x {len(DATASETS)} datasets, {RESAMPLES:,} resamples per fit, "
          f"{args.repeats} repeats")
    print(f"dataset_slopes (12 fits + intervals + bands, 6 splines): median {median:.3f} s "
          f"(min {min(ours):.3f}, max {max(ours):.3f})")
    print(f"baseline scipy.stats.bootstrap (12 slope intervals only): median {base_median:.3f} s")
    print(f"ratio ours / baseline: {median / base_median:.2f}; target < {TARGET_SECONDS:.1f} s: "
          f"{'met' if median < TARGET_SECONDS else 'NOT met'}")
    intervals()
    return 1 if args.check and median >= TARGET_SECONDS else 0


def intervals() -> None:
    from repro.analysis import metric_interval
    from repro.metrics import METRICS

    rng = np.random.default_rng(0)
    cases = {"quadratic_kappa": (rng.integers(0, 5, 732), rng.dirichlet(np.ones(5), 732)),
             "roc_auc": (rng.integers(0, 2, 11_000), rng.dirichlet(np.ones(2), 11_000)),
             "macro_f1": (rng.integers(0, 2, (2826, 28)), rng.uniform(0, 1, (2826, 28)))}
    for metric, (targets, scores) in cases.items():
        start = time.perf_counter()
        metric_interval(metric, targets, scores, resamples=1000, seed=0, level=0.95)
        ours = (time.perf_counter() - start) / 1000
        start = time.perf_counter()
        for _ in range(50):
            index = rng.integers(0, len(targets), len(targets))
            METRICS[metric](targets[index], scores[index])
        loop = (time.perf_counter() - start) / 50
        print(f"per-model interval, {metric} (n={len(targets)}): {ours * 1000:.2f} ms per resample, "
              f"{ours * 1000:.2f} s per 1,000; loop over scikit-learn {loop * 1000:.1f} ms per resample; "
              f"ratio {loop / ours:.0f}x")


if __name__ == "__main__":
    sys.exit(main())
