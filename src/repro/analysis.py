"""Pure analysis: per-dataset line fits of downstream metric against ImageNet top-1, bootstrap intervals and
pointwise bands over models, the Appendix-B smoothing spline, per-model intervals from saved predictions (exact
binomial for accuracy, bootstrap over test examples otherwise), and verdicts on the paper's claims. No matplotlib
and no file layout here.

Both axes are fractions (top-1 56.5% -> 0.565), so a slope is unit-free as in the paper (PAPER.md section 1).
Exercised by `repro collect` (per-model intervals), `repro analyze` and `repro verify`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

MIN_MODELS_FOR_CI = 3  # fewer points leave nothing to resample: every resample is the fit itself or degenerate


def fit_line(x: Sequence[float], y: Sequence[float]) -> dict:
    """Ordinary least squares y = slope * x + intercept, with Pearson r; slope None below two distinct x."""
    from scipy.stats import linregress

    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2 or np.ptp(x) == 0:
        return {"n": int(len(x)), "slope": None, "intercept": None, "r": None}
    fit = linregress(x, y)
    r = None if math.isnan(fit.rvalue) else float(fit.rvalue)
    return {"n": int(len(x)), "slope": float(fit.slope), "intercept": float(fit.intercept), "r": r}


def _resampled_fits(x: np.ndarray, y: np.ndarray, resamples: int, seed: int):
    """Slopes and intercepts of `resamples` bootstrap resamples of the (x, y) pairs, and which resamples had a fit.

    Indices are drawn as scipy.stats.bootstrap draws them (`default_rng(seed).integers(0, n, (resamples, n))`), so
    the percentile interval below equals scipy's `method="percentile"` (paired) whenever no resample is degenerate.
    """
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(x), size=(resamples, len(x)))
    xs, ys = x[index], y[index]
    xc = xs - xs.mean(axis=1, keepdims=True)
    sxx = (xc**2).sum(axis=1)
    ok = np.ptp(xs, axis=1) > 0  # exact test; sxx of equal values can be a rounding-error epsilon, not 0
    slopes = (xc[ok] * (ys[ok] - ys[ok].mean(axis=1, keepdims=True))).sum(axis=1) / sxx[ok]
    intercepts = ys[ok].mean(axis=1) - slopes * xs[ok].mean(axis=1)
    return slopes, intercepts, ok


BOOTSTRAP_METHOD = "percentile bootstrap over models (paired resampling of (top-1, metric) points)"


def bootstrap_slope(x: Sequence[float], y: Sequence[float], resamples: int, seed: int, level: float) -> dict:
    """Percentile bootstrap interval of the slope, resampling models with replacement.

    This is scipy.stats.bootstrap(paired=True, method="percentile") with one difference: a resample whose x values
    are all equal has no slope, and scipy would turn the whole interval into NaN; here such resamples are dropped
    and counted (`dropped`). With 19 distinct models that happens with probability 19 / 19**19, never in practice;
    with 5 models about once in 625. tests/test_analysis.py checks the equality with scipy. BCa is not used: its
    jackknife acceleration is unstable with the 2-10 models above the threshold that small studies have.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    out = {"method": BOOTSTRAP_METHOD, "resamples": resamples, "seed": seed, "level": level}
    if len(x) < MIN_MODELS_FOR_CI:
        return {**out, "low": None, "high": None, "dropped": None,
                "reason": f"needs at least {MIN_MODELS_FOR_CI} models, has {len(x)}"}
    return _slope_interval(out, *_resampled_fits(x, y, resamples, seed), level)


def _slope_interval(out: dict, slopes: np.ndarray, _intercepts, ok: np.ndarray, level: float) -> dict:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(slopes, [tail, 100 - tail])
    return {**out, "low": float(low), "high": float(high), "dropped": int((~ok).sum()), "reason": None}


def bootstrap_band(x: Sequence[float], y: Sequence[float], grid: Sequence[float], resamples: int, seed: int,
                   level: float) -> dict | None:
    """Pointwise percentile band of the fitted line at `grid`, from the same resamples as bootstrap_slope.

    None below MIN_MODELS_FOR_CI models. All values on the axis scale the fit was made on.
    """
    x, y, grid = np.asarray(x, float), np.asarray(y, float), np.asarray(grid, float)
    if len(x) < MIN_MODELS_FOR_CI:
        return None
    slopes, intercepts, _ = _resampled_fits(x, y, resamples, seed)
    return _band(slopes, intercepts, grid, level)


