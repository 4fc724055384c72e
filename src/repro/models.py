"""The model registry: every ImageNet-pretrained checkpoint of the study, pinned by identity, and `build_model`.

A name is structured as `<library>/<arch>.<tag>` (timm's `arch.tag` rule with the library in front) and becomes a
path by the same string, e.g. `results/runs/torchvision/resnet50.IMAGENET1K_V1/`. Importing this module does not
import torch; `build_model` does. Exercised by `repro models list`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from repro.registry import Registry

if TYPE_CHECKING:
    from torch import nn

TORCHVISION_META = "torchvision weights meta (torchvision 0.29.1)"
TIMM_2022 = "timm results-imagenet.csv (2022)"


@dataclass(frozen=True)
class ModelSpec:
    """One pretrained checkpoint and everything downstream needs to use it."""

    library: Literal["torchvision", "timm"]
    arch: str
    tag: str  # torchvision weights enum member, or timm pretrained tag
    display: str  # the paper's name for it
    top1: float  # ImageNet top-1 of exactly these weights, percent
    top1_source: str
    input_size: int  # native input size of the weights' own config
    head: str  # torchvision: dotted path of the classifier module; timm: "reset_classifier"
    fixed_input_size: bool = False  # ViTs: position embeddings need img_size at build time
    in_paper: bool = True

    @property
    def name(self) -> str:
        return f"{self.library}/{self.arch}.{self.tag}"

    @property
    def path(self) -> Path:
        """The one name -> path rule: the structured name is a relative path."""
        return Path(self.library) / f"{self.arch}.{self.tag}"


MODELS: Registry[ModelSpec] = Registry("model")


def _register(spec: ModelSpec) -> None:
    MODELS.register(spec.name, spec)


def _tv(arch: str, display: str, top1: float, head: str) -> None:
    _register(ModelSpec("torchvision", arch, "IMAGENET1K_V1", display, top1, TORCHVISION_META, 224, head))


def _timm(arch: str, tag: str, display: str, top1: float, size: int, note: str = "", fixed: bool = False) -> None:
    source = TIMM_2022 + (f", {note}" if note else "")
    _register(ModelSpec("timm", arch, tag, display, top1, source, size, "reset_classifier", fixed_input_size=fixed))


# The 19 checkpoints named by the authors' sample_train.py, in order of ImageNet top-1 (PAPER.md section 2).
_tv("alexnet", "AlexNet", 56.522, "classifier.6")
_tv("squeezenet1_1", "SqueezeNet 1.1", 58.178, "classifier.1")
_tv("shufflenet_v2_x0_5", "ShuffleNetV2 x0.5", 60.552, "fc")
_tv("mobilenet_v3_small", "MobileNetV3-Small", 67.668, "classifier.3")
_tv("mnasnet0_5", "MnasNet 0.5", 67.734, "classifier.1")
_tv("shufflenet_v2_x1_0", "ShuffleNetV2 x1.0", 69.362, "fc")
_tv("vgg13_bn", "VGG-13-BN", 71.586, "classifier.6")
_timm("deit_tiny_patch16_224", "fb_in1k", "DeiT-Tiny", 72.17, 224, fixed=True)
_tv("vgg16_bn", "VGG-16-BN", 73.360, "classifier.6")
_tv("densenet121", "DenseNet-121", 74.434, "classifier")
_tv("resnet50", "ResNet-50", 76.130, "fc")
_tv("resnext50_32x4d", "ResNeXt-50 32x4d", 77.618, "fc")
_timm("efficientnet_b0", "ra_in1k", "EfficientNet-B0", 77.70, 224)
_tv("resnet152", "ResNet-152", 78.312, "fc")
_timm("deit_small_patch16_224", "fb_in1k", "DeiT-Small", 79.86, 224, fixed=True)
_timm("inception_resnet_v2", "tf_in1k", "Inception-ResNet-v2", 80.46, 299, note="299 px")
_timm("convnext_tiny", "fb_in1k", "ConvNeXt-Tiny", 82.06, 224)
_timm("pnasnet5large", "tf_in1k", "PNASNet-5-Large", 82.78, 331, note="331 px")
_timm("efficientnet_b4", "ra2_in1k", "EfficientNet-B4", 83.42, 320, note="measured at 384 px")


def get_spec(name: str) -> ModelSpec:
    return MODELS[name]


def normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) from the weights' own preprocessing config, never retyped here (DESIGN.md house style 4)."""
    spec = MODELS[name]
    if spec.library == "torchvision":
        from torchvision.models import get_model_weights

        preset = get_model_weights(spec.arch)[spec.tag].transforms()
        return tuple(preset.mean), tuple(preset.std)
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(f"{spec.arch}.{spec.tag}")
    return tuple(cfg.mean), tuple(cfg.std)


def _replace_head(model: nn.Module, path: str, num_classes: int) -> None:
    """Swap the module at `path` for a fresh one of the same kind with `num_classes` outputs."""
    from torch import nn

    parent_path, _, leaf = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    old = parent.get_submodule(leaf)
    if isinstance(old, nn.Linear):
        new: nn.Module = nn.Linear(old.in_features, num_classes)
    elif isinstance(old, nn.Conv2d):  # SqueezeNet's final 1x1 conv (PAPER.md section 4)
        new = nn.Conv2d(old.in_channels, num_classes, kernel_size=old.kernel_size, stride=old.stride)
    else:
        raise TypeError(f"cannot replace a classifier head of type {type(old).__name__} at {path!r}")
    setattr(parent, leaf, new)


def build_model(
    name: str,
    num_classes: int,
    *,
    pretrained: bool = False,
    image_size: int | None = None,
    weights_dir: Path | None = None,
) -> nn.Module:
    """Build `name` with a `num_classes`-way head; random init unless `pretrained`.

    Pretrained weights are read from a local file only (see `repro.weights.locate`), never executed as code.
    """
    spec = MODELS[name]
    weights_file = None
    if pretrained:
        from repro.weights import locate

        weights_file = locate(spec, weights_dir)
    if spec.library == "torchvision":
        import torchvision

        if weights_file is None:
            return torchvision.models.get_model(spec.arch, weights=None, num_classes=num_classes)
        from repro.weights import load_state_dict

        model = torchvision.models.get_model(spec.arch, weights=None)
        model.load_state_dict(load_state_dict(weights_file))
        _replace_head(model, spec.head, num_classes)
        return model

    import timm

    kwargs: dict[str, object] = {"num_classes": num_classes}
    if spec.fixed_input_size and image_size is not None:
        kwargs["img_size"] = image_size
    if weights_file is not None:
        from repro.weights import load_state_dict

        # Hand timm the tensors we loaded safely; it drops the 1000-way classifier and resamples position
        # embeddings for another img_size. source="" stops it from preferring the HF hub over the state dict.
        kwargs["pretrained_cfg_overlay"] = {"source": "", "state_dict": load_state_dict(weights_file)}
    return timm.create_model(f"{spec.arch}.{spec.tag}", pretrained=weights_file is not None, **kwargs)
