"""The decoded-image cache: every image decoded and resized once, then read as uint8 pixels from a memory map.

Epochs, configs, models and later runs read the cache and never decode a JPEG/PNG again (PAPER.md's 2,280
fine-tunes of 30 epochs would otherwise decode every image 30 x 20 x 19 times). Exercised by `repro finetune` and
by `python benchmarks/data_loading.py`.

Layout: `<cache_root>/<key>/` holds `pixels.u8` (all images' HWC uint8 bytes, back to back), `index.npy`
(offset, height, width per image) and `meta.json` (ids in order, the short-side rule, channel order, EXIF, source).
A cache folder is built under a temporary name and renamed into place, so a reader sees a complete cache or none;
two runs building the same cache at once both succeed and one copy is kept.

Resize rule (`ShortSide`, from `finetune.cache_short_side`): each image is resized (bilinear, antialiased, as the
eval transform's Resize does) so that its shorter side is the rule's side, keeping its aspect ratio, and only ever
down: an image already at or below that side is stored as it is (the cache never upsamples; the transforms do).
- a fixed side N: every image's shorter side becomes N (or stays, if smaller). At N = the training size the eval
  transform (Resize(size) + CenterCrop(size)) gives the same pixels as from the decoded file, but a training crop
  (RandomResizedCrop, 65-100% of the area) is then upsampled about 1.24x instead of downsampled.
- auto: per image, the smallest shorter side S at which no RandomResizedCrop(size, scale=(s, .), ratio=(r0, r1))
  is upsampled. A crop of area fraction t and aspect w/h = r of an image of area A is sqrt(A t r) wide and
  sqrt(A t / r) high; its smaller side is smallest at t = s and r at the extreme of the range, so it is
  sqrt(A s q) with q = min(r0, 1 / r1). For an image of aspect a = long / short resized to shorter side S
  (A = S x floor(S a)), no crop is upsampled when sqrt(S floor(S a) s q) >= size, i.e. S >= size / sqrt(a s q)
  (the smallest such integer is taken). The paper's 256 px crops at s = 0.65, q = 3/4 give S = 367 for a square
  image and less for a wider one; an image smaller than S is kept at full resolution.
The training split is cached under this rule and the evaluation splits at the training size, so evaluation sees
exactly the pixels of the decoded file's Resize + CenterCrop either way.

Key: sha256 of the format version, the short-side rule, the channel order, the EXIF setting and, for each id, its
file names, byte sizes and modification times. Hashing the files' bytes would mean reading the whole raw data
before every run just to find the cache; the stat fingerprint changes whenever a file is replaced (a new download,
a re-prepare), and the content sha256 of what was decoded is recorded in meta.json when the cache is built.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from repro import failpoints
from repro.errors import ReproError

if TYPE_CHECKING:
    import torch

VERSION = 2  # bump when the stored pixels would change for the same inputs
PIXELS, INDEX, META = "pixels.u8", "index.npy", "meta.json"
CHUNK = 256  # images decoded ahead of the writer


@dataclass(frozen=True)
class ShortSide:
    """The cache's resize rule: `fixed` N (shorter side N), or None for auto: the smallest shorter side at which no
    RandomResizedCrop(size, scale=(scale_min, .), ratio=ratio) is upsampled (module docstring)."""

    fixed: int | None
    size: int = 0  # the training crop's output size (auto only)
    scale_min: float = 1.0
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def describe(self) -> str:
        if self.fixed is not None:
            return f"fixed {self.fixed}"
        return (f"auto: no crop upsampled (size {self.size}, scale >= {self.scale_min:g}, "
                f"ratio {self.ratio[0]:g}-{self.ratio[1]:g})")

    def side(self, height: int, width: int) -> int:
        """The shorter side this rule stores an image of height x width at (never above its own)."""
        short, long = min(height, width), max(height, width)
        if self.fixed is not None:
            return min(self.fixed, short)
        return min(auto_short_side(long / short, self.size, self.scale_min, self.ratio), short)


def auto_short_side(aspect: float, size: int, scale_min: float, ratio: tuple[float, float]) -> int:
    """The smallest shorter side S for an image of aspect `aspect` (long / short >= 1) at which every
    RandomResizedCrop(size, scale=(scale_min, .), ratio=ratio) is at least `size` px on both sides."""
    q = min(ratio[0], 1 / ratio[1])
    side = max(1, math.ceil(size / math.sqrt(aspect * scale_min * q)))
    # the resize truncates the long side (torchvision: int(S * long / short)); step up until the smallest crop fits
    while math.sqrt(side * int(side * aspect) * scale_min * q) < size:
        side += 1
    return side


def as_rule(short_side: int | ShortSide) -> ShortSide:
    return short_side if isinstance(short_side, ShortSide) else ShortSide(int(short_side))


def cache_key(root: Path, paths: Sequence[tuple[str, ...]], ids: Sequence[str], short_side: int | ShortSide,
              channel_order: str, exif: bool = False) -> str:
    rule = as_rule(short_side).describe()
    digest = hashlib.sha256(f"repro-image-cache v{VERSION} short={rule} order={channel_order} exif={exif}\n"
                            .encode())
    for image_id, files in zip(ids, paths, strict=True):
        digest.update(f"{image_id}\0".encode())
        for name in files:
            try:
                stat = os.stat(Path(root) / name)
                digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
            except FileNotFoundError:
                raise ReproError(f"{Path(root) / name} (id {image_id}): missing image; run `repro data verify` "
                                 "on its dataset") from None
    return digest.hexdigest()


def resize_shorter(pixels: np.ndarray, size: int | ShortSide) -> np.ndarray:
    """Shorter side to the rule's side for this image when it is smaller than the image's (never upsample), HWC
    uint8 in and out; an int is a fixed side."""
    height, width = pixels.shape[:2]
    size = as_rule(size).side(height, width)
    if min(height, width) <= size:
        return pixels
    import torch
    from torchvision.transforms.v2 import functional as F

    # F.resize with one int scales the shorter side, like the eval transform's v2.Resize(size)
    tensor = F.resize(torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1), size, antialias=True)
    return tensor.permute(1, 2, 0).contiguous().numpy()


class ImageCache:
    """A built cache folder; `image(i)` is the i-th image as a uint8 (3, H, W) tensor. Opens its memory map
    lazily, so the object pickles small into DataLoader workers."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.meta = json.loads((self.folder / META).read_text())
        self.index = np.load(self.folder / INDEX)
        self.ids: list[str] = self.meta["ids"]
        self.position = {image_id: i for i, image_id in enumerate(self.ids)}
        self._pixels: np.memmap | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_pixels": None}

    def __len__(self) -> int:
        return len(self.ids)

    def array(self, i: int) -> np.ndarray:
        if self._pixels is None:
            self._pixels = np.memmap(self.folder / PIXELS, dtype=np.uint8, mode="r")
        offset, height, width = (int(v) for v in self.index[i])
        return self._pixels[offset:offset + height * width * 3].reshape(height, width, 3)

    def image(self, i: int) -> torch.Tensor:
        import torch

        # one copy out of the read-only map, straight into the contiguous (C, H, W) layout the transforms want
        return torch.from_numpy(np.ascontiguousarray(self.array(i).transpose(2, 0, 1)))


