"""The authors' split rules (PAPER.md section 3) select exactly the pinned rows, on fixtures in the published formats.

Expected ids are written out literally. They were computed once and checked by hand against the rule (per-class
counts int(0.2 * n_c), fold counts int(0.8 * folds)) and, below, against an independent run of the rule written as
the authors state it: numpy's legacy global RNG seeded once, then np.random.choice per class or per source.
"""

import csv
from collections import Counter

import numpy as np
import pytest

import raw_fixtures as fx
from repro.datasets import rules
from repro.datasets.raw import split_rows

# 31 rows: class 0 x12, 1 x7, 2 x6, 3 x1, 4 x5 -> int(0.2 n) = 2, 1, 1, 0, 1 held out
LABELS = [2, 0, 1, 0, 0, 2, 1, 0, 1, 2, 0, 0, 1, 2, 0, 1, 0, 2, 0, 1, 1, 0, 2, 0, 0, 4, 4, 3, 4, 4, 4]


def held(split: list[str]) -> list[int]:
    return [i for i, s in enumerate(split) if s == "heldout"]


def global_rng_rule(labels, seed, num_classes):
    """The stratified rule as PAPER.md words it, on numpy's global legacy RNG (state restored afterwards)."""
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        out = []
        for c in range(num_classes):
            members = [i for i, y in enumerate(labels) if y == c]
            out += list(np.random.choice(members, int(0.2 * len(members)), replace=False))
        return sorted(int(i) for i in out)
    finally:
        np.random.set_state(state)


def test_stratified_holdout_pins_rows_per_class_counts_seed_and_order():
    split = rules.stratified_holdout(LABELS, 414, 5)
    # class 0 -> rows 1, 18; class 1 -> 12; class 2 -> 0; class 3 (one row) -> none; class 4 -> 28
    assert held(split) == [0, 1, 12, 18, 28]
    assert Counter(LABELS[i] for i in held(split)) == {0: 2, 1: 1, 2: 1, 4: 1}
    assert held(rules.stratified_holdout(LABELS, 42, 5)) == [2, 9, 21, 23, 28]
    assert held(split) == global_rng_rule(LABELS, 414, 5)
    assert held(rules.stratified_holdout(LABELS, 42, 5)) == global_rng_rule(LABELS, 42, 5)
    # file order matters: the same rows reversed hold out other rows
    reversed_split = rules.stratified_holdout(LABELS[::-1], 414, 5)
    assert sorted(len(LABELS) - 1 - i for i in held(reversed_split)) == [7, 12, 22, 24, 28]
    # no global state is touched
    np.random.seed(7)
    before = np.random.get_state()[1].copy()
    rules.stratified_holdout(LABELS, 414, 5)
    assert (np.random.get_state()[1] == before).all()
    with pytest.raises(ValueError):
        rules.stratified_holdout([0, 5], 414, 5)


def test_fold_holdout_shares_one_rng_across_sources_in_order():
    f2020 = [0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]
    f2019 = [3, 1, 2, 0, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 0]
    a, b = rules.fold_holdout([f2020, f2019], 23)
    # 15 folds each: int(0.8 * 15) = 12 train folds, 3 held out
    assert sorted({f for f, s in zip(f2020, a) if s == "heldout"}) == [3, 6, 8]
    assert sorted({f for f, s in zip(f2019, b) if s == "heldout"}) == [2, 5, 11]
    assert [s for f, s in zip(f2020, a) if f == 0] == ["train", "train"]  # a fold is never cut
    # the 2019 draw depends on 2020 coming first from the same RNG
    (alone,) = rules.fold_holdout([f2019], 23)
    assert sorted({f for f, s in zip(f2019, alone) if s == "heldout"}) == [3, 6, 8]
    state = np.random.get_state()
    try:  # independent run on the global legacy RNG
        np.random.seed(23)
        g2020 = np.random.choice(np.unique(f2020), 12, replace=False)
        g2019 = np.random.choice(np.unique(f2019), 12, replace=False)
    finally:
        np.random.set_state(state)
    assert sorted(set(range(15)) - set(g2020.tolist())) == [3, 6, 8]
    assert sorted(set(range(15)) - set(g2019.tolist())) == [2, 5, 11]
    with pytest.raises(ValueError, match="negative tfrecord"):
        rules.fold_holdout([[0, -1]], 23)


