"""Start-up time of the CLI as a user meets it: wall time of `repro --help` (a fresh process each time, the venv's
entry point), best of five. Target: under 0.3 s (issue 16); the help path must not import torch, pandas or
matplotlib (tests/test_structure.py and tests/test_cli.py check that part).

    .venv/bin/python benchmarks/cli_help_time.py [--repeats 5] [--check] [-- VERB ...]

Prints each run's seconds and the best. `--check` exits 1 when the best is over the target. The figure depends on
the machine and its load, so no test asserts on it; docs/development.md records the measured value with its date.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

TARGET_SECONDS = 0.3


def entry_point() -> str:
    """The `repro` script of the running interpreter's environment, else the one on PATH."""
    beside = Path(sys.executable).with_name("repro")
    if beside.exists():
        return str(beside)
    found = shutil.which("repro")
    if found is None:
        raise SystemExit("error: no `repro` command: install the package first (`make setup`)")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--check", action="store_true", help=f"exit 1 if the best is over {TARGET_SECONDS} s")
    parser.add_argument("verb", nargs="*", help="a verb to time instead of the top level, e.g. `data fetch`")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    command = [entry_point(), *args.verb, "--help"]
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    best = min(times)
    print(f"{' '.join(['repro', *args.verb, '--help'])}: " + ", ".join(f"{t:.3f}" for t in times)
          + f" s; best of {args.repeats}: {best:.3f} s (target < {TARGET_SECONDS} s)")
    return 1 if args.check and best > TARGET_SECONDS else 0


if __name__ == "__main__":
    sys.exit(main())
