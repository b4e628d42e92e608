\set t random(1, :ntenants)
\set u random(1, 5000)
\set ip random(1, 200)
INSERT INTO bench.auth_event (log_id, tenant_id, event_type, user_id, ip, user_agent, channel, occurred_at, recorded_at, metadata)
VALUES (gen_random_uuid(), 'tenant-' || :t, 'login_failed', 'user' || :u, ('10.1.0.' || :ip)::inet, 'Mozilla/5.0 (bench)', 'web', now(), now(), '{"reason": "bad_password"}');
