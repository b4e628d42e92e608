-- Rows read by authaudit.verify_chain, in chain order.
-- $1 tenant_id, $2 first seq, $3 last seq.
SELECT l.seq, l.log_id, l.org_id, l.event_type, l.user_id, l.ip, l.user_agent,
       l.channel, l.occurred_at, l.recorded_at, l.metadata::text, l.format_version,
       l.prev_link, l.link_sha256, l.digest_sha512, l.digest_sha3_256
  FROM authaudit.auth_log l
 WHERE l.tenant_id = $1 AND l.seq BETWEEN $2 AND $3
 ORDER BY l.seq
