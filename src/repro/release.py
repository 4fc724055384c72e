"""Release a study's best checkpoints: self-describing safetensors files and the manifest that pins them.

For each finished run folder (results/runs/MODEL/DATASET: run.json, predictions.csv, model.safetensors) the
released file holds the run's tensors unchanged plus one metadata entry, `repro`, a JSON object with the model,
dataset, classes, preprocessing (image size, mean, std, resize rule), metric and recorded value, the split and its
file's sha256, and where the run came from. One metadata key because safetensors writes several in an order that
changes from process to process, and a release must hash the same every time it is rebuilt.

The manifest (paper/checkpoints.yaml, see repro.evaluate) pins each file's sha256 and size, and states how far a
re-evaluation may land from the recorded value, and why (`tolerance`, `tolerance_reason`). For accuracy the bound
is measured from the run's own predictions. For a softmax, p1 - p2 <= z1 - z2 (the logit margin), so an image whose
two best class probabilities differ by NEAR_TIE or more changes its arg-max only if its logits move by about
NEAR_TIE / 2: far beyond float32 summation-order drift between CPUs (other SIMD widths or oneDNN kernels; about
1e-5 on logits of this size: an estimate, not measured across machines). The tolerance is (images within NEAR_TIE)
/ (images). Other metrics take the tolerance the releaser states. Exercised by `repro release`.

`repro release --archive PATH.zip` also writes the release as one zip (what a team uploads to Zenodo as a single
file): the manifest under its own name and each file under its manifest-relative path, so the manifest's relative
URLs resolve inside the unpacked archive (`repro eval --archive` reads it that way). Members are sorted by name and
stored with a fixed timestamp and permissions, so rebuilding the same release gives the same bytes.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from repro import failpoints
from repro.download import sha256_file
from repro.errors import ReproError, UsageError
from repro.evaluate import (SAFETENSORS, ManifestEntry, Preprocessing, build_checked, preprocessing_as_dict,
                            render_manifest)
from repro.results import PREDICTIONS_FILE, RUN_FILE, WEIGHTS_FILE, read_run
from repro.splits import atomic_write, remove_abandoned_temps

NEAR_TIE = 1e-3  # probability margin; see the module docstring
METADATA_KEY = "repro"
CHECKPOINT_FORMAT_VERSION = 1
ARCHIVE_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can state: members carry no build time
ARCHIVE_MODE = 0o644  # and no permissions of the machine that built them


@dataclass(frozen=True)
class RunRef:
    """A finished run folder, the split file its value was measured on, and (to re-check the value before
    releasing) the folder the run read its images from (repro.layout.data_dir)."""

    run_dir: Path
    split_file: Path
    data_dir: Path | None = None


def released_path(checkpoints_dir: Path, model: str, dataset: str) -> Path:
    """The name rule: the model's structured name is a path (models.ModelSpec.path), the dataset the file name."""
    from repro.models import MODELS

    return Path(checkpoints_dir) / MODELS[model].path / f"{dataset}.safetensors"


