#!/usr/bin/env bash
# Mirror benchmarks (issue: sidecar; see docs/benchmarks.md).
#
#   bench/mirror.sh            (expects release builds: make bench-mirror)
#
# 1. Backlog drain: BENCH_MIRROR_EVENTS events (default 500,000) are recorded
#    while the sidecar is stopped; then the sidecar drains its slot into the
#    MongoDB-wire server (or AUTHAUDIT_MONGODB_URI), and pg_recvlogical
#    drains a second slot with the same contents to /dev/null (the decoding
#    limit). Prints events/s of each and the ratio, and the sidecar's peak
#    resident memory during the drain; then `verify` over the drained log
#    (time, rows/s against pg_recvlogical's read, peak resident memory).
#    The same backlog is also drained with --detections false (a third
#    slot): the detections' share of the sidecar's CPU per event.
# 2. Steady load: record_event at BENCH_MIRROR_RATE events/s (default 1000)
#    for BENCH_SECONDS (default 20) with the sidecar running; prints the
#    commit-to-acknowledgement latency p50/p99 the sidecar measured.
set -euo pipefail
cd "$(dirname "$0")/.."

EVENTS=${BENCH_MIRROR_EVENTS:-500000}
RATE=${BENCH_MIRROR_RATE:-1000}
SECS=${BENCH_SECONDS:-20}
BIN=${CARGO_TARGET_DIR:-target}/release
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
now_ms() { date +%s%3N; }
# CPU seconds (user + system) a process has used so far.
cpu_s() { awk '{printf "%.2f", ($14 + $15) / 100}' "/proc/$1/stat" 2>/dev/null || echo 0; }

dir=$(mktemp -d /tmp/authaudit-mirror-bench.XXXXXX)
port=$(free_port)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  scripts/testcluster.sh stop "$dir"
}
trap cleanup EXIT
scripts/testcluster.sh start "$dir" "$port" --bench --watch $$ >/dev/null
export PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres PGDATABASE=mirror
PSQL=(psql -X -q -v ON_ERROR_STOP=1)
"${PSQL[@]}" -d postgres -c "CREATE DATABASE mirror"
"${PSQL[@]}" -c "CREATE EXTENSION pg_authaudit"
# With a witness key (AUTHAUDIT_WITNESS_KEY_FILE), PostgreSQL accepts its
# checkpoints written back.
if [ -n "${AUTHAUDIT_WITNESS_KEY_FILE:-}" ]; then
  "${PSQL[@]}" -c "ALTER DATABASE mirror SET authaudit.witness_keys = '$("$BIN/authaudit-sidecar" witness-key)'"
  echo "# witness on: $AUTHAUDIT_WITNESS_KEY_FILE, checkpoints written back to PostgreSQL"
fi

STORE=${BENCH_MIRROR_STORE:-mongowire}
if [ -z "${AUTHAUDIT_MONGODB_URI:-}" ] && [ "$STORE" = secantus ]; then
  # SecantusDB (WiredTiger storage, a process of its own): a store that
  # keeps its documents on disk, as MongoDB does.
  mport=$(free_port)
  /opt/authaudit-secantus/bin/secantusd-py --host 127.0.0.1 --port "$mport" \
    --storage-path "$dir/secantus" --cache-size 1GB --log-level WARNING >"$dir/secantus.log" 2>&1 &
  pids+=($!)
  wire=$!
  until python3 -c "import socket; socket.create_connection(('127.0.0.1', $mport), 1)" 2>/dev/null; do sleep 0.1; done
  export AUTHAUDIT_MONGODB_URI="mongodb://127.0.0.1:$mport/?directConnection=true"
  echo "# document store: SecantusDB (WiredTiger) on port $mport"
