"""params.yaml -> frozen, validated dataclasses. Nothing else reads params.yaml.

Sections are named after the DVC stages that read them. Every problem (missing section, wrong type, unknown model or
dataset) comes back as one ReproError line naming the key. Exercised by every `repro` verb that takes `--params`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError, model_validator
from pydantic.dataclasses import dataclass

from repro.errors import ReproError

# Lax mode so YAML lists become tuples and `1e-3` (a string to YAML 1.1) a float; ints and bools stay strict.
_STRICT = ConfigDict(extra="forbid")
PROFILES = ("smoke", "paper")

# Ranges of the numeric parameters: wide enough for any study of this kind, narrow enough that a typo (an extra
# zero, a negative seed, `.inf`) is caught before hours of compute. Bootstrap arrays are resamples x models floats,
# so 100,000 resamples of a 19-model fit stay within tens of MB.
MAX_EPOCHS = 1000
MAX_BATCH = 65536
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 8, 4096
MAX_RESAMPLES = 100_000
MAX_EXAMPLE_RESAMPLES = 10_000  # resamples x test images (CCT-20: 15,827) are held at once
MAX_SEED = 2**32 - 1  # numpy's legacy seeding takes 0 .. 2**32 - 1
Seed = Annotated[StrictInt, Field(ge=0, le=MAX_SEED)]


def _device_name(value: str) -> str:
    """The device rule's syntax (repro.train.check_device adds whether this machine has that GPU)."""
    import re

    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
        raise ValueError(f"{value!r} is not a device this tool runs on; valid: auto, cpu, cuda, cuda:N")
    return value


Device = Annotated[StrictStr, AfterValidator(_device_name)]


@dataclass(frozen=True, config=_STRICT)
class PrepareParams:
    datasets: Annotated[tuple[StrictStr, ...], Field(min_length=1)]
    seed: Seed  # seed of split rules that take one (the embedded digits); the paper's rules fix their own


@dataclass(frozen=True, config=_STRICT)
class FinetuneParams:
    models: Annotated[tuple[StrictStr, ...], Field(min_length=1)]
    datasets: Annotated[tuple[StrictStr, ...], Field(min_length=1)]
    pretrained: StrictBool
    weights_dir: StrictStr | None
    epochs: Annotated[StrictInt, Field(gt=0, le=MAX_EPOCHS)]
    batch_size: Annotated[StrictInt, Field(gt=0, le=MAX_BATCH)]
    optimizer: Literal["adamw", "sgd"]
    lrs: Annotated[tuple[Annotated[float, Field(gt=0, le=10, allow_inf_nan=False)], ...], Field(min_length=1)]
    wds: Annotated[tuple[Annotated[float, Field(ge=0, le=10, allow_inf_nan=False)], ...], Field(min_length=1)]
    # The authors hand AdamW `weight_decay = wd / lr` (PAPER.md section 4); True reproduces that quirk.
    adamw_wd_over_lr: StrictBool
    schedule: Literal["cosine", "step"]
    image_size: Annotated[StrictInt | None, Field(ge=MIN_IMAGE_SIZE, le=MAX_IMAGE_SIZE)]  # None: the dataset's own
    seed: Seed
    device: Device  # "auto", "cpu", "cuda", "cuda:1"
    num_workers: Annotated[StrictInt, Field(ge=0, le=256)]
    # paper: select epoch and config on the dataset's selection split, which for APTOS, Cassava, EuroSAT and Melanoma
    # is the reported split itself (PAPER.md section 4). strict: select on a stratified, seeded slice carved out of
    # train (strict_val_fraction of it), so the reported split never influences selection.
    protocol: Literal["paper", "strict"]
    strict_val_fraction: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)]
    selection: Literal["best_epoch", "last_epoch"]  # best_epoch: the paper's best validation epoch per config
    # fp32: no autocast on any device, as the authors' sample_train.py ran. bf16: bf16 autocast on CUDA where the
    # GPU supports it, fp32 elsewhere (CPU); run.json records which one a run used ("precision_used").
    precision: Literal["fp32", "bf16"]
    channels_last: StrictBool
    compile: StrictBool  # torch.compile the model (GPU runs; compile time dominates small CPU runs)
    deterministic: StrictBool  # deterministic kernels: on CPU a resumed run then equals an uninterrupted one
    # imagenet: the ImageNet mean/std for every model, as every one of the authors' datasets/*.py normalizes
    # (e.g. datasets/aptos.py:56-57). weights: each weight file's own preprocessing config (repro.models).
    normalization: Literal["imagenet", "weights"]
    # Models whose patch embedding fixes the input size (ModelSpec.fixed_input_size: the DeiTs). authors: built
    # without img_size as sample_train.py:56,58 does, so trained and evaluated at the model's own size (224);
    # resample: built at the dataset's size with resampled position embeddings.
    fixed_input_size: Literal["authors", "resample"]
    # Shorter side of the cached training images (repro.datasets.cache). auto: the smallest side at which no
    # RandomResizedCrop of the dataset's scale/ratio range is upsampled, never above the image's own; an int: that
    # side (the training size itself stores images as the eval transform sees them).
    cache_short_side: Literal["auto"] | Annotated[StrictInt, Field(ge=MIN_IMAGE_SIZE, le=MAX_IMAGE_SIZE)]
    # authors: apply a JPEG's EXIF orientation for the datasets the authors read with cv2.imread (which applies it:
    # CCT-20, APTOS, HPA, Melanoma, Cassava), not for EuroSAT (read with PIL, which does not); never / always.
    exif: Literal["authors", "never", "always"]
    # "bgr" feeds CCT-20, APTOS, HPA and Melanoma with channels reversed, as the authors' cv2.imread loaders did
    # (PAPER.md section 4); the other datasets are RGB either way (repro.datasets.loaders).
    channel_order: Literal["rgb", "bgr"] = "rgb"


