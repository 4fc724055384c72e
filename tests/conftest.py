"""Shared fixtures. The `smoke_study` fixture runs the real embedded study once per session with `dvc repro` in a
temporary copy of the repository, as a new user would from a fresh clone."""

from __future__ import annotations

import contextlib
import os
import shutil
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


@pytest.fixture(scope="session")
def smoke_study(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A copy of the repository after `dvc repro` of the default (smoke) study."""
    root = copy_checkout(tmp_path_factory.mktemp("study"))
    # no timeout: on a loaded 2-core machine this takes over 15 minutes (measured: the old 900 s limit expired), and
    # a test must not fail because the machine is slow
    return root, run([str(BIN / "dvc"), "repro"], root, timeout=None)


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A fresh copy of the repository (no results), for CLI tests that write files."""
    return copy_checkout(tmp_path / "repo")


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
