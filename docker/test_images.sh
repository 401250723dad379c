#!/usr/bin/env bash
# `make docker-test`: builds both images with podman on this machine and runs them, no registry involved.
#  1. a Debian 12 base (python3, python3-venv) made with `debootstrap --variant=minbase` from the host's apt
#     mirror, imported with `podman import`;
#  2. docker/Dockerfile.ray and docker/Dockerfile.train built FROM it, pip reading the host's configuration
#     (index, find-links, wheel directories, CA bundle), mounted read-only into the build and never into a layer;
#  3. each image run with --network none: `usfmae doctor`, then docker/pipeline_smoke.sh in the training image
#     (shards, a 2-rank --cpu pretrain under deepspeed, export, fine-tune).
# Podman keeps everything under one temporary directory (--root/--runroot), removed at exit, also on failure;
# nothing else on the machine is touched. Prints time and disk at the end.
#
#   docker/test_images.sh            # build, run, clean up
#   docker/test_images.sh --check    # can podman run here? exit 0, or print why not and exit 3
#
# Environment: USFMAE_DOCKER_TMP (parent of the temporary directory, default /var/tmp: ~20 GB while it runs),
# USFMAE_DOCKER_TIMEOUT (seconds for the whole run, default 2400: each step is stopped when it runs out),
# USFMAE_DEBIAN_MIRROR (default: the host's Debian mirror), USFMAE_TORCH_VARIANT / USFMAE_TORCH_INDEX_URL
# (the Dockerfiles' TORCH_VARIANT / TORCH_INDEX_URL, e.g. +cpu and https://download.pytorch.org/whl/cpu).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS=(podman buildah debootstrap runc)
SUITE=bookworm  # the images are Debian 12 (Python 3.11, as docker/requirements.lock was tested)

say() { printf '[docker-test] %s\n' "$*"; }

