//! The v1 endpoints (docs/api.md). Every handler authenticates first, then
//! checks its parameters, then runs its statements in the caller's
//! transaction (`db`). What PostgreSQL returns as JSON text is passed
//! through unchanged, so numbers in metadata keep every digit.

use crate::db;
use crate::identity::{Caller, Verifier};
use crate::limits::RateLimiter;
use crate::metrics::Metrics;
use crate::problem::ApiError;
use crate::query::{self, EventsQuery};
use authaudit_core::stored_event::StoredEvent;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::{FromRequestParts, Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What every handler shares.
pub struct AppState {
    pub pool: deadpool_postgres::Pool,
    pub verifier: Verifier,
    pub limiter: RateLimiter,
    pub metrics: Arc<Metrics>,
    pub statement_timeout: Duration,
    pub max_wait: u32,
    pub max_body: usize,
    /// Turns true when the server stops: open tails end.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

/// The OpenAPI description of this API.
pub const OPENAPI: &str = include_str!("../openapi.json");

pub fn router(state: Arc<AppState>) -> Router {
    let metrics = state.metrics.clone();
    let max_body = state.max_body;
    Router::new()
        .route("/healthz", get(health))
        .route("/v1/health", get(health))
        .route("/metrics", get(metrics_text))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/tenants/{tenant}/events", get(events).post(record))
        .route("/v1/tenants/{tenant}/events/{log_id}", get(event))
        .route("/v1/tenants/{tenant}/accounts/{user}", get(account))
        .route("/v1/tenants/{tenant}/accounts/{user}/reset", post(reset))
        .route("/v1/tenants/{tenant}/evidence/{seq}", get(evidence))
        .route("/v1/tenants/{tenant}/verify", get(verify))
        .route(
            "/v1/tenants/{tenant}/investigation/{question}",
            get(investigation),
        )
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            crate::metrics::observe,
        ))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// Path parameters, refused as a problem naming the parameter.
pub struct Params(HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Params, ApiError> {
        Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map(|Path(p)| Params(p))
            .map_err(|_| ApiError::invalid("path", "a path segment is not valid UTF-8"))
    }
}

/// A request body within the configured limit, refused as a problem.
pub struct Body(Bytes);

impl<S: Send + Sync> axum::extract::FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Body, ApiError> {
        Bytes::from_request(req, state)
            .await
            .map(Body)
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::TooLarge
                } else {
                    ApiError::Body("the body could not be read".into())
                }
            })
    }
}

impl Params {
    fn get(&self, name: &str) -> &str {
        self.0.get(name).map_or("", String::as_str)
    }

    /// The tenant, checked as the extension checks tenant ids.
    fn tenant(&self) -> Result<&str, ApiError> {
        let t = self.get("tenant");
        authaudit_core::event::check_scope_id("tenant", t)
            .map_err(|e| ApiError::invalid("tenant", e.to_string()))?;
        Ok(t)
    }
}

async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::from(crate::identity::IdentityError::Malformed))
        })
        .transpose()?;
    let caller = state.verifier.verify(value).await?;
    let who = format!(
        "{}\u{0}{}",
        caller.role,
        caller.subject.as_deref().unwrap_or("")
    );
    state
        .limiter
        .take(&who, Instant::now())
        .map_err(|retry_after| ApiError::RateLimited { retry_after })?;
    Ok(caller)
}

/// Runs a request's database work in a task of its own: a client that
/// disconnects does not cancel it halfway through its transaction.
async fn detached<F>(work: F) -> Result<Response, ApiError>
where
    F: std::future::Future<Output = Result<Response, ApiError>> + Send + 'static,
{
    match tokio::spawn(work).await {
        Ok(result) => result,
        Err(e) => {
            tracing::error!(error = %e, "request task failed");
            Err(ApiError::Unavailable("the request failed".into()))
        }
    }
}

