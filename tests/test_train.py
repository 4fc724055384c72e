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
