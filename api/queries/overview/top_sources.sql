-- The sources with the most failures in their current window that
-- failed within the last hour. $1 tenant.
SELECT host(ip), failure_count FROM authaudit.lockout_ip_state
WHERE tenant_id = $1 AND updated_at > now() - interval '1 hour' AND failure_count > 0
ORDER BY failure_count DESC, ip LIMIT 10
