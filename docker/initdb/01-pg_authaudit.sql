-- Run once by the official image's entrypoint on a new data directory.
CREATE EXTENSION pg_authaudit;
-- The publication the sidecar streams (the sidecar would create it too).
SELECT authaudit.ensure_mirror_publication();
-- The mirror's role: replication plus read access to every tenant.
CREATE ROLE authaudit_mirror LOGIN REPLICATION PASSWORD 'mirror-change-me' IN ROLE authaudit_auditor;
