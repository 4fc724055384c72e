"""Where a training image's time goes, apart: loading (authors'-style decode + PIL augmentation of one JPEG vs
ours from the decoded-image cache) and the training step on ready tensors per memory format and autocast setting.

Run: `PYTHONPATH=src python benchmarks/finetune_breakdown.py [--models mobilenet_v3_small resnet50] [--threads 2]
[--batch 32] [--steps 8] [--compile]`

Explains the ratios of benchmarks/finetune_throughput.py (same JPEGs, model builder and transforms): per image,
authors' style costs load_authors + step_contiguous, ours load_ours + step_channels_last, so the ratio can be at
most their quotient. Steps are timed after two untimed warm-up steps, on one fixed random batch.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from finetune_throughput import CLASSES, NAMES, cpu_name, write_jpegs
from repro.datasets import DATASETS
from repro.datasets.cache import open_or_build
from repro.datasets.transforms import train_transform
from repro.models import build_model, normalization

SIZE = 224


def per_image_ms(work, count: int) -> float:
    started = time.perf_counter()
    for i in range(count):
        work(i)
    return (time.perf_counter() - started) / count * 1000


def loading_ms(count: int) -> tuple[float, float]:
    """(authors' style, ours) milliseconds to turn one stored image into a normalized training tensor."""
    from torchvision import transforms as T

    mean, std = normalization(NAMES["mobilenet_v3_small"])
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "jpegs"
        root.mkdir()
        names = write_jpegs(root, count)
        authors = T.Compose([T.RandomResizedCrop(SIZE, scale=(0.65, 1.0)), T.RandomHorizontalFlip(),
                             T.RandomVerticalFlip(), T.ToTensor(), T.Normalize(mean, std)])

        def decode(i: int):
            with Image.open(root / names[i]) as image:
                return authors(image.convert("RGB"))

        cache = open_or_build(Path(tmp) / "cache", root, names, [(n,) for n in names], SIZE, "rgb", progress=None)
        ours = train_transform(DATASETS["cassava"], SIZE, mean, std)
        return per_image_ms(decode, count), per_image_ms(lambda i: ours(cache.image(i)), count)


def step_ms(model_name: str, batch: int, steps: int, channels_last: bool, bf16: bool, compile_: bool) -> float:
    torch.manual_seed(0)
    memory = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(model_name, CLASSES).to(memory_format=memory)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    forward = torch.compile(model) if compile_ else model
    images = torch.randn(batch, 3, SIZE, SIZE).contiguous(memory_format=memory)
    labels = torch.randint(0, CLASSES, (batch,))
    loss_fn = nn.CrossEntropyLoss()

    def step(_: int) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = forward(images)
        loss = loss_fn(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step(0), step(1)  # warm-up (and the compile, when on), untimed
    return per_image_ms(step, steps) / batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(NAMES), choices=list(NAMES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--images", type=int, default=192, help="JPEGs for the loading figures")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd channels_last steps")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{cpu_name()}; {args.threads} torch thread(s), {SIZE} px, batch {args.batch}")
    authors, ours = loading_ms(args.images)
    print(f"loading, ms/image:  authors' style {authors:6.2f}   ours (cache) {ours:6.2f}")
    variants = [("contiguous", False, False, False), ("channels_last", True, False, False),
                ("channels_last+bf16", True, True, False)]
    if args.compile:
        variants.append(("channels_last+compile", True, False, True))
    for short in args.models:
        times = {label: step_ms(NAMES[short], args.batch, args.steps, *flags) for label, *flags in variants}
        print(f"{short}: step ms/image " + "   ".join(f"{k} {v:6.2f}" for k, v in times.items()))
        ceiling = (authors + times["contiguous"]) / (ours + times["channels_last"])
        print(f"{short}: ratio ceiling (fp32) {ceiling:4.2f}x")


if __name__ == "__main__":
    main()
