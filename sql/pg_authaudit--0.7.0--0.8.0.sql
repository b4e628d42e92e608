-- pg_authaudit 0.7.0 -> 0.8.0 (docs/installation.md, "Upgrading").
--
-- record_events is the batch pipeline itself (Rust, SECURITY DEFINER like
-- record_event) and returns the rows it stored; 0.7.0's PL/pgSQL took the
-- log ids from authaudit._record_events and read every row back. Same
-- signature, privileges, SQLSTATEs and results. Rows and chains are
-- unchanged.

\echo Use "ALTER EXTENSION pg_authaudit UPDATE TO '0.8.0'" to load this file. \quit

CREATE OR REPLACE FUNCTION authaudit.record_events(events jsonb)
RETURNS SETOF authaudit.auth_log
LANGUAGE c VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'record_events_rows_wrapper';
