\set t random(1, :ntenants)
\set u random(1, 5000)
\set ip random(1, 200)
SELECT seq FROM authaudit.record_event(gen_random_uuid(), 'tenant-' || :t, 'login_failed', 'user' || :u, 'web', NULL, ('10.1.0.' || :ip)::inet, 'Mozilla/5.0 (bench)', NULL, '{"reason": "bad_password"}');
