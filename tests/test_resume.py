"""The kill test: `repro finetune` SIGKILLed at random moments, restarted until it finishes, must end with exactly
the files of an uninterrupted run (CPU, deterministic mode) and leave no state or temp file behind."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import ROOT, run, tool_env

MODEL = "timm/test_efficientnet.r160_in1k"
# Timing and provenance differ between any two runs; everything else must be identical.
VOLATILE = {"train_seconds", "wall_seconds", "train_images_per_second", "provenance", "resumed_from"}


def tiny_study(root: Path, keep: dict[str, int]) -> Path:
    """A study folder: the smoke params cut to the tiny model, 2 configs x 3 epochs, on a few digits."""
    root.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load((ROOT / "profiles/smoke.yaml").read_text())
    params["finetune"].update(models=[MODEL], lrs=[1e-2, 1e-3], wds=[0.0], epochs=3, batch_size=32,
                              deterministic=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copy2(ROOT / "weights.lock.json", root / "weights.lock.json")
    shutil.copytree(ROOT / "data/raw/digits", root / "data/raw/digits")
    run([sys.executable, "-m", "repro", "data", "prepare", "digits"], root, timeout=300)
    split = root / "data/splits/digits.csv"
    lines = split.read_text().splitlines()
    kept, seen = [lines[0]], dict.fromkeys(keep, 0)
    for line in lines[1:]:
        name = line.rsplit(",", 1)[1]
        if seen[name] < keep[name]:
            seen[name] += 1
            kept.append(line)
    split.write_text("\n".join(kept) + "\n")
    return root


def single_thread_env() -> dict[str, str]:
    # One intra-op thread: the same arithmetic in every process, and no oversubscription of a shared CPU.
    return {**tool_env(), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}


def finetune_args(out: Path) -> list[str]:
    return [sys.executable, "-m", "repro", "finetune", "--model", MODEL, "--dataset", "digits", "--out", str(out)]


def comparable(run_dir: Path) -> tuple[dict, bytes, dict, dict]:
    """run.json without timing, predictions.csv bytes, and the weights' metadata and every tensor's raw bytes.

    Not the safetensors file's bytes: safetensors writes its metadata mapping in a per-process random order.
    """
    from safetensors import safe_open

    record = json.loads((run_dir / "run.json").read_text())
    with safe_open(str(run_dir / "model.safetensors"), "pt") as handle:
        metadata = handle.metadata()
        tensors = {k: (str(t.dtype), tuple(t.shape), t.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
                   for k in handle.keys() for t in [handle.get_tensor(k)]}
    return ({k: v for k, v in record.items() if k not in VOLATILE}, (run_dir / "predictions.csv").read_bytes(),
            metadata, tensors)


def leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if ".tmp-" in p.name or p.name.endswith(".state") or "/.state" in str(p))


@pytest.mark.slow  # about 1-5 minutes: seven processes on a shared CPU
def test_sigkill_at_random_moments_then_resume_gives_identical_results(tmp_path):
    root = tiny_study(tmp_path / "study", {"train": 160, "val": 40, "test": 40})
    env = single_thread_env()
    reference = root / "out/reference"
    done = subprocess.run(finetune_args(reference), cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr

    target = root / "out/killed"
    state = target.with_name("killed.state")
    rng = random.Random(1234)
    kills, mid_run, finished = 0, 0, False
    while kills < 5 and not finished:
        started = time.monotonic()
        proc = subprocess.Popen(finetune_args(target), cwd=root, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        if kills == 0:  # once at a moment drawn from the whole run, start-up and data loading included
            time.sleep(rng.uniform(0, 8))
        else:  # then at a moment after this process saved its first epoch, so that training is under way
            progress = state / "progress.pt"
            before = progress.stat().st_mtime if progress.exists() else 0
            while proc.poll() is None and time.monotonic() - started < 120:
                if progress.exists() and progress.stat().st_mtime > before:
                    break
                time.sleep(0.02)
            time.sleep(rng.uniform(0, 1.5))
        if proc.poll() is None:
            mid_run += (state / "progress.pt").exists()
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
        else:
            finished = True
    assert mid_run >= 2, f"only {mid_run} kills landed while training was under way"
    final = subprocess.run(finetune_args(target), cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr
    assert "done" in final.stdout or "skipped" in final.stdout

    assert comparable(target) == comparable(reference)
    record = json.loads((target / "run.json").read_text())
    assert len(record["configs"]) == 2 and all(len(c["curve"]) == 3 for c in record["configs"])
    assert leftovers(root / "out") == []
    assert not state.exists()

    again = subprocess.run(finetune_args(target), cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "skipped" in again.stdout  # a finished run is not retrained


@pytest.mark.parametrize("change", ["epochs"])
def test_a_saved_state_from_another_config_is_not_resumed(tmp_path, change):
    """State saved under 3 epochs must not leak into a run with 2: the result equals a fresh 2-epoch run."""
    from repro.config import parse_params
    from repro.study import finetune_to_dir, state_dir_for

    root = tiny_study(tmp_path / "study", {"train": 64, "val": 30, "test": 30})
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["finetune"]["lrs"] = [1e-2]

    def go(epochs: int, out: str, stop_after: int | None = None):
        params["finetune"]["epochs"] = epochs
        fp = parse_params(params).finetune

        def on_epoch(config, epoch, record):
            if stop_after is not None and epoch == stop_after:
                raise KeyboardInterrupt  # interrupted in epoch 2, after the state of epoch 1 was saved

        return finetune_to_dir(MODEL, "digits", fp, root / "data/prepared/digits", root / "data/splits/digits.csv",
                               root / "weights.lock.json", root / out, on_epoch)

    with pytest.raises(KeyboardInterrupt):
        go(3, "a", stop_after=2)
    assert (state_dir_for(root / "a") / "progress.pt").exists()
    _, resumed = go(2, "a")
    _, fresh = go(2, "b")
    assert "resumed_from" not in resumed
    assert [c["curve"] for c in resumed["configs"]] == [c["curve"] for c in fresh["configs"]]


def test_strict_protocol_selects_on_a_slice_of_train_and_records_it(tmp_path):
    from repro.config import parse_params
    from repro.study import STRICT_SPLIT, finetune_to_dir

    root = tiny_study(tmp_path / "study", {"train": 80, "val": 20, "test": 30})
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["finetune"].update(lrs=[1e-2], epochs=1, protocol="strict", strict_val_fraction=0.25)
    fp = parse_params(params).finetune
    status, record = finetune_to_dir(MODEL, "digits", fp, root / "data/prepared/digits",
                                     root / "data/splits/digits.csv", root / "weights.lock.json", root / "run")
    assert status == "done" and record["select_split"] == STRICT_SPLIT and record["report_split"] == "test"
    assert record["strict_selection"]["images"] == 20 and record["config"]["protocol"] == "strict"
    carved = (root / "run/selection_split.csv").read_text().splitlines()
    assert carved[0] == "id,label,split" and len(carved) == 21
    train_ids = {line.split(",")[0] for line in (root / "data/splits/digits.csv").read_text().splitlines()
                 if line.endswith(",train")}
    assert {line.split(",")[0] for line in carved[1:]} <= train_ids


def kill_tree(pid: int) -> None:
    """SIGKILL `pid` and every process below it. torchrun starts each rank in a session of its own, so killing
    torchrun's process group would leave the ranks running."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, queue = [], [pid]
    while queue:
        tree.append(queue.pop())
        queue += children.get(tree[-1], [])
    for member in reversed(tree):  # the ranks first, so none outlives its launcher even briefly
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, signal.SIGKILL)


