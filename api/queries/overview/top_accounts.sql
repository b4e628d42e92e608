-- The accounts with the most failures in their current run that
-- failed within the last hour. $1 tenant.
SELECT user_id, failure_count, coalesce(host(last_failure_ip), '') FROM authaudit.lockout_state
WHERE tenant_id = $1 AND last_failure_at > now() - interval '1 hour' AND failure_count > 0
ORDER BY failure_count DESC, user_id LIMIT 10
