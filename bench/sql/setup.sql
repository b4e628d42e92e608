-- Benchmark database: the extension, and a plain table of the same shape as
-- authaudit.auth_log without the chain (same columns, same indexes): what an
-- application would write without pg_authaudit.
CREATE EXTENSION pg_authaudit;
CREATE SCHEMA bench;
CREATE TABLE bench.auth_event (
    log_id      uuid PRIMARY KEY,
    tenant_id   text NOT NULL,
    org_id      text,
    event_type  text NOT NULL,
    user_id     text NOT NULL,
    ip          inet,
    user_agent  text,
    channel     text NOT NULL,
    occurred_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL,
    metadata    jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX ON bench.auth_event (tenant_id, occurred_at);
CREATE INDEX ON bench.auth_event (tenant_id, user_id, occurred_at);
CREATE INDEX ON bench.auth_event (tenant_id, ip, occurred_at);
