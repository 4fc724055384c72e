"""`repro sweep --launcher slurm` on a real SLURM cluster gives the same results as the local launcher.

Needs a cluster: CI starts a single-node one with scripts/slurm-up.sh (.ci/run) and exports SLURM_CONF; where
`sinfo` is missing or no node answers, the test is skipped and says why.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from conftest import run
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
