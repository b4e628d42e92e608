# The scale group of bench/run.sh (sourced by it; not in CI, not in the
# default groups): a year of history (docs/benchmarks.md, "A year's scale").
#
# One tenant of BENCH_SCALE_EVENTS events (default 10,000,000) over 365
# days, one of the same density over 30 days, and 63 background tenants,
# all loaded through import_events and rebuilt with rebuild_lockout. Then
# every investigation function is asked about the last full day and the
# last full week of each tenant: the first answer (cold: it may have to
# replay from a snapshot a rebuild made) and the median of the next three
# (warm), and the 365-day tenant's answer as a ratio of the 30-day one's.
# Then verify_chain (incremental and full), rebuild_lockout after
# importing one more day, event_rates, and retention of one month.
#
# Output lines: bench scale_<name>: <value> ms [ratio_vs_<baseline>=<x.xx>]

SCALE_EVENTS=${BENCH_SCALE_EVENTS:-10000000}
SCALE_DAYS=365
SCALE_BG_TENANTS=63
SCALE_BG_EVENTS=${BENCH_SCALE_BG_EVENTS:-20000}
per_day=$(( SCALE_EVENTS / SCALE_DAYS ))
month_events=$(( per_day * 30 ))

"${PSQL[@]}" <<'SQL'
-- Milliseconds a statement takes, measured in the server.
CREATE FUNCTION bench.ms(q text) RETURNS numeric LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz := clock_timestamp();
BEGIN
    EXECUTE q;
    RETURN round(extract(epoch FROM clock_timestamp() - t0)::numeric * 1000, 1);
END $$;

SQL

# shellcheck source=bench/history.sh
source bench/history.sh

scale_ms() { "${PSQL[@]}" -At -c "SELECT bench.ms(\$q\$$1\$q\$)"; }

t0=$(now_ms)
echo "# scale: loading $SCALE_EVENTS events over $SCALE_DAYS days into 'year'"
history_load year $SCALE_DAYS "$SCALE_EVENTS" "$(( month_events / 1000 * 1000 ))"
t1=$(now_ms)
echo "bench scale_load_year: $(( (t1 - t0) / 1000 )) s ($(( SCALE_EVENTS * 1000 / (t1 - t0) )) events/s through import_events)"
echo "# scale: loading $month_events events over 30 days into 'month'"
history_load month 30 "$month_events"
echo "# scale: loading $SCALE_BG_TENANTS background tenants of $SCALE_BG_EVENTS events"
for g in $(seq "$SCALE_BG_TENANTS"); do
  history_load "bg-$g" $SCALE_DAYS "$SCALE_BG_EVENTS"
done
"${PSQL[@]}" -c "VACUUM ANALYZE authaudit.auth_log"
"${PSQL[@]}" -At -c "SELECT 'scale: ' || count(*) || ' rows, ' || pg_size_pretty(pg_total_relation_size('authaudit.auth_log')) FROM authaudit.auth_log" | sed 's/^/# /'

full_rebuild=$(scale_ms "SELECT * FROM authaudit.rebuild_lockout('year')")
echo "bench scale_rebuild_full_year: $full_rebuild ms"
echo "bench scale_rebuild_full_month: $(scale_ms "SELECT * FROM authaudit.rebuild_lockout('month')") ms"
"${PSQL[@]}" -At -c "SELECT sum(events) FROM generate_series(1, $SCALE_BG_TENANTS) g, authaudit.rebuild_lockout('bg-' || g)" >/dev/null
"${PSQL[@]}" -At -c "SELECT 'scale: ' || count(*) || ' snapshots, ' || pg_size_pretty(sum(pg_column_size(state))) || ', largest ' || pg_size_pretty(max(pg_column_size(state))::bigint) FROM authaudit.lockout_snapshots" | sed 's/^/# /'

# The questions run as docs/configuration.md recommends (jit = off): the
# plans of a large tenant's day cross the default jit_above_cost, and
# compiling costs more than the query.
"${PSQL[@]}" -c "ALTER DATABASE bench SET jit = off" >/dev/null

