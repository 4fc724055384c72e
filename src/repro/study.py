"""The study's steps as library functions with explicit paths: prepare a dataset, fine-tune one (model, dataset).

cli.py maps the project layout onto these arguments; tests call them directly. Exercised by
`repro data prepare digits` and `repro finetune --model M --dataset D`.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from repro.config import FinetuneParams
from repro.errors import ReproError
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
    from repro import jsonfile
    from repro.splits import atomic_write

    atomic_write(Path(out_dir) / "manifest.json", jsonfile.dumps(info, sort_keys=True))


STRICT_SPLIT = "train_holdout"  # the selection split `protocol: strict` carves out of train


def carve_selection(rows: list[tuple[str, str, str]], fraction: float, seed: int
                    ) -> tuple[list[tuple[str, str, str]], dict]:
    """Move a stratified, seeded `fraction` of the train rows into STRICT_SPLIT (protocol: strict).

    Stratified by the label string; multi-label rows (HPA: space-separated ids) fall back to their first label,
    and any label with fewer than two train rows to a plain seeded shuffle. Returns the new rows and a record of
    what was done (fraction, seed, stratification, count and the sha256 of the carved ids).
    """
    import hashlib

    from sklearn.model_selection import train_test_split

    train = [i for i, row in enumerate(rows) if row[2] == "train"]
    if len(train) < 4:
        raise ReproError(f"protocol strict: only {len(train)} train rows, too few to carve a selection split")
    labels = [rows[i][1] for i in train]
    by = "label"
    if min(Counter(labels).values()) < 2:
        labels, by = [label.split()[0] if label.split() else label for label in labels], "first label"
    if min(Counter(labels).values()) < 2:
        labels, by = None, "none (a class has fewer than 2 train rows)"
    _, held = train_test_split(train, test_size=fraction, random_state=seed, stratify=labels)
    held_set = set(held)
    out = [(r[0], r[1], STRICT_SPLIT if i in held_set else r[2]) for i, r in enumerate(rows)]
    ids = sorted(rows[i][0] for i in held_set)
    info = {"split": STRICT_SPLIT, "fraction": fraction, "seed": seed, "stratified_by": by, "images": len(ids),
            "ids_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest()}
    return out, info


@dataclass
class RunOutput:
    record: dict  # the run JSON, without provenance
    predictions: list[dict]  # one row per report-split image: id, target, score_0..score_{C-1}
    state_dict: dict | None
    extra_files: dict[str, bytes] = field(default_factory=dict)  # e.g. the strict selection split's ids


def resolved_config(model: str, dataset: str, fp: FinetuneParams) -> dict:
    """The run's resolved config as run.json records it; a saved state or a finished run under another one is
    not reused."""
    from repro import ddp, models
    from repro.datasets.loaders import effective_channel_order

    spec = DATASETS[dataset]
    mean, std = models.normalization(model, fp.normalization)
    size, _ = models.input_size(model, fp.image_size or spec.image_size, fp.fixed_input_size)
    # the fidelity switches (docs/fidelity.md) as set, so a run under another value is another run
    keys = ("epochs", "batch_size", "optimizer", "adamw_wd_over_lr", "schedule", "seed", "lrs", "wds", "protocol",
            "selection", "precision", "channels_last", "compile", "deterministic", "pretrained", "normalization",
            "fixed_input_size", "cache_short_side", "exif")
    config = {"image_size": size, "mean": list(mean), "std": list(std),
              "grid": len(fp.lrs) * len(fp.wds), **{k: getattr(fp, k) for k in keys},
              "channel_order": effective_channel_order(spec, fp.channel_order)}
    if fp.protocol == "strict":
        config["strict_val_fraction"] = fp.strict_val_fraction
    world = ddp.current().world
    if world > 1:  # a DDP run (repro.ddp) is reproducible against runs with as many processes only
        config["ddp_world_size"] = world
    import json

    return json.loads(json.dumps(config))  # as run.json will hold it (lists, not tuples), so the two compare


def init_record(model_spec, pretrained: bool, weights_lock: Path | None, weights_dir: Path | None) -> dict:
    """What run.json says about the run's initialisation. A run carries an ImageNet top-1 only when it loaded those
    ImageNet weights (`pretrained` and an entry that has weights), together with the sha256 of the file it loaded
    (verified against the lock by `weights.locate` before loading); otherwise `imagenet_top1` is None and the run is
    a random-init run, which analysis and Figure 1 never place on the ImageNet axis."""
    from repro import weights

    if not (pretrained and model_spec.has_weights):
        why = ("the entry names no ImageNet weights" if not model_spec.has_weights
               else "finetune.pretrained is false")
        return {"imagenet_top1": None, "imagenet_top1_source": f"none: random init ({why})", "init": "random",
                "weights": None}
    entry = weights.lock_entry(model_spec, weights_lock)
    path = weights.locate(model_spec, weights_dir, weights_lock)
    return {"imagenet_top1": model_spec.top1, "imagenet_top1_source": model_spec.top1_source, "init": "imagenet",
            "weights": {"key": model_spec.weights_key, "file": path.name,
                        "sha256": entry.sha256 or weights.sha256_file(path), "pinned": entry.sha256 is not None,
                        "source": weights.wheel_label(model_spec) or entry.url}}


def finetune(model: str, dataset: str, fp: FinetuneParams, data_dir: Path, split_path: Path,
             weights_lock: Path, on_epoch: Callable[[int, int, dict], None] | None = None, *,
             cache_root: Path | None = None,
             on_cache: Callable[[int, int], None] | None = None,
             state_dir: Path | None = None) -> RunOutput:
    """Run the lr x wd grid for one (model, dataset) and select by the selection split, as the paper does.

    `data_dir` is the raw folder of a published format, or the prepared/own folder of generic data; with
    `cache_root` images are decoded once into the decoded-image cache (repro.datasets.cache).
    Pretrained weights (fp.pretrained) are checked against their sha256 pin in `weights_lock` before loading.
    With `state_dir` the grid saves its state there after every epoch and resumes from it (repro.train.run_grid).
    """
    import tempfile

    import numpy as np

    from repro import ddp, models
    from repro.datasets.loaders import build_splits
    from repro.metrics import METRICS
    from repro.splits import read_split, render
    from repro.state import StateStore, fingerprint
    from repro.train import Protocol, resolve_device, resolve_precision, run_grid

    spec = DATASETS[dataset]
    model_spec = models.get_spec(model)
    weights_dir = Path(fp.weights_dir) if fp.weights_dir else None
    # Located and verified here, so a missing or altered weight file stops the run before the decoded-image cache is
    # built (minutes on a real dataset); build_model locates it again per config (its hash is not recomputed:
    # repro.weights._VERIFIED).
    init = init_record(model_spec, fp.pretrained, weights_lock, weights_dir)
    config = resolved_config(model, dataset, fp)
    size = config["image_size"]
    mean, std = tuple(config["mean"]), tuple(config["std"])
    extra_files: dict[str, bytes] = {}
    selection = None
    with tempfile.TemporaryDirectory(prefix="repro-split-") as temp:
        if fp.protocol == "strict":  # select on a slice of train: a carved copy of the split file, same loaders
            from dataclasses import replace

            carved, selection = carve_selection(read_split(split_path), fp.strict_val_fraction, fp.seed)
            split_path = Path(temp) / split_path.name
            split_path.write_bytes(render(carved))
            extra_files["selection_split.csv"] = render([r for r in carved if r[2] == STRICT_SPLIT])
            spec = replace(spec, select_split=STRICT_SPLIT)
        dist = ddp.current()
        if dist.active and not dist.main:
            ddp.barrier()  # rank 0 builds the decoded-image cache; the others then open it
        data = build_splits(spec, split_path, data_dir, size, mean, std, channel_order=fp.channel_order,
                            cache_root=cache_root, progress=on_cache if dist.main else None, exif=fp.exif,
                            cache_short_side=fp.cache_short_side)
        if dist.active and dist.main:
            ddp.barrier()
    datasets, targets = data.datasets, data.targets
    protocol = Protocol(epochs=fp.epochs, batch_size=fp.batch_size, optimizer=fp.optimizer,
                        adamw_wd_over_lr=fp.adamw_wd_over_lr, schedule=fp.schedule, seed=fp.seed,
                        device=fp.device, num_workers=fp.num_workers, selection=fp.selection, precision=fp.precision,
                        channels_last=fp.channels_last, compile=fp.compile, deterministic=fp.deterministic)

    _, build_size = models.input_size(model, fp.image_size or spec.image_size, fp.fixed_input_size)

    def build():
        return models.build_model(model, spec.num_classes, pretrained=fp.pretrained, image_size=build_size,
                                  weights_dir=weights_dir, lock_file=weights_lock)

    grid = [(lr, wd) for lr in fp.lrs for wd in fp.wds]
    identity = fingerprint({"model": model, "dataset": dataset, "config": config, "selection": selection})
    with StateStore(state_dir, write=dist.main) if state_dir is not None else contextlib.nullcontext() as store:
        out = run_grid(build, datasets, targets, protocol, grid, METRICS[spec.metric], select=spec.select_split,
                       report=spec.report_split, multilabel=spec.multilabel, store=store, identity=identity,
                       on_epoch=on_epoch)
    results, chosen = out.configs, out.chosen
    seconds, images = out.train_seconds, out.train_images
    device = resolve_device(fp.device)
    record = {
        "model": model,
        "model_display": model_spec.display,
        **init,
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
        "config": config,
        "device": str(device),
        # what the run actually computed in (finetune.precision bf16 is fp32 on a CPU) and how its images were read
        "precision_used": "fp32" if resolve_precision(fp.precision, device) is None else "bf16",
        "exif_applied": data.exif,
        "train_cache": data.cache_short_side,
        "train_seconds": round(seconds, 3),
        "train_images": images,
        "train_images_per_second": round(images / seconds, 1) if seconds else None,
    }
    if selection is not None:
        record["strict_selection"] = selection
    if out.resumed_from is not None:
        record["resumed_from"] = out.resumed_from
    predictions = []
    if chosen is not None:
        for image_id, y, row in zip(data.ids[spec.report_split], targets[spec.report_split],
                                   out.report_scores):
            # multi-label targets are written as their space-separated label ids
            target = " ".join(str(k) for k in np.flatnonzero(y)) if spec.multilabel else int(y)
            predictions.append({"id": image_id, "target": target,
                                **{f"score_{k}": float(v) for k, v in enumerate(row)}})
    return RunOutput(record, predictions, out.state_dict, extra_files)


def state_dir_for(run_dir: Path) -> Path:
    """Where a run keeps its resumable state: a sibling of the run folder, so that `dvc repro` (which empties a
    stage's outs before running it) never deletes the state of an interrupted run, and the run folder holds only
    finished results."""
    run_dir = Path(run_dir)
    return run_dir.with_name(run_dir.name + ".state")


def finished_record(run_dir: Path, model: str, dataset: str, fp: FinetuneParams) -> dict | None:
    """The run.json of a finished run made with the same resolved config, else None (absent, broken or other)."""
    import json

    from repro.results import RUN_FILE, init_problem

    try:
        record = json.loads((Path(run_dir) / RUN_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return None
    same = (record.get("model"), record.get("dataset"), record.get("config")) == (
        model, dataset, resolved_config(model, dataset, fp)) and init_problem(record) is None
    return record if same else None


def finetune_to_dir(model: str, dataset: str, fp: FinetuneParams, data_dir: Path, split_path: Path,
                    weights_lock: Path, run_dir: Path, on_epoch: Callable[[int, int, dict], None] | None = None, *,
                    force: bool = False, cache_root: Path | None = None,
                    on_cache: Callable[[int, int], None] | None = None) -> tuple[str, dict]:
    """Fine-tune into `run_dir`, resuming from its state folder; a finished run with the same config is skipped.

    Returns ("skipped" | "done", run record). The run folder's files are written atomically with run.json last,
    then the state folder is removed; temp files a kill left behind are removed first. In a DDP run (repro.ddp)
    every rank trains and rank 0 alone writes.
    """
    import shutil
    import time

    from repro import ddp, failpoints
    from repro.results import provenance, write_run
    from repro.splits import atomic_write
    from repro.state import cleanup_temp_files

    main = ddp.current().main
    run_dir = Path(run_dir)
    state_dir = state_dir_for(run_dir)
    if main:
        cleanup_temp_files(run_dir)
    if not force:
        record = finished_record(run_dir, model, dataset, fp)
        if record is not None:
            if main:
                shutil.rmtree(state_dir, ignore_errors=True)  # a kill between run.json and this removal left it
            return "skipped", record
    started = time.perf_counter()
    output = finetune(model, dataset, fp, data_dir, split_path, weights_lock, on_epoch, cache_root=cache_root,
                      on_cache=on_cache, state_dir=state_dir)
    record = {**output.record, "wall_seconds": round(time.perf_counter() - started, 3), "provenance": provenance()}
    if not main:
        return "done", record
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run.json").unlink(missing_ok=True)  # extra files first, so a kill never leaves run.json beside them
    for name, data in output.extra_files.items():
        atomic_write(run_dir / name, data)
    write_run(run_dir, record, output.predictions, output.state_dict)
    failpoints.hit("study.after_run_written")
    shutil.rmtree(state_dir, ignore_errors=True)
    return "done", record
