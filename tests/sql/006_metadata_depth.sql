-- Pinned: metadata nested deeper than a document store holds was recorded,
-- and the mirror could never write its document. 64 levels are recorded,
-- 65 refused (22023) with nothing written.
BEGIN;
SELECT plan(3);

CREATE FUNCTION pg_temp.nested(levels int) RETURNS jsonb LANGUAGE sql AS $$
    SELECT (repeat('{"a":', levels - 1) || '{}' || repeat('}', levels - 1))::jsonb
$$;

SELECT lives_ok($$SELECT authaudit.record_event('c2000000-0000-4000-8000-000000000001', 'tenant-a',
    'login_failed', 'alice', 'web', metadata => pg_temp.nested(64))$$, '64 levels are recorded');
SELECT throws_ok($$SELECT authaudit.record_event('c2000000-0000-4000-8000-000000000002', 'tenant-a',
    'login_failed', 'alice', 'web', metadata => pg_temp.nested(65))$$,
    '22023', 'pg_authaudit: metadata nests 65 levels deep, more than the limit of 64',
    '65 are refused');
SELECT is((SELECT max(seq) FROM authaudit.auth_log WHERE tenant_id = 'tenant-a'), 1::bigint,
    'the refusal did not advance the chain');

SELECT * FROM finish();
ROLLBACK;
