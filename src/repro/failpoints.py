"""Failpoints: SIGKILL this process at a named point of the code, so crash tests kill where they mean to.

A normal run never sets the variables below; each point then costs one function call that returns at once (the
environment is read once, at import). The crash tests (tests/test_resume.py, tests/test_release.py,
tests/test_download.py; docs/testing.md) set

    REPRO_FAILPOINT=POINT:N[,rank=R][,kill=self|node]

which SIGKILLs the process the N-th time (counted from 1, within this process) it reaches a point matching POINT.
Points are named `area.what`, and a point that concerns a file also carries the file's name after a slash
(`atomic_write/progress.pt`); POINT is matched as a shell pattern against both the full name and the bare point,
so `atomic_write:3` is the third atomic write of any file and `atomic_write/best-*:1` the first best-weights file.
`rank=R` fires only in the DDP process of that rank (torchrun's RANK; 0 outside torchrun). `kill=node` kills, in
this order, the parent (torchrun), every other child of the parent (the other ranks) and this process: a lost
node. With `REPRO_FAILPOINT_LOG=FILE` every point reached is appended to FILE as `pid point` (how a test lists the
points a run passes, to kill at each). Example:

    REPRO_FAILPOINT=train.after_batch:7 repro finetune --model M --dataset digits

The points (grep `failpoints.hit(` for the code):
- `train.after_batch`: after the optimizer step of each training batch (repro.train.train_config);
- `atomic_write/NAME`: inside every repro.splits.atomic_write, after the temp file is written, before the rename;
- `cache.after_image`: after each image is appended to a decoded-image cache being built (repro.datasets.cache);
- `cache.before_rename`: a built cache folder, complete under its temp name, before it is renamed into place;
- `download.after_block`: after each block of a repro.download transfer is written to its `.part` file;
- `weights.after_block`: after each block of a pretrained-weight download is written to its temp file;
- `study.after_run_written`: a finished run folder written (run.json last), its state folder not yet removed;
- `release.after_export`: one checkpoint of `repro release` exported, before the next one and the manifest;
- `release.archive_before_rename`: the release zip complete under its temp name, before the rename.
"""

from __future__ import annotations

import fnmatch
import os
import signal
from dataclasses import dataclass
from pathlib import Path

VARIABLE = "REPRO_FAILPOINT"
LOG_VARIABLE = "REPRO_FAILPOINT_LOG"


@dataclass(frozen=True)
class Spec:
    pattern: str
    count: int
    rank: int | None = None
    kill: str = "self"


def parse(text: str) -> Spec:
    """`POINT:N[,rank=R][,kill=self|node]`; a malformed value is an error at start-up, never a silent no-op."""
    head, *options = text.split(",")
    pattern, sep, count = head.rpartition(":")
    if not sep or not pattern or not count.isdigit() or int(count) < 1:
        raise ValueError(f"{VARIABLE}={text!r}: expected POINT:N with N >= 1 (e.g. train.after_batch:7)")
    fields = {"rank": None, "kill": "self"}
    for option in options:
        key, _, value = option.partition("=")
        if key not in fields:
            raise ValueError(f"{VARIABLE}={text!r}: unknown option {key!r}; valid: rank=R, kill=self|node")
        fields[key] = value
    if fields["kill"] not in ("self", "node"):
        raise ValueError(f"{VARIABLE}={text!r}: kill={fields['kill']!r}; valid: self, node")
    rank = fields["rank"]
    if rank is not None and not rank.isdigit():
        raise ValueError(f"{VARIABLE}={text!r}: rank={rank!r} is not a rank number")
    return Spec(pattern, int(count), None if rank is None else int(rank), fields["kill"])


try:
    _SPEC = parse(os.environ[VARIABLE]) if os.environ.get(VARIABLE) else None
except ValueError as exc:  # a test's typo must not run the test without its kill: one line, exit status 1
    raise SystemExit(f"error: {exc}") from None
_LOG = os.environ.get(LOG_VARIABLE) or None
_ARMED = _SPEC is not None or _LOG is not None
_seen = 0


def hit(point: str, name: str | None = None) -> None:
    """The named point (with the file `name` it concerns, if any): SIGKILL here if REPRO_FAILPOINT says so."""
    if not _ARMED:
        return
    _hit(point if name is None else f"{point}/{name}", point)


def _hit(full: str, point: str) -> None:
    global _seen
    if _LOG is not None:
        with open(_LOG, "a") as log:  # one short append per point: lines of concurrent ranks do not mix
            log.write(f"{os.getpid()} {full}\n")
    spec = _SPEC
    if spec is None or not (fnmatch.fnmatchcase(full, spec.pattern) or fnmatch.fnmatchcase(point, spec.pattern)):
        return
    if spec.rank is not None and int(os.environ.get("RANK", "0")) != spec.rank:
        return
    _seen += 1
    if _seen == spec.count:
        if spec.kill == "node":
            _kill_node()
        os.kill(os.getpid(), signal.SIGKILL)


def _kill_node() -> None:
    """SIGKILL the parent (under torchrun: its agent) first, so that it restarts nothing, then its other children."""
    parent, siblings = os.getppid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):  # listed before the kill: orphans get another parent
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and int(stat.parent.name) != os.getpid():
            siblings.append(int(stat.parent.name))
    for pid in (parent, *siblings):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
