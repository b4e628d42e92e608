#!/usr/bin/env bash
# pg_authaudit benchmarks (see docs/benchmarks.md).
#
#   bench/run.sh [group ...]      groups: insert scaling lockout batch verify isolation
#                                 (default: these), scale (a year of history, bench/scale.sh),
#                                 api (the platform API over a 10-million-event tenant, bench/api.sh)
#
# Starts a throwaway PostgreSQL 15 cluster with production settings (fsync
# and synchronous_commit on), runs each scenario interleaved with its
# baseline for BENCH_ROUNDS rounds of BENCH_SECONDS seconds, and prints one
# line per scenario:  bench <name>: <value> <unit> ratio_vs_<baseline>=<x.xx>
# Expects the release build installed (`make bench` does that).
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${BENCH_SECONDS:-15}
ROUNDS=${BENCH_ROUNDS:-2}
CLIENTS=${BENCH_CLIENTS:-4}
VERIFY_ROWS=${BENCH_VERIFY_ROWS:-1000000}
GROUPS_TO_RUN=${*:-insert scaling lockout batch verify isolation}

dir=$(mktemp -d /tmp/authaudit-bench.XXXXXX)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
trap 'scripts/testcluster.sh stop "$dir"' EXIT
scripts/testcluster.sh start "$dir" "$port" --bench --watch $$ >/dev/null
export PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres PGDATABASE=bench
PSQL=(psql -X -q -v ON_ERROR_STOP=1)
"${PSQL[@]}" -d postgres -c "CREATE DATABASE bench"
"${PSQL[@]}" -f bench/sql/setup.sql
results="$dir/results"
mkdir -p "$results"

echo "# pg_authaudit benchmarks: $(date -u +%FT%TZ), $(nproc) cores, PostgreSQL $("${PSQL[@]}" -At -c 'SHOW server_version')"
echo "# ${ROUNDS} rounds x ${SECS}s, ${CLIENTS} clients, scenarios interleaved with their baselines"

# busy_ticks: CPU time (clock ticks) the machine has spent busy so far (all
# processes and the kernel: /proc/stat minus idle and I/O wait).
busy_ticks() {
  awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat
}
TICK_US=$(( 1000000 / $(getconf CLK_TCK) ))

# pgbench NAME SCRIPT [pgbench args...]: one run; appends its TPS to
# results/NAME and the CPU per transaction (µs) of everything but pgbench
# (the server, the kernel) to results/NAME.cpu.
pgbench_run() {
  local name=$1 script=$2
  shift 2
  local out tps n c0 c1 client TIMEFORMAT='%U %S'
  c0=$(busy_ticks)
  { time pgbench -n -M prepared -c "${PGBENCH_CLIENTS:-$CLIENTS}" -j "${PGBENCH_THREADS:-2}" -T "$SECS" -f "$script" "$@" >"$dir/pgbench.out" 2>&1; } 2>"$dir/pgbench.time"
  c1=$(busy_ticks)
  out=$(cat "$dir/pgbench.out")
  client=$(awk '{printf "%.0f", ($1 + $2) * 1000000}' "$dir/pgbench.time")
  tps=$(awk '/^tps = / {print $3}' <<<"$out")
  n=$(awk '/^number of transactions actually processed:/ {print $6}' <<<"$out")
  [ -n "$tps" ] && [ -n "$n" ] || { echo "bench: pgbench failed for $name: $out" >&2; exit 1; }
  echo "$tps" >>"$results/$name"
  awk -v t=$(( (c1 - c0) * TICK_US - client )) -v n="$n" 'BEGIN {printf "%.1f\n", t / n}' >>"$results/$name.cpu"
  echo "#   $name round: $tps tps, $(tail -1 "$results/$name.cpu") us CPU per transaction besides pgbench"
}