elif [ -z "${AUTHAUDIT_MONGODB_URI:-}" ]; then
  mport=$(free_port)
  "$BIN/authaudit-mongowire" --listen "127.0.0.1:$mport" >"$dir/mongowire.log" 2>&1 &
  pids+=($!)
  wire=$!
  export AUTHAUDIT_MONGODB_URI="mongodb://127.0.0.1:$mport/?directConnection=true"
  echo "# document store: authaudit-mongowire (in memory) on port $mport"
else
  echo "# document store: AUTHAUDIT_MONGODB_URI"
fi
export AUTHAUDIT_MONGODB_DATABASE=authaudit_bench_$$ AUTHAUDIT_METRICS_LISTEN=127.0.0.1:$(free_port) AUTHAUDIT_LOG=warn

sidecar_start() { "$BIN/authaudit-sidecar" "$@" 2>>"$dir/sidecar.log" & sc=$!; pids+=($sc); }
scrape() { python3 -c "import urllib.request; print(urllib.request.urlopen('http://$AUTHAUDIT_METRICS_LISTEN/metrics').read().decode())" 2>/dev/null; }
metric() { scrape | awk -v m="$1" '$1 == m {print $2}'; }
# Waits until the sidecar streams; sets start_cpu (its CPU seconds then:
# the start, the detections' read of the last window included).
await_streaming() {
  until [ "$(metric authaudit_sidecar_streaming)" = 1 ]; do sleep 0.02; done
  start_cpu=$(cpu_s "$sc")
}
sidecar_stop() { kill -TERM "$sc"; wait "$sc" || true; }
flushed_to() { # slot target_lsn
  "${PSQL[@]}" -At -c "SELECT coalesce(confirmed_flush_lsn >= '$2'::pg_lsn, false) FROM pg_replication_slots WHERE slot_name = '$1'"
}
# Drains the backlog of slot $1 (up to $target) with a sidecar run with the
# remaining arguments, then drops the slot; sets drain_ms, drain_cpu and
# start_cpu.
drain() {
  local slot=$1 t0
  shift
  t0=$(now_ms)
  sidecar_start "$@"
  await_streaming
  until [ "$(flushed_to "$slot" "$target")" = t ]; do sleep 0.05; done
  drain_ms=$(($(now_ms) - t0))
  drain_cpu=$(cpu_s "$sc")
  sidecar_stop
  "${PSQL[@]}" -c "SELECT pg_drop_replication_slot('$slot')" >/dev/null
}

# With BENCH_SIEM=relp (the default when rsyslogd is installed), a real
# rsyslog takes the CEF stream over RELP: a second sidecar slot, created at
# the same point, is drained into another store database and the collector,
# and the steady load runs with both destinations.
SIEM=${BENCH_SIEM:-$([ -x /usr/sbin/rsyslogd ] && echo relp || echo none)}
siem_flags=()
if [ "$SIEM" = relp ]; then
  rport=$(free_port)
  pids+=("$(scripts/relp-collector.sh "$dir/rsyslog" "$rport")")
  siem_flags=(--siem-target "relp://127.0.0.1:$rport")
  echo "# SIEM: rsyslog imrelp on port $rport"
fi

# The sidecar creates its slot (and copies an empty log); the baseline slot
# is created at the same point, before any event.
sidecar_start
until [ "$(flushed_to authaudit_mirror 0/0)" = t ]; do sleep 0.1; done
sidecar_stop
if [ "$SIEM" = relp ]; then
  siem_slot=(--slot authaudit_siem --mongodb-database "${AUTHAUDIT_MONGODB_DATABASE}_siem" "${siem_flags[@]}")
  sidecar_start "${siem_slot[@]}"
  until [ "$(flushed_to authaudit_siem 0/0)" = t ]; do sleep 0.1; done
  sidecar_stop
