"""Fine-tune one model on one dataset over a grid of (lr, wd) configs, the authors' way (PAPER.md section 4).

Every epoch is evaluated on the selection and the report split; a config scores its best selection epoch, the best
config wins, and the report metric is read at that epoch. No file layout here: callers hand in datasets and get back
plain values. Exercised by `repro finetune`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

Metric = Callable[[np.ndarray, np.ndarray], float]


@dataclass(frozen=True)
class Protocol:
    epochs: int
    batch_size: int
    optimizer: str  # "adamw" | "sgd"
    adamw_wd_over_lr: bool
    schedule: str  # "cosine" | "step"
    seed: int
    device: str = "cpu"
    num_workers: int = 0


@dataclass
class ConfigResult:
    lr: float
    wd: float
    curve: list[dict] = field(default_factory=list)  # per epoch: train_loss, select, report
    best_epoch: int | None = None  # 1-based
    diverged: bool = False
    report_scores: np.ndarray | None = None
    state_dict: dict[str, torch.Tensor] | None = None
    train_images: int = 0
    train_seconds: float = 0.0

    @property
    def select_value(self) -> float:
        return -math.inf if self.best_epoch is None else self.curve[self.best_epoch - 1]["select"]

    @property
    def report_value(self) -> float | None:
        return None if self.best_epoch is None else self.curve[self.best_epoch - 1]["report"]


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def make_optimizer(parameters, protocol: Protocol, lr: float, wd: float) -> torch.optim.Optimizer:
    if protocol.optimizer == "adamw":
        # The authors pass weight_decay = wd / lr to AdamW (their sample_train.py); kept as an explicit switch.
        decay = wd / lr if protocol.adamw_wd_over_lr else wd
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=decay)
    if protocol.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=0.9, nesterov=True, weight_decay=wd)
    raise ValueError(f"unknown optimizer {protocol.optimizer!r}")


def make_scheduler(optimizer: torch.optim.Optimizer, protocol: Protocol):
    if protocol.schedule == "cosine":  # stepped once per epoch, T_max = epochs
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=protocol.epochs)
    if protocol.schedule == "step":  # the authors' alternative: x0.1 at epochs 15, 20, 25
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[15, 20, 25], gamma=0.1)
    raise ValueError(f"unknown schedule {protocol.schedule!r}")


def predict(model: nn.Module, dataset, device: torch.device, multilabel: bool, batch_size: int = 256) -> np.ndarray:
    """Class probabilities (N, C) in dataset order."""
    model.eval()
    outputs = []
    with torch.inference_mode():
        for images, _ in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            logits = model(images.to(device, memory_format=torch.channels_last)).float()
            outputs.append((logits.sigmoid() if multilabel else logits.softmax(dim=1)).cpu())
    return torch.cat(outputs).numpy()


def train_config(
    build: Callable[[], nn.Module],
    splits: Mapping[str, object],
    targets: Mapping[str, np.ndarray],
    protocol: Protocol,
    lr: float,
    wd: float,
    metric: Metric,
    *,
    select: str,
    report: str,
    multilabel: bool = False,
    on_epoch: Callable[[int, dict], None] | None = None,
) -> ConfigResult:
    """Train one (lr, wd) config for `protocol.epochs`; keep the report scores and weights of its best epoch."""
    device = resolve_device(protocol.device)
    torch.manual_seed(protocol.seed)  # same init and data order for every config of a grid
    model = build().to(device, memory_format=torch.channels_last)
    optimizer = make_optimizer(model.parameters(), protocol, lr, wd)
    scheduler = make_scheduler(optimizer, protocol)
    loss_fn: nn.Module = nn.BCEWithLogitsLoss() if multilabel else nn.CrossEntropyLoss()
    loader = DataLoader(
        splits["train"],
        batch_size=protocol.batch_size,
        shuffle=True,
        num_workers=protocol.num_workers,
        generator=torch.Generator().manual_seed(protocol.seed),
        pin_memory=device.type == "cuda",
        persistent_workers=protocol.num_workers > 0,
    )
    result = ConfigResult(lr=lr, wd=wd)
    for epoch in range(1, protocol.epochs + 1):
        model.train()
        started, total, count = time.perf_counter(), 0.0, 0
        for images, labels in loader:
            images = images.to(device, non_blocking=True, memory_format=torch.channels_last)
            labels = labels.to(device, non_blocking=True)
            loss = loss_fn(model(images), labels.float() if multilabel else labels)
            if not torch.isfinite(loss):
                result.diverged = True
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(labels)
            count += len(labels)
        result.train_seconds += time.perf_counter() - started
        result.train_images += count
        if result.diverged:  # a NaN loss ends this config; the grid goes on (recorded as diverged)
            break
        scheduler.step()
        scores = {name: predict(model, splits[name], device, multilabel) for name in (select, report)}
        record = {
            "epoch": epoch,
            "train_loss": total / max(count, 1),
            "select": metric(targets[select], scores[select]),
            "report": metric(targets[report], scores[report]),
        }
        result.curve.append(record)
        if result.best_epoch is None or record["select"] > result.select_value:
            result.best_epoch = epoch
            result.report_scores = scores[report]
            result.state_dict = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        if on_epoch is not None:
            on_epoch(epoch, record)
    return result


def best_config(results: Sequence[ConfigResult]) -> int | None:
    """Index of the config with the best selection score (first on ties); None if every config diverged."""
    finite = [i for i, r in enumerate(results) if r.best_epoch is not None]
    return max(finite, key=lambda i: results[i].select_value) if finite else None

