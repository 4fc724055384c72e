"""Cassava Leaf Disease as published (Kaggle cassava-leaf-disease-classification): `train.csv` (image_id such as
`1000015157.jpg`, label 0-4) and `train_images/<image_id>`; the authors hold out a stratified 20% with seed 414
(PAPER.md section 3). Exercised by `repro data verify cassava` and `repro data prepare cassava`.
"""

from __future__ import annotations

from pathlib import Path

from repro.datasets import labelcsv
from repro.datasets.raw import RawRow, Scan, check

SEED = 414
NUM_CLASSES = 5
PUBLISHED = {"train.csv rows": 21397}


def scan(raw_dir: Path) -> Scan:
    return labelcsv.scan_label_csv(raw_dir, "image_id", "label", NUM_CLASSES, lambda i: i)  # id has the .jpg


def assign(rows: list[RawRow]) -> list[str]:
    return labelcsv.assign_stratified(rows, SEED, NUM_CLASSES)


def verify(raw_dir: Path, *, decode: bool = True, counts: bool = True) -> list[str]:
    return check(raw_dir, scan(raw_dir), PUBLISHED, decode=decode, counts=counts)
