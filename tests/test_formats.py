"""Readers of the six published raw layouts: `verify` lists every problem at once, `prepare` writes only the split
file, and the CLI verbs `repro data verify` / `repro data prepare` behave as a user meets them. Offline, tiny."""

import json

import pytest

import raw_fixtures as fx
from conftest import BIN, ROOT, run
from repro.datasets import cct20, eurosat, hpa, melanoma
from repro.datasets.verify import verify_dataset
from repro.errors import ReproError
from repro.splits import read_pins, read_split
from repro.study import prepare
from test_rules import APTOS_LABELS, CCT, HPA, MELANOMA

REPRO = str(BIN / "repro")


@pytest.mark.parametrize("name", ["aptos", "cassava", "eurosat", "melanoma", "cct20", "hpa"])
def test_every_fixture_in_its_published_format_verifies(tmp_path, name, monkeypatch):
    build = {"aptos": lambda: fx.aptos(tmp_path, APTOS_LABELS), "cassava": lambda: fx.cassava(tmp_path, APTOS_LABELS),
             "eurosat": lambda: fx.eurosat(tmp_path, 3), "melanoma": lambda: fx.melanoma(tmp_path, MELANOMA),
             "cct20": lambda: fx.cct20(tmp_path, CCT), "hpa": lambda: fx.hpa(tmp_path, HPA)}
    build[name]()
    if name == "hpa":
        import hashlib

        monkeypatch.setattr(hpa, "SPLIT_SHA256", hashlib.sha256((tmp_path / hpa.SPLIT_FILE).read_bytes()).hexdigest())
    assert verify_dataset(name, tmp_path, counts=False) == []
    # a tiny fixture never has the published size, so the count check always speaks (except melanoma: no counts)
    assert bool(verify_dataset(name, tmp_path)) == (name != "melanoma")


def test_aptos_verify_lists_every_problem(tmp_path):
    fx.aptos(tmp_path, APTOS_LABELS)
    lines = (tmp_path / "train.csv").read_text().splitlines()
    lines[3] = lines[3].split(",")[0] + ",7"  # row 4 of the file: label out of range
    lines.append(lines[1])  # a duplicate id
    lines.append("ffffffffff,2")  # its image does not exist
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "train_images/001a9c0f01.png").write_bytes(
        (tmp_path / "train_images/001a9c0f01.png").read_bytes()[:30])  # truncated
    (tmp_path / "train_images/005a9c0f05.png").write_bytes(b"not a png")
    problems = verify_dataset("aptos", tmp_path)
    joined = "\n".join(problems)
    assert f"{tmp_path}/train.csv:4: diagnosis '7' out of range 0..4" in problems
    assert f"{tmp_path}: duplicate id '000a9c0f00' (2 rows: train.csv:2, train.csv:29)" in problems
    assert f"{tmp_path}/train_images/ffffffffff.png: missing image (train.csv:30)" in problems
    assert f"{tmp_path}/train_images/001a9c0f01.png: does not decode" in joined
    assert f"{tmp_path}/train_images/005a9c0f05.png: does not decode (UnidentifiedImageError" in joined
    assert f"{tmp_path}: train.csv rows: 29, published 3662" in problems
    assert len(problems) == 6
    assert len(verify_dataset("aptos", tmp_path, decode=False, counts=False)) == 3
    with pytest.raises(ReproError, match=r"^\S+: 3 problem\(s\)\n  .*train.csv:4: diagnosis"):
        prepare("aptos", tmp_path, tmp_path / "x", tmp_path / "aptos.csv", tmp_path / "SHA256SUMS", 0,
                counts=False)
    assert not (tmp_path / "aptos.csv").exists() and not (tmp_path / "SHA256SUMS").exists()


