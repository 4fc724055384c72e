"""Human Protein Atlas as published (Kaggle human-protein-atlas-image-classification): `train.csv` (Id, Target =
space-separated label ids 0-27) and four grayscale PNGs per image, `train/<Id>_{red,green,blue,yellow}.png`.

The split is the authors' file `split.stratified.small.0.csv` (Id, Target, Split: train / val / test_val), taken
from the raw folder only when its sha256 equals the pin (PAPER.md section 3); any other file is refused. Its Ids
and Targets must agree with train.csv. Exercised by `repro data verify hpa` and `repro data prepare hpa`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from repro.datasets import rules
from repro.datasets.raw import RawRow, Scan, check, read_csv

NUM_CLASSES = 28
SPLIT_FILE = "split.stratified.small.0.csv"
# The authors' splits/hpa/split.stratified.small.0.csv, in their repository since commit
# fc721b17467672160763ea18052a542710e43975 (PAPER.md section 3).
SPLIT_SHA256 = "802764fc37ab6a02dd6132d6fd5ea164e1322ddf833e2d95f0e0527c1f59984e"
CHANNELS = ("red", "green", "blue", "yellow")
PUBLISHED = {"train": 22582, "val": 5664, "test_val": 2826}


def _targets(value: str | None, where: str, problems: list[str]) -> str | None:
    tokens = (value or "").split()
    if not tokens or not all(t.isdigit() and int(t) < NUM_CLASSES for t in tokens):
        problems.append(f"{where}: Target {value!r} is not space-separated label ids 0..{NUM_CLASSES - 1}")
        return None
    return " ".join(str(int(t)) for t in tokens)


def scan(raw_dir: Path) -> Scan:
    result = Scan()
    train_csv = Path(raw_dir) / "train.csv"
    targets = {}
    for line, record in read_csv(train_csv, ("Id", "Target"), result.problems):
        target = _targets(record["Target"], f"{train_csv}:{line}", result.problems)
        if record["Id"] in targets:
            result.problems.append(f"{train_csv}:{line}: duplicate Id {record['Id']}")
        if target is not None:
            targets[record["Id"]] = target
    split_csv = Path(raw_dir) / SPLIT_FILE
    if not split_csv.is_file():
        result.problems.append(f"{split_csv}: missing file (the authors' HPA split, sha256 {SPLIT_SHA256})")
        return result
    found = hashlib.sha256(split_csv.read_bytes()).hexdigest()
    if found != SPLIT_SHA256:
        result.problems.append(f"{split_csv}: sha256 {found} is not the authors' split file's {SPLIT_SHA256}; "
                               "refused")
        return result
    result.counts.update({s: 0 for s in rules.HPA_SPLITS})
    for line, record in read_csv(split_csv, ("Id", "Target", "Split"), result.problems):
        where = f"{split_csv}:{line}"
        image_id, split = record["Id"], record["Split"]
        target = _targets(record["Target"], where, result.problems)
        if split not in rules.HPA_SPLITS:
            result.problems.append(f"{where}: Split {split!r} is not one of {', '.join(rules.HPA_SPLITS)}")
            continue
        if target is None:
            continue
        if image_id not in targets:
            result.problems.append(f"{where}: Id {image_id} is not in {train_csv}")
        elif targets[image_id] != target:
            result.problems.append(f"{where}: Target {target!r} differs from {train_csv}'s {targets[image_id]!r}")
        result.counts[split] = result.counts.get(split, 0) + 1
        paths = tuple(f"train/{image_id}_{c}.png" for c in CHANNELS)
        result.rows.append(RawRow(image_id, target, paths, split, where=f"{SPLIT_FILE}:{line}"))
    return result


def assign(rows: list[RawRow]) -> list[str]:
    return [r.group for r in rows]  # the authors' Split column


def verify(raw_dir: Path, *, decode: bool = True, counts: bool = True) -> list[str]:
    return check(raw_dir, scan(raw_dir), PUBLISHED, decode=decode, counts=counts)
