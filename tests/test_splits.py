from collections import Counter

import pytest

from repro.errors import ReproError
from repro.splits import read_pins, read_split, stratified_three_way, write_split

IDS = [f"img{i}" for i in range(100)]
LABELS = [str(i % 4) for i in range(100)]


def test_three_way_split_is_stratified_and_deterministic():
    rows = stratified_three_way(IDS, LABELS, seed=3)
    assert [r[0] for r in rows] == IDS  # input order kept
    sizes = Counter(r[2] for r in rows)
    assert sizes == {"train": 60, "val": 20, "test": 20}
    for split in ("train", "val", "test"):
        per_class = Counter(r[1] for r in rows if r[2] == split)
        assert len(set(per_class.values())) == 1  # 25 per class splits 15/5/5 exactly
    assert rows == stratified_three_way(IDS, LABELS, seed=3)
    assert rows != stratified_three_way(IDS, LABELS, seed=4)


def test_first_write_pins_and_a_changed_split_is_refused(tmp_path):
    split, pins = tmp_path / "toy.csv", tmp_path / "SHA256SUMS"
    first = stratified_three_way(IDS, LABELS, seed=0)
    digest = write_split(first, split, pins)
    assert read_pins(pins) == {"toy.csv": digest}
    assert read_split(split) == first
    before = split.read_bytes()
    other = stratified_three_way(IDS, LABELS, seed=1)
    with pytest.raises(ReproError, match=r"differs from the one pinned .* ids changed label or split.*--repin"):
        write_split(other, split, pins)
    assert split.read_bytes() == before  # nothing written
    assert read_pins(pins) == {"toy.csv": digest}
    assert write_split(first, split, pins) == digest  # the same split is fine
    new_digest = write_split(other, split, pins, repin=True)
    assert read_pins(pins) == {"toy.csv": new_digest} and new_digest != digest


def test_bad_pin_and_split_files(tmp_path):
    pins = tmp_path / "SHA256SUMS"
    pins.write_text("not-a-hash toy.csv\n")
    with pytest.raises(ReproError, match=r"SHA256SUMS:1: expected"):
        read_pins(pins)
    bad = tmp_path / "bad.csv"
    bad.write_text("id,label\n1,2\n")
    with pytest.raises(ReproError, match="expected columns id,label,split"):
        read_split(bad)
    with pytest.raises(ReproError, match="missing split file"):
        read_split(tmp_path / "none.csv")
