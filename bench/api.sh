# The api group of bench/run.sh (sourced by it; not in CI, not in the
# default groups): the platform API over a 10-million-event tenant
# (docs/benchmarks.md, "The platform API").
#
# Loads tenant 'big' with BENCH_API_EVENTS events (default 10,000,000)
# over 365 days through import_events, starts target/release/authaudit-api
# as a reader bound to it, and measures:
# - pages of 1,000 events with filters (a cursor deep in the history with
#   a type and a source network; an account over a week; a day's window),
#   in turn, BENCH_API_PAGES requests: p50 and p99 seen by the client;
# - an NDJSON export of one day, against COPY … TO STDOUT of the same rows
#   as the same JSON, and the API's peak RSS (VmHWM) over the whole run;
# - the tail: a long-polling client following the events recorded live at
#   50 a second for BENCH_SECONDS: arrival minus recorded_at, p50 and p99;
# - the admin interface's overview poll (docs/admin.md): its statements
#   (api/queries/overview/*.sql) as the reader, under row-level security,
#   right after the tail's live events, for BENCH_SECONDS: p50 and p99 of
#   one whole poll;
# - load: wrk, 4 connections for BENCH_SECONDS on the deep page query:
#   requests a second, latency p99, responses other than 2xx (none
#   expected), and the API's peak RSS after it.
#
# Output lines: bench api_<name>: <value> <unit> [ratio_…]

API_EVENTS=${BENCH_API_EVENTS:-10000000}
API_PAGES=${BENCH_API_PAGES:-300}
API_BIN=${CARGO_TARGET_DIR:-target}/release/authaudit-api
[ -x "$API_BIN" ] || { echo "bench: $API_BIN is missing: cargo build --release -p authaudit-api" >&2; exit 1; }

# shellcheck source=bench/history.sh
source bench/history.sh

"${PSQL[@]}" <<'SQL'
DROP ROLE IF EXISTS bench_api;
CREATE ROLE bench_api LOGIN NOINHERIT;
DROP ROLE IF EXISTS bench_api_reader;
CREATE ROLE bench_api_reader IN ROLE authaudit_reader;
GRANT bench_api_reader TO bench_api;
INSERT INTO authaudit.tenant_scope (role_name, tenant_id, org_id, can_read, can_write)
VALUES ('bench_api_reader', 'big', NULL, true, false);
SQL

t0=$(now_ms)
echo "# api: loading $API_EVENTS events over 365 days into 'big'"
history_load big 365 "$API_EVENTS"
"${PSQL[@]}" -c "VACUUM ANALYZE authaudit.auth_log"
echo "# api: loaded in $(( ($(now_ms) - t0) / 1000 )) s"

api_dir="$dir/api"
mkdir -p "$api_dir"
api_token=$(scripts/dev-token.py "$api_dir" bench_api_reader https://bench.invalid authaudit-api)
api_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$api_dir/api.toml" <<TOML
listen = "127.0.0.1:$api_port"
[database]
url = "host=127.0.0.1 port=$PGPORT user=bench_api dbname=bench"
pool_size = 4
[identity]
issuer = "https://bench.invalid"
audience = "authaudit-api"
jwks_file = "$api_dir/jwks.json"
roles = ["bench_api_reader"]
[limits]
requests_per_second = 100000
burst = 100000
TOML
AUTHAUDIT_API_LOG=warn "$API_BIN" --config "$api_dir/api.toml" &
api_pid=$!
trap 'kill $api_pid 2>/dev/null; scripts/testcluster.sh stop "$dir"' EXIT
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$api_port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done

# A cursor a third into the history, a week of one victim, one day.
read -r deep day0 <<<"$("${PSQL[@]}" -At -F ' ' -c "
  SELECT (max(seq) / 3)::text, to_char(date_trunc('day', now() - interval '100 days'), 'YYYY-MM-DD')
    FROM authaudit.auth_log WHERE tenant_id = 'big'")"
day1=$("${PSQL[@]}" -At -c "SELECT to_char(date '$day0' + 1, 'YYYY-MM-DD')")
week=$("${PSQL[@]}" -At -c "SELECT to_char(date '$day0' + 7, 'YYYY-MM-DD')")
base="/v1/tenants/big/events?limit=1000"
q_deep="$base&after=$deep&type=login_failed&source=10.3.0.0%2F16"
q_user="$base&user=victim3&since=${day0}T00:00:00Z&until=${week}T00:00:00Z"
q_day="$base&since=${day0}T00:00:00Z&until=${day1}T00:00:00Z"
python3 bench/api_client.py pages "$api_port" "$api_token" 20 "$q_deep" "$q_user" "$q_day" >/dev/null
for q in q_deep q_user q_day; do
  read -r p50 p99 rows <<<"$(python3 bench/api_client.py pages "$api_port" "$api_token" "$(( API_PAGES / 3 ))" "${!q}")"
  echo "bench api_page_${q#q_}: p50 ${p50} ms, p99 ${p99} ms, ${rows} events a page ($API_EVENTS-event tenant; required p99 <= 100)"
done

# One day as NDJSON through the API, and COPY of the same rows as the same JSON.
read -r n bytes secs <<<"$(python3 bench/api_client.py export "$api_port" "$api_token" \
  "/v1/tenants/big/events?since=${day0}T00:00:00Z&until=${day1}T00:00:00Z")"
copy_t0=$(now_ms)
copy_bytes=$("${PSQL[@]}" -c "COPY (SELECT jsonb_build_object('log_id', l.log_id, 'tenant_id', l.tenant_id,
    'org_id', l.org_id, 'seq', l.seq, 'event_type', l.event_type, 'user_id', l.user_id, 'ip', host(l.ip),
    'user_agent', l.user_agent, 'channel', l.channel, 'occurred_at', l.occurred_at,
    'recorded_at', l.recorded_at, 'metadata', l.metadata, 'link_sha256', encode(l.link_sha256, 'hex'))::text
  FROM authaudit.auth_log l WHERE l.tenant_id = 'big'
   AND l.occurred_at >= '${day0}T00:00:00Z' AND l.occurred_at < '${day1}T00:00:00Z' ORDER BY l.seq) TO STDOUT" | wc -c)
