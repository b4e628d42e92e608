-- The publication the mirror (sidecar) streams with pgoutput: the log, the
-- lockout state and the checkpoints. Reference: docs/sidecar.md.
--
-- Replica identity: every mirrored table has a primary key, which is what
-- pgoutput sends to identify a row (the log and the checkpoints are
-- append-only; lockout_state updates carry the whole new row).
--
-- Publications cannot belong to an extension: this one is created if
-- missing (and survives DROP EXTENSION, losing its tables). The role the
-- sidecar connects as reads every tenant's rows through it: treat that
-- credential as privileged (docs/security.md).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_publication WHERE pubname = 'authaudit_mirror') THEN
        CREATE PUBLICATION authaudit_mirror
            FOR TABLE authaudit.auth_log, authaudit.lockout_state, authaudit.checkpoints
            WITH (publish = 'insert, update, delete, truncate');
    ELSE
        -- Re-created extension: put the new tables back in.
        EXECUTE 'ALTER PUBLICATION authaudit_mirror SET TABLE authaudit.auth_log, '
             || 'authaudit.lockout_state, authaudit.checkpoints';
    END IF;
END;
$$;
