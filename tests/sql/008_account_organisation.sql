-- Pinned: an account first seen in a success belonged to no organisation,
-- so another organisation's writer could lock it. An account belongs to the
-- organisation of its first event, success included.
BEGIN;
SELECT plan(3);

CREATE ROLE sqltest_hq IN ROLE authaudit_writer;
CREATE ROLE sqltest_branch IN ROLE authaudit_writer;
INSERT INTO authaudit.tenant_scope (role_name, tenant_id, org_id, can_write) VALUES
    ('sqltest_hq', 'tenant-a', 'hq', true), ('sqltest_branch', 'tenant-a', 'branch', true);
SET LOCAL ROLE sqltest_hq;
SELECT authaudit.record_event('c4000000-0000-4000-8000-000000000001', 'tenant-a', 'login_success',
    'alice', 'web', 'hq');
RESET ROLE;
SELECT is((SELECT org_id FROM authaudit.lockout_state WHERE tenant_id = 'tenant-a' AND user_id = 'alice'),
    'hq', 'a success makes the account hq''s');

SET LOCAL ROLE sqltest_branch;
SELECT throws_ok($$SELECT authaudit.record_event('c4000000-0000-4000-8000-000000000002', 'tenant-a',
    'login_failed', 'alice', 'web', 'branch')$$, '42501', NULL,
    'another organisation''s writer cannot count failures against it');
RESET ROLE;
SELECT is((SELECT failure_count FROM authaudit.lockout_state WHERE tenant_id = 'tenant-a' AND user_id = 'alice'),
    0, 'its state is unchanged');

SELECT * FROM finish();
ROLLBACK;