def test_cct20_labels():
    assert rules.cct20_label(1) == 0 and rules.cct20_label(99) == 14 and rules.cct20_label(33) == 11
    with pytest.raises(ValueError):
        rules.cct20_label(rules.CCT20_EMPTY)


APTOS_LABELS = [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 0, 0, 0, 1, 1, 2, 4]


def test_aptos_and_cassava_hold_out_the_pinned_rows(tmp_path):
    # classes 0..4 have 7, 6, 5, 4, 5 rows -> 1, 1, 1, 0, 1 held out: rows 0 (class 0), 6 (1), 7 (2), 4 (4)
    ids = fx.aptos(tmp_path / "aptos", APTOS_LABELS)
    rows = split_rows("aptos", tmp_path / "aptos", counts=False)
    assert [r[0] for r in rows] == ids and [r[1] for r in rows] == [str(y) for y in APTOS_LABELS]
    assert [r[0] for r in rows if r[2] == "heldout"] == ["000a9c0f00", "004a9c0f04", "006a9c0f06", "007a9c0f07"]
    assert global_rng_rule(APTOS_LABELS, 414, 5) == [0, 4, 6, 7]
    ids = fx.cassava(tmp_path / "cassava", APTOS_LABELS)  # same seed, same labels: the same positions
    rows = split_rows("cassava", tmp_path / "cassava", counts=False)
    assert [r[0] for r in rows if r[2] == "heldout"] == \
        ["1000015157.jpg", "1000046833.jpg", "1000062671.jpg", "1000070590.jpg"]
    assert {r[2] for r in rows} == {"train", "heldout"} and [r[0] for r in rows] == ids


def test_eurosat_uses_imagefolder_order_and_seed_42(tmp_path):
    fx.eurosat(tmp_path, per_class=11)  # names sort as _1, _10, _11, _2, ...: ImageFolder order, not numeric
    rows = split_rows("eurosat", tmp_path, counts=False)
    assert [r[0] for r in rows[:4]] == ["AnnualCrop/AnnualCrop_1.jpg", "AnnualCrop/AnnualCrop_10.jpg",
                                        "AnnualCrop/AnnualCrop_11.jpg", "AnnualCrop/AnnualCrop_2.jpg"]
    assert [r[1] for r in rows[::11]] == fx.EUROSAT_CLASSES
    heldout = [r[0] for r in rows if r[2] == "heldout"]
    assert heldout == [
        "AnnualCrop/AnnualCrop_1.jpg", "AnnualCrop/AnnualCrop_4.jpg", "Forest/Forest_1.jpg", "Forest/Forest_5.jpg",
        "HerbaceousVegetation/HerbaceousVegetation_11.jpg", "HerbaceousVegetation/HerbaceousVegetation_5.jpg",
        "Highway/Highway_10.jpg", "Highway/Highway_4.jpg", "Industrial/Industrial_11.jpg",
        "Industrial/Industrial_8.jpg", "Pasture/Pasture_6.jpg", "Pasture/Pasture_9.jpg",
        "PermanentCrop/PermanentCrop_8.jpg", "PermanentCrop/PermanentCrop_9.jpg",
        "Residential/Residential_11.jpg", "Residential/Residential_3.jpg", "River/River_11.jpg",
        "River/River_5.jpg", "SeaLake/SeaLake_10.jpg", "SeaLake/SeaLake_4.jpg"]  # int(0.2 * 11) = 2 per class
    labels = [fx.EUROSAT_CLASSES.index(r[1]) for r in rows]
    assert [i for i, r in enumerate(rows) if r[2] == "heldout"] == global_rng_rule(labels, 42, 10)


MELANOMA = {
    "jpeg-melanoma-512x512": [("ISIC_2000001", 0, 2), ("ISIC_2000002", 1, 0), ("ISIC_2000003", 0, 4),
                              ("ISIC_2000004", 0, -1), ("ISIC_2000005", 0, 1), ("ISIC_2000006", 1, 3),
                              ("ISIC_2000007", 0, 2), ("ISIC_2000008", 0, 0)],
    "jpeg-isic2019-512x512": [("ISIC_0000001", 1, 1), ("ISIC_0000002", 0, -1), ("ISIC_0000003", 0, 0),
                              ("ISIC_0000004", 1, 2), ("ISIC_0000005", 0, 1)],
}


