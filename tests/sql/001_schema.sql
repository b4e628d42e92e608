-- The extension's objects exist with the documented shape.
BEGIN;
SELECT plan(13);

SELECT has_schema('authaudit');
SELECT has_table('authaudit', 'auth_log', 'the auth log exists');
SELECT columns_are('authaudit', 'auth_log', ARRAY[
    'log_id', 'tenant_id', 'org_id', 'seq', 'event_type', 'user_id', 'ip', 'user_agent',
    'channel', 'occurred_at', 'recorded_at', 'metadata', 'format_version', 'prev_link',
    'link_sha256', 'digest_sha512', 'digest_sha3_256']);
SELECT col_is_pk('authaudit', 'auth_log', ARRAY['tenant_id', 'log_id'], 'log_id is the idempotency key within its tenant');
SELECT col_type_is('authaudit', 'auth_log', 'ip', 'inet', 'ip is inet');
SELECT has_index('authaudit', 'auth_log', 'auth_log_tenant_time_idx', ARRAY['tenant_id', 'occurred_at']);
SELECT has_index('authaudit', 'auth_log', 'auth_log_tenant_user_idx', ARRAY['tenant_id', 'user_id', 'occurred_at']);
SELECT has_index('authaudit', 'auth_log', 'auth_log_tenant_ip_idx', ARRAY['tenant_id', 'ip', 'occurred_at']);
SELECT has_function('authaudit', 'record_event',
    ARRAY['uuid', 'text', 'text', 'text', 'text', 'text', 'inet', 'text', 'timestamp with time zone', 'jsonb']);
SELECT has_function('authaudit', 'record_events', ARRAY['jsonb']);
SELECT has_function('authaudit', 'verify_chain', ARRAY['text']);
SELECT is((SELECT extversion FROM pg_extension WHERE extname = 'pg_authaudit'),
          authaudit.version(), 'the installed version matches the library');
SELECT is(has_table_privilege('public', 'authaudit.auth_log', 'INSERT'), false,
          'PUBLIC cannot write the log directly');

SELECT * FROM finish();
ROLLBACK;
