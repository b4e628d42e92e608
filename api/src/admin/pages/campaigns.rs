//! Campaigns: the detections over a period's attempts, grouped
//! (`authaudit_core::campaign`), ranked, filtered and paged.

use super::*;

/// The most events a campaign view or a report feeds the detections.
pub(super) const MAX_DETECTION_EVENTS: i64 = 200_000;

/// Campaigns a page lists.
pub(super) const CAMPAIGNS_PER_PAGE: usize = 20;

/// Alerts a few minutes apart still join one campaign.
pub(super) const CAMPAIGN_SLACK_MS: i64 = 5 * 60 * 1000;

/// The detections over `[from, to)` (Unix seconds), grouped as campaigns;
/// and whether the period held more events than the detections were fed.
pub(super) async fn detect(c: &Ctx, from: i64, to: i64) -> Result<(Vec<Campaign>, bool), Response> {
    let rows = c
        .rows(
            include_str!("../../../queries/overview/attempts.sql"),
            &[&c.tenant, &from, &to, &(MAX_DETECTION_EVENTS + 1)],
        )
        .await?;
    let capped = rows.len() as i64 > MAX_DETECTION_EVENTS;
    let mut d = Detector::new(Thresholds::default(), Default::default());
    let mut alerts = Vec::new();
    for r in rows.iter().take(MAX_DETECTION_EVENTS as usize) {
        let source: Option<String> = r.get(3);
        alerts.extend(d.observe(&Event {
            tenant: &c.tenant,
            seq: r.get(0),
            event_type: r.get(1),
            account: r.get(2),
            source: source.as_deref(),
            at_ms: r.get(4),
            preceding_failures: r.get(5),
            was_locked: r.get(6),
        }));
    }
    Ok((campaign::group(alerts, CAMPAIGN_SLACK_MS), capped))
}

