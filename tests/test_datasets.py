import json

import pytest

from repro.datasets import DATASETS
from repro.datasets.embedded import arrays_sha256, load_digits_arrays
from repro.datasets.generic import decode_images, read_labels, write_image_csv
from repro.errors import ReproError
from repro.splits import read_pins, read_split
from repro.study import prepare

from conftest import ROOT


def test_committed_pin_matches_the_bundled_digits():
    pin = json.loads((ROOT / "data/raw/digits/source.json").read_text())
    images, labels = load_digits_arrays()
    assert images.shape == (1797, 8, 8) and images.max() == 255
    assert arrays_sha256(images, labels) == pin["sha256"]


def test_committed_split_matches_its_pin_and_the_prepare_rule(tmp_path):
    pins = read_pins(ROOT / "data/splits/SHA256SUMS")
    info = prepare("digits", ROOT / "data/raw/digits", tmp_path / "prepared", tmp_path / "digits.csv",
                   tmp_path / "SHA256SUMS", seed=0)
    assert info["sha256"] == pins["digits.csv"]
    assert (tmp_path / "digits.csv").read_bytes() == (ROOT / "data/splits/digits.csv").read_bytes()
    assert info["splits"] == {"train": 1078, "val": 359, "test": 360}
    rows = read_labels(tmp_path / "prepared")
    assert len(rows) == 1797 and rows[0] == ("images/0000.png", "0")
    images = decode_images(tmp_path / "prepared", [r[0] for r in rows[:3]])
    assert tuple(images[0].shape) == (3, 8, 8)
    assert {r[1] for r in read_split(tmp_path / "digits.csv")} == set(DATASETS["digits"].classes)


def test_prepare_refuses_bad_raw_data_and_writes_nothing(tmp_path):
    out, split = tmp_path / "prepared", tmp_path / "digits.csv"
    with pytest.raises(ReproError, match="missing raw directory"):
        prepare("digits", tmp_path / "nowhere", out, split, tmp_path / "SHA256SUMS", seed=0)
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "source.json").write_text(json.dumps({"sha256": "0" * 64}))
    with pytest.raises(ReproError, match="differ from the pin"):
        prepare("digits", raw, out, split, tmp_path / "SHA256SUMS", seed=0)
    (raw / "source.json").write_text("{broken")
    with pytest.raises(ReproError, match="not a JSON object"):
        prepare("digits", raw, out, split, tmp_path / "SHA256SUMS", seed=0)
    assert not out.exists() and not split.exists()


def test_generic_reader_reports_every_bad_file(tmp_path):
    import numpy as np

    write_image_csv(tmp_path / "set", [("a.png", 0), ("b.png", 1), ("c.png", 1)], np.zeros((3, 4, 4), np.uint8))
    (tmp_path / "set/b.png").write_bytes(b"not a png")
    (tmp_path / "set/c.png").unlink()
    with pytest.raises(ReproError, match=r"2 unreadable image\(s\): b.png \(UnidentifiedImageError\), c.png \(missing\)"):
        decode_images(tmp_path / "set", ["a.png", "b.png", "c.png"])
    (tmp_path / "set/labels.csv").write_text("path,y\n")
    with pytest.raises(ReproError, match="expected columns id,label"):
        read_labels(tmp_path / "set")


def test_paper_datasets_are_registered_with_their_protocol():
    assert DATASETS["hpa"].multilabel and DATASETS["hpa"].num_classes == 28
    assert (DATASETS["cct20"].select_split, DATASETS["cct20"].report_split) == ("cis_val", "cis_test")
    assert DATASETS["eurosat"].image_size == 224 and not DATASETS["eurosat"].hflip
    assert DATASETS["aptos"].metric == "quadratic_kappa" and DATASETS["melanoma"].metric == "roc_auc"
