"""EuroSAT (RGB) as published: `2750/<Class>/<Class>_<n>.jpg`, 27,000 64x64 images in 10 class folders.

The authors read it with torchvision's ImageFolder and hold out a stratified 20% with seed 42 over ImageFolder's
sample order (PAPER.md section 3). That order is rebuilt here without torchvision: class folders sorted by name,
then each folder walked recursively with sub-folders and file names sorted, keeping ImageFolder's image
extensions. The id is the path relative to `2750/`. Exercised by `repro data verify eurosat`.
"""

from __future__ import annotations

import os
from pathlib import Path

from repro.datasets import rules
from repro.datasets.raw import RawRow, Scan, check

ROOT = "2750"
SEED = 42
CLASSES = ("AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture", "PermanentCrop",
           "Residential", "River", "SeaLake")
PUBLISHED = {"images": 27000}
# The extensions ImageFolder accepts (case-insensitive); other files are not samples.
from repro.datasets.images import walk_images


def scan(raw_dir: Path) -> Scan:
    result = Scan()
    root = Path(raw_dir) / ROOT
    if not root.is_dir():
        result.problems.append(f"{root}: missing folder (EuroSAT.zip unpacks to 2750/<Class>/)")
        return result
    # ImageFolder's class index is the position among the folders present, so a missing or extra folder would
    # shift every label after it: both are problems.
    found = sorted(e.name for e in os.scandir(root) if e.is_dir())
    for name in found:
        if name not in CLASSES:
            result.problems.append(f"{root / name}: unknown class folder (expected {', '.join(CLASSES)})")
    for name in CLASSES:
        if name not in found:
            result.problems.append(f"{root / name}: missing class folder")
    for name in (c for c in found if c in CLASSES):
        for file in walk_images(root / name):
            image_id = file.relative_to(root).as_posix()
            result.rows.append(RawRow(image_id, name, (f"{ROOT}/{image_id}",)))
    result.counts["images"] = len(result.rows)
    return result


def assign(rows: list[RawRow]) -> list[str]:
    return rules.stratified_holdout([CLASSES.index(r.label) for r in rows], SEED, len(CLASSES))


def verify(raw_dir: Path, *, decode: bool = True, counts: bool = True) -> list[str]:
    return check(raw_dir, scan(raw_dir), PUBLISHED, decode=decode, counts=counts)
