#!/usr/bin/env bash
# CI's container check (called by .ci/run): lint the Dockerfile with hadolint, build the image with podman on a
# Debian bookworm base made locally with debootstrap (no image registry is reachable on this project's machines),
# run its default command (the embedded study) offline (--network none) and check that it succeeds and prints the
# claims table, then run it again with the first run's results mounted at /results and check that it verifies them
# without training and reaches the same verdicts.
#
#   bash scripts/ci-container.sh          (as root; installs podman, runc and debootstrap with apt if missing)
#
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian), REPRO_IMAGE (default localhost/repro:ci),
# KEEP_WORK=1 keeps the temporary folder (logs, outputs). The local base and the image stay in podman's store, so a
# second run reuses the base and the dependency layer.
set -euo pipefail
cd "$(dirname "$0")/.."

start=$SECONDS
step() { printf '== ci-container [%4ds] %s\n' $((SECONDS - start)) "$*"; }
fail() { echo "ci-container: FAILED: $*" >&2; exit 1; }

work=$(mktemp -d /tmp/repro-ci-container.XXXXXX)
names=("repro-ci-$$-1" "repro-ci-$$-2")  # the two runs' containers, removed on exit even if a run was cut short
cleanup() {
  { command -v podman >/dev/null && podman rm -f "${names[@]}"; } >/dev/null 2>&1 || true
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
image="${REPRO_IMAGE:-localhost/repro:ci}"
base_tag=localhost/repro-base:bookworm

# --- tools -------------------------------------------------------------------------------------------------------
missing=()
for tool in podman runc debootstrap; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  step "installing ${missing[*]} with apt"
  [ "$(id -u)" = 0 ] \
    || fail "${missing[*]} missing and not root: install them (apt-get install ${missing[*]}) or run as root"
  if ! { apt-get update -q >"$work/apt.log" 2>&1 \
         && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >>"$work/apt.log" 2>&1; }; then
    tail -n 20 "$work/apt.log" >&2
    fail "could not install ${missing[*]} with apt-get (log above); the container check needs Debian's" \
         "podman, runc and debootstrap"
  fi
fi
# Debian's podman works here only with runc (the default crun fails) and explicit ulimits (shared/ENV.md).
cat >"$work/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
EOF
export CONTAINERS_CONF="$work/containers.conf"
podman info >"$work/podman-info.log" 2>&1 \
  || { tail -n 20 "$work/podman-info.log" >&2; fail "podman does not start (log above)"; }

# --- lint --------------------------------------------------------------------------------------------------------
step "hadolint Dockerfile"
python3 -m venv "$work/lint"
"$work/lint/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements/ci-container.txt \
  || fail "could not install requirements/ci-container.txt (hadolint)"
"$work/lint/bin/hadolint" Dockerfile || fail "hadolint found problems in the Dockerfile (above)"

# --- base image --------------------------------------------------------------------------------------------------
if ! podman image exists "$base_tag"; then
  step "building the base: debootstrap --variant=minbase bookworm from $mirror"
  debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 20 "$work/debootstrap.log" >&2; fail "debootstrap failed (log above)"; }
  tar -C "$work/rootfs" --numeric-owner -c . | podman import --change 'CMD ["bash"]' - "$base_tag" >/dev/null
  rm -rf "$work/rootfs"
fi
digest=$(podman image inspect --format '{{.Digest}}' "$base_tag")
base="localhost/repro-base@$digest"
step "base $base"

# --- build -------------------------------------------------------------------------------------------------------
# pip inside the build gets this machine's package sources: the local wheel folders and indexes that `pip config
# list` names, mounted read-only at the same paths (so torch is not downloaded), and the host's CA bundle (TLS is
# intercepted here). The mounts and pip.conf exist only while RUN steps run; none of it is in the image.
volumes=()
pipconf="$work/pip.conf"
echo "[global]" >"$pipconf"
cert=$(python3 -m pip config list 2>/dev/null | sed -n "s/^.*\.cert='\(.*\)'$/\1/p" | head -n 1)
cert="${cert:-/etc/ssl/certs/ca-certificates.crt}"
if [ -f "$cert" ]; then
  volumes+=(-v "$(readlink -f "$cert"):/etc/pip-build-ca.pem:ro")
  echo "cert = /etc/pip-build-ca.pem" >>"$pipconf"
