#!/usr/bin/env bash
# Stop the cluster scripts/slurm-up.sh started under $SLURM_BASE: by pid file, in reverse order, waiting for each.
BASE=${SLURM_BASE:?set SLURM_BASE to a scratch folder}
stop() { local p; p=$(cat "$1" 2>/dev/null) || return 0; [ -n "$p" ] || return 0
  kill "$p" 2>/dev/null || return 0
  for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done; kill -9 "$p" 2>/dev/null; }
stop "$BASE/run/slurmd.pid"; stop "$BASE/run/slurmctld.pid"; stop "$BASE/run/slurmdbd.pid"
stop "$BASE/run/mysqld.pid"; stop /run/munge/munged.pid