def test_missing_csv_and_missing_columns(tmp_path):
    fx.cassava(tmp_path, [0, 1])
    (tmp_path / "train.csv").write_text("image_id,lab\n1.jpg,0\n")
    assert verify_dataset("cassava", tmp_path, counts=False) == [
        f"{tmp_path}/train.csv: missing column(s) label (found ['image_id', 'lab'])"]
    (tmp_path / "train.csv").unlink()
    assert verify_dataset("cassava", tmp_path, counts=False) == [f"{tmp_path}/train.csv: missing file"]
    assert verify_dataset("cassava", tmp_path / "none") == [
        f"{tmp_path}/none: missing raw directory; accept the rules at "
        "https://www.kaggle.com/competitions/cassava-leaf-disease-classification/rules, then `repro data fetch "
        "cassava` (Kaggle API token in ~/.kaggle/kaggle.json), or download it by hand and unzip into data/raw/cassava"]


def test_cct20_problems(tmp_path):
    fx.cct20(tmp_path, {**CCT, "cis_val": [("a", 33), ("b", 12), ("c", 30)]})
    folder = tmp_path / cct20.ANNOTATIONS
    (folder / "cis_test_annotations.json").write_text(json.dumps({"images": [], "annotations": {}}))
    train = json.loads((folder / "train_annotations.json").read_text())
    train["annotations"].append({"id": "x", "image_id": "ghost", "category_id": 1})
    train["annotations"].append({"id": "y", "image_id": train["images"][0]["id"], "category_id": 3})
    (folder / "train_annotations.json").write_text(json.dumps(train))
    (tmp_path / cct20.IMAGES / "a.jpg").unlink()
    problems = verify_dataset("cct20", tmp_path)
    assert problems == [
        f"{folder}/train_annotations.json: annotations[3]: image_id ghost is not in the file's images",
        f"{folder}/cis_val_annotations.json: annotations[1] (image b): category_id 12 out of range (expected one "
        "of [1, 3, 5, 6, 7, 8, 9, 10, 11, 16, 21, 33, 34, 51, 99] or 30)",
        f"{folder}/cis_test_annotations.json: not COCO-camera-traps JSON (no annotations, categories list)",
        f"{tmp_path}: duplicate id '5968c0f9-23d2-11e8-a6a3-ec086b02610b' (2 rows: train_annotations.json "
        "annotations[0], train_annotations.json annotations[4])",
        f"{tmp_path}: train images: 3, published 13553",
        f"{tmp_path}: cis_val images: 3, published 3484",
        f"{tmp_path}/{cct20.IMAGES}/ghost.jpg: missing image (train_annotations.json annotations[3])",
        f"{tmp_path}/{cct20.IMAGES}/a.jpg: missing image (cis_val_annotations.json annotations[0])",
    ]
    (folder / "cis_test_annotations.json").write_text("[1, 2]")
    (folder / "cis_val_annotations.json").unlink()
    problems = verify_dataset("cct20", tmp_path, counts=False)
    assert f"{folder}/cis_val_annotations.json: missing file" in problems
    assert f"{folder}/cis_test_annotations.json: not COCO-camera-traps JSON (expected an object with images, " \
           "annotations, categories)" in problems


def test_eurosat_missing_and_unknown_class_folders(tmp_path):
    assert verify_dataset("eurosat", tmp_path) == [
        f"{tmp_path}/2750: missing folder (EuroSAT.zip unpacks to 2750/<Class>/)"]
    fx.eurosat(tmp_path, 2)
    (tmp_path / "2750/River/River_1.jpg").rename(tmp_path / "2750/River/notes.txt")  # not a sample
    for f in (tmp_path / "2750/SeaLake").iterdir():
        f.unlink()
    (tmp_path / "2750/SeaLake").rmdir()
    (tmp_path / "2750/Clouds").mkdir()
    problems = verify_dataset("eurosat", tmp_path)
    assert problems == [f"{tmp_path}/2750/Clouds: unknown class folder (expected {', '.join(eurosat.CLASSES)})",
                        f"{tmp_path}/2750/SeaLake: missing class folder",
                        f"{tmp_path}: images: 17, published 27000"]