def _band(slopes: np.ndarray, intercepts: np.ndarray, grid: np.ndarray, level: float) -> dict:
    lines = grid[:, None] * slopes[None, :] + intercepts[None, :]  # (grid, resamples): rows contiguous, fast
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(lines, [tail, 100 - tail], axis=1)
    return {"grid": grid.tolist(), "low": low.tolist(), "high": high.tolist(), "level": level}


MIN_POINTS_FOR_SPLINE = 5  # scipy's make_smoothing_spline needs five abscissas


def smoothing_spline(x: Sequence[float], y: Sequence[float], grid: Sequence[float]) -> dict:
    """A cubic smoothing spline through the points, its smoothness chosen by generalized cross-validation.

    Appendix B of the paper draws "spline interpolation" through the models; it does not say which spline. A GCV
    smoothing spline (scipy.interpolate.make_smoothing_spline) follows the points without a knob to tune. Models
    with equal x are averaged first (the spline needs strictly increasing x).
    """
    from scipy.interpolate import make_smoothing_spline

    x, y = np.asarray(x, float), np.asarray(y, float)
    xu, inverse_index = np.unique(x, return_inverse=True)
    yu = np.bincount(inverse_index, weights=y) / np.bincount(inverse_index)
    method = "cubic smoothing spline, smoothness by generalized cross-validation (scipy make_smoothing_spline)"
    if len(xu) < MIN_POINTS_FOR_SPLINE:
        return {"method": method, "grid": None, "values": None,
                "reason": f"needs at least {MIN_POINTS_FOR_SPLINE} distinct models, has {len(xu)}"}
    spline = make_smoothing_spline(xu, yu)
    grid = np.asarray(grid, float)
    return {"method": method, "grid": grid.tolist(), "values": spline(grid).tolist(), "reason": None}


# ---- per-model intervals -------------------------------------------------------------------------------------

EXACT_BINOMIAL = "Clopper-Pearson exact binomial over test examples"
EXAMPLE_BOOTSTRAP = "percentile bootstrap over test examples"


def metric_interval(metric: str, targets: np.ndarray, scores: np.ndarray, *, resamples: int, seed: int,
                    level: float) -> dict:
    """Interval of one model's test metric from its saved predictions.

    Accuracy is a count of correct answers out of n, so its exact binomial (Clopper-Pearson) interval needs no
    resampling. Kappa, ROC AUC and macro F1 are not binomial: their interval comes from resampling test examples
    with replacement and recomputing the metric on each resample. For those three the recomputation is vectorized
    over resamples (the counts of each example in each resample, below); it equals repro.metrics' function on the
    resample (tests/test_analysis.py checks it). Resamples on which the metric is undefined (one class only, for
    AUC) are dropped and counted.
    """
    from scipy.stats import binomtest

    from repro.metrics import METRICS

    targets, scores = np.asarray(targets), np.asarray(scores, float)
    n = len(targets)
    if n == 0:
        return {"method": None, "low": None, "high": None, "n": 0, "reason": "no predictions"}
    if metric == "accuracy":
        correct = int((scores.argmax(axis=1) == targets).sum())
        ci = binomtest(correct, n).proportion_ci(confidence_level=level, method="exact")
        return {"method": EXACT_BINOMIAL, "low": float(ci.low), "high": float(ci.high), "n": n, "level": level,
                "reason": None}
    rng = np.random.default_rng(seed)
    vectorized = RESAMPLED_METRICS.get(metric)
    if vectorized is not None and (metric != "macro_f1" or targets.ndim == 2):
        chunks = []
        for start in range(0, resamples, _CHUNK):
            index = rng.integers(0, n, size=(min(_CHUNK, resamples - start), n))
            chunks.append(vectorized(targets, scores, _counts(index, n)))
        values = np.concatenate(chunks)
        values = values[np.isfinite(values)]
    else:
        function = METRICS[metric]
        values = []
        for _ in range(resamples):
            index = rng.integers(0, n, size=n)
            try:
                value = function(targets[index], scores[index])
            except ValueError:  # e.g. roc_auc on a resample holding one class
                continue
            if math.isfinite(value):
                values.append(value)
    out = {"method": EXAMPLE_BOOTSTRAP, "n": n, "level": level, "resamples": resamples, "seed": seed,
           "dropped": resamples - len(values)}
    if not len(values):
        return {**out, "low": None, "high": None, "reason": "the metric is undefined on every resample"}
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return {**out, "low": float(low), "high": float(high), "reason": None}


