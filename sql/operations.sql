-- Operational view for dashboards: event rates per tenant, type and minute
-- of event time (occurred_at) over the last hour, with the login failure
-- ratio of that tenant-minute and how late its events were recorded.
-- Invoker rights, so row-level security scopes it like the log itself.
-- Reference: docs/sql-reference.md.

-- recorded_at grows with insertion order: a BRIN index finds the last hour
-- for a few pages of index, and costs almost nothing to maintain.
CREATE INDEX auth_log_recorded_brin ON authaudit.auth_log USING brin (recorded_at);

CREATE VIEW authaudit.event_rates WITH (security_invoker = true) AS
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
          FROM authaudit.auth_log l
         -- Minutes of event time. An event is recorded at most
         -- authaudit.max_future_skew (at most a day) before it happens, so
         -- the BRIN index on recorded_at bounds the pages to read.
         WHERE l.occurred_at >= date_trunc('minute', now()) - interval '59 minutes'
           AND l.recorded_at >= date_trunc('minute', now()) - interval '59 minutes' - interval '1 day'
         GROUP BY 1, 2, 3) r;

COMMENT ON VIEW authaudit.event_rates IS
    'Events per tenant, minute of occurred_at and type over the last hour, with the tenant-minute login failure ratio, the largest recording lag and the imported events (RLS applies).';
