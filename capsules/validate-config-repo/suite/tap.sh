#!/bin/sh
# Usage: tap.sh REPORT DIR LIB
#
# Runs every DIR/t/*.t (in C-locale order) with `perl -I LIB` from inside DIR, as `prove` would, and writes
# one TAP stream to REPORT (relative to where it is started): each test file is a subtest, its own TAP
# indented four spaces, closed by `ok` or `not ok` from the file's exit status. Diagnostics stay on stderr.
# Exits 1 when any file failed, 2 when it cannot start.
set -u
[ $# -eq 3 ] || { echo "usage: tap.sh REPORT DIR LIB" >&2; exit 2; }
report=$(pwd)/$1
dir=$2
lib=$3
mkdir -p "$(dirname "$report")" || exit 2
cd "$dir" || exit 2
tmp=$(mktemp) || exit 2
trap 'rm -f "$tmp"' EXIT
LC_ALL=C
export LC_ALL
set -- t/*.t
[ -e "$1" ] || { echo "tap.sh: no test files in $dir/t" >&2; exit 2; }
failed=0
n=0
{
  echo 'TAP version 13'
  echo "1..$#"
  for test in "$@"; do
    n=$((n + 1))
    echo "# Subtest: $test"
    if /usr/bin/perl -I "$lib" "$test" >"$tmp"; then result='ok'; else result='not ok'; failed=1; fi
    # As prove: a file that exits 0 without printing a plan did not pass.
    if [ "$result" = ok ] && ! /usr/bin/grep -q '^1\.\.' "$tmp"; then result='not ok'; failed=1; fi
    /usr/bin/sed 's/^/    /' "$tmp"
    echo "$result $n - $test"
  done
} >"$report"
exit "$failed"