_CHUNK = 100  # resamples per batch: (100, n) counts stay small even for the ~11,000 Melanoma test images


def _counts(index: np.ndarray, n: int) -> np.ndarray:
    """(resamples, n) multiplicity of each example in each resample, from (resamples, n) drawn indices."""
    rows = index.shape[0]
    flat = (np.arange(rows)[:, None] * n + index).ravel()
    return np.bincount(flat, minlength=rows * n).reshape(rows, n).astype(float)


def _kappa_resampled(targets, scores, counts):
    """Quadratic weighted kappa per resample, as sklearn's cohen_kappa_score computes it, with the labels of the
    full test set (a class missing from one resample keeps its place in the weights)."""
    predictions = scores.argmax(axis=1)
    labels = np.union1d(targets, predictions)
    k = len(labels)
    code = np.searchsorted(labels, targets) * k + np.searchsorted(labels, predictions)
    confusion = (counts @ np.eye(k * k)[code]).reshape(-1, k, k)  # (resamples, true, predicted)
    total = confusion.sum(axis=(1, 2))
    expected = confusion.sum(axis=2)[:, :, None] * confusion.sum(axis=1)[:, None, :] / total[:, None, None]
    weights = (np.arange(k)[:, None] - np.arange(k)[None, :]) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return 1 - (weights * confusion).sum(axis=(1, 2)) / (weights * expected).sum(axis=(1, 2))


def _auc_resampled(targets, scores, counts):
    """ROC AUC of class 1 per resample: the Mann-Whitney form (ties count one half), which is what sklearn's
    trapezoidal roc_auc_score equals. NaN where a resample holds one class only."""
    order = np.argsort(scores[:, 1], kind="stable")
    score, positive = scores[order, 1], targets[order] == 1
    counts = counts[:, order]
    starts = np.r_[0, np.flatnonzero(np.diff(score)) + 1]  # first position of each run of equal scores
    group = np.cumsum(np.r_[0, np.diff(score) != 0])
    ends = np.r_[starts[1:], len(score)]
    negatives = np.cumsum(counts * ~positive, axis=1)
    below = np.where(starts > 0, negatives[:, np.maximum(starts - 1, 0)], 0.0)  # negatives before each group
    within = negatives[:, ends - 1] - below
    wins = (counts * positive * (below + 0.5 * within)[:, group]).sum(axis=1)
    n_pos, n_neg = (counts * positive).sum(axis=1), (counts * ~positive).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), wins / (n_pos * n_neg), np.nan)


def _macro_f1_resampled(targets, scores, counts):
    """Macro F1 over labels of multi-hot targets, predictions at 0.5, a label with no true and no predicted
    positives scoring 0 (sklearn's zero_division=0)."""
    predicted = (scores >= 0.5).astype(float)
    truth = targets.astype(float)
    tp = counts @ (truth * predicted)
    fp = counts @ ((1 - truth) * predicted)
    fn = counts @ (truth * (1 - predicted))
    denominator = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    return f1.mean(axis=1)


RESAMPLED_METRICS = {"quadratic_kappa": _kappa_resampled, "roc_auc": _auc_resampled,
                     "macro_f1": _macro_f1_resampled}


# Axis scales. "linear" is the paper's reading (PAPER.md section 1); logit and probit are the scales on which
# accuracy-on-the-line results are usually fitted. Fractions of exactly 0 or 1 are clipped by CLIP first.
CLIP = 1e-6
TRANSFORMS = ("linear", "logit", "probit")


def transform(values, name: str) -> np.ndarray:
    """Map fractions onto the `name` axis scale."""
    from scipy.special import logit
    from scipy.stats import norm

    from repro.errors import ReproError

    values = np.asarray(values, float)
    if name == "linear":
        return values
    if name not in TRANSFORMS:
        raise ValueError(f"unknown transform {name!r}")
    if np.any((values < 0) | (values > 1)):
        raise ReproError(f"{name} axes need values between 0 and 1; found {values.min():.3f} to {values.max():.3f} "
                         "(a kappa below 0?); use analyze.transform: linear")
    clipped = np.clip(values, CLIP, 1 - CLIP)
    return logit(clipped) if name == "logit" else norm.ppf(clipped)


