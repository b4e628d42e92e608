-- Row-level security from SQL: a bound reader sees its tenant only.
BEGIN;
SELECT plan(6);

CREATE ROLE sqltest_reader_a IN ROLE authaudit_reader;
CREATE ROLE sqltest_writer_a IN ROLE authaudit_writer;
INSERT INTO authaudit.tenant_scope (role_name, tenant_id, can_read, can_write) VALUES
    ('sqltest_reader_a', 'tenant-a', true, false),
    ('sqltest_writer_a', 'tenant-a', false, true);
SELECT authaudit.record_event(log_id => 'b0000000-0000-4000-8000-000000000001', tenant_id => 'tenant-a',
    event_type => 'login_failed', user_id => 'alice', channel => 'web');
SELECT authaudit.record_event(log_id => 'b0000000-0000-4000-8000-000000000002', tenant_id => 'tenant-b',
    event_type => 'login_failed', user_id => 'bob', channel => 'web');

SET LOCAL ROLE sqltest_reader_a;
SELECT results_eq($$SELECT user_id FROM authaudit.auth_log$$, $$VALUES ('alice')$$,
    'a reader sees its own tenant');
SELECT is_empty($$SELECT 1 FROM authaudit.auth_log WHERE tenant_id = 'tenant-b'$$,
    'and nothing of another tenant');
SELECT throws_ok($$SELECT * FROM authaudit.verify_chain('tenant-b')$$, '42501', NULL,
    'nor may it verify another tenant');
RESET ROLE;

SET LOCAL ROLE sqltest_writer_a;
SELECT lives_ok($$SELECT authaudit.record_event(log_id => 'b0000000-0000-4000-8000-000000000003',
    tenant_id => 'tenant-a', event_type => 'login_success', user_id => 'alice', channel => 'web')$$,
    'a writer records for its tenant');
SELECT throws_ok($$SELECT authaudit.record_event(log_id => 'b0000000-0000-4000-8000-000000000004',
    tenant_id => 'tenant-b', event_type => 'login_success', user_id => 'bob', channel => 'web')$$,
    '42501', NULL, 'and for no other');
SELECT throws_ok($$SELECT count(*) FROM authaudit.auth_log$$, '42501', NULL, 'and reads nothing');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
