"""The paper profile's defaults on the five points where it follows the authors' code rather than the faster
choice (issue 13, docs/fidelity.md): normalization, precision, fixed input size, the cache's short side and EXIF
orientation. Each test fails if its default changes. Offline, CPU, seconds (tiny fixtures, random-init models)."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import raw_fixtures as fx
from conftest import ROOT
from repro import models
from repro.config import load_params
from repro.datasets import DATASETS, cache
from repro.datasets.images import read_image
from repro.datasets.loaders import build_splits, cache_rule, effective_exif
from repro.errors import ReproError
from repro.study import finetune, finished_record, resolved_config
from repro.state import fingerprint
from repro.train import Protocol, resolve_precision, train_config
from test_loaders import make
from test_rules import APTOS_LABELS, CCT

PAPER = load_params(ROOT / "profiles" / "paper.yaml")
SMOKE = load_params(ROOT / "profiles" / "smoke.yaml")
KEYS = ("normalization", "precision", "fixed_input_size", "cache_short_side", "exif")
DEIT = "timm/deit_tiny_patch16_224.fb_in1k"
TF_MODELS = ("timm/inception_resnet_v2.tf_in1k", "timm/pnasnet5large.tf_in1k")
TINY = "timm/test_efficientnet.r160_in1k"
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


def test_each_profile_sets_each_switch_and_dvc_tracks_them():
    assert {k: getattr(PAPER.finetune, k) for k in KEYS} == {
        "normalization": "imagenet", "precision": "fp32", "fixed_input_size": "authors", "cache_short_side": "auto",
        "exif": "authors"}
    assert {k: getattr(SMOKE.finetune, k) for k in KEYS} == {
        "normalization": "weights", "precision": "bf16", "fixed_input_size": "authors", "cache_short_side": "auto",
        "exif": "authors"}
    assert (ROOT / "params.yaml").read_text() == (ROOT / "profiles" / "smoke.yaml").read_text()
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["finetune"]
    tracked = set(stage["params"])
    assert {f"finetune.{k}" for k in KEYS} <= tracked and "finetune.amp" not in tracked


@pytest.mark.parametrize(("key", "value", "message"), [
    ("precision", "auto", "finetune.precision"), ("normalization", "timm", "finetune.normalization"),
    ("fixed_input_size", 224, "finetune.fixed_input_size"), ("cache_short_side", "big", "finetune.cache_short_side"),
    ("cache_short_side", 4, "finetune.cache_short_side"), ("exif", True, "finetune.exif"),
    ("amp", "auto", "finetune.amp: unknown key")])
def test_a_bad_value_is_one_line_naming_the_key(tmp_path, key, value, message):
    data = yaml.safe_load((ROOT / "profiles" / "paper.yaml").read_text())
    data["finetune"][key] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ReproError, match=message) as caught:
        load_params(path)
    assert "\n" not in str(caught.value)


# --- 1. normalization -------------------------------------------------------------------------------------------

def test_paper_plan_normalizes_the_tf_models_with_imagenet_mean_and_std():
    from repro.plan import resolve_plan

    plan = resolve_plan(PAPER, list(TF_MODELS), ["aptos"])
    for row in plan["models"]:
        assert row["normalization"] == f"mean {IMAGENET[0]}, std {IMAGENET[1]}"
    for name in TF_MODELS:
        config = resolved_config(name, "aptos", PAPER.finetune)
        assert (config["mean"], config["std"]) == IMAGENET
        # under `weights` each file's own config: these TF ports say 0.5 / 0.5
        own = resolved_config(name, "aptos", dataclasses.replace(PAPER.finetune, normalization="weights"))
        assert (own["mean"], own["std"]) == ([0.5] * 3, [0.5] * 3)


# --- 2. fixed input size ----------------------------------------------------------------------------------------

def test_paper_plan_runs_the_deits_at_224_with_both_transforms_at_224(tmp_path, monkeypatch):
    from repro.plan import resolve_plan

    fp = PAPER.finetune
    row = resolve_plan(PAPER, [DEIT], ["cct20"])["models"][0]
    assert row["image size"].startswith("224 (built without img_size")
    assert resolved_config(DEIT, "cct20", fp)["image_size"] == 224
    assert models.input_size(DEIT, 256, fp.fixed_input_size) == (224, None)  # built without img_size
    assert models.input_size(DEIT, 256, "resample") == (256, 256)
    assert models.input_size("torchvision/resnet50.IMAGENET1K_V1", 256, fp.fixed_input_size) == (256, 256)
    # the model as built: timm's patch embedding takes 224 px only, as in the authors' script
    net = models.build_model(DEIT, 3, image_size=None).eval()
    with torch.no_grad():
        assert net(torch.zeros(1, 3, 224, 224)).shape == (1, 3)
        with pytest.raises(Exception, match="224"):
            net(torch.zeros(1, 3, 256, 256))
    # both transforms at the run's size, as study.finetune builds them
    split = make("cassava", tmp_path / "cassava", monkeypatch)
    size = resolved_config(DEIT, "cassava", fp)["image_size"]
    data = build_splits(DATASETS["cassava"], split, tmp_path / "cassava", size, *IMAGENET)
    assert size == 224 and data.datasets["train"][0][0].shape == (3, 224, 224)
    assert data.datasets["heldout"][0][0].shape == (3, 224, 224)


# --- 3. the cache's short side ----------------------------------------------------------------------------------

def crop_sides(height: int, width: int, spec, size: int, draws: int = 3000) -> tuple[int, int]:
    """The smallest crop height and width torchvision's RandomResizedCrop draws from an image of that shape."""
    from torchvision.transforms import v2

    torch.manual_seed(0)
    image = torch.zeros(3, height, width, dtype=torch.uint8)
    sides = [v2.RandomResizedCrop.get_params(image, list(spec.crop_scale), list(spec.crop_ratio))[2:]
             for _ in range(draws)]
    return min(h for h, _ in sides), min(w for _, w in sides)


