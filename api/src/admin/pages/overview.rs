//! The live overview: the security monitoring dashboard's panels, from
//! the rollup, the lockout state and the last hour's detections.

use super::*;

/// The live overview: the frame, and the panels `/live` refreshes.
pub async fn overview(
    State(admin): State<Arc<Admin>>,
    Path(p): TenantPath,
    headers: HeaderMap,
) -> Response {
    let c = ctx!(admin, p, headers);
    let panels = tri!(overview_panels(&c).await);
    let body = format!(
        r#"<p class="hint">Updated every 5 seconds; <a href="{}/">refresh</a>.</p><div id="live" data-live="{}/live" aria-live="polite">{panels}</div>"#,
        c.base(),
        c.base()
    );
    c.page("Overview", "overview", &body)
}

/// The overview's panels alone (the page's script polls this).
pub async fn overview_live(
    State(admin): State<Arc<Admin>>,
    Path(p): TenantPath,
    headers: HeaderMap,
) -> Response {
    let c = ctx!(admin, p, headers);
    respond(StatusCode::OK, tri!(overview_panels(&c).await))
}

pub(super) async fn overview_panels(c: &Ctx) -> Result<String, Response> {
    let t = &c.tenant;
    let minute_now = now_unix() / 60 * 60;
    let start = minute_now - 59 * 60;
    // Events per minute by type: the rollup of the last hour.
    // Every panel's statement in one transaction (the poll the api
    // benchmark measures).
    let [rates, day, locked, blocked, top_accounts, top_sources, chain]: [Vec<tokio_postgres::Row>;
        7] = c
        .rows_each(
            &[
                include_str!("../../../queries/overview/rates.sql"),
                include_str!("../../../queries/overview/baseline.sql"),
                include_str!("../../../queries/overview/locked.sql"),
                include_str!("../../../queries/overview/blocked.sql"),
                include_str!("../../../queries/overview/top_accounts.sql"),
                include_str!("../../../queries/overview/top_sources.sql"),
                include_str!("../../../queries/overview/chain.sql"),
            ],
            &[t],
        )
        .await?
        .try_into()
        .expect("one answer a statement");
    let mut by_type: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for r in &rates {
        let (m, ty, n): (i64, String, i64) = (r.get(0), r.get(1), r.get(2));
        let i = (m - start) / 60;
        if (0..60).contains(&i) {
            by_type.entry(ty).or_insert_with(|| vec![0; 60])[i as usize] += n;
        }
    }
    let series: Vec<Series> = by_type
        .iter()
        .map(|(ty, v)| Series {
            name: ty.clone(),
            class: type_class(ty),
            values: v.clone(),
        })
        .collect();
    let sum = |ty: &str, from: usize, to: usize| -> i64 {
        by_type.get(ty).map_or(0, |v| v[from..to].iter().sum())
    };
    let ratio = |f: i64, s: i64| {
        if f + s == 0 {
            None
        } else {
            Some(f as f64 / (f + s) as f64)
        }
    };
    let recent = ratio(sum("login_failed", 55, 60), sum("login_success", 55, 60));
    // The baseline: the last day's minutes in the rollup.
    // Without a day in the rollup yet, the hour's earlier minutes.
    let (baseline, baseline_of) = match day.first().and_then(|r| ratio(r.get(0), r.get(1))) {
        Some(b) => (Some(b), "the last day"),
        None => (
            ratio(sum("login_failed", 0, 55), sum("login_success", 0, 55)),
            "the hour before (the rollup holds no day yet)",
        ),
    };
    let pct = |r: Option<f64>| r.map_or("no logins".to_string(), |r| format!("{:.1} %", r * 100.0));
    let alarm = matches!((recent, baseline), (Some(r), Some(b)) if r > (b * 2.0).max(b + 0.2));
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<section class="panel wide" aria-labelledby="rates-h"><h2 id="rates-h">Events per minute, last hour</h2>{}<p class="legend">{}</p></section>"#,
        Chart {
            title: "Events per minute by type, last hour",
            start,
            step: 60,
            series: &series,
            markers: &[],
        }
        .svg("rates"),
        series
            .iter()
            .map(|s| format!(
                r#"<span class="key {}"></span>{} {}"#,
                s.class,
                esc(&s.name),
                s.values.iter().sum::<i64>()
            ))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let _ = write!(
        s,
        r#"<section class="panel" aria-labelledby="fr-h"><h2 id="fr-h">Failure rate</h2><p class="big{}">{}</p><p>of logins in the last 5 minutes, against <b>{}</b> over {baseline_of}{}</p></section>"#,
        if alarm { " alarm" } else { "" },
        pct(recent),
        pct(baseline),
        if alarm {
            ": <strong>well above its baseline</strong>"
        } else {
            ""
        }
    );
    // Locked accounts and blocked sources: the lockout state.
    let n_locked: i64 = locked.first().map_or(0, |r| r.get(4));
    let rows: Vec<Vec<String>> = locked
        .iter()
        .map(|r| {
            vec![
                account_link(t, &r.get::<_, String>(0)),
                esc(&short_time(&r.get::<_, String>(1))),
                esc(&short_time(&r.get::<_, String>(2))),
            ]
        })
        .collect();
    let _ = write!(
        s,
        r#"<section class="panel" aria-labelledby="lk-h"><h2 id="lk-h">Locked accounts: {n_locked}</h2>{}</section>"#,
        table(
            "The latest locks (at most 10)",
            &["account", "locked at", "until"],
            &rows
        )
    );
    let n_blocked: i64 = blocked.first().map_or(0, |r| r.get(3));
    let rows: Vec<Vec<String>> = blocked
        .iter()
        .map(|r| {
            vec![
                source_link(t, &r.get::<_, String>(0)),
                r.get::<_, i32>(1).to_string(),
                esc(&short_time(&r.get::<_, String>(2))),
            ]
        })
        .collect();
    let _ = write!(
        s,
        r#"<section class="panel" aria-labelledby="bl-h"><h2 id="bl-h">Blocked sources: {n_blocked}</h2>{}</section>"#,
        table(
            "The most failing blocked sources (at most 10)",
            &["source", "failures", "blocked until"],
            &rows
        )
    );
    let rows: Vec<Vec<String>> = top_accounts
        .iter()
        .map(|r| {
            let ip: String = r.get(2);
            vec![
                account_link(t, &r.get::<_, String>(0)),
                r.get::<_, i32>(1).to_string(),
                if ip.is_empty() {
                    String::new()
                } else {
                    source_link(t, &ip)
                },
            ]
        })
        .collect();
    let _ = write!(
        s,
        r#"<section class="panel" aria-labelledby="ta-h"><h2 id="ta-h">Top targeted accounts, last hour</h2>{}</section>"#,
        table(
            "Failures in the account's current run",
            &["account", "failures", "last source"],
            &rows
        )
    );
    let rows: Vec<Vec<String>> = top_sources
        .iter()
        .map(|r| {
            vec![
                source_link(t, &r.get::<_, String>(0)),
                r.get::<_, i32>(1).to_string(),
            ]
        })
        .collect();
    let _ = write!(
        s,
        r#"<section class="panel" aria-labelledby="ts-h"><h2 id="ts-h">Top sources, last hour</h2>{}</section>"#,
        table(
            "Failures in the source's current window",
            &["source", "failures"],
            &rows
        )
    );
    // The latest campaigns: the last hour's events through the detections.
    let campaigns = detect(c, now_unix() - 3600, now_unix() + 60).await?;
    let _ = write!(
        s,
        r#"<section class="panel wide" aria-labelledby="ca-h"><h2 id="ca-h">Campaigns, last hour: {}</h2>{}<p><a href="{}/campaigns">All campaigns</a></p></section>"#,
        campaigns.0.len(),
        campaign_table(c, &campaigns.0[..campaigns.0.len().min(5)], &HashMap::new()),
        c.base()
    );
    // The chain and its witness.
    let r = &chain[0];
    let head: Option<i64> = r.get(0);
    let cp: Option<i64> = r.get(1);
    let cp_at: Option<String> = r.get(2);
    let witnessed: Option<i64> = r.get(3);
    let witness_age: Option<i64> = r.get(4);
    let disagreements: i64 = r.get(5);
    let behind = match (head, witnessed) {
        (Some(h), Some(w)) => format!(
            "{} events behind the head, signed {} s ago",
            (h - w).max(0),
            witness_age.unwrap_or(0)
        ),
        (Some(_), None) => "no witness checkpoint yet".into(),
        _ => "nothing recorded yet".into(),
    };
    let _ = write!(
        s,
        r#"<section class="panel" aria-labelledby="ch-h"><h2 id="ch-h">Chain and witness</h2><dl><dt>head</dt><dd>seq {}</dd><dt>latest checkpoint</dt><dd>{}</dd><dt>mirror (witness)</dt><dd>{}</dd><dt>witness disagreements</dt><dd class="{}">{disagreements}</dd></dl><p><a href="{}/evidence">Verify the chain</a></p></section>"#,
        head.map_or("none".into(), |h| h.to_string()),
        match (cp, &cp_at) {
            (Some(seq), Some(at)) => format!("seq {seq} at {}", esc(&short_time(at))),
            _ => "none".into(),
        },
        esc(&behind),
        if disagreements > 0 { "alarm" } else { "" },
        c.base()
    );
    Ok(s)
}
