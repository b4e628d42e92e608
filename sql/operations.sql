-- Operational views: what a dashboard or an exporter polls.
-- Invoker rights, so row-level security scopes it like the log itself.
-- Reference: docs/sql-reference.md.

-- Per-minute counts of the last day, kept by the rollup worker
-- (authaudit.rollup_database, docs/configuration.md) or by
-- authaudit.roll_up_event_rates(): the dashboard's poll reads these and
-- the rows recorded since, not the hour's rows.
CREATE TABLE authaudit.event_minutes (
    tenant_id         text        NOT NULL,
    org_id            text,
    minute            timestamptz NOT NULL,
    event_type        text        NOT NULL,
    events            bigint      NOT NULL,
    imported          bigint      NOT NULL,
    max_recording_lag interval    NOT NULL,
    CONSTRAINT event_minutes_key UNIQUE NULLS NOT DISTINCT (tenant_id, minute, event_type, org_id)
);
-- Per tenant, the seq up to which its events are counted in
-- event_minutes (a tenant's committed events are a prefix of its seqs),
-- and when the rollup last looked at it.
CREATE TABLE authaudit.event_minutes_rolled (
    tenant_id  text        NOT NULL,
    seq        bigint      NOT NULL,
    checked_at timestamptz NOT NULL,
    CONSTRAINT event_minutes_rolled_pkey PRIMARY KEY (tenant_id)
);
REVOKE ALL ON authaudit.event_minutes, authaudit.event_minutes_rolled FROM PUBLIC;

-- One pass of the rollup: each tenant's events recorded since its last
-- pass (at most max_rows of them), counted into its minutes when they
-- occurred within the last day; a tenant seen the first time counts its
-- last day by event time. Minutes older than a day are dropped. Returns
-- the number of events read past the tenants' last seqs.
CREATE FUNCTION authaudit.roll_up_event_rates(max_rows bigint DEFAULT 100000) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cutoff constant timestamptz := date_trunc('minute', now()) - interval '1 day';
    t text;
    done bigint;
    checked timestamptz;
    top bigint;
    n bigint;
    total bigint := 0;
BEGIN
    IF max_rows IS NULL OR max_rows < 1 THEN
        RAISE EXCEPTION 'pg_authaudit: max_rows must be at least 1'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- One pass at a time (the worker's or a caller's): another returns 0.
    IF NOT pg_try_advisory_xact_lock(hashtext('pg_authaudit event rates')) THEN
        RETURN 0;
    END IF;
    FOR t IN
        WITH RECURSIVE tenants(tenant_id) AS (
            (SELECT l.tenant_id FROM authaudit.auth_log l ORDER BY l.tenant_id LIMIT 1)
            UNION ALL
            SELECT (SELECT l.tenant_id FROM authaudit.auth_log l
                     WHERE l.tenant_id > s.tenant_id ORDER BY l.tenant_id LIMIT 1)
              FROM tenants s WHERE s.tenant_id IS NOT NULL)
        SELECT tenants.tenant_id FROM tenants WHERE tenants.tenant_id IS NOT NULL
    LOOP
        SELECT r.seq, r.checked_at INTO done, checked
          FROM authaudit.event_minutes_rolled r WHERE r.tenant_id = t;
        IF NOT FOUND THEN
            -- Every seq up to top is committed (seqs commit in order), so
            -- the next statement sees each of them, whatever its snapshot.
            SELECT max(l.seq) INTO top FROM authaudit.auth_log l WHERE l.tenant_id = t;
            DELETE FROM authaudit.event_minutes m WHERE m.tenant_id = t;
            EXECUTE format(authaudit._event_minutes_insert(),
                           'l.tenant_id = $1 AND l.occurred_at >= $2 AND l.seq <= $3')
              USING t, cutoff, top;
            INSERT INTO authaudit.event_minutes_rolled (tenant_id, seq, checked_at)
                 VALUES (t, top, now());
            CONTINUE;
        END IF;
        -- One-shot plans (EXECUTE): planned for this tenant's seq, so the
        -- (tenant_id, seq) index reads only the rows since.
        EXECUTE 'SELECT max(s.seq), count(*) FROM (SELECT l.seq FROM authaudit.auth_log l
                  WHERE l.tenant_id = $1 AND l.seq > $2 ORDER BY l.seq LIMIT $3) s'
           INTO top, n USING t, done, max_rows;
        IF top IS NOT NULL THEN
            EXECUTE format(authaudit._event_minutes_insert(),
                           'l.tenant_id = $1 AND l.seq > $4 AND l.seq <= $3 AND l.occurred_at >= $2')
              USING t, cutoff, top, done;
            DELETE FROM authaudit.event_minutes m WHERE m.tenant_id = t AND m.minute < cutoff;
            UPDATE authaudit.event_minutes_rolled r SET seq = top, checked_at = now()
             WHERE r.tenant_id = t;
            total := total + n;
        ELSIF checked < now() - interval '1 minute' THEN
            DELETE FROM authaudit.event_minutes m WHERE m.tenant_id = t AND m.minute < cutoff;
            UPDATE authaudit.event_minutes_rolled r SET checked_at = now() WHERE r.tenant_id = t;
        END IF;
    END LOOP;
    RETURN total;
