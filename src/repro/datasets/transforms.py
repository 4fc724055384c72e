"""Train and eval transforms from a DatasetSpec (PAPER.md section 4) and the run's normalization
(`finetune.normalization`: ImageNet's or the weights' own).

Train: RandomResizedCrop(size, scale=spec.crop_scale, ratio=spec.crop_ratio) plus the dataset's flips; eval:
Resize(size) + CenterCrop(size). Both act on the uint8 tensors the readers decode once. Exercised by `repro finetune`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2

from repro.datasets import DatasetSpec


def train_transform(spec: DatasetSpec, size: int, mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    steps: list[v2.Transform] = [v2.RandomResizedCrop(size, scale=spec.crop_scale, ratio=spec.crop_ratio,
                                                        antialias=True)]
    if spec.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if spec.vflip:
        steps.append(v2.RandomVerticalFlip())
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean), std=list(std))]
    return v2.Compose(steps)


def eval_geometry(size: int) -> v2.Compose:
    """The deterministic, pixel-moving part of the eval transform: uint8 in, uint8 out."""
    return v2.Compose([v2.Resize(size, antialias=True), v2.CenterCrop(size)])


def finish(mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """uint8 -> float in [0, 1] -> normalized with the model's mean and std."""
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean), std=list(std))])


def eval_transform(size: int, mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    return v2.Compose([eval_geometry(size), finish(mean, std)])
