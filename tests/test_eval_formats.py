"""`repro release` and `repro eval` on each of the six published formats: a run fine-tuned on a tiny raw fixture
(the tiny timm test model, 1 epoch) is released and re-evaluated from the raw folder it was trained on, with its
channel order and, for HPA, multi-hot targets. Offline, CPU."""

import dataclasses
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import raw_fixtures as fx
from conftest import ROOT
from repro.datasets import DATASETS
from repro.errors import ReproError
from repro.evaluate import Preprocessing, read_manifest, report_split, verify_all
from repro.release import RunRef, read_metadata, release, released_path
from repro.study import finetune_to_dir
from test_loaders import TINY, make, tiny_params  # noqa: F401 (tiny_params: a fixture, used by name)

FORMATS = ["cct20", "aptos", "hpa", "melanoma", "cassava", "eurosat"]
# every tfrecord fold of each source holds both classes, so the held-out folds have both and ROC AUC is defined
MELANOMA_BOTH = {folder: [(f"ISIC_{k}{fold}{t}", t, fold) for fold in range(5) for t in (0, 1)]
                 for k, folder in ((1, "jpeg-melanoma-512x512"), (2, "jpeg-isic2019-512x512"))}


def vary_pixels(root, seed=0):
    """Give every image of a fixture its own random pixels (12 x 10), so that predictions differ per image and
    the channel order matters."""
    rng = np.random.default_rng(seed)
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in (".png", ".jpg"):
            with Image.open(path) as image:
                mode = image.mode
            shape = (10, 12) if mode == "L" else (10, 12, 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)


def released_on(name, tmp_path, monkeypatch, tiny_params):
    """(raw folder, split file, manifest, entry): a release of a run fine-tuned on the `name` fixture."""
    raw = tmp_path / "raw" / name
    split = make(name, raw, monkeypatch)
    if name == "melanoma":
        shutil.rmtree(raw)
        fx.melanoma(raw, MELANOMA_BOTH)
        from repro.datasets.raw import split_rows
        from repro.splits import atomic_write, render

        atomic_write(split, render(split_rows(name, raw, counts=False)))
    vary_pixels(raw)
    run_dir = tmp_path / "runs" / name
    status, record = finetune_to_dir(TINY, name, tiny_params, raw, split, ROOT / "weights.lock.json", run_dir)
    assert status == "done" and record["status"] == "ok" and np.isfinite(record["value"])
    manifest = tmp_path / "paper" / "checkpoints.yaml"
    # metrics other than accuracy take a stated tolerance; 0: the same machine must give the same number
    entry, = release([RunRef(run_dir, split, raw)], tmp_path / "paper" / "checkpoints", manifest, tolerance=0.0)
    return raw, split, manifest, entry


@pytest.mark.parametrize("name", FORMATS)
def test_a_release_of_each_format_verifies_from_its_raw_folder(tmp_path, monkeypatch, tiny_params, name):
    spec = DATASETS[name]
    raw, split, manifest, entry = released_on(name, tmp_path, monkeypatch, tiny_params)
    order = "bgr" if spec.opencv_read else "rgb"
    assert entry.preprocessing.channel_order == order and entry.metric == spec.metric
    assert read_manifest(manifest)[0].preprocessing.channel_order == order  # through the YAML and back
    meta = read_metadata(released_path(tmp_path / "paper" / "checkpoints", TINY, name))
    assert meta["preprocessing"].get("channel_order", "rgb") == order
    verdict, = verify_all(read_manifest(manifest), manifest, data_dir=lambda d: tmp_path / "raw" / d,
                          splits_dir=split.parent, cache_dir=tmp_path / "cache")
    assert verdict.verdict == "pass", verdict.detail
    assert verdict.difference == 0.0 and verdict.value == entry.value
    report_rows = [line for line in split.read_text().splitlines()[1:] if line.endswith("," + spec.report_split)]
    assert verdict.images == len(report_rows) > 0


def test_the_recorded_channel_order_is_the_one_evaluated(tmp_path, monkeypatch, tiny_params):
    raw, split, manifest, entry = released_on("aptos", tmp_path, monkeypatch, tiny_params)
    pre = entry.preprocessing
    assert pre.channel_order == "bgr"
    as_recorded = report_split("aptos", entry.split, pre, raw, split).dataset
    as_rgb = report_split("aptos", entry.split, dataclasses.replace(pre, channel_order="rgb"), raw, split).dataset
    mean, std = torch.tensor(pre.mean).view(3, 1, 1), torch.tensor(pre.std).view(3, 1, 1)
    for i in range(len(as_recorded)):  # the same pixels with channels reversed, each normalized by its channel
        assert torch.allclose((as_recorded[i][0] * std + mean).flip(0), as_rgb[i][0] * std + mean, atol=1e-6)
        assert not torch.equal(as_recorded[i][0], as_rgb[i][0])


def test_hpa_is_scored_on_multi_hot_targets(tmp_path, monkeypatch, tiny_params):
    raw, split, manifest, entry = released_on("hpa", tmp_path, monkeypatch, tiny_params)
    data = report_split("hpa", entry.split, entry.preprocessing, raw, split)
    assert data.targets.shape == (len(data.ids), 28) and data.targets.dtype == np.float32
    assert entry.metric == "macro_f1"


def test_a_published_format_without_its_raw_data_names_what_to_fetch(tmp_path, monkeypatch, tiny_params):
    raw, split, manifest, entry = released_on("aptos", tmp_path, monkeypatch, tiny_params)
    shutil.rmtree(raw)
    verdict, = verify_all(read_manifest(manifest), manifest, data_dir=lambda d: tmp_path / "raw" / d,
                          splits_dir=split.parent, cache_dir=tmp_path / "cache")
    assert verdict.verdict == "error"
    assert f"{raw}: missing data folder for aptos; {DATASETS['aptos'].fetch_hint}" in verdict.detail


def test_an_old_manifest_without_channel_order_reads_as_rgb():
    from repro.evaluate import _entry_from, entry_as_yaml

    entry = read_manifest(ROOT / "paper" / "checkpoints.yaml")[0]
    raw = entry_as_yaml(entry)
    assert "channel_order" not in raw["preprocessing"]  # digits: rgb, so the committed bytes did not change
    assert _entry_from(raw, "x").preprocessing == Preprocessing(entry.preprocessing.image_size,
                                                                entry.preprocessing.mean, entry.preprocessing.std)
    raw["preprocessing"]["channel_order"] = "bgrx"
    with pytest.raises(ReproError, match="channel_order 'bgrx' is not 'rgb' or 'bgr'"):
        _entry_from(raw, "x")
