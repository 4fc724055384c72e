"""APTOS 2019 as published (Kaggle aptos2019-blindness-detection): `train.csv` (id_code, diagnosis 0-4) and
`train_images/<id_code>.png`; the authors hold out a stratified 20% with seed 414 (PAPER.md section 3).
Exercised by `repro data verify aptos` and `repro data prepare aptos`.
"""

from __future__ import annotations

from pathlib import Path

from repro.datasets import labelcsv
from repro.datasets.raw import RawRow, Scan, check

SEED = 414
NUM_CLASSES = 5
PUBLISHED = {"train.csv rows": 3662}


def scan(raw_dir: Path) -> Scan:
    return labelcsv.scan_label_csv(raw_dir, "id_code", "diagnosis", NUM_CLASSES, lambda i: f"{i}.png")


def assign(rows: list[RawRow]) -> list[str]:
    return labelcsv.assign_stratified(rows, SEED, NUM_CLASSES)


def verify(raw_dir: Path, *, decode: bool = True, counts: bool = True) -> list[str]:
    return check(raw_dir, scan(raw_dir), PUBLISHED, decode=decode, counts=counts)
