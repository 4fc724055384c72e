"""The release manifest (`paper/checkpoints.yaml`): what `repro release` writes and `repro eval` trusts.

Each entry pins one released checkpoint by sha256 and size and records the metric its run reported, the split it
was measured on (with the split file's sha256) and the preprocessing. Reading it checks every field, so a malformed
or over-permissive entry (a tolerance wider than its metric's range) is one error naming the file and the entry,
before anything is downloaded. Verifying the files is repro.evaluate; writing them, repro.release.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from repro.errors import ReproError, UsageError

MANIFEST_VERSION = 1
SAFETENSORS = "safetensors"
PICKLE = "pytorch-pickle"
_SHA256_HEX = set("0123456789abcdef")


@dataclass(frozen=True)
class Preprocessing:
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: str = "Resize(image_size) + CenterCrop(image_size), RGB scaled to [0, 1], then Normalize(mean, std)"
    channel_order: str = "rgb"  # "bgr": channels reversed, as the authors' OpenCV loaders fed them (PAPER.md 4)
    exif: bool = False  # True: each file's EXIF orientation applied, as the run read it (run.json exif_applied)


@dataclass(frozen=True)
class ManifestEntry:
    """One released checkpoint, as the manifest pins it."""

    model: str
    dataset: str
    urls: tuple[str, ...]  # tried in order; relative ones are relative to the manifest's folder
    sha256: str
    size: int
    format: str  # "safetensors" or "pytorch-pickle"
    split: str  # the split the value was measured on (the dataset's report split)
    split_file: str  # its file name under data/splits
    split_sha256: str
    metric: str
    value: float
    tolerance: float
    tolerance_reason: str
    preprocessing: Preprocessing
    num_classes: int
    source: dict = field(default_factory=dict)  # provenance of the run it came from (git sha, device, ...)

    @property
    def key(self) -> str:
        return f"{self.model} on {self.dataset}"


def _entry_from(raw: dict, where: str) -> ManifestEntry:
    if not isinstance(raw, dict):
        raise ReproError(f"{where}: expected a mapping")
    try:
        pre = raw["preprocessing"]
        entry = ManifestEntry(
            model=str(raw["model"]), dataset=str(raw["dataset"]), urls=tuple(str(u) for u in raw["urls"]),
            sha256=str(raw["sha256"]), size=raw["size"], format=str(raw["format"]), split=str(raw["split"]),
            split_file=str(raw["split_file"]), split_sha256=str(raw["split_sha256"]), metric=str(raw["metric"]),
            value=float(raw["value"]), tolerance=float(raw["tolerance"]),
            tolerance_reason=str(raw["tolerance_reason"]),
            preprocessing=Preprocessing(int(pre["image_size"]), tuple(float(x) for x in pre["mean"]),
                                        tuple(float(x) for x in pre["std"]),
                                        channel_order=str(pre.get("channel_order", "rgb")),
                                        exif=pre.get("exif", False)),
            num_classes=int(raw["num_classes"]), source=dict(raw.get("source") or {}))
    except KeyError as exc:
        raise ReproError(f"{where}: missing field {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise ReproError(f"{where}: malformed field ({exc})") from None
    problems = []
    for name in ("sha256", "split_sha256"):
        value = getattr(entry, name)
        if len(value) != 64 or not set(value) <= _SHA256_HEX:
            problems.append(f"{name} {value!r} is not 64 lowercase hex digits")
    if not isinstance(entry.size, int) or entry.size <= 0:
        problems.append(f"size {entry.size!r} is not a byte count")
    from repro.datasets.loaders import CHANNEL_ORDERS

    if entry.preprocessing.channel_order not in CHANNEL_ORDERS:
        problems.append(f"preprocessing.channel_order {entry.preprocessing.channel_order!r} is not 'rgb' or 'bgr'")
    if not isinstance(entry.preprocessing.exif, bool):
        problems.append(f"preprocessing.exif {entry.preprocessing.exif!r} is not true or false")
    if entry.format not in (SAFETENSORS, PICKLE):
        problems.append(f"format {entry.format!r} is not {SAFETENSORS!r} or {PICKLE!r}")
    if not entry.urls:
        problems.append("no urls")
    if not math.isfinite(entry.tolerance) or entry.tolerance < 0 or not entry.tolerance_reason.strip():
        problems.append("tolerance must be a finite number >= 0 with a tolerance_reason")
    elif entry.tolerance > METRIC_SPAN.get(entry.metric, 1.0):
        # a tolerance wider than everything the metric can take would pass any checkpoint
        problems.append(f"tolerance {entry.tolerance} is wider than the range of {entry.metric} "
                        f"({METRIC_SPAN.get(entry.metric, 1.0):g})")
    if problems:
        raise ReproError(f"{where}: {'; '.join(problems)}")
    return entry


# Width of each metric's range (repro.metrics): fractions in [0, 1]; quadratic kappa in [-1, 1].
METRIC_SPAN = {"accuracy": 1.0, "roc_auc": 1.0, "macro_f1": 1.0, "quadratic_kappa": 2.0}


def read_manifest(path: Path) -> list[ManifestEntry]:
    """The manifest's entries; a missing or malformed manifest is one ReproError naming the file and entry."""
    from repro.inputs import load_yaml

    path = Path(path)
    if not path.exists():
        raise ReproError(f"{path}: release manifest not found; run from the repository root, pass --manifest, "
                         "or write one with `repro release`")
    document = load_yaml(path)
    if not isinstance(document, dict) or document.get("version") != MANIFEST_VERSION \
            or not isinstance(document.get("checkpoints"), list):
        raise ReproError(f"{path}: expected a mapping with version: {MANIFEST_VERSION} and a checkpoints list")
    entries, seen = [], set()
    for number, raw in enumerate(document["checkpoints"], 1):
        entry = _entry_from(raw, f"{path}: checkpoint {number}")
        if (entry.model, entry.dataset) in seen:
            raise ReproError(f"{path}: checkpoint {number}: {entry.key} is listed twice")
        seen.add((entry.model, entry.dataset))
        entries.append(entry)
    return entries


