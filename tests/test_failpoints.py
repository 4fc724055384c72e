"""repro.failpoints: the spec grammar, and a SIGKILL exactly at the N-th matching point (in a child process)."""

import signal
import subprocess
import sys

import pytest

from conftest import ROOT
from repro.failpoints import LOG_VARIABLE, VARIABLE, Spec, parse

PROGRAM = ("from repro import failpoints\n"
           "for i in range(3):\n"
           "    failpoints.hit('atomic_write', f'f{i}.csv')\n"
           "    failpoints.hit('train.after_batch')\n")


def test_the_spec_grammar():
    assert parse("train.after_batch:7") == Spec("train.after_batch", 7)
    assert parse("atomic_write/best-*:1,rank=1,kill=node") == Spec("atomic_write/best-*", 1, 1, "node")
    for bad in ("train.after_batch", "x:0", "x:-1", ":3", "x:2,speed=1", "x:2,kill=all", "x:2,rank=a"):
        with pytest.raises(ValueError, match="REPRO_FAILPOINT"):
            parse(bad)


@pytest.mark.parametrize(("spec", "code", "passed"), [
    ("train.after_batch:2", -signal.SIGKILL, 4),     # f0, batch, f1, batch (killed at the second batch)
    ("atomic_write/f2.csv:1", -signal.SIGKILL, 5),   # the file name part of a point
    ("atomic_write:3", -signal.SIGKILL, 5),          # any atomic write, third one
    ("train.after_batch:4", 0, 6),                   # never reached 4 times: runs to the end
    ("train.after_batch:1,rank=1", 0, 6),            # RANK unset is rank 0
])
def test_the_process_dies_at_the_nth_matching_point(tmp_path, spec, code, passed):
    log = tmp_path / "log"
    done = subprocess.run([sys.executable, "-c", PROGRAM], cwd=ROOT, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT / "src"), VARIABLE: spec, LOG_VARIABLE: str(log)})
    assert done.returncode == code, done.stderr
    assert len(log.read_text().splitlines()) == passed


def test_a_malformed_spec_stops_the_run_with_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-c", PROGRAM], cwd=ROOT, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT / "src"), VARIABLE: "train.after_batch"})
    assert done.returncode == 1 and done.stderr.startswith("error: REPRO_FAILPOINT=") and "Traceback" not in done.stderr
