#!/bin/sh
# Prints the total of three daily interest credits of 0.10, booked the way config/ledger.conf says.
conf="$(dirname "$0")/../config/ledger.conf"
mode=$(sed -n 's/^interest_arithmetic *= *//p' "$conf")
case "$mode" in
  cents) awk 'BEGIN { cents = 10 + 10 + 10; printf "%d.%02d\n", cents / 100, cents % 100 }' ;;
  float) awk 'BEGIN { printf "%.17g\n", 0.10 + 0.10 + 0.10 }' ;;
  *) echo "unknown interest_arithmetic: $mode" >&2; exit 2 ;;
esac