@pytest.mark.slow  # about 2-4 minutes: torchrun starts two processes per attempt
def test_a_ddp_run_killed_as_a_whole_resumes_to_the_uninterrupted_ddp_result(tmp_path):
    """`repro finetune --ddp 2` (two gloo processes under torchrun), its whole process group SIGKILLed twice after
    a saved epoch, then run to the end: the files equal those of an uninterrupted `--ddp 2` run."""
    root = tiny_study(tmp_path / "study", {"train": 640, "val": 40, "test": 40})  # epochs of about a second
    env = single_thread_env()
    reference = root / "out/reference"
    done = subprocess.run(finetune_args(reference) + ["--ddp", "2"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads((reference / "run.json").read_text())["config"]["ddp_world_size"] == 2

    target = root / "out/killed"
    progress = target.with_name("killed.state") / "progress.pt"
    rng = random.Random(99)
    kills = 0
    for _ in range(2):
        before = progress.stat().st_mtime if progress.exists() else 0
        proc = subprocess.Popen(finetune_args(target) + ["--ddp", "2"], cwd=root, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started = time.monotonic()
        while proc.poll() is None and time.monotonic() - started < 300:
            if progress.exists() and progress.stat().st_mtime > before:
                break
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.3))
        if proc.poll() is None:
            kill_tree(proc.pid)  # torchrun and both ranks, as a lost node
            proc.wait()
            kills += 1
    assert kills == 2
    final = subprocess.run(finetune_args(target) + ["--ddp", "2"], cwd=root, env=env, capture_output=True,
                           text=True, timeout=600)
    assert final.returncode == 0, final.stdout + final.stderr
    assert "done" in final.stdout and "resumed_from" in json.loads((target / "run.json").read_text())
    assert comparable(target) == comparable(reference)
    assert leftovers(root / "out") == []
    skipped = subprocess.run(finetune_args(target) + ["--ddp", "2"], cwd=root, env=env, capture_output=True,
                             text=True, timeout=600)
    assert skipped.returncode == 0 and "skipped" in skipped.stdout
