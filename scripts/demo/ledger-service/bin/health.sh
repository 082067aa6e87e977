#!/bin/sh
# The operator's health check, run on the host after a change is applied: the service's configuration
# must fit this host ($1: the host's limits file, outside the target), and the calculator must answer.
root="$(dirname "$0")/.."
batch=$(sed -n 's/^posting_batch *= *//p' "$root/config/ledger.conf")
max=$(sed -n 's/^max_posting_batch *= *//p' "$1")
if [ -z "$batch" ] || [ -z "$max" ] || [ "$batch" -gt "$max" ]; then
  echo "posting_batch ${batch:-unset} does not fit this host (max ${max:-unset})" >&2
  exit 1
fi
/bin/sh "$root/bin/interest-total.sh" >/dev/null
