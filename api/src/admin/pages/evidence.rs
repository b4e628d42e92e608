//! The chain's verification, and one event's evidence bundle.

use super::*;

/// Chain verification, and one event's evidence bundle.
pub async fn evidence(
    State(admin): State<Arc<Admin>>,
    Path(p): TenantPath,
    headers: HeaderMap,
) -> Response {
    let c = ctx!(admin, p, headers);
    let v = tri!(c.api("/verify").await);
    let ok = v["ok"].as_bool() == Some(true);
    let body = format!(
        r#"<section class="panel wide"><h2>Chain verification</h2><p class="big {}">{}</p><p>{} rows checked{}.</p></section><section class="panel wide"><h2>One event's evidence</h2><form method="get" action="{}/evidence/bundle"><label>seq <input name="seq" inputmode="numeric" pattern="[0-9]+" required></label><button type="submit">Download the evidence bundle</button></form><p>The bundle holds the event, its chain links, a Merkle inclusion proof and the witness's signed checkpoint; check it offline with <code>tools/verify_evidence.py evidence-SEQ.json --key WITNESS_KEY</code> (the witness's public key, as <code>authaudit.witness_keys</code> holds it).</p></section>"#,
        if ok { "ok" } else { "alarm" },
        if ok { "Intact" } else { "Verification FAILED" },
        cell(&v["rows_checked"]),
        v["reason"]
            .as_str()
            .map_or(String::new(), |r| format!(": {}", esc(r))),
        c.base()
    );
    c.page("Evidence", "evidence", &body)
}

/// One event's evidence bundle as a download (`/evidence/bundle?seq=N`).
pub async fn evidence_bundle(
    State(admin): State<Arc<Admin>>,
    Path(p): TenantPath,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let c = ctx!(admin, p, headers);
    let q = query_pairs(raw.as_deref());
    let seq = param(&p, "seq");
    let seq = if seq == "bundle" {
        field(&q, "seq").unwrap_or("").to_string()
    } else {
        seq
    };
    if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) || seq.len() > 18 {
        return bad("seq", "must be a whole number from 1");
    }
    let v = tri!(c.api(&format!("/evidence/{seq}")).await);
    let mut r = (StatusCode::OK, v.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"evidence-{seq}.json\"")) {
        r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    r
}
