//! The investigator's period report, printable.

use super::*;

/// The investigator's report for a period: printable.
pub async fn report(
    State(admin): State<Arc<Admin>>,
    Path(p): TenantPath,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let c = ctx!(admin, p, headers);
    let q = query_pairs(raw.as_deref());
    let period = tri!(period(&q, 86_400));
    let pq = period.api_query();
    let accounts = tri!(
        c.api(&format!("/investigation/targeted-accounts?{pq}"))
            .await
    );
    let sources = tri!(c.api(&format!("/investigation/attack-sources?{pq}")).await);
    let successes = tri!(
        c.api(&format!("/investigation/successes-after-failures?{pq}"))
            .await
    );
    let summary = tri!(
        c.api(&format!("/investigation/compliance-summary?{pq}"))
            .await
    );
    let (locks, timeline) = tri!(locks_by_account(&c, &period).await);
    let verify = tri!(c.api("/verify").await);
    let (campaigns, capped) = tri!(detect(&c, period.from, period.to).await);
    // Failures per minute (or per hour over long periods), from the log's
    // time index over the period.
    let step: i64 = if period.to - period.from > 2 * 86_400 {
        3600
    } else {
        60
    };
    let buckets = ((period.to - period.from) / step).max(1) as usize;
    let per = tri!(
        c.rows(
            "SELECT ((extract(epoch FROM occurred_at)::int8 - $2) / $4)::int8, count(*)::int8 \
             FROM authaudit.auth_log WHERE tenant_id = $1 AND event_type = 'login_failed' \
             AND occurred_at >= to_timestamp($2::int8) AND occurred_at < to_timestamp($3::int8) GROUP BY 1",
            &[&c.tenant, &period.from, &period.to, &step],
        )
        .await
    );
    let mut values = vec![0i64; buckets];
    for r in &per {
        let (i, n): (i64, i64) = (r.get(0), r.get(1));
        if let Some(v) = values.get_mut(i as usize) {
            *v += n;
        }
    }
    let markers: Vec<Marker> = timeline
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let at = parse_time(e["occurred_at"].as_str()?.get(..19)?)?;
            let locked = e["event_type"] == "account_locked";
            Some(Marker {
                at,
                class: if locked { "m-lock" } else { "m-reset" },
                label: format!(
                    "{} {}",
                    if locked { "lock" } else { "reset" },
                    e["user_id"].as_str().unwrap_or("")
                ),
            })
        })
        .collect();
    let series = [Series {
        name: "login_failed".into(),
        class: "s-fail",
        values,
    }];
    let mut body = period.form(
        &format!("{}/report", c.base()),
        r#"<button type="button" class="print" data-print hidden>Print</button>"#,
    );
    let total: i64 = summary
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["events"].as_i64())
        .sum();
    let _ = write!(
        body,
        r#"<section class="panel wide"><h2>Summary</h2><p>Tenant <b>{}</b>, {} to {} UTC: {total} events; {} accounts targeted, {} sources, {} lockouts, {} successes after failures, {} campaigns.</p><p class="{}">Chain verification: <b>{}</b>, {} rows checked{}.</p></section>"#,
        esc(&c.tenant),
        esc(&period.from_text.replace('T', " ")),
        esc(&period.to_text.replace('T', " ")),
        accounts.as_array().map_or(0, Vec::len),
        sources.as_array().map_or(0, Vec::len),
        locks.values().sum::<i64>(),
        successes.as_array().map_or(0, Vec::len),
        campaigns.len(),
        if verify["ok"].as_bool() == Some(true) {
            ""
        } else {
            "alarm"
        },
        if verify["ok"].as_bool() == Some(true) {
            "intact"
        } else {
            "FAILED"
        },
        cell(&verify["rows_checked"]),
        verify["reason"]
            .as_str()
            .map_or(String::new(), |r| format!(" ({})", esc(r))),
    );
    let cp = tri!(
        c.rows(
            "SELECT seq, encode(link_sha256, 'hex'), created_at::text FROM authaudit.checkpoints \
             WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1",
            &[&c.tenant],
        )
        .await
    );
    if let Some(r) = cp.first() {
        let _ = write!(
            body,
            r#"<p>The latest checkpoint proves the chain up to seq <b>{}</b> (link <code>{}</code>, {} UTC).</p>"#,
            r.get::<_, i64>(0),
            esc(&r.get::<_, String>(1)),
            esc(&short_time(&r.get::<_, String>(2)))
        );
    }
    let _ = write!(
        body,
        r#"<section class="panel wide"><h2>Failures per {}</h2>{}</section>"#,
        if step == 60 { "minute" } else { "hour" },
        Chart {
            title: "Failed logins over the period, with lockouts and resets",
            start: period.from,
            step,
            series: &series,
            markers: &markers,
        }
        .svg("fails")
    );
    if capped {
        let _ = write!(
            body,
            r#"<p class="alarm">The detections saw the first {MAX_DETECTION_EVENTS} attempts of the period.</p>"#
        );
    }
    body.push_str(&campaign_table(
        &c,
        &campaigns[..campaigns.len().min(10)],
        &locks,
    ));
    let acc_rows: Vec<Vec<String>> = accounts
        .as_array()
        .into_iter()
        .flatten()
        .take(20)
        .map(|a| {
            vec![
                account_link(&c.tenant, a["user_id"].as_str().unwrap_or("")),
                cell(&a["failures"]),
                cell(&a["distinct_ips"]),
                cell(&a["locks"]),
                if a["locked_now"].as_bool() == Some(true) {
                    "locked".into()
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    body.push_str(&table(
        &format!(
            "Top targeted accounts (20 of {})",
            accounts.as_array().map_or(0, Vec::len)
        ),
        &["account", "failures", "sources", "locks", "now"],
        &acc_rows,
    ));
    let src_rows: Vec<Vec<String>> = sources
        .as_array()
        .into_iter()
        .flatten()
        .take(20)
        .map(|s| {
            vec![
                source_link(
                    &c.tenant,
                    s["ip"]
                        .as_str()
                        .unwrap_or("")
                        .split('/')
                        .next()
                        .unwrap_or(""),
                ),
                cell(&s["failures"]),
                cell(&s["distinct_accounts"]),
                when(&s["first_seen"]),
                when(&s["last_seen"]),
            ]
        })
        .collect();
    body.push_str(&table(
        &format!(
            "Top sources (20 of {})",
            sources.as_array().map_or(0, Vec::len)
        ),
        &["source", "failures", "accounts", "first seen", "last seen"],
        &src_rows,
    ));
    let mut succ: Vec<&Value> = successes.as_array().into_iter().flatten().collect();
    succ.sort_by(|a, b| {
        (b["while_locked"].as_bool() == Some(true))
            .cmp(&(a["while_locked"].as_bool() == Some(true)))
            .then(
                b["preceding_failures"]
                    .as_i64()
                    .cmp(&a["preceding_failures"].as_i64()),
            )
    });
    let succ_rows: Vec<Vec<String>> = succ
        .iter()
        .take(20)
        .map(|s| {
            vec![
                when(&s["occurred_at"]),
                account_link(&c.tenant, s["user_id"].as_str().unwrap_or("")),
                cell(&s["ip"]),
                cell(&s["preceding_failures"]),
                if s["while_locked"].as_bool() == Some(true) {
                    "<strong>while locked</strong>".into()
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    body.push_str(&table(
        &format!(
            "Successes after failures, while locked and most failures first ({})",
            of(succ.len(), 20)
        ),
        &["at (UTC)", "account", "source", "failures before", ""],
        &succ_rows,
    ));
    c.page("Period report", "report", &body)
}
