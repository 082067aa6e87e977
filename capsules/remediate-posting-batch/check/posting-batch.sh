#!/bin/sh
# The staged ledger configuration ($1) sets posting_batch to a whole number of entries.
batch=$(sed -n 's/^posting_batch *= *//p' "$1/config/ledger.conf")
case "$batch" in
  '' | *[!0-9]*) echo "posting_batch is not a whole number: ${batch:-unset}" >&2; exit 1 ;;
esac
echo "posting_batch = $batch"
