#!/bin/sh
# Installs the Debian packages edge-runner's step isolation needs, only when they are missing.
#   bubblewrap  -> /usr/bin/bwrap   (namespaces: net, pid, ipc, uts; read-only host; private /tmp and /dev)
#   util-linux  -> /usr/bin/prlimit (per-step CPU, address space, open files, processes)
# Idempotent: a second run installs nothing and does not touch the network.
# Usage: scripts/system-deps.sh            (must be root, or have sudo, when something is missing)
set -eu

missing=""
command -v bwrap >/dev/null 2>&1 || missing="$missing bubblewrap"
command -v prlimit >/dev/null 2>&1 || missing="$missing util-linux"

if [ -z "$missing" ]; then
  echo "system-deps: bubblewrap and prlimit already present"
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: missing:$missing, and apt-get is not available; install them with the host's package manager" >&2
  exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
  as_root=""
elif command -v sudo >/dev/null 2>&1; then
  as_root="sudo"
else
  echo "system-deps: missing:$missing; run this script as root" >&2
  exit 1
fi

echo "system-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
# Wait for a concurrent apt/dpkg (another job on the same host) instead of failing at once.
lock_wait="-o DPkg::Lock::Timeout=300"
# shellcheck disable=SC2086
$as_root apt-get $lock_wait update -qq
# shellcheck disable=SC2086 # word splitting of the package list is intended
$as_root apt-get $lock_wait install -y -qq --no-install-recommends $missing
command -v bwrap >/dev/null 2>&1 && command -v prlimit >/dev/null 2>&1
echo "system-deps: ok ($(bwrap --version))"