# Why podman cannot run here, or nothing. Root: debootstrap and rootful podman need it (rootless podman would
# need subuid ranges and a user-owned base, which CI machines rarely have set up).
cannot_run() {
  if [ "$(id -u)" != 0 ]; then echo "not root (debootstrap and the podman set-up here need root)"; return; fi
  local missing=()
  for tool in "${TOOLS[@]}"; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
  if [ ${#missing[@]} -gt 0 ] && ! command -v apt-get >/dev/null 2>&1; then
    echo "${missing[*]} missing and no apt-get to install them"; return
  fi
  if ! unshare --mount --pid --fork true 2>/dev/null; then
    echo "no mount/PID namespaces (unshare failed: a container without privileges?)"; return
  fi
  if [ "$(cat /proc/sys/user/max_user_namespaces 2>/dev/null || echo 0)" = 0 ]; then
    echo "user namespaces disabled (/proc/sys/user/max_user_namespaces is 0)"; return
  fi
  if ! grep -qw overlay /proc/filesystems && ! modprobe -n overlay 2>/dev/null; then
    echo "no overlay filesystem in this kernel"; return
  fi
}

if [ "${1:-}" = --check ]; then
  reason=$(cannot_run)
  if [ -n "$reason" ]; then echo "podman cannot run here: $reason"; exit 3; fi
  exit 0
fi
reason=$(cannot_run)
if [ -n "$reason" ]; then echo "error: podman cannot run here: $reason" >&2; exit 3; fi

install_tools() {  # as the Makefile installs tesseract
  local missing=()
  for tool in "${TOOLS[@]}"; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
  [ ${#missing[@]} -eq 0 ] && return
  say "installing ${missing[*]} with apt-get (podman buildah debootstrap runc)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      podman buildah debootstrap runc >/dev/null; } \
    || { echo "error: apt-get could not install podman buildah debootstrap runc" >&2; exit 1; }
}

# The host's Debian mirror: the first deb URI of its apt sources that is not the security archive.
debian_mirror() {
  { cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null || true; } |
    awk '/^[ \t]*URIs:/ {print $2} /^[ \t]*deb[ \t]/ {sub(/\[[^]]*\]/, ""); print $2}' |
    { grep -v -i security || true; } | head -n 1
}

START=$SECONDS
DF_BEFORE=$(df -BM --output=used "${USFMAE_DOCKER_TMP:-/var/tmp}" | tail -n 1 | tr -dc 0-9)
WORK=$(mktemp -d "${USFMAE_DOCKER_TMP:-/var/tmp}/usfmae-docker-test.XXXXXX")
TAG=$(basename "$WORK" | tr '[:upper:]' '[:lower:]')
export TMPDIR="$WORK/tmp"  # podman's build contexts and blobs stay inside WORK too
mkdir -p "$TMPDIR"
# runc: crun refuses this VM's hybrid cgroups; cgroupfs: no systemd cgroup manager needed; file events: no journal.
PODMAN=(podman --root "$WORK/storage" --runroot "$WORK/run" --runtime runc --cgroup-manager cgroupfs
        --events-backend file)
# podman's default limits (taken from the host's hard limits) are refused by runc here
ULIMITS=(--ulimit nofile=20000:20000 --ulimit nproc=32768:32768)
BASE=localhost/usfmae-base:$TAG
RAY=localhost/usfmae-ray:$TAG
TRAIN=localhost/usfmae-train:$TAG
PEAK_MB=0
SIZES=""
DEADLINE=$((START + ${USFMAE_DOCKER_TIMEOUT:-2400}))

limited() {  # run "$@" within what is left of the time budget (a hung build or rank must not hold CI)
  local left=$((DEADLINE - SECONDS)) rc=0
  if [ "$left" -le 0 ]; then
    echo "error: out of time (USFMAE_DOCKER_TIMEOUT=${USFMAE_DOCKER_TIMEOUT:-2400} s)" >&2; return 124
  fi
  timeout --kill-after=30 "$left" "$@" || rc=$?
  [ "$rc" = 124 ] && echo "error: stopped after USFMAE_DOCKER_TIMEOUT=${USFMAE_DOCKER_TIMEOUT:-2400} s: $*" >&2
  return "$rc"
}

measure() {  # peak disk use of WORK, in MB (sampled after each step)
  local mb
  mb=$(du -smx "$WORK" 2>/dev/null | cut -f1) || return 0  # -x: not the overlay mounts of the storage
  [ "${mb:-0}" -gt "$PEAK_MB" ] && PEAK_MB=$mb
  return 0
}

cleanup() {
  local rc=$?
  set +e  # clean up as much as possible whatever fails
  trap - EXIT INT TERM
  measure
  say "cleaning up $WORK"
  "${PODMAN[@]}" rm --all --force >/dev/null 2>&1 || true
  "${PODMAN[@]}" rmi --all --force >/dev/null 2>&1 || true
  # overlay mounts the storage may still hold (podman normally unmounts them with the images)
  findmnt -rn -o TARGET | grep -F "$WORK/" | sort -r | while read -r target; do umount -l "$target" || true; done
  rm -rf "$WORK"
  local df_after
  df_after=$(df -BM --output=used "$(dirname "$WORK")" | tail -n 1 | tr -dc 0-9)
  say "images: ${SIZES:-not measured (stopped before both were built)}"
  say "disk: peak ${PEAK_MB} MB under $(dirname "$WORK"); after clean-up $((df_after - DF_BEFORE)) MB more" \
      "used than before (other processes on the machine included)"
  say "time: $((SECONDS - START)) s; $([ $rc = 0 ] && echo passed || echo "FAILED (exit $rc)")"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

install_tools

# ------------------------------------------------------------------ 1. base image from the host's apt sources
MIRROR=${USFMAE_DEBIAN_MIRROR:-$(debian_mirror)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
say "base: debootstrap --variant=minbase $SUITE from $MIRROR"
t=$SECONDS
ROOTFS="$WORK/rootfs"
limited debootstrap --variant=minbase --include=python3,python3-venv "$SUITE" "$ROOTFS" "$MIRROR" \
    >"$WORK/debootstrap.log" 2>&1 \
  || { tail -n 20 "$WORK/debootstrap.log" >&2; echo "error: debootstrap failed (log above)" >&2; exit 1; }
# The host's Debian sources (mirror and security archive) replace debootstrap's single line, so that
# apt-get in the Dockerfiles sees what the host sees; packages and lists downloaded here are dropped.
copied=0
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
  if [ -f "$f" ] && grep -q -F "$MIRROR" "$f"; then
    cp "$f" "$ROOTFS/etc/apt/sources.list.d/$(basename "$f")"
    copied=1
  fi
done
[ $copied = 1 ] && rm -f "$ROOTFS/etc/apt/sources.list"
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
tar -C "$ROOTFS" -c . | "${PODMAN[@]}" import --quiet - "$BASE" >/dev/null
rm -rf "$ROOTFS"
say "base: $BASE in $((SECONDS - t)) s"
measure

# ------------------------------------------------------------------ 2. the host's pip configuration, read-only
# `pip config list` shows every file and PIP_* variable in effect, later ones winning; the merged result becomes
# /etc/pip.conf in the build, and every local path it names (CA bundle, constraints, wheel directories, file://
# indexes) is mounted at the same path, read-only.
if [ -x "$REPO/.venv/bin/python" ]; then PIP=("$REPO/.venv/bin/python" -m pip); else PIP=(python3 -m pip); fi
declare -A CONF=()
while IFS= read -r line; do
  key=${line%%=*}; value=${line#*=}; value=${value#\'}; value=${value%\'}
  section=${key%.*}; name=${key##*.}
  [ "$section" = :env: ] && section=global
  CONF["$section.$name"]=$value
done < <("${PIP[@]}" config list 2>/dev/null)
MOUNTS=(-v "$WORK/pip.conf:/etc/pip.conf:ro")
declare -A MOUNTED=()
{
  for section in $(printf '%s\n' "${!CONF[@]}" | sed 's/\.[^.]*$//' | sort -u); do
    echo "[$section]"
    for key in "${!CONF[@]}"; do
      [ "${key%.*}" = "$section" ] || continue
      echo "${key##*.} = ${CONF[$key]}"
      for token in ${CONF[$key]}; do
        path=${token#file://}
        [ "${path:0:1}" = / ] && [ -e "$path" ] || continue
        [ "$(basename "$path")" = simple ] && path=$(dirname "$path")  # a PEP 503 index links ../files
        [ -n "${MOUNTED[$path]:-}" ] && continue
        MOUNTED[$path]=1
        MOUNTS+=(-v "$path:$path:ro")
      done
    done
  done
} >"$WORK/pip.conf"
say "pip: $(grep -o '^[^ ]*' "$WORK/pip.conf" | tr '\n' ' ')(values not shown: they may hold credentials)"
say "pip: mounted read-only: ${!MOUNTED[*]}"

# ------------------------------------------------------------------ 3. the two images
TORCH_ARGS=()
[ -n "${USFMAE_TORCH_VARIANT:-}" ] && TORCH_ARGS+=(--build-arg "TORCH_VARIANT=$USFMAE_TORCH_VARIANT")
[ -n "${USFMAE_TORCH_INDEX_URL:-}" ] && TORCH_ARGS+=(--build-arg "TORCH_INDEX_URL=$USFMAE_TORCH_INDEX_URL")
# chroot isolation and the host network: the build needs no namespaces beyond podman's own and reaches the
# indexes the host reaches; --layers=false commits each image once (nothing is cached between runs anyway).
# --format docker: the Dockerfiles' SHELL (bash -o pipefail) is kept (the OCI format has no SHELL).
BUILD=(limited "${PODMAN[@]}" build --isolation chroot --network host --pull=never --force-rm --layers=false
       --format docker
       "${ULIMITS[@]}" "${MOUNTS[@]}" "${TORCH_ARGS[@]}" --build-arg "BASE_IMAGE=$BASE")

t=$SECONDS
say "build: docker/Dockerfile.ray"
"${BUILD[@]}" -f "$REPO/docker/Dockerfile.ray" -t "$RAY" "$REPO"
say "build: usfmae-ray in $((SECONDS - t)) s"
measure
t=$SECONDS
# Plain Debian for both stages, so no DeepSpeed op is compiled (no nvcc); the ops are probed by doctor.
say "build: docker/Dockerfile.train"
"${BUILD[@]}" --build-arg "BUILD_BASE_IMAGE=$BASE" --build-arg PREBUILD_DS_OPS=0 \
  -f "$REPO/docker/Dockerfile.train" -t "$TRAIN" "$REPO"
say "build: usfmae-train in $((SECONDS - t)) s"
measure
SIZES=$("${PODMAN[@]}" images --format '{{.Repository}} {{.Size}}' | grep -v usfmae-base | paste -sd ';' | sed 's/;/; /g')
say "images: $SIZES"

# Nothing from the build may remain in the images: the pip configuration and the mounted folders are absent or
# empty (mount points), no mounted file is there with the host's content (a Debian package may create the same
# path with its own: ca-certificates writes /etc/ssl/certs/ca-certificates.crt), and no pip cache exists.
SUMS=()
for path in "${!MOUNTED[@]}"; do
  [ -f "$path" ] && SUMS+=("$path=$(sha256sum "$path" | cut -d' ' -f1)")
done
for image in "$RAY" "$TRAIN"; do
  "${PODMAN[@]}" run --rm --network none --user 0 "${ULIMITS[@]}" "$image" sh -c '
    for p; do
      case "$p" in
        *=*) f=${p%%=*}; [ -f "$f" ] && [ "$(sha256sum "$f" | cut -d" " -f1)" = "${p#*=}" ] && { echo "$f"; exit 1; } ;;
        *) if [ -d "$p" ]; then [ -z "$(ls -A "$p")" ]; elif [ -f "$p" ]; then [ ! -s "$p" ]; fi || { echo "$p"; exit 1; } ;;
      esac
    done; exit 0' \
    sh /etc/pip.conf "${SUMS[@]}" $(for p in "${!MOUNTED[@]}"; do [ -d "$p" ] && echo "$p"; done) \
    /root/.cache/pip /home/usfmae/.cache/pip \
    || { echo "error: $image holds build-time pip configuration, wheels or a pip cache (path above)" >&2; exit 1; }
done

# ------------------------------------------------------------------ 4. run them, offline
RUN=(limited "${PODMAN[@]}" run --rm --network none "${ULIMITS[@]}" --shm-size=2g)
t=$SECONDS
for image in "$RAY" "$TRAIN"; do
  say "run: usfmae doctor in $image"
  "${RUN[@]}" "$image" usfmae doctor
done
say "run: docker/pipeline_smoke.sh in $TRAIN"
"${RUN[@]}" -v "$REPO/docker/pipeline_smoke.sh:/opt/pipeline_smoke.sh:ro" "$TRAIN" bash /opt/pipeline_smoke.sh
say "run: done in $((SECONDS - t)) s"
