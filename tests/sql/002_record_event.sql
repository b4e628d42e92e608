-- Recording through SQL: positions, retries, documented errors.
BEGIN;
SELECT plan(13);

SELECT is((authaudit.record_event(
    log_id => 'a0000000-0000-4000-8000-000000000001', tenant_id => 'acme',
    event_type => 'login_failed', user_id => 'alice', channel => 'web',
    ip => '192.0.2.1')).seq, 1::bigint, 'first event of a tenant is seq 1');
SELECT is((authaudit.record_event(
    log_id => 'a0000000-0000-4000-8000-000000000002', tenant_id => 'acme',
    event_type => 'login_success', user_id => 'alice', channel => 'mobile')).seq,
    2::bigint, 'second event is seq 2');
SELECT is((authaudit.record_event(
    log_id => 'a0000000-0000-4000-8000-000000000001', tenant_id => 'acme',
    event_type => 'login_failed', user_id => 'alice', channel => 'web',
    ip => '192.0.2.1')).seq, 1::bigint, 'a retry returns the original row');
SELECT is((SELECT count(*) FROM authaudit.auth_log), 2::bigint, 'the retry added no row');

SELECT throws_ok($$SELECT authaudit.record_event(
    log_id => 'a0000000-0000-4000-8000-000000000001', tenant_id => 'acme',
    event_type => 'login_success', user_id => 'alice', channel => 'web')$$,
    '23505', NULL, 'a reused log_id with other content is refused');
SELECT throws_ok($$SELECT authaudit.record_event(
    log_id => 'a0000000-0000-4000-8000-000000000003', tenant_id => 'acme',
    event_type => 'password_guess', user_id => 'alice', channel => 'web')$$,
    '22023', 'pg_authaudit: unknown event type "password_guess"', 'unknown event types are refused');
SELECT throws_ok($$SELECT authaudit.record_event(
    log_id => 'a0000000-0000-4000-8000-000000000003', tenant_id => NULL,
    event_type => 'login_failed', user_id => 'alice', channel => 'web')$$,
    '22004', 'pg_authaudit: tenant_id is required', 'a missing tenant is refused');
SELECT throws_ok($$SELECT authaudit.record_event(
    log_id => 'a0000000-0000-4000-8000-000000000003', tenant_id => 'acme',
    event_type => 'login_failed', user_id => E'alice\u0007', channel => 'web')$$,
    '22023', 'pg_authaudit: user_id contains a control character', 'control characters are refused');
SELECT throws_ok($$SELECT authaudit.record_event(
    log_id => 'a0000000-0000-4000-8000-000000000003', tenant_id => 'acme',
    event_type => 'login_failed', user_id => 'alice', channel => 'web', ip => 'not-an-ip')$$,
    '22P02', NULL, 'a malformed ip is refused by its type');
SELECT is((SELECT max(seq) FROM authaudit.auth_log WHERE tenant_id = 'acme'), 2::bigint,
    'refused events did not advance the chain');

SELECT is((authaudit.record_event(
    log_id => 'a0000000-0000-4000-8000-000000000004', tenant_id => 'acme',
    event_type => 'login_failed', user_id => 'bob', channel => 'api', ip => '2001:db8::5',
    metadata => '{"reason": "bad_password", "attempt": 2.50}')).seq,
    3::bigint, 'every field filled, metadata included');

SELECT results_eq($$SELECT ok, rows_checked FROM authaudit.verify_chain('acme')$$,
    $$VALUES (true, 3::bigint)$$, 'the chain verifies');
SELECT throws_ok($$DELETE FROM authaudit.auth_log$$, '42501', NULL, 'the log is append-only');

SELECT * FROM finish();
ROLLBACK;