fi
# A third sidecar slot, drained MongoDB-only with the detections off: their
# share of the sidecar's CPU.
nodetect_slot=(--slot authaudit_nodetect --mongodb-database "${AUTHAUDIT_MONGODB_DATABASE}_nodetect" --detections false)
sidecar_start "${nodetect_slot[@]}"
until [ "$(flushed_to authaudit_nodetect 0/0)" = t ]; do sleep 0.1; done
sidecar_stop
"${PSQL[@]}" -c "SELECT pg_create_logical_replication_slot('bench_recv', 'pgoutput')" >/dev/null

echo "# recording $EVENTS events (64 tenants, default lockout policy) with the sidecar stopped"
batches=$((EVENTS / 1000))
"${PSQL[@]}" -c "DO \$\$ BEGIN FOR i IN 1 .. $batches LOOP
    PERFORM count(*) FROM authaudit.record_events((
      SELECT jsonb_agg(jsonb_build_object('log_id', gen_random_uuid(),
        'tenant_id', 'tenant-' || (1 + g % 64),
        'event_type', CASE WHEN g % 10 = 0 THEN 'login_success' ELSE 'login_failed' END,
        'user_id', 'user' || (1 + (g * 7919 + i) % 5000), 'channel', 'web',
        'ip', '10.4.' || (g % 200) || '.' || (i % 250)))
      FROM generate_series(1, 1000) AS g));
    COMMIT;
  END LOOP; END \$\$"
# The load's aftermath (autovacuum of the new rows, the checkpoint) is done
# before the drains, so that none of them shares the CPU with it.
"${PSQL[@]}" -c "VACUUM ANALYZE" -c "CHECKPOINT"
target=$("${PSQL[@]}" -At -c "SELECT pg_current_wal_lsn()")
changes=$("${PSQL[@]}" -At -c "SELECT count(*) FROM authaudit.auth_log")

t0=$(now_ms)
pg_recvlogical -d mirror --slot bench_recv --start --endpos "$target" \
  -o proto_version=1 -o publication_names=authaudit_mirror -f /dev/null
t1=$(now_ms)
recv_ms=$((t1 - t0))

t0=$(now_ms)
wire_cpu0=$(cpu_s "${wire:-0}")
sidecar_start
await_streaming
detect_start_cpu=$start_cpu
peak=0
until [ "$(flushed_to authaudit_mirror "$target")" = t ]; do
  hwm=$(awk '/VmHWM/ {print $2}' "/proc/$sc/status" 2>/dev/null || echo 0)
  [ "${hwm:-0}" -gt "$peak" ] && peak=$hwm
  sleep 0.05
done
t1=$(now_ms)
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$sc/status" 2>/dev/null || echo 0)
[ "${hwm:-0}" -gt "$peak" ] && peak=$hwm
sidecar_ms=$((t1 - t0))
sidecar_cpu=$(cpu_s "$sc")
wire_cpu=$(awk -v a="$(cpu_s "${wire:-0}")" -v b="$wire_cpu0" 'BEGIN {printf "%.2f", a - b}')
sidecar_stop
awk -v n="$changes" -v s="$sidecar_ms" -v r="$recv_ms" 'BEGIN {
  printf "bench mirror_drain: %.0f events/s ratio_vs_pg_recvlogical=%.2f (%d events; sidecar %.1f s incl. start, pg_recvlogical %.1f s = %.0f events/s)\n",
    n * 1000 / s, r / s, n, s / 1000, r / 1000, n * 1000 / r }'
echo "#   CPU during the drain: sidecar ${sidecar_cpu} s, store ${wire_cpu} s ($STORE; 0 with AUTHAUDIT_MONGODB_URI)"
awk -v n="$changes" -v c="$sidecar_cpu" -v c0="$detect_start_cpu" -v w="$wire_cpu" 'BEGIN {
  printf "bench mirror_sidecar_cpu: %.1f us/event (the sidecar alone, streaming; the store %.1f us/event)\n", (c - c0) * 1e6 / n, w * 1e6 / n }'
if [ -n "${wire:-}" ]; then
  awk '/VmHWM/ {printf "bench mirror_store_peak_rss: %.1f MiB after the drain\n", $2 / 1024}' "/proc/$wire/status" 2>/dev/null || true
