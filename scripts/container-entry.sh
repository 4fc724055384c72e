#!/usr/bin/env bash
# The container's default command (Dockerfile CMD). Two modes:
#   - nothing mounted at /results: the embedded study, as `make reproduce` runs it: `dvc repro`, then
#     `repro verify`, which prints the claims table;
#   - a finished study's results folder mounted at /results (read-only is fine; it is never written): no training;
#     its summary.csv (and runs/, for the per-model intervals) feed the stages from `analyze` on (`dvc repro
#     --force --downstream analyze`) under its profile, then `repro verify` prints the claims table.
# The profile of a mounted study is $REPRO_PROFILE, else the one recorded in its slopes.json, else "paper".
# A writable folder mounted at /out receives the results, figures, tables and report.
# Exercised by scripts/ci-container.sh (both modes); usage in docs/development.md, "The container".
set -euo pipefail
cd "$(dirname "$0")/.."
export DVC_NO_ANALYTICS=1
# rich folds tables to 80 columns when there is no terminal (podman run without -t, CI logs).
[ -t 1 ] || export COLUMNS="${COLUMNS:-160}"

study=/results
out=/out
# This script is PID 1 in the container, and PID 1 ignores the signals it has no handler for: without this trap
# Ctrl-C on `podman run` or `podman stop` would not end a running study. Long steps run in the background so that
# `wait` returns at once when a signal comes, and the handler ends the whole process group.
trap 'trap - INT TERM; kill -TERM 0 2>/dev/null; echo "interrupted" >&2; exit 130' INT TERM
run() { "$@" & wait $!; }

if [ -f "$study/summary.csv" ]; then
  profile="${REPRO_PROFILE:-}"
  if [ -z "$profile" ] && [ -f "$study/slopes.json" ]; then
    profile=$(python -c 'import json, sys; print(json.load(open(sys.argv[1])).get("profile") or "")' \
      "$study/slopes.json")
  fi
  profile="${profile:-paper}"
  echo "== verifying the study mounted at $study ($profile profile); nothing is trained"
  run repro profile use "$profile"
  # Bring the study's tables in (small files); link its run folders rather than copy checkpoints.
  find "$study" -maxdepth 1 -type f -exec cp -t results/ {} +
  if [ -d "$study/runs" ]; then
    rm -rf results/runs
    ln -s "$study/runs" results/runs
  fi
  run dvc repro --force --downstream analyze
else
  if [ -e "$study" ]; then
    echo "error: $study is mounted but holds no summary.csv; mount a finished study's results folder" \
         "(the one with summary.csv and runs/), or nothing to run the embedded study" >&2
    exit 2
  fi
  echo "== the embedded study: dvc repro, then repro verify (docs/protocol.md, 'The two profiles')"
  run dvc repro
fi
run repro verify

if [ -d "$out" ]; then
  if [ ! -w "$out" ]; then
    echo "error: $out is not writable by uid $(id -u); with podman mount it as -v DIR:$out:U" >&2
    exit 1
  fi
  find results -maxdepth 1 -type f -exec cp -t "$out" {} +
  [ -d results/runs ] && [ ! -L results/runs ] && cp -r results/runs "$out"/
  for dir in paper/figures paper/tables; do
    [ -d "$dir" ] && mkdir -p "$out/$dir" && cp -r "$dir"/. "$out/$dir"/
  done
  echo "== results, figures and tables copied to $out"
fi
