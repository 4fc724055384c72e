"""The study's steps as library functions with explicit paths: prepare a dataset, fine-tune one (model, dataset).

cli.py maps the project layout onto these arguments; tests call them directly. Exercised by
`repro data prepare digits` and `repro finetune --model M --dataset D`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from repro.config import FinetuneParams
from repro.datasets import DATASETS
from repro.splits import stratified_three_way, write_split


def prepare(name: str, raw_dir: Path, out_dir: Path, split_path: Path, pins_path: Path, seed: int, *,
            repin: bool = False, counts: bool = True, skip_corrupt: bool = False) -> dict:
    """Verify the raw data, write the split file (refusing to change a pinned one) and the prepared folder: the
    digits' images for the embedded set, a small `manifest.json` for the others (what the split was made from).

    Real datasets get the authors' split rule over their published raw layout (repro.datasets.rules; `seed` is
    the embedded set's, the real rules carry the authors' seeds). A user's own dataset (repro.datasets.own) is
    re-prepared from the source and seed its spec recorded. `counts=False` skips the comparison with the
    published counts, for a deliberate subset; `skip_corrupt` leaves out rows whose image is missing or does
    not decode and lists them under "skipped".
    """
    spec = DATASETS[name]
    if spec.root:
        from repro.datasets import own

        kind, source = own.parse_source(spec.source)
        _, saved_seed = own.load_spec(own.spec_path(split_path.parent, name))
        info = own.prepare_own(kind, source, name, split_path.parent, pins_path, saved_seed, spec.image_size,
                               skip_corrupt=skip_corrupt, repin=repin, split_path=split_path)
        _write_manifest(out_dir, {**info, "source": spec.source})
        return info
    if not spec.embedded:
        from repro.datasets.raw import split_rows_skipping

        rows, skipped = split_rows_skipping(name, raw_dir, counts=counts, skip_corrupt=skip_corrupt)
        sha256 = write_split(rows, split_path, pins_path, repin=repin)
        info = {"dataset": name, "images": len(rows), "splits": dict(Counter(r[2] for r in rows)),
                "sha256": sha256, "skipped": skipped}
        _write_manifest(out_dir, {**info, "raw": str(raw_dir), "split_file": str(split_path)})
        return info
    from repro.datasets import embedded

    images, labels = embedded.verified_digits(raw_dir)
    ids = embedded.image_ids(len(labels))
    rows = stratified_three_way(ids, [str(y) for y in labels], seed)
    sha256 = write_split(rows, split_path, pins_path, repin=repin)  # refuses before anything is written
    embedded.write_digits(out_dir, images, labels)
    return {"dataset": name, "images": len(rows), "splits": dict(Counter(r[2] for r in rows)), "sha256": sha256,
            "skipped": []}


def _write_manifest(out_dir: Path, info: dict) -> None:
    """data/prepared/NAME/manifest.json: the prepare stage's output for data read from its raw folder, so the
    stage has the same outputs for every dataset and finetune reruns when the split changes."""
    import json

    from repro.splits import atomic_write

    atomic_write(Path(out_dir) / "manifest.json", (json.dumps(info, indent=2, sort_keys=True) + "\n").encode())


@dataclass
class RunOutput:
    record: dict  # the run JSON, without provenance
    predictions: list[dict]  # one row per report-split image: id, target, score_0..score_{C-1}
    state_dict: dict | None


def finetune(model: str, dataset: str, fp: FinetuneParams, data_dir: Path, split_path: Path,
             weights_lock: Path, on_epoch: Callable[[int, int, dict], None] | None = None, *,
             cache_root: Path | None = None,
             on_cache: Callable[[int, int], None] | None = None) -> RunOutput:
    """Run the lr x wd grid for one (model, dataset) and select by the selection split, as the paper does.

    `data_dir` is the raw folder of a published format, or the prepared/own folder of generic data; with
    `cache_root` images are decoded once into the decoded-image cache (repro.datasets.cache).
    Pretrained weights (fp.pretrained) are checked against their sha256 pin in `weights_lock` before loading.
    """
    import numpy as np

    from repro import models
    from repro.datasets.loaders import build_splits
    from repro.metrics import METRICS
    from repro.train import Protocol, best_config, resolve_device, train_config

    spec = DATASETS[dataset]
    model_spec = models.get_spec(model)
    size = fp.image_size or spec.image_size
    mean, std = models.normalization(model)
    data = build_splits(spec, split_path, data_dir, size, mean, std, channel_order=fp.channel_order,
                        cache_root=cache_root, progress=on_cache)
    datasets, targets = data.datasets, data.targets
    protocol = Protocol(epochs=fp.epochs, batch_size=fp.batch_size, optimizer=fp.optimizer,
                        adamw_wd_over_lr=fp.adamw_wd_over_lr, schedule=fp.schedule, seed=fp.seed,
                        device=fp.device, num_workers=fp.num_workers)
    weights_dir = Path(fp.weights_dir) if fp.weights_dir else None

    def build():
        return models.build_model(model, spec.num_classes, pretrained=fp.pretrained, image_size=size,
                                  weights_dir=weights_dir, lock_file=weights_lock)

    grid = [(lr, wd) for lr in fp.lrs for wd in fp.wds]
    results = []
    for index, (lr, wd) in enumerate(grid):
        callback = None if on_epoch is None else (lambda epoch, rec, i=index: on_epoch(i, epoch, rec))
        results.append(train_config(build, datasets, targets, protocol, lr, wd, METRICS[spec.metric],
                                    select=spec.select_split, report=spec.report_split,
                                    multilabel=spec.multilabel, on_epoch=callback))
    chosen = best_config(results)
    seconds = sum(r.train_seconds for r in results)
    images = sum(r.train_images for r in results)
    record = {
        "model": model,
        "model_display": model_spec.display,
        "imagenet_top1": model_spec.top1,
        "imagenet_top1_source": model_spec.top1_source,
        "pretrained": fp.pretrained,
        "dataset": dataset,
        "metric": spec.metric,
        "select_split": spec.select_split,
        "report_split": spec.report_split,
        "status": "ok" if chosen is not None else "diverged",
        "value": None if chosen is None else results[chosen].report_value,
        "select_value": None if chosen is None else results[chosen].select_value,
        "chosen": None if chosen is None else {"lr": results[chosen].lr, "wd": results[chosen].wd,
                                               "epoch": results[chosen].best_epoch},
        "configs": [{"lr": r.lr, "wd": r.wd, "diverged": r.diverged, "best_epoch": r.best_epoch,
                     "curve": r.curve} for r in results],
        "config": {"image_size": size, "mean": list(mean), "std": list(std), "grid": len(grid),
                   **{k: getattr(fp, k) for k in ("epochs", "batch_size", "optimizer", "adamw_wd_over_lr",
                                                   "schedule", "seed", "lrs", "wds")},
                   "channel_order": data.channel_order},
        "device": str(resolve_device(fp.device)),
        "train_seconds": round(seconds, 3),
        "train_images_per_second": round(images / seconds, 1) if seconds else None,
    }
    predictions = []
    if chosen is not None:
        scores = results[chosen].report_scores
        for image_id, y, row in zip(data.ids[spec.report_split], targets[spec.report_split], scores):
            # multi-label targets are written as their space-separated label ids
            target = " ".join(str(k) for k in np.flatnonzero(y)) if spec.multilabel else int(y)
            predictions.append({"id": image_id, "target": target,
                                **{f"score_{k}": float(v) for k, v in enumerate(row)}})
    return RunOutput(record, predictions, None if chosen is None else results[chosen].state_dict)