median() { sort -g "$results/$1" | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

report() { # report NAME UNIT BASELINE [SCALE]
  local v b scale=${4:-1}
  v=$(median "$1"); b=$(median "$3")
  awk -v n="$1" -v v="$v" -v b="$b" -v u="$2" -v base="$3" -v s="$scale" \
    'BEGIN {printf "bench %s: %.0f %s ratio_vs_%s=%.2f\n", n, v*s, u, base, v/b}'
}

report_cpu() { # report_cpu NAME [EVENTS_PER_TRANSACTION]: CPU per event besides pgbench
  awk -v n="$1" -v c="$(median "$1.cpu")" -v e="${2:-1}" \
    'BEGIN {printf "bench %s_cpu: %.1f us_cpu_per_event\n", n, c / e}'
}

if [[ " $GROUPS_TO_RUN " == *" insert "* ]]; then
  for r in $(seq "$ROUNDS"); do
    echo "# round $r"
    pgbench_run bare_insert_64_tenants bench/sql/bare_insert.sql -D ntenants=64
    PGOPTIONS="-c pgaudit.log=write" pgbench_run pgaudit_write_64_tenants bench/sql/bare_insert.sql -D ntenants=64
    pgbench_run record_event_64_tenants bench/sql/record_event.sql -D ntenants=64
    pgbench_run bare_insert_1_tenant bench/sql/bare_insert.sql -D ntenants=1
    pgbench_run record_event_hot_tenant bench/sql/record_event.sql -D ntenants=1
    # More tenants than the chain-head cache holds (1,024 at once).
    pgbench_run record_event_5000_tenants bench/sql/record_event.sql -D ntenants=5000
    # Commits not waiting for their flush: what the CPU allows.
    PGOPTIONS="-c synchronous_commit=off" pgbench_run bare_insert_64_tenants_async bench/sql/bare_insert.sql -D ntenants=64
    PGOPTIONS="-c synchronous_commit=off" pgbench_run record_event_64_tenants_async bench/sql/record_event.sql -D ntenants=64
  done
  report bare_insert_64_tenants tps bare_insert_64_tenants
  report pgaudit_write_64_tenants tps bare_insert_64_tenants
  report record_event_64_tenants tps bare_insert_64_tenants
  report bare_insert_1_tenant tps bare_insert_1_tenant
  report record_event_hot_tenant tps bare_insert_1_tenant
  report record_event_5000_tenants tps record_event_64_tenants
  report record_event_64_tenants_async tps bare_insert_64_tenants_async
  for n in bare_insert_64_tenants record_event_64_tenants record_event_hot_tenant \
           record_event_5000_tenants bare_insert_64_tenants_async record_event_64_tenants_async; do
    report_cpu "$n"
  done
fi

if [[ " $GROUPS_TO_RUN " == *" scaling "* ]]; then
  # Client scaling: the same row recorded by 1, 4, 16 and 64 clients, on one
  # tenant (a tenant under attack) and over 64 tenants, each against a bare
  # INSERT at the same client count; then 16 clients with commits that do
  # not wait for their flush (what the CPU allows).
  SCALING_CLIENTS=${BENCH_SCALING_CLIENTS:-1 4 16 64}
  for r in $(seq "$ROUNDS"); do
    echo "# round $r"
    for c in $SCALING_CLIENTS; do
      PGBENCH_CLIENTS=$c pgbench_run "bare_insert_1_tenant_c$c" bench/sql/bare_insert.sql -D ntenants=1
      PGBENCH_CLIENTS=$c pgbench_run "record_event_hot_tenant_c$c" bench/sql/record_event.sql -D ntenants=1
      PGBENCH_CLIENTS=$c pgbench_run "bare_insert_64_tenants_c$c" bench/sql/bare_insert.sql -D ntenants=64
      PGBENCH_CLIENTS=$c pgbench_run "record_event_64_tenants_c$c" bench/sql/record_event.sql -D ntenants=64
    done
    for t in 1 64; do
      PGOPTIONS="-c synchronous_commit=off" PGBENCH_CLIENTS=16 \
        pgbench_run "bare_insert_${t}_async_c16" bench/sql/bare_insert.sql -D ntenants=$t
      PGOPTIONS="-c synchronous_commit=off" PGBENCH_CLIENTS=16 \
        pgbench_run "record_event_${t}_async_c16" bench/sql/record_event.sql -D ntenants=$t
    done
  done
  for c in $SCALING_CLIENTS; do
    report "record_event_hot_tenant_c$c" tps "bare_insert_1_tenant_c$c"
    report "record_event_64_tenants_c$c" tps "bare_insert_64_tenants_c$c"
  done
  for t in 1 64; do
    report "record_event_${t}_async_c16" tps "bare_insert_${t}_async_c16"
    report_cpu "record_event_${t}_async_c16"
    report_cpu "bare_insert_${t}_async_c16"
  done
  for c in $SCALING_CLIENTS; do
    report_cpu "record_event_hot_tenant_c$c"
    report_cpu "record_event_64_tenants_c$c"
    report_cpu "bare_insert_1_tenant_c$c"
  done
fi

if [[ " $GROUPS_TO_RUN " == *" lockout "* ]]; then
  # Lockout off: a database default; lockout on: the default policy.
  "${PSQL[@]}" -d postgres -c "CREATE DATABASE bench_nolock TEMPLATE bench"
  "${PSQL[@]}" -d postgres -c "ALTER DATABASE bench_nolock SET authaudit.lockout_enabled = off"
  for r in $(seq "$ROUNDS"); do
    echo "# round $r"
    pgbench_run bruteforce_lockout_off bench/sql/bruteforce_mix.sql bench_nolock
    pgbench_run bruteforce_lockout_on bench/sql/bruteforce_mix.sql
    pgbench_run bare_insert_mix bench/sql/bare_insert.sql -D ntenants=64
  done
  report bruteforce_lockout_on tps bruteforce_lockout_off
  report bruteforce_lockout_on tps bare_insert_mix
  report_cpu bruteforce_lockout_on
fi

# now_ms: wall clock in milliseconds.
now_ms() { date +%s%3N; }

if [[ " $GROUPS_TO_RUN " == *" batch "* ]]; then
  copy_rows=200000
  "${PSQL[@]}" -c "COPY (SELECT gen_random_uuid(), 'tenant-' || (g % 64 + 1), NULL, 'login_failed',
        'user' || g, ('10.2.0.' || (g % 200 + 1))::inet, 'Mozilla/5.0 (bench)', 'web', now(), now(),
        '{\"reason\": \"bad_password\"}'::jsonb FROM generate_series(1, $copy_rows) g) TO '$dir/copy.tsv'"
  chmod 644 "$dir/copy.tsv"
  for r in $(seq "$ROUNDS"); do
    echo "# round $r"
    "${PSQL[@]}" -c "TRUNCATE bench.auth_event"
    t0=$(now_ms)
    "${PSQL[@]}" -c "COPY bench.auth_event FROM '$dir/copy.tsv'"
    t1=$(now_ms)
    awk -v n=$copy_rows -v ms=$((t1 - t0)) 'BEGIN {printf "%.1f\n", n * 1000 / ms}' >>"$results/copy_bare"
    echo "#   copy_bare round: $(tail -1 "$results/copy_bare") rows/s"
    CLIENTS=1 pgbench_run insert_select_100 bench/sql/insert_select_100.sql
    CLIENTS=1 pgbench_run record_events_batch_100 bench/sql/record_events_100.sql
    # The same batches with the lockout engine off: the log rows and the
    # chain alone.
    PGOPTIONS="-c authaudit.lockout_enabled=off" CLIENTS=1 \
      pgbench_run record_events_batch_100_nolock bench/sql/record_events_100.sql
  done
  # Each transaction writes 100 rows: events/s = TPS x 100.
  report record_events_batch_100 batches/s insert_select_100
  report record_events_batch_100_nolock batches/s insert_select_100
  awk -v a="$(median record_events_batch_100)" -v b="$(median copy_bare)" \
    'BEGIN {printf "bench record_events_batch_100_events: %.0f events/s ratio_vs_copy_bare=%.2f\n", a*100, a*100/b}'
  report_cpu insert_select_100 100
  report_cpu record_events_batch_100 100
  report_cpu record_events_batch_100_nolock 100
  # Cost per event as a batch grows, on one account (the lockout engine's
  # worst case): 1,000 events in batches of 100 and in one batch of 1,000.
  for r in $(seq "$ROUNDS"); do
    for n in 100 1000; do
      t0=$(now_ms)
      "${PSQL[@]}" -c "DO \$\$ BEGIN FOR k IN 1 .. 1000 / $n LOOP
          PERFORM count(*) FROM authaudit.record_events((
            SELECT jsonb_agg(jsonb_build_object('log_id', gen_random_uuid(), 'tenant_id', 'one-account',
              'event_type', 'login_failed', 'user_id', 'target', 'channel', 'web', 'ip', '10.9.0.1'))
            FROM generate_series(1, $n)));
          COMMIT;
        END LOOP; END \$\$" >/dev/null
      t1=$(now_ms)
      awk -v ms=$((t1 - t0)) 'BEGIN {printf "%.1f\n", 1000 * 1000 / ms}' >>"$results/one_account_batch_$n"
    done
    echo "#   one account: batches of 100 $(tail -1 "$results/one_account_batch_100"), of 1000 $(tail -1 "$results/one_account_batch_1000") events/s"
  done
  report one_account_batch_1000 events/s one_account_batch_100