# The questions, each for a period of the tenant.
scale_questions=(
  "targeted_accounts_count|SELECT count(*) FROM authaudit.targeted_accounts(\$1, \$2, \$3)"
  "targeted_accounts_locks|SELECT count(*), sum(locks) FROM authaudit.targeted_accounts(\$1, \$2, \$3)"
  "lockout_timeline|SELECT count(*) FROM authaudit.lockout_timeline(\$1, \$2, \$3)"
  "successes_after_failures|SELECT count(*) FROM authaudit.successes_after_failures(\$1, \$2, \$3)"
  "attack_sources|SELECT count(*) FROM authaudit.attack_sources(\$1, \$2, \$3)"
  "compliance_summary|SELECT count(*) FROM authaudit.compliance_summary(\$1, \$2, \$3)"
  "cef|SELECT count(*) FROM authaudit.export_cef(\$1, \$2, \$3)"
)
# ask TENANT FROM TO QUERY: cold ms and the median of three warm ms.
scale_ask() {
  local q=${4//\$1/\'$1\'}
  q=${q//\$2/$2}
  q=${q//\$3/$3}
  local cold w1 w2 w3
  cold=$(scale_ms "$q"); w1=$(scale_ms "$q"); w2=$(scale_ms "$q"); w3=$(scale_ms "$q")
  echo "$cold $(printf '%s\n' "$w1" "$w2" "$w3" | sort -g | sed -n 2p)"
}
day_from="date_trunc('day', now()) - interval '1 day'"
week_from="date_trunc('day', now()) - interval '7 days'"
to="date_trunc('day', now())"
for period in day week; do
  from=$day_from
  [ "$period" = week ] && from=$week_from
  for entry in "${scale_questions[@]}"; do
    name=${entry%%|*}
    q=${entry#*|}
    read -r ycold ywarm < <(scale_ask year "$from" "$to" "$q")
    read -r mcold mwarm < <(scale_ask month "$from" "$to" "$q")
    awk -v n="${name}_${period}" -v yc="$ycold" -v yw="$ywarm" -v mc="$mcold" -v mw="$mwarm" 'BEGIN {
      printf "bench scale_%s: %.1f ms warm (cold %.1f) ratio_vs_30_days=%.2f (cold %.2f)\n",
        n, yw, yc, (mw > 0 ? yw / mw : 0), (mc > 0 ? yc / mc : 0) }'
  done
done

# Verification: incremental (from the latest verified checkpoint) and full.
"${PSQL[@]}" -At -c "SELECT authaudit.checkpoint('year')" >/dev/null
echo "bench scale_verify_full: $(scale_ms "SELECT * FROM authaudit.verify_chain('year')") ms"
if "${PSQL[@]}" -At -c "SELECT 1 FROM pg_proc WHERE proname = 'verify_chain' AND 'full' = ANY(proargnames)" | grep -q 1; then
  echo "bench scale_verify_incremental: $(scale_ms "SELECT * FROM authaudit.verify_chain('year', \"full\" => false)") ms"
fi

# One more day of history imported into the last full day, then rebuilt.
"${PSQL[@]}" -c "DO \$\$
  DECLARE
    t0 timestamptz := date_trunc('day', now()) - interval '1 day';
    step interval := interval '1 day' / $per_day;
    k bigint := 0;
  BEGIN
    WHILE k < $per_day LOOP
      PERFORM count(*) FROM authaudit.import_events(
        bench.history('year', t0 + step / 2, step, k, least(1000, $per_day - k)::int), rebuild => false);
      k := k + 1000;
      COMMIT;
    END LOOP;
  END \$\$"
day_rebuild=$(scale_ms "SELECT * FROM authaudit.rebuild_lockout('year')")
awk -v d="$day_rebuild" -v f="$full_rebuild" \
  'BEGIN {printf "bench scale_rebuild_after_one_day: %.1f ms ratio_vs_full_rebuild=%.3f\n", d, d / f}'

# The dashboard's poll.
polls=()
for i in 1 2 3 4 5; do polls+=("$(scale_ms "SELECT count(*) FROM authaudit.event_rates")"); done
echo "bench scale_event_rates: $(printf '%s\n' "${polls[@]}" | sort -g | sed -n 3p) ms (median of 5, rows: no rollup)"
# The same poll over the rollup (what the rollup worker keeps): its first
# pass counts each tenant's last day by event time.
first_pass=$(scale_ms "SELECT authaudit.roll_up_event_rates()")
polls=()
for i in 1 2 3 4 5; do polls+=("$(scale_ms "SELECT count(*) FROM authaudit.event_rates")"); done
echo "bench scale_event_rates_rolled_up: $(printf '%s\n' "${polls[@]}" | sort -g | sed -n 3p) ms (median of 5; the rollup's first pass over 65 tenants: $first_pass ms)"

# Retention of the first month of 'year' (the checkpoint made after it).
"${PSQL[@]}" -c "ALTER DATABASE bench SET authaudit.min_retention = '1min'" >/dev/null
retention=$(scale_ms "SELECT * FROM authaudit.apply_retention('year', now() - interval '1 hour' - interval '$SCALE_DAYS days' + interval '31 days')")
removed=$("${PSQL[@]}" -At -c "SELECT (metadata #>> '{_authaudit,retention,removed_rows}') FROM authaudit.auth_log WHERE tenant_id = 'year' AND event_type = 'retention_applied' ORDER BY seq DESC LIMIT 1")
ok=$("${PSQL[@]}" -At -c "SELECT ok FROM authaudit.verify_chain('year')")
echo "bench scale_retention_one_month: $retention ms ($removed rows removed; chain verifies after: $ok)"
# What the autovacuum the log is created with does after it (docs/retention.md, "Space").
t0=$(now_ms)
"${PSQL[@]}" -c "VACUUM authaudit.auth_log"
t1=$(now_ms)
echo "bench scale_vacuum_after_retention: $(( (t1 - t0) / 1000 )) s (the whole log: its heap and indexes)"
