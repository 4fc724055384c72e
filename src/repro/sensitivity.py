"""How much the slopes depend on choices the paper does not pin: the reporting rule, the ImageNet threshold, the axis
transform and each single model. Pure functions (numpy, pandas); no file layout, no plotting.

Every run.json keeps each config's per-epoch curve (`configs[i].curve[e] = {"epoch", "train_loss", "select",
"report"}`) and each config's best-validation epoch (`configs[i].best_epoch`, 1-based, None when the config
diverged before finishing one epoch), so every rule below is computed without retraining:

- `best_val` (ours, the number in results/summary.csv): the best-validation config is the one with the highest
  selection value at its best epoch, the first on ties (repro.train.best_config); its report value at its
  best-validation epoch.
- `max_report` (what the authors' script prints last): for every config, the report value at that config's
  best-validation epoch (sample_train.py:187-192 keep the test accuracy of the first epoch whose validation accuracy
  beats the config's best so far; lines 202-204 append it to `grid_test`); then the maximum over configs
  (line 210 prints `np.amax(grid_test)`). It is a maximum over configs only, not over epochs: inside a config the
  epoch is still chosen by validation. Line 208 prints the best validation value; which of the two the paper
  plotted is not stated (issue 13, point 6).
- `last_epoch`: the report value at the last epoch the best-validation config (as in `best_val`) finished, i.e.
  `curve[-1]` of that config: the final epoch (finetune.epochs) unless that config's loss became non-finite, in
  which case it is the last epoch before the divergence. The config is chosen as in `best_val`, only the epoch
  differs. Under `finetune.selection: last_epoch` it equals `best_val`.

A run with status other than ok (every config diverged) has no value under any rule and is left out, as it is from
the main fit. Runs of a random-init model sit at no ImageNet accuracy and are never fitted (analysis.imagenet_rows).

The sensitivity table of a dataset has one row per (rule, threshold, transform), the fit over models at or above the
threshold, and one leave-one-model-out row per model of the headline fit (the configured rule, threshold and
transform). Intervals are analysis.bootstrap_slope's percentile bootstrap, computed for many fits at once: every fit
over n models draws the same (resamples, n) index matrix from the same seed, so fits of equal n are resampled
together by matrix products (`slope_intervals`); the result equals bootstrap_slope fit by fit to rounding
(tests/test_sensitivity.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from repro.analysis import MIN_MODELS_FOR_CI, TRANSFORMS, _counts, fit_line, imagenet_rows, transform
from repro.errors import ReproError

RULES = ("best_val", "max_report", "last_epoch")
RULE_TEXT = {
    "best_val": "report value at the best-validation epoch of the best-validation config",
    "max_report": "maximum over configs of the report value at each config's best-validation epoch "
                  "(the authors' printed np.amax(grid_test), sample_train.py:210)",
    "last_epoch": "report value at the last finished epoch of the best-validation config",
}
THRESHOLDS = (65.0, 70.0, 75.0)  # ImageNet top-1 percent; the configured analyze.threshold is added
SLOPE_BOUND = 0.05  # the paper's "slope < 0.05" (paper/claims.yaml C4)
COLUMNS = ["dataset", "metric", "rule", "threshold", "transform", "left_out", "n", "slope", "ci_low", "ci_high",
           "below_bound", "ci_below_bound", "headline", "reason"]


def _finished(configs: Sequence[Mapping]) -> list[Mapping]:
    return [c for c in configs if c.get("best_epoch") is not None and c.get("curve")]


def _best_config(configs: Sequence[Mapping]) -> Mapping | None:
    """The config with the highest selection value at its best epoch, the first on ties (train.best_config)."""
    best, best_value = None, -math.inf
    for c in _finished(configs):
        value = c["curve"][c["best_epoch"] - 1]["select"]
        if best is None or value > best_value:
            best, best_value = c, value
    return best


def rule_value(record: Mapping, rule: str, where: str = "run.json") -> float | None:
    """The report value of one run under `rule`; None when no config finished an epoch."""
    if rule not in RULES:
        raise ReproError(f"unknown report rule {rule!r}; valid: {', '.join(RULES)}")
    configs = record.get("configs")
    if not isinstance(configs, list):
        raise ReproError(f"{where}: no per-config curves (configs); re-run `repro finetune` for this run")
    try:
        if rule == "max_report":
            finished = _finished(configs)
            return max((float(c["curve"][c["best_epoch"] - 1]["report"]) for c in finished), default=None)
        chosen = _best_config(configs)
        if chosen is None:
            return None
        epoch = chosen["best_epoch"] if rule == "best_val" else len(chosen["curve"])
        return float(chosen["curve"][epoch - 1]["report"])
    except (KeyError, IndexError, TypeError) as error:
        raise ReproError(f"{where}: a config's curve is malformed ({error!r}); re-run `repro finetune`") from None


def rule_frame(records: Iterable[Mapping], rules: Sequence[str] = RULES):
    """One row per run that can be fitted: model, dataset, metric, init, imagenet_top1 and one column per rule."""
    import pandas as pd

    rows = []
    for r in records:
        if r.get("status") != "ok":
            continue
        where = f"run.json of {r.get('model')} on {r.get('dataset')}"
        rows.append({"model": r["model"], "dataset": r["dataset"], "metric": r["metric"], "init": r.get("init"),
                     "imagenet_top1": r.get("imagenet_top1"),
                     **{rule: rule_value(r, rule, where) for rule in rules}})
    return pd.DataFrame(rows, columns=["model", "dataset", "metric", "init", "imagenet_top1", *rules])


def summary_under_rule(summary, records: Iterable[Mapping], rule: str):
    """summary.csv with `value` replaced by the value under `rule` (unchanged for best_val). Per-model intervals
    come from the best_val predictions only, so under another rule they are blanked rather than misattributed."""
    if rule == "best_val":
        return summary
    values = rule_frame(records, (rule,)).set_index(["model", "dataset"])[rule]
    table = summary.copy()
    keys = list(zip(table["model"], table["dataset"]))
    table["value"] = [values.get(k, float("nan")) if s == "ok" else v
                      for k, s, v in zip(keys, table["status"], table["value"])]
    table[["value_low", "value_high"]] = float("nan")
    table["value_ci"] = None
    return table


# ---- many bootstrap intervals at once -----------------------------------------------------------------------

def slope_intervals(fits: Sequence[tuple[np.ndarray, np.ndarray]], resamples: int, seed: int,
                    level: float) -> list[dict]:
    """analysis.bootstrap_slope's interval (low, high, dropped, reason) for each (x, y) in `fits`.

    bootstrap_slope draws `default_rng(seed).integers(0, n, (resamples, n))`, which depends on n only; so all fits of
    n models share one draw. A resample is then a vector of counts (how often each model was drawn), and its least
    squares slope needs only the weighted sums of x, y, x*x and x*y: four (resamples, n) x (n, fits) matrix products
    give every resampled slope of every fit of that n at once. x and y are centred first (which leaves the slope
    unchanged) so the sums do not cancel. A resample whose drawn models all share one x has no slope and is dropped,
    as bootstrap_slope drops it; that test is exact (on counts), not a comparison with a small number.
    """
    out: list[dict | None] = [None] * len(fits)
    by_n: dict[int, list[int]] = {}
    for i, (x, _) in enumerate(fits):
        by_n.setdefault(len(x), []).append(i)
    tail = (1 - level) / 2 * 100
    for n, members in by_n.items():
        if n < MIN_MODELS_FOR_CI:
            for i in members:
                out[i] = {"low": None, "high": None, "dropped": None,
                          "reason": f"needs at least {MIN_MODELS_FOR_CI} models, has {n}"}
            continue
        index = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
        counts = _counts(index, n)
        x = np.stack([np.asarray(fits[i][0], float) for i in members])  # (fits, n)
        y = np.stack([np.asarray(fits[i][1], float) for i in members])
        x = x - x.mean(axis=1, keepdims=True)
        y = y - y.mean(axis=1, keepdims=True)
        sx, sy = counts @ x.T, counts @ y.T  # (resamples, fits)
        sxx, sxy = counts @ (x * x).T, counts @ (x * y).T
        ok = _non_degenerate(counts, x, n)
        with np.errstate(invalid="ignore", divide="ignore"):
            slopes = (sxy - sx * sy / n) / (sxx - sx * sx / n)
        if ok.all():
            lows, highs = np.percentile(slopes, [tail, 100 - tail], axis=0)
            for j, i in enumerate(members):
                out[i] = {"low": float(lows[j]), "high": float(highs[j]), "dropped": 0, "reason": None}
            continue
        for j, i in enumerate(members):
            kept = slopes[ok[:, j], j]
            if not len(kept):  # possible only with very few resamples
                out[i] = {"low": None, "high": None, "dropped": resamples, "reason": "every resample is degenerate"}
                continue
            low, high = np.percentile(kept, [tail, 100 - tail])
            out[i] = {"low": float(low), "high": float(high), "dropped": int((~ok[:, j]).sum()), "reason": None}
    return out  # type: ignore[return-value]


def _non_degenerate(counts: np.ndarray, x: np.ndarray, n: int) -> np.ndarray:
    """(resamples, fits): whether the resample holds two different x values. With all x distinct that is "not every
    draw is one model" (shared by all such fits); otherwise the draws are summed per group of equal x."""
    one_model = counts.max(axis=1) < n
    ok = np.repeat(one_model[:, None], x.shape[0], axis=1)
    for j, row in enumerate(x):
        values, group = np.unique(row, return_inverse=True)
        if len(values) < n:
            ok[:, j] = (counts @ np.eye(len(values))[group]).max(axis=1) < n
    return ok


