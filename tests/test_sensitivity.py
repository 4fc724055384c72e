"""repro.sensitivity: the reporting rules computed from run.json curves, the batched bootstrap against
analysis.bootstrap_slope, the sensitivity table (thresholds, transforms, leave-one-model-out), analyze.report_rule,
and the files `repro analyze` writes from it."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from repro import sensitivity as sens
from repro.analysis import bootstrap_slope, dataset_slopes
from repro.errors import ReproError


def config(select, report, diverged=False):
    """A run.json config entry; best_epoch as the training loop sets it (first strict maximum of `select`)."""
    curve = [{"epoch": e + 1, "train_loss": 1.0, "select": s, "report": r}
             for e, (s, r) in enumerate(zip(select, report))]
    best = None if not curve else int(np.argmax(select)) + 1  # argmax: first of equal maxima
    return {"lr": 1e-3, "wd": 0.0, "diverged": diverged, "best_epoch": best, "curve": curve}


def record(configs, model="m", dataset="aptos", top1=75.0, status="ok", metric="accuracy"):
    return {"model": model, "model_display": model.upper(), "dataset": dataset, "metric": metric, "init": "imagenet",
            "imagenet_top1": top1, "weights": {"sha256": "0" * 64}, "status": status, "configs": configs}


# Config A is chosen (best validation 0.7 > 0.65). Its best epoch is 2 (report 0.6), its last epoch 3 (report 0.8).
# Config B's best epoch is 2 (report 0.7): the maximum over configs at their best-validation epochs is 0.7, not B's
# epoch-1 report of 0.9 (the authors' maximum is over configs, not over epochs).
TWO_CONFIGS = [config([0.5, 0.7, 0.6], [0.4, 0.6, 0.8]), config([0.6, 0.65, 0.62], [0.9, 0.7, 0.5])]


@pytest.mark.parametrize(("rule", "expected"), [("best_val", 0.6), ("max_report", 0.7), ("last_epoch", 0.8)])
def test_each_rule_by_hand(rule, expected):
    assert sens.rule_value(record(TWO_CONFIGS), rule) == expected


def test_best_val_equals_the_value_finetune_records():
    """best_val recomputed from the curves is what study.py writes as `value`: train.best_config's config (the first
    on ties) at its best epoch."""
    from repro.train import ConfigResult, best_config

    rng = np.random.default_rng(3)
    for _ in range(50):
        results, configs = [], []
        for _ in range(4):
            select = np.round(rng.uniform(0, 1, 5), 1)  # rounded so that ties between configs occur
            report = rng.uniform(0, 1, 5)
            entry = config(select.tolist(), report.tolist())
            configs.append(entry)
            results.append(ConfigResult(lr=1e-3, wd=0.0, curve=entry["curve"], best_epoch=entry["best_epoch"]))
        chosen = best_config(results)
        assert sens.rule_value(record(configs), "best_val") == results[chosen].report_value


def test_diverged_configs():
    never = {"lr": 1.0, "wd": 0.0, "diverged": True, "best_epoch": None, "curve": []}
    late = config([0.8, 0.9], [0.3, 0.2], diverged=True)  # NaN loss in epoch 3: two finished epochs
    configs = [never, late, config([0.1, 0.2, 0.3], [0.95, 0.95, 0.95])]
    assert sens.rule_value(record(configs), "best_val") == 0.2
    assert sens.rule_value(record(configs), "last_epoch") == 0.2  # the last epoch before the divergence
    assert sens.rule_value(record(configs), "max_report") == 0.95
    assert sens.rule_value(record([never]), "best_val") is None
    frame = sens.rule_frame([record(configs, model="a"), record([never], model="b", status="diverged")])
    assert frame["model"].tolist() == ["a"]


def test_bad_rule_and_bad_record_are_one_line():
    with pytest.raises(ReproError, match="unknown report rule 'max'; valid: best_val, max_report, last_epoch"):
        sens.rule_value(record(TWO_CONFIGS), "max")
    with pytest.raises(ReproError, match="x.json: no per-config curves"):
        sens.rule_value({"status": "ok"}, "best_val", "x.json")
    broken = [{"best_epoch": 3, "curve": [{"select": 1, "report": 1}]}]
    with pytest.raises(ReproError, match="x.json: a config's curve is malformed"):
        sens.rule_value({"configs": broken}, "last_epoch", "x.json")


def test_summary_under_rule():
    runs = [record(TWO_CONFIGS, model="a"), record([config([0.5], [0.3])], model="b")]
    summary = pd.DataFrame({"model": ["a", "b"], "dataset": ["aptos", "aptos"], "status": ["ok", "ok"],
                            "value": [0.6, 0.3], "value_low": [0.5, 0.2], "value_high": [0.7, 0.4],
                            "value_ci": ["exact", "exact"]})
    assert sens.summary_under_rule(summary, runs, "best_val") is summary
    under = sens.summary_under_rule(summary, runs, "last_epoch")
    assert under["value"].tolist() == [0.8, 0.3] and under["value_low"].isna().all()
    assert summary["value"].tolist() == [0.6, 0.3]  # the input is not modified


def test_batched_intervals_equal_bootstrap_slope_fit_by_fit():
    rng = np.random.default_rng(1)
    fits = [(rng.uniform(0.5, 0.85, n), rng.uniform(0, 1, n)) for n in (19, 13, 19, 5, 3, 2)]
    fits.append((np.array([0.5, 0.5, 0.5, 0.6, 0.6]), np.arange(5.0)))  # many degenerate resamples
    for (x, y), got in zip(fits, sens.slope_intervals(fits, 2000, 7, 0.9)):
        want = bootstrap_slope(x, y, 2000, 7, 0.9)
        assert got["reason"] == want["reason"] and got["dropped"] == want["dropped"]
        if want["low"] is None:
            assert got["low"] is None
        else:
            assert math.isclose(got["low"], want["low"], rel_tol=1e-12, abs_tol=1e-15)
            assert math.isclose(got["high"], want["high"], rel_tol=1e-12, abs_tol=1e-15)
    assert sens.slope_intervals(fits[:1], 2000, 7, 0.9)[0]["dropped"] == 0
    three = [(np.array([0.5, 0.5, 0.6]), np.arange(3.0))]
    # one resample: seed 4 draws models (2, 2, 2), one x only; seed 0 draws (2, 1, 1)
    assert sens.slope_intervals(three, 1, 4, 0.9)[0]["reason"] == "every resample is degenerate"
    assert sens.slope_intervals(three, 1, 0, 0.9)[0]["dropped"] == 0


TOP1 = [60.0, 66.0, 68.0, 71.0, 73.0, 76.0, 78.0, 80.0]


def study(dataset="aptos"):
    """Eight models; best_val rises 0.02 per 10 points of top-1, max_report (the second config, whose validation
    best is lower) 0.1 per 10, last_epoch is flat."""
    runs = []
    for i, t in enumerate(TOP1):
        best, top, last = 0.5 + 0.002 * t, 0.05 + 0.01 * t, 0.9 - 0.001 * (i % 2)
        runs.append(record([config([0.5, 0.9, 0.8], [0.1, best, last]), config([0.8, 0.5], [top, 0.0])],
                           model=f"m{i}", dataset=dataset, top1=t))
    return runs


def test_sensitivity_rows_thresholds_and_leave_one_out():
    doc = sens.sensitivity(sens.rule_frame(study()), rule="best_val", threshold=70, scale="linear",
                           resamples=500, seed=0, level=0.95)
    rows = doc["datasets"]["aptos"]
    grid = [r for r in rows if not r["left_out"]]
    assert len(grid) == 3 * 3 * 3 and doc["thresholds"] == [65.0, 70.0, 75.0]
    for r in grid:  # the fit at threshold t holds exactly the models at or above t
        assert r["n"] == sum(t >= r["threshold"] for t in TOP1)
    loo = [r for r in rows if r["left_out"]]
    above = [f"m{i}" for i, t in enumerate(TOP1) if t >= 70]
    assert [r["left_out"] for r in loo] == above and all(r["n"] == len(above) - 1 for r in loo)
    assert all((r["rule"], r["threshold"], r["transform"]) == ("best_val", 70.0, "linear") for r in loo)
    headline = [r for r in rows if r["headline"]]
    assert len(headline) == 1
    by = {(r["rule"], r["threshold"], r["transform"]): r for r in grid}
    assert by["best_val", 70.0, "linear"]["slope"] == pytest.approx(0.2)  # 0.002 per top-1 percent
    assert by["max_report", 70.0, "linear"]["slope"] == pytest.approx(1.0)
    assert by["max_report", 70.0, "linear"]["below_bound"] is False
    assert by["best_val", 70.0, "linear"]["below_bound"] is False
    assert by["last_epoch", 65.0, "linear"]["below_bound"] is True
    assert abs(by["last_epoch", 65.0, "linear"]["slope"]) < 0.05


def test_headline_row_equals_the_main_fit_and_another_rule_changes_it():
    runs = study()
    frame = sens.rule_frame(runs)
    summary = frame.assign(model_display=frame["model"], value=frame["best_val"], status="ok")
    main = dataset_slopes(summary, 70, 500, 0, 0.95)["datasets"]["aptos"]["above_threshold"]
    doc = sens.sensitivity(frame, rule="best_val", threshold=70, scale="linear", resamples=500, seed=0, level=0.95)
    head = next(r for r in doc["datasets"]["aptos"] if r["headline"])
    assert head["slope"] == pytest.approx(main["slope"], rel=1e-12)
    assert head["ci_low"] == pytest.approx(main["ci"]["low"], rel=1e-12)
    assert head["ci_high"] == pytest.approx(main["ci"]["high"], rel=1e-12)
    other = sens.sensitivity(frame, rule="max_report", threshold=70, scale="logit", resamples=500, seed=0,
                             level=0.95)
    head2 = next(r for r in other["datasets"]["aptos"] if r["headline"])
    assert (head2["rule"], head2["transform"]) == ("max_report", "logit")
    assert head2["slope"] != pytest.approx(head["slope"], rel=1e-3)
    assert [r["rule"] for r in other["datasets"]["aptos"] if r["left_out"]] == ["max_report"] * 5


def test_a_value_outside_zero_one_fails_its_transform_rows_only():
    runs = study()
    for r in runs:
        r["metric"] = "quadratic_kappa"
    runs[0]["configs"][0]["curve"][1]["report"] = -0.1  # a kappa below 0 under best_val
    doc = sens.sensitivity(sens.rule_frame(runs), rule="best_val", threshold=50, scale="linear",
                           resamples=200, seed=0, level=0.95)
    rows = doc["datasets"]["aptos"]
    broken = [r for r in rows if r["slope"] is None]
    assert {(r["rule"], r["transform"]) for r in broken} == {("best_val", "logit"), ("best_val", "probit")}
    assert all("logit axes need values between 0 and 1" in r["reason"] or "probit" in r["reason"] for r in broken)
    assert all(r["slope"] is not None for r in rows if r["transform"] == "linear")


def test_tables_and_verdict_rules():
    doc = sens.sensitivity(sens.rule_frame(study("aptos") + study("eurosat")), rule="last_epoch", threshold=70,
                           scale="linear", resamples=200, seed=0, level=0.95)
    table = sens.long_table(doc)
    assert list(table.columns) == sens.COLUMNS and set(table["dataset"]) == {"aptos", "eurosat"}
    assert len(table) == 2 * (27 + 5)
    from repro.report import sensitivity_markdown

    md = sensitivity_markdown(doc)
    assert md.count("## ") == 2 and "| last_epoch * | 70% | linear | - | 5 |" in md
    assert "`max_report`: maximum over configs" in md
    json.dumps(doc)  # slopes.json holds it
    claims = [{"id": "C4", "check": {"kind": "slope_below"}}, {"id": "E1", "check": {"kind": "values_near"}},
              {"id": "C1", "check": {"kind": "model_set"}}]
    verdicts = sens.verdict_rules([{"id": c["id"]} for c in claims], claims, "max_report")
    assert [v["rule"] for v in verdicts] == ["max_report", "best_val", "-"]


def test_report_rule_param():
    import copy

    import yaml

    from conftest import ROOT
    from repro.config import parse_params

    data = yaml.safe_load((ROOT / "profiles/paper.yaml").read_text())
    assert parse_params(data).analyze.report_rule == "best_val"
    bad = copy.deepcopy(data)
    bad["analyze"]["report_rule"] = "max"
    with pytest.raises(ReproError, match="analyze.report_rule: Input should be 'best_val', 'max_report' or "
                                         "'last_epoch'"):
        parse_params(bad)


def test_analyze_writes_the_sensitivity_tables_and_verify_names_the_rule(tmp_path):
    import yaml

    import test_report
    from conftest import BIN, ROOT, run

    folder = test_report.paper_results(tmp_path, test_report.PAPER_SLOPES)
    params = yaml.safe_load((ROOT / "profiles/paper.yaml").read_text())
    params["analyze"].update(report_rule="max_report", bootstrap_resamples=200)
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    files = ["--params", "params.yaml", "--summary", "summary.csv", "--slopes", "slopes.json"]
    run([str(BIN / "repro"), "analyze", *files], folder)
    table = pd.read_csv(folder / "paper/tables/sensitivity.csv")
    assert sorted(set(table["dataset"])) == sorted(test_report.PAPER_SLOPES)
    above = sum(t >= 70 for t in pd.read_csv(folder / "summary.csv").drop_duplicates("model")["imagenet_top1"])
    assert (table["left_out"].notna()).sum() == 6 * above
    assert (folder / "paper/tables/sensitivity.md").read_text().count("## ") == 6
    doc = json.loads((folder / "slopes.json").read_text())
    assert doc["report_rule"] == "max_report" and doc["sensitivity"]["rule"] == "max_report"
    done = run([str(BIN / "repro"), "verify", *files, "--claims", str(ROOT / "paper/claims.yaml"), "--figure",
                "figure1.png", "--json", "claims.json"], folder)
    assert "slopes under the max_report rule (analyze.report_rule)" in done.stdout
    verdicts = {c["id"]: c for c in json.loads((folder / "claims.json").read_text())["claims"]}
    assert verdicts["C4"]["rule"] == "max_report" and verdicts["C1"]["rule"] == "-"
    # a missing run.json is one line naming it, and nothing is written
    (folder / "slopes.json").unlink()
    next((folder / "results/runs").rglob("run.json")).unlink()
    done = run([str(BIN / "repro"), "analyze", *files], folder, check=False)
    assert done.returncode == 1 and "run.json: missing" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (folder / "slopes.json").exists()


def test_report_shows_one_sensitivity_table_per_dataset():
    from repro.report import render_report

    frame = sens.rule_frame(study("aptos") + study("eurosat"))
    summary = frame.assign(model_display=frame["model"], value=frame["best_val"], status="ok")
    slopes = {**dataset_slopes(summary, 70, 200, 0, 0.95)}
    info = {"git_sha": None, "git_dirty": False, "libraries": {}, "splits": {}, "raw_data": []}
    compute = {"runs": 0, "devices": [], "git_shas": [], "train_seconds": 0.0, "wall_seconds": 0.0}
    kwargs = dict(profile="paper", figures=[], claims=[], provenance=info, summary_rows=[], compute=compute)
    assert 'id="sensitivity' not in render_report(slopes=slopes, **kwargs)  # an older slopes.json: no section
    slopes["sensitivity"] = sens.sensitivity(frame, rule="best_val", threshold=70, scale="linear", resamples=200,
                                             seed=0, level=0.95)
    html = render_report(slopes=slopes, **kwargs)
    assert html.count('<table class="sensitivity"') == 2
    assert 'id="sensitivity-aptos"' in html and 'id="sensitivity-eurosat"' in html
    assert html.count('class="headline"') == 2 and "interval &lt; 0.05" in html
