-- Pinned: batch fields were read as text whatever their JSON type, so a
-- number or an object became a user id. Every field but metadata must be a
-- JSON string (or null); anything else is refused (22023) naming the event
-- and the field, and nothing is written.
BEGIN;
SELECT plan(6);

CREATE FUNCTION pg_temp.batch(field text, value jsonb) RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_array(jsonb_build_object('log_id', 'c1000000-0000-4000-8000-000000000001',
        'tenant_id', 'tenant-a', 'event_type', 'login_failed', 'user_id', 'alice', 'channel', 'web')
        || jsonb_build_object(field, value))
$$;

SELECT throws_ok($$SELECT * FROM authaudit.record_events(pg_temp.batch('user_id', '42'))$$,
    '22023', 'pg_authaudit: event 1 of the batch: user_id must be a JSON string or null, not a JSON number',
    'a number is not a user id');
SELECT throws_ok($$SELECT * FROM authaudit.record_events(pg_temp.batch('user_agent', 'true'))$$,
    '22023', NULL, 'a boolean is not a user agent');
SELECT throws_ok($$SELECT * FROM authaudit.record_events(pg_temp.batch('ip', '["198.51.100.7"]'))$$,
    '22023', NULL, 'an array is not an address');
SELECT throws_ok($$SELECT * FROM authaudit.record_events(pg_temp.batch('tenant_id', '{"a": 1}'))$$,
    '22023', NULL, 'an object is not a tenant');
SELECT throws_ok($$SELECT * FROM authaudit.record_events(pg_temp.batch('metadata', '"text"'))$$,
    '22023', NULL, 'metadata is an object, not a string');
SELECT is((SELECT count(*) FROM authaudit.auth_log), 0::bigint, 'nothing was written');

SELECT * FROM finish();
ROLLBACK;
