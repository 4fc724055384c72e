"""Shared fixtures. The `smoke_study` fixture runs the real embedded study once per session with `dvc repro` in a
temporary copy of the repository, as a new user would from a fresh clone (docs/testing.md, "Speed")."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def tool_env() -> dict[str, str]:
    """The environment the CLI and dvc run in: this venv first on PATH, DVC analytics off, and a wide
    terminal so that rich tables are not folded."""
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1",
            "COLUMNS": "250"}


def run(args: list[str], cwd: Path, check: bool = True, timeout: float | None = 900) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=cwd, env=tool_env(), capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{args} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def copy_checkout(dest: Path) -> Path:
    """Copy what a fresh clone holds (tracked and not-ignored files) into `dest`, as a new git repository.

    Generated results are left out so that every number the tests read is produced in the copy.
    """
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if not source.is_file() or name.startswith(("results/", "paper/figures/")):
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    for command in (["git", "init", "-q"], ["git", "add", "-A"],
                    ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"]):
        subprocess.run(command, cwd=dest, check=True, capture_output=True)
    return dest


class _BackgroundStudy:
    """`dvc repro` of the smoke study in a copy of the repository, run once per session when a test first asks for
    `smoke_study`. It is not started early to overlap other tests: two torch processes on two cores, each with
    OpenMP threads that spin while they wait, slowed each other down 2.6x (two fine-tunes side by side took 109 s,
    one after the other 42 s), and fewer threads would change the study's numbers. Output goes to files, not
    pipes, so a long run never blocks on a full pipe."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.stdout, self.stderr = root.parent / "dvc-repro.stdout", root.parent / "dvc-repro.stderr"
        args = [str(BIN / "dvc"), "repro"]
        with self.stdout.open("w") as out, self.stderr.open("w") as err:
            self.proc = subprocess.Popen(args, cwd=root, env=tool_env(), stdout=out, stderr=err,
                                         start_new_session=True)
        self.args = args
        self.result: subprocess.CompletedProcess | None = None

    def wait(self) -> subprocess.CompletedProcess:
        if self.result is None:
            # no timeout: on a loaded 2-core machine the study can take over 15 minutes (the old 900 s limit
            # expired), and a test must not fail because the machine is slow
            code = self.proc.wait()
            self.result = subprocess.CompletedProcess(self.args, code, self.stdout.read_text(),
                                                      self.stderr.read_text())
        if self.result.returncode != 0:
            raise AssertionError(f"{self.args} failed ({self.result.returncode}):\n{self.result.stdout}\n"
                                 f"{self.result.stderr}")
        return self.result

    def stop(self) -> None:
        if self.proc.poll() is None:
            # the session left early (-x, a failure, Ctrl-C): stop dvc and the stage commands it started (its own
            # process group, from start_new_session)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


_STUDY_KEY = pytest.StashKey[_BackgroundStudy]()


def pytest_sessionfinish(session: pytest.Session) -> None:
    study = session.config.stash.get(_STUDY_KEY, None)
    if study is not None:
        study.stop()


@pytest.fixture(scope="session")
def smoke_study(request, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A copy of the repository after `dvc repro` of the default (smoke) study, run once per session."""
    study = request.config.stash.get(_STUDY_KEY, None)
    if study is None:
        study = request.config.stash[_STUDY_KEY] = _BackgroundStudy(copy_checkout(tmp_path_factory.mktemp("study")))
    return study.root, study.wait()


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A fresh copy of the repository (no results), for CLI tests that write files."""
    return copy_checkout(tmp_path / "repo")


@pytest.fixture(scope="session")
def shared_checkout(tmp_path_factory) -> Path:
    """One fresh copy of the repository for the whole session, for tests whose commands must write nothing (each
    such test asserts that the files are unchanged, so a command that wrongly writes still fails its own test):
    copying the checkout (git init, add, commit) once instead of once per case."""
    return copy_checkout(tmp_path_factory.mktemp("shared") / "repo")


@contextlib.contextmanager
def serve_folder(folder: Path) -> Iterator[str]:
    """A plain HTTP server for the files of `folder` on 127.0.0.1 (quiet, stopped on exit); yields its base URL."""
    import http.server
    import threading
    from functools import partial

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(folder)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        httpd.server_close()
