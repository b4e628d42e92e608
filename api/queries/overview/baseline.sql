-- The last day's login failures and successes in the rollup: the
-- failure rate's baseline. $1 tenant.
SELECT coalesce(sum(events) FILTER (WHERE event_type = 'login_failed'), 0)::int8,
coalesce(sum(events) FILTER (WHERE event_type = 'login_success'), 0)::int8
FROM authaudit.event_minutes WHERE tenant_id = $1 AND minute >= now() - interval '1 day'
