-- Pinned: bindings named their role, so a rename unbound it and a new role
-- created under a dropped role's name inherited its tenant. A binding holds
-- the role itself.
BEGIN;
SELECT plan(3);

CREATE ROLE sqltest_bound IN ROLE authaudit_writer;
INSERT INTO authaudit.tenant_scope (role_name, tenant_id, can_write) VALUES ('sqltest_bound', 'tenant-a', true);
ALTER ROLE sqltest_bound RENAME TO sqltest_renamed;
SET LOCAL ROLE sqltest_renamed;
SELECT lives_ok($$SELECT authaudit.record_event('c3000000-0000-4000-8000-000000000001', 'tenant-a',
    'login_failed', 'alice', 'web')$$, 'the binding follows a rename');
RESET ROLE;

CREATE ROLE sqltest_bound IN ROLE authaudit_writer;
SET LOCAL ROLE sqltest_bound;
SELECT throws_ok($$SELECT authaudit.record_event('c3000000-0000-4000-8000-000000000002', 'tenant-a',
    'login_failed', 'alice', 'web')$$, '42501', NULL, 'a new role under the old name is not bound');
RESET ROLE;
SELECT is((SELECT count(*) FROM authaudit.auth_log), 1::bigint, 'only the bound role''s event');

SELECT * FROM finish();
ROLLBACK;
