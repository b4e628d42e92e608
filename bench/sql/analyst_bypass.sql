-- The analyst query with an explicit tenant filter as a role that bypasses
-- RLS (the superuser); SET ROLE mirrors analyst_rls.sql's statements.
\set u random(1, 5000)
SET ROLE postgres;
SELECT count(*) FROM authaudit.auth_log
 WHERE tenant_id = 'tenant-7' AND user_id = 'user' || :u AND event_type = 'login_failed'
   AND occurred_at > now() - interval '1 day';
RESET ROLE;
