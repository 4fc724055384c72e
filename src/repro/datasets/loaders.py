"""Torch datasets over a pinned split file and a data folder, for every format: the six published raw layouts,
the embedded digits and a user's own folder/CSV data. Exercised by `repro finetune --model M --dataset D`.

A split file (`id,label,split`, written by `repro data prepare`) says which ids train, select and report; the
data folder says where their pixels are. For the six published formats the folder is the raw download and the
image file(s) of each id come from the format module's own `scan` (the same code that verified it and built the
split); for the embedded digits and a user's data the id is the image path relative to the folder.

How an id becomes a uint8 RGB image (H, W, 3), before any resize:
- one image file: decoded with PIL and converted to RGB (greyscale and palette files too);
- HPA: the four 8-bit greyscale PNGs `<Id>_{red,green,blue,yellow}.png`. The authors' loader (their
  datasets/hpa.py) reads `rgby/train/<Id>.png` made by pudae/kaggle-hpa `tools/make_rgby.py`, which stacks
  red, green, blue, yellow into one 4-channel (RGBA) PNG unchanged, with `cv2.imread(path)` and its default
  IMREAD_COLOR flag: OpenCV drops the fourth (yellow) channel and returns B, G, R. So the model sees three
  channels, red/green/blue files only, yellow never; with channel_order "bgr" in the order (blue, green, red),
  as the authors' model did, with "rgb" in the order (red, green, blue). Not known from any reachable source:
  whether the authors' rgby PNGs were made with exactly that script version (scipy.misc.imsave of uint8 data
  stores it unscaled), and whether OpenCV's JPEG/PNG decoders give the exact bytes PIL gives (for PNG they do:
  it is lossless; for JPEG the IDCT may differ in the last bit).

channel_order (PAPER.md section 4): the CCT-20, APTOS, HPA and Melanoma loaders read with `cv2.imread` and never
convert BGR to RGB, so a faithful run feeds those four datasets' images with channels reversed ("bgr");
Cassava converts and EuroSAT reads with PIL, so they are RGB whatever the setting. `effective_channel_order`
says which order a dataset actually gets; the run record stores it.

exif (`finetune.exif`): cv2.imread applies a JPEG's EXIF orientation, PIL does not. `authors` applies it for the
datasets the authors read with cv2 (DatasetSpec.reader_applies_exif: CCT-20, APTOS, HPA, Melanoma, Cassava) and not
for EuroSAT (torchvision's ImageFolder, PIL); `never` and `always` as named. `effective_exif` decides, and
repro.datasets.images.read_image applies it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from repro.datasets import DatasetSpec
from repro.datasets.images import read_image, to_tensor  # noqa: F401 - the loaders read every image through these
from repro.errors import ReproError

if TYPE_CHECKING:
    import torch

CHANNEL_ORDERS = ("rgb", "bgr")
EXIF_SETTINGS = ("authors", "never", "always")
HPA_MODEL_CHANNELS = ("red", "green", "blue")  # the yellow file is dropped, as OpenCV's IMREAD_COLOR does
EVAL_MEMORY_BYTES = 4 << 30  # eval crops kept in memory up to this size (CCT-20's cis_test at 256 px: 3.1 GB)


def effective_channel_order(spec: DatasetSpec, requested: str) -> str:
    """The order dataset `spec` gets: the requested one where the authors read with OpenCV, else RGB."""
    if requested not in CHANNEL_ORDERS:
        raise ReproError(f"finetune.channel_order: {requested!r} is not one of {', '.join(CHANNEL_ORDERS)}")
    return requested if spec.opencv_read else "rgb"


def effective_exif(spec: DatasetSpec, setting: str) -> bool:
    """Whether dataset `spec`'s images get their EXIF orientation applied under `finetune.exif` = `setting`."""
    if setting not in EXIF_SETTINGS:
        raise ReproError(f"finetune.exif: {setting!r} is not one of {', '.join(EXIF_SETTINGS)}")
    return setting == "always" or (setting == "authors" and spec.reader_applies_exif)


def cache_rule(spec: DatasetSpec, size: int, setting: int | str | None):
    """The decoded-image cache's resize rule for the training images (repro.datasets.cache.ShortSide) under
    `finetune.cache_short_side` = `setting`: "auto" (no crop upsampled), an int, or None (the training size)."""
    from repro.datasets.cache import ShortSide

    if setting == "auto":
        return ShortSide(None, size, spec.crop_scale[0], spec.crop_ratio)
    if setting is None:
        return ShortSide(size)
    if isinstance(setting, int) and not isinstance(setting, bool) and setting > 0:
        return ShortSide(setting)
    raise ReproError(f"finetune.cache_short_side: {setting!r} is not 'auto' or a positive number of pixels")


@dataclass(frozen=True)
class Source:
    """Where the pixels of each id of a dataset are: files relative to `root`, and the label the raw data gives."""

    root: Path
    paths: dict[str, tuple[str, ...]]
    labels: dict[str, str] | None  # None: the split file is the only label source (generic data)


