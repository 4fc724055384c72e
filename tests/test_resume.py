"""The kill tests: `repro finetune` SIGKILLed at every failpoint it passes (repro.failpoints), or at random moments,
and restarted until it finishes, must end with exactly the files of an uninterrupted run (CPU, deterministic mode)
and leave no state or temp file behind. No assertion depends on how fast the machine is (docs/testing.md)."""

from __future__ import annotations

import contextlib
import fnmatch
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
from repro import failpoints

MODEL = "timm/test_efficientnet.r160_in1k"
# Timing and provenance differ between any two runs; everything else must be identical.
VOLATILE = {"train_seconds", "wall_seconds", "train_images_per_second", "provenance", "resumed_from"}


# The first tiny_study of a session runs `repro data prepare digits`; later ones copy its output (the prepared
# images, the untrimmed split and its pin), which is what the same command writes again: a torch-importing process
# fewer per study.
_PREPARED: dict[str, object] = {}


def tiny_study(root: Path, keep: dict[str, int]) -> Path:
    """A study folder: the smoke params cut to the tiny model, 2 configs x 3 epochs, on a few digits at 32 px
    (the model's own 160 px makes every step slower and is no part of what these tests check)."""
    root.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load((ROOT / "profiles/smoke.yaml").read_text())
    params["finetune"].update(models=[MODEL], pretrained=False, lrs=[1e-2, 1e-3], wds=[0.0], epochs=3, batch_size=32,
                              deterministic=True, image_size=32)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copy2(ROOT / "weights.lock.json", root / "weights.lock.json")
    shutil.copytree(ROOT / "data/raw/digits", root / "data/raw/digits")
    split = root / "data/splits/digits.csv"
    if _PREPARED and Path(_PREPARED["prepared"]).is_dir():
        shutil.copytree(_PREPARED["prepared"], root / "data/prepared/digits")
        split.parent.mkdir(parents=True)
        split.write_bytes(_PREPARED["split"])
        (split.parent / "SHA256SUMS").write_bytes(_PREPARED["sums"])
    else:
        run([sys.executable, "-m", "repro", "data", "prepare", "digits"], root, timeout=300)
        _PREPARED.update(prepared=root / "data/prepared/digits", split=split.read_bytes(),
                         sums=(split.parent / "SHA256SUMS").read_bytes())
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


def points_passed(log: Path) -> list[str]:
    """The failpoints a run passed, in order, from its REPRO_FAILPOINT_LOG file (`pid point` lines)."""
    return [line.split(" ", 1)[1] for line in log.read_text().splitlines()]