copy_ms=$(( $(now_ms) - copy_t0 ))
rss=$(awk '/VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$api_pid/status")
awk -v n="$n" -v b="$bytes" -v s="$secs" -v cm="$copy_ms" -v cb="$copy_bytes" -v rss="$rss" 'BEGIN {
  api = n / s; copy = n / (cm / 1000);
  printf "bench api_export_ndjson: %.0f events/s ratio_vs_copy=%.2f (%d events, %d bytes in %.2f s; COPY %d bytes in %.2f s); API peak RSS %s MiB (required >= 0.5, <= 50 MiB)\n", api, api / copy, n, b, s, cb, cm / 1000, rss }'

# The tail: live events at 50 a second while a client long-polls.
last=$("${PSQL[@]}" -At -c "SELECT max(seq) FROM authaudit.auth_log WHERE tenant_id = 'big'")
cat >"$api_dir/live.sql" <<'SQL'
SELECT authaudit.record_event(log_id => gen_random_uuid(), tenant_id => 'big', event_type => 'login_failed',
       user_id => 'live' || (random() * 1000)::int, channel => 'web', ip => '192.0.2.1');
SQL
python3 bench/api_client.py tail "$api_port" "$api_token" "$last" "$(( SECS + 2 ))" >"$api_dir/tail.out" &
tail_pid=$!
sleep 1
pgbench -n -c 2 -j 2 -R 50 -T "$SECS" -f "$api_dir/live.sql" >/dev/null 2>&1
wait "$tail_pid"
read -r events p50 p99 <"$api_dir/tail.out"
echo "bench api_tail: p50 ${p50} ms, p99 ${p99} ms from recorded_at to the long-polling client (${events} events at 50/s; required p99 <= 1000)"
# The overview's poll: every panel's statement in one read-only
# transaction as the reader, the last hour's attempts through the
# detections' query, pgbench logging each poll's latency.
{
  echo "BEGIN READ ONLY;"
  echo "SET LOCAL ROLE bench_api_reader;"
  for f in api/queries/overview/*.sql; do
    grep -v '^--' "$f" | sed -e "s/\$1/'big'/g" \
      -e 's/\$2::int8/(extract(epoch FROM now())::int8 - 3600)/' \
      -e 's/\$3::int8/(extract(epoch FROM now())::int8 + 60)/' -e 's/\$4/200001/'
    echo ";"
  done
  echo "COMMIT;"
} >"$api_dir/overview.sql"
(cd "$api_dir" && rm -f pgbench_log.* && pgbench -n -c 1 -j 1 -T "$SECS" -l -f overview.sql >/dev/null 2>&1)
states=$("${PSQL[@]}" -At -c "SELECT count(*) FROM authaudit.lockout_state WHERE tenant_id = 'big'")
cat "$api_dir"/pgbench_log.* | awk '{print $3 / 1000}' | sort -n | awk -v states="$states" -v n_events="$API_EVENTS" '
  { v[NR] = $1 } END {
  printf "bench api_overview_poll: p50 %.1f ms, p99 %.1f ms (%d polls; %d-event tenant, %d account states; required p99 <= 250)\n",
    v[int(NR * 0.5) + 1], v[int(NR * 0.99) + 1], NR, n_events, states }'
# Load: wrk on loopback, bounded by the pool (4 connections) and the run.
wrk -t 2 -c 4 -d "${SECS}s" --latency -H "Authorization: Bearer $api_token" \
  "http://127.0.0.1:$api_port$q_deep" >"$api_dir/wrk.out" 2>&1
rps=$(awk '/^Requests\/sec:/ {print $2}' "$api_dir/wrk.out")
p99=$(awk '$1 == "99%" {print $2}' "$api_dir/wrk.out")
non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $5}' "$api_dir/wrk.out")
rss=$(awk '/VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$api_pid/status")
echo "bench api_load: ${rps} requests/s of 1,000-event pages, p99 ${p99}, ${non2xx:-0} responses other than 2xx (wrk, 4 connections, ${SECS} s); API peak RSS ${rss} MiB"
kill "$api_pid" 2>/dev/null || true