class CachedDataset:
    """Items `positions` of an ImageCache with their targets; `transform` runs per item (torch map-style)."""

    def __init__(self, cache: ImageCache, positions: Sequence[int], targets: torch.Tensor, transform) -> None:
        if len(positions) != len(targets):
            raise ValueError("positions and targets differ in length")
        self.cache, self.positions, self.targets, self.transform = cache, list(positions), targets, transform

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, index: int):
        return self.transform(self.cache.image(self.positions[index])), self.targets[index]


def build(folder: Path, root: Path, ids: Sequence[str], paths: Sequence[tuple[str, ...]], size: int | ShortSide,
          channel_order: str, *, exif: bool = False, workers: int | None = None,
          progress: Callable[[int, int], None] | None = None) -> None:
    """Decode, resize and store every image into `folder` (atomically: temp folder + rename)."""
    from concurrent.futures import ThreadPoolExecutor

    from repro.datasets.images import read_image

    folder, rule = Path(folder), as_rule(size)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        index = np.zeros((len(ids), 3), dtype=np.int64)
        content = hashlib.sha256()
        offset = 0

        def load(i: int) -> np.ndarray:
            return resize_shorter(read_image(root, paths[i], channel_order, ids[i], exif), rule)

        def decoded():
            # PIL and torch release the GIL while decoding/resizing; map() keeps the order. In chunks, so at most
            # CHUNK decoded images wait in memory whatever the dataset's size.
            with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:
                for start in range(0, len(ids), CHUNK):
                    yield from pool.map(load, range(start, min(start + CHUNK, len(ids))))

        with open(tmp / PIXELS, "wb") as handle:
            for i, pixels in enumerate(decoded()):
                data = pixels.tobytes()
                handle.write(data)
                content.update(data)
                index[i] = (offset, pixels.shape[0], pixels.shape[1])
                offset += len(data)
                failpoints.hit("cache.after_image")
                if progress is not None:
                    progress(i + 1, len(ids))
        np.save(tmp / INDEX, index)
        meta = {"version": VERSION, "short_side": rule.describe(), "channel_order": channel_order, "exif": exif,
                "root": str(root),
                "images": len(ids), "bytes": offset, "pixels_sha256": content.hexdigest(), "ids": list(ids)}
        (tmp / META).write_text(json.dumps(meta))
        failpoints.hit("cache.before_rename")
        try:
            tmp.rename(folder)
        except OSError:
            if not (folder / META).is_file():  # not a concurrent builder's finished copy: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def open_or_build(cache_root: Path, root: Path, ids: Sequence[str], paths: Sequence[tuple[str, ...]],
                  size: int | ShortSide, channel_order: str, *, exif: bool = False,
                  progress: Callable[[int, int], None] | None = None) -> ImageCache:
    """The cache of these images under this resize rule (an int: a fixed shorter side), channel order and EXIF
    setting, built first if there is none."""
    from repro.splits import remove_abandoned_temps

    folder = Path(cache_root) / cache_key(root, paths, ids, size, channel_order, exif)
    if not (folder / META).is_file():
        remove_abandoned_temps(Path(cache_root))  # half-built caches of killed runs (they can be gigabytes)
        build(folder, root, ids, paths, size, channel_order, exif=exif, progress=progress)
    return ImageCache(folder)
