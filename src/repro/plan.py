"""The study's plan before it runs, and its measured compute after: pure functions over Params and run records.

`resolve_plan` spells out every element of the fine-tuning protocol (PAPER.md section 4) as the code will apply it,
per dataset (loss, splits, augmentation, size) and per model (normalization, head, input size); `estimate` turns
the plan plus a table of measured throughput into runs, images processed and device-hours; `compute_report` sums
what finished runs recorded. Exercised by `repro finetune --dry-run` and `repro plan`.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from repro.errors import ReproError

if TYPE_CHECKING:  # not at run time: benchmarks/gpu_check.py imports this module where pydantic is not installed
    from repro.config import Params

# Images per split for planning before a dataset is prepared, from the published counts (PAPER.md section 3 and
# repro.datasets.<name>.PUBLISHED); the 20% hold-out rule rounds per class, so APTOS/Cassava/EuroSAT are within a
# few images. CCT-20 counts include the 'empty' images the loader drops. Melanoma has no published count.
PUBLISHED_SPLITS: dict[str, dict[str, int] | None] = {
    "cct20": {"train": 13553, "cis_val": 3484, "cis_test": 15827},
    "aptos": {"train": 2930, "heldout": 732},
    "hpa": {"train": 22582, "val": 5664, "test_val": 2826},
    "melanoma": None,
    "cassava": {"train": 17118, "heldout": 4279},
    "eurosat": {"train": 21600, "heldout": 5400},
}

THROUGHPUT_COLUMNS = ("model", "device", "image_size", "batch_size", "amp", "train_img_s", "eval_img_s", "source")


def _channel_order(fp, dataset: str) -> str:
    from repro.datasets import DATASETS
    from repro.datasets.loaders import effective_channel_order

    order = effective_channel_order(DATASETS[dataset], fp.channel_order)
    return "bgr (the authors' cv2.imread quirk)" if order == "bgr" else "rgb"


def resolve_plan(p: Params, models: Sequence[str] | None = None, datasets: Sequence[str] | None = None) -> dict:
    """Every protocol element as it will be applied; imports torch/torchvision/timm only for the normalization."""
    from repro import models as zoo
    from repro.datasets import DATASETS
    from repro.study import STRICT_SPLIT
    from repro.datasets.loaders import cache_rule, effective_exif
    from repro.train import STEP_MILESTONES, resolve_device, resolve_precision

    fp = p.finetune
    models = list(models or fp.models)
    datasets = list(datasets or fp.datasets)
    device = resolve_device(fp.device)
    dtype = resolve_precision(fp.precision, device)
    if fp.optimizer == "adamw":
        optimizer = ("AdamW, weight_decay handed to torch = wd / lr (the authors' quirk)" if fp.adamw_wd_over_lr
                     else "AdamW, weight_decay = wd")
    else:
        optimizer = "SGD momentum 0.9 nesterov, weight_decay = wd"
    schedule = (f"cosine annealing, T_max = {fp.epochs} epochs, stepped once per epoch" if fp.schedule == "cosine"
                else f"step: lr x0.1 at epochs {', '.join(map(str, STEP_MILESTONES))}")
    selection = ("per config its best selection-split epoch" if fp.selection == "best_epoch"
                 else "per config its last epoch")
    protocol = {
        "profile": p.profile,
        "optimizer": optimizer,
        "lr grid": list(fp.lrs),
        "wd grid": list(fp.wds),
        "configs per run": len(fp.lrs) * len(fp.wds),
        "schedule": schedule,
        "epochs": fp.epochs,
        "batch size": fp.batch_size,
        "selection": f"{selection}; the config with the best score (first on ties); report metric read at that "
                     "epoch; a config whose loss becomes non-finite stops there and is recorded as diverged, and its "
                     "best epoch before that stays selectable (as in the authors' loop); one that diverges in its "
                     "first epoch has no epoch and is never chosen",
        "protocol": ("paper: select on the dataset's selection split (the reported split itself for APTOS, "
                     "Cassava, EuroSAT, Melanoma)" if fp.protocol == "paper" else
                     f"strict: select on {STRICT_SPLIT}, a stratified {fp.strict_val_fraction:g} of train "
                     f"(seed {fp.seed}), never on the reported split"),
        "init": "ImageNet-pretrained weights, sha256-verified" if fp.pretrained else "random init",
        "seed": fp.seed,
        "device": str(device),
        "precision": (f"{fp.precision}: " + ("bf16 autocast" if dtype is not None else "fp32, no autocast")
                      + ("" if fp.precision == "fp32" or dtype is not None else f" (bf16 autocasts on CUDA only, "
                                                                                 f"this is {device})")),
        "normalization": (f"{fp.normalization}: " + ("the ImageNet mean/std for every model (the authors')"
                                                     if fp.normalization == "imagenet"
                                                     else "each weight file's own mean/std")),
        "fixed input size": (f"{fp.fixed_input_size}: " + (
            "a model whose patch embedding fixes its input size is built without img_size and trained and "
            "evaluated at its own size (the authors')" if fp.fixed_input_size == "authors" else
            "such a model is built at the dataset's size with resampled position embeddings")),
        "cache short side": (f"{fp.cache_short_side}: " + (
            "training images cached at the smallest shorter side at which no RandomResizedCrop is upsampled "
            "(never above the image's own)" if fp.cache_short_side == "auto" else
            f"training images cached at shorter side {fp.cache_short_side} (never upscaled)")),
        "exif": (f"{fp.exif}: " + {"authors": "EXIF orientation applied where the authors' cv2.imread applied it",
                                   "never": "EXIF orientation never applied",
                                   "always": "EXIF orientation always applied"}[fp.exif]),
        "memory format": "channels_last" if fp.channels_last else "contiguous",
        "torch.compile": fp.compile,
        "deterministic kernels": fp.deterministic,
        "data loader workers": fp.num_workers,
    }
    rows = []
    for name in datasets:
        spec = DATASETS[name]
        size = fp.image_size or spec.image_size
        flips = [f for f, on in (("horizontal flip", spec.hflip), ("vertical flip", spec.vflip)) if on]
        rule = cache_rule(spec, size, fp.cache_short_side)
        square = rule.side(1 << 20, 1 << 20)  # the side a large square image is cached at
        rows.append({
            "dataset": name,
            "classes": spec.num_classes,
            "loss": "BCE with logits (multi-label, multi-hot targets)" if spec.multilabel else "cross-entropy",
            "metric": spec.metric,
            "select on": STRICT_SPLIT if fp.protocol == "strict" else spec.select_split,
            "report": spec.report_split,
            "image size": size,
            "train transform": f"RandomResizedCrop({size}, scale={spec.crop_scale}, "
                               f"ratio=({spec.crop_ratio[0]:.4g}, {spec.crop_ratio[1]:.4g}))"
                               + "".join(f" + {f}" for f in flips),
            "training images": f"cached at shorter side {square} for a square image ({rule.describe()}); "
                               "smaller images as they are",
            "eval transform": f"Resize({size}) + CenterCrop({size})",
            "channel order": _channel_order(fp, name),
            "fixed-input models": ", ".join(
                f"{m} at {zoo.input_size(m, size, fp.fixed_input_size)[0]}" for m in models
                if zoo.MODELS[m].fixed_input_size) or "none in this plan",
            "EXIF orientation": ("applied" if effective_exif(spec, fp.exif) else "not applied")
                                + (" (the authors read with cv2.imread)" if spec.reader_applies_exif
                                   else " (the authors read with PIL)" if spec.raw_format else ""),
        })
    model_rows = []
    for name in models:
        spec = zoo.MODELS[name]
        mean, std = zoo.normalization(name, fp.normalization)
        sizes = sorted({zoo.input_size(name, fp.image_size or DATASETS[d].image_size, fp.fixed_input_size)[0]
                        for d in datasets})
        fixed = ("" if not spec.fixed_input_size else " (built without img_size: its own size, train and eval)"
                 if fp.fixed_input_size == "authors" else " (built at that size, position embeddings resampled)")
        model_rows.append({
            "model": name,
            # what the run will record: a top-1 only for a run that loads ImageNet weights (repro.study.init_record)
            "ImageNet top-1": spec.top1 if fp.pretrained and spec.has_weights else None,
            "init": "ImageNet weights, sha256-verified" if fp.pretrained and spec.has_weights else "random init",
            "image size": ", ".join(map(str, sizes)) + fixed,
            "normalization": f"mean {[round(m, 4) for m in mean]}, std {[round(s, 4) for s in std]}",
            "head": (("timm classifier reset to" if spec.library == "timm" else f"{spec.head} replaced by")
                     + (" pool + linear" if spec.head_kind == "pool_linear" else " a new layer of its kind")
                     + " with the dataset's class count"),
        })
    grid = len(fp.lrs) * len(fp.wds)
    return {"profile": p.profile, "protocol": protocol, "datasets": rows, "models": model_rows,
            "runs": len(models) * len(datasets), "grid": grid, "fine_tunes": len(models) * len(datasets) * grid,
            "fidelity": fidelity_marks(fp)}


def fidelity_marks(fp) -> list[dict]:
    """Every protocol element of repro.fidelity with this plan's value and a mark where it differs from the authors'
    code (`≠ authors: ...`) or no source settles it (`? unknown: ...`)."""
    from repro.fidelity import marks

    return marks(fp)


def fidelity_table(plan: dict):
    """The dry run's fidelity table (a rich Table): element, key, this plan's value, the authors' lines, mark."""
    from rich.markup import escape
    from rich.table import Table

    from repro.fidelity import AUTHORS_COMMIT

    table = Table(title=f"against the authors' code (imagenet-applications-transfer at {AUTHORS_COMMIT[:8]}); "
                        f"{sum(r['mark'] != 'same' for r in plan['fidelity'])} element(s) marked")
    for column in ("element", "key", "value", "authors", "mark"):
        table.add_column(column, overflow="fold")
    for row in plan["fidelity"]:
        style = "" if row["mark"] == "same" else ("yellow" if row["mark"].startswith("?") else "red")
        table.add_row(*(escape(row[c]) for c in ("element", "key", "value", "authors", "mark")), style=style)
    return table


