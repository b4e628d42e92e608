-- Events per minute and type over the last hour: the rollup
-- (authaudit.event_rates) and the rows recorded since. $1 tenant.
SELECT extract(epoch FROM minute)::int8, event_type, events::int8
FROM authaudit.event_rates WHERE tenant_id = $1