def inverse(values, name: str) -> np.ndarray:
    """Map values on the `name` axis scale back to fractions."""
    from scipy.special import expit
    from scipy.stats import norm

    values = np.asarray(values, float)
    if name == "linear":
        return values
    return expit(values) if name == "logit" else norm.cdf(values)


def fitted_values(fit: dict, x, name: str) -> np.ndarray:
    """The fitted line of `fit` (made on the `name` scale) at top-1 fractions `x`, back in fractions."""
    return inverse(fit["slope"] * transform(x, name) + fit["intercept"], name)


GRID_POINTS = 60  # points along each drawn curve (band, spline)


def imagenet_rows(table):
    """The rows that may sit on the ImageNet axis: runs that loaded ImageNet weights (run.json `init`, checked by
    repro.results.read_run). A random-init run has no ImageNet accuracy and is never fitted or drawn on that axis."""
    return table[(table["init"] == "imagenet") & table["imagenet_top1"].notna()]


def reference_rows(table, dataset: str) -> list[dict]:
    """The random-init runs on `dataset` (the "no ImageNet pretraining" reference): drawn as a horizontal line."""
    rows = table[(table["dataset"] == dataset) & (table["init"] == "random")]
    return [{"model": r["model"], "model_display": r["model_display"], "value": float(r["value"]),
             "low": None if _missing(r["value_low"]) else float(r["value_low"]),
             "high": None if _missing(r["value_high"]) else float(r["value_high"])}
            for r in rows.to_dict("records")]


def dataset_slopes(summary, threshold: float, resamples: int, seed: int, level: float,
                   scale: str = "linear") -> dict:
    """Per dataset: fits over all models and over models with ImageNet top-1 >= threshold (percent), both axes on
    the `scale` scale (slopes are then in units of that scale), each with its bootstrap interval and a pointwise
    bootstrap band, and a smoothing spline through all models (Appendix B). Curves are stored in fractions."""
    table = summary[summary["status"] == "ok"]
    on_axis = imagenet_rows(table)
    datasets = {}
    for name, rows in on_axis.groupby("dataset", sort=True):
        top1 = rows["imagenet_top1"].to_numpy(float) / 100.0
        x = transform(top1, scale)
        y = transform(rows["value"].to_numpy(float), scale)
        above = rows["imagenet_top1"].to_numpy(float) >= threshold
        entry = {"metric": rows["metric"].iloc[0]}
        for key, mask in (("all", np.ones(len(x), bool)), ("above_threshold", above)):
            band = None
            if mask.sum() < MIN_MODELS_FOR_CI:
                ci = bootstrap_slope(x[mask], y[mask], resamples, seed, level)  # says why there is none
            else:
                # one set of resamples serves the slope's interval and the band, drawn as bootstrap_slope draws it
                resampled = _resampled_fits(x[mask], y[mask], resamples, seed)
                ci = _slope_interval({"method": BOOTSTRAP_METHOD, "resamples": resamples, "seed": seed,
                                      "level": level}, *resampled, level)
                grid = np.linspace(top1[mask].min(), top1[mask].max(), GRID_POINTS)
                band = _band(resampled[0], resampled[1], transform(grid, scale), level)
                if band is not None:
                    band = {**band, "grid": grid.tolist(), "low": inverse(band["low"], scale).tolist(),
                            "high": inverse(band["high"], scale).tolist()}
            entry[key] = {**fit_line(x[mask], y[mask]), "ci": ci, "models": rows["model"][mask].tolist(),
                          "band": band}
        grid = np.linspace(top1.min(), top1.max(), GRID_POINTS)
        spline = smoothing_spline(x, y, transform(grid, scale))
        if spline["values"] is not None:
            spline = {**spline, "grid": grid.tolist(), "values": inverse(spline["values"], scale).tolist()}
        entry["spline"] = spline
        entry["reference"] = reference_rows(table, name)
        datasets[name] = entry
    return {
        "fit": f"ordinary least squares, {scale} axes, both from fractions",
        "transform": scale,
        "threshold_top1_percent": threshold,
        "bootstrap": {"method": BOOTSTRAP_METHOD, "resamples": resamples, "seed": seed, "level": level},
        "datasets": datasets,
    }


# ---- claims -------------------------------------------------------------------------------------------------

NEEDS_PAPER = "not evaluated (needs the paper profile)"
NEEDS_SMOKE = "not evaluated (needs the smoke profile)"
NEEDS = {"paper": NEEDS_PAPER, "smoke": NEEDS_SMOKE}
# What a profile's results are, said on the figures, the verify table and the report (the paper profile says nothing)
PROFILE_NOTES = {"smoke": "embedded study: four ImageNet checkpoints fine-tuned on the digits, a small real transfer "
                          "experiment, not the paper's result"}


