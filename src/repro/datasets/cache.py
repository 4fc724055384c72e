"""The decoded-image cache: every image decoded and resized once, then read as uint8 pixels from a memory map.

Epochs, configs, models and later runs read the cache and never decode a JPEG/PNG again (PAPER.md's 2,280
fine-tunes of 30 epochs would otherwise decode every image 30 x 20 x 19 times). Exercised by `repro finetune` and
by `python benchmarks/data_loading.py`.

Layout: `<cache_root>/<key>/` holds `pixels.u8` (all images' HWC uint8 bytes, back to back), `index.npy`
(offset, height, width per image) and `meta.json` (ids in order, size, channel order, source). A cache folder is
built under a temporary name and renamed into place, so a reader sees a complete cache or none; two runs building
the same cache at once both succeed and one copy is kept.

Resize rule: an image whose shorter side exceeds the training size is resized (bilinear, antialiased, as the
eval transform's Resize does) to shorter side = size, keeping its aspect ratio; a smaller image is stored as it
is, because upsampling before the random crop would only add a second resampling. So the eval transform
(Resize(size) + CenterCrop(size)) gives the same pixels as it would from the decoded file, and the train
transform's RandomResizedCrop works on an image at most `size` on its shorter side; for a source larger than
that, a crop covering 65% of the area is upsampled about 1.24x instead of downsampled from full resolution.

Key: sha256 of the format version, the size, the channel order and, for each id, its file names, byte sizes and
modification times. Hashing the files' bytes would mean reading the whole raw data before every run just to
find the cache; the stat fingerprint changes whenever a file is replaced (a new download, a re-prepare), and
the content sha256 of what was decoded is recorded in meta.json when the cache is built.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from repro import failpoints
from repro.errors import ReproError

if TYPE_CHECKING:
    import torch

VERSION = 1  # bump when the stored pixels would change for the same inputs
PIXELS, INDEX, META = "pixels.u8", "index.npy", "meta.json"
CHUNK = 256  # images decoded ahead of the writer


def cache_key(root: Path, paths: Sequence[tuple[str, ...]], ids: Sequence[str], size: int,
              channel_order: str) -> str:
    digest = hashlib.sha256(f"repro-image-cache v{VERSION} size={size} order={channel_order}\n".encode())
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


def resize_shorter(pixels: np.ndarray, size: int) -> np.ndarray:
    """Shorter side to `size` when it is larger (never upsample), HWC uint8 in and out."""
    height, width = pixels.shape[:2]
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


def build(folder: Path, root: Path, ids: Sequence[str], paths: Sequence[tuple[str, ...]], size: int,
          channel_order: str, *, workers: int | None = None,
          progress: Callable[[int, int], None] | None = None) -> None:
    """Decode, resize and store every image into `folder` (atomically: temp folder + rename)."""
    from concurrent.futures import ThreadPoolExecutor

    from repro.datasets.images import read_image

    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        index = np.zeros((len(ids), 3), dtype=np.int64)
        content = hashlib.sha256()
        offset = 0

        def load(i: int) -> np.ndarray:
            return resize_shorter(read_image(root, paths[i], channel_order, ids[i]), size)

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
        meta = {"version": VERSION, "size": size, "channel_order": channel_order, "root": str(root),
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


def open_or_build(cache_root: Path, root: Path, ids: Sequence[str], paths: Sequence[tuple[str, ...]], size: int,
                  channel_order: str, *, progress: Callable[[int, int], None] | None = None) -> ImageCache:
    """The cache of these images at this size and channel order, built first if there is none."""
    from repro.splits import remove_abandoned_temps

    folder = Path(cache_root) / cache_key(root, paths, ids, size, channel_order)
    if not (folder / META).is_file():
        remove_abandoned_temps(Path(cache_root))  # half-built caches of killed runs (they can be gigabytes)
        build(folder, root, ids, paths, size, channel_order, progress=progress)
    return ImageCache(folder)