fi
awk -v k="$peak" 'BEGIN { printf "bench mirror_peak_rss: %.1f MiB (required <= 200)\n", k / 1024 }'
# The same drain with the detections off (their start-up read of the last
# window included in the figure with them).
drain authaudit_nodetect "${nodetect_slot[@]}"
awk -v n="$changes" -v on="$sidecar_cpu" -v on0="$detect_start_cpu" -v off="$drain_cpu" -v off0="$start_cpu" -v s="$drain_ms" 'BEGIN {
  printf "bench mirror_detection_cpu: %.1f us/event streamed with the detections, %.1f without ratio_added=%.2f (required <= 0.10; drain without them %.0f events/s)\n",
    (on - on0) * 1e6 / n, (off - off0) * 1e6 / n, ((on - on0) - (off - off0)) / (off - off0), n * 1000 / s
  printf "#   the start, to streaming: %.2f s of CPU with the detections (the last 10 minutes read back: the whole backlog), %.2f s without\n", on0, off0 }'
# verify walks both stores in lockstep: its time and peak memory over the
# drained log.
t0=$(now_ms)
"$BIN/authaudit-sidecar" verify > "$dir/verify.out" & vp=$!
vpeak=0
while kill -0 "$vp" 2>/dev/null; do
  hwm=$(awk '/VmHWM/ {print $2}' "/proc/$vp/status" 2>/dev/null || echo 0)
  [ "${hwm:-0}" -gt "$vpeak" ] && vpeak=$hwm
  sleep 0.05
done
wait "$vp" || true
t1=$(now_ms)
tail -1 "$dir/verify.out"
awk -v n="$changes" -v ms="$((t1 - t0))" -v k="$vpeak" -v r="$recv_ms" 'BEGIN {
  printf "bench mirror_verify: %.0f rows/s ratio_vs_pg_recvlogical=%.2f (%d rows in %.1f s, peak RSS %.1f MiB)\n",
    n * 1000 / ms, r / ms, n, ms / 1000, k / 1024 }'

if [ "$SIEM" = relp ]; then
  drain authaudit_siem "${siem_slot[@]}"
  siem_cpu=$drain_cpu
  awk -v n="$changes" -v s="$drain_ms" -v m="$sidecar_ms" -v l="$(wc -l <"$dir/rsyslog/cef-stream.log")" 'BEGIN {
    printf "bench mirror_drain_relp: %.0f events/s ratio_vs_mongodb_only=%.2f (MongoDB + RELP to rsyslog, %.1f s; %d CEF lines at the collector)\n",
      n * 1000 / s, m / s, s / 1000, l }'
  echo "#   CPU during the drain with RELP: sidecar ${siem_cpu} s (MongoDB only: ${sidecar_cpu} s)"
fi

echo "# steady load: $RATE events/s for $SECS s${siem_flags:+ (MongoDB and RELP)}"
# The load starts once the new session streams (its start, the witness's
# trees included, is timed apart): the latency is the steady state's.
t0=$(now_ms)
sidecar_start "${siem_flags[@]}"
await_streaming
echo "#   session start to streaming: $(($(now_ms) - t0)) ms"
until [ "$(flushed_to authaudit_mirror "$target")" = t ]; do sleep 0.1; done
scrape >"$dir/before.txt"
# Transactions acknowledged (and received) after more than 250 ms, by
# second of the load.
(while [ ! -e "$dir/load.done" ]; do
   scrape | awk '/^authaudit_sidecar_commit_to_ack_seconds_bucket\{le="0.25"\}/ {a = $2}
                 /^authaudit_sidecar_commit_to_ack_seconds_count/ {c = $2}
                 /^authaudit_sidecar_commit_to_receive_seconds_bucket\{le="0.25"\}/ {ra = $2}
                 /^authaudit_sidecar_commit_to_receive_seconds_count/ {rc = $2}
                 END {printf "%d/%d\n", c - a, rc - ra}' || true
   sleep 1
 done) >"$dir/slow.txt" &