def split_sizes(dataset: str, split_file: Path | None) -> tuple[dict[str, int] | None, str]:
    """Images per split: counted from the split file when it exists, else the published counts."""
    if split_file is not None and Path(split_file).is_file():
        from collections import Counter

        from repro.splits import read_split

        return dict(Counter(row[2] for row in read_split(split_file))), str(split_file)
    counts = PUBLISHED_SPLITS.get(dataset)
    return (dict(counts), "published counts") if counts else (None, "unknown until prepared")


def read_throughput(path: Path) -> list[dict]:
    """Measured images/s (benchmarks/throughput.csv, written by benchmarks/finetune_throughput.py --table on CPU and
    benchmarks/gpu_check.py on a GPU)."""
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in THROUGHPUT_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ReproError(f"{path}: missing columns {missing}")
            rows = list(reader)
    except FileNotFoundError:
        raise ReproError(f"{path}: missing; measure with `python benchmarks/finetune_throughput.py --table`") from None
    for number, row in enumerate(rows, 2):
        try:
            row["image_size"] = int(row["image_size"])
            row["train_img_s"], row["eval_img_s"] = float(row["train_img_s"]), float(row["eval_img_s"])
        except ValueError:
            raise ReproError(f"{path}:{number}: image_size and img/s must be numbers") from None
    return rows


