"""Loaders of the six published formats, the channel order, HPA's four PNGs, multi-hot targets, the decoded-image
cache, and `study.finetune` on each tiny fixture (1 epoch, the tiny timm test model). Offline, CPU, seconds."""

import dataclasses
import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

import raw_fixtures as fx
from conftest import ROOT
from repro.config import load_params
from repro.datasets import DATASETS, cache, hpa
from repro.datasets.loaders import build_splits, effective_channel_order, encode_targets, read_image
from repro.errors import ReproError
from repro.splits import atomic_write, render
from repro.datasets.raw import split_rows
from repro.study import finetune
from test_rules import APTOS_LABELS, CCT, HPA, MELANOMA

TINY = "timm/test_efficientnet.r160_in1k"
MEAN, STD = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)


def make(name, root, monkeypatch):
    """A fixture of dataset `name` under root and its split file (by the authors' rule)."""
    build = {"aptos": lambda: fx.aptos(root, APTOS_LABELS), "cassava": lambda: fx.cassava(root, APTOS_LABELS),
             "eurosat": lambda: fx.eurosat(root, 5), "melanoma": lambda: fx.melanoma(root, MELANOMA),
             "cct20": lambda: fx.cct20(root, CCT), "hpa": lambda: fx.hpa(root, HPA)}
    build[name]()
    if name == "hpa":
        monkeypatch.setattr(hpa, "SPLIT_SHA256", hashlib.sha256((root / hpa.SPLIT_FILE).read_bytes()).hexdigest())
    split = root.parent / f"{name}.csv"
    atomic_write(split, render(split_rows(name, root, counts=False)))
    return split


def colour(path, rgb, size=(6, 4)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path)


def test_channel_order_applies_to_the_four_opencv_datasets_only():
    assert [n for n in ("cct20", "aptos", "hpa", "melanoma", "cassava", "eurosat", "digits")
            if effective_channel_order(DATASETS[n], "bgr") == "bgr"] == ["cct20", "aptos", "hpa", "melanoma"]
    assert all(effective_channel_order(DATASETS[n], "rgb") == "rgb" for n in ("aptos", "eurosat"))
    with pytest.raises(ReproError, match="channel_order: 'rbg'"):
        effective_channel_order(DATASETS["aptos"], "rbg")


def test_bgr_reverses_the_channels_a_loader_feeds(tmp_path, monkeypatch):
    split = make("aptos", tmp_path / "aptos", monkeypatch)
    ids = fx.aptos(tmp_path / "aptos", APTOS_LABELS)
    colour(tmp_path / "aptos/train_images" / f"{ids[1]}.png", (200, 100, 7))  # row 1 is in train
    for order, first in (("rgb", 200), ("bgr", 7)):
        data = build_splits(DATASETS["aptos"], split, tmp_path / "aptos", 8, MEAN, STD, channel_order=order)
        position = data.ids["train"].index(ids[1])
        image, label = data.datasets["train"][position]
        assert data.channel_order == order and int(label) == APTOS_LABELS[1]
        assert image.shape == (3, 8, 8)
        assert round(float(image[0].mean()) * 255) == first and round(float(image[1].mean()) * 255) == 100


def test_hpa_input_is_red_green_blue_files_yellow_dropped_and_bgr_reverses(tmp_path):
    for channel, value in zip(hpa.CHANNELS, (11, 22, 33, 44)):
        Image.new("L", (5, 5), value).save(tmp_path / f"x_{channel}.png")
    paths = tuple(f"x_{c}.png" for c in hpa.CHANNELS)
    assert read_image(tmp_path, paths, "rgb")[0, 0].tolist() == [11, 22, 33]
    assert read_image(tmp_path, paths, "bgr")[0, 0].tolist() == [33, 22, 11]  # cv2.imread of the RGBA PNG
    Image.new("L", (6, 5), 0).save(tmp_path / "x_green.png")
    with pytest.raises(ReproError, match="channel images differ in size"):
        read_image(tmp_path, paths)


