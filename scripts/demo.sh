#!/usr/bin/env bash
# The main job end to end on local defaults (README: `make demo`).
#
#   scripts/demo.sh         set up, build, start PostgreSQL 15 + pg_authaudit,
#                           the document store, rsyslog as the SIEM's collector
#                           (RELP) and the sidecar, play the campaign, print
#                           the reconstruction and the campaign alerts, write
#                           the report, and serve the log over the platform
#                           API (authaudit-api) with three curl commands to try
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
cargo build --release -q -p sidecar -p authaudit-mongowire -p authaudit-demo -p authaudit-api

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
# rsyslog stands in for the SOC's collector: the sidecar streams every event
# and alert to it as CEF over RELP, and it writes them to one file.
rport=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
scripts/relp-collector.sh "$DEMO_DIR/siem" "$rport" >"$DEMO_DIR/rsyslog.pid"
export AUTHAUDIT_SIEM_TARGET=relp://127.0.0.1:$rport
say "SIEM collector: rsyslog (imrelp) on 127.0.0.1:$rport, writing the CEF stream to $DEMO_DIR/siem/cef-stream.log"

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

say "Campaign alerts, as the SIEM received them (docs/sidecar.md, \"Campaign detections\")"
stream=$DEMO_DIR/siem/cef-stream.log
# The alerts travel with the rows the mirror has just reconciled.
deadline=$((SECONDS + 30))
until [ "$(grep -c 'cat=/Authentication/Campaign' "$stream" 2>/dev/null || true)" -ge 5 ] || [ $SECONDS -ge $deadline ]; do sleep 0.2; done
python3 - "$stream" <<'PY'
import re, sys
for line in open(sys.argv[1], encoding="utf-8"):
    if "cat=/Authentication/Campaign" not in line:
        continue
    name = line.split("|")[5]
    f = dict(re.findall(r"(\w+)=((?:\\.|[^\\ ])*(?: (?!\w+=)(?:\\.|[^\\ ])*)*)", line.split("|", 7)[7]))
    print(f"  {name:32} tenant {f.get('cs1')}: {f.get('cs3')} account(s), {f.get('cs4')} source(s), "
          f"{f.get('cn3')} events, seq {f.get('cn1')}-{f.get('cn2')}"
          + (f", source {f['cs2']}" if f.get('cs4') == '1' else "")
          + (f", account {f['duser']}" if f.get('cs3') == '1' else ""))
PY
echo "  $(grep -vc 'cat=/Authentication/Campaign' "$stream") events and $(grep -c 'cat=/Authentication/Campaign' "$stream") alerts in $stream"

say "The platform API and the admin interface (docs/api.md, docs/admin.md)"
# An authenticator that can only become the analyst or the help desk, both
# bound to the campaign's tenant, and a local OpenID provider
# (tests/ui/oidc-provider.mjs, the oidc-provider library) standing in for
# the agency's: it signs in "analyst" and "helpdesk" with any password, and
# gives the demo's command-line client a token for curl.
psql -X -q <<'SQL'
CREATE ROLE demo_api LOGIN NOINHERIT;
CREATE ROLE demo_analyst IN ROLE authaudit_reader;
CREATE ROLE demo_helpdesk IN ROLE authaudit_reader, authaudit_writer;
GRANT demo_analyst, demo_helpdesk TO demo_api;
INSERT INTO authaudit.tenant_scope (role_name, tenant_id, org_id, can_read, can_write)
VALUES ('demo_analyst', 'agency-1', NULL, true, false),
       ('demo_helpdesk', 'agency-1', NULL, true, true);
SQL
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
api_port=$(free_port)
idp_port=$(free_port)
[ -e tests/ui/node_modules ] || ln -s /opt/authaudit-ui-tests/node_modules tests/ui/node_modules
cli_secret=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
(cd tests/ui && PORT=$idp_port REDIRECT_URI="http://localhost:$api_port/admin/callback" \
  ACCOUNTS='{"analyst": "demo_analyst", "helpdesk": "demo_helpdesk"}' \
  SERVICE_CLIENTS="{\"demo-cli\": {\"secret\": \"$cli_secret\", \"role\": \"demo_analyst\"}}" \
  exec node oidc-provider.mjs) >"$DEMO_DIR/idp.log" 2>&1 &