fi
for key in find-links extra-index-url index-url; do
  values=$(python3 -m pip config list 2>/dev/null | sed -n "s/^[^.]*\.$key='\(.*\)'$/\1/p" | tr ' ' '\n' | sort -u \
           | tr '\n' ' ')
  [ -n "${values// /}" ] || continue
  echo "$key = $values" >>"$pipconf"
  for value in $values; do
    dir="${value#file://}"
    case "$dir" in /*) [ -e "$dir" ] || continue
                       # an index's simple/ pages link to ../../files: mount the folder above simple/
                       [ "$(basename "$dir")" = simple ] && dir=$(dirname "$dir")
                       volumes+=(-v "$dir:$dir:ro") ;;
    esac
  done
done
volumes+=(-v "$pipconf:/etc/pip.conf:ro")
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
step "podman build -> $image (revision $revision)"
podman build --pull=never --build-arg "BASE_IMAGE=$base" --build-arg "REVISION=$revision" "${volumes[@]}" \
  -t "$image" . 2>&1 | tee "$work/build.log" || fail "podman build failed (output above)"
podman image prune -f >/dev/null  # the previous build's layers, now untagged
step "image size: $(podman image inspect --format '{{.Size}}' "$image" | awk '{printf "%.1f GB", $1 / 1e9}')"

# --- run: the embedded study -------------------------------------------------------------------------------------
check_table() {  # $1: log; the claims table's title and its summary line must both be there
  grep -q "claims of the paper vs this run" "$1" || fail "$2: no claims table in the output ($1)"
  grep -Eq '^[0-9]+ claims: [0-9]+ pass, [0-9]+ fail, [0-9]+ not evaluated' "$1" \
    || fail "$2: no claims summary line in the output"
}
mkdir -p "$work/out1" "$work/out2"
chown 1000:1000 "$work/out1" "$work/out2"  # the image runs as uid 1000
step "podman run $image (default command: the embedded study)"
timeout -k 60 2400 podman run --rm --name "${names[0]}" --network none -v "$work/out1:/out" "$image" 2>&1 \
  | tee "$work/run1.log" || fail "the default command failed (output above)"
check_table "$work/run1.log" "default command"
{ [ -s "$work/out1/claims.json" ] && [ -s "$work/out1/summary.csv" ]; } \
  || fail "default command: no claims.json or summary.csv in /out"

# --- run: verify an existing study (the first run's results, mounted read-only) ----------------------------------
step "podman run with those results mounted at /results:ro (verify only)"
timeout -k 60 600 podman run --rm --name "${names[1]}" --network none \
  -v "$work/out1:/results:ro" -v "$work/out2:/out" "$image" 2>&1 \
  | tee "$work/run2.log" || fail "verifying a mounted study failed (output above)"
check_table "$work/run2.log" "mounted study"
grep -q "verifying the study mounted at /results" "$work/run2.log" || fail "mounted study: not run in verify mode"
! grep -q "Running stage 'finetune" "$work/run2.log" || fail "mounted study: it trained models"
python3 - "$work/out1/claims.json" "$work/out2/claims.json" <<'EOF' || fail "mounted study: verdicts differ"
import json, sys
first, second = (json.load(open(path)) for path in sys.argv[1:])
key = lambda doc: [(c["id"], c["verdict"], c["ours"]) for c in doc["claims"]]
if key(first) != key(second):
    sys.exit(f"embedded run: {key(first)}\nmounted run: {key(second)}")
EOF
step "passed"