fn json(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

async fn health(State(st): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let client = db::connection(&st.pool).await?;
    client
        .simple_query("SELECT 1")
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(json(StatusCode::OK, r#"{"status":"ok"}"#.into()))
}

async fn metrics_text(State(st): State<Arc<AppState>>) -> Response {
    let mut r = (StatusCode::OK, st.metrics.encode()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

async fn openapi() -> Response {
    json(StatusCode::OK, OPENAPI.into())
}

async fn events(
    State(st): State<Arc<AppState>>,
    params: Params,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = authenticate(&st, &headers).await?;
    let tenant = params.tenant()?.to_string();
    let q = query::parse_events(raw.as_deref(), st.max_wait)?;
    let format =
        query::Format::from_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()))
            .ok_or(ApiError::NotAcceptable)?;
    // Checked whatever the format; a tail resumes after it.
    let last_event_id = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<i64>().ok())
                .ok_or_else(|| ApiError::invalid("Last-Event-ID", "must be a seq"))?,
        ),
    };
    if format == query::Format::Sse {
        return tail(st, caller, tenant, q, last_event_id);
    }
    if format != query::Format::Json {
        return stream_events(st, caller, tenant, q, format).await;
    }
    detached(async move {
        let deadline = Instant::now() + Duration::from_secs(u64::from(q.wait));
        let rows = loop {
            let rows = page(&st, &caller, &tenant, &q).await?;
            if !rows.is_empty() || Instant::now() >= deadline {
                break rows;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        st.metrics.events_served.inc_by(rows.len() as u64);
        tracing::info!(role = %caller.role, tenant = %tenant, rows = rows.len(), after = ?q.after,
            since = ?q.since, until = ?q.until, user = q.user.is_some(), source = ?q.source.as_ref().map(ToString::to_string),
            event_type = ?q.event_type, "events read");
        let last = rows.last().map(|(_, seq)| *seq).or(q.after);
        let body = format!(
            "[{}]",
            rows.iter()
                .map(|(j, _)| j.as_str())
                .collect::<Vec<_>>()
                .join(",")
        );
        let mut response = json(StatusCode::OK, body);
        // Polling (no `until`): always a next link, from the last event
        // seen; a bounded window: one while pages are full.
        let next = match (&q.until, last) {
            (None, last) => Some(last.unwrap_or(0)),
            (Some(_), Some(last)) if rows.len() == q.limit as usize => Some(last),
            _ => None,
        };
        if let Some(after) = next {
            let link = format!(
                "</v1/tenants/{}/events?{}>; rel=\"next\"",
                query::encode(&tenant),
                query::next_query(&q, after)
            );
            if let Ok(v) = HeaderValue::from_str(&link) {
                response.headers_mut().insert(header::LINK, v);
            }
        }
        Ok(response)
    })
    .await
}

async fn page(
    st: &AppState,
    caller: &Caller,
    tenant: &str,
    q: &EventsQuery,
) -> Result<Vec<(String, i64)>, ApiError> {
    let (sql, params) = query::events_sql(tenant, q);
    let mut client = db::connection(&st.pool).await?;
    let tx = db::begin(&mut client, caller, true, st.statement_timeout).await?;
    let refs = sql_params(&params);
    let rows = tx.query(&sql, &refs).await?;
    tx.commit().await?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
        .collect())
}

/// A JSON answer, or 404 when there is none (absent, or not the caller's
/// to see: the two are not told apart).
fn found(body: Option<String>) -> Result<Response, ApiError> {
    body.map(|b| json(StatusCode::OK, b))
        .ok_or(ApiError::NotFound)
}

/// Text parameters as a statement takes them.
fn sql_params(params: &[String]) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
    params
        .iter()
        .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect()
}

