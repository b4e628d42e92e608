//! The test vectors published in docs/chain-format.md. An independent
//! implementation that reproduces these bytes and digests is compatible.

use authaudit_core::canonical::{encode_body, record_bytes, Record};
use authaudit_core::chain::ChainHead;
use authaudit_core::merkle;

fn first() -> Record<'static> {
    Record {
        log_id: [0, 0, 0, 0, 0, 0, 0x40, 0, 0x80, 0, 0, 0, 0, 0, 0, 1],
        tenant_id: "acme",
        org_id: None,
        event_type: "login_failed",
        user_id: "alice",
        ip: Some("192.0.2.1".parse().unwrap()),
        user_agent: Some("curl/8.0"),
        channel: "web",
        occurred_at_us: 1_767_225_600_000_000,
        recorded_at_us: 1_767_225_600_000_001,
        metadata: r#"{"reason": "bad_password"}"#,
    }
}

fn second() -> Record<'static> {
    Record {
        log_id: [0, 0, 0, 0, 0, 0, 0x40, 0, 0x80, 0, 0, 0, 0, 0, 0, 2],
        org_id: Some("hq"),
        event_type: "login_success",
        ip: Some("2001:db8::1".parse().unwrap()),
        user_agent: None,
        channel: "mobile",
        occurred_at_us: 1_767_225_601_000_000,
        recorded_at_us: 1_767_225_601_000_001,
        metadata: "{}",
        ..first()
    }
}

/// Multi-byte UTF-8 (byte and character lengths differ), an IPv4-mapped
/// IPv6 address (it stays IPv6), a time given with an offset in seconds,
/// nested and escaped metadata.
fn third() -> Record<'static> {
    Record {
        log_id: [0, 0, 0, 0, 0, 0, 0x40, 0, 0x80, 0, 0, 0, 0, 0, 0, 3],
        org_id: Some("hq.ops"),
        event_type: "login_failed",
        user_id: "zoë 😀",
        ip: Some("::ffff:192.0.2.1".parse().unwrap()),
        user_agent: Some("Ü"),
        channel: "ssh",
        // 1900-01-01 00:00:00+05:53:28
        occurred_at_us: -2_209_010_008_000_000,
        recorded_at_us: 1_767_225_602_000_000,
        metadata: r#"{"a": {"b": [1, 2.50, null, true]}, "q": "say \"hi\"\n\\"}"#,
        ..first()
    }
}

/// A BC time and a time just before 1970, no address, no agent.
fn fourth() -> Record<'static> {
    Record {
        log_id: [0, 0, 0, 0, 0, 0, 0x40, 0, 0x80, 0, 0, 0, 0, 0, 0, 4],
        org_id: None,
        event_type: "lockout_reset",
        user_id: "alice",
        ip: None,
        user_agent: None,
        channel: "api",
        // 0044-03-15 12:00:00+00 BC
        occurred_at_us: -63_517_780_800_000_000,
        // 1969-12-31 23:59:59.999999+00
        recorded_at_us: -1,
        metadata: "{}",
        ..first()
    }
}

/// The retention_applied event that removed seq 1 to 4, recording seq 4's
/// three digests as its anchor (as metadata::text prints it).
fn retention_metadata(anchor: &ChainHead) -> String {
    format!(
        r#"{{"_authaudit": {{"retention": {{"mode": "delete", "anchor": {{"seq": 4, "link_sha256": "{}", "digest_sha512": "{}", "digest_sha3_256": "{}"}}, "removed_rows": 4, "removed_to_seq": 4, "removed_from_seq": 1}}}}}}"#,
        hex(&anchor.sha256),
        hex(&anchor.sha512),
        hex(&anchor.sha3_256)
    )
}

fn fifth(metadata: &str) -> Record<'_> {
    Record {
        log_id: [0, 0, 0, 0, 0, 0, 0x40, 0, 0x80, 0, 0, 0, 0, 0, 0, 5],
        org_id: None,
        event_type: "retention_applied",
        user_id: "dpo",
        ip: None,
        user_agent: None,
        channel: "system",
        // 2027-02-05 00:00:00+00
        occurred_at_us: 1_801_785_600_000_000,
        recorded_at_us: 1_801_785_600_000_001,
        metadata,
        ..first()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn published_vectors() {
    let genesis = ChainHead::genesis("acme");
    let body1 = encode_body(&first());
    let h1 = genesis.next(1, &body1);
    let h2 = h1.next(2, &encode_body(&second()));
    let body3 = encode_body(&third());
    let h3 = h2.next(3, &body3);
    let h4 = h3.next(4, &encode_body(&fourth()));
    let got = [
        ("genesis.sha256", hex(&genesis.sha256)),
        ("genesis.sha512", hex(&genesis.sha512)),
        ("genesis.sha3_256", hex(&genesis.sha3_256)),
        ("record1", hex(&record_bytes(1, &body1))),
        ("seq1.sha256", hex(&h1.sha256)),
        ("seq1.sha512", hex(&h1.sha512)),
        ("seq1.sha3_256", hex(&h1.sha3_256)),
        ("seq2.sha256", hex(&h2.sha256)),
        ("seq2.sha512", hex(&h2.sha512)),
        ("seq2.sha3_256", hex(&h2.sha3_256)),
        ("record3", hex(&record_bytes(3, &body3))),
        ("seq3.sha256", hex(&h3.sha256)),
        ("seq3.sha512", hex(&h3.sha512)),
        ("seq3.sha3_256", hex(&h3.sha3_256)),
        ("seq4.sha256", hex(&h4.sha256)),
        ("seq4.sha512", hex(&h4.sha512)),
        ("seq4.sha3_256", hex(&h4.sha3_256)),
    ];
    // The retained chain: seq 5 alone, anchored at what its metadata records.
    let metadata = retention_metadata(&h4);
    let body5 = encode_body(&fifth(&metadata));
    let h5 = h4.next(5, &body5);
    let leaves = [&h1, &h2, &h3, &h4].map(|h| merkle::leaf_hash(&h.sha256));
    let path = merkle::inclusion_proof(1, &leaves).unwrap();
    let got = got.into_iter().chain([
        ("retained.record5", hex(&record_bytes(5, &body5))),
        ("retained.seq5.sha256", hex(&h5.sha256)),
        ("retained.seq5.sha512", hex(&h5.sha512)),
        ("retained.seq5.sha3_256", hex(&h5.sha3_256)),
        ("merkle.root3", hex(&merkle::root(&leaves[..3]))),
        ("merkle.root4", hex(&merkle::root(&leaves))),
        ("merkle.path2_4", path.iter().map(|h| hex(h)).collect()),
    ]);
    let published = include_str!("../../docs/chain-test-vectors.txt");
    let missing: Vec<String> = got
        .map(|(name, value)| format!("{name} = {value}"))
        .filter(|line| !published.lines().any(|l| l == line))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/chain-test-vectors.txt lacks or differs on:\n{}",
        missing.join("\n")
    );
}
