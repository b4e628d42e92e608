//! Search with the API's filters and cursor, and exports of every match
//! (CSV made here from the API's NDJSON; NDJSON, CEF and OCSF as the API
//! streams them).

use super::*;

/// The search form's fields: the API's `events` filters.
pub(super) const SEARCH_FIELDS: [(&str, &str, &str); 8] = [
    ("since", "from (RFC 3339)", "2026-12-07T00:00:00Z"),
    ("until", "to (RFC 3339)", ""),
    ("user", "account", ""),
    ("source", "source address or network", "203.0.113.0/24"),
    ("type", "event type", "login_failed"),
    ("channel", "channel", "web"),
    ("org", "organisation", ""),
    ("limit", "events a page (at most 1000)", "100"),
];

/// The API query of the search fields given (and `after`).
pub(super) fn search_query(q: &[(String, String)]) -> String {
    let mut parts: Vec<String> = SEARCH_FIELDS
        .iter()
        .chain([("after", "", "")].iter())
        .filter_map(|(name, _, _)| {
            field(q, name)
                .filter(|v| !v.trim().is_empty())
                .map(|v| format!("{name}={}", encode(v.trim())))
        })
        .collect();
    // A search is over a window: without an end it would poll.
    if field(q, "until").is_none_or(|v| v.trim().is_empty()) {
        parts.push(format!(
            "until={}",
            encode(&Period::rfc3339(now_unix() + 60))
        ));
    }
    parts.join("&")
}