/// A response whose body is what a producing task sends on `rx`.
fn streamed(
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
    content_type: &'static str,
) -> Response {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut r = axum::body::Body::from_stream(stream).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// Runs one statement that returns at most one JSON text, as the caller.
async fn one_json(
    st: Arc<AppState>,
    caller: Caller,
    sql: &'static str,
    params: Vec<String>,
) -> Result<Option<String>, ApiError> {
    let mut client = db::connection(&st.pool).await?;
    let tx = db::begin(&mut client, &caller, true, st.statement_timeout).await?;
    let refs = sql_params(&params);
    let row = tx.query_opt(sql, &refs).await?;
    tx.commit().await?;
    Ok(row.and_then(|r| r.get::<_, Option<String>>(0)))
}

async fn event(
    State(st): State<Arc<AppState>>,
    params: Params,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = authenticate(&st, &headers).await?;
    let tenant = params.tenant()?.to_string();
    no_parameters(raw.as_deref())?;
    let log_id = params.get("log_id").to_string();
    if !is_uuid(&log_id) {
        return Err(ApiError::invalid("log_id", "must be a UUID"));
    }
    detached(
        async move { found(one_json(st, caller, query::EVENT_BY_ID, vec![tenant, log_id]).await?) },
    )
    .await
}

async fn account(
    State(st): State<Arc<AppState>>,
    params: Params,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = authenticate(&st, &headers).await?;
    let tenant = params.tenant()?.to_string();
    no_parameters(raw.as_deref())?;
    let user = account_param(&params)?;
    detached(async move {
        const STATE: &str = "SELECT jsonb_build_object(\
 'tenant_id', s.tenant_id, 'account', s.user_id, 'org_id', s.org_id,\
 'locked', s.locked, 'locked_at', s.locked_at, 'locked_until', s.locked_until,\
 'failure_count', s.failure_count, 'failures_since_success', s.failures_since_success,\
 'first_failure_at', s.first_failure_at, 'last_failure_at', s.last_failure_at,\
 'first_failure_ip', host(s.first_failure_ip), 'last_failure_ip', host(s.last_failure_ip),\
 'lock_count', s.lock_count, 'last_seq', s.last_seq, 'updated_at', s.updated_at)::text \
 FROM authaudit.lockout_state s WHERE s.tenant_id = $1::text \
 AND s.user_id = authaudit.account_key($1::text, $2::text)";
        const CHECK: &str = "SELECT jsonb_build_object('allowed', c.allowed, 'reason', c.reason, \
 'retry_after', c.retry_after, 'account', authaudit.account_key($1::text, $2::text))::text \
 FROM authaudit.check_login($1::text, $2::text) c";
        let mut client = db::connection(&st.pool).await?;
        let tx = db::begin(&mut client, &caller, false, st.statement_timeout).await?;
        let parse = |text: String| serde_json::from_str::<serde_json::Value>(&text).ok();
        let state = tx
            .query_opt(STATE, &[&tenant, &user])
            .await?
            .and_then(|r| parse(r.get(0)));
        // `check_login`, for a role that may check logins (a writer of the
        // tenant); a reader's refusal is rolled back to the savepoint.
        tx.batch_execute("SAVEPOINT check_login").await?;
        let check = match tx.query_opt(CHECK, &[&tenant, &user]).await {
            Ok(row) => row.and_then(|r| parse(r.get(0))),
            Err(e)
                if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) =>
            {
                tx.batch_execute("ROLLBACK TO SAVEPOINT check_login")
                    .await?;
                None
            }
            Err(e) => return Err(e.into()),
        };
        tx.commit().await?;
        let mut body = match (state, &check) {
            (Some(state), _) => state,
            // Never failed: what check_login says is all there is.
            (None, Some(c)) => serde_json::json!({
                "tenant_id": tenant, "account": c["account"], "locked": false, "failure_count": 0,
            }),
            (None, None) => return Err(ApiError::NotFound),
        };
        if let Some(mut c) = check {
            if let Some(o) = c.as_object_mut() {
                o.remove("account");
            }
            body["check_login"] = c;
        }
        Ok(json(StatusCode::OK, body.to_string()))
    })
    .await
}

async fn verify(
    State(st): State<Arc<AppState>>,
    params: Params,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = authenticate(&st, &headers).await?;
    let tenant = params.tenant()?.to_string();
    no_parameters(raw.as_deref())?;
    detached(async move {
        const SQL: &str = "SELECT to_jsonb(v)::text FROM authaudit.verify_chain($1::text) v";
        found(one_json(st, caller, SQL, vec![tenant]).await?)
    })
    .await
}

/// The investigation questions, by path name: the SQL function of each.
pub const QUESTIONS: [(&str, &str); 5] = [
    (
        "targeted-accounts",
        "SELECT coalesce(json_agg(to_jsonb(t)), '[]')::text FROM authaudit.targeted_accounts($1::text, ($2::text)::timestamptz, ($3::text)::timestamptz) t",
    ),
    (
        "attack-sources",
        "SELECT coalesce(json_agg(to_jsonb(t)), '[]')::text FROM authaudit.attack_sources($1::text, ($2::text)::timestamptz, ($3::text)::timestamptz) t",
    ),
    (
        "lockout-timeline",
        "SELECT coalesce(json_agg(to_jsonb(t)), '[]')::text FROM authaudit.lockout_timeline($1::text, ($2::text)::timestamptz, ($3::text)::timestamptz) t",
    ),
    (
        "successes-after-failures",
        "SELECT coalesce(json_agg(to_jsonb(t)), '[]')::text FROM authaudit.successes_after_failures($1::text, ($2::text)::timestamptz, ($3::text)::timestamptz) t",
    ),
    (
        "compliance-summary",
        "SELECT coalesce(json_agg(to_jsonb(t)), '[]')::text FROM authaudit.compliance_summary($1::text, ($2::text)::timestamptz, ($3::text)::timestamptz) t",
    ),
];

