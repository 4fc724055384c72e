"""Small real inputs for the release and eval tests: a few embedded digits in the prepared layout, and a run folder
of the tiny registry model made by the real code path (random init, no training, so it takes a second)."""

from __future__ import annotations

import pickle
from pathlib import Path

TINY = "timm/test_efficientnet.r160_in1k"
SQUEEZE = "torchvision/squeezenet1_1.IMAGENET1K_V1"
IMAGES = 40


def digits_layout(root: Path, count: int = IMAGES) -> tuple[Path, Path]:
    """`root/data/prepared/digits` and `root/data/splits/digits.csv` (every image in the test split), as
    `repro data prepare digits` lays them out."""
    from repro.datasets.embedded import image_ids, load_digits_arrays
    from repro.datasets.generic import write_image_csv
    from repro.splits import atomic_write, render

    images, labels = load_digits_arrays()
    ids = image_ids(count)
    prepared = root / "data" / "prepared" / "digits"
    write_image_csv(prepared, list(zip(ids, (int(y) for y in labels[:count]))), images[:count])
    split = root / "data" / "splits" / "digits.csv"
    atomic_write(split, render([(i, str(int(y)), "test") for i, y in zip(ids, labels[:count])]))
    return prepared, split


def make_run(run_dir: Path, model: str, prepared: Path, split: Path, *, seed: int = 0) -> dict:
    """A finished run folder (run.json, predictions.csv, model.safetensors) whose recorded value is what the
    model scores on the split; the layout and fields are those `repro finetune` writes."""
    import torch

    from repro.evaluate import Preprocessing, predict_scores, report_split
    from repro.metrics import METRICS
    from repro.models import build_model, get_spec, normalization
    from repro.results import provenance, write_run

    torch.manual_seed(seed)
    net = build_model(model, 10, image_size=32)
    mean, std = normalization(model)
    data = report_split("digits", "test", Preprocessing(32, mean, std), prepared, split)
    ids, targets = data.ids, data.targets
    scores = predict_scores(net, data.dataset, multilabel=False)
    record = {
        "model": model, "model_display": get_spec(model).display, "imagenet_top1": None,
        "init": "random", "weights": None, "pretrained": False, "dataset": "digits", "metric": "accuracy", "select_split": "val",
        "report_split": "test", "status": "ok", "value": METRICS["accuracy"](targets, scores),
        "select_value": 0.0, "chosen": {"lr": 0.01, "wd": 0.0, "epoch": 1}, "configs": [],
        "config": {"image_size": 32, "mean": list(mean), "std": list(std)}, "device": "cpu",
        "provenance": provenance(),
    }
    predictions = [{"id": i, "target": int(y), **{f"score_{k}": float(v) for k, v in enumerate(row)}}
                   for i, y, row in zip(ids, targets, scores)]
    write_run(run_dir, record, predictions, {k: v.detach().clone() for k, v in net.state_dict().items()})
    return record


class WritesAFile:
    """Unpickling this calls open(path, 'w'): what a hostile checkpoint would do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def hostile_pickle(path: Path, marker: Path) -> Path:
    path.write_bytes(pickle.dumps({"conv_stem.weight": WritesAFile(marker)}))
    return path
