//! The interface's pages. Each signs the request in, checks that the
//! session's role is bound to the tenant (403 otherwise), then reads as
//! that role: through the API's handlers, or, for the overview's counts
//! and the lockout state, by statements under row-level security.
//!
//! A helper that cannot go on returns the page that says why as its
//! error (`Result<_, Response>`): the response is the error's meaning.
#![allow(clippy::result_large_err)]

use super::chart::{Chart, Marker, Series};
use super::html::{self, account_link, attr_path, cell, esc, source_link, table, when, Frame};
use super::{html as respond, message, redirect, Admin, SignedIn};
use crate::db;
use crate::query::encode;
use authaudit_core::campaign::{self, Campaign};
use authaudit_core::detection::{Detector, Event, Thresholds};
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::Arc;

/// The most events a campaign view or a report feeds the detections.
const MAX_DETECTION_EVENTS: i64 = 200_000;
/// Campaigns a page lists.
const CAMPAIGNS_PER_PAGE: usize = 20;
/// Alerts a few minutes apart still join one campaign.
const CAMPAIGN_SLACK_MS: i64 = 5 * 60 * 1000;

/// A form body's fields.
pub fn form(body: &str) -> Vec<(String, String)> {
    crate::query::pairs(body).unwrap_or_default()
}

/// A field of a form or query.
pub fn field<'a>(f: &'a [(String, String)], name: &str) -> Option<&'a str> {
    f.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// A tenant page's request: signed in and bound to the tenant.
struct Ctx {
    admin: Arc<Admin>,
    who: SignedIn,
    tenant: String,
    can_write: bool,
}

impl Ctx {
    async fn new(admin: Arc<Admin>, tenant: String, headers: &HeaderMap) -> Result<Ctx, Response> {
        let who = admin.signed_in(headers).await?;
        if authaudit_core::event::check_scope_id("tenant", &tenant).is_err() {
            return Err(message(
                StatusCode::NOT_FOUND,
                "Not found",
                "No such tenant.",
            ));
        }
        let rows = query(
            &admin,
            &who,
            "SELECT coalesce(bool_or(can_read), false), coalesce(bool_or(can_write), false) \
             FROM authaudit.tenant_scope WHERE tenant_id = $1",
            &[&tenant],
        )
        .await?;
        let (can_read, can_write) = rows.first().map_or((false, false), |r| {
            (r.get::<_, bool>(0), r.get::<_, bool>(1))
        });
        if !can_read {
            return Err(message(
                StatusCode::FORBIDDEN,
                "Not in your scope",
                "Your role is not bound to read this tenant.",
            ));
        }
        Ok(Ctx {
            admin,
            who,
            tenant,
            can_write,
        })
    }

    fn page(&self, title: &str, current: &str, body: &str) -> Response {
        respond(
            StatusCode::OK,
            html::page(
                &Frame {
                    title,
                    tenant: Some(&self.tenant),
                    who: Some((
                        &self.who.session.role,
                        &self.who.session.subject,
                        &self.who.session.csrf,
                    )),
                    current,
                },
                body,
            ),
        )
    }

    fn base(&self) -> String {
        format!("/admin/t/{}", attr_path(&self.tenant))
    }

    fn api_base(&self) -> String {
        format!("/v1/tenants/{}", encode(&self.tenant))
    }

