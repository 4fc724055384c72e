import numpy as np
import pandas as pd
import pytest
import yaml

from repro.analysis import NEEDS_PAPER, NEEDS_SMOKE, bootstrap_slope, dataset_slopes, evaluate_claims, fit_line

from conftest import ROOT


def test_fit_recovers_a_known_line():
    x = np.linspace(0.55, 0.85, 12)
    fit = fit_line(x, 0.3 * x + 0.1)
    assert fit["slope"] == pytest.approx(0.3) and fit["intercept"] == pytest.approx(0.1)
    assert fit["r"] == pytest.approx(1.0) and fit["n"] == 12
    assert fit_line([0.7, 0.7], [0.1, 0.2])["slope"] is None


def test_bootstrap_interval_covers_the_true_slope_and_is_seeded():
    rng = np.random.default_rng(1)
    x = rng.uniform(0.55, 0.85, 19)
    y = 0.05 * x + 0.8 + rng.normal(0, 0.005, 19)
    ci = bootstrap_slope(x, y, resamples=2000, seed=0, level=0.95)
    assert ci["low"] < 0.05 < ci["high"] and ci["high"] - ci["low"] < 0.1
    assert ci == bootstrap_slope(x, y, resamples=2000, seed=0, level=0.95)
    assert ci != bootstrap_slope(x, y, resamples=2000, seed=1, level=0.95)
    narrow = bootstrap_slope(x, y, resamples=2000, seed=0, level=0.5)
    assert ci["low"] < narrow["low"] < narrow["high"] < ci["high"]


def test_bootstrap_drops_degenerate_resamples_and_needs_three_models():
    ci = bootstrap_slope([0.6, 0.7, 0.8], [0.1, 0.2, 0.3], resamples=500, seed=0, level=0.9)
    assert ci["dropped"] > 0 and ci["low"] == pytest.approx(1.0) and ci["high"] == pytest.approx(1.0)
    assert bootstrap_slope([0.6, 0.7], [0.1, 0.2], 100, 0, 0.9)["reason"] == "needs at least 3 models, has 2"


def summary(slopes: dict[str, float], n=10) -> pd.DataFrame:
    """Synthetic results: per dataset a line with the given slope above 70% and a steeper one below."""
    top1 = np.linspace(56.5, 83.4, n)
    rows = []
    for dataset, slope in slopes.items():
        for i, t in enumerate(top1):
            value = 0.5 + slope * (t - 70) / 100 if t >= 70 else 0.5 + 2 * slope * (t - 70) / 100
            rows.append({"model": f"m{i}", "model_display": f"M{i}", "imagenet_top1": t, "init": "imagenet", "dataset": dataset,
                         "metric": "accuracy", "value": value, "status": "ok"})
    return pd.DataFrame(rows)


def test_dataset_slopes_splits_at_the_threshold():
    doc = dataset_slopes(summary({"a": 0.2}), threshold=70, resamples=200, seed=0, level=0.9)
    above = doc["datasets"]["a"]["above_threshold"]
    assert above["slope"] == pytest.approx(0.2) and above["n"] == 5
    assert doc["datasets"]["a"]["all"]["slope"] > 0.2


CLAIMS = yaml.safe_load((ROOT / "paper/claims.yaml").read_text())["claims"]
PAPER_SLOPES = {"cct20": 0.11, "hpa": 0.29, "aptos": 0.01, "melanoma": 0.02, "cassava": 0.0, "eurosat": 0.03}


def verdicts(table, profile="paper", figure=True):
    doc = dataset_slopes(table, 70, 200, 0, 0.95)
    return {v["id"]: v for v in evaluate_claims(CLAIMS, profile, table, doc, figure)}


def test_smoke_results_never_pass_a_paper_claim():
    result = verdicts(summary(PAPER_SLOPES), profile="smoke")
    assert [v["verdict"] for k, v in result.items() if k.startswith("C") and k != "C6"] == [NEEDS_PAPER] * 5
    assert result["C6"]["verdict"] == "not evaluated"
    # the smoke profile's own regression claims are evaluated, and say why when the embedded results are absent
    assert result["R1"]["verdict"] == "not evaluated" and "no digits result for" in result["R1"]["reason"]


