import math

import numpy as np
import pytest
import torch
from torch import nn

from repro.datasets.generic import DecodedImageDataset
from repro.metrics import accuracy
from repro.train import ConfigResult, Protocol, best_config, make_optimizer, make_scheduler, train_config


def toy_splits(n=120, seed=0):
    """Two classes told apart by brightness: any working training loop learns them in a few epochs."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = [(torch.rand(3, 8, 8, generator=g) * 100 + 155 * int(y)).to(torch.uint8) for y in labels]

    def to_float(x):
        return x.float() / 255

    splits, targets = {}, {}
    for name, part in (("train", slice(0, 80)), ("val", slice(80, 100)), ("test", slice(100, 120))):
        splits[name] = DecodedImageDataset(images[part], labels[part], to_float)
        targets[name] = labels[part].numpy()
    return splits, targets


def tiny_model():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))


PROTOCOL = Protocol(epochs=4, batch_size=16, optimizer="adamw", adamw_wd_over_lr=True, schedule="cosine", seed=0)


def test_training_learns_and_keeps_the_best_epoch():
    splits, targets = toy_splits()
    seen = []
    result = train_config(tiny_model, splits, targets, PROTOCOL, 0.05, 0.0, accuracy, select="val",
                          report="test", on_epoch=lambda e, r: seen.append(e))
    assert seen == [1, 2, 3, 4] and len(result.curve) == 4
    assert result.select_value == max(r["select"] for r in result.curve) >= 0.9
    assert result.report_value == result.curve[result.best_epoch - 1]["report"]
    assert result.report_scores.shape == (20, 2) and set(result.state_dict) == set(tiny_model().state_dict())


def test_same_seed_gives_the_same_curve():
    splits, targets = toy_splits()
    runs = [train_config(tiny_model, splits, targets, PROTOCOL, 0.01, 1e-4, accuracy, select="val",
                         report="test") for _ in range(2)]
    assert runs[0].curve == runs[1].curve


def test_adamw_weight_decay_quirk_and_schedules():
    params = [nn.Parameter(torch.zeros(1))]
    assert make_optimizer(params, PROTOCOL, 1e-3, 1e-4).param_groups[0]["weight_decay"] == pytest.approx(0.1)
    plain = Protocol(**{**PROTOCOL.__dict__, "adamw_wd_over_lr": False})
    assert make_optimizer(params, plain, 1e-3, 1e-4).param_groups[0]["weight_decay"] == pytest.approx(1e-4)
    sgd = make_optimizer(params, Protocol(**{**PROTOCOL.__dict__, "optimizer": "sgd"}), 0.1, 1e-4)
    assert sgd.param_groups[0]["nesterov"] and sgd.param_groups[0]["momentum"] == 0.9
    optimizer = make_optimizer(params, PROTOCOL, 1.0, 0.0)
    scheduler = make_scheduler(optimizer, PROTOCOL)
    lrs = []
    for _ in range(PROTOCOL.epochs):
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    expected = [(1 + math.cos(math.pi * e / 4)) / 2 for e in range(1, 5)]
    assert lrs == pytest.approx(expected)


def test_a_diverging_config_is_recorded_and_loses_the_selection():
    splits, targets = toy_splits()

    class Nan(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = tiny_model()

        def forward(self, x):
            return self.inner(x) * float("nan")

    result = train_config(Nan, splits, targets, PROTOCOL, 0.01, 0.0, accuracy, select="val", report="test")
    assert result.diverged and result.best_epoch is None and result.select_value == -math.inf
    good = ConfigResult(lr=1, wd=0, curve=[{"select": 0.5, "report": 0.4}], best_epoch=1)
    tie = ConfigResult(lr=2, wd=0, curve=[{"select": 0.5, "report": 0.9}], best_epoch=1)
    assert best_config([result, good, tie]) == 1  # first of equal scores, diverged never chosen
    assert best_config([result]) is None
    assert np.isfinite(good.select_value)


# --- the protocol as data: strict selection, the resolved plan, the compute estimate ---------------------------

def test_strict_selection_is_stratified_seeded_and_recorded():
    from collections import Counter

    from repro.study import STRICT_SPLIT, carve_selection

    rows = [(f"id{i}", str(i % 3), "train" if i < 90 else "test") for i in range(120)]
    carved, info = carve_selection(rows, 0.2, seed=0)
    held = [r for r in carved if r[2] == STRICT_SPLIT]
    assert len(held) == 18 and Counter(r[1] for r in held) == {"0": 6, "1": 6, "2": 6}  # stratified
    assert [r for r in carved if r[2] == "test"] == rows[90:]  # the reported split is untouched
    again, info2 = carve_selection(rows, 0.2, seed=0)
    assert again == carved and info == info2 and info["stratified_by"] == "label" and info["images"] == 18
    assert carve_selection(rows, 0.2, seed=1)[1]["ids_sha256"] != info["ids_sha256"]
    multi = [(f"m{i}", f"{i % 2} {i % 5 + 7}-{i}", "train") for i in range(40)]  # every label string unique
    assert carve_selection(multi, 0.25, seed=0)[1]["stratified_by"] == "first label"


def test_last_epoch_selection_takes_the_final_epoch():
    splits, targets = toy_splits()
    protocol = Protocol(**{**PROTOCOL.__dict__, "selection": "last_epoch"})
    result = train_config(tiny_model, splits, targets, protocol, 0.05, 0.0, accuracy, select="val", report="test")
    assert result.best_epoch == protocol.epochs


def test_the_paper_plan_spells_out_every_protocol_element():
    from repro.config import load_params
    from repro.plan import resolve_plan

    from conftest import ROOT

    plan = resolve_plan(load_params(ROOT / "profiles/paper.yaml"))
    p = plan["protocol"]
    assert p["lr grid"] == [1e-2, 1e-3, 1e-4, 1e-5] and p["wd grid"] == [1e-3, 1e-4, 1e-5, 1e-6, 0.0]
    assert "wd / lr" in p["optimizer"] and "T_max = 30" in p["schedule"] and p["batch size"] == 128
    assert p["configs per run"] == 20 and plan["runs"] == 19 * 6 and plan["fine_tunes"] == 2280
    assert p["precision"] == "fp32: fp32, no autocast"  # on any device, as the authors' script
    assert p["normalization"].startswith("imagenet") and p["exif"].startswith("authors")
    by_name = {d["dataset"]: d for d in plan["datasets"]}
    assert by_name["hpa"]["loss"].startswith("BCE") and by_name["aptos"]["loss"] == "cross-entropy"
    assert by_name["eurosat"]["image size"] == 224 and by_name["cct20"]["image size"] == 256
    assert by_name["aptos"]["channel order"].startswith("bgr") and by_name["cassava"]["channel order"] == "rgb"
    assert by_name["aptos"]["select on"] == by_name["aptos"]["report"] == "heldout"
    squeeze = next(m for m in plan["models"] if "squeezenet" in m["model"])
    assert squeeze["head"].startswith("classifier.1") and "0.485" in squeeze["normalization"]


def test_estimate_and_compute_report_add_up():
    from repro.plan import compute_report, estimate

    plan = {"protocol": {"epochs": 2}, "grid": 3, "models": [{"model": "m"}],
            "datasets": [{"dataset": "d", "select on": "val", "report": "test", "image size": 64}]}
    table = [{"model": "m", "device": "cpu", "image_size": 128, "train_img_s": 10.0, "eval_img_s": 40.0}]
    result = estimate(plan, {"d": ({"train": 100, "val": 20, "test": 20}, "split file")}, table, "cpu")
    assert result["images"] == 3 * 2 * 140
    # rates measured at 128 px scale by pixel count to 64 px: 4x faster
    assert result["hours"] == pytest.approx(3 * 2 * (100 / 40 + 40 / 160) / 3600)
    assert estimate(plan, {"d": (None, "unknown")}, table, "cpu")["unmeasured"] == 1
    report = compute_report([{"model": "m", "dataset": "d", "train_seconds": 5.0, "wall_seconds": 7.0,
                              "train_images": 50, "device": "cpu"}] * 2)
    assert report["total"] == {"runs": 2, "train_seconds": 10.0, "wall_seconds": 14.0, "train_images": 100}
    assert report["per_model"]["m"]["runs"] == 2 and report["devices"] == ["cpu"]
