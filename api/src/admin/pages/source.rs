//! A source: the accounts it tried, first and last seen, its block.

use super::*;

/// A source: the accounts it tried, first and last seen, its block.
pub async fn source(
    State(admin): State<Arc<Admin>>,
    Path(p): TenantPath,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let c = ctx!(admin, p, headers);
    let ip = param(&p, "ip");
    if ip.parse::<std::net::IpAddr>().is_err() {
        return bad("ip", "must be an IP address");
    }
    let q = query_pairs(raw.as_deref());
    let period = tri!(period(&q, 7 * 86_400));
    let list = tri!(c.events_of("source", &ip, &period).await);
    let block = tri!(
        c.rows(
            "SELECT failure_count, coalesce(blocked_until::text, ''), blocked_until > now() \
             FROM authaudit.lockout_ip_state WHERE tenant_id = $1 AND ip = $2::text::inet",
            &[&c.tenant, &ip],
        )
        .await
    );
    let mut accounts: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for e in &list {
        if let Some(u) = e["user_id"].as_str() {
            let a = accounts.entry(u.to_string()).or_default();
            if e["event_type"] == "login_failed" {
                a.0 += 1;
            } else if e["event_type"] == "login_success" {
                a.1 += 1;
            }
        }
    }
    let mut ranked: Vec<(&String, &(i64, i64))> = accounts.iter().collect();
    ranked.sort_by(|a, b| b.1 .1.cmp(&a.1 .1).then(b.1 .0.cmp(&a.1 .0)));
    let mut body = String::new();
    let blocked_now = block.first().and_then(|r| r.get::<_, Option<bool>>(2)) == Some(true);
    let _ = write!(
        body,
        r#"<section class="panel"><h2>Source {}</h2><dl><dt>first seen</dt><dd>{}</dd><dt>last seen</dt><dd>{}</dd><dt>accounts tried</dt><dd>{}</dd><dt>block</dt><dd class="{}">{}</dd></dl></section>"#,
        esc(&ip),
        list.first()
            .map_or(String::new(), |e| when(&e["occurred_at"])),
        list.last()
            .map_or(String::new(), |e| when(&e["occurred_at"])),
        accounts.len(),
        if blocked_now { "alarm" } else { "" },
        match block.first() {
            Some(r) if blocked_now => format!(
                "blocked until {} after {} failures",
                esc(&short_time(&r.get::<_, String>(1))),
                r.get::<_, i32>(0)
            ),
            Some(r) => format!(
                "not blocked ({} failures in its window)",
                r.get::<_, i32>(0)
            ),
            None => "never blocked".into(),
        }
    );
    body.push_str(&period.form(&format!("{}/sources/{}", c.base(), attr_path(&ip)), ""));
    let rows: Vec<Vec<String>> = ranked
        .iter()
        .map(|(u, (f, s))| vec![account_link(&c.tenant, u), f.to_string(), s.to_string()])
        .collect();
    body.push_str(&table(
        &format!(
            "Accounts tried, successes first ({} events{})",
            list.len(),
            if list.len() >= 1000 {
                ", the first 1000 of the period"
            } else {
                ""
            }
        ),
        &["account", "failures", "successes"],
        &rows,
    ));
    c.page(&format!("Source {ip}"), "search", &body)
}