def test_results_like_the_papers_pass_and_others_fail():
    table = summary(PAPER_SLOPES, n=19)
    table["imagenet_top1"] = table["imagenet_top1"].round(1)
    result = verdicts(table)
    assert {k: v["verdict"] for k, v in result.items()} == {
        "C1": "pass", "C2": "pass", "C3": "pass", "C4": "pass", "C5": "pass", "C6": "not evaluated",
        "E1": NEEDS_SMOKE, "E2": NEEDS_SMOKE, "R1": NEEDS_SMOKE, "R2": NEEDS_SMOKE}
    steep = verdicts(summary({**PAPER_SLOPES, "eurosat": 0.08, "hpa": 0.40}, n=19))
    assert steep["C4"]["verdict"] == "fail" and steep["C5"]["verdict"] == "fail"
    assert "eurosat 0.080" in steep["C4"]["ours"]
    assert verdicts(summary(PAPER_SLOPES, n=12))["C1"]["verdict"] == "fail"
    assert verdicts(summary(PAPER_SLOPES), figure=False)["C3"]["verdict"] == "fail"
    partial = verdicts(summary({"cct20": 0.11}))
    assert partial["C4"]["verdict"] == "not evaluated" and "no results for aptos" in partial["C4"]["reason"]


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"C1": 1}, "expected a list of claims"),
        ([{"id": "C1", "claim": "x"}], "claim 1 (C1): needs the keys id, claim and check"),
        ([{"id": "C9", "claim": "x", "check": {"kind": "slope_between"}}], "check.kind must be one of"),
        ([{"id": "C4", "claim": "x", "check": {"kind": "slope_below", "datasets": ["a"]}}], "needs below"),
        ([{"id": "R2", "claim": "x", "check": {"kind": "slope_near", "values": {}, "datasets": [], "fit": "x"}}],
         "check.fit must be one of all, above_threshold, got 'x'"),
        ([{"id": "R1", "claim": "x", "needs": "full", "check": {"kind": "not_evaluable", "reason": "r"}}],
         "needs must be one of paper, smoke, got 'full'"),
    ],
)
def test_malformed_claims_are_one_clear_error(claims, message):
    from repro.analysis import validate_claims
    from repro.errors import ReproError

    import re

    with pytest.raises(ReproError, match=re.escape(message)):
        validate_claims(claims)
    assert validate_claims(CLAIMS) == CLAIMS


@pytest.mark.parametrize("scale", ["linear", "logit", "probit"])
def test_transform_and_inverse_compose_to_identity(scale):
    from repro.analysis import inverse, transform

    values = np.array([0.01, 0.2, 0.5, 0.77, 0.999])
    assert inverse(transform(values, scale), scale) == pytest.approx(values)


def test_fits_on_logit_axes_recover_a_logit_line_and_draw_it_back_in_fractions():
    from scipy.special import expit, logit

    from repro.analysis import fitted_values

    top1 = np.linspace(56.5, 83.4, 10)
    value = expit(0.5 * logit(top1 / 100) + 1.0)  # a straight line on logit axes, curved on linear ones
    table = pd.DataFrame({"model": [f"m{i}" for i in range(10)], "imagenet_top1": top1, "init": "imagenet", "dataset": "a",
                          "metric": "accuracy", "value": value, "status": "ok"})
    doc = dataset_slopes(table, 70, 100, 0, 0.9, scale="logit")
    fit = doc["datasets"]["a"]["all"]
    assert doc["transform"] == "logit" and fit["slope"] == pytest.approx(0.5) and fit["r"] == pytest.approx(1.0)
    assert fitted_values(fit, top1 / 100, "logit") == pytest.approx(value)
    assert dataset_slopes(table, 70, 100, 0, 0.9)["datasets"]["a"]["all"]["r"] < 1.0  # linear axes do not fit it