/// Search with the API's filters and cursor.
pub async fn search(
    State(admin): State<Arc<Admin>>,
    Path(p): TenantPath,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let c = ctx!(admin, p, headers);
    let q = query_pairs(raw.as_deref());
    let mut form = format!(
        r#"<form class="filters" method="get" action="{}/search">"#,
        c.base()
    );
    for (name, label, placeholder) in SEARCH_FIELDS {
        let _ = write!(
            form,
            r#"<label>{label} <input name="{name}" value="{}" placeholder="{placeholder}"></label>"#,
            esc(field(&q, name).unwrap_or(""))
        );
    }
    form.push_str(r#"<button type="submit">Search</button></form>"#);
    if q.is_empty() {
        return c.page("Search", "search", &form);
    }
    let api_q = search_query(&q);
    let events = tri!(c.api(&format!("/events?{api_q}")).await);
    let list = events.as_array().cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = list.iter().map(|e| event_row(&c, e)).collect();
    let mut body = form;
    let export_q: String = api_q
        .split('&')
        .filter(|p| !p.starts_with("after=") && !p.starts_with("limit="))
        .collect::<Vec<_>>()
        .join("&amp;");
    let _ = write!(body, r#"<p class="exports">Export every match: "#);
    for (f, name) in [
        ("csv", "CSV"),
        ("ndjson", "NDJSON"),
        ("cef", "CEF"),
        ("ocsf", "OCSF"),
    ] {
        let _ = write!(
            body,
            r#"<a href="{}/export?format={f}&amp;{}" download>{name}</a> "#,
            c.base(),
            esc(&export_q).replace("&amp;amp;", "&amp;")
        );
    }
    body.push_str("</p>");
    body.push_str(&table(
        &format!("{} events", list.len()),
        &EVENT_COLUMNS,
        &rows,
    ));
    let limit: usize = field(&q, "limit")
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(100);
    if list.len() >= limit {
        if let Some(last) = list.last().and_then(|e| e["seq"].as_i64()) {
            let mut next: Vec<String> = q
                .iter()
                .filter(|(k, _)| k != "after")
                .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
                .collect();
            next.push(format!("after={last}"));
            let _ = write!(
                body,
                r#"<nav class="pages" aria-label="Pages"><a rel="next" href="{}/search?{}">next page</a></nav>"#,
                c.base(),
                esc(&next.join("&"))
            );
        }
    }
    c.page("Search", "search", &body)
}

/// What an event's row says beyond its columns: the lockout's rule and
/// window, a success's preceding failures, a reset's ticket, a token's
/// fingerprint.
pub(super) fn detail(e: &Value) -> String {
    let m = &e["metadata"];
    let ty = e["event_type"].as_str().unwrap_or("");
    let l = &m["_authaudit"]["lockout"];
    let mut parts = Vec::new();
    if ty == "account_locked" {
        if let Some(rule) = m["reason"].as_str() {
            parts.push(format!("rule {}", esc(rule)));
        }
        if let Some(n) = m["failures"].as_i64() {
            parts.push(format!("after {n} failures"));
        }
        match m["locked_until"].as_str() {
            Some(u) => parts.push(format!("until {}", esc(&short_time(u)))),
            None if m["permanent"].as_bool() == Some(true) => parts.push("until reset".into()),
            None => {}
        }
        if let Some(n) = m["lock_count"].as_i64() {
            parts.push(format!("lock {n}"));
        }
    }
    if ty == "login_success" {
        if let Some(n) = l["preceding_failures"].as_i64().filter(|n| *n > 0) {
            parts.push(format!("<strong>after {n} failures</strong>"));
        }
        if l["was_locked"].as_bool() == Some(true) {
            parts.push("<strong>while locked</strong>".into());
        }
    }
    if let Some(t) = m["ticket"].as_str() {
        parts.push(format!("ticket {}", esc(t)));
    }
    if let Some(op) = m["operator"]["sub"].as_str() {
        parts.push(format!("by {}", esc(op)));
    }
    if ty == "token_issued" {
        let t = &m["_authaudit"]["token"];
        if let Some(f) = t["fingerprint_sha256"].as_str() {
            parts.push(format!(
                "token {}…",
                esc(&f.chars().take(16).collect::<String>())
            ));
        }
        if let Some(j) = t["jti"].as_str() {
            parts.push(format!("jti {}", esc(j)));
        }
        if let Some(exp) = t["exp"].as_i64() {
            parts.push(format!(
                "expires {}",
                super::period::ms_time(exp.saturating_mul(1000))
            ));
        }
    }
    parts.join(", ")
}

/// The columns of an event's row ([`event_row`]).
pub(super) const EVENT_COLUMNS: [&str; 7] = [
    "seq",
    "occurred (UTC)",
    "type",
    "account",
    "source",
    "channel",
    "detail",
];

pub(super) fn event_row(c: &Ctx, e: &Value) -> Vec<String> {
    let ip = e["ip"].as_str().unwrap_or("");
    vec![
        cell(&e["seq"]),
        when(&e["occurred_at"]),
        format!(
            r#"<span class="t {}">{}</span>"#,
            type_class(e["event_type"].as_str().unwrap_or("")),
            cell(&e["event_type"])
        ),
        e["user_id"]
            .as_str()
            .map_or(String::new(), |u| account_link(&c.tenant, u)),
        if ip.is_empty() {
            String::new()
        } else {
            source_link(&c.tenant, ip)
        },
        cell(&e["channel"]),
        detail(e),
    ]
}

/// An export of a search's matches, streamed from the API.
pub async fn export(
    State(admin): State<Arc<Admin>>,
    Path(p): TenantPath,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let c = ctx!(admin, p, headers);
    let q = query_pairs(raw.as_deref());
    let (accept, ext) = match field(&q, "format") {
        Some("csv") | Some("ndjson") => ("application/x-ndjson", field(&q, "format").unwrap_or("")),
        Some("cef") => ("text/x-cef", "cef"),
        Some("ocsf") => ("application/x-ocsf+ndjson", "ocsf.ndjson"),
        _ => return bad("format", "one of csv, ndjson, cef, ocsf"),
    };
    let api_q: String = search_query(&q)
        .split('&')
        .filter(|p| !p.starts_with("limit=") && !p.starts_with("after="))
        .collect::<Vec<_>>()
        .join("&");
    let r = c
        .admin
        .api(
            &c.who.session,
            Method::GET,
            &format!("{}/events?{api_q}", c.api_base()),
            &[("accept", accept)],
            None,
        )
        .await;
    if !r.status().is_success() {
        return problem_of(r).await;
    }
    let (content_type, body) = if ext == "csv" {
        ("text/csv; charset=utf-8", csv_body(r.into_body()))
    } else {
        let ct = r
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_string();
        (
            if ct.starts_with("text/x-cef") {
                "text/plain; charset=utf-8"
            } else {
                "application/x-ndjson"
            },
            r.into_body(),
        )
    };
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    let name = format!(
        "attachment; filename=\"authaudit-{}.{ext}\"",
        c.tenant
            .chars()
            .filter(|ch| ch.is_ascii_alphanumeric() || *ch == '-' || *ch == '_')
            .collect::<String>()
    );
    if let Ok(v) = HeaderValue::from_str(&name) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    resp
}

/// The CSV columns of an export.
pub(super) const CSV_COLUMNS: [&str; 11] = [
    "seq",
    "occurred_at",
    "recorded_at",
    "event_type",
    "user_id",
    "ip",
    "channel",
    "org_id",
    "log_id",
    "link_sha256",
    "metadata",
];

/// A CSV field: quoted, quotes doubled, and a leading `=`, `+`, `-`, `@`
/// neutralised so that a spreadsheet never evaluates it.
pub fn csv_field(v: &Value) -> String {
    let s = match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) && !v.is_number() {
        format!("'{s}")
    } else {
        s
    };
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// NDJSON events turned into CSV lines as they stream.
pub(super) fn csv_body(body: Body) -> Body {
    use futures_util::StreamExt;
    let header = format!("{}\r\n", CSV_COLUMNS.join(","));
    let stream = body.into_data_stream();
    let lines = futures_util::stream::unfold(
        (stream, Vec::<u8>::new(), Some(header), false),
        |(mut stream, mut buf, head, done)| async move {
            if let Some(h) = head {
                return Some((
                    Ok::<_, std::io::Error>(axum::body::Bytes::from(h)),
                    (stream, buf, None, done),
                ));
            }
            if done {
                return None;
            }
            let mut out = String::new();
            loop {
                match stream.next().await {
                    Some(Ok(chunk)) => {
                        buf.extend_from_slice(&chunk);
                        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                            let line: Vec<u8> = buf.drain(..=i).collect();
                            if let Ok(e) = serde_json::from_slice::<Value>(&line) {
                                let cells: Vec<String> =
                                    CSV_COLUMNS.iter().map(|k| csv_field(&e[*k])).collect();
                                out.push_str(&cells.join(","));
                                out.push_str("\r\n");
                            }
                        }
                        if !out.is_empty() {
                            return Some((
                                Ok(axum::body::Bytes::from(out)),
                                (stream, buf, None, false),
                            ));
                        }
                    }
                    Some(Err(e)) => {
                        return Some((
                            Err(std::io::Error::other(e.to_string())),
                            (stream, buf, None, true),
                        ));
                    }
                    None => return None,
                }
            }
        },
    );
    Body::from_stream(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_never_formulas() {
        assert_eq!(csv_field(&Value::from("a\"b")), "\"a\"\"b\"");
        assert_eq!(
            csv_field(&Value::from("=HYPERLINK(1)")),
            "\"'=HYPERLINK(1)\""
        );
        assert_eq!(csv_field(&Value::from(-3)), "\"-3\"");
        assert_eq!(csv_field(&Value::Null), "\"\"");
    }
}