def measured_devices(table: Sequence[dict], device: str, path: Path) -> None:
    """A device kind the table holds no row for cannot be estimated: say so in one line, naming those it holds."""
    kinds = sorted({r["device"] for r in table})
    if device not in kinds:
        raise ReproError(f"{path}: no throughput measured on device kind {device!r} (measured: "
                         f"{', '.join(kinds) or 'none'}); on such a device run `python benchmarks/gpu_check.py` "
                         "(GPU) or `python benchmarks/finetune_throughput.py --table` (CPU) first")


def throughput_precision(precision: str, device: str) -> str:
    """The throughput table's `amp` column (bf16 | off) the study would train with on a device kind under
    `finetune.precision`: bf16 on CUDA (repro.train.resolve_precision enables it on any bf16-capable GPU), fp32
    ("off") for fp32 and on every other device."""
    return "bf16" if precision == "bf16" and device.startswith("cuda") else "off"


def _rate(table: Sequence[dict], model: str, device: str, size: int, amp: str | None = None) -> dict | None:
    """The measurement for (model, device kind), the nearest image size scaled by pixel count; rows of the given
    `amp` are preferred where the table has any for this model and device."""
    rows = [r for r in table if r["model"] == model and r["device"] == device]
    if not rows:
        return None
    rows = [r for r in rows if r.get("amp") == amp] or rows
    row = min(rows, key=lambda r: abs(r["image_size"] - size))
    scale = (row["image_size"] / size) ** 2
    return {"train": row["train_img_s"] * scale, "eval": row["eval_img_s"] * scale, "row": row}


