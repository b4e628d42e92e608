-- The chain's head, its latest checkpoint, the witness's latest signed
-- tree size and its age, and the witness's disagreements. $1 tenant.
SELECT (SELECT max(seq) FROM authaudit.auth_log WHERE tenant_id = $1),
(SELECT seq FROM authaudit.checkpoints WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1),
(SELECT created_at::text FROM authaudit.checkpoints WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1),
(SELECT tree_size FROM authaudit.witness_checkpoints WHERE tenant_id = $1 ORDER BY tree_size DESC LIMIT 1),
(SELECT extract(epoch FROM now() - max(signed_at))::int8 FROM authaudit.witness_checkpoints WHERE tenant_id = $1),
(SELECT count(*) FROM authaudit.witness_disagreements WHERE tenant_id = $1)::int8
