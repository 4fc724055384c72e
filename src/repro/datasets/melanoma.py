"""SIIM-ISIC Melanoma as published: two Kaggle datasets unpacked side by side under the raw folder,
`jpeg-melanoma-512x512/` (2020) and `jpeg-isic2019-512x512/` (2019), each with `train.csv`
(image_name, patient_id, ..., target, tfrecord, width, height) and `train/<image_name>.jpg`.

The authors' rule (PAPER.md section 3): per source, 2020 first, 80% of the tfrecord folds train and the rest held
out, one RNG seeded 23 for both; rows with tfrecord -1 dropped. Ids are `image_name`; an id present in both
sources is a problem, since a split file holds one row per id. Exercised by `repro data verify melanoma`.
"""

from __future__ import annotations

from pathlib import Path

from repro.datasets import rules
from repro.datasets.raw import RawRow, Scan, check, int_label, read_csv

SEED = 23
SOURCES = (("2020", "jpeg-melanoma-512x512"), ("2019", "jpeg-isic2019-512x512"))  # the rule's order
COLUMNS = ("image_name", "target", "tfrecord")
PUBLISHED: dict[str, int] = {}  # PAPER.md gives no row counts for these two datasets


def scan(raw_dir: Path) -> Scan:
    result = Scan()
    for source, folder in SOURCES:
        path = Path(raw_dir) / folder / "train.csv"
        table = read_csv(path, COLUMNS, result.problems)
        kept = 0
        for line, record in table:
            where = f"{path}:{line}"
            label = int_label(record["target"], 2, where, "target", result.problems)
            try:
                fold = int(record["tfrecord"] or "")
            except ValueError:
                fold = -2
            if fold < -1:
                result.problems.append(f"{where}: tfrecord {record['tfrecord']!r} is neither -1 nor a fold id >= 0")
                continue
            if fold == -1 or label is None:  # -1: not in any fold, dropped by the authors
                continue
            kept += 1
            name = record["image_name"]
            result.rows.append(RawRow(name, str(label), (f"{folder}/train/{name}.jpg",), source, fold,
                                      where=f"{folder}/train.csv:{line}"))
        result.counts[f"{source} rows"] = len(table)
        result.counts[f"{source} rows in a fold"] = kept
    return result


def assign(rows: list[RawRow]) -> list[str]:
    sources = [source for source, _ in SOURCES]
    by_source = rules.fold_holdout([[r.fold for r in rows if r.group == s] for s in sources], SEED)
    position = {s: iter(split) for s, split in zip(sources, by_source)}
    return [next(position[r.group]) for r in rows]


def verify(raw_dir: Path, *, decode: bool = True, counts: bool = True) -> list[str]:
    return check(raw_dir, scan(raw_dir), PUBLISHED, decode=decode, counts=counts)