def test_logit_axes_refuse_values_outside_zero_one():
    from repro.analysis import transform
    from repro.errors import ReproError

    with pytest.raises(ReproError, match="logit axes need values between 0 and 1"):
        transform([-0.2, 0.5], "logit")


# ---- intervals, bands, splines (issue 6, item 1) --------------------------------------------------------------


def _slope_statistic(x, y, axis=-1):
    xc = x - x.mean(axis, keepdims=True)
    return (xc * (y - y.mean(axis, keepdims=True))).sum(axis) / (xc**2).sum(axis)


@pytest.mark.parametrize("level", [0.9, 0.95])
def test_bootstrap_equals_scipys_percentile_bootstrap(level):
    from scipy.stats import bootstrap

    rng = np.random.default_rng(3)
    x = rng.uniform(0.55, 0.85, 19)
    y = 0.1 * x + 0.7 + rng.normal(0, 0.01, 19)
    ours = bootstrap_slope(x, y, resamples=3000, seed=7, level=level)
    scipy_ci = bootstrap((x, y), _slope_statistic, paired=True, vectorized=True, n_resamples=3000, rng=7,
                         method="percentile", confidence_level=level).confidence_interval
    assert ours["dropped"] == 0
    assert (ours["low"], ours["high"]) == pytest.approx((scipy_ci.low, scipy_ci.high), rel=1e-12)


@pytest.mark.parametrize("true_slope", [0.0, 0.04, 0.11, 0.29])
def test_noisy_synthetic_slopes_are_recovered_within_their_interval(true_slope):
    rng = np.random.default_rng(11)
    top1 = np.sort(rng.uniform(56.5, 83.4, 19))
    rows = [{"model": f"m{i}", "model_display": f"M{i}", "imagenet_top1": t, "init": "imagenet", "dataset": "d",
             "metric": "accuracy",
             "value": 0.6 + true_slope * (t / 100 - 0.7) + rng.normal(0, 0.002), "status": "ok"}
            for i, t in enumerate(top1)]
    fit = dataset_slopes(pd.DataFrame(rows), 70, 2000, 0, 0.95)["datasets"]["d"]["above_threshold"]
    # Noise sd 0.002 over ~10 models spread ~0.04 in top-1 gives a slope standard error of about 0.016: 0.05 is 3 SE.
    assert fit["slope"] == pytest.approx(true_slope, abs=0.05)
    assert fit["ci"]["low"] < true_slope < fit["ci"]["high"]


def test_band_is_a_seeded_envelope_around_the_fitted_line():
    from repro.analysis import bootstrap_band

    rng = np.random.default_rng(5)
    x = rng.uniform(0.55, 0.85, 12)
    y = 0.2 * x + 0.5 + rng.normal(0, 0.01, 12)
    grid = np.linspace(0.55, 0.85, 7)
    band = bootstrap_band(x, y, grid, 1000, 0, 0.95)
    line = np.polyval(np.polyfit(x, y, 1), grid)
    assert np.all(np.array(band["low"]) < line) and np.all(line < np.array(band["high"]))
    assert band == bootstrap_band(x, y, grid, 1000, 0, 0.95) and band != bootstrap_band(x, y, grid, 1000, 1, 0.95)
    assert bootstrap_band(x[:2], y[:2], grid, 100, 0, 0.95) is None


def test_spline_follows_a_smooth_curve_and_needs_five_models():
    from repro.analysis import smoothing_spline

    x = np.linspace(0.55, 0.85, 15)
    y = 0.5 + (x - 0.55) ** 2  # curved: a line cannot follow it, a spline can
    spline = smoothing_spline(x, y, x)
    assert np.abs(np.array(spline["values"]) - y).max() < 0.005
    tied = smoothing_spline(np.r_[x, x[:1]], np.r_[y, y[:1] + 0.01], x)  # equal top-1 are averaged, not refused
    assert tied["reason"] is None
    assert smoothing_spline(x[:4], y[:4], x)["reason"] == "needs at least 5 distinct models, has 4"


