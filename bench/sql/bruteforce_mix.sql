\set r random(1, 100)
\set u random(1, 5000)
\set ip random(1, 200)
SELECT seq FROM authaudit.record_event(gen_random_uuid(), 'tenant-' || (1 + :u % 64),
    CASE WHEN :r <= 90 THEN 'login_failed' ELSE 'login_success' END,
    'user' || :u, 'web', NULL, ('10.5.0.' || :ip)::inet, 'Mozilla/5.0 (bench)', NULL,
    '{"reason": "bad_password"}');
