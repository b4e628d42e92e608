-- Evidence of one event for someone without the rest of the log: the row
-- as text, its place in the tenant's Merkle tree and the audit path to the
-- root. tools/verify_evidence.py checks it offline (docs/chain-format.md,
-- "Merkle tree"). Runs with the caller's rights: inclusion_proof's scope
-- check and row-level security apply.
CREATE FUNCTION authaudit.inclusion_evidence(tenant_id text, seq bigint, tree_size bigint)
RETURNS jsonb
LANGUAGE plpgsql STABLE STRICT
SET DateStyle = 'ISO' SET bytea_output = 'hex'
AS $$
DECLARE
    p record;
    v_row jsonb;
BEGIN
    -- The proof first: its scope check refuses before any row is read.
    SELECT * INTO p FROM authaudit.inclusion_proof(inclusion_evidence.tenant_id,
                                                   inclusion_evidence.seq,
                                                   inclusion_evidence.tree_size);
    SELECT jsonb_build_object(
            'tenant_id', l.tenant_id, 'log_id', l.log_id::text, 'org_id', l.org_id,
            'seq', l.seq::text, 'event_type', l.event_type, 'user_id', l.user_id,
            'ip', l.ip::text, 'user_agent', l.user_agent, 'channel', l.channel,
            'occurred_at', l.occurred_at::text, 'recorded_at', l.recorded_at::text,
            'metadata', l.metadata::text, 'format_version', l.format_version::text,
            'prev_link', l.prev_link::text, 'link_sha256', l.link_sha256::text,
            'digest_sha512', l.digest_sha512::text, 'digest_sha3_256', l.digest_sha3_256::text)
      INTO v_row
      FROM authaudit.auth_log l
     WHERE l.tenant_id = inclusion_evidence.tenant_id AND l.seq = inclusion_evidence.seq;
    RETURN jsonb_build_object(
        'format', 'pg_authaudit.evidence.v1',
        'row', v_row,
        'tree_size', p.tree_size,
        'leaf_index', p.leaf_index,
        'root_hash', encode(p.root_hash, 'hex'),
        'path', (SELECT coalesce(jsonb_agg(encode(h, 'hex') ORDER BY i), '[]'::jsonb)
                   FROM unnest(p.path) WITH ORDINALITY AS u(h, i)));
END;
$$;

COMMENT ON FUNCTION authaudit.inclusion_evidence(text, bigint, bigint) IS
    'One event with its RFC 9162 audit path, for tools/verify_evidence.py (docs/chain-format.md, "Merkle tree").';