@dataclass(frozen=True, config=_STRICT)
class AnalyzeParams:
    threshold: Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)]  # ImageNet top-1 in percent; the second
    # fit uses models at or above it
    transform: Literal["linear", "logit", "probit"]  # axis scale of the fits; linear is the paper's reading
    bootstrap_resamples: Annotated[StrictInt, Field(gt=0, le=MAX_RESAMPLES)]
    bootstrap_seed: Seed
    # Resamples of test examples for each model's kappa / AUC / F1 interval (accuracy uses the exact binomial).
    example_resamples: Annotated[StrictInt, Field(gt=0, le=MAX_EXAMPLE_RESAMPLES)]
    ci_level: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)]
    # Which value of each run the headline fits use (repro.sensitivity.RULES): best_val is the report value at the
    # best-validation epoch of the best-validation config; max_report the authors' printed maximum over configs;
    # last_epoch the best-validation config's last epoch. Every rule is in the sensitivity table either way.
    report_rule: Literal["best_val", "max_report", "last_epoch"] = "best_val"


@dataclass(frozen=True, config=_STRICT)
class FiguresParams:
    label_points: StrictBool


@dataclass(frozen=True, config=_STRICT)
class VerifyParams:
    claims: StrictStr


@dataclass(frozen=True, config=_STRICT)
class Params:
    profile: Literal["smoke", "paper"]
    prepare: PrepareParams
    finetune: FinetuneParams
    analyze: AnalyzeParams
    figures: FiguresParams
    verify: VerifyParams

    @model_validator(mode="after")
    def _names_exist(self) -> Params:
        from repro.datasets import DATASETS
        from repro.models import MODELS

        for key, names, registry in (
            ("prepare.datasets", self.prepare.datasets, DATASETS),
            ("finetune.datasets", self.finetune.datasets, DATASETS),
            ("finetune.models", self.finetune.models, MODELS),
        ):
            unknown = [name for name in names if name not in registry]
            if unknown:
                raise ValueError(f"{key}: unknown {registry.kind} {unknown[0]!r}; valid: {', '.join(registry)}")
            if len(set(names)) != len(names):
                raise ValueError(f"{key}: lists a name twice")
        missing = [name for name in self.finetune.datasets if name not in self.prepare.datasets]
        if missing:
            raise ValueError(f"finetune.datasets: {missing[0]!r} is not in prepare.datasets")
        return self


def _format(error: ValidationError, source: str) -> str:
    parts = []
    for item in error.errors():
        loc = ".".join(str(p) for p in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "missing":
            parts.append(f"{loc}: missing {'section' if len(item['loc']) == 1 else 'key'}")
        elif item["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            parts.append(f"{loc}: unknown key")
        elif loc:
            parts.append(f"{loc}: {message} (got {item['input']!r})")
        else:
            parts.append(message)
    return f"{source}: " + "; ".join(parts)


def parse_params(data: object, source: str = "params.yaml") -> Params:
    if not isinstance(data, dict):
        raise ReproError(f"{source}: expected a mapping of sections, found {type(data).__name__}")
    try:
        return Params(**data)
    except ValidationError as error:
        raise ReproError(_format(error, source)) from None
    except TypeError as error:  # positional/unknown top-level keys on the dataclass itself
        raise ReproError(f"{source}: {error}") from None


def load_params(path: Path | str = "params.yaml") -> Params:
    from repro.inputs import load_yaml

    path = Path(path)
    data = load_yaml(path, "run from the repository root or pass --params")
    return parse_params(data, str(path))