END;
$$;
REVOKE EXECUTE ON FUNCTION authaudit.roll_up_event_rates(bigint) FROM PUBLIC;

-- The rollup's INSERT, its WHERE clause left as %s.
CREATE FUNCTION authaudit._event_minutes_insert() RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
SELECT 'INSERT INTO authaudit.event_minutes AS m
            (tenant_id, org_id, minute, event_type, events, imported, max_recording_lag)
        SELECT l.tenant_id, l.org_id, date_trunc(''minute'', l.occurred_at), l.event_type, count(*),
               count(*) FILTER (WHERE l.metadata #>> ''{_authaudit,imported}'' = ''true''),
               max(l.recorded_at - l.occurred_at)
          FROM authaudit.auth_log l WHERE %s
         GROUP BY 1, 2, 3, 4
        ON CONFLICT ON CONSTRAINT event_minutes_key DO UPDATE
           SET events = m.events + excluded.events,
               imported = m.imported + excluded.imported,
               max_recording_lag = greatest(m.max_recording_lag, excluded.max_recording_lag)'
$$;
REVOKE EXECUTE ON FUNCTION authaudit._event_minutes_insert() FROM PUBLIC;

-- The poll, a function so that it runs without JIT: the planner cannot
-- know how few rows the per-tenant reads return, and compiling would cost
-- far more than the query (docs/configuration.md, "jit"). Invoker rights:
-- row-level security scopes it like the log itself.
CREATE FUNCTION authaudit._event_rates()
RETURNS TABLE (tenant_id text, minute timestamptz, event_type text, events bigint,
               minute_failures numeric, failure_ratio numeric, max_recording_lag interval,
               imported bigint)
LANGUAGE sql STABLE SET jit = off SET search_path = pg_catalog, pg_temp AS $$
WITH RECURSIVE tenants(tenant_id) AS (
    -- The tenants the caller sees, one index probe each (auth_log_pkey
    -- leads with tenant_id): the poll never reads the history.
    (SELECT l.tenant_id FROM authaudit.auth_log l ORDER BY l.tenant_id LIMIT 1)
    UNION ALL
    SELECT (SELECT l.tenant_id FROM authaudit.auth_log l
             WHERE l.tenant_id > t.tenant_id ORDER BY l.tenant_id LIMIT 1)
      FROM tenants t WHERE t.tenant_id IS NOT NULL),
since(minute) AS (SELECT date_trunc('minute', now()) - interval '59 minutes'),
-- A tenant the rollup looked at within five minutes is counted from its
-- minutes and the rows after its seq; any other from its last hour's rows.
-- Each per-tenant read is a LATERAL subquery kept whole (OFFSET 0): an
-- index scan per tenant, never a join over the log.
rolled AS (
    SELECT r.tenant_id, r.seq,
           (SELECT max(l.seq) FROM authaudit.auth_log l WHERE l.tenant_id = r.tenant_id) AS top
      FROM tenants t
      JOIN authaudit.event_minutes_rolled r ON r.tenant_id = t.tenant_id
     WHERE r.checked_at >= now() - interval '5 minutes'),
counts AS (
    SELECT m.tenant_id, m.minute, m.event_type, m.events, m.max_recording_lag, m.imported
      FROM rolled r, since,
           LATERAL (SELECT * FROM authaudit.event_minutes m
                     WHERE m.tenant_id = r.tenant_id AND m.minute >= since.minute OFFSET 0) m
    UNION ALL
    -- Rows after the rollup's seq, through auth_log_tenant_seq_key (the
    -- minute test is no index condition, so the time index is not used;
    -- the seq range between two parameters is costed as the few rows it
    -- is, and such a poll never crosses jit_above_cost).
    SELECT l.tenant_id, date_trunc('minute', l.occurred_at), l.event_type, 1,
           l.recorded_at - l.occurred_at,
           CASE WHEN l.metadata #>> '{_authaudit,imported}' = 'true' THEN 1 ELSE 0 END
      FROM rolled r, since,
           LATERAL (SELECT * FROM authaudit.auth_log l
                     WHERE l.tenant_id = r.tenant_id AND l.seq > r.seq AND l.seq <= r.top OFFSET 0) l
     WHERE date_trunc('minute', l.occurred_at) >= since.minute
    UNION ALL
    -- Tenants not rolled up: the last hour through auth_log_tenant_time_idx.
    SELECT l.tenant_id, date_trunc('minute', l.occurred_at), l.event_type, 1,
           l.recorded_at - l.occurred_at,
           CASE WHEN l.metadata #>> '{_authaudit,imported}' = 'true' THEN 1 ELSE 0 END
      FROM tenants t,
           LATERAL (SELECT * FROM authaudit.auth_log l
                     WHERE l.tenant_id = t.tenant_id
                       AND l.occurred_at >= date_trunc('minute', now()) - interval '59 minutes'
                    OFFSET 0) l
     WHERE t.tenant_id IS NOT NULL  -- the recursion's last row
       AND NOT EXISTS (SELECT FROM rolled r WHERE r.tenant_id = t.tenant_id))
