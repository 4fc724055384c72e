import json

import pandas as pd
import pytest
import torch

from repro.analysis import dataset_slopes
from repro.errors import ReproError
from repro.plots import figure1
from repro.results import (PREDICTIONS_FILE, RUN_FILE, WEIGHTS_FILE, provenance, read_run, read_summary,
                           summary_rows, write_run, write_summary)

from conftest import ROOT


def record(model="torchvision/a.X", top1=60.0, value=0.5):
    return {"model": model, "model_display": model.upper(), "imagenet_top1": top1, "dataset": "digits",
            "init": "imagenet", "weights": {"sha256": "0" * 64},
            "metric": "accuracy", "value": value, "select_value": value, "status": "ok",
            "chosen": {"lr": 0.01, "wd": 0.0, "epoch": 2}}


def test_a_run_folder_round_trips_and_run_json_comes_last(tmp_path):
    run_dir = tmp_path / "runs/torchvision/a.X/digits"
    predictions = [{"id": "images/0.png", "target": 1, "score_0": 0.25, "score_1": 0.75}]
    write_run(run_dir, record(), predictions, {"w": torch.ones(2)})
    assert read_run(run_dir / RUN_FILE) == record()
    assert pd.read_csv(run_dir / PREDICTIONS_FILE).to_dict("records") == predictions
    from safetensors.torch import load_file

    assert torch.equal(load_file(str(run_dir / WEIGHTS_FILE))["w"], torch.ones(2))
    assert sorted(p.name for p in run_dir.iterdir()) == [WEIGHTS_FILE, PREDICTIONS_FILE, RUN_FILE]


def test_missing_or_broken_run_json_is_a_clear_error(tmp_path):
    with pytest.raises(ReproError, match="missing; run `repro finetune` first"):
        read_run(tmp_path / RUN_FILE)
    (tmp_path / RUN_FILE).write_text("{")
    with pytest.raises(ReproError, match="not valid JSON"):
        read_run(tmp_path / RUN_FILE)


def test_summary_and_metrics_files(tmp_path):
    rows = summary_rows([record("torchvision/a.X", 60, 0.4), record("timm/b.y", 75, 0.6)])
    write_summary(rows, tmp_path / "summary.csv", tmp_path / "metrics.json")
    table = read_summary(tmp_path / "summary.csv")
    assert table["value"].tolist() == [0.4, 0.6] and table["epoch"].tolist() == [2, 2]
    assert json.loads((tmp_path / "metrics.json").read_text()) == {
        "digits": {"torchvision/a.X": {"accuracy": 0.4}, "timm/b.y": {"accuracy": 0.6}}}
    table.drop(columns="value").to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ReproError, match=r"missing columns \['value'\]"):
        read_summary(tmp_path / "bad.csv")


def test_provenance_names_the_commit_and_libraries():
    info = provenance(ROOT)
    assert len(info["git_sha"]) == 40 and info["libraries"]["torch"] and info["libraries"]["repro"]


def test_figure1_draws_every_dataset_with_both_fits(tmp_path):
    rows = [record(f"torchvision/m{i}.X", top1, 0.5 + i / 20) | {"dataset": name}
            for name in ("a", "b") for i, top1 in enumerate((58.0, 65.0, 71.0, 76.0, 80.0))]
    table = pd.DataFrame(summary_rows(rows))
    slopes = dataset_slopes(table, 70.0, 100, 0, 0.95)
    out = figure1(table, slopes, tmp_path / "fig/figure1.png", title_note="check")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["figure1.png"]  # no temp file left


def test_summary_rows_carry_each_models_interval_and_predictions_read_back(tmp_path):
    rows = summary_rows([record(), record("timm/b.y", 75, 0.6)],
                        [{"low": 0.4, "high": 0.6, "method": "m"}, None])
    assert (rows[0]["value_low"], rows[0]["value_high"], rows[0]["value_ci"]) == (0.4, 0.6, "m")
    assert rows[1]["value_low"] is None
    from repro.results import read_predictions

    (tmp_path / "p.csv").write_text("id,target_0,target_1,score_0,score_1\na,1,0,0.9,0.2\n")
    targets, scores = read_predictions(tmp_path / "p.csv")
    assert targets.tolist() == [[1, 0]] and scores.tolist() == [[0.9, 0.2]]
    (tmp_path / "bad.csv").write_text("id,score_0\na,0.1\n")
    with pytest.raises(ReproError, match="bad.csv: expected columns target"):
        read_predictions(tmp_path / "bad.csv")
