-- Operational view for dashboards: event rates per tenant, type and minute
-- over the last hour, with the login failure ratio of that tenant-minute.
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
                          OVER (PARTITION BY r.tenant_id, r.minute), 0), 3) AS failure_ratio
  FROM (SELECT l.tenant_id, date_trunc('minute', l.recorded_at) AS minute, l.event_type,
               count(*) AS events
          FROM authaudit.auth_log l
         WHERE l.recorded_at >= date_trunc('minute', now()) - interval '59 minutes'
         GROUP BY 1, 2, 3) r;

COMMENT ON VIEW authaudit.event_rates IS
    'Events per tenant, minute and type over the last hour, with the tenant-minute login failure ratio (RLS applies).';