def image_source(spec: DatasetSpec, data_dir: Path, split_ids: Sequence[str]) -> Source:
    """The Source of dataset `spec` in `data_dir` (raw folder of a published format, else a generic folder)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        hint = spec.fetch_hint or f"run `repro data prepare {spec.name}`"
        raise ReproError(f"{data_dir}: missing data folder for {spec.name}; {hint}")
    if spec.raw_format:
        from repro.datasets.raw import format_module

        scan = format_module(spec.name).scan(data_dir)
        if scan.problems:  # structural only (a CSV, a JSON): images are checked when they are decoded
            shown = "\n  ".join(scan.problems[:10])
            raise ReproError(f"{data_dir}: {len(scan.problems)} problem(s); run `repro data verify {spec.name}`"
                             f"\n  {shown}")
        return Source(data_dir, {r.id: r.paths for r in scan.rows}, {r.id: r.label for r in scan.rows})
    if spec.embedded:
        from repro.datasets.generic import read_labels

        labels = dict(read_labels(data_dir))
        return Source(data_dir, {i: (i,) for i in labels}, labels)
    return Source(data_dir, {i: (i,) for i in split_ids}, None)


class ImageFileDataset:
    """Decodes its image file(s) on every access (a torch map-style dataset): the path without the cache."""

    def __init__(self, root: Path, paths: Sequence[tuple[str, ...]], targets: torch.Tensor, transform: Callable,
                 channel_order: str = "rgb", ids: Sequence[str] | None = None, exif: bool = False) -> None:
        if len(paths) != len(targets):
            raise ValueError("paths and targets differ in length")
        self.root, self.paths, self.targets, self.transform = Path(root), list(paths), targets, transform
        self.channel_order, self.exif = channel_order, exif
        self.ids = list(ids) if ids is not None else [""] * len(self.paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        pixels = read_image(self.root, self.paths[index], self.channel_order, self.ids[index], self.exif)
        return self.transform(to_tensor(pixels)), self.targets[index]


class CroppedEvalDataset:
    """An eval split's images after the deterministic resize + center crop, held as uint8 (N, 3, S, S) in memory
    when they fit in EVAL_MEMORY_BYTES (normalized per item, which is cheap); else the source dataset per item."""

    def __init__(self, source, crops: torch.Tensor | None, finish: Callable) -> None:
        self.source, self.crops, self.finish, self.targets = source, crops, finish, source.targets

    @classmethod
    def from_dataset(cls, source, size: int, finish: Callable) -> CroppedEvalDataset:
        import torch

        crops = None
        if len(source) * 3 * size * size <= EVAL_MEMORY_BYTES:
            crops = torch.stack([source[i][0] for i in range(len(source))]) if len(source) else None
        return cls(source, crops, finish)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int):
        crop = self.crops[index] if self.crops is not None else self.source[index][0]
        return self.finish(crop), self.targets[index]


def encode_targets(spec: DatasetSpec, labels: Sequence[str], where: str) -> np.ndarray:
    """Class ids (N,) int64, or for a multi-label dataset multi-hot (N, C) float32 from space-separated ids."""
    index = {c: i for i, c in enumerate(spec.classes)}
    if spec.multilabel:
        y = np.zeros((len(labels), spec.num_classes), dtype=np.float32)
        for row, label in enumerate(labels):
            for token in label.split():
                if token not in index:
                    raise ReproError(f"{where}: label {label!r} has {token!r}, not one of the {spec.num_classes} "
                                     f"classes of {spec.name}")
                y[row, index[token]] = 1.0
        return y
    unknown = [label for label in labels if label not in index]
    if unknown:
        raise ReproError(f"{where}: label {unknown[0]!r} is not a class of {spec.name} "
                         f"({', '.join(spec.classes[:12])}{', ...' if spec.num_classes > 12 else ''})")
    return np.array([index[label] for label in labels], dtype=np.int64)


@dataclass
class Splits:
    """What the training loop needs: a torch dataset, targets and ids per split name."""

    datasets: dict[str, object]
    targets: dict[str, np.ndarray]
    ids: dict[str, list[str]]
    channel_order: str  # the order the images were fed in ("rgb" or "bgr")
    cache: Path | None  # the decoded-image cache of the training images, if any
    eval_cache: Path | None = None  # the evaluation splits' cache (the same folder when the rule is the size)
    exif: bool = False  # whether EXIF orientation was applied
    cache_short_side: str | None = None  # the training cache's resize rule, as meta.json records it


def checked_rows(spec: DatasetSpec, split_path: Path, data_dir: Path
                 ) -> tuple[Source, dict[str, list[tuple[str, str]]]]:
    """The image source of `spec` in `data_dir` and the split file's (id, label) rows per split, after checking
    that every id is in the data and, where the raw data labels it, with the same label."""
    from repro.splits import read_split

    rows = read_split(split_path)
    source = image_source(spec, data_dir, [r[0] for r in rows])
    problems = []
    for image_id, label, _ in rows:
        if image_id not in source.paths:
            problems.append(f"id {image_id!r} is not in {data_dir}")
        elif source.labels is not None and source.labels[image_id] != label:
            problems.append(f"id {image_id!r} has label {label!r} here, {source.labels[image_id]!r} in {data_dir}")
    if problems:
        raise ReproError(f"{split_path}: {len(problems)} row(s) disagree with the data (first: {problems[0]}); "
                         f"re-run `repro data prepare {spec.name}` or point at the data it was made from")
    by_split: dict[str, list[tuple[str, str]]] = {}
    for image_id, label, split in rows:
        by_split.setdefault(split, []).append((image_id, label))
    return source, by_split


@dataclass
class EvalSplit:
    """One split as training measured it: ids, the eval dataset (resize + center crop + normalize), targets."""

    ids: list[str]
    dataset: object
    targets: np.ndarray
    channel_order: str


def eval_split(spec: DatasetSpec, split_path: Path, data_dir: Path, split: str, size: int, mean: Sequence[float],
               std: Sequence[float], *, channel_order: str = "rgb", exif: str = "never") -> EvalSplit:
    """Split `split` of `spec` read exactly as `build_splits` reads an evaluation split (same source, channel
    order, targets and eval transform), decoding the files without the cache: what `repro eval` and
    `repro release` re-evaluate a checkpoint on."""
    import torch

    from repro.datasets.transforms import eval_geometry, finish

    order = effective_channel_order(spec, channel_order)
    source, by_split = checked_rows(spec, split_path, data_dir)
    if split not in by_split:
        raise ReproError(f"{split_path}: no rows in split {split!r}")
    ids = [i for i, _ in by_split[split]]
    y = encode_targets(spec, [label for _, label in by_split[split]], f"{split_path} (split {split})")
    files = ImageFileDataset(source.root, [source.paths[i] for i in ids], torch.from_numpy(y), eval_geometry(size),
                             order, ids, effective_exif(spec, exif))
    return EvalSplit(ids, CroppedEvalDataset.from_dataset(files, size, finish(mean, std)), y, order)


def build_splits(spec: DatasetSpec, split_path: Path, data_dir: Path, size: int, mean: Sequence[float],
                 std: Sequence[float], *, channel_order: str = "rgb", cache_root: Path | None = None,
                 progress: Callable[[int, int], None] | None = None, exif: str = "never",
                 cache_short_side: int | str | None = None) -> Splits:
    """The train, selection and report datasets of `spec` from its split file and data folder.

    With `cache_root`, every image is decoded and resized once into the decoded-image cache
    (repro.datasets.cache) and epochs read uint8 pixels from it; without, each access decodes the file at full
    resolution. The training images are cached under `cache_short_side` (`cache_rule`; None: the training size)
    and the evaluation images at the training size; one cache holds both when the two rules agree.
    `exif` is the `finetune.exif` setting (`effective_exif`). `progress(done, total)` is called while a cache is
    built.
    """
    import torch

    from repro.datasets.transforms import eval_geometry, finish, train_transform

    order = effective_channel_order(spec, channel_order)
    source, by_split = checked_rows(spec, split_path, data_dir)
    for needed in ("train", spec.select_split, spec.report_split):
        if needed not in by_split:
            raise ReproError(f"{split_path}: no rows in split {needed!r}")
    used = ["train", spec.select_split] + ([spec.report_split] if spec.report_split != spec.select_split else [])
    exif_on = effective_exif(spec, exif)
    rule = cache_rule(spec, size, cache_short_side)
    caches: dict = {}  # split -> ImageCache
    if cache_root is not None:
        from repro.datasets import cache as image_cache

        def open_cache(splits: Sequence[str], how):
            ids = list(dict.fromkeys(i for s in splits for i, _ in by_split[s]))
            return image_cache.open_or_build(Path(cache_root), source.root, ids, [source.paths[i] for i in ids],
                                             how, order, exif=exif_on, progress=progress)

        if rule == image_cache.ShortSide(size):
            caches = dict.fromkeys(used, open_cache(used, rule))
        else:  # training crops from the larger images; evaluation exactly as from the decoded files
            caches = {"train": open_cache(["train"], rule)}
            caches.update(dict.fromkeys(used[1:], open_cache(used[1:], image_cache.ShortSide(size))))
    datasets, targets, ids_out = {}, {}, {}
    for split in used:
        ids = [i for i, _ in by_split[split]]
        y = encode_targets(spec, [label for _, label in by_split[split]], f"{split_path} (split {split})")
        # the eval transform's resize and crop are deterministic: done once here, not once per epoch and config
        transform = train_transform(spec, size, mean, std) if split == "train" else eval_geometry(size)
        if caches:
            from repro.datasets.cache import CachedDataset

            cache = caches[split]
            dataset = CachedDataset(cache, [cache.position[i] for i in ids], torch.from_numpy(y), transform)
        else:
            dataset = ImageFileDataset(source.root, [source.paths[i] for i in ids], torch.from_numpy(y),
                                       transform, order, ids, exif_on)
        if split != "train":
            dataset = CroppedEvalDataset.from_dataset(dataset, size, finish(mean, std))
        datasets[split], targets[split], ids_out[split] = dataset, y, ids
    return Splits(datasets, targets, ids_out, order, caches["train"].folder if caches else None,
                  caches[used[1]].folder if caches else None, exif_on, rule.describe() if caches else None)
