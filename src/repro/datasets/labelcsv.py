"""The Kaggle `train.csv` + image folder format shared by APTOS 2019 and Cassava (PAPER.md section 3).

One CSV row per image: an id column, an integer label column 0..K-1, and the image at `train_images/<file>`.
Both use the authors' stratified 20% hold-out. Exercised by `repro data verify aptos|cassava`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from repro.datasets import rules
from repro.datasets.raw import RawRow, Scan, int_label, read_csv

CSV = "train.csv"
IMAGES = "train_images"


def scan_label_csv(raw_dir: Path, id_column: str, label_column: str, num_classes: int,
                   image_name: Callable[[str], str]) -> Scan:
    scan = Scan()
    path = Path(raw_dir) / CSV
    table = read_csv(path, (id_column, label_column), scan.problems)
    for line, record in table:
        label = int_label(record[label_column], num_classes, f"{path}:{line}", label_column, scan.problems)
        image_id = record[id_column] or ""
        if not image_id:
            scan.problems.append(f"{path}:{line}: empty {id_column}")
        elif label is not None:
            scan.rows.append(RawRow(image_id, str(label), (f"{IMAGES}/{image_name(image_id)}",),
                                    where=f"{CSV}:{line}"))
    scan.counts[f"{CSV} rows"] = len(table)
    return scan


def assign_stratified(rows: list[RawRow], seed: int, num_classes: int) -> list[str]:
    return rules.stratified_holdout([int(r.label) for r in rows], seed, num_classes)