def test_melanoma_fold_rule_2020_then_2019_drops_minus_one(tmp_path):
    fx.melanoma(tmp_path, MELANOMA)
    rows = split_rows("melanoma", tmp_path, counts=False)
    # 2020: folds 0..4 -> int(0.8 * 5) = 4 train (choice gives 4, 1, 0, 2), fold 3 held out;
    # 2019, same RNG: folds 0..2 -> 2 train (1, 0), fold 2 held out; tfrecord -1 rows gone
    assert rows == [("ISIC_2000001", "0", "train"), ("ISIC_2000002", "1", "train"),
                    ("ISIC_2000003", "0", "train"), ("ISIC_2000005", "0", "train"),
                    ("ISIC_2000006", "1", "heldout"), ("ISIC_2000007", "0", "train"),
                    ("ISIC_2000008", "0", "train"), ("ISIC_0000001", "1", "train"),
                    ("ISIC_0000003", "0", "train"), ("ISIC_0000004", "1", "heldout"),
                    ("ISIC_0000005", "0", "train")]
    rng = np.random.RandomState(23)
    assert rng.choice(np.arange(5), 4, replace=False).tolist() == [4, 1, 0, 2]
    assert rng.choice(np.arange(3), 2, replace=False).tolist() == [1, 0]


CCT = {
    "train": [("5968c0f9-23d2-11e8-a6a3-ec086b02610b", 1), ("59f2c6bd-23d2-11e8-a6a3-ec086b02610b", 30),
              ("5a1ad4c0-23d2-11e8-a6a3-ec086b02610b", 99)],
    "cis_val": [("58aa8f9e-23d2-11e8-a6a3-ec086b02610b", 33), ("58bb0fd4-23d2-11e8-a6a3-ec086b02610b", 30)],
    "cis_test": [("5865e2cc-23d2-11e8-a6a3-ec086b02610b", 5)],
    "trans_val": [("5a0e1ad0-23d2-11e8-a6a3-ec086b02610b", 9)],
    "trans_test": [("5a2c2c86-23d2-11e8-a6a3-ec086b02610b", 10)],
}


def test_cct20_split_is_the_annotation_file_without_empty(tmp_path):
    fx.cct20(tmp_path, CCT)
    rows = split_rows("cct20", tmp_path, counts=False)
    assert rows == [("5968c0f9-23d2-11e8-a6a3-ec086b02610b", "1", "train"),
                    ("5a1ad4c0-23d2-11e8-a6a3-ec086b02610b", "99", "train"),
                    ("58aa8f9e-23d2-11e8-a6a3-ec086b02610b", "33", "cis_val"),
                    ("5865e2cc-23d2-11e8-a6a3-ec086b02610b", "5", "cis_test")]


HPA = [("00070df0-bbc3-11e8-b2bc-ac1f6b6435d0", "16 0", "train"),
       ("000a6c98-bb9b-11e8-b2b9-ac1f6b6435d0", "7 1 2 0", "val"),
       ("000a9596-bbc4-11e8-b2bc-ac1f6b6435d0", "5", "test_val"),
       ("000c99ba-bba4-11e8-b2b9-ac1f6b6435d0", "1", "train")]


def test_hpa_split_comes_from_the_pinned_file_only(tmp_path, monkeypatch):
    import hashlib

    from repro.datasets import hpa
    from repro.errors import ReproError

    split = fx.hpa(tmp_path, HPA)
    with pytest.raises(ReproError, match=r"sha256 [0-9a-f]{64} is not the authors' split file's 802764fc"):
        split_rows("hpa", tmp_path, counts=False)
    monkeypatch.setattr(hpa, "SPLIT_SHA256", hashlib.sha256(split.read_bytes()).hexdigest())
    assert split_rows("hpa", tmp_path, counts=False) == HPA
    with open(split, "a", newline="") as handle:  # any change to the file is refused
        csv.writer(handle).writerow(["000c9cfc-bba4-11e8-b2b9-ac1f6b6435d0", "0", "train"])
    with pytest.raises(ReproError, match="refused"):
        split_rows("hpa", tmp_path, counts=False)
