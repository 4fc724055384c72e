"""Split rules, run once, stored as ID lists (`id,label,split`) and pinned by sha256.

The pins live in `data/splits/SHA256SUMS` (sha256sum format, in git). Once a dataset's split is pinned, a prepare
run that would produce a different split stops and says how many ids moved, instead of silently making a new one;
`repro data prepare NAME --repin` accepts the new split on purpose. Exercised by `repro data prepare digits`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from collections.abc import Sequence
from pathlib import Path

from repro import failpoints
from repro.errors import ReproError

SplitRow = tuple[str, str, str]  # id, label, split


def stratified_three_way(
    ids: Sequence[str], labels: Sequence[str], seed: int, fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
) -> list[SplitRow]:
    """Stratified train/val/test split with scikit-learn, in the input's row order."""
    from sklearn.model_selection import train_test_split

    if abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"split fractions must sum to 1, got {fractions}")
    index = list(range(len(ids)))
    train, rest = train_test_split(index, train_size=fractions[0], stratify=labels, random_state=seed)
    rest_labels = [labels[i] for i in rest]
    val_share = fractions[1] / (fractions[1] + fractions[2])
    val, _ = train_test_split(rest, train_size=val_share, stratify=rest_labels, random_state=seed)
    name = {i: "test" for i in index}
    name.update({i: "train" for i in train})
    name.update({i: "val" for i in val})
    return [(ids[i], str(labels[i]), name[i]) for i in index]


def render(rows: Sequence[SplitRow]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "label", "split"])
    writer.writerows(rows)
    return buffer.getvalue().encode()


def read_split(path: Path) -> list[SplitRow]:
    from repro.inputs import read_csv

    path = Path(path)
    if not path.exists():
        raise ReproError(f"{path}: missing split file; run `repro data prepare {path.stem}`")
    return [(row["id"], row["label"], row["split"]) for row in read_csv(path, ("id", "label", "split"))]


def atomic_write(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        failpoints.hit("atomic_write", path.name)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_abandoned_temps(folder: Path) -> None:
    """Delete what a killed writer left in `folder`: temp files and folders named `.NAME.tmp-PID` (atomic_write's,
    the release zip's, the image cache's) whose process PID is gone. A live writer's temp is left alone."""
    import shutil

    folder = Path(folder)
    if not folder.is_dir():
        return
    for path in folder.glob(".*.tmp-*"):
        pid = path.name.rsplit(".tmp-", 1)[1]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def read_pins(pins_path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    if Path(pins_path).is_file():
        for number, line in enumerate(Path(pins_path).read_text().splitlines(), 1):
            if line.strip():
                parts = line.split()
                if len(parts) != 2 or len(parts[0]) != 64:
                    raise ReproError(f"{pins_path}:{number}: expected '<sha256>  <file>', found {line!r}")
                pins[parts[1]] = parts[0]
    return pins


def write_split(rows: Sequence[SplitRow], path: Path, pins_path: Path, *, repin: bool = False) -> str:
    """Write the split file unless it contradicts its pin; record the pin if there was none. Returns the sha256."""
    data = render(rows)
    digest = hashlib.sha256(data).hexdigest()
    path = Path(path)
    pins = read_pins(pins_path)
    pinned = pins.get(path.name)
    if pinned is not None and pinned != digest and not repin:
        moved = _describe_change(path, rows)
        raise ReproError(
            f"{path.name}: the new split differs from the one pinned in {pins_path} ({moved}); nothing was "
            f"written. If the change is intended, run `repro data prepare {path.stem} --repin`"
        )
    atomic_write(path, data)
    if pinned != digest:
        pins[path.name] = digest
        atomic_write(pins_path, "".join(f"{sha}  {name}\n" for name, sha in sorted(pins.items())).encode())
    return digest


def _describe_change(path: Path, rows: Sequence[SplitRow]) -> str:
    if not path.is_file():
        return "the pinned split file is not present to compare ids"
    old = {row[0]: row[1:] for row in read_split(path)}
    new = {row[0]: row[1:] for row in rows}
    added, removed = len(new.keys() - old.keys()), len(old.keys() - new.keys())
    changed = sum(1 for key in new.keys() & old.keys() if new[key] != old[key])
    return f"{changed} ids changed label or split, {added} added, {removed} removed"
