//! The v1 endpoints (docs/api.md). Every handler authenticates first, then
//! checks its parameters, then runs its statements in the caller's
//! transaction (`db`). What PostgreSQL returns as JSON text is passed
//! through unchanged, so numbers in metadata keep every digit.

use crate::db;
use crate::identity::{Caller, Verifier};
use crate::problem::ApiError;
use crate::query::{self, EventsQuery};
use axum::extract::{FromRequestParts, Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What every handler shares.
pub struct AppState {
    pub pool: deadpool_postgres::Pool,
    pub verifier: Verifier,
    pub statement_timeout: Duration,
    pub max_wait: u32,
}

/// The OpenAPI description of this API.
pub const OPENAPI: &str = include_str!("../openapi.json");

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/tenants/{tenant}/events", get(events))
        .route("/v1/tenants/{tenant}/events/{log_id}", get(event))
        .route("/v1/tenants/{tenant}/accounts/{user}", get(account))
        .route("/v1/tenants/{tenant}/verify", get(verify))
        .route(
            "/v1/tenants/{tenant}/investigation/{question}",
            get(investigation),
        )
        .fallback(|| async { ApiError::NotFound })
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

fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::from(crate::identity::IdentityError::Malformed))
        })
        .transpose()?;
    Ok(state.verifier.verify(value)?)
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

async fn openapi() -> Response {
    json(StatusCode::OK, OPENAPI.into())
}

async fn events(
    State(st): State<Arc<AppState>>,
    params: Params,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = authenticate(&st, &headers)?;
    let tenant = params.tenant()?.to_string();
    let q = query::parse_events(raw.as_deref(), st.max_wait)?;
    detached(async move {
        let deadline = Instant::now() + Duration::from_secs(u64::from(q.wait));
        let rows = loop {
            let rows = page(&st, &caller, &tenant, &q).await?;
            if !rows.is_empty() || Instant::now() >= deadline {
                break rows;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
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
    let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
        .iter()
        .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect();
    let rows = tx.query(&sql, &refs).await?;
    tx.commit().await?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
        .collect())
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
    let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
        .iter()
        .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect();
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
    let caller = authenticate(&st, &headers)?;
    let tenant = params.tenant()?.to_string();
    no_parameters(raw.as_deref())?;
    let log_id = params.get("log_id").to_string();
    if !is_uuid(&log_id) {
        return Err(ApiError::invalid("log_id", "must be a UUID"));
    }
    detached(async move {
        match one_json(st, caller, query::EVENT_BY_ID, vec![tenant, log_id]).await? {
            Some(body) => Ok(json(StatusCode::OK, body)),
            None => Err(ApiError::NotFound),
        }
    })
    .await
}

async fn account(
    State(st): State<Arc<AppState>>,
    params: Params,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = authenticate(&st, &headers)?;
    let tenant = params.tenant()?.to_string();
    no_parameters(raw.as_deref())?;
    let user = params.get("user").to_string();
    if user.is_empty() || user.len() > 1024 || user.contains('\0') {
        return Err(ApiError::invalid(
            "user",
            "must be 1 to 1024 bytes without NUL",
        ));
    }
    detached(async move {
        const SQL: &str = "SELECT jsonb_build_object(\
 'tenant_id', s.tenant_id, 'account', s.user_id, 'org_id', s.org_id,\
 'locked', s.locked, 'locked_at', s.locked_at, 'locked_until', s.locked_until,\
 'failure_count', s.failure_count, 'failures_since_success', s.failures_since_success,\
 'first_failure_at', s.first_failure_at, 'last_failure_at', s.last_failure_at,\
 'first_failure_ip', host(s.first_failure_ip), 'last_failure_ip', host(s.last_failure_ip),\
 'lock_count', s.lock_count, 'last_seq', s.last_seq, 'updated_at', s.updated_at)::text \
 FROM authaudit.lockout_state s WHERE s.tenant_id = $1::text \
 AND s.user_id = authaudit.account_key($1::text, $2::text)";
        match one_json(st, caller, SQL, vec![tenant, user]).await? {
            Some(body) => Ok(json(StatusCode::OK, body)),
            None => Err(ApiError::NotFound),
        }
    })
    .await
}

async fn verify(
    State(st): State<Arc<AppState>>,
    params: Params,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = authenticate(&st, &headers)?;
    let tenant = params.tenant()?.to_string();
    no_parameters(raw.as_deref())?;
    detached(async move {
        const SQL: &str = "SELECT to_jsonb(v)::text FROM authaudit.verify_chain($1::text) v";
        match one_json(st, caller, SQL, vec![tenant]).await? {
            Some(body) => Ok(json(StatusCode::OK, body)),
            None => Err(ApiError::NotFound),
        }
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
    let caller = authenticate(&st, &headers)?;
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
