-- Run once by the official image's entrypoint on a new data directory.
CREATE EXTENSION pg_authaudit;
-- The mirror's role: replication plus read access to every tenant.
CREATE ROLE authaudit_mirror LOGIN REPLICATION PASSWORD 'mirror-change-me' IN ROLE authaudit_auditor;