def _verdict(claim: dict, verdict: str, ours: str = "", reason: str = "") -> dict:
    return {"id": claim["id"], "claim": claim["claim"], "where": claim.get("where", ""),
            "paper_value": str(claim.get("paper_value", "")), "ours": ours,
            "tolerance": str(claim.get("tolerance", "")), "tolerance_why": claim.get("tolerance_why", ""),
            "verdict": verdict, "reason": reason, "command": claim.get("command", "")}


def _value_text(row) -> str:
    interval = "" if _missing(row.get("value_low")) else f" [{row['value_low']:.3f}, {row['value_high']:.3f}]"
    return f"{row['value']:.3f}{interval}"


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _slope_text(fit: dict) -> str:
    if fit["slope"] is None:
        return "no slope"
    ci = fit["ci"]
    interval = "" if ci["low"] is None else f" [{ci['low']:.3f}, {ci['high']:.3f}]"
    return f"{fit['slope']:.3f}{interval}"


def _provenance(claim: dict, ok_rows, pins: dict[str, str | None]) -> dict:
    """Every run that loaded ImageNet weights loaded exactly the pinned file: its recorded sha256 equals the pin."""
    loaded = imagenet_rows(ok_rows).drop_duplicates("model")
    if loaded.empty:
        return _verdict(claim, "not evaluated", reason="no run loaded ImageNet weights")
    bad = [f"{r['model']} ({str(r.get('weights_sha256'))[:12]} vs pin {str(pins.get(r['model']))[:12]})"
           for r in loaded.to_dict("records")
           if not pins.get(r["model"]) or r.get("weights_sha256") != pins[r["model"]]]
    ours = f"{len(loaded) - len(bad)} of {len(loaded)} checkpoints match their pin"
    return _verdict(claim, "fail" if bad else "pass", ours, "; ".join(bad))


def _gain(claim: dict, ok_rows, tol: float) -> dict:
    """ImageNet init beats random init of the same architecture by at least `at_least` (in metric units)."""
    check = claim["check"]
    rows = ok_rows[ok_rows["dataset"] == check["dataset"]].set_index("model")
    absent = [m for pair in check["pairs"].items() for m in pair if m not in rows.index]
    if absent:
        return _verdict(claim, "not evaluated", reason=f"no {check['dataset']} result for {', '.join(absent)}")
    gains = {m: float(rows.loc[m, "value"] - rows.loc[ref, "value"]) for m, ref in check["pairs"].items()}
    ours = "; ".join(f"{rows.loc[m, 'model_display']} {gains[m]:+.3f} ({rows.loc[m, 'value']:.3f} vs "
                     f"{rows.loc[ref, 'value']:.3f})" for m, ref in check["pairs"].items())
    good = all(g >= check["at_least"] - tol for g in gains.values())
    return _verdict(claim, "pass" if good else "fail", ours)