async fn investigation(
    State(st): State<Arc<AppState>>,
    params: Params,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = authenticate(&st, &headers).await?;
    let tenant = params.tenant()?.to_string();
    let question = params.get("question");
    let Some((_, sql)) = QUESTIONS.iter().find(|(name, _)| *name == question) else {
        let names: Vec<&str> = QUESTIONS.iter().map(|(n, _)| *n).collect();
        return Err(ApiError::invalid(
            "question",
            format!("must be one of {}", names.join(", ")),
        ));
    };
    let (mut from, mut to) = (None, None);
    for (key, value) in query::pairs(raw.as_deref().unwrap_or(""))? {
        let slot = match key.as_str() {
            "" => return Err(ApiError::invalid("query", "a parameter without a name")),
            "from" => &mut from,
            "to" => &mut to,
            other => {
                return Err(ApiError::invalid(
                    query::printable(other),
                    "unknown parameter (expected from, to)",
                ))
            }
        };
        if slot.is_some() {
            return Err(ApiError::invalid(key, "given more than once"));
        }
        *slot = Some(query::timestamp(&key, value)?);
    }
    let from = from.ok_or_else(|| ApiError::invalid("from", "is required"))?;
    let to = to.ok_or_else(|| ApiError::invalid("to", "is required"))?;
    detached(async move {
        let body = one_json(st, caller, sql, vec![tenant, from, to]).await?;
        Ok(json(StatusCode::OK, body.unwrap_or_else(|| "[]".into())))
    })
    .await
}

fn no_parameters(raw: Option<&str>) -> Result<(), ApiError> {
    match query::pairs(raw.unwrap_or(""))?.first() {
        Some((k, _)) if k.is_empty() => {
            Err(ApiError::invalid("query", "a parameter without a name"))
        }
        Some((k, _)) => Err(ApiError::invalid(
            query::printable(k),
            "unknown parameter (this endpoint takes none)",
        )),
        None => Ok(()),
    }
}

/// A UUID in its canonical text form (any case).
pub fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Records events (`record_events`: checked, authorised, chained,
/// idempotent on `log_id`) as the caller's role.
async fn record(
    State(st): State<Arc<AppState>>,
    params: Params,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let caller = authenticate(&st, &headers).await?;
    let tenant = params.tenant()?.to_string();
    no_parameters(raw.as_deref())?;
    json_content(&headers)?;
    let (events, single) = crate::write::events_body(&body, &tenant)?;
    detached(async move {
        let mut client = db::connection(&st.pool).await?;
        let tx = db::begin(&mut client, &caller, false, st.statement_timeout).await?;
        let rows = tx
            .query(
                concat!(
                    "SELECT ",
                    crate::event_json!(),
                    " FROM authaudit.record_events(($1::text)::jsonb) l"
                ),
                &[&events],
            )
            .await?;
        tx.commit().await?;
        let rows: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        tracing::info!(role = %caller.role, tenant = %tenant, rows = rows.len(), "events recorded");
        let body = if single {
            rows.into_iter().next().unwrap_or_else(|| "null".into())
        } else {
            format!("[{}]", rows.join(","))
        };
        Ok(json(StatusCode::OK, body))
    })
    .await
}

/// A request body must be JSON.
fn json_content(headers: &HeaderMap) -> Result<(), ApiError> {
    let ok = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if ok {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMedia)
    }
}

/// A reset's body.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetBody {
    /// The help desk's ticket.
    ticket: String,
    /// Why the account is unlocked.
    reason: String,
    /// The account's organisation, for an organisation's writer.
    #[serde(default)]
    org_id: Option<String>,
}

