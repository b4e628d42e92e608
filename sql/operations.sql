-- Operational view for dashboards: event rates per tenant, type and minute
-- of event time (occurred_at) over the last hour, with the login failure
-- ratio of that tenant-minute and how late its events were recorded.
-- Invoker rights, so row-level security scopes it like the log itself.
-- Reference: docs/sql-reference.md.

CREATE VIEW authaudit.event_rates WITH (security_invoker = true) AS
WITH RECURSIVE tenants(tenant_id) AS (
    -- The tenants the caller sees, one index probe each (auth_log_pkey
    -- leads with tenant_id): the poll never reads the history.
    (SELECT l.tenant_id FROM authaudit.auth_log l ORDER BY l.tenant_id LIMIT 1)
    UNION ALL
    SELECT (SELECT l.tenant_id FROM authaudit.auth_log l
             WHERE l.tenant_id > t.tenant_id ORDER BY l.tenant_id LIMIT 1)
      FROM tenants t WHERE t.tenant_id IS NOT NULL)
SELECT r.tenant_id, r.minute, r.event_type, r.events,
       sum(r.events) FILTER (WHERE r.event_type = 'login_failed')
           OVER (PARTITION BY r.tenant_id, r.minute) AS minute_failures,
       round(coalesce(sum(r.events) FILTER (WHERE r.event_type = 'login_failed')
                          OVER (PARTITION BY r.tenant_id, r.minute), 0)
             / nullif(sum(r.events) FILTER (WHERE r.event_type IN ('login_failed', 'login_success'))
                          OVER (PARTITION BY r.tenant_id, r.minute), 0), 3) AS failure_ratio,
       r.max_recording_lag, r.imported
  FROM (SELECT l.tenant_id, date_trunc('minute', l.occurred_at) AS minute, l.event_type,
               count(*) AS events,
               max(l.recorded_at - l.occurred_at) AS max_recording_lag,
               count(*) FILTER (WHERE l.metadata #>> '{_authaudit,imported}' = 'true') AS imported
          FROM tenants t
          -- Minutes of event time: each tenant's last hour through
          -- auth_log_tenant_time_idx.
          JOIN authaudit.auth_log l
            ON l.tenant_id = t.tenant_id
           AND l.occurred_at >= date_trunc('minute', now()) - interval '59 minutes'
         GROUP BY 1, 2, 3) r;

COMMENT ON VIEW authaudit.event_rates IS
    'Events per tenant, minute of occurred_at and type over the last hour, with the tenant-minute login failure ratio, the largest recording lag and the imported events (RLS applies).';