def test_multilabel_targets_are_multi_hot_and_bad_labels_name_the_file():
    y = encode_targets(DATASETS["hpa"], ["16 0", "5"], "split.csv")
    assert y.shape == (2, 28) and y.dtype == np.float32
    assert np.flatnonzero(y[0]).tolist() == [0, 16] and np.flatnonzero(y[1]).tolist() == [5]
    with pytest.raises(ReproError, match="split.csv: label '3 28' has '28'"):
        encode_targets(DATASETS["hpa"], ["3 28"], "split.csv")
    with pytest.raises(ReproError, match="split.csv: label '9' is not a class of aptos"):
        encode_targets(DATASETS["aptos"], ["9"], "split.csv")


@pytest.mark.parametrize("name", ["cct20", "aptos", "hpa", "melanoma", "cassava", "eurosat"])
def test_loaders_give_every_split_with_the_right_targets(tmp_path, name, monkeypatch):
    split = make(name, tmp_path / name, monkeypatch)
    spec = DATASETS[name]
    data = build_splits(spec, split, tmp_path / name, 16, MEAN, STD, channel_order="bgr")
    assert set(data.datasets) == {"train", spec.select_split, spec.report_split}
    rows = split_rows(name, tmp_path / name, counts=False)
    for part, dataset in data.datasets.items():
        assert data.ids[part] == [r[0] for r in rows if r[2] == part]
        image, target = dataset[0]
        assert image.shape == (3, 16, 16) and image.dtype == torch.float32
        assert target.shape == ((28,) if name == "hpa" else ())


def test_split_that_disagrees_with_the_raw_data_is_refused(tmp_path, monkeypatch):
    split = make("aptos", tmp_path / "aptos", monkeypatch)
    text = split.read_text().splitlines()
    text[2] = text[2].split(",")[0] + ",4," + text[2].split(",")[2]
    split.write_text("\n".join(text) + "\n")
    with pytest.raises(ReproError, match=r"aptos.csv: 1 row\(s\) disagree .* has label '4' here, '1' in"):
        build_splits(DATASETS["aptos"], split, tmp_path / "aptos", 8, MEAN, STD)