sampler=$!
(sleep $((SECS / 2)); scrape >"$dir/half.txt") &
half=$!
pgbench -n -M prepared -c 4 -j 2 -R "$RATE" -T "$SECS" -D ntenants=64 -f bench/sql/record_event.sql 2>&1 \
  | awk '/^tps = / {printf "#   pgbench: %s tps\n", $3}'
sleep 1
scrape >"$dir/after.txt"
touch "$dir/load.done"
wait "$sampler" "$half" || true
# p50 and p99 from the commit_to_ack histogram: the steady state is the
# second half of the load; the whole load includes its first seconds.
ack=authaudit_sidecar_commit_to_ack_seconds
read -r p50 p99 dist < <(bench/quantiles.py "$ack" "$dir/half.txt" "$dir/after.txt")
read -r w50 w99 wdist < <(bench/quantiles.py "$ack" "$dir/before.txt" "$dir/after.txt")
read -r r50 r99 _ < <(bench/quantiles.py authaudit_sidecar_commit_to_receive_seconds "$dir/before.txt" "$dir/after.txt")
awk -v a="$p50" -v b="$p99" 'BEGIN { printf "bench mirror_latency: p50 %.1f ms, p99 %.1f ms ratio_p99_vs_required_250ms=%.2f (the second half of the load)\n", a * 1000, b * 1000, b / 0.25 }'
echo "#   second half, transactions by bucket (le seconds:n): $dist"
awk -v a="$w50" -v b="$w99" -v c="$r50" -v d="$r99" 'BEGIN { printf "#   the whole load: p50 %.1f ms, p99 %.1f ms; commit -> arrival of the Commit message p50 %.1f ms, p99 %.1f ms\n", a * 1000, b * 1000, c * 1000, d * 1000 }'
echo "#   the whole load, transactions by bucket (le seconds:n): $wdist"
echo "#   acknowledged/received after > 250 ms, cumulative, each second: $(tr '\n' ' ' <"$dir/slow.txt")"
sidecar_stop

# Synchronous mirroring (docs/sidecar.md, "Synchronous mirroring"): the
# sidecar's walsender a synchronous standby, record_event with
# synchronous_commit = on returns once the store acknowledged; against the
# same load with synchronous_commit = local (asynchronous mirroring).
sidecar_start --synchronous true
await_streaming
"${PSQL[@]}" -c "ALTER SYSTEM SET synchronous_standby_names = '\"authaudit-sidecar\"'" -c "SELECT pg_reload_conf()" >/dev/null
until [ "$("${PSQL[@]}" -At -c "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'authaudit-sidecar' AND sync_state = 'sync'")" = 1 ]; do sleep 0.1; done
sync_run() { # synchronous_commit value: prints tps and mean latency (ms)
  PGOPTIONS="-c synchronous_commit=$1" pgbench -n -M prepared -c 4 -j 2 -T "$SECS" -D ntenants=64 \
    -f bench/sql/record_event.sql 2>&1 | awk '/^latency average/ {l = $4} /^tps = / {t = $3} END {print t, l}'
}
read -r async_tps async_lat < <(sync_run local)
read -r sync_tps sync_lat < <(sync_run on)
awk -v a="$async_tps" -v al="$async_lat" -v s="$sync_tps" -v sl="$sync_lat" 'BEGIN {
  printf "bench mirror_synchronous: %.0f tps, %.2f ms per record_event ratio_vs_asynchronous=%.2f (asynchronous: %.0f tps, %.2f ms; 4 clients)\n", s, sl, s / a, a, al }'
"${PSQL[@]}" -c "ALTER SYSTEM RESET synchronous_standby_names" -c "SELECT pg_reload_conf()" >/dev/null
sidecar_stop