# ---- the sensitivity table ----------------------------------------------------------------------------------

def sensitivity(frame, *, rule: str, threshold: float, scale: str, resamples: int, seed: int, level: float,
                thresholds: Sequence[float] = THRESHOLDS, rules: Sequence[str] = RULES,
                transforms: Sequence[str] = TRANSFORMS) -> dict:
    """Per dataset, the rows of its sensitivity table (COLUMNS), from `rule_frame`'s table.

    Rows: every (rule, threshold, transform) fit over the models at or above the threshold, then one row per model of
    the headline fit (`rule`, `threshold`, `scale`) with that model left out. `below_bound` is the paper's check
    (point slope < 0.05); `ci_below_bound` asks the same of the interval's upper end. On logit and probit axes the
    slope is in units of that scale, so the 0.05 bound is the paper's only on linear axes.
    """
    thresholds = sorted({float(t) for t in (*thresholds, threshold)})
    on_axis = imagenet_rows(frame)
    jobs, rows = [], []
    for dataset, group in on_axis.groupby("dataset", sort=True):
        top1 = group["imagenet_top1"].to_numpy(float)
        models = group["model"].tolist()
        metric = str(group["metric"].iloc[0])
        cache: dict[tuple[str, str], tuple[np.ndarray, np.ndarray] | str] = {}

        def axes(r: str, s: str):
            if (r, s) not in cache:
                try:
                    cache[r, s] = (transform(top1 / 100.0, s), transform(group[r].to_numpy(float), s))
                except ReproError as error:  # a kappa below 0 has no logit: that row says so, the others stand
                    cache[r, s] = str(error).split(";")[0]
            return cache[r, s]

        def add(r: str, t: float, s: str, mask: np.ndarray, left_out: str, headline: bool) -> None:
            row = {"dataset": dataset, "metric": metric, "rule": r, "threshold": t, "transform": s,
                   "left_out": left_out, "n": int(mask.sum()), "headline": headline}
            values = axes(r, s)
            if isinstance(values, str):
                rows.append({**row, "slope": None, "reason": values})
                return
            x, y = values[0][mask], values[1][mask]
            slope = fit_line(x, y)["slope"]
            rows.append({**row, "slope": slope, "reason": None if slope is not None else
                         "fewer than two distinct models"})
            if slope is not None:
                jobs.append((len(rows) - 1, x, y))

        for r in rules:
            for t in thresholds:
                for s in transforms:
                    add(r, t, s, top1 >= t, "", (r, t, s) == (rule, float(threshold), scale))
        base = top1 >= threshold
        for k in np.flatnonzero(base):
            mask = base.copy()
            mask[k] = False
            add(rule, float(threshold), scale, mask, models[k], False)
    intervals = slope_intervals([(x, y) for _, x, y in jobs], resamples, seed, level)
    for (position, _, _), ci in zip(jobs, intervals):
        rows[position].update(ci_low=ci["low"], ci_high=ci["high"], reason=ci["reason"])
    datasets: dict[str, list[dict]] = {}
    for row in rows:
        slope, high = row.get("slope"), row.get("ci_high")
        row.setdefault("ci_low", None)
        row.setdefault("ci_high", None)
        row["below_bound"] = None if slope is None else bool(slope < SLOPE_BOUND)
        row["ci_below_bound"] = None if high is None else bool(high < SLOPE_BOUND)
        datasets.setdefault(row["dataset"], []).append({c: row.get(c) for c in COLUMNS})
    return {"rule": rule, "rules": {r: RULE_TEXT[r] for r in rules}, "threshold": float(threshold),
            "transform": scale, "thresholds": thresholds, "transforms": list(transforms), "bound": SLOPE_BOUND,
            "bootstrap": {"resamples": resamples, "seed": seed, "level": level}, "datasets": datasets}