/// Records a `lockout_reset` for the account, with the ticket, the reason
/// and the caller's identity in its metadata; idempotent on the
/// `Idempotency-Key` header.
async fn reset(
    State(st): State<Arc<AppState>>,
    params: Params,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let caller = authenticate(&st, &headers).await?;
    let tenant = params.tenant()?.to_string();
    no_parameters(raw.as_deref())?;
    let user = account_param(&params)?;
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::invalid(
                "Idempotency-Key",
                "the header is required: 1 to 255 printable ASCII characters",
            )
        })?
        .to_string();
    json_content(&headers)?;
    let b: ResetBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::Body(format!(
            "the body must be {{\"ticket\", \"reason\"[, \"org_id\"]}}: {}",
            body_error(&e)
        ))
    })?;
    for (field, value, max) in [("ticket", &b.ticket, 128), ("reason", &b.reason, 1024)] {
        if value.trim().is_empty() || value.len() > max || value.contains('\0') {
            return Err(ApiError::invalid(
                field,
                format!("must be 1 to {max} bytes, not blank"),
            ));
        }
    }
    if let Some(org) = &b.org_id {
        authaudit_core::event::check_scope_id("org_id", org)
            .map_err(|e| ApiError::invalid("org_id", e.to_string()))?;
    }
    let log_id = crate::write::reset_log_id(&tenant, &user, &caller.role, &key);
    let metadata = serde_json::json!({
        "ticket": b.ticket,
        "reason": b.reason,
        "idempotency_key": key,
        "operator": {
            "sub": caller.subject,
            "iss": caller.claims.get("iss"),
            "role": caller.role,
        },
    })
    .to_string();
    detached(async move {
        let mut client = db::connection(&st.pool).await?;
        let tx = db::begin(&mut client, &caller, false, st.statement_timeout).await?;
        let row = tx
            .query_one(
                concat!(
                    "SELECT ",
                    crate::event_json!(),
                    " FROM authaudit.record_event(log_id => ($1::text)::uuid, tenant_id => $2::text,",
                    " org_id => $3::text, event_type => 'lockout_reset', user_id => $4::text,",
                    " channel => 'api', metadata => ($5::text)::jsonb) l"
                ),
                &[&log_id, &tenant, &b.org_id, &user, &metadata],
            )
            .await?;
        tx.commit().await?;
        tracing::info!(role = %caller.role, tenant = %tenant, "lockout reset recorded");
        Ok(json(StatusCode::OK, row.get(0)))
    })
    .await
}

fn body_error(e: &serde_json::Error) -> String {
    match e.classify() {
        serde_json::error::Category::Data => e.to_string(),
        _ => "not valid JSON".into(),
    }
}

fn account_param(params: &Params) -> Result<String, ApiError> {
    let user = params.get("user");
    if user.is_empty() || user.len() > 1024 || user.contains('\0') {
        return Err(ApiError::invalid(
            "user",
            "must be 1 to 1024 bytes without NUL",
        ));
    }
    Ok(user.to_string())
}

/// The witnessed evidence of one event (`witnessed_evidence`), checkable
/// offline with tools/verify_evidence.py.
async fn evidence(
    State(st): State<Arc<AppState>>,
    params: Params,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = authenticate(&st, &headers).await?;
    let tenant = params.tenant()?.to_string();
    no_parameters(raw.as_deref())?;
    let seq = params.get("seq");
    let seq = seq
        .parse::<i64>()
        .ok()
        .filter(|s| *s >= 1 && seq.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| ApiError::invalid("seq", "must be a whole number from 1"))?
        .to_string();
    detached(async move {
        const SQL: &str = "SELECT authaudit.witnessed_evidence($1::text, ($2::text)::bigint)::text";
        found(one_json(st, caller, SQL, vec![tenant, seq]).await?)
    })
    .await
}

