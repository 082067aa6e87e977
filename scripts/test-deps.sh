#!/bin/sh
# Debian packages that only the tests need, installed when missing (CI runs this; so can a developer):
#   golang-go, golang-golang-x-mod-dev -> Go and golang.org/x/mod/sumdb/{note,tlog}, offline, for the
#   interop test that checks our checkpoints, verifier key and proofs with Go's own packages.
#   tinyproxy -> a real HTTP CONNECT proxy on loopback for the agent's proxy tests (auth, 407, a proxy down).
#   openssl   -> the CA and certificates the TLS tests make at run time (and the auditor's checks).
#   postgresql, postgresql-client -> a throwaway PostgreSQL cluster (initdb/pg_ctl from /usr/lib/postgresql,
#   run as the unprivileged `postgres` user with its unix socket in the test's own temp folder) and psql,
#   for the granted-resource tests (test/helpers/postgres.ts); the packaged cluster is not used.
#   perl      -> perl with Test::More (Debian's perl, perl-modules) for the validate-config-repo example capsule,
#   whose vendored Config::Tiny suite runs in the sandbox (test/integration/example-capsule-config-repo.test.ts).
#   jq        -> the auditor's recipes (canonical JSON, the remediation digests) run as the README gives them.
set -eu
missing=""
if ! command -v go >/dev/null 2>&1 || [ ! -d /usr/share/gocode/src/golang.org/x/mod/sumdb/note ]; then
  missing="$missing golang-go golang-golang-x-mod-dev"
fi
command -v tinyproxy >/dev/null 2>&1 || [ -x /usr/bin/tinyproxy ] || [ -x /usr/sbin/tinyproxy ] || missing="$missing tinyproxy"
command -v openssl >/dev/null 2>&1 || missing="$missing openssl"
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$missing postgresql"
command -v psql >/dev/null 2>&1 || missing="$missing postgresql-client"
ls /usr/share/perl/*/Test/More.pm >/dev/null 2>&1 || missing="$missing perl"
command -v jq >/dev/null 2>&1 || missing="$missing jq"
if [ -z "$missing" ]; then
  echo "test-deps: go, golang.org/x/mod, tinyproxy, openssl, postgresql, perl and jq already present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "test-deps: run as root to install$missing (the tests that need them are skipped locally without them)" >&2
  exit 1
fi
echo "test-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=300 update -qq
# shellcheck disable=SC2086 # word splitting of the package list is intended
apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends $missing
