\set t random(1, :ntenants)
\set u random(1, 5000)
\set ip random(1, 200)
\set id random(1, 9000000000000000000)
SELECT seq FROM authaudit.record_event(md5(:id::text)::uuid, 'tenant-' || :t, 'login_failed', 'user' || :u, 'web', NULL, ('10.1.0.' || :ip)::inet, 'Mozilla/5.0 (bench)', NULL, '{"reason": "bad_password"}');
