"""One self-describing result folder per (model, dataset) run, and `collect` into one long table.

A run folder holds `run.json` (identity, metric, chosen config and epoch, resolved config, provenance),
`predictions.csv` (report-split class scores, so every metric can be recomputed on CPU) and `model.safetensors`
(the chosen config's best-epoch weights). run.json is written last: its presence marks a finished run.
Exercised by `repro finetune` and `repro collect`.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import platform
import subprocess
import sys
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path

from repro import jsonfile
from repro.errors import ReproError
from repro.splits import atomic_write

RUN_FILE = "run.json"
PREDICTIONS_FILE = "predictions.csv"
WEIGHTS_FILE = "model.safetensors"
SUMMARY_COLUMNS = ["model", "model_display", "imagenet_top1", "init", "weights_sha256", "dataset", "metric", "value",
                   "select_value", "lr", "wd", "epoch", "status", "value_low", "value_high", "value_ci"]
INITS = ("imagenet", "random")  # run.json `init`: ImageNet weights loaded, or none (the random-init reference)
_LIBRARIES = ("torch", "torchvision", "timm", "numpy", "scikit-learn", "scipy", "pandas", "repro")


def provenance(root: Path | None = None) -> dict:
    """Git commit, library versions, Python and machine: enough to say what produced a number."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    versions = {}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "git_sha": git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "libraries": versions,
    }


def write_run(run_dir: Path, record: dict, predictions: Sequence[dict], state_dict: dict | None) -> Path:
    """Write a run folder; each file atomically, run.json last."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_FILE).unlink(missing_ok=True)  # an interrupted rewrite must not look finished
    buffer = io.StringIO()
    if predictions:
        writer = csv.DictWriter(buffer, fieldnames=list(predictions[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(predictions)
    atomic_write(run_dir / PREDICTIONS_FILE, buffer.getvalue().encode())
    if state_dict is not None:
        from safetensors.torch import save

        tensors = {k: v.contiguous() for k, v in state_dict.items()}
        # One metadata key: safetensors writes several in a per-process order, which would make the file's
        # bytes (and so DVC's hash of the run) differ between two identical runs.
        identity = json.dumps({"model": record["model"], "dataset": record["dataset"]}, sort_keys=True)
        atomic_write(run_dir / WEIGHTS_FILE, save(tensors, metadata={"repro": identity}))
    atomic_write(run_dir / RUN_FILE, jsonfile.dumps(record))
    return run_dir / RUN_FILE


def read_json(path: Path, producer: str) -> dict:
    """A JSON file another step wrote; a missing or broken one names the command that makes it."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ReproError(f"{path}: missing; run `{producer}` first (or `dvc repro`)") from None
    except ValueError as exc:
        raise ReproError(f"{path}: not valid JSON ({exc})") from None


def read_run(path: Path) -> dict:
    """A run.json, refused when it would put a run at an ImageNet accuracy of weights it did not load."""
    record = read_json(path, "repro finetune")
    problem = init_problem(record)
    if problem is not None:
        raise ReproError(f"{path}: {problem}; re-run `repro finetune --model {record.get('model')} "
                         f"--dataset {record.get('dataset')}`")
    return record


def init_problem(record: dict) -> str | None:
    """Why `record` cannot be drawn where it says (None when it can): a run has an ImageNet top-1 if and only if it
    loaded ImageNet weights, named with their sha256 (repro.study.init_record)."""
    init, top1, loaded = record.get("init"), record.get("imagenet_top1"), record.get("weights")
    if init not in INITS:
        return f"init is {init!r}, expected one of {', '.join(INITS)} (written by an older repro?)"
    if init == "random" and (top1 is not None or loaded is not None):
        return "a random-init run must have imagenet_top1 null and no weights (it loaded no ImageNet weights)"
    if init == "imagenet" and (top1 is None or not isinstance(loaded, dict) or not loaded.get("sha256")):
        return "an ImageNet-init run must name its ImageNet top-1 and the sha256 of the weights it loaded"
    return None


def read_predictions(path: Path):
    """(targets, scores) of a run's predictions.csv: targets from `target` (class ids) or `target_0..` (multi-hot),
    scores from `score_0..score_{C-1}`."""
    import pandas as pd

    try:
        table = pd.read_csv(path)
    except FileNotFoundError:
        raise ReproError(f"{path}: missing; re-run `repro finetune` for this run") from None
    scores = [c for c in table.columns if c.startswith("score_")]
    multi = [c for c in table.columns if c.startswith("target_")]
    if not scores or not (multi or "target" in table.columns):
        raise ReproError(f"{path}: expected columns target (or target_0..) and score_0..; re-run `repro finetune`")
    targets = table[multi].to_numpy(int) if multi else table["target"].to_numpy(int)
    return targets, table[scores].to_numpy(float)


def summary_rows(records: Iterable[dict], intervals: Sequence[dict | None] | None = None) -> list[dict]:
    """The long table: one row per (model, dataset), metric values as fractions, with each model's interval
    (analysis.metric_interval) when `intervals` gives one per record."""
    rows = []
    for r, ci in zip(records, intervals if intervals is not None else itertools.repeat(None)):
        chosen = r.get("chosen") or {}
        ci = ci or {}
        rows.append({
            "model": r["model"], "model_display": r["model_display"], "imagenet_top1": r["imagenet_top1"],
            "init": r["init"], "weights_sha256": (r.get("weights") or {}).get("sha256"),
            "dataset": r["dataset"], "metric": r["metric"], "value": r["value"],
            "select_value": r["select_value"], "lr": chosen.get("lr"), "wd": chosen.get("wd"),
            "epoch": chosen.get("epoch"), "status": r["status"],
            "value_low": ci.get("low"), "value_high": ci.get("high"), "value_ci": ci.get("method"),
        })
    return rows


def write_summary(rows: Sequence[dict], summary_path: Path, metrics_path: Path) -> None:
    """summary.csv for analysis; metrics.json (dataset -> model -> value) for `dvc metrics show`."""
    import pandas as pd

    table = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    atomic_write(summary_path, table.to_csv(index=False, lineterminator="\n").encode())
    metrics: dict[str, dict] = {}
    for row in rows:
        metrics.setdefault(row["dataset"], {})[row["model"]] = {row["metric"]: row["value"]}
    atomic_write(metrics_path, jsonfile.dumps(metrics))


def read_summary(path: Path):
    import pandas as pd

    try:
        table = pd.read_csv(path)
    except FileNotFoundError:
        raise ReproError(f"{path}: missing; run `repro collect` first") from None
    missing = [c for c in SUMMARY_COLUMNS if c not in table.columns]
    if missing:
        raise ReproError(f"{path}: missing columns {missing}; re-run `repro collect`")
    return table