def smallest_crop(height: int, width: int, spec) -> float:
    """The analytic smallest crop side: area fraction at its minimum, aspect at the range's extreme."""
    q = min(spec.crop_ratio[0], 1 / spec.crop_ratio[1])
    return math.sqrt(height * width * spec.crop_scale[0] * q)


def test_auto_short_side_downsamples_every_training_crop_of_a_2000_px_image(tmp_path, monkeypatch):
    spec, size = DATASETS["cassava"], 256
    assert PAPER.finetune.cache_short_side == "auto"
    split = make("cassava", tmp_path / "cassava", monkeypatch)
    ids = fx.cassava(tmp_path / "cassava", APTOS_LABELS)
    rows = {r.split(",")[0]: r.split(",")[2] for r in split.read_text().splitlines()[1:]}
    big = next(i for i in ids if rows[i] == "train")
    yy, xx = np.mgrid[0:2000, 0:2000]
    Image.fromarray(np.stack([xx % 256, yy % 256, (xx + yy) % 256], 2).astype(np.uint8)).save(
        tmp_path / "cassava/train_images" / big, quality=90)
    data = build_splits(spec, split, tmp_path / "cassava", size, *IMAGENET, cache_root=tmp_path / "c",
                        cache_short_side=PAPER.finetune.cache_short_side)
    store = cache.ImageCache(data.cache)
    height, width = store.array(store.position[big]).shape[:2]
    assert height == width == cache.auto_short_side(1.0, size, spec.crop_scale[0], spec.crop_ratio) == 367
    assert height < 2000  # no larger than needed
    # every crop is at least `size` on both sides, so RandomResizedCrop only ever shrinks it
    assert smallest_crop(height, width, spec) >= size and min(crop_sides(height, width, spec, size)) >= size
    assert json.loads((data.cache / "meta.json").read_text())["short_side"].startswith("auto")
    # under the old rule (cache at the training size) the same image's crops are upsampled
    assert smallest_crop(size, size, spec) < size and min(crop_sides(size, size, spec, size)) < size
    # evaluation images come from their own cache at the input size: the decoded file's pixels, exactly
    direct = build_splits(spec, split, tmp_path / "cassava", size, *IMAGENET)
    assert data.eval_cache != data.cache
    for i in range(len(direct.datasets["heldout"])):
        assert torch.equal(direct.datasets["heldout"][i][0], data.datasets["heldout"][i][0])


@pytest.mark.parametrize(("height", "width"), [(2000, 2000), (1500, 2000), (600, 800), (512, 512), (300, 400),
                                               (2000, 300)])
