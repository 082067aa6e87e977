#!/bin/sh
# A small validation suite over a ledger extract: writes a JUnit XML report, exits 0 when every check passes.
# Usage: run.sh LEDGER.csv REPORT.xml   (LEDGER_LIMIT from the capsule's env)
set -eu
ledger=$1
report=$2
limit=${LEDGER_LIMIT:-1000000}
mkdir -p "$(dirname "$report")"

unbalanced=$(awk -F, 'NR > 1 { sum[$1] += $3 } END { n = 0; for (a in sum) if (sum[a] != 0) n++; print n }' "$ledger")
over_limit=$(awk -F, -v limit="$limit" 'NR > 1 && ($3 > limit || -$3 > limit) { n++ } END { print n + 0 }' "$ledger")
rows=$(awk 'NR > 1 { n++ } END { print n + 0 }' "$ledger")

failures=0
case_balanced='<testcase classname="ledger" name="accounts-balance"/>'
case_limit='<testcase classname="ledger" name="amounts-within-limit"/>'
case_rows='<testcase classname="ledger" name="extract-not-empty"/>'
if [ "$unbalanced" -ne 0 ]; then
  failures=$((failures + 1))
  case_balanced="<testcase classname=\"ledger\" name=\"accounts-balance\"><failure message=\"$unbalanced account(s) do not balance\"/></testcase>"
fi
if [ "$over_limit" -ne 0 ]; then
  failures=$((failures + 1))
  case_limit="<testcase classname=\"ledger\" name=\"amounts-within-limit\"><failure message=\"$over_limit amount(s) over the limit\"/></testcase>"
fi
if [ "$rows" -eq 0 ]; then
  failures=$((failures + 1))
  case_rows='<testcase classname="ledger" name="extract-not-empty"><failure message="no rows"/></testcase>'
fi

cat > "$report" <<XML
<?xml version="1.0" encoding="UTF-8"?>
<testsuites>
  <testsuite name="ledger-validation" tests="3" failures="$failures">
    $case_balanced
    $case_limit
    $case_rows
  </testsuite>
</testsuites>
XML
echo "checked $rows ledger rows: $failures failure(s)"
[ "$failures" -eq 0 ]
