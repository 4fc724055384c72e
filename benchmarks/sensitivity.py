"""Speed of the sensitivity analysis on a study the size of the paper's: 19 models x 6 datasets, 10,000 bootstrap
resamples per fit (the paper profile's setting), every variant: 3 reporting rules x 3 ImageNet thresholds (65, 70,
75%) x 3 axis transforms, plus leave-one-model-out of the headline fit, on every dataset (240 fits with their
intervals), together with the headline fits of analysis.dataset_slopes (12 fits, bands, splines) and reading the
rules from the runs' curves (20 configs x 30 epochs each). Target: the whole of it under 5 s.

Baseline, measured in the same run: the same table with each interval computed by a separate call to
repro.analysis.bootstrap_slope (one (resamples, n) draw and one set of resampled fits per fit), i.e. without the
batching of repro.sensitivity.slope_intervals. The two give equal intervals (tests/test_sensitivity.py).

    PYTHONPATH=src .venv/bin/python benchmarks/sensitivity.py [--repeats 3] [--check]

`--check` exits 1 when the median time is over the target. To time it on two cores, prefix
`taskset -c 0,1` (Linux) and set OMP_NUM_THREADS=2.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import numpy as np
from timing import timed

from repro import sensitivity as sens
from repro.analysis import bootstrap_slope, dataset_slopes

TARGET_SECONDS = 5.0
RESAMPLES = 10_000
# ImageNet top-1 of the paper's 19 models (PAPER.md section 2); the curves are synthetic.
TOP1 = [56.522, 58.178, 60.552, 67.668, 67.734, 69.362, 71.586, 72.17, 73.36, 74.434, 76.13, 77.618, 77.7, 78.312,
        79.86, 80.46, 82.06, 82.78, 83.42]
DATASETS = ["cct20", "aptos", "hpa", "melanoma", "cassava", "eurosat"]
EPOCHS, CONFIGS = 30, 20  # the paper profile's grid: 30 epochs x 20 (lr, wd) configs per run


def records() -> list[dict]:
    """One run.json-like record per (model, dataset), each with 20 configs of 30-epoch curves."""
    rng = np.random.default_rng(0)
    out = []
    for d, name in enumerate(DATASETS):
        for i, top1 in enumerate(TOP1):
            base = 0.5 + 0.05 * d * top1 / 100
            configs = []
            for _ in range(CONFIGS):
                select = np.clip(base + rng.normal(0, 0.02, EPOCHS), 0.01, 0.99)
                report = np.clip(select + rng.normal(0, 0.01, EPOCHS), 0.01, 0.99)
                curve = [{"epoch": e + 1, "train_loss": 1.0, "select": float(s), "report": float(r)}
                         for e, (s, r) in enumerate(zip(select, report))]
                configs.append({"lr": 1e-3, "wd": 0.0, "diverged": False, "best_epoch": int(np.argmax(select)) + 1,
                                "curve": curve})
            out.append({"model": f"m{i}", "dataset": name, "metric": "accuracy", "init": "imagenet",
                        "imagenet_top1": top1, "status": "ok", "configs": configs})
    return out


def whole(runs: list[dict]) -> dict:
    """What `repro analyze` computes: the rules from the curves, the headline fits (12 fits with intervals and
    bands, 6 splines: analysis.dataset_slopes) and the sensitivity table."""
    frame = sens.rule_frame(runs)
    summary = frame.assign(model_display=frame["model"], value=frame["best_val"], status="ok")
    dataset_slopes(summary, 70.0, RESAMPLES, 0, 0.95)
    return sens.sensitivity(frame, rule="best_val", threshold=70.0, scale="linear", resamples=RESAMPLES, seed=0,
                            level=0.95)


def baseline(runs: list[dict]) -> None:
    """The same analysis with one bootstrap_slope call per fit instead of the batched intervals."""
    original = sens.slope_intervals

    def one_by_one(fits, resamples, seed, level):
        return [bootstrap_slope(x, y, resamples, seed, level) for x, y in fits]

    sens.slope_intervals = one_by_one
    try:
        whole(runs)
    finally:
        sens.slope_intervals = original


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--check", action="store_true", help="exit 1 if the median is over the target")
    args = parser.parse_args()
    runs = records()
    doc = sens.sensitivity(sens.rule_frame(runs), rule="best_val", threshold=70.0, scale="linear", resamples=100,
                           seed=0, level=0.95)  # warm up imports
    fits = sum(len(rows) for rows in doc["datasets"].values())
    ours = timed(lambda: whole(runs), args.repeats)
    base = timed(lambda: baseline(runs), args.repeats)
    median, base_median = statistics.median(ours), statistics.median(base)
    print(f"table: {len(TOP1)} models x {len(DATASETS)} datasets ({CONFIGS} configs x {EPOCHS} epochs per run), "
          f"{fits} fits ({len(sens.RULES)} rules x 3 thresholds x 3 transforms + leave-one-out), "
          f"{RESAMPLES:,} resamples per fit, {args.repeats} repeats")
    print(f"whole analysis (rules from curves, headline fits, sensitivity with batched intervals): median {median:.3f} s "
          f"(min {min(ours):.3f}, max {max(ours):.3f})")
    print(f"baseline (one bootstrap_slope call per fit): median {base_median:.3f} s")
    print(f"ratio ours / baseline: {median / base_median:.2f}; target < {TARGET_SECONDS:.1f} s: "
          f"{'met' if median < TARGET_SECONDS else 'NOT met'}")
    return 1 if args.check and median >= TARGET_SECONDS else 0


if __name__ == "__main__":
    sys.exit(main())