fi

if [[ " $GROUPS_TO_RUN " == *" verify "* ]]; then
  echo "# loading $VERIFY_ROWS events into tenant 'big'"
  batches=$(( VERIFY_ROWS / 1000 ))
  "${PSQL[@]}" -c "DO \$\$ BEGIN FOR i IN 1 .. $batches LOOP
      PERFORM count(*) FROM authaudit.record_events((
        SELECT jsonb_agg(jsonb_build_object('log_id', gen_random_uuid(), 'tenant_id', 'big',
          'event_type', 'login_failed', 'user_id', 'user' || (g % 5000), 'channel', 'web',
          'ip', '10.3.' || (g % 200) || '.' || (i % 250), 'user_agent', 'Mozilla/5.0 (bench)',
          'metadata', jsonb_build_object('reason', 'bad_password', 'attempt', g)))
        FROM generate_series(1, 1000) AS g));
      COMMIT;
    END LOOP; END \$\$"
  "${PSQL[@]}" -c "VACUUM ANALYZE authaudit.auth_log"
  cols="seq, log_id, org_id, event_type, user_id, ip, user_agent, channel, occurred_at, recorded_at, metadata, format_version, prev_link, link_sha256, digest_sha512, digest_sha3_256"
  for r in $(seq "$ROUNDS"); do
    echo "# round $r"
    t0=$(now_ms)
    "${PSQL[@]}" -c "COPY (SELECT $cols FROM authaudit.auth_log WHERE tenant_id = 'big' ORDER BY seq) TO '/dev/null'"
    t1=$(now_ms)
    awk -v n="$VERIFY_ROWS" -v ms=$((t1 - t0)) 'BEGIN {printf "%.1f\n", n * 1000 / ms}' >>"$results/scan_chained_columns"
    echo "#   scan_chained_columns round: $(tail -1 "$results/scan_chained_columns") rows/s"
    t0=$(now_ms)
    ok=$("${PSQL[@]}" -At -c "SELECT ok FROM authaudit.verify_chain('big')")
    t1=$(now_ms)
    [ "$ok" = t ] || { echo "bench: verify_chain failed" >&2; exit 1; }
    awk -v n="$VERIFY_ROWS" -v ms=$((t1 - t0)) 'BEGIN {printf "%.1f\n", n * 1000 / ms}' >>"$results/verify_chain"
    echo "#   verify_chain round: $(tail -1 "$results/verify_chain") rows/s"
  done
  report verify_chain rows/s scan_chained_columns
  for r in $(seq "$ROUNDS"); do
    t0=$(now_ms)
    "${PSQL[@]}" -c "COPY (SELECT * FROM authaudit.auth_log WHERE tenant_id = 'big' ORDER BY seq) TO '/dev/null' (FORMAT csv)"
    t1=$(now_ms)
    awk -v n="$VERIFY_ROWS" -v ms=$((t1 - t0)) 'BEGIN {printf "%.1f\n", n * 1000 / ms}' >>"$results/copy_csv"
    t0=$(now_ms)
    "${PSQL[@]}" -c "COPY (SELECT line FROM authaudit.export_cef('big', '-infinity', 'infinity') AS line) TO '/dev/null'"
    t1=$(now_ms)
    awk -v n="$VERIFY_ROWS" -v ms=$((t1 - t0)) 'BEGIN {printf "%.1f\n", n * 1000 / ms}' >>"$results/export_cef"
    echo "#   export_cef round: $(tail -1 "$results/export_cef") rows/s, copy_csv $(tail -1 "$results/copy_csv") rows/s"
  done
  report export_cef rows/s copy_csv
  # The dashboard view, worst case: every row of the table is in the last
  # hour. Baseline: without the rollup, the view reads the hour's rows.
  echo "SELECT count(*) FROM authaudit.event_rates;" >"$dir/event_rates.sql"
  poll() { pgbench -n -M prepared -c 1 -j 1 -T "$SECS" -f "$dir/event_rates.sql" 2>&1 | awk '/^latency average/ {print $4}'; }
  "${PSQL[@]}" -c "DELETE FROM authaudit.event_minutes; DELETE FROM authaudit.event_minutes_rolled"
  rows_lat=$(poll)
  # The rollup worker's pass over the whole flood (what it reads once, a
  # second at a time, while the events arrive), then the poll it serves:
  # its minutes and the rows since (none here).
  t0=$(now_ms)
  "${PSQL[@]}" -c "INSERT INTO authaudit.event_minutes_rolled VALUES ('big', 0, now());
                   SELECT authaudit.roll_up_event_rates($VERIFY_ROWS)" >/dev/null
  t1=$(now_ms)
  awk -v n="$VERIFY_ROWS" -v ms=$((t1 - t0)) 'BEGIN {printf "bench event_rates_rollup_pass: %.2f us_per_event (%d events read in %d ms)\n", ms * 1000 / n, n, ms}'
  rolled_lat=$(poll)
  # With a second of events after the rollup's position (the worker's lag).
  "${PSQL[@]}" -c "SELECT count(*) FROM authaudit.record_events((
      SELECT jsonb_agg(jsonb_build_object('log_id', gen_random_uuid(), 'tenant_id', 'big',
        'event_type', 'login_failed', 'user_id', 'user' || g, 'channel', 'web'))
      FROM generate_series(1, 1000) AS g))" >/dev/null
  lag_lat=$(poll)
  awk -v r="$rows_lat" -v f="$rolled_lat" -v l="$lag_lat" -v n="$VERIFY_ROWS" 'BEGIN {
    printf "bench event_rates_rows: %s ms latency_per_poll (%d rows, all in the last hour, not rolled up)\n", r, n
    printf "bench event_rates: %s ms latency_per_poll ratio_vs_event_rates_rows=%.4f (rolled up)\n", f, f / r
    printf "bench event_rates_1000_since: %s ms latency_per_poll ratio_vs_event_rates_rows=%.4f (1,000 rows after the rollup position)\n", l, l / r }'