def killed(args: list[str], root: Path, env: dict, spec: str) -> subprocess.CompletedProcess:
    """Run `args` with REPRO_FAILPOINT=spec; it must die of the SIGKILL at that point (not finish, not fail)."""
    done = subprocess.run(args, cwd=root, env={**env, failpoints.VARIABLE: spec}, capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, f"{spec}: exit {done.returncode}, not killed\n{done.stderr[-2000:]}"
    return done


def uncovered(points: list[str], specs: list[str]) -> set[str]:
    """The points of a run that no spec's pattern kills at (matched as failpoints.hit matches them)."""
    return {p for p in points
            if not any(fnmatch.fnmatchcase(p, s.split(":")[0]) or fnmatch.fnmatchcase(p.split("/")[0], s.split(":")[0])
                       for s in specs)}


# One kill at each point `repro finetune` passes, in an order that also exercises resuming from each kind of saved
# state: a half-built and a built-but-unrenamed image cache, nothing saved yet, a lost best-weights file, a lost
# progress file (so the run resumes from the epoch before), a kill in the second config, each file of the run folder
# and the moment between the finished run folder and the removal of its state. Counts are per process.
CHAIN = [
    "cache.after_image:60",
    "cache.before_rename:1",
    "train.after_batch:2",
    "atomic_write/best-*:1",
    "atomic_write/progress.pt:2",
    "train.after_batch:4",
    "atomic_write/progress.pt:3",
    "train.after_batch:5",
    "atomic_write/predictions.csv:1",
    "atomic_write/model.safetensors:1",
    "atomic_write/run.json:1",
    "study.after_run_written:1",
]


def test_killed_at_every_failpoint_then_resumed_gives_the_uninterrupted_result(tmp_path):
    """SIGKILL at each failpoint in turn (repro.failpoints), each run resuming the last one's state; the files at the
    end equal an uninterrupted run's. Deterministic: the kills land where they are named, on any machine."""
    root = tiny_study(tmp_path / "study", {"train": 96, "val": 40, "test": 40})  # 3 batches of 32 an epoch
    env = single_thread_env()
    log = tmp_path / "points.log"
    reference = root / "out/reference"
    done = subprocess.run(finetune_args(reference), cwd=root, env={**env, failpoints.LOG_VARIABLE: str(log)},
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    passed = points_passed(log)
    # every kind of point this run passes has a kill below: a new write or stage without one fails here
    assert {p.split("/")[0] for p in passed} >= {"cache.after_image", "cache.before_rename", "train.after_batch",
                                                  "atomic_write", "study.after_run_written"}
    assert uncovered(passed, CHAIN) == set()
    shutil.rmtree(root / "data/cache")  # so that the killed runs build the cache again

    target = root / "out/killed"
    state = target.with_name("killed.state")
    log.unlink()
    for spec in CHAIN:
        killed(finetune_args(target), root, {**env, failpoints.LOG_VARIABLE: str(log)}, spec)
        # the kill landed at the named point, after work (not at start-up): that point was the last one passed
        last = points_passed(log)[-1]
        assert fnmatch.fnmatchcase(last, spec.split(":")[0]) or fnmatch.fnmatchcase(last.split("/")[0],
                                                                                      spec.split(":")[0]), (spec, last)
        log.unlink()
    assert (target / "run.json").is_file() and state.is_dir()  # the last kill: run folder written, state not removed
    final = subprocess.run(finetune_args(target), cwd=root, env=env, capture_output=True, text=True)
    assert final.returncode == 0 and "skipped" in final.stdout, final.stdout + final.stderr

    assert comparable(target) == comparable(reference)
    record = json.loads((target / "run.json").read_text())
    assert len(record["configs"]) == 2 and all(len(c["curve"]) == 3 for c in record["configs"])
    assert record["resumed_from"] == {"config": 2, "epoch": 0}  # the last writer resumed a finished grid
    assert leftovers(root / "out") == [] and not state.exists()
    assert [p.name for p in (root / "data/cache").iterdir() if p.name.startswith(".")] == []  # no half-built cache


def test_a_kill_at_a_random_moment_never_changes_the_result(tmp_path):
    """Kills at moments drawn over the run's own duration (start-up, cache, training, writing): whether a kill
    lands mid-run or the run finishes first depends on the machine, so nothing here asserts which happened; only
    that each attempt either died of the kill or finished, and that the end result equals the uninterrupted one."""
    root = tiny_study(tmp_path / "study", {"train": 96, "val": 40, "test": 40})
    env = single_thread_env()
    reference = root / "out/reference"
    started = time.monotonic()
    done = subprocess.run(finetune_args(reference), cwd=root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    duration = time.monotonic() - started  # used to draw moments, never asserted on
    shutil.rmtree(root / "data/cache")
    target = root / "out/killed"
    rng = random.Random(1234)
    outcomes = []
    for _ in range(3):
        proc = subprocess.Popen(finetune_args(target), cwd=root, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=rng.uniform(0, duration))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
        outcomes.append(proc.wait())
    assert all(code in (0, -signal.SIGKILL) for code in outcomes), outcomes
    final = subprocess.run(finetune_args(target), cwd=root, env=env, capture_output=True, text=True)
    assert final.returncode == 0 and ("done" in final.stdout or "skipped" in final.stdout), final.stderr
    assert comparable(target) == comparable(reference)
    assert leftovers(root / "out") == []
    again = subprocess.run(finetune_args(target), cwd=root, env=env, capture_output=True, text=True)
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
    """`repro finetune --ddp 2` (two gloo processes under torchrun) loses its whole node twice at named failpoints
    (a rank SIGKILLs torchrun, the other rank and itself: `kill=node`), once in rank 1 mid-epoch and once in rank 0
    between the temp file and the rename of a progress save, then runs to the end: the files equal those of an
    uninterrupted `--ddp 2` run. Deterministic: the kills land where they are named, on any machine."""
    root = tiny_study(tmp_path / "study", {"train": 640, "val": 40, "test": 40})
    env = single_thread_env()
    reference = root / "out/reference"
    done = subprocess.run(finetune_args(reference) + ["--ddp", "2"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads((reference / "run.json").read_text())["config"]["ddp_world_size"] == 2

    target = root / "out/killed"
    log = tmp_path / "points.log"
    for spec in ("train.after_batch:7,rank=1,kill=node", "atomic_write/progress.pt:2,rank=0,kill=node"):
        done = subprocess.run(finetune_args(target) + ["--ddp", "2"], cwd=root, timeout=600, capture_output=True,
                              text=True, env={**env, failpoints.VARIABLE: spec, failpoints.LOG_VARIABLE: str(log)})
        assert done.returncode != 0, f"{spec}: the run finished instead of losing its node"
        point = spec.split(":")[0]
        assert point in {line.split(" ", 1)[1] for line in log.read_text().splitlines()}, spec
        log.unlink()
    final = subprocess.run(finetune_args(target) + ["--ddp", "2"], cwd=root, env=env, capture_output=True,
                           text=True, timeout=600)
    assert final.returncode == 0, final.stdout + final.stderr
    assert "done" in final.stdout and "resumed_from" in json.loads((target / "run.json").read_text())
    assert comparable(target) == comparable(reference)
    assert leftovers(root / "out") == []
    skipped = subprocess.run(finetune_args(target) + ["--ddp", "2"], cwd=root, env=env, capture_output=True,
                             text=True, timeout=600)
    assert skipped.returncode == 0 and "skipped" in skipped.stdout
