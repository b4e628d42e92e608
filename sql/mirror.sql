-- The publication the mirror (sidecar) streams with pgoutput: the log, the
-- lockout state and the checkpoints. Reference: docs/sidecar.md.
--
-- Replica identity: every mirrored table has a primary key, which is what
-- pgoutput sends to identify a row (the log and the checkpoints are
-- append-only; lockout_state updates carry the whole new row).
--
-- Publications cannot belong to an extension, so CREATE EXTENSION does not
-- create one: a publication made by the install script would be dumped by
-- pg_dump as well, and a restore would then create it twice. The sidecar
-- calls this function when it starts (before it creates its slot); a
-- restore re-creates the publication from the dump. The role the sidecar
-- connects as reads every tenant's rows through it: treat that credential
-- as privileged (docs/security.md).

-- Creates the publication if it is missing, or puts the mirrored tables
-- back into it (after DROP and CREATE EXTENSION); returns its name.
CREATE FUNCTION authaudit.ensure_mirror_publication(publication text DEFAULT 'authaudit_mirror')
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF publication IS NULL OR publication !~ '^[a-z_][a-z0-9_]{0,62}$' THEN
        RAISE EXCEPTION 'pg_authaudit: publication name must be lowercase letters, digits and _'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_publication p WHERE p.pubname = publication) THEN
        EXECUTE format('CREATE PUBLICATION %I FOR TABLE authaudit.auth_log, '
                       'authaudit.lockout_state, authaudit.checkpoints '
                       'WITH (publish = %L)', publication, 'insert, update, delete, truncate');
    ELSIF (SELECT count(*) FROM pg_catalog.pg_publication_tables t
            WHERE t.pubname = publication AND t.schemaname = 'authaudit'
              AND t.tablename IN ('auth_log', 'lockout_state', 'checkpoints')) < 3 THEN
        EXECUTE format('ALTER PUBLICATION %I SET TABLE authaudit.auth_log, '
                       'authaudit.lockout_state, authaudit.checkpoints', publication);
    END IF;
    RETURN publication;
END;
$$;

COMMENT ON FUNCTION authaudit.ensure_mirror_publication(text) IS
    'Creates the mirror''s publication (authaudit_mirror) if missing; the sidecar calls it at start.';
