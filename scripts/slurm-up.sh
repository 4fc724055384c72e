#!/usr/bin/env bash
# Start a real single-node SLURM cluster (Debian 12 packages, slurm-wlm 22.05) for CI and tests, without systemd.
# Run as root. The recipe and its measurements are in the project's shared SLURM notes; used by .ci/run before
# `make test` so that tests/test_slurm.py submits the embedded study through `repro sweep --launcher slurm`.
#
#   SLURM_BASE=/tmp/slurm scripts/slurm-up.sh    # prints `export SLURM_CONF=...` on its last line
#   SLURM_BASE=/tmp/slurm scripts/slurm-down.sh
#
# WITH_DBD=1 (default) also starts MariaDB + slurmdbd: submitit polls `sacct` to notice a job that died without
# writing its result (scancel, timeout, node failure); without accounting `job.result()` waits forever then.
# Not idempotent while the daemons run: this script stops an earlier cluster under the same base first.
set -euo pipefail
BASE=${SLURM_BASE:?set SLURM_BASE to a scratch folder}
WITH_DBD=${WITH_DBD:-1}
HERE=$(cd "$(dirname "$0")" && pwd)
H=$(hostname -s)
ts() { date +%s.%N; }
el() { printf '%.2fs' "$(echo "$(ts) - $1" | bc)"; }
start=$(ts)

[ "$(id -u)" = 0 ] || { echo "slurm-up.sh: must run as root (the daemons run as root here)" >&2; exit 1; }
"$HERE/slurm-down.sh" >/dev/null 2>&1 || true

t=$(ts)
PKGS="munge slurmctld slurmd slurm-client bc"
[ "$WITH_DBD" = 1 ] && PKGS="$PKGS slurmdbd mariadb-server"
if ! dpkg -s $PKGS >/dev/null 2>&1; then
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends $PKGS >/dev/null
fi
echo "[time] apt: $(el $t)"

# A fresh state folder every start: job ids restart at 1 then, so callers must use fresh submitit folders too.
rm -rf "$BASE/state" "$BASE/spool"
mkdir -p "$BASE"/{etc,state,spool,log,run,db}
export SLURM_CONF=$BASE/etc/slurm.conf
# Node size from the hardware, memory capped so slurmd never registers below the config.
read -r CPUS MEM < <(slurmd -C | awk '/NodeName/{for(i=1;i<=NF;i++){split($i,a,"=");v[a[1]]=a[2]}; print v["CPUs"], v["RealMemory"]}')
MEM=$(( MEM > 20000 ? 20000 : MEM - 512 ))
if [ "$WITH_DBD" = 1 ]; then ACCT="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/linux"
else ACCT="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"; fi
cat > "$SLURM_CONF" <<CONF
ClusterName=ci
SlurmctldHost=${H}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
$ACCT
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool
SlurmctldPidFile=$BASE/run/slurmctld.pid
SlurmdPidFile=$BASE/run/slurmd.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
NodeName=${H} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${MEM} State=UNKNOWN
PartitionName=debug Nodes=${H} Default=YES MaxTime=INFINITE State=UP
CONF

t=$(ts)
install -d -o munge -g munge -m 0755 /run/munge
[ -s /etc/munge/munge.key ] || runuser -u munge -- /usr/sbin/mungekey
runuser -u munge -- /usr/sbin/munged
munge -n | unmunge >/dev/null
echo "[time] munged: $(el $t)"

if [ "$WITH_DBD" = 1 ]; then
  t=$(ts)
  [ -d "$BASE/db/mysql" ] || mariadb-install-db --user=root --datadir="$BASE/db" --auth-root-authentication-method=normal \
    --skip-test-db >"$BASE/log/mariadb-install.log" 2>&1
  setsid nohup /usr/sbin/mariadbd --no-defaults --user=root --datadir="$BASE/db" \
    --socket="$BASE/run/mysqld.sock" --pid-file="$BASE/run/mysqld.pid" --bind-address=127.0.0.1 --port=3306 \
    --log-error="$BASE/log/mariadb.err" --innodb-buffer-pool-size=64M --innodb-lock-wait-timeout=900 \
    </dev/null >/dev/null 2>&1 &
  for _ in $(seq 100); do mariadb --socket="$BASE/run/mysqld.sock" -uroot -e 'select 1' >/dev/null 2>&1 && break; sleep 0.2; done
  mariadb --socket="$BASE/run/mysqld.sock" -uroot -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurmpw'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
  echo "[time] mariadb: $(el $t)"
  t=$(ts)
  cat > "$BASE/etc/slurmdbd.conf" <<CONF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
LogFile=$BASE/log/slurmdbd.log
PidFile=$BASE/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3306
StorageUser=slurm
StoragePass=slurmpw
StorageLoc=slurm_acct_db
CONF
  chmod 600 "$BASE/etc/slurmdbd.conf"
  /usr/sbin/slurmdbd  # reads slurmdbd.conf from dirname($SLURM_CONF)
  for _ in $(seq 100); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.2; done
  sacctmgr -i -Q add cluster ci >/dev/null 2>&1 || true
  echo "[time] slurmdbd: $(el $t)"
fi

t=$(ts)
/usr/sbin/slurmctld
/usr/sbin/slurmd
for _ in $(seq 120); do sinfo -h -o %T 2>/dev/null | grep -qx idle && break; sleep 0.25; done
sinfo -h -o %T | grep -qx idle || { echo "node not idle"; sinfo; tail -20 "$BASE"/log/slurm*.log; exit 1; }
echo "[time] slurmctld+slurmd to idle: $(el $t)"
echo "[time] total: $(el $start)"
echo "export SLURM_CONF=$SLURM_CONF"
