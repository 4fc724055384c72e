"""Images/s of the decoded-image cache against decoding every epoch, measured on the same JPEG files in one run.

Run: `PYTHONPATH=src python benchmarks/data_loading.py [--images 300] [--epochs 2] [--size 224]`

It writes real JPEG files into a temporary folder (the embedded digits, upscaled to 500 x 375 like a camera-trap
or leaf photo, quality 90), then times the training data path of `repro finetune` both ways over the same images:
- decode: repro.datasets.loaders.ImageFileDataset, which opens, decodes and converts each file on every access;
- cached: repro.datasets.cache, built once (its build time is printed apart), then read as uint8 from the memory
  map; both apply the same train transform (RandomResizedCrop to `--size`, flip, normalize).
Single process (DataLoader num_workers=0 reads the same way), torch on one thread so the two paths compete fairly.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from repro.datasets import DATASETS
from repro.datasets.cache import CachedDataset, open_or_build
from repro.datasets.embedded import load_digits_arrays
from repro.datasets.loaders import ImageFileDataset
from repro.datasets.transforms import train_transform


def write_jpegs(folder: Path, count: int) -> list[tuple[str, ...]]:
    images, _ = load_digits_arrays()
    paths = []
    for i in range(count):
        grey = Image.fromarray(images[i % len(images)]).resize((500, 375), Image.BILINEAR)
        tint = np.asarray(grey, dtype=np.float32)[..., None] * np.array([1.0, 0.8, 0.6], dtype=np.float32)
        name = f"img_{i:05d}.jpg"
        Image.fromarray(tint.astype(np.uint8)).save(folder / name, quality=90)
        paths.append((name,))
    return paths


def images_per_second(dataset, epochs: int) -> float:
    started = time.perf_counter()
    for _ in range(epochs):
        for index in range(len(dataset)):
            dataset[index]
    return epochs * len(dataset) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    spec = DATASETS["cassava"]  # RandomResizedCrop(0.65-1) + both flips: the heaviest of the six transforms
    transform = train_transform(spec, args.size, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "jpegs"
        root.mkdir()
        paths = write_jpegs(root, args.images)
        ids = [p[0] for p in paths]
        targets = torch.zeros(len(ids), dtype=torch.int64)
        decode = ImageFileDataset(root, paths, targets, transform, "rgb", ids)
        decode_rate = images_per_second(decode, args.epochs)
        started = time.perf_counter()
        store = open_or_build(Path(tmp) / "cache", root, ids, paths, args.size, "rgb", progress=None)
        build_seconds = time.perf_counter() - started
        cached = CachedDataset(store, range(len(ids)), targets, transform)
        cached_rate = images_per_second(cached, args.epochs)
    print(f"{args.images} JPEG files 500x375, train transform to {args.size} px, {args.epochs} epochs, "
          f"1 torch thread")
    print(f"decode every epoch : {decode_rate:8.1f} images/s")
    print(f"decoded-image cache: {cached_rate:8.1f} images/s  (built once in {build_seconds:.2f} s, "
          f"{args.images / build_seconds:.0f} images/s, {store.meta['bytes'] / 1e6:.1f} MB)")
    print(f"ratio cached/decode: {cached_rate / decode_rate:8.2f}x")


if __name__ == "__main__":
    main()