    async fn rows(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, Response> {
        query(&self.admin, &self.who, sql, params).await
    }

    /// The API's JSON answer at `path` (under this tenant's `/v1/tenants/…`),
    /// or the page that says why there is none.
    async fn api(&self, path: &str) -> Result<Value, Response> {
        let (status, v) = self
            .admin
            .api_json(&self.who.session, &format!("{}{path}", self.api_base()))
            .await;
        if status.is_success() {
            Ok(v)
        } else {
            Err(problem_page(status, &v))
        }
    }
}

/// A page for an API problem: its title and detail (never more).
fn problem_page(status: StatusCode, problem: &Value) -> Response {
    let title = problem
        .get("title")
        .and_then(Value::as_str)
        .unwrap_or("Refused");
    let detail = problem
        .get("detail")
        .and_then(Value::as_str)
        .unwrap_or("The request was refused.");
    message(status, title, detail)
}

/// Runs one read-only statement as the session's role.
async fn query(
    admin: &Admin,
    who: &SignedIn,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<tokio_postgres::Row>, Response> {
    let unavailable = |e: &dyn std::fmt::Display| {
        tracing::warn!(error = %e, "admin page query failed");
        message(
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            "The database could not answer this page; try again shortly.",
        )
    };
    let mut client = db::connection(&admin.st.pool)
        .await
        .map_err(|e| unavailable(&e))?;
    let tx = db::begin(&mut client, &who.caller, true, admin.st.statement_timeout)
        .await
        .map_err(|e| unavailable(&e))?;
    let rows = tx.query(sql, params).await.map_err(|e| {
        let status = crate::problem::from_database(&e).status();
        if status == StatusCode::FORBIDDEN {
            message(status, "Not in your scope", "Your role may not read this.")
        } else {
            unavailable(&e)
        }
    })?;
    tx.commit().await.map_err(|e| unavailable(&e))?;
    Ok(rows)
}

/// The tenants the session's role may read.
pub async fn index(State(admin): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    let who = match admin.signed_in(&headers).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let rows = match query(
        &admin,
        &who,
        "SELECT tenant_id, string_agg(coalesce(org_id, 'all organisations'), ', ' ORDER BY org_id), \
         bool_or(can_write) FROM authaudit.tenant_scope WHERE can_read GROUP BY 1 ORDER BY 1",
        &[],
    )
    .await
    {
        Ok(r) => r,
        Err(r) => return r,
    };
    if rows.len() == 1 {
        let t: String = rows[0].get(0);
        return redirect(&format!("/admin/t/{}/", encode(&t)));
    }
    let list: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let t: String = r.get(0);
            vec![
                format!(r#"<a href="/admin/t/{}/">{}</a>"#, attr_path(&t), esc(&t)),
                esc(&r.get::<_, String>(1)),
                if r.get::<_, bool>(2) {
                    "read, reset"
                } else {
                    "read"
                }
                .into(),
            ]
        })
        .collect();
    respond(
        StatusCode::OK,
        html::page(
            &Frame {
                title: "Tenants",
                tenant: None,
                who: Some((&who.session.role, &who.session.subject, &who.session.csrf)),
                current: "tenants",
            },
            &table(
                "The tenants your role is bound to",
                &["tenant", "organisations", "may"],
                &list,
            ),
        ),
    )
}

type TenantPath = Path<HashMap<String, String>>;

fn param(p: &HashMap<String, String>, name: &str) -> String {
    p.get(name).cloned().unwrap_or_default()
}

macro_rules! ctx {
    ($admin:expr, $p:expr, $headers:expr) => {
        match Ctx::new($admin, param(&$p, "tenant"), &$headers).await {
            Ok(c) => c,
            Err(r) => return r,
        }
    };
}

macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(r) => return r,
        }
    };
}

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

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A series' CSS class by event type.
fn type_class(t: &str) -> &'static str {
    match t {
        "login_failed" => "s-fail",
        "login_success" => "s-ok",
        "account_locked" => "s-lock",
        "lockout_reset" | "account_unlocked" => "s-reset",
        "token_issued" => "s-token",
        _ => "s-other",
    }
}