SELECT r.tenant_id, r.minute, r.event_type, r.events,
       sum(r.events) FILTER (WHERE r.event_type = 'login_failed')
           OVER (PARTITION BY r.tenant_id, r.minute) AS minute_failures,
       round(coalesce(sum(r.events) FILTER (WHERE r.event_type = 'login_failed')
                          OVER (PARTITION BY r.tenant_id, r.minute), 0)
             / nullif(sum(r.events) FILTER (WHERE r.event_type IN ('login_failed', 'login_success'))
                          OVER (PARTITION BY r.tenant_id, r.minute), 0), 3) AS failure_ratio,
       r.max_recording_lag, r.imported
  FROM (SELECT c.tenant_id, c.minute, c.event_type, sum(c.events)::bigint AS events,
               max(c.max_recording_lag) AS max_recording_lag, sum(c.imported)::bigint AS imported
          FROM counts c
         GROUP BY 1, 2, 3) r
$$;
REVOKE EXECUTE ON FUNCTION authaudit._event_rates() FROM PUBLIC;

CREATE VIEW authaudit.event_rates WITH (security_invoker = true) AS
SELECT * FROM authaudit._event_rates();

COMMENT ON VIEW authaudit.event_rates IS
    'Events per tenant, minute of occurred_at and type over the last hour, with the tenant-minute login failure ratio, the largest recording lag and the imported events (RLS applies).';
