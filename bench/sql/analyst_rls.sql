-- The analyst query under RLS: run by the same connection as
-- analyst_bypass.sql, interleaved at random (bench/run.sh isolation), and
-- compared by pgbench's per-statement latency of the SELECT.
\set u random(1, 5000)
SET ROLE bench_reader;
SELECT count(*) FROM authaudit.auth_log
 WHERE user_id = 'user' || :u AND event_type = 'login_failed'
   AND occurred_at > now() - interval '1 day';
RESET ROLE;