def test_dataset_slopes_records_the_interval_method_and_draws_curves_in_fractions():
    doc = dataset_slopes(summary({"a": 0.2}), threshold=70, resamples=300, seed=4, level=0.9)
    assert doc["bootstrap"] == {"method": doc["datasets"]["a"]["all"]["ci"]["method"], "resamples": 300,
                                "seed": 4, "level": 0.9}
    entry = doc["datasets"]["a"]
    band = entry["above_threshold"]["band"]
    top1 = np.linspace(56.5, 83.4, 10) / 100
    assert band["grid"][0] == pytest.approx(top1[top1 >= 0.7].min()) and band["grid"][-1] == pytest.approx(0.834)
    assert entry["all"]["band"]["grid"][0] == pytest.approx(0.565)
    assert len(entry["spline"]["values"]) == len(entry["spline"]["grid"]) == 60


def test_accuracy_interval_is_clopper_pearson():
    from repro.analysis import EXACT_BINOMIAL, metric_interval

    targets = np.array([0] * 50 + [1] * 50)
    scores = np.zeros((100, 2))
    scores[np.arange(100), targets] = 1.0
    scores[:20] = scores[:20, ::-1]  # 20 wrong, 80 right
    ci = metric_interval("accuracy", targets, scores, resamples=10, seed=0, level=0.95)
    # Clopper-Pearson 95% for 80/100 (beta quantiles; also in standard tables): 0.7082 to 0.8733
    assert ci["method"] == EXACT_BINOMIAL and (ci["low"], ci["high"]) == pytest.approx((0.7082, 0.8733), abs=1e-4)


@pytest.mark.parametrize("metric", ["quadratic_kappa", "roc_auc", "macro_f1"])
def test_other_metrics_get_a_seeded_bootstrap_over_examples_that_covers_the_value(metric):
    from repro.analysis import EXAMPLE_BOOTSTRAP, metric_interval
    from repro.metrics import METRICS

    rng = np.random.default_rng(0)
    if metric == "macro_f1":
        targets = rng.integers(0, 2, (300, 4))
        scores = targets * 0.4 + rng.uniform(0, 0.5, (300, 4))  # overlapping: some labels wrong
    else:
        classes = 5 if metric == "quadratic_kappa" else 2
        targets = rng.integers(0, classes, 300)
        scores = rng.dirichlet(np.ones(classes), 300)
        scores[np.arange(300), targets] += rng.uniform(0, 0.6, 300)
    ci = metric_interval(metric, targets, scores, resamples=300, seed=2, level=0.95)
    value = METRICS[metric](targets, scores)
    assert ci["method"] == EXAMPLE_BOOTSTRAP and ci["low"] < value < ci["high"] and ci["high"] - ci["low"] < 0.3
    assert ci == metric_interval(metric, targets, scores, resamples=300, seed=2, level=0.95)
    assert ci != metric_interval(metric, targets, scores, resamples=300, seed=3, level=0.95)


EMBEDDED_TOP1 = {"torchvision/mobilenet_v2.IMAGENET1K_V1": 71.878, "timm/tf_efficientnet_lite0.mli_in1k": 75.1,
                 "timm/tf_efficientnet_lite1.mli_in1k": 76.7, "timm/tf_efficientnet_lite2.mli_in1k": 77.6,
                 "torchvision/mobilenet_v2.scratch": None}


