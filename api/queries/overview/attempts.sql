-- The attempts the detections read over a period, in seq order.
-- $1 tenant, $2 and $3 the period's bounds (Unix seconds), $4 the most rows.
SELECT seq, event_type, user_id, host(ip), (extract(epoch FROM occurred_at) * 1000)::int8,
(metadata #>> '{_authaudit,lockout,preceding_failures}')::int4,
(metadata #>> '{_authaudit,lockout,was_locked}')::bool
FROM authaudit.auth_log WHERE tenant_id = $1
AND occurred_at >= to_timestamp($2::int8) AND occurred_at < to_timestamp($3::int8)
AND event_type IN ('login_failed', 'login_success', 'account_locked')
ORDER BY seq LIMIT $4
