-- Sources blocked now, the most failing ten, with how many in all. $1 tenant.
SELECT host(ip), failure_count, blocked_until::text, count(*) OVER ()::int8
FROM authaudit.lockout_ip_state WHERE tenant_id = $1 AND blocked_until > now()
ORDER BY failure_count DESC LIMIT 10
