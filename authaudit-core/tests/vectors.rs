//! The test vectors published in docs/chain-format.md. An independent
//! implementation that reproduces these bytes and digests is compatible.

use authaudit_core::canonical::{encode_body, record_bytes, Record};
use authaudit_core::chain::ChainHead;

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

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn published_vectors() {
    let genesis = ChainHead::genesis("acme");
    let body1 = encode_body(&first());
    let h1 = genesis.next(1, &body1);
    let h2 = h1.next(2, &encode_body(&second()));
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
    ];
    let published = include_str!("../../docs/chain-test-vectors.txt");
    let missing: Vec<String> = got
        .iter()
        .map(|(name, value)| format!("{name} = {value}"))
        .filter(|line| !published.lines().any(|l| l == line))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/chain-test-vectors.txt lacks or differs on:\n{}",
        missing.join("\n")
    );
}
