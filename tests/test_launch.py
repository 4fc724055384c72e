"""`repro sweep --launcher local`: runs land where dvc.yaml's finetune stages put them, equal a plain
`repro finetune`, are recorded in dvc.lock (so `dvc repro` does not run them again) and are skipped when rerun."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from conftest import BIN, run, tool_env
from test_resume import MODEL, comparable

RUN = f"results/runs/{MODEL}/digits"


def tiny_params(root, **finetune) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["finetune"].update(models=[MODEL], pretrained=False, lrs=[1e-2], wds=[0.0], epochs=1, **finetune)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.mark.slow  # dvc and four repro processes: about 1-3 minutes on a shared CPU
def test_local_sweep_is_what_dvc_repro_would_have_made(checkout):
    tiny_params(checkout)
    dvc, repro = str(BIN / "dvc"), [sys.executable, "-m", "repro"]
    run([dvc, "repro", "--quiet", "prepare@digits"], checkout)
    first = run([*repro, "sweep", "--threads", "1"], checkout)
    assert "done" in first.stdout and "dvc commit: 1 finetune stage(s) recorded in dvc.lock" in first.stdout
    status = run([dvc, "status", f"finetune@{MODEL}-digits"], checkout)
    assert "up to date" in status.stdout, status.stdout
    collect = run([dvc, "repro", "collect"], checkout)
    assert f"Stage 'finetune@{MODEL}-digits' didn't change, skipping" in collect.stdout
    assert "Running stage 'finetune@" not in collect.stdout and "Running stage 'collect'" in collect.stdout
    lock = yaml.safe_load((checkout / "dvc.lock").read_text())["stages"][f"finetune@{MODEL}-digits"]
    assert lock["params"]["params.yaml"]["finetune.epochs"] == 1

    again = run([*repro, "sweep", "--threads", "1"], checkout)
    assert "skipped" in again.stdout
    # The same run through the finetune verb (one thread, as the sweep worker) gives the same files.
    direct = subprocess.run([*repro, "finetune", "--model", MODEL, "--dataset", "digits", "--out", "direct"],
                            cwd=checkout, env={**tool_env(), "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    assert direct.returncode == 0 and "done" in direct.stdout, direct.stderr
    assert comparable(checkout / RUN) == comparable(checkout / "direct")
    assert json.loads((checkout / RUN / "run.json").read_text())["device"] == "cpu"


def test_a_failed_run_is_reported_and_the_sweep_exits_nonzero(checkout):
    tiny_params(checkout)  # digits never prepared: the job fails with the prepare hint, nothing is committed
    done = run([sys.executable, "-m", "repro", "sweep", "--threads", "1"], checkout, check=False)
    assert done.returncode == 1
    assert "1 of 1 runs failed" in done.stderr and "repro data prepare digits" in done.stderr
    assert not (checkout / RUN / "run.json").exists()
