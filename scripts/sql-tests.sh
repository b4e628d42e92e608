#!/usr/bin/env bash
# Runs the pgTAP tests in tests/sql with pg_prove against a throwaway cluster
# that has the installed pg_authaudit. Each test file runs in its own
# transaction and rolls back.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=$(mktemp -d /tmp/authaudit-sql.XXXXXX)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
trap 'scripts/testcluster.sh stop "$dir"' EXIT
scripts/testcluster.sh start "$dir" "$port" --watch $$ >/dev/null

export PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres
psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE authaudit_sql"
psql -X -q -v ON_ERROR_STOP=1 -d authaudit_sql -c "CREATE EXTENSION pgtap; CREATE EXTENSION pg_authaudit"
pg_prove -d authaudit_sql tests/sql/*.sql