def estimate(plan: dict, sizes: dict[str, tuple[dict[str, int] | None, str]], table: Sequence[dict],
             device: str, amp: str | None = None) -> dict:
    """Images processed and device-hours per (model, dataset) and in total.

    Per run: configs x epochs x (train images at the train rate + selection and report images at the eval rate).
    Throughput comes from `table` for `device` (e.g. "cuda-h200", "cpu"), rows of precision `amp` ("bf16" or
    "off") first; an unmeasured model gives no hours.
    """
    epochs, grid = plan["protocol"]["epochs"], plan["grid"]
    rows = []
    for m in plan["models"]:
        for d in plan["datasets"]:
            counts, source = sizes[d["dataset"]]
            if counts is None:
                rows.append({"model": m["model"], "dataset": d["dataset"], "images": None, "hours": None,
                             "note": source})
                continue
            evaluated = sum(counts.get(s, 0) for s in {d["select on"], d["report"]})
            train = counts.get("train", 0)
            # strict: the carved selection split is part of train, so the total per epoch stays the same
            images = grid * epochs * (train + evaluated)
            rate = _rate(table, m["model"], device, d["image size"], amp)
            hours = None if rate is None else grid * epochs * (train / rate["train"] + evaluated / rate["eval"]) / 3600
            rows.append({"model": m["model"], "dataset": d["dataset"], "images": images, "hours": hours,
                         "note": source if rate else f"{source}; no throughput measured on {device}"})
    known = [r["hours"] for r in rows if r["hours"] is not None]
    return {"rows": rows, "images": sum(r["images"] or 0 for r in rows),
            "hours": sum(known), "unmeasured": sum(1 for r in rows if r["hours"] is None)}


def compute_report(records: Iterable[dict]) -> dict:
    """Measured compute of finished runs (run.json): train seconds, wall seconds and images, per model, per
    dataset and in total, with the devices that did the work."""
    per_model: dict[str, dict] = {}
    per_dataset: dict[str, dict] = {}
    total = {"runs": 0, "train_seconds": 0.0, "wall_seconds": 0.0, "train_images": 0}
    devices: set[str] = set()
    for r in records:
        devices.add(r.get("device", "?"))
        for bucket in (per_model.setdefault(r["model"], dict.fromkeys(total, 0)),
                       per_dataset.setdefault(r["dataset"], dict.fromkeys(total, 0)), total):
            bucket["runs"] += 1
            bucket["train_seconds"] += r.get("train_seconds") or 0.0
            bucket["wall_seconds"] += r.get("wall_seconds") or 0.0
            bucket["train_images"] += r.get("train_images") or 0
    return {"per_model": per_model, "per_dataset": per_dataset, "total": total, "devices": sorted(devices)}