async fn overview_panels(c: &Ctx) -> Result<String, Response> {
    let t = &c.tenant;
    let minute_now = now_unix() / 60 * 60;
    let start = minute_now - 59 * 60;
    // Events per minute by type: the rollup of the last hour.
    let rates = c
        .rows(
            "SELECT extract(epoch FROM minute)::int8, event_type, events::int8 \
             FROM authaudit.event_rates WHERE tenant_id = $1",
            &[t],
        )
        .await?;
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
    let day = c
        .rows(
            "SELECT coalesce(sum(events) FILTER (WHERE event_type = 'login_failed'), 0)::int8, \
             coalesce(sum(events) FILTER (WHERE event_type = 'login_success'), 0)::int8 \
             FROM authaudit.event_minutes WHERE tenant_id = $1 AND minute >= now() - interval '1 day'",
            &[t],
        )
        .await?;
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
    let locked = c
        .rows(
            "SELECT user_id, locked_at::text, coalesce(locked_until::text, 'until reset'), failure_count, \
             count(*) OVER ()::int8 FROM authaudit.lockout_state \
             WHERE tenant_id = $1 AND locked AND (locked_until IS NULL OR locked_until > now()) \
             ORDER BY locked_at DESC LIMIT 10",
            &[t],
        )
        .await?;
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
    let blocked = c
        .rows(
            "SELECT host(ip), failure_count, blocked_until::text, count(*) OVER ()::int8 \
             FROM authaudit.lockout_ip_state WHERE tenant_id = $1 AND blocked_until > now() \
             ORDER BY failure_count DESC LIMIT 10",
            &[t],
        )
        .await?;
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
    let top_accounts = c
        .rows(
            "SELECT user_id, failure_count, coalesce(host(last_failure_ip), '') FROM authaudit.lockout_state \
             WHERE tenant_id = $1 AND last_failure_at > now() - interval '1 hour' AND failure_count > 0 \
             ORDER BY failure_count DESC, user_id LIMIT 10",
            &[t],
        )
        .await?;
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
    let top_sources = c
        .rows(
            "SELECT host(ip), failure_count FROM authaudit.lockout_ip_state \
             WHERE tenant_id = $1 AND updated_at > now() - interval '1 hour' AND failure_count > 0 \
             ORDER BY failure_count DESC, ip LIMIT 10",
            &[t],
        )
        .await?;
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
    let chain = c
        .rows(
            "SELECT (SELECT max(seq) FROM authaudit.auth_log WHERE tenant_id = $1), \
             (SELECT seq FROM authaudit.checkpoints WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1), \
             (SELECT created_at::text FROM authaudit.checkpoints WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1), \
             (SELECT tree_size FROM authaudit.witness_checkpoints WHERE tenant_id = $1 ORDER BY tree_size DESC LIMIT 1), \
             (SELECT extract(epoch FROM now() - max(signed_at))::int8 FROM authaudit.witness_checkpoints WHERE tenant_id = $1), \
             (SELECT count(*) FROM authaudit.witness_disagreements WHERE tenant_id = $1)::int8",
            &[t],
        )
        .await?;
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

/// `2026-12-07 18:14:39.123+00` as `2026-12-07 18:14:39`.
fn short_time(s: &str) -> String {
    s.replace('T', " ").chars().take(19).collect()
}

/// The detections over `[from, to)` (Unix seconds), grouped as campaigns;
/// and whether the period held more events than the detections were fed.
async fn detect(c: &Ctx, from: i64, to: i64) -> Result<(Vec<Campaign>, bool), Response> {
    let rows = c
        .rows(
            "SELECT seq, event_type, user_id, host(ip), (extract(epoch FROM occurred_at) * 1000)::int8, \
             (metadata #>> '{_authaudit,lockout,preceding_failures}')::int4, \
             (metadata #>> '{_authaudit,lockout,was_locked}')::bool \
             FROM authaudit.auth_log WHERE tenant_id = $1 \
             AND occurred_at >= to_timestamp($2::int8) AND occurred_at < to_timestamp($3::int8) \
             AND event_type IN ('login_failed', 'login_success', 'account_locked') \
             ORDER BY seq LIMIT $4",
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

fn ms_time(ms: i64) -> String {
    let t = ms.div_euclid(1000);
    let (y, m, d) = authaudit_core::lockout_effect::civil_from_days(t.div_euclid(86_400));
    let r = t.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        r / 3600,
        r / 60 % 60,
        r % 60
    )
}

/// Names (linked) of a set, the first `n` then how many more.
fn some(items: impl Iterator<Item = String>, total: usize, n: usize) -> String {
    let shown: Vec<String> = items.take(n).collect();
    let more = total.saturating_sub(shown.len());
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// One line per campaign; `locks` counts lock events per account.
fn campaign_table(c: &Ctx, campaigns: &[Campaign], locks: &HashMap<String, i64>) -> String {
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

/// A period from `from` and `to` fields (`datetime-local` inputs or RFC
/// 3339, UTC): Unix seconds, RFC 3339 text, and the inputs' values.
struct Period {
    from: i64,
    to: i64,
    from_text: String,
    to_text: String,
}

fn parse_time(s: &str) -> Option<i64> {
    // YYYY-MM-DDTHH:MM[:SS][Z]
    let s = s.trim().trim_end_matches('Z');
    let (date, time) = s.split_once(['T', ' '])?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, mo, da) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':').map(|x| x.parse::<i64>().ok());
    let (h, mi) = (t.next()??, t.next()??);
    let sec = t.next().flatten().unwrap_or(0);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) || h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let days = days_from_civil(y, mo, da);
    Some(days * 86_400 + h * 3600 + mi * 60 + sec)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn input_time(t: i64) -> String {
    ms_time(t * 1000).replace(' ', "T")[..16].to_string()
}

fn period(q: &[(String, String)], default_span: i64) -> Result<Period, Response> {
    let now = now_unix() / 60 * 60 + 60;
    let to = match field(q, "to").filter(|s| !s.is_empty()) {
        Some(s) => parse_time(s).ok_or_else(|| bad("to", "a time as YYYY-MM-DDTHH:MM (UTC)"))?,
        None => now,
    };
    let from = match field(q, "from").filter(|s| !s.is_empty()) {
        Some(s) => parse_time(s).ok_or_else(|| bad("from", "a time as YYYY-MM-DDTHH:MM (UTC)"))?,
        None => to - default_span,
    };
    if from >= to {
        return Err(bad("from", "must be before to"));
    }
    if to - from > 31 * 86_400 {
        return Err(bad("from", "a period is at most 31 days"));
    }
    Ok(Period {
        from,
        to,
        from_text: input_time(from),
        to_text: input_time(to),
    })
}

impl Period {
    fn rfc3339(t: i64) -> String {
        format!("{}Z", ms_time(t * 1000).replace(' ', "T"))
    }

    fn api_query(&self) -> String {
        format!(
            "from={}&to={}",
            encode(&Period::rfc3339(self.from)),
            encode(&Period::rfc3339(self.to))
        )
    }

    fn form(&self, action: &str, extra: &str) -> String {
        format!(
            r#"<form class="filters" method="get" action="{action}"><label>from (UTC) <input type="datetime-local" name="from" value="{}"></label><label>to (UTC) <input type="datetime-local" name="to" value="{}"></label>{extra}<button type="submit">Show</button></form>"#,
            esc(&self.from_text),
            esc(&self.to_text)
        )
    }
}

fn bad(field: &str, reason: &str) -> Response {
    message(
        StatusCode::BAD_REQUEST,
        "Invalid request",
        &format!("{field}: {reason}"),
    )
}

/// Lock events per account over a period (the lockout timeline).
async fn locks_by_account(c: &Ctx, p: &Period) -> Result<(HashMap<String, i64>, Value), Response> {
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
    let q = crate::query::pairs(raw.as_deref().unwrap_or("")).unwrap_or_default();
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

/// The search form's fields: the API's `events` filters.
const SEARCH_FIELDS: [(&str, &str, &str); 8] = [
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
fn search_query(q: &[(String, String)]) -> String {
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
    let q = crate::query::pairs(raw.as_deref().unwrap_or("")).unwrap_or_default();
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
        &[
            "seq",
            "occurred (UTC)",
            "type",
            "account",
            "source",
            "channel",
            "detail",
        ],
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
fn detail(e: &Value) -> String {
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
    if let Some(f) = m["token_fingerprint"]
        .as_str()
        .or(m["fingerprint"].as_str())
    {
        parts.push(format!(
            "token {}",
            esc(&f.chars().take(16).collect::<String>())
        ));
    }
    parts.join(", ")
}

fn event_row(c: &Ctx, e: &Value) -> Vec<String> {
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
    let q = crate::query::pairs(raw.as_deref().unwrap_or("")).unwrap_or_default();
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
        let status = r.status();
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20)
            .await
            .unwrap_or_default();
        return problem_page(
            status,
            &serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        );
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
const CSV_COLUMNS: [&str; 11] = [
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
fn csv_body(body: Body) -> Body {
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

/// An account: its state, its timeline, and the reset.
pub async fn account(
    State(admin): State<Arc<Admin>>,
    Path(p): TenantPath,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let c = ctx!(admin, p, headers);
    let user = param(&p, "user");
    let q = crate::query::pairs(raw.as_deref().unwrap_or("")).unwrap_or_default();
    let period = tri!(period(&q, 7 * 86_400));
    let (status, state) = c
        .admin
        .api_json(
            &c.who.session,
            &format!("{}/accounts/{}", c.api_base(), encode(&user)),
        )
        .await;
    let events = tri!(
        c.api(&format!(
            "/events?user={}&since={}&until={}&limit=1000",
            encode(&user),
            encode(&Period::rfc3339(period.from)),
            encode(&Period::rfc3339(period.to))
        ))
        .await
    );
    let list = events.as_array().cloned().unwrap_or_default();
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
            super::session::random_token()
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
        &[
            "seq",
            "occurred (UTC)",
            "type",
            "account",
            "source",
            "channel",
            "detail",
        ],
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
fn at_from(at: &Value, ip: &Value) -> String {
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
    let status = r.status();
    let bytes = axum::body::to_bytes(r.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    problem_page(
        status,
        &serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

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
    let q = crate::query::pairs(raw.as_deref().unwrap_or("")).unwrap_or_default();
    let period = tri!(period(&q, 7 * 86_400));
    let events = tri!(
        c.api(&format!(
            "/events?source={}&since={}&until={}&limit=1000",
            encode(&ip),
            encode(&Period::rfc3339(period.from)),
            encode(&Period::rfc3339(period.to))
        ))
        .await
    );
    let list = events.as_array().cloned().unwrap_or_default();
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

/// The investigator's report for a period: printable.
pub async fn report(
    State(admin): State<Arc<Admin>>,
    Path(p): TenantPath,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let c = ctx!(admin, p, headers);
    let q = crate::query::pairs(raw.as_deref().unwrap_or("")).unwrap_or_default();
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

/// "all 8" or "20 of 27": how many of `n` a list of at most `shown` holds.
fn of(n: usize, shown: usize) -> String {
    if n <= shown {
        format!("all {n}")
    } else {
        format!("{shown} of {n}")
    }
}

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
        r#"<section class="panel wide"><h2>Chain verification</h2><p class="big {}">{}</p><p>{} rows checked{}.</p></section><section class="panel wide"><h2>One event's evidence</h2><form method="get" action="{}/evidence/bundle"><label>seq <input name="seq" inputmode="numeric" pattern="[0-9]+" required></label><button type="submit">Download the evidence bundle</button></form><p>The bundle holds the event, its chain links, a Merkle inclusion proof and the witness's signed checkpoint; check it offline with <code>tools/verify_evidence.py bundle.json</code>.</p></section>"#,
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
    let q = crate::query::pairs(raw.as_deref().unwrap_or("")).unwrap_or_default();
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

    #[test]
    fn times_parse_as_utc_and_round_trip() {
        let t = parse_time("2026-12-07T18:14").unwrap();
        assert_eq!(input_time(t), "2026-12-07T18:14");
        assert_eq!(parse_time("2026-12-07T18:14:09Z"), Some(t + 9));
        for bad in [
            "",
            "2026-13-01T00:00",
            "x",
            "2026-12-07",
            "2026-12-07T24:00",
        ] {
            assert!(parse_time(bad).is_none(), "{bad}");
        }
    }
}