def test_the_auto_side_is_the_smallest_without_upsampling_and_never_above_the_image(height, width):
    spec, size = DATASETS["aptos"], 256
    rule = cache_rule(spec, size, "auto")
    side = rule.side(height, width)
    short, long = min(height, width), max(height, width)
    assert side <= short  # the cache never upscales
    if side < short:
        resized = (side, int(side * long / short))
        assert smallest_crop(*resized, spec) >= size  # no crop upsampled
        smaller = (side - 1, int((side - 1) * long / short))
        assert smallest_crop(*smaller, spec) < size  # and one pixel less would upsample one
    assert cache_rule(spec, size, 256).side(height, width) == min(256, short)  # an int fixes it
    assert cache_rule(spec, size, None).side(height, width) == min(size, short)


def test_the_cache_key_and_meta_carry_the_rule_and_the_exif_setting(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    Image.new("RGB", (8, 6)).save(root / "a.png")
    rule = cache_rule(DATASETS["aptos"], 16, "auto")
    keys = {cache.cache_key(root, [("a.png",)], ["a"], how, "rgb", exif)
            for how in (rule, 16, cache.ShortSide(20)) for exif in (False, True)}
    assert len(keys) == 6


# --- 4. precision ------------------------------------------------------------------------------------------------

def test_fp32_never_enters_autocast_on_any_device(monkeypatch):
    assert PAPER.finetune.precision == "fp32"
    assert resolve_precision(PAPER.finetune.precision, torch.device("cuda")) is None
    assert resolve_precision(PAPER.finetune.precision, torch.device("cpu")) is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("bf16", torch.device("cuda")) is torch.bfloat16
    assert resolve_precision("bf16", torch.device("cpu")) is None  # bf16 is fp32 on a CPU

    entered = []

    class Spy:
        def __init__(self, *args, **kwargs):
            entered.append((args, kwargs))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(torch, "autocast", Spy)
    torch.manual_seed(0)
    images = torch.rand(8, 3, 8, 8)
    labels = torch.arange(8) % 2
    split = torch.utils.data.TensorDataset(images, labels)
    protocol = Protocol(epochs=1, batch_size=4, optimizer="adamw", adamw_wd_over_lr=True, schedule="cosine", seed=0,
                        precision=PAPER.finetune.precision)
    from repro.metrics import accuracy

    result = train_config(lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 2)),
                          {"train": split, "val": split}, {"val": labels.numpy()}, protocol, 1e-3, 0.0, accuracy,
                          select="val", report="val")
    assert len(result.curve) == 1 and entered == []  # trained and evaluated, autocast never constructed
    # the spy does see a bf16 run on a (pretended) bf16 GPU's dtype: the check above can fail
    from repro.train import autocast

    with autocast(torch.device("cuda"), torch.bfloat16):
        pass
    assert len(entered) == 1


# --- 5. EXIF orientation -----------------------------------------------------------------------------------------

def rotated_jpeg(path) -> None:
    """A 24 x 16 JPEG stored sideways, red left half and blue right half, with EXIF Orientation 6 (the viewer
    turns it 90 degrees clockwise: upright it is 16 wide and 24 high, red on top)."""
    pixels = np.zeros((16, 24, 3), dtype=np.uint8)
    pixels[:, :12] = (255, 0, 0)
    pixels[:, 12:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=95, exif=exif)


def upright(pixels: np.ndarray) -> bool:
    """True for the upright image (16 wide, red on top), False for the stored one (24 wide, red on the left)."""
    if pixels.shape[:2] == (24, 16):
        assert pixels[0, 8, 0] > 200 > pixels[0, 8, 2] and pixels[-1, 8, 2] > 200 > pixels[-1, 8, 0]
        return True
    assert pixels.shape[:2] == (16, 24) and pixels[8, 0, 0] > 200 > pixels[8, 0, 2]
    return False


