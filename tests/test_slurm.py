"""`repro sweep --launcher slurm` on a real SLURM cluster gives the same results as the local launcher, also when a
task is preempted and requeued.

Needs a cluster: CI starts a single-node one with scripts/slurm-up.sh (.ci/run) and exports SLURM_CONF; where
`sinfo` is missing or no node answers, the test is skipped and says why.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest

from conftest import run, tool_env
from repro.state import PROGRESS
from test_resume import MODEL, comparable, tiny_study


def cluster_problem() -> str | None:
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "no SLURM client (sinfo/sbatch) on PATH; start the test cluster with scripts/slurm-up.sh"
    try:
        done = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo timed out: slurmctld is not answering"
    states = done.stdout.split()
    if done.returncode != 0 or not any(s in ("idle", "mixed", "allocated") for s in states):
        return f"no usable SLURM node (sinfo: {(done.stderr or done.stdout).strip()[:200]!r}); is SLURM_CONF set?"
    return None


PROBLEM = cluster_problem()
pytestmark = pytest.mark.skipif(PROBLEM is not None, reason=PROBLEM or "")


def test_slurm_sweep_equals_the_local_sweep(tmp_path):
    keep = {"train": 160, "val": 40, "test": 40}
    local, slurm = tiny_study(tmp_path / "local", keep), tiny_study(tmp_path / "slurm", keep)
    repro = [sys.executable, "-m", "repro", "sweep", "--no-dvc-commit"]
    done = run([*repro, "--threads", "1"], local)
    assert "done" in done.stdout
    done = run([*repro, "--launcher", "slurm", "--gpus-per-task", "0", "--cpus-per-task", "1", "--time-min", "20",
                "--slurm-folder", str(tmp_path / "submitit")], slurm, timeout=900)
    assert "done" in done.stdout, done.stdout
    run_dir = f"results/runs/{MODEL}/digits"
    assert comparable(slurm / run_dir) == comparable(local / run_dir)
    logs = list((tmp_path / "submitit").glob("*_0_log.out"))
    assert logs, "submitit wrote no task log: the job did not run through SLURM"
    again = run([*repro, "--launcher", "slurm", "--gpus-per-task", "0", "--cpus-per-task", "1",
                 "--slurm-folder", str(tmp_path / "submitit2")], slurm, timeout=900)
    assert "skipped" in again.stdout


def _release_begin_time_hold(job: str, process: subprocess.Popen) -> None:
    """SLURM gives a requeued job a begin time about two minutes ahead (its own hold, not anything repro does);
    once the requeued job waits for that (reason BeginTime), let it start now, as an admin would. The test still
    sees the real requeue and the real restart; it only skips the wait."""
    while process.poll() is None:
        reason = subprocess.run(["squeue", "-h", "-j", job, "-o", "%r"], capture_output=True, text=True).stdout
        if "BeginTime" in reason:
            subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], capture_output=True)
            return
        time.sleep(0.5)


@pytest.mark.slow
def test_a_preempted_slurm_task_is_requeued_and_resumes_to_the_same_result(tmp_path):
    """Preemption as SLURM delivers it (SIGTERM, then submitit's USR2) once the task has saved an epoch: submitit
    calls FinetuneTask.checkpoint, `scontrol requeue`s the task, and the requeued task resumes from the saved state
    to the result of an uninterrupted local run. A timeout takes the same checkpoint-and-requeue path (submitit only
    counts it against its max_num_timeout)."""
    keep = {"train": 160, "val": 40, "test": 40}
    local, slurm = tiny_study(tmp_path / "local", keep), tiny_study(tmp_path / "slurm", keep)
    sweep = [sys.executable, "-m", "repro", "sweep", "--no-dvc-commit"]
    run([*sweep, "--threads", "1"], local)
    folder = tmp_path / "submitit"
    process = subprocess.Popen([*sweep, "--launcher", "slurm", "--gpus-per-task", "0", "--cpus-per-task", "1",
                                "--time-min", "20", "--slurm-folder", str(folder)], cwd=slurm, env=tool_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    state = slurm / f"results/runs/{MODEL}/digits.state"
    try:
        deadline = time.monotonic() + 600
        while not (state / PROGRESS).is_file():  # the first epoch has been saved
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline, "the SLURM task saved no state within 10 minutes"
            time.sleep(0.2)
        job = subprocess.run(["squeue", "-h", "-n", "repro-finetune", "-o", "%i"], capture_output=True, text=True,
                             check=True).stdout.split()
        assert len(job) == 1, job
        for signal in ("TERM", "USR2"):  # what submitit's own Job._interrupt() sends to simulate a preemption
            subprocess.run(["scancel", "--signal", signal, job[0]], check=True)
        import threading

        release = threading.Thread(target=_release_begin_time_hold, args=(job[0], process), daemon=True)
        release.start()
        output, _ = process.communicate(timeout=900)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0 and "done" in output, output
    logs = "\n".join(p.read_text(errors="replace") for p in folder.glob("*_log.*"))
    assert "this job is preempted" in logs and "Requeued job" in logs, logs[-3000:]
    run_dir = f"results/runs/{MODEL}/digits"
    record = json.loads((slurm / run_dir / "run.json").read_text())
    assert record.get("resumed_from") is not None, "the requeued task started over instead of resuming"
    assert comparable(slurm / run_dir) == comparable(local / run_dir)
    assert not state.exists()
