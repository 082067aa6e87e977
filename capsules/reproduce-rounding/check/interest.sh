#!/bin/sh
# Defect FIN-1042: daily interest of 0.10 credited three times should total exactly 0.30.
# The legacy code sums in binary floating point; this check fails while the defect is present.
awk 'BEGIN {
  total = 0.10 + 0.10 + 0.10
  if (total == 0.30) { print "interest total is exact: defect not reproduced"; exit 0 }
  printf "interest total %.17f != 0.30: defect FIN-1042 reproduced\n", total
  exit 1
}'
