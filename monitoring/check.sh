#!/bin/sh
# Checks the monitoring mixin: the rules parse (promtool check rules), their
# unit tests pass (promtool test rules), and the dashboard is valid JSON.
# Needs promtool (Debian package prometheus); exits non-zero on any failure.
#
#   monitoring/check.sh            # from anywhere
#   PROMTOOL=/opt/prometheus/promtool monitoring/check.sh
set -eu

cd "$(dirname "$0")"
PROMTOOL="${PROMTOOL:-promtool}"

if ! command -v "$PROMTOOL" >/dev/null 2>&1; then
    echo "check.sh: $PROMTOOL not found (Debian package prometheus, or set PROMTOOL)" >&2
    exit 2
fi

"$PROMTOOL" check rules rules/authaudit.rules.yml
"$PROMTOOL" test rules tests/authaudit.rules.test.yml

if command -v python3 >/dev/null 2>&1; then
    python3 -m json.tool dashboards/authaudit.json >/dev/null
    echo "dashboards/authaudit.json: valid JSON"
fi
