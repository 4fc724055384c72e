"""Builders of tiny raw folders in each dataset's published format (PAPER.md section 3): the same file names, CSV
headers and JSON structure as the real downloads, a few images each. Used by test_formats.py and test_rules.py."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from PIL import Image

MELANOMA_HEADER = ["image_name", "patient_id", "sex", "age_approx", "anatom_site_general_challenge", "diagnosis",
                   "benign_malignant", "target", "tfrecord", "width", "height"]
EUROSAT_CLASSES = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
                   "PermanentCrop", "Residential", "River", "SeaLake"]


def image(path: Path, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (4, 4), 128 if mode == "L" else (10, 20, 30)).save(path)


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def aptos(root: Path, labels: list[int]) -> list[str]:
    ids = [f"{i:03x}a9c0f{i:02d}" for i in range(len(labels))]  # hex id_codes like the real ones
    write_csv(root / "train.csv", ["id_code", "diagnosis"], [[i, y] for i, y in zip(ids, labels)])
    for i in ids:
        image(root / "train_images" / f"{i}.png")
    return ids


def cassava(root: Path, labels: list[int]) -> list[str]:
    ids = [f"{1000015157 + 7919 * i}.jpg" for i in range(len(labels))]
    write_csv(root / "train.csv", ["image_id", "label"], [[i, y] for i, y in zip(ids, labels)])
    for i in ids:
        image(root / "train_images" / i)
    return ids


def eurosat(root: Path, per_class: int) -> None:
    for name in EUROSAT_CLASSES:
        for n in range(1, per_class + 1):
            image(root / "2750" / name / f"{name}_{n}.jpg")


def melanoma(root: Path, sources: dict[str, list[tuple[str, int, int]]]) -> None:
    """sources: folder -> [(image_name, target, tfrecord)]."""
    for folder, rows in sources.items():
        write_csv(root / folder / "train.csv", MELANOMA_HEADER,
                  [[name, f"IP_{k:07d}", "male", 45.0, "torso", "unknown", ["benign", "malignant"][t], t, f, 512,
                    512] for k, (name, t, f) in enumerate(rows)])
        for name, _, _ in rows:
            image(root / folder / "train" / f"{name}.jpg")


def cct20(root: Path, files: dict[str, list[tuple[str, int]]]) -> None:
    """files: split -> [(image_id, category_id)]; writes COCO-camera-traps JSON and the images."""
    categories = [{"id": c, "name": f"c{c}"} for c in (1, 3, 5, 6, 7, 8, 9, 10, 11, 16, 21, 30, 33, 34, 51, 99)]
    for split, rows in files.items():
        document = {
            "info": {"version": "ECCV18", "description": "Caltech Camera Traps ECCV18 subset"},
            "images": [{"id": i, "file_name": f"{i}.jpg", "width": 4, "height": 4, "location": 38,
                        "frame_num": 1, "seq_id": f"seq{i}", "seq_num_frames": 1} for i, _ in rows],
            "annotations": [{"id": f"ann{i}", "image_id": i, "category_id": c} for i, c in rows],
            "categories": categories,
        }
        path = root / "eccv_18_annotation_files" / f"{split}_annotations.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document))
        for i, _ in rows:
            image(root / "eccv_18_all_images_sm" / f"{i}.jpg")


def hpa(root: Path, rows: list[tuple[str, str, str]]) -> Path:
    """rows: (Id, Target, Split); writes train.csv, the four channel PNGs and the split file; returns it."""
    write_csv(root / "train.csv", ["Id", "Target"], [[i, t] for i, t, _ in rows])
    split = root / "split.stratified.small.0.csv"
    write_csv(split, ["Id", "Target", "Split"], [list(r) for r in rows])
    for i, _, _ in rows:
        for channel in ("red", "green", "blue", "yellow"):
            image(root / "train" / f"{i}_{channel}.png", "L")
    return split