def _smoke_table(values: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame([{"model": m, "model_display": m.split("/")[1][:8], "imagenet_top1": EMBEDDED_TOP1[m],
                          "init": "imagenet" if EMBEDDED_TOP1[m] else "random", "dataset": "digits",
                          "metric": "accuracy", "value": v, "status": "ok", "value_low": v - 0.04,
                          "value_high": v + 0.04} for m, v in values.items()])


def test_regression_claims_pass_on_the_locked_numbers_and_fail_when_they_drift():
    locked = next(c for c in CLAIMS if c["id"] == "R1")["check"]["values"]
    result = verdicts(_smoke_table(locked), profile="smoke")
    assert {k: result[k]["verdict"] for k in ("E2", "R1", "R2")} == {"E2": "pass", "R1": "pass", "R2": "pass"}
    assert "[" in result["R1"]["ours"] and result["C1"]["verdict"] == NEEDS_PAPER
    # no lock given: the provenance claim says so; with pins, a table whose runs name no loaded file fails it
    assert result["E1"]["verdict"] == "not evaluated" and "weights.lock.json" in result["E1"]["reason"]
    doc = dataset_slopes(_smoke_table(locked), 70, 200, 0, 0.95)
    e1 = next(c for c in CLAIMS if c["id"] == "E1")
    assert evaluate_claims([e1], "smoke", _smoke_table(locked), doc, True, {m: "a" * 64 for m in locked})[0][
        "verdict"] == "fail"
    # 0.08 off on one model fails R1 (tolerance 0.07) and moves R2 by 0.08 * 0.0342 / 0.0019 = 1.44 (< 2.70)
    drifted = verdicts(_smoke_table({**locked, "torchvision/mobilenet_v2.IMAGENET1K_V1": 0.8894}), profile="smoke")
    assert drifted["R1"]["verdict"] == "fail" and drifted["R2"]["verdict"] == "pass"
    far = verdicts(_smoke_table({**locked, "torchvision/mobilenet_v2.IMAGENET1K_V1": 0.70}), profile="smoke")
    assert far["R2"]["verdict"] == "fail" and far["E2"]["verdict"] == "fail"  # gain 0.70 - 0.775 < 0.10


def test_vectorized_resampled_metrics_equal_sklearn_on_each_resample():
    """The per-resample kappa / AUC / F1 computed from example counts are the metrics of the resampled rows."""
    from sklearn.metrics import cohen_kappa_score, f1_score, roc_auc_score

    from repro.analysis import RESAMPLED_METRICS, _counts

    rng = np.random.default_rng(0)
    n = 120
    index = rng.integers(0, n, (30, n))
    counts = _counts(index, n)
    assert (counts.sum(axis=1) == n).all()
    # kappa: class 4 is rare, so some resamples lack it; the labels stay those of the full set
    grades = rng.choice(5, n, p=[0.4, 0.3, 0.2, 0.09, 0.01])
    scores = rng.dirichlet(np.ones(5), n)
    scores[np.arange(n), grades] += 0.4
    labels = np.union1d(grades, scores.argmax(1))
    kappa = [cohen_kappa_score(grades[i], scores[i].argmax(1), weights="quadratic", labels=labels) for i in index]
    assert RESAMPLED_METRICS["quadratic_kappa"](grades, scores, counts) == pytest.approx(kappa, abs=1e-12)
    # AUC with many tied scores (rounded to one decimal)
    binary = rng.integers(0, 2, n)
    p1 = np.round(np.clip(0.3 * binary + rng.uniform(0, 0.7, n), 0, 1), 1)
    two = np.c_[1 - p1, p1]
    auc = [roc_auc_score(binary[i], p1[i]) for i in index]
    assert RESAMPLED_METRICS["roc_auc"](binary, two, counts) == pytest.approx(auc, abs=1e-12)
    assert np.isnan(RESAMPLED_METRICS["roc_auc"](np.zeros(n, int), two, counts)).all()  # one class: undefined
    # macro F1 with a label that is never true nor predicted (scores 1 in zero_division=0 terms: 0)
    multi = rng.integers(0, 2, (n, 5))
    multi[:, 4] = 0
    probs = multi * 0.4 + rng.uniform(0, 0.5, (n, 5))
    probs[:, 4] = 0.1
    f1 = [f1_score(multi[i], (probs[i] >= 0.5).astype(int), average="macro", zero_division=0) for i in index]
    assert RESAMPLED_METRICS["macro_f1"](multi, probs, counts) == pytest.approx(f1, abs=1e-12)