/// Streams every matching event (or `limit` of them) as NDJSON or CEF
/// lines, in one read-only transaction, with bounded memory: rows are
/// read from PostgreSQL only as fast as the client takes them. An error
/// after the first line aborts the response (the client sees an
/// incomplete body, never a silently short export).
async fn stream_events(
    st: Arc<AppState>,
    caller: Caller,
    tenant: String,
    q: EventsQuery,
    format: query::Format,
) -> Result<Response, ApiError> {
    use futures_util::StreamExt;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<(), ApiError>>();
    tokio::spawn(async move {
        let (sql, params) = query::events_sql_as(&tenant, &q, format);
        let mut client = match db::connection(&st.pool).await {
            Ok(c) => c,
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        let txn = match db::begin(&mut client, &caller, true, st.statement_timeout).await {
            Ok(t) => t,
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        let rows = match txn.query_raw(sql.as_str(), params.iter()).await {
            Ok(r) => r,
            Err(e) => {
                let _ = ready_tx.send(Err(e.into()));
                return;
            }
        };
        let _ = ready_tx.send(Ok(()));
        futures_util::pin_mut!(rows);
        let (mut n, mut buf) = (0u64, Vec::with_capacity(64 * 1024));
        while let Some(row) = rows.next().await {
            match row {
                Ok(r) => {
                    let line: String = r.get::<_, Option<String>>(0).unwrap_or_default();
                    let line = match format {
                        query::Format::Ocsf | query::Format::Ecs => {
                            match serde_json::from_str::<StoredEvent>(&line) {
                                Ok(e) if format == query::Format::Ocsf => {
                                    authaudit_core::ocsf::to_ocsf(&e, env!("CARGO_PKG_VERSION"))
                                }
                                Ok(e) => authaudit_core::ecs::to_ecs(&e),
                                Err(e) => {
                                    tracing::error!(error = %e, "a row could not be read for the export");
                                    let _ = tx
                                        .send(Err(std::io::Error::other("the export failed")))
                                        .await;
                                    return;
                                }
                            }
                        }
                        _ => line,
                    };
                    buf.extend_from_slice(line.as_bytes());
                    buf.push(b'\n');
                    n += 1;
                    if buf.len() >= 32 * 1024
                        && tx
                            .send(Ok(Bytes::from(std::mem::take(&mut buf))))
                            .await
                            .is_err()
                    {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "export failed");
                    let _ = tx
                        .send(Err(std::io::Error::other("the export failed")))
                        .await;
                    return;
                }
            }
        }
        if !buf.is_empty() && tx.send(Ok(Bytes::from(buf))).await.is_err() {
            return;
        }
        let _ = txn.commit().await;
        st.metrics.events_served.inc_by(n);
        tracing::info!(role = %caller.role, tenant = %tenant, rows = n, format = ?format, "events exported");
    });
    match ready_rx.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(ApiError::Unavailable("the export did not start".into())),
    }
    Ok(streamed(rx, format.content_type()))
}

/// How often a tail looks for new events.
const TAIL_POLL: Duration = Duration::from_millis(200);
/// A comment line sent on an idle tail, so proxies keep it open.
const TAIL_HEARTBEAT: Duration = Duration::from_secs(15);

/// A tail as server-sent events: every event after `after` (or the
/// `Last-Event-ID` a reconnecting client sends), then each new one within
/// [`TAIL_POLL`] of its commit, in seq order, each with `id: <seq>`. It
/// ends when the client leaves, when the token expires (reconnect with a
/// fresh one and `Last-Event-ID`: nothing is skipped or repeated), or when
/// the server stops.
fn tail(
    st: Arc<AppState>,
    caller: Caller,
    tenant: String,
    mut q: EventsQuery,
    last_event_id: Option<i64>,
) -> Result<Response, ApiError> {
    if q.until.is_some() {
        return Err(ApiError::invalid(
            "until",
            "a tail has no end: leave out until",
        ));
    }
    if let Some(id) = last_event_id {
        q.after = Some(id);
    }
    q.limit = query::MAX_LIMIT;
    let expires = caller
        .claims
        .get("exp")
        .and_then(serde_json::Value::as_i64)
        .unwrap_or(0);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let mut stopping = st.stopping.clone();
    tokio::spawn(async move {
        let mut quiet_since = Instant::now();
        let mut sent = 0u64;
        loop {
            let now_s = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            if now_s >= expires || *stopping.borrow() {
                break;
            }
            let rows = match page(&st, &caller, &tenant, &q).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(error = %e, "tail: a poll failed; ending the stream");
                    break;
                }
            };
            if let Some((_, last)) = rows.last() {
                q.after = Some(*last);
                let mut chunk = String::new();
                for (json, seq) in &rows {
                    chunk.push_str(&format!("id: {seq}\nevent: auth_event\ndata: {json}\n\n"));
                }
                sent += rows.len() as u64;
                st.metrics.events_served.inc_by(rows.len() as u64);
                if tx.send(Ok(Bytes::from(chunk))).await.is_err() {
                    break;
                }
                quiet_since = Instant::now();
                continue;
            }
            if quiet_since.elapsed() >= TAIL_HEARTBEAT {
                if tx
                    .send(Ok(Bytes::from_static(b": keep-alive\n\n")))
                    .await
                    .is_err()
                {
                    break;
                }
                quiet_since = Instant::now();
            }
            tokio::select! {
                () = tokio::time::sleep(TAIL_POLL) => {}
                _ = stopping.changed() => {}
                () = tx.closed() => break,
            }
        }
        tracing::info!(role = %caller.role, tenant = %tenant, rows = sent, "tail ended");
    });
    let mut r = streamed(rx, query::Format::Sse.content_type());
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(r)
}
