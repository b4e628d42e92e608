-- CEF export for SIEMs (docs/cef.md). Bodies refer to functions the
-- extension creates later in this script.
SET LOCAL check_function_bodies = off;

-- One CEF version 0 line for a stored row.
CREATE FUNCTION authaudit.to_cef(r authaudit.auth_log) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT authaudit._cef_event_line(
        r.event_type, r.user_id, r.ip::text, r.user_agent, r.occurred_at, r.log_id,
        r.tenant_id, r.org_id, r.channel, r.seq, r.link_sha256,
        r.metadata ->> 'reason',
        (r.metadata #>> '{_authaudit,lockout,preceding_failures}')::integer,
        (r.metadata #>> '{_authaudit,lockout,was_locked}')::boolean,
        r.metadata #>> '{_authaudit,token,fingerprint_sha256}',
        CASE WHEN r.metadata #>> '{_authaudit,imported}' = 'true' THEN r.recorded_at END)
$$;

-- The CEF lines of a tenant's events with from_time <= occurred_at < to_time,
-- in chain order. Runs with the caller's rights: row-level security applies.
CREATE FUNCTION authaudit.export_cef(tenant_id text, from_time timestamptz, to_time timestamptz)
RETURNS SETOF text
LANGUAGE plpgsql STABLE
-- Each call is planned for its arguments, as a query with them written
-- in would be.
SET plan_cache_mode = force_custom_plan AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
        -- The row as the log's type (on Citus, l is a shard's row).
        SELECT authaudit.to_cef(ROW(l.*)::authaudit.auth_log)
          FROM authaudit.auth_log l
         WHERE l.tenant_id = export_cef.tenant_id
           AND l.occurred_at >= export_cef.from_time
           AND l.occurred_at < export_cef.to_time
         ORDER BY l.seq;
END;
$$;

-- Whether a CEF line (as a SIEM received it) is exactly what the log holds
-- for its tenant (cs1) and externalId: false for a tampered line, NULL for
-- an unknown or invisible id. Constant-time comparison.
CREATE FUNCTION authaudit.verify_cef(cef_line text) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_tenant text := substring(cef_line FROM ' cs1=([A-Za-z0-9._-]+) cs1Label=tenant( |$)');
    v_id uuid := substring(cef_line
                           FROM 'externalId=([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})')::uuid;
    v_line text;
BEGIN
    -- The row as the log's type (on Citus, l is a shard's row).
    SELECT authaudit.to_cef(ROW(l.*)::authaudit.auth_log) INTO v_line
      FROM authaudit.auth_log l
     WHERE l.tenant_id = v_tenant AND l.log_id = v_id;
    RETURN authaudit._ct_eq(v_line, cef_line);
END;
$$;

SET LOCAL check_function_bodies = on;
