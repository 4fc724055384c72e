"""The generic image folder / CSV format, and its reader.

Layout: `<root>/labels.csv` with columns `id,label`, where `id` is an image path relative to `<root>` and `label`
a class name; the images themselves anywhere below `<root>`. The embedded digits are written in this format, and
it is the format a user's own data takes. Exercised by `repro data prepare digits` and `repro finetune`.
"""

from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from repro.errors import ReproError

if TYPE_CHECKING:
    import torch

LABELS_FILE = "labels.csv"


def write_image_csv(out_dir: Path, rows: Sequence[tuple[str, int | str]], images: np.ndarray) -> None:
    """Write `images[i]` to `out_dir/rows[i][0]` and the labels table; all or nothing (temp folder + rename)."""
    from PIL import Image

    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for (image_id, _), pixels in zip(rows, images, strict=True):
            target = tmp / image_id
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(target)
        with open(tmp / LABELS_FILE, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "label"])
            writer.writerows(rows)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_labels(root: Path) -> list[tuple[str, str]]:
    """The (id, label) rows of `root/labels.csv`, checked for its columns."""
    path = Path(root) / LABELS_FILE
    if not path.is_file():
        raise ReproError(f"{path}: missing; a generic dataset needs labels.csv with columns id,label")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"id", "label"} <= set(reader.fieldnames):
            raise ReproError(f"{path}: expected columns id,label, found {reader.fieldnames}")
        return [(row["id"], row["label"]) for row in reader]


def decode_images(root: Path, ids: Sequence[str]) -> list[torch.Tensor]:
    """Decode every image once into a uint8 RGB tensor (C, H, W); report all unreadable files together."""
    import torch

    from repro.datasets.images import ImageError, decode

    images: list[torch.Tensor] = []
    problems: list[str] = []
    for image_id in ids:
        path = Path(root) / image_id
        if not path.is_file():
            problems.append(f"{image_id} (missing)")
            continue
        try:
            pixels = decode(path)
            images.append(torch.from_numpy(pixels.copy()).permute(2, 0, 1).contiguous())
        except ImageError as exc:
            problems.append(f"{image_id} ({exc.short})")
    if problems:
        shown = ", ".join(problems[:5]) + (f" and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise ReproError(f"{root}: {len(problems)} unreadable image(s): {shown}")
    return images


class DecodedImageDataset:
    """Images decoded once, held in memory; `transform` runs per item (a torch map-style dataset)."""

    def __init__(self, images: list[torch.Tensor], targets: torch.Tensor, transform) -> None:
        if len(images) != len(targets):
            raise ValueError("images and targets differ in length")
        self.images = images
        self.targets = targets
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.transform(self.images[index]), self.targets[index]
