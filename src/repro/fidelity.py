"""Every element of the fine-tuning protocol against the authors' released code, as data.

One `Element` per protocol element: where the authors' code sets it (file:line in
github.com/mlfoundations/imagenet-applications-transfer at AUTHORS_COMMIT), what that code does, what the paper
profile (profiles/paper.yaml) does, whether that is the same, a deviation (and the switch) or unknown (what no source
settles), and the tests that pin it. `docs/fidelity.md` is generated from this list (`render_markdown`), and
`repro finetune --dry-run` marks every element where a plan differs from the authors' code (`marks`, used by
repro.plan). tests/test_fidelity_table.py keeps the list, the generated page and the resolved paper plan in step.

Elements backed by a parameter name it in `key` ("finetune.lrs") and hold the paper profile's value in `paper` and
the value that reproduces the authors' code in `authors_value`; elements fixed in code have key "code".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

AUTHORS_REPO = "github.com/mlfoundations/imagenet-applications-transfer"
AUTHORS_COMMIT = "52100273499fa9815109a5db0d74308f533e5f9e"
STATUSES = ("same", "deviation", "unknown")
CODE = "code"

# Parameters being introduced or retired by a change in flight: a pending key's row is compared with the resolved
# paper plan once the key exists, a retiring key's row may outlive its parameter. Both empty when nothing is in flight.
PENDING_KEYS: frozenset[str] = frozenset()
RETIRING_KEYS: frozenset[str] = frozenset()

_UNSET = object()

PAPER_MODELS = (
    "torchvision/alexnet.IMAGENET1K_V1",
    "torchvision/squeezenet1_1.IMAGENET1K_V1",
    "torchvision/shufflenet_v2_x0_5.IMAGENET1K_V1",
    "torchvision/mobilenet_v3_small.IMAGENET1K_V1",
    "torchvision/mnasnet0_5.IMAGENET1K_V1",
    "torchvision/shufflenet_v2_x1_0.IMAGENET1K_V1",
    "torchvision/vgg13_bn.IMAGENET1K_V1",
    "timm/deit_tiny_patch16_224.fb_in1k",
    "torchvision/vgg16_bn.IMAGENET1K_V1",
    "torchvision/densenet121.IMAGENET1K_V1",
    "torchvision/resnet50.IMAGENET1K_V1",
    "torchvision/resnext50_32x4d.IMAGENET1K_V1",
    "timm/efficientnet_b0.ra_in1k",
    "torchvision/resnet152.IMAGENET1K_V1",
    "timm/deit_small_patch16_224.fb_in1k",
    "timm/inception_resnet_v2.tf_in1k",
    "timm/convnext_tiny.fb_in1k",
    "timm/pnasnet5large.tf_in1k",
    "timm/efficientnet_b4.ra2_in1k",
)
PAPER_DATASETS = ("cct20", "aptos", "hpa", "melanoma", "cassava", "eurosat")


@dataclass(frozen=True)
class Element:
    name: str
    key: str  # "finetune.<param>" or CODE
    authors_ref: str  # file:line at AUTHORS_COMMIT
    authors: str  # what the authors' code does
    paper: Any  # the paper profile's resolved value (a params key) or what the code does (CODE)
    status: str  # one of STATUSES
    why: str  # deviation: why, and the switch; unknown: what no source settles; same: "" or a note
    pinned_by: tuple[str, ...]  # pytest node ids
    authors_value: Any = _UNSET  # params keys: the value that reproduces the authors' code (default: `paper`)

    @property
    def param(self) -> str | None:
        return None if self.key == CODE else self.key.split(".", 1)[1]

    @property
    def reference_value(self) -> Any:
        return self.paper if self.authors_value is _UNSET else self.authors_value


def _e(name, key, ref, authors, paper, status, why, pinned, authors_value=_UNSET) -> Element:
    return Element(name, key, ref, authors, paper, status, why, tuple(pinned), authors_value)


T = "tests/test_train.py::"
F = "tests/test_fidelity_table.py::"
PLAN = T + "test_the_paper_plan_spells_out_every_protocol_element"
CHECK = F + "test_the_table_states_the_resolved_paper_plan"

ELEMENTS: tuple[Element, ...] = (
    _e("models", "finetune.models", "sample_train.py:38-106",
       "19 ImageNet models built by torchvision/timm name (`pretrained=True`); the list in line 22 is an example",
       PAPER_MODELS, "same", "", [CHECK, "tests/test_models.py::test_nineteen_paper_models_span_the_papers_top1_range"]),
    _e("datasets", "finetune.datasets", "datasets/*.py", "six loaders: CCT-20, APTOS, HPA, Melanoma, Cassava, EuroSAT",
       PAPER_DATASETS, "same", "", [CHECK, "tests/test_datasets.py::test_paper_datasets_are_registered_with_their_protocol"]),
    _e("initialization", "finetune.pretrained", "sample_train.py:23", "ImageNet-pretrained weights", True, "same", "",
       [CHECK]),
    _e("weight files", "finetune.weights_dir", "sample_train.py:39", "torchvision/timm download cache", None, "same",
       "where the sha256-pinned files are cached; no effect on training",
       [CHECK, "tests/test_models.py::test_torchvision_pretrained_loads_the_file_and_replaces_squeezenets_conv_head"]),
    _e("optimizer", "finetune.optimizer", "sample_train.py:24, 129-131", "AdamW", "adamw", "same", "",
       [CHECK, T + "test_adamw_weight_decay_quirk_and_schedules"]),
    _e("wd/lr quirk", "finetune.adamw_wd_over_lr", "sample_train.py:131",
       "AdamW receives weight_decay = wd / lr", True, "same", "",
       [CHECK, T + "test_adamw_weight_decay_quirk_and_schedules"]),
    _e("lr grid", "finetune.lrs", "sample_train.py:28-29", "1e-2, 1e-3, 1e-4, 1e-5 for AdamW",
       (1e-2, 1e-3, 1e-4, 1e-5), "same", "", [CHECK, PLAN]),
    _e("wd grid", "finetune.wds", "sample_train.py:30", "1e-3, 1e-4, 1e-5, 1e-6, 0",
       (1e-3, 1e-4, 1e-5, 1e-6, 0.0), "same", "", [CHECK, PLAN]),
    _e("schedule", "finetune.schedule", "sample_train.py:25, 137-138, 159",
       "CosineAnnealingLR(T_max = epochs), stepped once per epoch", "cosine", "same", "",
       [CHECK, T + "test_adamw_weight_decay_quirk_and_schedules"]),
    _e("epochs", "finetune.epochs", "sample_train.py:121-123", "30 (pretrained)", 30, "same", "", [CHECK, PLAN]),
    _e("batch size", "finetune.batch_size", "sample_train.py:107", "128", 128, "same", "", [CHECK, PLAN]),
    _e("shuffle", CODE, "sample_train.py:112-113", "training loader shuffles every epoch",
       "shuffled every epoch from a generator seeded with finetune.seed", "same", "",
       [T + "test_same_seed_gives_the_same_curve"]),
    _e("seeds", "finetune.seed", "sample_train.py (no torch seed anywhere)",
       "initialization of the new head, data order and augmentation unseeded", 0, "deviation",
       "we seed torch per config so a run can be repeated and resumed; any seed is one draw of the authors' unseeded "
       "process, so the distribution is the same; the value is finetune.seed",
       [CHECK, T + "test_same_seed_gives_the_same_curve"], authors_value=None),
    _e("image size", "finetune.image_size", "sample_train.py:17; datasets/eurosat.py:8; datasets/aptos.py:55",
       "256 px; EuroSAT 224 px", None, "same", "null: each dataset's own size (256, EuroSAT 224)", [CHECK, PLAN]),
    _e("fixed-input models (DeiT)", "finetune.fixed_input_size", "sample_train.py:17, 56, 58",
       "DeiTs built without img_size, so they accept only 224 px", "authors", "same",
       "models whose patch embedding fixes the input size run at 224 px, both transforms",
       [CHECK]),
    _e("training crop source", "finetune.cache_short_side", "datasets/aptos.py:25, 67",
       "RandomResizedCrop from the full-resolution image", "auto", "same",
       "auto: the cache keeps a short side large enough that no training crop is upsampled", [CHECK]),
    _e("train transform", CODE, "datasets/cct20.py:64-68; aptos.py:66-70; hpa.py:60-65; melanoma.py:77-82; "
       "cassava.py:66-71; eurosat.py:31-36",
       "RandomResizedCrop(size, scale=(0.65, 1)); horizontal flip except EuroSAT; vertical flip for HPA, Melanoma, "
       "Cassava", "the same, per dataset (repro.datasets specs)", "same", "",
       [PLAN, "tests/test_datasets.py::test_paper_datasets_are_registered_with_their_protocol"]),
    _e("eval transform", CODE, "datasets/cct20.py:56-60; aptos.py:59-63; eurosat.py:12-16",
       "Resize(size) + CenterCrop(size)", "Resize(size) + CenterCrop(size)", "same", "", [PLAN]),
    _e("resampling", CODE, "datasets/aptos.py:26, 60, 67 (every loader)",
       "PIL image: Resize and RandomResizedCrop use PIL's bilinear filter",
       "uint8 tensors: torchvision v2 bilinear with antialias=True (repro.datasets.transforms, cache)", "deviation",
       "torchvision documents antialiased tensor resizing as close to PIL's, not equal: pixels may differ by "
       "rounding; not switchable",
       ["tests/test_loaders.py::test_cache_is_built_once_atomically_and_gives_the_decoded_pixels"]),
    _e("evaluation batch", CODE, "sample_train.py:107-111", "128 images per evaluation batch, model.eval()",
       "256 images per evaluation batch, model.eval() (repro.train.predict)", "deviation",
       "in eval mode a batch's size changes no output beyond float rounding of the kernels chosen; not switchable",
       [T + "test_training_learns_and_keeps_the_best_epoch"]),
    _e("normalization", "finetune.normalization", "datasets/aptos.py:56-57 (every loader)",
       "ImageNet mean/std for every model", "imagenet", "same", "", [CHECK]),
    _e("channel order", "finetune.channel_order", "datasets/cct20.py:46-47; aptos.py:25-26; hpa.py:25-26; "
       "melanoma.py:53-54; cassava.py:25-26; eurosat.py:17",
       "cv2.imread without BGR->RGB (BGR) for CCT-20, APTOS, HPA, Melanoma; Cassava converted to RGB; EuroSAT via "
       "PIL ImageFolder (RGB)", "bgr", "same", "",
       [CHECK, "tests/test_loaders.py::test_channel_order_applies_to_the_four_opencv_datasets_only",
        "tests/test_loaders.py::test_bgr_reverses_the_channels_a_loader_feeds"]),
    _e("EXIF orientation", "finetune.exif", "datasets/cct20.py:46; aptos.py:25; hpa.py:25; melanoma.py:53; "
       "cassava.py:25; eurosat.py:17",
       "cv2.imread applies the EXIF orientation a file carries (CCT-20, APTOS, HPA, Melanoma, Cassava); "
       "torchvision's PIL reader (EuroSAT) does not", "authors", "same", "", [CHECK]),
    _e("precision", "finetune.precision", "sample_train.py:146-158", "fp32 (no autocast)", "fp32", "same", "",
       [CHECK]),
    _e("memory format", "finetune.channels_last", "sample_train.py:117", "default (contiguous) layout", True,
       "deviation", "layout only, same arithmetic; kernels may round differently; `channels_last: false` is the "
       "authors' layout", [CHECK], authors_value=False),
    _e("torch.compile", "finetune.compile", "sample_train.py:117", "eager", False, "same", "", [CHECK]),
    _e("deterministic kernels", "finetune.deterministic", "sample_train.py:15",
       "cuDNN defaults (non-deterministic)", False, "same", "", [CHECK]),
    _e("device", "finetune.device", "sample_train.py:15", "cuda:0 if available, else CPU", "auto", "same", "",
       [CHECK]),
    _e("data loader workers", "finetune.num_workers", "sample_train.py:108-113", "16", 8, "deviation",
       "loader processes only: the images and crops drawn do not change in distribution; `num_workers: 16` is "
       "the authors' value", [CHECK], authors_value=16),
    _e("DataParallel vs one device", CODE, "sample_train.py:114-116",
       "nn.DataParallel over every visible GPU: BatchNorm normalizes each replica's share of the 128-image batch",
       "one device per run (BatchNorm over all 128); `--ddp N` splits the batch over N processes", "unknown",
       "how many GPUs the authors' runs saw is not stated, so their BatchNorm batch (128/k) is unknown",
       ["tests/test_ddp.py::test_a_step_on_two_ranks_equals_the_step_in_one_process"]),
    _e("heads", CODE, "sample_train.py:40, 45, 48, 72, 81",
       "last layer replaced by a new one of its kind with the dataset's class count (SqueezeNet: 1x1 conv); timm "
       "models built with num_classes", "the same (repro.models)", "same", "",
       ["tests/test_models.py::test_torchvision_pretrained_loads_the_file_and_replaces_squeezenets_conv_head", PLAN]),
    _e("loss (single-label)", CODE, "sample_train.py:119", "CrossEntropyLoss", "CrossEntropyLoss", "same", "",
       [PLAN]),
    _e("loss and threshold (HPA)", CODE, "datasets/hpa.py:29-32",
       "multi-hot targets; the release has no HPA loss or threshold", "BCEWithLogitsLoss; macro F1 at 0.5",
       "unknown", "no source states the HPA loss or the F1 threshold; ours is the usual multi-label reading",
       [PLAN, "tests/test_metrics.py::test_macro_f1_thresholds_multilabel_scores_at_half"]),
    _e("metric", CODE, "sample_train.py:173, 184",
       "accuracy (CCT-20); the release computes no kappa, F1 or AUC",
       "accuracy (CCT-20, Cassava, EuroSAT), quadratic kappa (APTOS), macro F1 (HPA), ROC AUC (Melanoma)", "same",
       "the metrics other than accuracy follow the paper's text (PAPER.md section 3)",
       ["tests/test_metrics.py::test_quadratic_kappa_is_one_when_perfect_and_penalises_far_grades_more",
        "tests/test_metrics.py::test_roc_auc_uses_the_positive_class_score"]),
    _e("selection split", "finetune.protocol", "datasets/cct20.py:61-62; aptos.py:64; hpa.py:57-58",
       "CCT-20 cis_val, HPA val; APTOS, Cassava, EuroSAT, Melanoma select on the reported split itself", "paper",
       "same", "", [CHECK, PLAN]),
    _e("strict validation slice", "finetune.strict_val_fraction", "none", "not in the authors' code", 0.1, "same",
       "used only under `protocol: strict`", [CHECK, T + "test_strict_selection_is_stratified_seeded_and_recorded"]),
    _e("epoch rule", "finetune.selection", "sample_train.py:125, 187-192",
       "per config the first epoch whose selection score is strictly above the best so far, starting from 0",
       "best_epoch", "same",
       "identical whenever a config scores above 0; a config whose every epoch scores <= 0 (kappa can) keeps 0 in "
       "their loop and its best epoch in ours", [CHECK, T + "test_training_learns_and_keeps_the_best_epoch"]),
    _e("config rule", CODE, "sample_train.py:203, 207-208",
       "grid of per-config best selection scores and its maximum are printed; no tie rule",
       "the config with the best selection score, first in lr-major order on ties", "unknown",
       "the code prints the grid and its maximum (np.amax) and names no config, so no tie rule",
       [T + "test_a_diverging_config_is_recorded_and_loses_the_selection"]),
    _e("divergence", CODE, "sample_train.py:140-192",
       "no check: training continues on a NaN loss and the best epoch before it stays selectable",
       "a config stops at its first non-finite loss, recorded as diverged; its best epoch before it stays "
       "selectable", "deviation",
       "the authors' loop keeps evaluating after a NaN loss, so a NaN-weight model (one constant prediction) could "
       "still take the epoch if it beat every earlier one; we stop the config there; not switchable", [F + "test_a_config_that_diverges_after_a_good_epoch_keeps_that_epoch"]),
    _e("epoch rule at scores <= 0", CODE, "sample_train.py:125, 187",
       "the best score starts at 0 and only a strictly higher one takes an epoch: a config that never scores "
       "above 0 keeps no epoch and prints 0", "the first epoch always counts, then strictly higher ones",
       "deviation", "differs only for a config whose every epoch scores <= 0 (quadratic kappa can); such a config "
       "loses to any config that scores above 0 under both rules; not switchable",
       [T + "test_training_learns_and_keeps_the_best_epoch"]),
    _e("reporting rule", CODE, "sample_train.py:199-210",
       "prints both the test value at each config's best validation epoch (grid and max over configs)",
       "the report value at the best-validation config's best-validation epoch", "unknown",
       "which printed number the paper plotted is not stated; the maximum over configs is the other reading: "
       "`analyze.report_rule: max_report` fits it without retraining, and paper/tables/sensitivity.md shows both",
       [T + "test_training_learns_and_keeps_the_best_epoch"]),
    _e("splits", CODE, "datasets/aptos.py:41-53; cassava.py:41-53; eurosat.py:18-29; melanoma.py:19-37; "
       "hpa.py:43-47; cct20.py:17-24",
       "20% per class held out with seed 414 (APTOS, Cassava) or 42 (EuroSAT); Melanoma 80/20 tfrecord folds with "
       "seed 23, 2020 then 2019; HPA from splits/hpa/split.stratified.small.0.csv; CCT-20 annotation files without "
       "'empty'", "the same rules, pinned by sha256 (repro.datasets)", "same", "",
       ["tests/test_rules.py::test_aptos_and_cassava_hold_out_the_pinned_rows",
        "tests/test_rules.py::test_eurosat_uses_imagefolder_order_and_seed_42",
        "tests/test_rules.py::test_melanoma_fold_rule_2020_then_2019_drops_minus_one",
        "tests/test_rules.py::test_hpa_split_comes_from_the_pinned_file_only",
        "tests/test_rules.py::test_cct20_split_is_the_annotation_file_without_empty"]),
)


def _norm(value: Any) -> Any:
    """Tuples and lists compare equal; floats and ints of the same value too (YAML `0` vs `0.0`)."""
    if isinstance(value, (list, tuple)):
        return [_norm(v) for v in value]
    return value


def param_elements() -> list[Element]:
    return [e for e in ELEMENTS if e.key != CODE]


def resolved_values(fp: Any) -> dict[str, Any]:
    """`finetune.<name>` -> value for every field of a FinetuneParams (or a plain mapping of them)."""
    items = fp.items() if isinstance(fp, dict) else ((k, getattr(fp, k)) for k in fp.__dataclass_fields__)
    return {f"finetune.{k}": v for k, v in items}


def check_against(values: dict[str, Any], elements: Sequence[Element] = ELEMENTS) -> list[str]:
    """Every way the table and resolved paper-profile values disagree, one line each (empty: in step).

    A resolved key the table lacks, a table key the params lack (unless pending or retiring) and a stated paper
    value that differs from the resolved one are each a problem.
    """
    problems = []
    table = {e.key: e for e in elements if e.key != CODE}
    for key in values:
        if key not in table:
            problems.append(f"{key}: a paper-profile parameter with no row in repro.fidelity.ELEMENTS")
    for key, element in table.items():
        if key not in values:
            if key not in PENDING_KEYS | RETIRING_KEYS:
                problems.append(f"{key}: in repro.fidelity.ELEMENTS but not a parameter")
            continue
        if _norm(values[key]) != _norm(element.paper):
            problems.append(f"{key}: the table says the paper profile has {element.paper!r}, it resolves to "
                            f"{values[key]!r}")
    return problems


def marks(fp: Any) -> list[dict]:
    """One row per element for a plan: its value in this plan, the authors' code, and a mark.

    The mark is `same`, `≠ authors: ...` where this plan differs from the authors' code (a parameter whose value is
    not the authors' one, or a deviation fixed in code), or `? unknown: ...` where no source settles it.
    """
    values = resolved_values(fp)
    rows = []
    for e in ELEMENTS:
        if e.key == CODE:
            value = e.paper
            mark = {"same": "same", "deviation": f"≠ authors: {e.why}", "unknown": f"? unknown: {e.why}"}[e.status]
        elif e.key not in values:
            if e.key not in PENDING_KEYS:
                continue  # a retired parameter (RETIRING_KEYS): its successor's row speaks for it
            value = "(no such parameter in this build)"
            mark = f"≠ authors: this build cannot switch to the authors' code: {e.authors}"
        else:
            value = values[e.key]
            if _norm(value) == _norm(e.reference_value):
                mark = "same"
            else:
                mark = "≠ authors: " + (e.why if e.status == "deviation" and _norm(value) == _norm(e.paper)
                                        else f"the authors' code: {e.authors}")
        rows.append({"element": e.name, "key": e.key, "value": _show(value), "authors": e.authors_ref,
                     "mark": mark})
    return rows


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        items = [_show(v) for v in value]
        if len(items) > 6:
            return f"{len(items)} entries: {items[0]}, {items[1]}, ..., {items[-1]}"
        return "[" + ", ".join(items) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(elements: Sequence[Element] = ELEMENTS) -> str:
    """docs/fidelity.md, generated (`python -m repro.fidelity > docs/fidelity.md`)."""
    lines = [
        "# Fidelity: the paper profile against the authors' code",
        "",
        "<!-- Generated from src/repro/fidelity.py by `python -m repro.fidelity > docs/fidelity.md`; edit that file, "
        "not this one. tests/test_fidelity_table.py fails when they differ. -->",
        "",
        f"Every element of the fine-tuning protocol, against the authors' release ({AUTHORS_REPO} at commit "
        f"`{AUTHORS_COMMIT[:8]}`: `sample_train.py` and `datasets/*.py`; line numbers are at that commit). "
        "`key` is the parameter that sets the element (`finetune.<name>` in params.yaml) or `code` where the code "
        "fixes it; `paper profile` is the value `profiles/paper.yaml` resolves to. `same`: the paper profile does "
        "what the authors' code did; `deviation`: it does not, with why and the switch; `unknown`: no source "
        "settles it. `repro finetune --dry-run --params profiles/paper.yaml` prints the same elements with a mark on "
        "every one that differs from the authors' code (`≠ authors: ...`) or is unknown (`? unknown: ...`).",
        "",
        "| element | key | authors' code | what it does there | paper profile | status | why / switch | pinned by |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in elements:
        pinned = "<br>".join(f"`{t}`" for t in e.pinned_by)
        paper = f"`{_show(e.paper)}`" if e.key != CODE else e.paper
        lines.append("| " + " | ".join(_cell(c) for c in (
            e.name, f"`{e.key}`", e.authors_ref, e.authors, paper, e.status, e.why or "", pinned)) + " |")
    lines += ["", "## What no source settles", "",
              "Each `unknown` row above, with the reading this project takes (the `paper profile` column):", ""]
    lines += [f"- **{e.name}** ({e.authors_ref}): {e.why}. Here: {e.paper}." for e in elements
              if e.status == "unknown"]
    lines += ["", "## Deviations", "",
              "Each `deviation` row above; a parameter row is switched to the authors' value in params.yaml:", ""]
    lines += [f"- **{e.name}** (`{e.key}`): {e.why}." for e in elements if e.status == "deviation"]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    sys.stdout.write(render_markdown())