def test_cache_is_built_once_atomically_and_gives_the_decoded_pixels(tmp_path, monkeypatch):
    split = make("cassava", tmp_path / "cassava", monkeypatch)
    ids = fx.cassava(tmp_path / "cassava", APTOS_LABELS)
    colour(tmp_path / "cassava/train_images" / ids[3], (1, 2, 3), size=(40, 30))  # larger: resized to 16 x 21
    calls = []
    spec = DATASETS["cassava"]
    cached = build_splits(spec, split, tmp_path / "cassava", 16, MEAN, STD, cache_root=tmp_path / "c",
                          progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (len(APTOS_LABELS), len(APTOS_LABELS)) and cached.cache.parent == tmp_path / "c"
    assert [p.name for p in (tmp_path / "c").iterdir()] == [cached.cache.name]  # no temp folder left
    meta = json.loads((cached.cache / "meta.json").read_text())
    assert meta["short_side"] == "fixed 16" and meta["images"] == len(APTOS_LABELS)
    store = cache.ImageCache(cached.cache)
    assert tuple(store.image(store.position[ids[3]]).shape) == (3, 16, 21)  # shorter side 30 -> 16
    assert tuple(store.image(store.position[ids[0]]).shape) == (3, 4, 4)  # never upsampled
    again = build_splits(spec, split, tmp_path / "cassava", 16, MEAN, STD, cache_root=tmp_path / "c",
                         progress=lambda d, t: calls.append("rebuilt"))
    assert again.cache == cached.cache and "rebuilt" not in calls
    direct = build_splits(spec, split, tmp_path / "cassava", 16, MEAN, STD)
    for part in direct.datasets:  # eval pixels from the cache equal those decoded from the files
        if part != "train":
            for i in range(len(direct.datasets[part])):
                assert torch.equal(direct.datasets[part][i][0], cached.datasets[part][i][0])
    # another size, or a replaced file, is another cache
    build_splits(spec, split, tmp_path / "cassava", 8, MEAN, STD, cache_root=tmp_path / "c")
    assert len(list((tmp_path / "c").iterdir())) == 2
    colour(tmp_path / "cassava/train_images" / ids[3], (9, 9, 9), size=(40, 31))
    build_splits(spec, split, tmp_path / "cassava", 16, MEAN, STD, cache_root=tmp_path / "c")
    assert len(list((tmp_path / "c").iterdir())) == 3


def test_a_corrupt_image_stops_the_cache_build_naming_the_file_and_leaves_nothing(tmp_path, monkeypatch):
    split = make("aptos", tmp_path / "aptos", monkeypatch)
    bad = tmp_path / "aptos/train_images/002a9c0f02.png"
    bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(ReproError, match=rf"{bad} \(id 002a9c0f02\): does not decode"):
        build_splits(DATASETS["aptos"], split, tmp_path / "aptos", 8, MEAN, STD, cache_root=tmp_path / "c")
    assert list((tmp_path / "c").iterdir()) == []


@pytest.fixture(scope="module")
def tiny_params():
    fp = load_params(ROOT / "params.yaml").finetune
    return dataclasses.replace(fp, models=(TINY,), pretrained=False, epochs=1, batch_size=64, lrs=(1e-3,), wds=(0.0,),
                               image_size=32, device="cpu", channel_order="bgr")


@pytest.mark.parametrize("name", ["cct20", "aptos", "hpa", "melanoma", "cassava", "eurosat"])
def test_finetune_runs_on_each_published_format(tmp_path, name, monkeypatch, tiny_params):
    split = make(name, tmp_path / name, monkeypatch)
    spec = DATASETS[name]
    out = finetune(TINY, name, tiny_params, tmp_path / name, split, ROOT / "weights.lock.json",
                   cache_root=tmp_path / "cache")
    record = out.record
    assert record["status"] == "ok" and record["dataset"] == name and record["metric"] == spec.metric
    assert record["config"]["channel_order"] == ("bgr" if spec.opencv_read else "rgb")
    report_ids = [r[0] for r in split_rows(name, tmp_path / name, counts=False) if r[2] == spec.report_split]
    assert [p["id"] for p in out.predictions] == report_ids
    assert len([k for k in out.predictions[0] if k.startswith("score_")]) == spec.num_classes
    if name == "hpa":  # multi-label: targets recorded as their label ids
        assert out.predictions[0]["target"] == "5"
    # cache_short_side auto: the training images in one cache, the evaluation images at the input size in another
    assert tiny_params.cache_short_side == "auto" and len(list((tmp_path / "cache").iterdir())) == 2
    assert record["train_cache"].startswith("auto") and record["exif_applied"] == spec.reader_applies_exif


def test_cached_datasets_load_in_dataloader_worker_processes(tmp_path, monkeypatch):
    """The cache pickles without its memory map into workers (paper profile: finetune.num_workers 8)."""
    import pickle

    from torch.utils.data import DataLoader

    split = make("eurosat", tmp_path / "eurosat", monkeypatch)
    data = build_splits(DATASETS["eurosat"], split, tmp_path / "eurosat", 8, MEAN, STD, cache_root=tmp_path / "c")
    dataset = data.datasets["heldout"].source  # the cached dataset under the in-memory eval crops
    dataset[0]  # opens the memory map in this process
    assert len(pickle.dumps(dataset.cache)) < 10_000  # ids and index only, not the pixels
    batches = list(DataLoader(dataset, batch_size=4, num_workers=2))
    assert torch.equal(torch.cat([b[0] for b in batches]), torch.stack([dataset[i][0] for i in range(len(dataset))]))
