# The synthetic history the scale and api groups load (sourced by
# bench/scale.sh and bench/api.sh): bench.history() makes a batch of it,
# history_load imports a tenant's through import_events.

"${PSQL[@]}" <<'SQL'
-- Events k .. k + n - 1 of a tenant whose history starts at t0, one every
-- step: 30 % failures (a fifth of them in bursts against twenty victims,
-- which lock), the rest successes; 5,000 accounts, 2,000 sources.
CREATE OR REPLACE FUNCTION bench.history(tenant text, t0 timestamptz, step interval, k bigint, n int)
RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_agg(jsonb_build_object(
        'log_id', gen_random_uuid(),
        'tenant_id', tenant,
        'event_type', CASE WHEN e % 10 < 3 THEN 'login_failed' ELSE 'login_success' END,
        'user_id', CASE WHEN e % 10 < 3 AND e % 5 = 0 THEN 'victim' || (e / 40 % 20)
                        ELSE 'user' || (e * 7919 % 5000) END,
        'channel', 'web',
        'ip', '10.' || (e * 104729 % 2000 / 250) || '.' || (e * 104729 % 2000 % 250) || '.1',
        'occurred_at', t0 + step * e) ORDER BY e)
      FROM generate_series(k, k + n - 1) AS e
$$;
SQL

# load TENANT DAYS EVENTS [CHECKPOINT_AFTER]: imports the tenant's history
# (the last event an hour ago), a checkpoint after CHECKPOINT_AFTER events.
history_load() {
  local tenant=$1 days=$2 events=$3 cp=${4:-0}
  "${PSQL[@]}" -c "DO \$\$
    DECLARE
      t0 timestamptz := now() - interval '1 hour' - make_interval(days => $days);
      step interval := make_interval(days => $days) / $events;
      k bigint := 0;
    BEGIN
      WHILE k < $events LOOP
        PERFORM count(*) FROM authaudit.import_events(
          bench.history('$tenant', t0, step, k, least(1000, $events - k)::int), rebuild => false);
        k := k + 1000;
        IF $cp > 0 AND k = $cp THEN
          PERFORM authaudit.checkpoint('$tenant');
        END IF;
        COMMIT;
      END LOOP;
    END \$\$"
}

