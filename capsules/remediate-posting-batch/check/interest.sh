#!/bin/sh
# Defect FIN-1042: three daily interest credits of 0.10 must total exactly 0.30. $1 is the ledger service
# folder: the deployed one (the operator's grant, read-only at /resources/ledger-service) or a staged copy.
# This check fails while the defect is present.
total=$(/bin/sh "$1/bin/interest-total.sh") || exit 2
if [ "$total" = "0.30" ]; then
  echo "interest total is exact: defect not reproduced"
  exit 0
fi
echo "interest total $total != 0.30: defect FIN-1042 reproduced"
exit 1