def test_melanoma_problems(tmp_path):
    fx.melanoma(tmp_path, MELANOMA)
    path = tmp_path / "jpeg-isic2019-512x512/train.csv"
    text = path.read_text().replace("ISIC_0000003,IP_0000002,male,45.0,torso,unknown,benign,0,0",
                                    "ISIC_0000003,IP_0000002,male,45.0,torso,unknown,benign,2,x")
    path.write_text(text + "ISIC_2000001,IP_9,male,45.0,torso,unknown,benign,0,1,512,512\n")
    problems = verify_dataset("melanoma", tmp_path)
    assert problems == [f"{path}:4: target '2' out of range 0..1",
                        f"{path}:4: tfrecord 'x' is neither -1 nor a fold id >= 0",
                        f"{tmp_path}: duplicate id 'ISIC_2000001' (2 rows: jpeg-melanoma-512x512/train.csv:2, "
                        "jpeg-isic2019-512x512/train.csv:7)",
                        f"{path.parent}/train/ISIC_2000001.jpg: missing image (jpeg-isic2019-512x512/train.csv:7)"]
    path.write_text("image_name,target\n")
    assert verify_dataset("melanoma", tmp_path) == [f"{path}: missing column(s) tfrecord (found ['image_name', "
                                                    "'target'])"]
    assert melanoma.SOURCES[0][0] == "2020"


def test_hpa_problems(tmp_path, monkeypatch):
    import hashlib

    split = fx.hpa(tmp_path, HPA)
    split.unlink()
    assert verify_dataset("hpa", tmp_path) == [f"{split}: missing file (the authors' HPA split, sha256 "
                                               f"{hpa.SPLIT_SHA256})"]
    fx.write_csv(split, ["Id", "Target", "Split"],
                 [[HPA[0][0], "16 0", "train"], [HPA[1][0], "7 1", "val"], ["nowhere", "1", "train"],
                  [HPA[2][0], "5", "test"], [HPA[3][0], "1 28", "train"]])
    monkeypatch.setattr(hpa, "SPLIT_SHA256", hashlib.sha256(split.read_bytes()).hexdigest())
    (tmp_path / f"train/{HPA[0][0]}_yellow.png").unlink()
    assert verify_dataset("hpa", tmp_path) == [
        f"{split}:3: Target '7 1' differs from {tmp_path}/train.csv's '7 1 2 0'",
        f"{split}:4: Id nowhere is not in {tmp_path}/train.csv",
        f"{split}:5: Split 'test' is not one of train, val, test_val",
        f"{split}:6: Target '1 28' is not space-separated label ids 0..27",
        f"{tmp_path}: train: 2, published 22582", f"{tmp_path}: val: 1, published 5664",
        f"{tmp_path}: test_val: 0, published 2826",
        f"{tmp_path}/train/{HPA[0][0]}_yellow.png: missing image ({hpa.SPLIT_FILE}:2)",
        *(f"{tmp_path}/train/nowhere_{c}.png: missing image ({hpa.SPLIT_FILE}:4)" for c in hpa.CHANNELS)]


def test_prepare_writes_the_pinned_split_and_a_manifest_for_a_real_dataset(tmp_path):
    raw = tmp_path / "raw"
    fx.aptos(raw, APTOS_LABELS)
    split, pins = tmp_path / "splits/aptos.csv", tmp_path / "splits/SHA256SUMS"
    info = prepare("aptos", raw, tmp_path / "prepared", split, pins, seed=0, counts=False)
    assert info["splits"] == {"train": 23, "heldout": 4} and info["images"] == 27
    assert read_pins(pins) == {"aptos.csv": info["sha256"]}
    assert [r[0] for r in read_split(split) if r[2] == "heldout"] == ["000a9c0f00", "004a9c0f04", "006a9c0f06",
                                                                       "007a9c0f07"]
    # the prepared folder (the dvc stage's output) holds only a manifest: finetune reads the raw folder
    assert [p.name for p in (tmp_path / "prepared").iterdir()] == ["manifest.json"]
    manifest = json.loads((tmp_path / "prepared/manifest.json").read_text())
    assert manifest["sha256"] == info["sha256"] and manifest["raw"] == str(raw) and manifest["skipped"] == []
    with pytest.raises(ReproError, match="published 3662"):  # the published count is checked by default
        prepare("aptos", raw, tmp_path / "prepared", split, pins, seed=0)


