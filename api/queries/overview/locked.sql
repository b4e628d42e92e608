-- Accounts locked now, the latest ten, with how many in all. $1 tenant.
SELECT user_id, locked_at::text, coalesce(locked_until::text, 'until reset'), failure_count,
count(*) OVER ()::int8 FROM authaudit.lockout_state
WHERE tenant_id = $1 AND locked AND (locked_until IS NULL OR locked_until > now())
ORDER BY locked_at DESC LIMIT 10