fi

if [[ " $GROUPS_TO_RUN " == *" isolation "* ]]; then
  "${PSQL[@]}" -c "CREATE ROLE bench_writer LOGIN IN ROLE authaudit_writer;
    CREATE ROLE bench_reader LOGIN IN ROLE authaudit_reader;
    INSERT INTO authaudit.tenant_scope (role_name, tenant_id, can_read, can_write)
      SELECT 'bench_writer', 'tenant-' || g, false, true FROM generate_series(1, 64) g
      UNION ALL SELECT 'bench_reader', 'tenant-7', true, false;"
  # Thirty days back is history: it goes in through import_events (live
  # recording refuses events older than authaudit.max_past_skew), and the
  # lockout state is rebuilt in event-time order once at the end.
  echo "# loading 1,000,000 events over 64 tenants and 30 days"
  "${PSQL[@]}" -c "DO \$\$ BEGIN FOR i IN 1 .. 1000 LOOP
      PERFORM count(*) FROM authaudit.import_events((
        SELECT jsonb_agg(jsonb_build_object('log_id', gen_random_uuid(),
          'tenant_id', 'tenant-' || (1 + (i * 1000 + g) % 64),
          'event_type', CASE WHEN g % 10 = 0 THEN 'login_success' ELSE 'login_failed' END,
          'user_id', 'user' || (1 + (g * 7919 + i) % 5000), 'channel', 'web',
          'ip', '10.4.' || (g % 200) || '.' || (i % 250),
          'occurred_at', now() - (((i * 1000 + g) % 43200) || ' minutes')::interval))
        FROM generate_series(1, 1000) AS g), rebuild => false);
      COMMIT;
    END LOOP; END \$\$"
  "${PSQL[@]}" -c "SELECT sum(events) AS replayed FROM generate_series(1, 64) g, authaudit.rebuild_lockout('tenant-' || g)"
  "${PSQL[@]}" -c "VACUUM ANALYZE authaudit.auth_log"
  for r in $(seq "$ROUNDS"); do
    echo "# round $r"
    pgbench_run record_event_64_tenants_bypass bench/sql/record_event.sql -D ntenants=64
    pgbench_run record_event_64_tenants_as_writer bench/sql/record_event.sql -D ntenants=64 -U bench_writer
    # Both analyst queries from one connection, interleaved at random, so
    # drift between runs cannot favour either; pgbench -r gives each
    # SELECT's own latency (the third statement of each script).
    pgbench -n -M prepared -r -c 1 -j 1 -T "$SECS" -f bench/sql/analyst_rls.sql \
        -f bench/sql/analyst_bypass.sql 2>&1 \
      | awk '/^SQL script/ {s++; n=0} /^ +[0-9.]+ +[0-9]+ / {n++; if (n == 3) print $1 >> (s == 1 ? rls : byp)}' \
          rls="$results/analyst_query_rls" byp="$results/analyst_query_bypass"
    [ -s "$results/analyst_query_rls" ] || { echo "bench: analyst pgbench failed" >&2; exit 1; }
    echo "#   analyst query round: rls $(tail -1 "$results/analyst_query_rls") ms, bypass $(tail -1 "$results/analyst_query_bypass") ms"
  done
  for f in targeted_accounts attack_sources lockout_timeline successes_after_failures compliance_summary; do
    lat=$(pgbench -n -M prepared -c 1 -j 1 -T "$SECS" -f "bench/sql/inv_$f.sql" 2>&1 | awk '/^latency average/ {print $4}')
    echo "bench investigation_$f: ${lat} ms latency_one_tenant_one_day (1,000,000 rows, 64 tenants)"
  done
  report record_event_64_tenants_as_writer tps record_event_64_tenants_bypass
  awk -v a="$(median analyst_query_rls)" -v b="$(median analyst_query_bypass)" \
    'BEGIN {printf "bench analyst_query_rls: %.3f ms latency_ratio_vs_analyst_query_bypass=%.2f\n", a, a/b}'
fi

if [[ " $GROUPS_TO_RUN " == *" scale "* ]]; then
  # shellcheck source=bench/scale.sh
  source bench/scale.sh
fi

if [[ " $GROUPS_TO_RUN " == *" api "* ]]; then
  # shellcheck source=bench/api.sh
  source bench/api.sh
fi