echo $! >"$DEMO_DIR/idp.pid"
deadline=$((SECONDS + 20))
until grep -q '^ready' "$DEMO_DIR/idp.log" 2>/dev/null; do
  if [ $SECONDS -ge $deadline ]; then echo "the OpenID provider did not start: $DEMO_DIR/idp.log"; status=1; break; fi
  sleep 0.2
done
cat >"$DEMO_DIR/api.toml" <<TOML
listen = "127.0.0.1:$api_port"
[database]
url = "host=127.0.0.1 port=$PORT user=demo_api dbname=authaudit_demo"
[identity]
issuer = "http://localhost:$idp_port"
audience = "authaudit-api"
jwks_url = "http://localhost:$idp_port/jwks"
roles = ["demo_analyst", "demo_helpdesk"]
[admin]
client_id = "authaudit-admin"
authorization_endpoint = "http://localhost:$idp_port/auth"
token_endpoint = "http://localhost:$idp_port/token"
redirect_uri = "http://localhost:$api_port/admin/callback"
scope = "openid authaudit"
resource = "urn:authaudit:api"
TOML
"$BIN/authaudit-api" --config "$DEMO_DIR/api.toml" >"$DEMO_DIR/api.log" 2>&1 &
echo $! >"$DEMO_DIR/api.pid"
deadline=$((SECONDS + 20))
until curl -fsS "http://127.0.0.1:$api_port/healthz" >/dev/null 2>&1; do
  if [ $SECONDS -ge $deadline ]; then echo "the API did not start: $DEMO_DIR/api.log"; status=1; break; fi
  sleep 0.2
done
token=$(curl -fsS -d grant_type=client_credentials -d client_id=demo-cli --data-urlencode "client_secret=$cli_secret" \
          -d resource=urn:authaudit:api -d scope=authaudit "http://localhost:$idp_port/token" \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])') || status=1
echo "$token" >"$DEMO_DIR/analyst.token"
api="http://127.0.0.1:$api_port/v1/tenants/agency-1"
n=$(curl -fsS -H "Authorization: Bearer $token" "$api/events?type=account_locked&limit=1000" \
      | python3 -c 'import json, sys; print(len(json.load(sys.stdin)))') || status=1
echo "authaudit-api on 127.0.0.1:$api_port as demo_analyst (agency-1): ${n:-?} account_locked events in the first page"
echo "Try (the token is in $DEMO_DIR/analyst.token, valid 1 hour):"
echo "  TOKEN=\$(cat $DEMO_DIR/analyst.token)"
echo "  curl -sS -H \"Authorization: Bearer \$TOKEN\" '$api/events?type=login_failed&limit=5' -D -"
echo "  curl -sS -H \"Authorization: Bearer \$TOKEN\" '$api/investigation/targeted-accounts?from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z'"
echo "  curl -sS -H \"Authorization: Bearer \$TOKEN\" -H 'Accept: application/x-ocsf+ndjson' '$api/events?type=account_locked' | head -2"
# The campaign's period, for the interface's links.
period=$(psql -X -At -c "SELECT to_char(min(occurred_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI'), \
  to_char(max(occurred_at) AT TIME ZONE 'UTC' + interval '1 minute', 'YYYY-MM-DD\"T\"HH24:MI') \
  FROM authaudit.auth_log WHERE tenant_id = 'agency-1'")
ui="http://localhost:$api_port/admin/t/agency-1"
echo "The admin interface: http://localhost:$api_port/admin/ (sign in as \"analyst\" or \"helpdesk\", any password)"
echo "  the campaign: $ui/campaigns?from=${period%%|*}&to=${period##*|}"
echo "  its report:   $ui/report?from=${period%%|*}&to=${period##*|}"

say "Done"
echo "Report:      $DEMO_DIR/report/report.html"
echo "CEF export:  $DEMO_DIR/report/agency-1.cef"
echo "CEF stream:  $DEMO_DIR/siem/cef-stream.log (every event and alert, over RELP)"
echo "psql:        psql 'host=127.0.0.1 port=$PORT user=postgres dbname=authaudit_demo'"
echo "API:         http://127.0.0.1:${api_port:-?}/v1/openapi.json (docs/api.md)"
echo "Interface:   http://localhost:${api_port:-?}/admin/ (docs/admin.md; analyst or helpdesk, any password)"
echo "Stop all:    make demo-stop"
exit $status
