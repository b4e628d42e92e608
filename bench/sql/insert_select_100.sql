\set t random(1, 64)
INSERT INTO bench.auth_event (log_id, tenant_id, event_type, user_id, ip, user_agent, channel, occurred_at, recorded_at, metadata)
SELECT gen_random_uuid(), 'tenant-' || :t, 'login_failed', 'user' || g, ('10.2.0.' || (g % 200 + 1))::inet,
       'Mozilla/5.0 (bench)', 'web', now(), now(), jsonb_build_object('reason', 'bad_password')
  FROM generate_series(1, 100) AS g;
