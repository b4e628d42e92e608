-- Pinned: a writer bound to no tenant crashed the server with one batch.
-- Its batch is refused as a missing binding (42501), nothing is written,
-- and the server keeps answering.
BEGIN;
SELECT plan(4);

CREATE ROLE sqltest_unbound IN ROLE authaudit_writer;
SET LOCAL ROLE sqltest_unbound;
SELECT throws_ok($$SELECT * FROM authaudit.record_events(jsonb_build_array(
    jsonb_build_object('log_id', 'c0000000-0000-4000-8000-000000000001', 'tenant_id', 'tenant-a',
        'event_type', 'login_failed', 'user_id', 'alice', 'channel', 'web'),
    jsonb_build_object('log_id', 'c0000000-0000-4000-8000-000000000002', 'tenant_id', 'tenant-b',
        'event_type', 'login_failed', 'user_id', 'bob', 'channel', 'web')))$$,
    '42501', NULL, 'an unbound writer''s batch of two tenants is refused');
SELECT throws_ok($$SELECT * FROM authaudit.record_events(
    (SELECT jsonb_agg(jsonb_build_object('log_id', gen_random_uuid(), 'tenant_id', 'tenant-a',
        'event_type', 'login_failed', 'user_id', 'u' || i, 'channel', 'web'))
       FROM generate_series(1, 1000) i))$$,
    '42501', NULL, 'and so is a full batch');
RESET ROLE;
SELECT is((SELECT count(*) FROM authaudit.auth_log), 0::bigint, 'nothing was written');
SELECT is((SELECT count(*) FROM authaudit.lockout_state), 0::bigint, 'no lockout state changed');

SELECT * FROM finish();
ROLLBACK;
