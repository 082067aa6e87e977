#!/bin/sh
# Debian packages that only the tests need, installed when missing (CI runs this; so can a developer):
#   golang-go, golang-golang-x-mod-dev -> Go and golang.org/x/mod/sumdb/{note,tlog}, offline, for the
#   interop test that checks our checkpoints, verifier key and proofs with Go's own packages.
set -eu
if command -v go >/dev/null 2>&1 && [ -d /usr/share/gocode/src/golang.org/x/mod/sumdb/note ]; then
  echo "test-deps: go and golang.org/x/mod already present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "test-deps: run as root to install golang-go golang-golang-x-mod-dev (the Go interop test is skipped locally without them)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=300 update -qq
apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends golang-go golang-golang-x-mod-dev
