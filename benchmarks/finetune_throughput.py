"""Training images/s of our fine-tuning loop against a loop written like the authors' script, same model and data.

Run: `PYTHONPATH=src python benchmarks/finetune_throughput.py [--models mobilenet_v3_small resnet50] [--size 224]
[--images 192] [--epochs 2] [--batch 32] [--threads 1] [--precision fp32|bf16] [--ddp N]
[--table benchmarks/throughput.csv]`

Data: real JPEG files written to a temporary folder (the embedded digits upscaled to 800 x 600, Cassava's photo
size, quality 90), the same files for both loops. Both loops train the same architecture (random init, ImageNet
class count replaced by 5) with AdamW, cross-entropy, batch `--batch`, Cassava's augmentation
(RandomResizedCrop(size, scale 0.65-1) + horizontal and vertical flips), DataLoader num_workers=0, torch on
`--threads` threads, one untimed warm-up batch each; only the training steps are timed (no evaluation).
- baseline, as the authors' sample_train.py does it: a dataset that opens and decodes each JPEG with PIL on every
  access, torchvision's PIL transforms + ToTensor + Normalize, fp32, contiguous memory format;
- ours: `repro.train.train_config` (the loop `repro finetune` runs) over the decoded-image cache of
  `repro.datasets.cache` (built once, its build time printed apart), uint8 tensor transforms, channels_last and the
  protocol's `finetune.precision` (`--precision`, default fp32 as the authors' script; bf16: bf16 autocast on a
  CUDA GPU, fp32 on a CPU).
  With `--ddp N` our loop runs as `repro finetune --ddp N` does (repro.ddp): N processes under torchrun with
  `--threads / N` threads each, the same global batch split between them, gloo on CPU; the baseline stays one
  process on `--threads` threads, as the authors' script on one machine. Images/s is then all ranks' images over
  rank 0's training time.
Prints images/s of each and the ratio per model; `--table` appends the measured rates to the throughput table
that `repro plan` reads (device kind from `--device-kind`, e.g. cpu or cuda-h200).
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from repro.datasets import DATASETS
from repro.datasets.cache import CachedDataset, open_or_build
from repro.datasets.embedded import load_digits_arrays
from repro.datasets.transforms import train_transform
from repro.metrics import accuracy
from repro.models import build_model, normalization
from repro.plan import THROUGHPUT_COLUMNS
from repro.train import Protocol, predict, resolve_device, resolve_precision, train_config

NAMES = {"mobilenet_v3_small": "torchvision/mobilenet_v3_small.IMAGENET1K_V1",
         "resnet50": "torchvision/resnet50.IMAGENET1K_V1"}
CLASSES = 5


def write_jpegs(folder: Path, count: int) -> list[str]:
    images, _ = load_digits_arrays()
    names = []
    for i in range(count):
        grey = Image.fromarray(images[i % len(images)]).resize((800, 600), Image.BILINEAR)
        tint = np.asarray(grey, dtype=np.float32)[..., None] * np.array([1.0, 0.8, 0.6], dtype=np.float32)
        name = f"img_{i:05d}.jpg"
        Image.fromarray(tint.astype(np.uint8)).save(folder / name, quality=90)
        names.append(name)
    return names


class AuthorsStyleFolder:
    """Like torchvision's ImageFolder in the authors' script: PIL open + decode + convert on every access."""

    def __init__(self, root: Path, names: list[str], labels: torch.Tensor, transform) -> None:
        self.root, self.names, self.labels, self.transform = root, names, labels, transform

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int):
        with Image.open(self.root / self.names[index]) as image:
            return self.transform(image.convert("RGB")), self.labels[index]


def baseline_rate(model_name: str, root: Path, names: list[str], labels: torch.Tensor, size: int, batch: int,
                  epochs: int, device: torch.device) -> float:
    from torchvision import transforms as T

    mean, std = normalization(model_name)
    transform = T.Compose([T.RandomResizedCrop(size, scale=(0.65, 1.0)), T.RandomHorizontalFlip(),
                           T.RandomVerticalFlip(), T.ToTensor(), T.Normalize(mean, std)])
    torch.manual_seed(0)
    model = build_model(model_name, CLASSES).to(device)  # fp32, contiguous
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4 / 1e-3)
    loss_fn = nn.CrossEntropyLoss()
    loader = DataLoader(AuthorsStyleFolder(root, names, labels, transform), batch_size=batch, shuffle=True)
    model.train()

    def step(images, targets):
        images, targets = images.to(device), targets.to(device)
        loss = loss_fn(model(images), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step(*next(iter(loader)))  # warm-up, untimed
    if device.type == "cuda":
        torch.cuda.synchronize()
    count, started = 0, time.perf_counter()
    for _ in range(epochs):
        for images, targets in loader:
            step(images, targets)
            count += len(targets)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return count / (time.perf_counter() - started)


def ours_rate(model_name: str, cache, labels: torch.Tensor, size: int, batch: int, epochs: int,
              device: str, precision: str = "fp32") -> float:
    mean, std = normalization(model_name)
    train = CachedDataset(cache, range(len(labels)), labels, train_transform(DATASETS["cassava"], size, mean, std))
    tiny = TensorDataset(torch.zeros(2, 3, size, size), torch.zeros(2, dtype=torch.int64))  # eval is not timed
    splits, targets = {"train": train, "val": tiny}, {"val": np.zeros(2, dtype=np.int64)}
    protocol = Protocol(epochs=1, batch_size=batch, optimizer="adamw", adamw_wd_over_lr=True, schedule="cosine",
                        seed=0, device=device, precision=precision, channels_last=True)
    warm = torch.utils.data.Subset(train, range(batch))  # one untimed batch, as for the baseline
    train_config(lambda: build_model(model_name, CLASSES), {**splits, "train": warm}, targets, protocol, 1e-3, 1e-4,
                 accuracy, select="val", report="val")
    protocol = Protocol(**{**protocol.__dict__, "epochs": epochs})
    result = train_config(lambda: build_model(model_name, CLASSES), splits, targets, protocol, 1e-3, 1e-4, accuracy,
                          select="val", report="val")
    return result.train_images / result.train_seconds


def ours_ddp_rate(args: argparse.Namespace, short: str, tmp: Path) -> float:
    """ours_rate in `args.ddp` processes under torchrun (this script in --worker mode), as `repro finetune --ddp`."""
    import subprocess

    from repro.ddp import torchrun_command

    command = torchrun_command(args.ddp, ["--worker", str(tmp), "--models", short, "--size", str(args.size),
                                          "--images", str(args.images), "--epochs", str(args.epochs), "--batch",
                                          str(args.batch), "--device", args.device, "--precision", args.precision],
                               program=[str(Path(__file__).resolve())])
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, args.threads // args.ddp))}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    rates = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("RATE ")]
    if done.returncode or not rates:
        raise SystemExit(f"the --ddp {args.ddp} run failed:\n{done.stdout}\n{done.stderr}")
    return float(rates[0])


def worker(args: argparse.Namespace) -> None:
    """One rank of ours_ddp_rate: the cache the parent built, our loop in the process group; rank 0 prints."""
    from repro.ddp import process_group

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    names = [f"img_{i:05d}.jpg" for i in range(args.images)]
    cache = open_or_build(args.worker / "cache", args.worker / "jpegs", names, [(n,) for n in names], args.size,
                          "rgb", progress=None)
    labels = torch.arange(args.images) % CLASSES
    with process_group(args.device) as dist:
        rate = ours_rate(NAMES[args.models[0]], cache, labels, args.size, args.batch, args.epochs, args.device,
                         args.precision)
        if dist.main:
            print(f"RATE {rate}", flush=True)


def eval_rate(model_name: str, count: int, size: int, device: str) -> float:
    """Images/s of repro.train.predict (the per-epoch evaluation) on preprocessed images, channels_last."""
    model = build_model(model_name, CLASSES).to(resolve_device(device), memory_format=torch.channels_last)
    data = TensorDataset(torch.randn(count, 3, size, size), torch.zeros(count, dtype=torch.int64))
    device_ = resolve_device(device)
    predict(model, torch.utils.data.Subset(data, range(min(8, count))), device_, False)  # warm-up
    started = time.perf_counter()
    predict(model, data, device_, False)
    return count / (time.perf_counter() - started)


def cpu_name() -> str:
    """The CPU's model name and the widest vector unit torch dispatches to (the ratio depends on both)."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {torch.backends.cpu.get_cpu_capability()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(NAMES), choices=list(NAMES))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=192)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                        help="our loop's finetune.precision (the baseline is fp32, as the authors' script)")
    parser.add_argument("--device-kind", default=None, help="name for the table [default: cpu or cuda-<gpu>]")
    parser.add_argument("--table", type=Path, default=None, help="append the rates to this throughput CSV")
    parser.add_argument("--ddp", type=int, default=1, help="our loop in N processes, as `repro finetune --ddp N`")
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)  # one rank of --ddp
    args = parser.parse_args()
    if args.worker is not None:
        worker(args)
        return
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    kind = args.device_kind or ("cpu" if device.type == "cpu" else "cuda-" + torch.cuda.get_device_name(device)
                                .split()[-1].lower())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "jpegs"
        root.mkdir()
        names = write_jpegs(root, args.images)
        labels = torch.arange(args.images) % CLASSES
        started = time.perf_counter()
        cache = open_or_build(Path(tmp) / "cache", root, names, [(n,) for n in names], args.size, "rgb",
                              progress=None)
        build = time.perf_counter() - started
        print(f"{args.images} JPEGs 800x600, {args.size} px, batch {args.batch}, {args.epochs} epochs, "
              f"{args.threads} torch thread(s), device {device} ({cpu_name()}), our precision {args.precision}"
              f"{f', ours in {args.ddp} DDP processes' if args.ddp > 1 else ''}; "
              f"cache built once in {build:.1f} s")
        for short in args.models:
            name = NAMES[short]
            base = baseline_rate(name, root, names, labels, args.size, args.batch, args.epochs, device)
            ours = (ours_ddp_rate(args, short, Path(tmp)) if args.ddp > 1 else
                    ours_rate(name, cache, labels, args.size, args.batch, args.epochs, str(device), args.precision))
            evaluation = eval_rate(name, args.images, args.size, str(device))
            print(f"{short:20s} baseline {base:8.2f} img/s   ours {ours:8.2f} img/s   ratio {ours / base:5.2f}x   "
                  f"(eval {evaluation:8.2f} img/s)",
                  flush=True)
            rows.append({"model": name, "device": kind, "image_size": args.size, "batch_size": args.batch,
                         "amp": "off" if resolve_precision(args.precision, device) is None else "bf16",
                         "train_img_s": round(ours, 2),
                         "eval_img_s": round(evaluation, 2),
                         "source": f"benchmarks/finetune_throughput.py {time.strftime('%Y-%m-%d')}"})
    if args.table is not None:
        new = not args.table.exists()
        with open(args.table, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=THROUGHPUT_COLUMNS, lineterminator="\n")
            if new:
                writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
