"""Pretrained and fine-tuned weight files: where they live and how they are loaded without executing code.

Loading never unpickles arbitrary objects: safetensors files go through `safetensors.torch.load_file`, and the
pickled `.pth` files torchvision publishes go through `torch.load(weights_only=True)` with no fallback.
Exercised by `repro check` (locating) and `repro finetune` with `pretrained: true` (loading).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from repro.errors import ReproError

if TYPE_CHECKING:
    import torch

    from repro.models import ModelSpec

SAFE_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".pth", ".pt", ".bin")


def source_url(spec: ModelSpec) -> str:
    """Where the pretrained file of `spec` is published."""
    if spec.library == "torchvision":
        from torchvision.models import get_model_weights

        return get_model_weights(spec.arch)[spec.tag].url
    return f"https://huggingface.co/timm/{spec.arch}.{spec.tag}/resolve/main/model.safetensors"


def file_name(spec: ModelSpec) -> str:
    if spec.library == "torchvision":
        return source_url(spec).rsplit("/", 1)[-1]
    return f"{spec.arch}.{spec.tag}.safetensors"


def default_dir(spec: ModelSpec) -> Path:
    """The usual cache location: torch hub's checkpoints folder (honours TORCH_HOME), or ours under HF_HOME."""
    if spec.library == "torchvision":
        torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
        return torch_home / "hub" / "checkpoints"
    hf_home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    return hf_home / "repro-weights"


def locate(spec: ModelSpec, weights_dir: Path | None = None) -> Path:
    """The local weight file of `spec`, or a ReproError that says which file is missing and where to get it."""
    folder = Path(weights_dir) if weights_dir is not None else default_dir(spec)
    path = folder / file_name(spec)
    if not path.is_file():
        raise ReproError(
            f"pretrained weights for {spec.name} not found: {path}; download {source_url(spec)} to that path "
            "(or point finetune.weights_dir at a folder holding it)"
        )
    return path


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors only: safetensors, or a pickle restricted by `weights_only=True`. Anything else is refused."""
    import torch

    path = Path(path)
    if path.suffix in SAFE_SUFFIXES:
        from safetensors.torch import load_file

        return load_file(str(path))
    if path.suffix in PICKLE_SUFFIXES:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # the restricted unpickler refuses anything but tensors and containers
            raise ReproError(f"{path}: refused to load (not a plain tensor checkpoint): {exc}") from None
        if not isinstance(state, dict):
            raise ReproError(f"{path}: expected a state dict, found {type(state).__name__}")
        return state
    raise ReproError(f"{path}: unknown weight format {path.suffix!r}; expected .safetensors or .pth")
