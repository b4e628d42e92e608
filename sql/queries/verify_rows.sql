-- Rows read by authaudit.verify_chain, merged in seq order with the tenant's
-- chain head row (is_head), which carries the head's seq and packed digests.
-- One statement, so the head and the rows come from the same snapshot.
-- $1 tenant_id, $2 first seq, $3 last seq.
SELECT * FROM (
    SELECT true AS is_head, h.seq, h.head AS head_bytes,
           NULL::uuid AS log_id, NULL::text AS org_id, NULL::text AS event_type,
           NULL::text AS user_id, NULL::text AS ip, NULL::text AS user_agent,
           NULL::text AS channel, NULL::timestamptz AS occurred_at,
           NULL::timestamptz AS recorded_at, NULL::text AS metadata,
           NULL::smallint AS format_version, NULL::bytea AS prev_link,
           NULL::bytea AS link_sha256, NULL::bytea AS digest_sha512,
           NULL::bytea AS digest_sha3_256
      FROM authaudit.chain_head h
     WHERE h.tenant_id = $1
    UNION ALL
    SELECT false, l.seq, NULL,
           l.log_id, l.org_id, l.event_type,
           l.user_id, l.ip::text, l.user_agent,
           l.channel, l.occurred_at,
           l.recorded_at, l.metadata::text,
           l.format_version, l.prev_link,
           l.link_sha256, l.digest_sha512,
           l.digest_sha3_256
      FROM authaudit.auth_log l
     WHERE l.tenant_id = $1 AND l.seq BETWEEN $2 AND $3
) r
ORDER BY r.seq
