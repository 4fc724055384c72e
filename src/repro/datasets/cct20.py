"""CCT-20 as published on LILA (Caltech Camera Traps, ECCV'18 subset): COCO-camera-traps JSON files
`eccv_18_annotation_files/{train,cis_val,cis_test,...}_annotations.json` and images
`eccv_18_all_images_sm/<image_id>.jpg`.

The authors' split is the annotation file a row comes from (train / cis_val / cis_test; the trans_* files are not
used), the empty category 30 is dropped, and the label is the position of category_id in
rules.CCT20_CATEGORIES (PAPER.md section 3). The split file's label column holds the category id, the class name
of the DatasetSpec. Exercised by `repro data verify cct20` and `repro data prepare cct20`.
"""

from __future__ import annotations

import json
from pathlib import Path

from repro.datasets import rules
from repro.datasets.raw import RawRow, Scan, check

ANNOTATIONS = "eccv_18_annotation_files"
IMAGES = "eccv_18_all_images_sm"
# Image counts per file, the empty class included (PAPER.md section 3).
PUBLISHED = {"train images": 13553, "cis_val images": 3484, "cis_test images": 15827}


def _coco_camera_traps(document, path: Path, problems: list[str]) -> bool:
    if not isinstance(document, dict):
        problems.append(f"{path}: not COCO-camera-traps JSON (expected an object with images, annotations, "
                        "categories)")
        return False
    bad = [k for k in ("images", "annotations", "categories") if not isinstance(document.get(k), list)]
    if bad:
        problems.append(f"{path}: not COCO-camera-traps JSON (no {', '.join(bad)} list)")
        return False
    return True


def scan(raw_dir: Path) -> Scan:
    result = Scan()
    for split in rules.CCT20_SPLITS:
        path = Path(raw_dir) / ANNOTATIONS / f"{split}_annotations.json"
        if not path.is_file():
            result.problems.append(f"{path}: missing file")
            continue
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            result.problems.append(f"{path}: not JSON ({exc})")
            continue
        if not _coco_camera_traps(document, path, result.problems):
            continue
        images = {str(i["id"]) for i in document["images"] if isinstance(i, dict) and "id" in i}
        if len(images) != len(document["images"]):
            result.problems.append(f"{path}: not COCO-camera-traps JSON (an images entry without an id)")
        for number, annotation in enumerate(document["annotations"]):
            where = f"{path}: annotations[{number}]"
            if not isinstance(annotation, dict) or not {"image_id", "category_id"} <= annotation.keys():
                result.problems.append(f"{where}: not COCO-camera-traps (no image_id/category_id)")
                continue
            image_id, category = str(annotation["image_id"]), annotation["category_id"]
            if category == rules.CCT20_EMPTY:
                continue
            if category not in rules.CCT20_CATEGORIES or isinstance(category, bool):
                result.problems.append(f"{where} (image {image_id}): category_id {category!r} out of range "
                                       f"(expected one of {list(rules.CCT20_CATEGORIES)} or {rules.CCT20_EMPTY})")
                continue
            if image_id not in images:
                result.problems.append(f"{where}: image_id {image_id} is not in the file's images")
            result.rows.append(RawRow(image_id, str(category), (f"{IMAGES}/{image_id}.jpg",), split,
                                      where=f"{path.name} annotations[{number}]"))
        result.counts[f"{split} images"] = len(document["images"])
    return result


def assign(rows: list[RawRow]) -> list[str]:
    return [r.group for r in rows]  # the annotation file is the split


def verify(raw_dir: Path, *, decode: bool = True, counts: bool = True) -> list[str]:
    return check(raw_dir, scan(raw_dir), PUBLISHED, decode=decode, counts=counts)