def near_ties(predictions: Path) -> tuple[int, int]:
    """(images whose top-2 class scores are within NEAR_TIE, images) in a run's predictions.csv."""
    try:
        with open(predictions, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        raise ReproError(f"{predictions}: missing; re-run `repro finetune` for this run") from None
    close = 0
    for row in rows:
        scores = sorted((float(v) for k, v in row.items() if k.startswith("score_")), reverse=True)
        if len(scores) >= 2 and scores[0] - scores[1] < NEAR_TIE:
            close += 1
    return close, len(rows)


def tolerance_for(metric: str, predictions: Path, stated: float | None) -> tuple[float, str]:
    if metric == "accuracy":
        close, total = near_ties(predictions)
        if total == 0:
            raise ReproError(f"{predictions}: no predictions; re-run `repro finetune` for this run")
        return close / total, (
            f"{close} of {total} report-split images have their two best class probabilities within {NEAR_TIE:g} "
            f"in the recorded predictions; flipping any other arg-max takes a logit change of about {NEAR_TIE / 2:g}, "
            "far beyond the float32 drift expected between CPUs (about 1e-5, an estimate), and each flip moves "
            f"accuracy by 1/{total}. Evaluate on CPU (GPU TF32 convolutions drift more).")
    if stated is None:
        raise ReproError(f"the tolerance of a {metric} checkpoint is not derived automatically; state one with "
                         "`repro release --tolerance VALUE`")
    return stated, f"stated by the releaser (`repro release --tolerance {stated:g}`) for the {metric} metric"


def recheck(net, record: dict, ref: RunRef, pre: Preprocessing, multilabel: bool) -> tuple[float, float]:
    """Re-evaluate the run's weights as `repro eval` will: (value, largest |probability difference| against the
    run's predictions.csv). Both measured on this machine, before anything is published."""
    import numpy as np

    from repro.evaluate import predict_scores, report_split
    from repro.metrics import METRICS

    split = report_split(record["dataset"], record["report_split"], pre, ref.data_dir, ref.split_file)
    ids, targets = split.ids, split.targets
    scores = predict_scores(net, split.dataset, multilabel)
    with open(Path(ref.run_dir) / PREDICTIONS_FILE, newline="") as handle:
        recorded = {row["id"]: row for row in csv.DictReader(handle)}
    if set(recorded) != set(ids):
        raise ReproError(f"{Path(ref.run_dir) / PREDICTIONS_FILE}: its ids are not the {record['report_split']!r} "
                         f"split of {ref.split_file}; re-run `repro finetune` for this run")
    columns = [f"score_{k}" for k in range(scores.shape[1])]
    before = np.array([[float(recorded[i][c]) for c in columns] for i in ids])
    return float(METRICS[record["metric"]](targets, scores)), float(np.abs(scores - before).max())


def export(ref: RunRef, target: Path, *, base_url: str | None = None, manifest_dir: Path,
           tolerance: float | None = None) -> ManifestEntry:
    """Write `ref`'s checkpoint to `target` with its metadata (atomic, unchanged when identical) and return its
    manifest entry. The tensors are checked against the architecture first: a release that `repro eval` could not
    load is refused here."""
    from safetensors import safe_open
    from safetensors.torch import save

    from repro.datasets import DATASETS

    run_dir = Path(ref.run_dir)
    record = read_run(run_dir / RUN_FILE)
    where = f"{run_dir / RUN_FILE}"
    if record.get("status") != "ok" or record.get("value") is None:
        raise ReproError(f"{where}: status {record.get('status')!r}, no checkpoint to release")
    model, dataset = record["model"], record["dataset"]
    spec = DATASETS[dataset]
    config = record["config"]
    weights = run_dir / WEIGHTS_FILE
    if not weights.is_file():
        raise ReproError(f"{weights}: missing; re-run `repro finetune --model {model} --dataset {dataset}`")
    with safe_open(str(weights), framework="pt", device="cpu") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
    net = build_checked(model, spec.num_classes, int(config["image_size"]), state, str(weights))
    if not Path(ref.split_file).is_file():
        raise ReproError(f"{ref.split_file}: missing split file; run `repro data prepare {dataset}`")
    pre = Preprocessing(int(config["image_size"]), tuple(config["mean"]), tuple(config["std"]),
                        channel_order=config.get("channel_order", "rgb"), exif=bool(record.get("exif_applied", False)))
    tol, reason = tolerance_for(record["metric"], run_dir / PREDICTIONS_FILE, tolerance)
    if ref.data_dir is not None:
        value, drift = recheck(net, record, ref, pre, spec.multilabel)
        if abs(value - record["value"]) > tol + 1e-12:
            raise ReproError(f"{where}: re-evaluated here, {record['metric']} is {value:.6f}, not the recorded "
                             f"{record['value']:.6f} (beyond the {tol:.4f} tolerance); not released. Was the run "
                             "made with other code or data? Re-run `repro finetune` for it")
        reason += (f" Re-evaluated at release: {record['metric']} {value:.6f}, class probabilities within "
                   f"{drift:.1e} of the recorded ones.")
    provenance = record.get("provenance") or {}
    source = {"run": str(run_dir), "git_sha": provenance.get("git_sha"), "device": record.get("device"),
              "torch": (provenance.get("libraries") or {}).get("torch"), "chosen": record.get("chosen"),
              "pretrained": record.get("pretrained")}
    meta = {"format_version": CHECKPOINT_FORMAT_VERSION, "model": model, "dataset": dataset,
            "classes": list(spec.classes), "num_classes": spec.num_classes, "metric": record["metric"],
            "value": record["value"], "split": record["report_split"], "split_file": Path(ref.split_file).name,
            "split_sha256": sha256_file(ref.split_file),
            "preprocessing": preprocessing_as_dict(pre), "source": source}
    data = save({k: v.contiguous() for k, v in state.items()},
                metadata={METADATA_KEY: json.dumps(meta, sort_keys=True)})
    target = Path(target)
    remove_abandoned_temps(target.parent)  # a killed release's temp file beside it
    if not (target.is_file() and target.read_bytes() == data):
        atomic_write(target, data)
    # relative to the manifest's folder, so a clone verifies the files wherever it lives
    here, base = target.resolve(), Path(manifest_dir).resolve()
    relative = here.relative_to(base).as_posix() if here.is_relative_to(base) else here.as_uri()
    urls = [relative] + ([f"{base_url.rstrip('/')}/{relative}"] if base_url else [])
    return ManifestEntry(model=model, dataset=dataset, urls=tuple(urls), sha256=hashlib.sha256(data).hexdigest(),
                         size=len(data), format=SAFETENSORS, split=meta["split"], split_file=meta["split_file"],
                         split_sha256=meta["split_sha256"], metric=record["metric"], value=float(record["value"]),
                         tolerance=tol, tolerance_reason=reason, preprocessing=pre, num_classes=spec.num_classes,
                         source=source)


def release(refs: Sequence[RunRef], checkpoints_dir: Path, manifest: Path, *, base_url: str | None = None,
            tolerance: float | None = None, on_done=None) -> list[ManifestEntry]:
    """Export every run in `refs` under `checkpoints_dir` and write `manifest` (atomic) listing them all.

    Every run is exported before the manifest is written, so a failure leaves the previous manifest in place.
    """
    if base_url is not None and not base_url.startswith("https://"):
        raise ReproError(f"--base-url {base_url!r}: published checkpoints must be served over https://")
    entries = []
    for ref in refs:
        entry = export(ref, released_path(checkpoints_dir, *_identity(ref)), base_url=base_url,
                       manifest_dir=Path(manifest).parent, tolerance=tolerance)
        entries.append(entry)
        failpoints.hit("release.after_export")
        if on_done is not None:
            on_done(entry)
    remove_abandoned_temps(Path(manifest).parent)
    atomic_write(manifest, render_manifest(entries))
    return entries


def _identity(ref: RunRef) -> tuple[str, str]:
    record = read_run(Path(ref.run_dir) / RUN_FILE)
    return record["model"], record["dataset"]


def read_metadata(path: Path) -> dict:
    """The `repro` metadata of a released file (safe: reads the JSON header only)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as f:
        raw = (f.metadata() or {}).get(METADATA_KEY)
    if raw is None:
        raise ReproError(f"{path}: no {METADATA_KEY!r} metadata; not a checkpoint written by `repro release`")
    return json.loads(raw)


def check_archive_target(archive: Path, out_dir: Path | None = None, manifest: Path | None = None) -> None:
    """Refuse, before anything is exported, an --archive that is not a .zip, or released files that would not lie
    under the manifest's folder (their URLs would then be absolute, and the archive could not place them)."""
    if Path(archive).suffix.lower() != ".zip":
        raise UsageError(f"--archive {archive}: the release archive is written as a zip; give a path ending in .zip")
    if out_dir is not None and manifest is not None \
            and not Path(out_dir).resolve().is_relative_to(Path(manifest).parent.resolve()):
        raise UsageError(f"--archive needs the released files under the manifest's folder "
                         f"({Path(manifest).parent}), so that its relative URLs hold inside the archive; "
                         f"--out {out_dir} is not")


def archive_member(entry: ManifestEntry) -> str:
    """The path of `entry`'s file inside a release archive: its manifest-relative URL."""
    from repro.datasets.fetch import safe_member

    relative = [url for url in entry.urls if "://" not in url]
    if not relative:
        raise ReproError(f"{entry.key}: no URL relative to the manifest ({', '.join(entry.urls)}), so a release "
                         "archive cannot place its file; release with --out under the manifest's folder")
    try:
        return safe_member(relative[0], Path("the release archive")).as_posix()
    except ReproError:
        raise ReproError(f"{entry.key}: its URL {relative[0]!r} leaves the manifest's folder, so a release archive "
                         "cannot hold its file") from None


def write_archive(entries: Sequence[ManifestEntry], manifest: Path, target: Path) -> list[str]:
    """Write the release archive `target` (a zip, atomic): `manifest` under its own file name and each entry's
    file under its manifest-relative path; returns the member names.

    Deterministic: members sorted by name, stored (safetensors do not compress), with ARCHIVE_TIME and
    ARCHIVE_MODE and no extra fields. Each file is checked against its entry's sha256 and size as it is added, so
    the archive holds what the manifest pins.
    """
    import zipfile

    check_archive_target(target)
    manifest, target = Path(manifest), Path(target)
    members: dict[str, ManifestEntry | None] = {manifest.name: None}
    for entry in entries:
        member = archive_member(entry)
        if member in members:
            raise ReproError(f"{entry.key}: archive member {member!r} is taken twice")
        members[member] = entry
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_temps(target.parent)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
            for member in sorted(members):
                path, entry = manifest.parent / member, members[member]
                try:
                    data = path.read_bytes()
                except FileNotFoundError:
                    raise ReproError(f"{path}: missing; run `repro release` again") from None
                if entry is not None and (len(data) != entry.size
                                          or hashlib.sha256(data).hexdigest() != entry.sha256):
                    raise ReproError(f"{path}: not the file {manifest} pins for {entry.key} (sha256 or size "
                                     "differs); run `repro release` again")
                info = zipfile.ZipInfo(member, date_time=ARCHIVE_TIME)
                info.compress_type = zipfile.ZIP_STORED
                info.create_system = 3  # unix, whatever the building machine: the attributes below mean the same
                info.external_attr = ARCHIVE_MODE << 16
                archive.writestr(info, data)
        failpoints.hit("release.archive_before_rename")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return sorted(members)
