//! An account: its lockout state, its timeline and sources, and the help
//! desk's reset (through the API).

use super::*;

/// An account: its state, its timeline, and the reset.
pub async fn account(
    State(admin): State<Arc<Admin>>,
    Path(p): TenantPath,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let c = ctx!(admin, p, headers);
    let user = param(&p, "user");
    let q = query_pairs(raw.as_deref());
    let period = tri!(period(&q, 7 * 86_400));
    let (status, state) = c
        .admin
        .api_json(
            &c.who.session,
            &format!("{}/accounts/{}", c.api_base(), encode(&user)),
        )
        .await;
    let list = tri!(c.events_of("user", &user, &period).await);
    if status == StatusCode::NOT_FOUND && list.is_empty() {
        // Absent and not visible are not told apart.
        return message(
            StatusCode::FORBIDDEN,
            "Not in your scope",
            "Nothing of this account is visible to your role.",
        );
    }
    if !status.is_success() && status != StatusCode::NOT_FOUND {
        return problem_page(status, &state);
    }
    let mut body = String::new();
    if field(&q, "reset") == Some("1") {
        body.push_str(r#"<p class="notice" role="status">The reset is recorded in the chain.</p>"#);
    }
    let locked = state["locked"].as_bool() == Some(true);
    let _ = write!(
        body,
        r#"<section class="panel" aria-labelledby="st-h"><h2 id="st-h">Lockout state</h2><dl><dt>state</dt><dd class="{}">{}</dd><dt>failures in the current run</dt><dd>{}</dd><dt>first failure of the run</dt><dd>{}</dd><dt>last failure</dt><dd>{}</dd><dt>locks</dt><dd>{}</dd><dt>organisation</dt><dd>{}</dd></dl>{}</section>"#,
        if locked { "alarm" } else { "" },
        if locked {
            format!(
                "locked since {} until {}",
                when(&state["locked_at"]),
                if state["locked_until"].is_null() {
                    "reset".into()
                } else {
                    when(&state["locked_until"])
                }
            )
        } else {
            "not locked".into()
        },
        cell(&state["failure_count"]),
        at_from(&state["first_failure_at"], &state["first_failure_ip"]),
        at_from(&state["last_failure_at"], &state["last_failure_ip"]),
        cell(&state["lock_count"]),
        cell(&state["org_id"]),
        match state.get("check_login") {
            Some(cl) => format!(
                "<p>A login now would be <b>{}</b>{}.</p>",
                if cl["allowed"].as_bool() == Some(true) {
                    "allowed"
                } else {
                    "refused"
                },
                cl["reason"]
                    .as_str()
                    .map_or(String::new(), |r| format!(" ({})", esc(r)))
            ),
            None => String::new(),
        }
    );
    let policy = tri!(
        c.rows(
            "SELECT max_failures, failure_window::text, lock_duration::text, enabled \
             FROM authaudit.lockout_policy WHERE tenant_id = $1",
            &[&c.tenant],
        )
        .await
    );
    let _ = write!(
        body,
        "<p>Lockout policy: {}.</p>",
        match policy.first() {
            Some(r) if r.get::<_, bool>(3) => format!(
                "{} failures within {} lock the account for {} at first",
                r.get::<_, i32>(0),
                esc(&r.get::<_, String>(1)),
                esc(&r.get::<_, String>(2))
            ),
            Some(_) => "disabled for this tenant".into(),
            None => "the defaults of docs/lockout.md".into(),
        }
    );
    if c.can_write {
        let _ = write!(
            body,
            r#"<section class="panel" aria-labelledby="rs-h"><h2 id="rs-h">Reset the lockout</h2><form method="post" action="{}/accounts/{}/reset"><input type="hidden" name="csrf" value="{}"><input type="hidden" name="key" value="{}"><label>ticket <input name="ticket" required maxlength="128"></label><label>reason <input name="reason" required maxlength="1024"></label><button type="submit">Record a reset</button></form></section>"#,
            c.base(),
            attr_path(&user),
            esc(&c.who.session.csrf),
            crate::admin::session::random_token()
        );
    }
    // The timeline, with the sources seen.
    let mut sources: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for e in &list {
        if let Some(ip) = e["ip"].as_str() {
            let s = sources.entry(ip.to_string()).or_default();
            if e["event_type"] == "login_failed" {
                s.0 += 1;
            } else if e["event_type"] == "login_success" {
                s.1 += 1;
            }
        }
    }
    body.push_str(&period.form(&format!("{}/accounts/{}", c.base(), attr_path(&user)), ""));
    let rows: Vec<Vec<String>> = list.iter().rev().map(|e| event_row(&c, e)).collect();
    body.push_str(&table(
        &format!(
            "Timeline, newest first ({} events{})",
            list.len(),
            if list.len() >= 1000 {
                ", the first 1000 of the period"
            } else {
                ""
            }
        ),
        &EVENT_COLUMNS,
        &rows,
    ));
    let src_rows: Vec<Vec<String>> = sources
        .iter()
        .map(|(ip, (f, s))| vec![source_link(&c.tenant, ip), f.to_string(), s.to_string()])
        .collect();
    body.push_str(&table(
        "Sources of the period",
        &["source", "failures", "successes"],
        &src_rows,
    ));
    c.page(&format!("Account {user}"), "search", &body)
}

/// "time from source", or "none".
pub(super) fn at_from(at: &Value, ip: &Value) -> String {
    match (at.as_str(), ip.as_str()) {
        (None, _) => "none".into(),
        (Some(_), Some(ip)) => format!("{} from {}", when(at), esc(ip)),
        (Some(_), None) => when(at),
    }
}

/// Records a reset through the API, with the ticket and the reason.
pub async fn reset(
    State(admin): State<Arc<Admin>>,
    Path(p): TenantPath,
    headers: HeaderMap,
    body: String,
) -> Response {
    let c = ctx!(admin, p, headers);
    let user = param(&p, "user");
    let f = form(&body);
    if !c
        .admin
        .form_is_ours(&headers, &c.who.session, field(&f, "csrf"))
    {
        return message(
            StatusCode::FORBIDDEN,
            "Refused",
            "This form did not come from this interface (CSRF check).",
        );
    }
    let key = field(&f, "key").unwrap_or("").to_string();
    let (_, state) = c
        .admin
        .api_json(
            &c.who.session,
            &format!("{}/accounts/{}", c.api_base(), encode(&user)),
        )
        .await;
    let json = serde_json::json!({
        "ticket": field(&f, "ticket").unwrap_or(""),
        "reason": field(&f, "reason").unwrap_or(""),
        "org_id": state.get("org_id").filter(|o| o.is_string()),
    });
    let r = c
        .admin
        .api(
            &c.who.session,
            Method::POST,
            &format!("{}/accounts/{}/reset", c.api_base(), encode(&user)),
            &[
                ("content-type", "application/json"),
                ("idempotency-key", &key),
            ],
            Some(json.to_string()),
        )
        .await;
    if r.status().is_success() {
        return redirect(&format!(
            "/admin/t/{}/accounts/{}?reset=1",
            encode(&c.tenant),
            encode(&user)
        ));
    }
    problem_of(r).await
}