def test_exif_under_authors_is_applied_for_cct20_and_not_for_eurosat(tmp_path, monkeypatch):
    assert PAPER.finetune.exif == SMOKE.finetune.exif == "authors"
    assert [n for n in DATASETS if effective_exif(DATASETS[n], "authors")] == [
        "cct20", "aptos", "hpa", "melanoma", "cassava"]  # the authors' cv2.imread loaders
    for name, image in (("cct20", f"eccv_18_all_images_sm/{CCT['train'][0][0]}.jpg"),
                        ("eurosat", "2750/AnnualCrop/AnnualCrop_1.jpg")):
        split = make(name, tmp_path / name, monkeypatch)
        rotated_jpeg(tmp_path / name / image)
        image_id = image.removeprefix("2750/") if name == "eurosat" else CCT["train"][0][0]
        seen = {}
        for setting in ("authors", "never", "always"):
            data = build_splits(DATASETS[name], split, tmp_path / name, 64, *IMAGENET, cache_root=tmp_path / "c",
                                exif=setting, cache_short_side="auto")
            # the images as read (smaller than 64 px, so both caches store them as they are)
            store = next(s for s in map(cache.ImageCache, (data.cache, data.eval_cache)) if image_id in s.position)
            seen[setting] = upright(store.array(store.position[image_id]))
        assert seen == {"authors": name == "cct20", "never": False, "always": True}, name
    # the one reader: read_image applies it on request, whatever the dataset
    path = tmp_path / "one" / "x.jpg"
    rotated_jpeg(path)
    assert upright(read_image(path.parent, ("x.jpg",), exif=True))
    assert not upright(read_image(path.parent, ("x.jpg",)))


# --- every run records each switch, and another value is another run --------------------------------------------

@pytest.fixture(scope="module")
def cassava_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    mp = pytest.MonkeyPatch()
    try:
        split = make("cassava", tmp / "cassava", mp)
    finally:
        mp.undo()
    fp = dataclasses.replace(PAPER.finetune, models=(TINY,), datasets=("cassava",), pretrained=False, epochs=1,
                             batch_size=16, lrs=(1e-3,), wds=(0.0,), image_size=32, device="cpu", num_workers=0)
    out = finetune(TINY, "cassava", fp, tmp / "cassava", split, ROOT / "weights.lock.json",
                   cache_root=tmp / "cache")
    return fp, out.record, tmp


def test_a_run_records_each_switch_and_what_it_used(cassava_run):
    fp, record, _ = cassava_run
    assert {k: record["config"][k] for k in KEYS} == {k: getattr(PAPER.finetune, k) for k in KEYS}
    assert "amp" not in record["config"]
    assert (record["config"]["mean"], record["config"]["std"]) == IMAGENET
    assert record["precision_used"] == "fp32" and record["exif_applied"] is True
    assert record["train_cache"].startswith("auto: no crop upsampled (size 32")


@pytest.mark.parametrize(("key", "other"), [("normalization", "weights"), ("precision", "bf16"),
                                            ("fixed_input_size", "resample"), ("cache_short_side", 256),
                                            ("exif", "never")])
def test_another_value_of_a_switch_is_another_run(cassava_run, key, other):
    fp, record, tmp = cassava_run
    run_dir = tmp / "runs" / "one"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run.json").write_text(json.dumps(record))
    assert finished_record(run_dir, TINY, "cassava", fp) == record  # same values: skipped as finished
    changed = dataclasses.replace(fp, **{key: other})
    assert finished_record(run_dir, TINY, "cassava", changed) is None  # another value: run again
    for model in (TINY, DEIT):
        config, other_config = (resolved_config(model, "cassava", f) for f in (fp, changed))
        assert other_config[key] == other and config != other_config
        assert fingerprint({"model": model, "config": config}) != fingerprint({"model": model,
                                                                              "config": other_config})


def test_a_release_re_reads_images_with_the_exif_rule_its_run_used(tmp_path):
    from repro.evaluate import Preprocessing, preprocessing_as_dict, report_split

    plain = Preprocessing(64, *map(tuple, IMAGENET))
    assert "exif" not in preprocessing_as_dict(plain)  # manifests written before the switch keep their bytes
    turned = dataclasses.replace(plain, exif=True)
    assert preprocessing_as_dict(turned)["exif"] is True
    # report_split reads as the run did: EuroSAT with exif applied only when the run applied it
    mp = pytest.MonkeyPatch()
    try:
        split = make("eurosat", tmp_path / "eurosat", mp)
    finally:
        mp.undo()
    heldout = next(r.split(",")[0] for r in split.read_text().splitlines()[1:] if r.endswith(",heldout"))
    rotated_jpeg(tmp_path / "eurosat" / "2750" / heldout)
    top_right_red = {}
    for pre in (plain, turned):
        read = report_split("eurosat", "heldout", dataclasses.replace(pre, image_size=24), tmp_path / "eurosat", split)
        crop = read.dataset.crops[read.ids.index(heldout)]  # uint8 (3, 24, 24) after Resize + CenterCrop
        top_right_red = {**top_right_red, pre.exif: bool(crop[0, 1, 21] > 200)}  # upright: red on top
    assert top_right_red == {False: False, True: True}
