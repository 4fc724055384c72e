"""A user's own images as a dataset of the study: `repro data prepare folder:PATH` or `repro data prepare csv:PATH`.

Two input forms:
- `folder:PATH`: one sub-folder per class (`PATH/<class>/.../<image>`), images found recursively with the
  extensions torchvision's ImageFolder accepts; other files are ignored. The id is the path relative to PATH.
- `csv:PATH`: a CSV with columns `path,label` (others ignored); `path` relative to the CSV's folder (or
  absolute), `label` any class name. The id is the `path` value.

Both go through the same pipeline as the six datasets: every row checked (missing file, image that does not
decode, duplicate path, empty label, a class with fewer than 5 images), all problems listed in one error naming
file and row; or, with `--skip-corrupt`, those rows dropped and listed in a report. The rest is split 60/20/20
stratified by class with a recorded seed (repro.splits.stratified_three_way), written to the pinned split file
`data/splits/NAME.csv`.

How the dataset gets a name and a spec: NAME is `--name`, or the folder's (CSV's) name, lower-cased, other
characters than a-z 0-9 _ - replaced by '-'; it may not shadow a built-in dataset. Prepare writes
`data/splits/NAME.spec.json` (commit it with the split file): the DatasetSpec (classes in sorted order, accuracy,
select on val, report on test, the image size, horizontal flip) with its source, root folder and seed. Every
`repro` verb registers the saved specs at start, so `repro finetune --dataset NAME` and params.yaml's dataset
lists accept NAME like a built-in one; `repro data prepare NAME` re-runs from the recorded source.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from repro.datasets import DATASETS, DatasetSpec
from repro.datasets.images import walk_images
from repro.datasets.raw import RawRow, row_problems
from repro import jsonfile
from repro.errors import ReproError, UsageError

KINDS = ("folder", "csv")
MIN_PER_CLASS = 5  # a stratified 60/20/20 split puts at least one image of each class in each split
SPEC_SUFFIX = ".spec.json"
SPLIT_FRACTIONS = (0.6, 0.2, 0.2)


def parse_source(text: str) -> tuple[str, Path] | None:
    """('folder' | 'csv', path) for 'folder:PATH' / 'csv:PATH'; None for a plain dataset name."""
    kind, sep, path = text.partition(":")
    if not sep or kind not in KINDS:
        return None
    if not path:
        raise UsageError(f"{text!r}: give a path after '{kind}:'")
    return kind, Path(path)


def default_name(path: Path) -> str:
    stem = Path(path).resolve().stem if Path(path).suffix.lower() == ".csv" else Path(path).resolve().name
    return re.sub(r"[^a-z0-9_-]+", "-", stem.lower()).strip("-") or "own"


@dataclass
class OwnScan:
    root: Path  # ids are relative to it
    rows: list[RawRow] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # structural: no way to skip them
    skippable: list[tuple[RawRow | None, str]] = field(default_factory=list)  # row-level


def scan_folder(path: Path) -> OwnScan:
    path = Path(path)
    result = OwnScan(path.resolve())
    if not path.is_dir():
        result.problems.append(f"{path}: not a folder (folder:PATH wants one sub-folder per class)")
        return result
    classes = sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        result.problems.append(f"{path}: no class sub-folders (expected {path}/<class>/<image>)")
    for name in classes:
        for file in walk_images(path / name):
            image_id = file.relative_to(path).as_posix()
            result.rows.append(RawRow(image_id, name, (image_id,)))  # the path names the row
    return result


def scan_csv(path: Path) -> OwnScan:
    path = Path(path)
    result = OwnScan(path.resolve().parent)
    if not path.is_file():
        result.problems.append(f"{path}: missing file (csv:PATH wants a CSV with columns path,label)")
        return result
    import io

    from repro.inputs import read_text

    with io.StringIO(read_text(path), newline="") as handle:
        reader = csv.DictReader(handle)
        repeated = sorted({c for c in reader.fieldnames or [] if (reader.fieldnames or []).count(c) > 1})
        if repeated:
            result.problems.append(f"{path}:1: column {repeated[0]!r} appears more than once in the header")
            return result
        missing = [c for c in ("path", "label") if c not in (reader.fieldnames or [])]
        if missing:
            result.problems.append(f"{path}: missing column(s) {', '.join(missing)} (found {reader.fieldnames}); "
                                   "expected a header path,label")
            return result
        seen: dict[str, int] = {}
        for line, record in enumerate(reader, 2):
            where = f"{path.name}:{line}"
            image, label = (record["path"] or "").strip(), (record["label"] or "").strip()
            row = RawRow(image, label, (image,), where=where)
            if not image or not label:
                result.skippable.append((None, f"{path}:{line}: empty {'path' if not image else 'label'}"))
            elif image in seen:
                result.skippable.append((row, f"{path}:{line}: duplicate path {image!r} (first on line "
                                              f"{seen[image]})"))
            else:
                seen[image] = line
                result.rows.append(row)
    result.problems.extend(_numeric_spellings(path, result.rows))
    return result


def _numeric_spellings(path: Path, rows: list[RawRow]) -> list[str]:
    """Labels are classes by their text. Two labels that are the same number spelled differently (`1`, `01`,
    `1.0`) would silently become two classes, so they are refused, naming both spellings and a line of each."""
    spellings: dict[float, dict[str, str]] = {}
    for row in rows:
        try:
            value = float(row.label)
        except ValueError:
            continue
        spellings.setdefault(value, {}).setdefault(row.label, row.where)
    return [f"{path}: labels {' and '.join(repr(s) for s in found)} ({', '.join(found.values())}) are the same "
            "number written differently; write each class one way" for found in spellings.values() if len(found) > 1]


def scan(kind: str, path: Path, *, decode: bool = True) -> OwnScan:
    result = scan_folder(path) if kind == "folder" else scan_csv(path)
    if not result.problems:
        result.skippable.extend(row_problems(result.root, result.rows, decode=decode))
    return result


def make_spec(name: str, kind: str, path: Path, classes: list[str], image_size: int) -> DatasetSpec:
    return DatasetSpec(name=name, display=name, classes=tuple(classes), metric="accuracy", select_split="val",
                       report_split="test", image_size=image_size, source=f"{kind}:{Path(path).resolve()}",
                       license="the user's own data",
                       root=str(Path(path).resolve() if kind == "folder" else Path(path).resolve().parent))


def spec_path(splits_dir: Path, name: str) -> Path:
    return Path(splits_dir) / f"{name}{SPEC_SUFFIX}"


def save_spec(path: Path, spec: DatasetSpec, seed: int, skipped: list[str]) -> None:
    from repro.splits import atomic_write

    document = {"spec": asdict(spec), "seed": seed, "fractions": list(SPLIT_FRACTIONS), "skipped": skipped}
    atomic_write(path, jsonfile.dumps(document))


def load_spec(path: Path) -> tuple[DatasetSpec, int]:
    try:
        document = json.loads(Path(path).read_text())
        fields = document["spec"]
        fields = {**fields, "classes": tuple(fields["classes"]), "crop_scale": tuple(fields["crop_scale"])}
        return DatasetSpec(**fields), int(document["seed"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ReproError(f"{path}: not a dataset spec written by `repro data prepare folder:|csv:` "
                         f"({exc.__class__.__name__}: {exc}); prepare the dataset again") from None


def register_saved(splits_dir: Path) -> list[str]:
    """Register every saved spec under `splits_dir` not registered yet; returns their names."""
    names = []
    for path in sorted(Path(splits_dir).glob(f"*{SPEC_SUFFIX}")):
        spec, _ = load_spec(path)
        if spec.name not in DATASETS:
            DATASETS.register(spec.name, spec)
            names.append(spec.name)
    return names


def prepare_own(kind: str, path: Path, name: str | None, splits_dir: Path, pins_path: Path, seed: int,
                image_size: int = 224, *, skip_corrupt: bool = False, repin: bool = False,
                split_path: Path | None = None) -> dict:
    """Check a user's folder/CSV, split it 60/20/20 stratified with `seed`, write the pinned split file and the
    spec. Returns a summary with what was skipped (always empty without `skip_corrupt`)."""
    from repro.splits import stratified_three_way, write_split

    name = name or default_name(path)
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name):
        raise UsageError(f"--name {name!r}: use lower-case letters, digits, '_' and '-'")
    saved = spec_path(splits_dir, name)
    if name in DATASETS and not saved.is_file():
        raise UsageError(f"{name!r} is a built-in dataset; give your data another name with --name")
    result = scan(kind, path)
    if result.problems:
        raise ReproError(f"{path}: " + "; ".join(result.problems))
    bad = {id(row) for row, _ in result.skippable if row is not None}
    skipped = [problem for _, problem in result.skippable]
    if skipped and not skip_corrupt:
        raise ReproError(f"{kind}:{path}: {len(skipped)} problem(s); fix them, or pass --skip-corrupt to leave "
                         "those rows out (listed in a report)\n  " + "\n  ".join(skipped))
    rows = [r for r in result.rows if id(r) not in bad]
    counts = Counter(r.label for r in rows)
    small = [f"{label!r} ({n})" for label, n in sorted(counts.items()) if n < MIN_PER_CLASS]
    if not rows:
        raise ReproError(f"{kind}:{path}: no usable images")
    if small:
        raise ReproError(f"{kind}:{path}: class(es) with fewer than {MIN_PER_CLASS} images: {', '.join(small)}; a "
                         "stratified 60/20/20 split needs at least one image of each class per split")
    if len(counts) < 2:
        raise ReproError(f"{kind}:{path}: only one class ({next(iter(counts))!r}); a classifier needs two or more")
    split_rows = stratified_three_way([r.id for r in rows], [r.label for r in rows], seed, SPLIT_FRACTIONS)
    spec = make_spec(name, kind, path, sorted(counts), image_size)
    split_path = split_path or Path(splits_dir) / f"{name}.csv"
    sha256 = write_split(split_rows, split_path, pins_path, repin=repin)  # refuses a change to a pinned split
    save_spec(saved, spec, seed, skipped)
    if spec.name not in DATASETS:
        DATASETS.register(spec.name, spec)
    return {"dataset": name, "images": len(split_rows), "splits": dict(Counter(r[2] for r in split_rows)),
            "sha256": sha256, "skipped": skipped, "spec": str(saved), "classes": len(counts), "seed": seed}
