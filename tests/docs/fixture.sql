-- The database every documentation example runs in (tests/docs_examples.py),
-- unless its block says otherwise: the extension, and tenant agency-1 with
-- a day of traffic and a campaign (1,200 events: password failures against
-- alice and others from a handful of sources, locks, successes after
-- failures, organisation hq), checkpointed.
CREATE EXTENSION pg_authaudit;
SET authaudit.max_past_skew = '2d';
SELECT count(*) FROM authaudit.record_events((
  SELECT jsonb_agg(jsonb_build_object(
           'log_id', gen_random_uuid(), 'tenant_id', 'agency-1',
           'org_id', CASE WHEN g % 3 = 0 THEN 'hq' END,
           'event_type', CASE WHEN g % 7 = 0 THEN 'login_success' ELSE 'login_failed' END,
           'user_id', CASE WHEN g % 5 = 0 THEN 'alice' ELSE 'user' || (g % 40) END,
           'channel', CASE WHEN g % 2 = 0 THEN 'web' ELSE 'mobile' END,
           'ip', '198.51.100.' || (1 + g % 9),
           'user_agent', 'Mozilla/5.0',
           'occurred_at', now() - interval '20 hours' + g * interval '1 minute',
           'metadata', jsonb_build_object('reason', 'bad_password'))
         ORDER BY g)
    FROM generate_series(1, 600) AS g));
SELECT count(*) FROM authaudit.record_events((
  SELECT jsonb_agg(jsonb_build_object(
           'log_id', gen_random_uuid(), 'tenant_id', 'agency-1',
           'event_type', CASE WHEN g % 11 = 0 THEN 'login_success' ELSE 'login_failed' END,
           'user_id', 'user' || (g % 60), 'channel', 'web',
           'ip', '203.0.113.' || (1 + g % 50),
           'occurred_at', now() - interval '8 hours' + g * interval '20 seconds')
         ORDER BY g)
    FROM generate_series(1, 600) AS g));
SELECT seq FROM authaudit.checkpoint('agency-1');
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'agency1_writer') THEN
        CREATE ROLE agency1_writer LOGIN IN ROLE authaudit_writer;
    END IF;
END
$$;
INSERT INTO authaudit.tenant_scope (role_name, tenant_id, can_write) VALUES ('agency1_writer', 'agency-1', true);
