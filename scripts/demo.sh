#!/usr/bin/env bash
# The main job end to end on local defaults (README: `make demo`).
#
#   scripts/demo.sh         set up, build, start PostgreSQL 15 + pg_authaudit,
#                           the document store and the sidecar, play the
#                           campaign, print the reconstruction, write the report
#   scripts/demo.sh stop    stop everything and remove the demo's files
#
# AUTHAUDIT_MONGODB_URI: mirror into that MongoDB; otherwise the project's
# MongoDB-wire development server is used (in memory), and the demo says so.
# AUTHAUDIT_DEMO_DIR (default /tmp/authaudit-demo), AUTHAUDIT_DEMO_PORT
# (default 54329): where the demo keeps its cluster, logs and report.
set -euo pipefail
cd "$(dirname "$0")/.."

DEMO_DIR=${AUTHAUDIT_DEMO_DIR:-/tmp/authaudit-demo}
PORT=${AUTHAUDIT_DEMO_PORT:-54329}
BIN=${CARGO_TARGET_DIR:-target}/release
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

stop() {
  for f in "$DEMO_DIR"/*.pid; do
    [ -f "$f" ] || continue
    kill "$(cat "$f")" 2>/dev/null || true
    rm -f "$f"
  done
  scripts/testcluster.sh stop "$DEMO_DIR/pg" 2>/dev/null || true
  rm -rf "$DEMO_DIR"
}

if [ "${1:-run}" = stop ]; then
  stop
  echo "demo stopped; $DEMO_DIR removed"
  exit 0
fi

say "Installing what is missing (scripts/setup.sh)"
scripts/setup.sh
say "Building the extension and the binaries (release)"
make -s install-release >/dev/null
cargo build --release -q -p sidecar -p authaudit-mongowire -p authaudit-demo

stop   # a previous run, if any: re-running is safe
mkdir -p "$DEMO_DIR"
say "Starting PostgreSQL 15 with pg_authaudit on port $PORT"
scripts/testcluster.sh start "$DEMO_DIR/pg" "$PORT" --durable >/dev/null
export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres PGDATABASE=authaudit_demo
psql -X -q -d postgres -c "CREATE DATABASE authaudit_demo"
psql -X -q -c "CREATE EXTENSION pg_authaudit"

if [ -n "${AUTHAUDIT_MONGODB_URI:-}" ]; then
  say "Document store: AUTHAUDIT_MONGODB_URI"
else
  mport=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$BIN/authaudit-mongowire" --listen "127.0.0.1:$mport" >"$DEMO_DIR/mongowire.log" 2>&1 &
  echo $! >"$DEMO_DIR/mongowire.pid"
  export AUTHAUDIT_MONGODB_URI="mongodb://127.0.0.1:$mport/?directConnection=true"
  say "Document store: AUTHAUDIT_MONGODB_URI is not set, so the mirror writes to the project's MongoDB-wire development server on 127.0.0.1:$mport (in memory, a stand-in for MongoDB, not a database)"
fi
# A database of this run's own, so that a re-run never meets an old mirror.
export AUTHAUDIT_MONGODB_DATABASE=authaudit_demo_$(date +%Y%m%d%H%M%S) AUTHAUDIT_LOG=info
echo "mirror database: $AUTHAUDIT_MONGODB_DATABASE"
metrics_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
AUTHAUDIT_METRICS_LISTEN=127.0.0.1:$metrics_port "$BIN/authaudit-sidecar" >"$DEMO_DIR/sidecar.log" 2>&1 &
echo $! >"$DEMO_DIR/sidecar.pid"
echo "sidecar started (log $DEMO_DIR/sidecar.log, metrics http://127.0.0.1:$metrics_port/metrics)"

say "The campaign"
status=0
"$BIN/authaudit-demo" campaign --url "host=127.0.0.1 port=$PORT user=postgres dbname=authaudit_demo" \
  --out "$DEMO_DIR/report" || status=$?

say "Mirror reconciliation (authaudit-sidecar verify)"
deadline=$((SECONDS + 90))
until out=$("$BIN/authaudit-sidecar" verify 2>&1); do
  if [ $SECONDS -ge $deadline ]; then echo "$out"; status=1; break; fi
  sleep 0.5
done
echo "$out" | tail -3

say "Done"
echo "Report:      $DEMO_DIR/report/report.html"
echo "CEF export:  $DEMO_DIR/report/agency-1.cef"
echo "psql:        psql 'host=127.0.0.1 port=$PORT user=postgres dbname=authaudit_demo'"
echo "Stop all:    make demo-stop"
exit $status