/// Names (linked) of a set, the first `n` then how many more.
pub(super) fn some(items: impl Iterator<Item = String>, total: usize, n: usize) -> String {
    let shown: Vec<String> = items.take(n).collect();
    let more = total.saturating_sub(shown.len());
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// One line per campaign; `locks` counts lock events per account.
pub(super) fn campaign_table(
    c: &Ctx,
    campaigns: &[Campaign],
    locks: &HashMap<String, i64>,
) -> String {
    let rows: Vec<Vec<String>> = campaigns
        .iter()
        .map(|k| {
            let kinds: Vec<&str> = k.kinds.iter().map(|r| r.cef().1).collect();
            let n_locks: i64 = k.accounts.iter().filter_map(|a| locks.get(a)).sum();
            let mut detail = String::from("<details><summary>alerts</summary><ul>");
            for a in &k.alerts {
                let _ = write!(
                    detail,
                    "<li>{} {} – {}: {} accounts, {} sources, {} events (seq {}–{})</li>",
                    esc(a.rule.cef().1),
                    ms_time(a.first_ms),
                    ms_time(a.last_ms),
                    a.account_count,
                    a.source_count,
                    a.events,
                    a.first_seq,
                    a.last_seq
                );
            }
            detail.push_str("</ul></details>");
            vec![
                esc(&kinds.join(", ")),
                format!("{} – {}", ms_time(k.first_ms), ms_time(k.last_ms)),
                some(
                    k.accounts.iter().map(|a| account_link(&c.tenant, a)),
                    k.accounts_total(),
                    5,
                ),
                some(
                    k.sources.iter().map(|s| source_link(&c.tenant, s)),
                    k.sources_total(),
                    5,
                ),
                if locks.is_empty() {
                    k.storms.to_string()
                } else {
                    n_locks.to_string()
                },
                (k.successes_after_failures + k.successes_while_locked).to_string(),
                detail,
            ]
        })
        .collect();
    table(
        "Campaigns, most urgent first (successes while locked, then after failures, then size)",
        &[
            "kind",
            "period (UTC)",
            "accounts",
            "sources",
            "locks",
            "successes",
            "evidence",
        ],
        &rows,
    )
}

/// Lock events per account over a period (the lockout timeline).
pub(super) async fn locks_by_account(
    c: &Ctx,
    p: &Period,
) -> Result<(HashMap<String, i64>, Value), Response> {
    let timeline = c
        .api(&format!(
            "/investigation/lockout-timeline?{}",
            p.api_query()
        ))
        .await?;
    let mut locks = HashMap::new();
    for e in timeline.as_array().into_iter().flatten() {
        if e["event_type"] == "account_locked" {
            if let Some(u) = e["user_id"].as_str() {
                *locks.entry(u.to_string()).or_insert(0) += 1;
            }
        }
    }
    Ok((locks, timeline))
}

/// Campaigns of a period, ranked, filtered and paged.
pub async fn campaigns(
    State(admin): State<Arc<Admin>>,
    Path(p): TenantPath,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let c = ctx!(admin, p, headers);
    let q = query_pairs(raw.as_deref());
    let period = tri!(period(&q, 86_400));
    let kind = field(&q, "kind").unwrap_or("").to_string();
    let needle = field(&q, "q").unwrap_or("").trim().to_string();
    let page_no: usize = field(&q, "page")
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1);
    let (all, capped) = tri!(detect(&c, period.from, period.to).await);
    let (locks, _) = tri!(locks_by_account(&c, &period).await);
    let filtered: Vec<Campaign> = all
        .into_iter()
        .filter(|k| kind.is_empty() || k.kinds.iter().any(|r| r.as_str() == kind))
        .filter(|k| {
            needle.is_empty()
                || k.accounts.iter().any(|a| a.contains(needle.as_str()))
                || k.sources.iter().any(|s| s.contains(needle.as_str()))
        })
        .collect();
    let pages = filtered.len().div_ceil(CAMPAIGNS_PER_PAGE).max(1);
    let page_no = page_no.min(pages);
    let shown = &filtered
        [(page_no - 1) * CAMPAIGNS_PER_PAGE..(page_no * CAMPAIGNS_PER_PAGE).min(filtered.len())];
    let mut kinds =
        String::from(r#"<label>kind <select name="kind"><option value="">any</option>"#);
    for r in authaudit_core::detection::Rule::ALL {
        let _ = write!(
            kinds,
            r#"<option value="{}"{}>{}</option>"#,
            r.as_str(),
            if r.as_str() == kind { " selected" } else { "" },
            esc(r.cef().1)
        );
    }
    let _ = write!(
        kinds,
        r#"</select></label><label>account or source <input name="q" value="{}"></label>"#,
        esc(&needle)
    );
    let mut body = period.form(&format!("{}/campaigns", c.base()), &kinds);
    if capped {
        let _ = write!(
            body,
            r#"<p class="alarm">The period holds more than {MAX_DETECTION_EVENTS} attempts; the detections saw the first {MAX_DETECTION_EVENTS}. Choose a shorter period.</p>"#
        );
    }
    let _ = write!(
        body,
        "<p>{} campaigns; page {page_no} of {pages}.</p>",
        filtered.len()
    );
    body.push_str(&campaign_table(&c, shown, &locks));
    let link = |n: usize| {
        format!(
            "{}/campaigns?from={}&amp;to={}&amp;kind={}&amp;q={}&amp;page={n}",
            c.base(),
            attr_path(&period.from_text),
            attr_path(&period.to_text),
            attr_path(&kind),
            attr_path(&needle)
        )
    };
    body.push_str(r#"<nav class="pages" aria-label="Pages">"#);
    if page_no > 1 {
        let _ = write!(
            body,
            r#"<a href="{}" rel="prev">previous</a> "#,
            link(page_no - 1)
        );
    }
    if page_no < pages {
        let _ = write!(
            body,
            r#"<a href="{}" rel="next">next</a>"#,
            link(page_no + 1)
        );
    }
    body.push_str("</nav>");
    c.page("Campaigns", "campaigns", &body)
}
