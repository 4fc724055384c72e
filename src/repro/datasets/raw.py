"""Shared machinery of the six published raw formats: rows, CSV columns, problem lists, file checks, the split.

Each format module (cct20, aptos, hpa, melanoma, cassava, eurosat) has `scan(raw_dir) -> Scan` that reads its
published layout (PAPER.md section 3) and lists structural problems instead of stopping at the first,
`assign(rows)` that applies the authors' split rule (repro.datasets.rules), `PUBLISHED` counts and
`verify(raw_dir)`. Exercised by `repro data verify NAME` and `repro data prepare NAME`.
"""

from __future__ import annotations

import csv
import importlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from repro.errors import ReproError


@dataclass(frozen=True)
class RawRow:
    id: str  # the dataset's own image id (PAPER.md section 3 / issue 3)
    label: str  # a class name of the DatasetSpec; HPA: space-separated label ids
    paths: tuple[str, ...]  # image file(s), relative to the raw folder
    group: str = ""  # what the split rule reads: CCT-20 annotation file, HPA Split column, melanoma source
    fold: int = 0  # melanoma's tfrecord
    where: str = field(default="", compare=False)  # file and row it was read from, for problem messages


@dataclass
class Scan:
    rows: list[RawRow] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # compared with the module's PUBLISHED counts


def read_csv(path: Path, required: Sequence[str], problems: list[str]) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) of a CSV with the `required` columns; [] and a problem when it is missing or lacks one."""
    if not path.is_file():
        problems.append(f"{path}: missing file")
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            problems.append(f"{path}: missing column(s) {', '.join(missing)} (found {reader.fieldnames})")
            return []
        return [(number, row) for number, row in enumerate(reader, 2)]


def int_label(value: str | None, num_classes: int, where: str, column: str, problems: list[str]) -> int | None:
    """An integer label in 0..num_classes-1, or None and a problem naming file, row and column."""
    try:
        label = int(value or "")
    except ValueError:
        label = -1
    if not 0 <= label < num_classes:
        problems.append(f"{where}: {column} {value!r} out of range 0..{num_classes - 1}")
        return None
    return label


def _decode_problem(path: Path) -> str | None:
    from repro.datasets import images

    try:
        images.decode(path)  # a truncated file fails while decoding, not at open()
    except ReproError as exc:
        return str(exc)
    return None


def row_problems(raw_dir: Path, rows: Sequence[RawRow], *, decode: bool = True) -> list[tuple[RawRow, str]]:
    """(row, problem) for each row whose image file is missing or, with `decode`, does not decode, naming the
    file and the row it was read from; what `--skip-corrupt` may drop."""
    raw_dir = Path(raw_dir)
    first: dict[Path, RawRow] = {}
    for row in rows:
        for p in row.paths:
            first.setdefault(raw_dir / p, row)
    found: list[tuple[RawRow, str]] = []
    present = []
    for path, row in first.items():
        if path.is_file():
            present.append(path)
        else:
            found.append((row, f"{path}: missing image" + (f" ({row.where})" if row.where else "")))
    if decode:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(8) as pool:  # PIL releases the GIL while decoding
            for path, problem in zip(present, pool.map(_decode_problem, present)):
                if problem:
                    row = first[path]
                    found.append((row, problem + (f" ({row.where})" if row.where else "")))
    return found


def check(raw_dir: Path, scan: Scan, published: dict[str, int], *, decode: bool = True,
          counts: bool = True, images: bool = True) -> list[str]:
    """Every problem of a scanned raw folder: the scan's own, duplicate ids, counts against the published ones,
    missing image files (by name) and, with `decode`, images that do not decode."""
    raw_dir = Path(raw_dir)
    problems = list(scan.problems)
    seen: dict[str, list[str]] = {}
    for row in scan.rows:
        seen.setdefault(row.id, []).append(row.where)
    for image_id, wheres in seen.items():
        if len(wheres) > 1:
            problems.append(f"{raw_dir}: duplicate id {image_id!r} ({len(wheres)} rows: {', '.join(wheres)})")
    if counts:
        for key, expected in published.items():
            found = scan.counts.get(key)
            if found is not None and found != expected:
                problems.append(f"{raw_dir}: {key}: {found}, published {expected}")
    if images:
        problems.extend(problem for _, problem in row_problems(raw_dir, scan.rows, decode=decode))
    return problems


def raise_problems(headline: str, problems: Iterable[str]) -> None:
    problems = list(problems)
    if problems:
        raise ReproError(f"{headline}: {len(problems)} problem(s)\n  " + "\n  ".join(problems))


def format_module(name: str):
    """The reader module of a registered real dataset (DatasetSpec.raw_format)."""
    from repro.datasets import DATASETS

    spec = DATASETS[name]
    if not spec.raw_format:
        raise ReproError(f"dataset {name!r} has no raw format reader")
    return importlib.import_module(f"repro.datasets.{spec.raw_format}")


def split_rows(name: str, raw_dir: Path, *, counts: bool = True) -> list[tuple[str, str, str]]:
    """(id, label, split) in the loader's file order, by the authors' rule; refuses raw data with any problem
    (images are checked for presence, not decoded: `repro data verify NAME` decodes them)."""
    return split_rows_skipping(name, raw_dir, counts=counts)[0]


def split_rows_skipping(name: str, raw_dir: Path, *, counts: bool = True,
                        skip_corrupt: bool = False) -> tuple[list[tuple[str, str, str]], list[str]]:
    """split_rows, and with `skip_corrupt` the rows whose image is missing or does not decode (every image is
    decoded then) left out of the split file instead of refused, with the list of what was left out.

    The authors' rule still runs over every row of the published files, so the rows kept get exactly the split
    they would have had; structural problems (a missing column, a bad label, duplicate ids, non-COCO JSON) are
    never skipped, since they change the rule's input."""
    from repro.datasets import DATASETS

    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise ReproError(f"{raw_dir}: missing raw directory; {DATASETS[name].fetch_hint}")
    module = format_module(name)
    scan = module.scan(raw_dir)
    structural = check(raw_dir, scan, module.PUBLISHED, decode=False, counts=counts, images=False)
    images = row_problems(raw_dir, scan.rows, decode=skip_corrupt)
    if skip_corrupt:
        raise_problems(f"{raw_dir}", structural)
    else:
        raise_problems(f"{raw_dir}", structural + [problem for _, problem in images])
    bad = {id(row) for row, _ in images}
    rows = [(r.id, r.label, s) for r, s in zip(scan.rows, module.assign(scan.rows), strict=True)
            if id(r) not in bad]
    return rows, [problem for _, problem in images]
