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

    /// Several statements with the same parameters, in one transaction.
    async fn rows_each(
        &self,
        statements: &[&str],
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Vec<tokio_postgres::Row>>, Response> {
        queries(&self.admin, &self.who, statements, params).await
    }

    /// The first 1,000 events of the period whose `filter` (the API's
    /// `user` or `source`) is `value`, in seq order.
    async fn events_of(
        &self,
        filter: &str,
        value: &str,
        period: &Period,
    ) -> Result<Vec<Value>, Response> {
        let events = self
            .api(&format!(
                "/events?{filter}={}&since={}&until={}&limit=1000",
                encode(value),
                encode(&Period::rfc3339(period.from)),
                encode(&Period::rfc3339(period.to))
            ))
            .await?;
        Ok(events.as_array().cloned().unwrap_or_default())
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

/// The page for an API handler's refusal: the problem its body holds.
async fn problem_of(r: Response) -> Response {
    let status = r.status();
    let bytes = axum::body::to_bytes(r.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    problem_page(
        status,
        &serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// A request's query parameters (a malformed query reads as none: each
/// page checks the parameters it takes).
fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    crate::query::pairs(raw.unwrap_or("")).unwrap_or_default()
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
    Ok(queries(admin, who, &[sql], params).await?.remove(0))
}

/// Runs read-only statements with the same parameters as the session's
/// role, in one transaction: the rows of each.
async fn queries(
    admin: &Admin,
    who: &SignedIn,
    statements: &[&str],
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<Vec<tokio_postgres::Row>>, Response> {
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
    let mut answers = Vec::with_capacity(statements.len());
    for sql in statements {
        answers.push(tx.query(*sql, params).await.map_err(|e| {
            let status = crate::problem::from_database(&e).status();
            if status == StatusCode::FORBIDDEN {
                message(status, "Not in your scope", "Your role may not read this.")
            } else {
                unavailable(&e)
            }
        })?);
    }
    tx.commit().await.map_err(|e| unavailable(&e))?;
    Ok(answers)
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

/// `2026-12-07 18:14:39.123+00` as `2026-12-07 18:14:39`.
fn short_time(s: &str) -> String {
    s.replace('T', " ").chars().take(19).collect()
}

fn bad(field: &str, reason: &str) -> Response {
    message(
        StatusCode::BAD_REQUEST,
        "Invalid request",
        &format!("{field}: {reason}"),
    )
}

/// "all 8" or "20 of 27": how many of `n` a list of at most `shown` holds.
fn of(n: usize, shown: usize) -> String {
    if n <= shown {
        format!("all {n}")
    } else {
        format!("{shown} of {n}")
    }
}

mod account;
mod campaigns;
mod evidence;
mod overview;
mod period;
mod report;
mod search;
mod source;

pub(super) use account::{account, reset};
pub(super) use campaigns::campaigns;
pub(super) use evidence::{evidence, evidence_bundle};
pub(super) use overview::{overview, overview_live};
pub(super) use report::report;
pub(super) use search::{export, search};
pub(super) use source::source;

use campaigns::{campaign_table, detect, locks_by_account, MAX_DETECTION_EVENTS};
use period::{ms_time, parse_time, period, Period};
use search::{event_row, EVENT_COLUMNS};
