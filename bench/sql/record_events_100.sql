\set t random(1, 64)
SELECT count(*) FROM authaudit.record_events((
    SELECT jsonb_agg(jsonb_build_object(
        'log_id', gen_random_uuid(), 'tenant_id', 'tenant-' || :t, 'event_type', 'login_failed',
        'user_id', 'user' || g, 'channel', 'web', 'ip', '10.2.0.' || (g % 200 + 1),
        'user_agent', 'Mozilla/5.0 (bench)', 'metadata', jsonb_build_object('reason', 'bad_password')))
      FROM generate_series(1, 100) AS g));