def test_cli_data_verify(tmp_path):
    fx.aptos(tmp_path, APTOS_LABELS)
    done = run([REPRO, "data", "verify", "aptos", "--raw", str(tmp_path), "--no-counts"], ROOT)
    assert done.stdout.strip() == f"ok: aptos in {tmp_path} matches its published layout"
    done = run([REPRO, "data", "verify", "aptos", "--raw", str(tmp_path)], ROOT, check=False)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"error: aptos in {tmp_path}: 1 problem(s)",
                                                f"  {tmp_path}: train.csv rows: 27, published 3662"]
    (tmp_path / "train_images/000a9c0f00.png").unlink()
    (tmp_path / "train_images/001a9c0f01.png").write_bytes(b"")
    done = run([REPRO, "data", "verify", "aptos", "--raw", str(tmp_path), "--no-counts"], ROOT, check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[0] == f"error: aptos in {tmp_path}: 2 problem(s)"
    assert lines[1] == f"  {tmp_path}/train_images/000a9c0f00.png: missing image (train.csv:2)"
    assert lines[2].startswith(f"  {tmp_path}/train_images/001a9c0f01.png: does not decode")
    done = run([REPRO, "data", "verify", "digits"], ROOT)
    assert done.stdout.startswith("ok: digits")
    assert run([REPRO, "data", "verify", "mnist"], ROOT, check=False).returncode == 2


def test_cli_data_prepare_real_dataset(tmp_path):
    raw, work = tmp_path / "raw", tmp_path / "work"
    work.mkdir()
    fx.eurosat(raw, 5)
    split = tmp_path / "out/eurosat.csv"
    args = [REPRO, "data", "prepare", "eurosat", "--raw", str(raw), "--split", str(split), "--out",
            str(tmp_path / "prepared"), "--params", str(ROOT / "params.yaml")]
    done = run([*args, "--no-counts"], work)  # cwd: the pins land in work/data/splits, not the repository
    assert "prepared eurosat: 50 images (heldout 10, train 40)" in done.stdout
    assert len(read_split(split)) == 50
    assert list(read_pins(work / "data/splits/SHA256SUMS")) == ["eurosat.csv"]
    assert [p.name for p in (tmp_path / "prepared").iterdir()] == ["manifest.json"]
    done = run(args, work, check=False)  # published count
    assert done.returncode == 1 and "images: 50, published 27000" in done.stderr
    (raw / "2750/Forest/Forest_1.jpg").unlink()  # other raw data: the pinned split is not replaced
    before = split.read_bytes()
    done = run([*args, "--no-counts"], work, check=False)
    assert done.returncode == 1 and "differs from the one pinned" in done.stderr
    assert split.read_bytes() == before


def test_hpa_duplicate_id_in_train_csv(tmp_path, monkeypatch):
    import hashlib

    split = fx.hpa(tmp_path, HPA)
    monkeypatch.setattr(hpa, "SPLIT_SHA256", hashlib.sha256(split.read_bytes()).hexdigest())
    with open(tmp_path / "train.csv", "a") as handle:
        handle.write(f"{HPA[1][0]},7 1 2 0\n")
    assert verify_dataset("hpa", tmp_path, counts=False) == [
        f"{tmp_path}/train.csv:6: duplicate Id {HPA[1][0]}"]