def entry_as_yaml(entry: ManifestEntry) -> dict:
    raw = asdict(entry)
    raw["urls"] = list(entry.urls)
    raw["preprocessing"] = preprocessing_as_dict(entry.preprocessing)
    return raw


def preprocessing_as_dict(pre: Preprocessing) -> dict:
    """As the manifest and the released file's metadata hold it; channel_order only when it is not rgb, so
    releases made before it was recorded keep their bytes (absent means rgb)."""
    out = {"image_size": pre.image_size, "mean": list(pre.mean), "std": list(pre.std), "resize": pre.resize}
    if pre.channel_order != "rgb":
        out["channel_order"] = pre.channel_order
    if pre.exif:  # likewise: absent means not applied
        out["exif"] = True
    return out


def render_manifest(entries: Sequence[ManifestEntry]) -> bytes:
    import yaml

    header = ("# Released fine-tuned checkpoints, written by `repro release`; verified by `repro eval --all`.\n"
              "# Each file is pinned by sha256 and size; urls are tried in order (relative ones are relative to\n"
              "# this file's folder). value is what the run recorded on the split; tolerance says how far a\n"
              "# re-evaluation may land from it, and why.\n")
    body = yaml.safe_dump({"version": MANIFEST_VERSION, "checkpoints": [entry_as_yaml(e) for e in entries]},
                          sort_keys=False, width=120, allow_unicode=True)
    return (header + body).encode()


def find_entry(entries: Sequence[ManifestEntry], model: str, dataset: str, manifest: Path) -> ManifestEntry:
    for entry in entries:
        if (entry.model, entry.dataset) == (model, dataset):
            return entry
    listed = ", ".join(e.key for e in entries) or "none"
    raise UsageError(f"{manifest} has no checkpoint for {model} on {dataset} (it lists: {listed}); without a pinned "
                     "sha256 and recorded metric there is nothing to verify against")
