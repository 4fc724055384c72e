"""Run by tests/test_ddp.py, once in one process and once per rank under torchrun: one epoch of `train_config` on
fixed tensors with a BatchNorm-free model, SGD; rank 0 (or the single process) saves the weights and scores.

Usage: python tests/ddp_worker.py OUT.safetensors  (under torchrun: one process group over gloo)."""

import sys

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from repro import ddp
from repro.metrics import METRICS
from repro.train import Protocol, train_config

IMAGES, CLASSES = 7, 3  # one global batch of 7: shares of 4 and 3 on two ranks


def build() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, CLASSES))


def data() -> tuple[TensorDataset, np.ndarray]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(IMAGES, 3, 8, 8, generator=generator)
    y = torch.arange(IMAGES) % CLASSES
    return TensorDataset(x, y), y.numpy()


def main(out: str) -> None:
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    with ddp.process_group("cpu") as dist:
        dataset, y = data()
        protocol = Protocol(epochs=1, batch_size=8, optimizer="sgd", adamw_wd_over_lr=False, schedule="cosine",
                            seed=0, device="cpu", channels_last=False, deterministic=True)
        result = train_config(build, {"train": dataset, "val": dataset}, {"val": y}, protocol, 0.5, 0.0,
                              METRICS["accuracy"], select="val", report="val")
        if dist.main:
            tensors = {k: v.contiguous() for k, v in result.state_dict.items()}
            tensors["scores"] = torch.from_numpy(result.report_scores)
            tensors["train_loss"] = torch.tensor([result.curve[0]["train_loss"]], dtype=torch.float64)
            tensors["world"] = torch.tensor([dist.world])
            save_file(tensors, out)


if __name__ == "__main__":
    main(sys.argv[1])