def evaluate_claim(claim: dict, profile: str, summary, slopes: dict, figure_exists: bool,
                   pins: dict[str, str | None] | None = None) -> dict:
    check = claim["check"]
    kind = check["kind"]
    if kind == "not_evaluable":
        return _verdict(claim, "not evaluated", reason=check["reason"])
    needs = claim.get("needs")
    if needs is not None and needs != profile:
        return _verdict(claim, NEEDS[needs], reason=f"the results come from the {profile!r} profile")
    ok_rows = summary[summary["status"] == "ok"]
    tol = float(claim.get("tolerance", 0) or 0)
    if kind == "model_set":
        top1 = imagenet_rows(ok_rows).drop_duplicates("model")["imagenet_top1"]
        n = int(len(top1))
        ours = f"{n} models, {top1.min():.1f}-{top1.max():.1f}%" if n else "no models"
        good = n == check["count"] and n > 0 and abs(top1.min() - check["top1_min"]) <= tol \
            and abs(top1.max() - check["top1_max"]) <= tol
        return _verdict(claim, "pass" if good else "fail", ours)
    if kind == "provenance":
        if pins is None:
            return _verdict(claim, "not evaluated", reason="no weights lock (weights.lock.json) to compare with")
        return _provenance(claim, ok_rows, pins)
    if kind == "gain":
        return _gain(claim, ok_rows, tol)
    if kind == "dataset_set":
        found = sorted(ok_rows["dataset"].unique())
        good = found == sorted(check["datasets"])
        return _verdict(claim, "pass" if good else "fail", ", ".join(found) or "none")
    if kind == "values_near":
        rows = ok_rows[ok_rows["dataset"] == check["dataset"]].set_index("model")
        absent = [m for m in check["values"] if m not in rows.index]
        if absent:
            return _verdict(claim, "not evaluated", reason=f"no {check['dataset']} result for {', '.join(absent)}")
        ours = "; ".join(f"{rows.loc[m, 'model_display']} {_value_text(rows.loc[m])}" for m in check["values"])
        good = all(abs(rows.loc[m, "value"] - v) <= tol for m, v in check["values"].items())
        return _verdict(claim, "pass" if good else "fail", ours)
    datasets = slopes["datasets"]
    missing = [d for d in check["datasets"] if d not in datasets]
    if missing:
        return _verdict(claim, "not evaluated", reason=f"no results for {', '.join(missing)}")
    if kind == "both_fits":
        fits = {d: (datasets[d]["all"]["slope"], datasets[d]["above_threshold"]["slope"]) for d in check["datasets"]}
        good = figure_exists and all(a is not None and b is not None for a, b in fits.values())
        reason = "" if figure_exists else "figure missing; run `repro figures`"
        return _verdict(claim, "pass" if good else "fail", f"{len(fits)} datasets with both fits", reason)
    which = check.get("fit", "above_threshold")  # the paper's slopes are the post-VGG ones
    fits = {d: datasets[d][which] for d in check["datasets"]}
    ours = "; ".join(f"{d} {_slope_text(f)}" for d, f in fits.items())
    if any(f["slope"] is None for f in fits.values()):
        return _verdict(claim, "not evaluated", ours, "a fit has fewer than two distinct models")
    if kind == "slope_below":
        good = all(f["slope"] < check["below"] + tol for f in fits.values())
    elif kind == "slope_near":
        good = all(abs(f["slope"] - check["values"][d]) <= tol for d, f in fits.items())
    else:  # validate_claims admits no other kind
        raise AssertionError(kind)
    return _verdict(claim, "pass" if good else "fail", ours)


CHECK_KINDS = {"not_evaluable": ("reason",), "model_set": ("count", "top1_min", "top1_max"),
               "dataset_set": ("datasets",), "both_fits": ("datasets",), "slope_below": ("below", "datasets"),
               "slope_near": ("values", "datasets"), "values_near": ("dataset", "values"), "provenance": (),
               "gain": ("dataset", "pairs", "at_least")}
FITS = ("all", "above_threshold")


def validate_claims(claims: object) -> list[dict]:
    """The claims list, or a ReproError naming the first claim and key that is wrong."""
    from repro.errors import ReproError

    if not isinstance(claims, list):
        raise ReproError("claims: expected a list of claims")
    for number, claim in enumerate(claims, 1):
        where = f"claim {number}" + (f" ({claim.get('id')})" if isinstance(claim, dict) and "id" in claim else "")
        if not isinstance(claim, dict) or not {"id", "claim", "check"} <= set(claim):
            raise ReproError(f"{where}: needs the keys id, claim and check")
        check = claim["check"]
        kind = check.get("kind") if isinstance(check, dict) else None
        if kind not in CHECK_KINDS:
            raise ReproError(f"{where}: check.kind must be one of {', '.join(CHECK_KINDS)}, got {kind!r}")
        missing = [key for key in CHECK_KINDS[kind] if key not in check]
        if missing:
            raise ReproError(f"{where}: a {kind} check needs {', '.join(missing)}")
        if check.get("fit", FITS[1]) not in FITS:
            raise ReproError(f"{where}: check.fit must be one of {', '.join(FITS)}, got {check['fit']!r}")
        if claim.get("needs") not in (None, *NEEDS):
            raise ReproError(f"{where}: needs must be one of {', '.join(NEEDS)}, got {claim['needs']!r}")
    return claims


def evaluate_claims(claims: Sequence[dict], profile: str, summary, slopes: dict, figure_exists: bool,
                    pins: dict[str, str | None] | None = None) -> list[dict]:
    """Each claim's verdict; `pins` maps each model to the sha256 its weights are pinned to (weights.lock.json)."""
    return [evaluate_claim(c, profile, summary, slopes, figure_exists, pins) for c in validate_claims(claims)]