def long_table(doc: Mapping):
    """All datasets' rows as one DataFrame (COLUMNS), for paper/tables/sensitivity.csv."""
    import pandas as pd

    return pd.DataFrame([row for rows in doc["datasets"].values() for row in rows], columns=COLUMNS)


def analyze(summary, records: Sequence[Mapping], a) -> tuple[dict, dict[str, bytes]]:
    """What `repro analyze` computes from summary.csv and the runs' records under the analyze params `a`: the
    slopes document (analysis.dataset_slopes under `a.report_rule`, with `report_rule` and `sensitivity`) and the
    files of paper/tables it writes ({name: content})."""
    from repro.analysis import dataset_slopes
    from repro.report import sensitivity_markdown

    table = summary_under_rule(summary, records, a.report_rule)
    doc = dataset_slopes(table, a.threshold, a.bootstrap_resamples, a.bootstrap_seed, a.ci_level, a.transform)
    checks = sensitivity(rule_frame(records), rule=a.report_rule, threshold=a.threshold, scale=a.transform,
                         resamples=a.bootstrap_resamples, seed=a.bootstrap_seed, level=a.ci_level)
    files = {"sensitivity.csv": long_table(checks).to_csv(index=False, lineterminator="\n").encode(),
             "sensitivity.md": sensitivity_markdown(checks).encode()}
    return {"report_rule": a.report_rule, **doc, "sensitivity": checks}, files


def verdict_rules(verdicts: Sequence[dict], claims: Sequence[Mapping], rule: str) -> list[dict]:
    """Each verdict with `rule`: the reporting rule its numbers came from. Slope claims use the fits of
    results/slopes.json (made under analyze.report_rule, `rule`); value and gain claims read results/summary.csv,
    which is always best_val; the others use no reported value ("-")."""
    kinds = {c.get("id"): (c.get("check") or {}).get("kind") for c in claims if isinstance(c, Mapping)}
    slope_kinds, value_kinds = {"both_fits", "slope_below", "slope_near"}, {"values_near", "gain"}

    def which(kind):
        return rule if kind in slope_kinds else "best_val" if kind in value_kinds else "-"

    return [{**v, "rule": which(kinds.get(v["id"]))} for v in verdicts]
