//! Errors as RFC 9457 problem details (`application/problem+json`): a
//! type, a title, the status, a detail, and the parameter at fault. A
//! database error becomes its documented status with its SQLSTATE; its
//! message goes to the log, never to the client.

use crate::identity::IdentityError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// A parameter (path or query) is invalid.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("not found")]
    NotFound,
    /// The database refused the request (by SQLSTATE).
    #[error("database: {sqlstate}")]
    Database {
        sqlstate: String,
        status: StatusCode,
        detail: String,
    },
    /// The database cannot be reached or failed in a way that is not the
    /// caller's.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// Too many requests from one identity.
    #[error("too many requests: retry in {retry_after} s")]
    RateLimited { retry_after: u64 },
    /// A request body too large, or not what the endpoint takes.
    #[error("{0}")]
    Body(String),
    #[error("the body must be application/json")]
    UnsupportedMedia,
    #[error("the body is larger than this API accepts (limits.max_body_bytes)")]
    TooLarge,
    #[error("this endpoint does not take this method")]
    MethodNotAllowed,
    #[error("Accept names no format this endpoint answers in (application/json, application/x-ndjson, text/x-cef, application/x-ocsf+ndjson, application/x-ecs+ndjson, text/event-stream)")]
    NotAcceptable,
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ApiError {
        ApiError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Identity(e) if e.is_forbidden() => StatusCode::FORBIDDEN,
            ApiError::Identity(e) if e.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Identity(_) => StatusCode::UNAUTHORIZED,
            ApiError::Invalid { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Database { status, .. } => *status,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Body(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::UnsupportedMedia => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
        }
    }
}

/// How the database's refusals map to HTTP: SQLSTATE, status, and what the
/// caller is told (docs/api.md, "Errors"). A SQLSTATE not listed goes by
/// its class ([`SQLSTATE_CLASS_STATUS`]); any other is a 500 whose detail
/// says only that the database failed.
pub const SQLSTATE_STATUS: [(&str, u16, &str); 14] = [
    (
        "55000",
        409,
        "no signed checkpoint of the witness covers this event yet",
    ),
    (
        "42501",
        403,
        "the role of this token may not do this for this tenant or organisation",
    ),
    ("22023", 422, "the database refused a value of this request"),
    ("22P02", 422, "the database refused a value of this request"),
    ("22007", 422, "the database refused a time of this request"),
    ("22008", 422, "the database refused a time of this request"),
    ("22001", 422, "a value of this request is too long"),
    (
        "23505",
        409,
        "this log id was already recorded with other content",
    ),
    (
        "54000",
        422,
        "the request is larger than the database accepts",
    ),
    (
        "53300",
        503,
        "the database has no free connection; retry later",
    ),
    (
        "53400",
        503,
        "a configured limit of the database was reached; retry later",
    ),
    (
        "57014",
        503,
        "the request took longer than the statement timeout",
    ),
    ("40001", 503, "a concurrent change: retry the request"),
    ("40P01", 503, "a concurrent change: retry the request"),
];

/// The status of a SQLSTATE class (its first two characters) not listed in
/// [`SQLSTATE_STATUS`].
pub const SQLSTATE_CLASS_STATUS: [(&str, u16, &str); 6] = [
    ("22", 422, "the database refused a value of this request"),
    ("23", 409, "the request conflicts with what is recorded"),
    ("40", 503, "a concurrent change: retry the request"),
    ("53", 503, "the database is out of a resource; retry later"),
    ("54", 422, "the request is larger than the database accepts"),
    ("57", 503, "the database cancelled the request; retry later"),
];

/// The status of a database error's SQLSTATE, and what to tell the caller.
pub fn from_database(e: &tokio_postgres::Error) -> ApiError {
    let Some(db) = e.as_db_error() else {
        tracing::warn!(error = %e, "database connection error");
        return ApiError::Unavailable("the connection failed".into());
    };
    let code = db.code().code().to_string();
    let (status, detail) = SQLSTATE_STATUS
        .iter()
        .find(|(c, _, _)| *c == code)
        .or_else(|| {
            SQLSTATE_CLASS_STATUS
                .iter()
                .find(|(c, _, _)| code.starts_with(c))
        })
        .map_or((500, "the database failed"), |(_, s, d)| (*s, *d));
    tracing::warn!(sqlstate = %code, message = %db.message(), "database error");
    ApiError::Database {
        sqlstate: code,
        status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        detail: detail.into(),
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> ApiError {
        from_database(&e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (kind, title) = match &self {
            ApiError::Identity(e) if e.is_forbidden() => ("forbidden", "Forbidden"),
            ApiError::Identity(e) if e.is_unavailable() => ("unavailable", "Service unavailable"),
            ApiError::Identity(_) => ("unauthenticated", "Unauthenticated"),
            ApiError::Invalid { .. } => ("invalid-parameter", "Invalid parameter"),
            ApiError::NotFound => ("not-found", "Not found"),
            ApiError::Database { .. } if status == StatusCode::FORBIDDEN => {
                ("forbidden", "Forbidden")
            }
            ApiError::Database { .. } if status == StatusCode::UNPROCESSABLE_ENTITY => {
                ("refused", "Refused by the database")
            }
            ApiError::Database { .. } if status == StatusCode::CONFLICT => ("conflict", "Conflict"),
            ApiError::Database { .. } if status == StatusCode::INTERNAL_SERVER_ERROR => {
                ("internal", "Internal error")
            }
            ApiError::RateLimited { .. } => ("rate-limited", "Too many requests"),
            ApiError::Body(_) => ("invalid-body", "Invalid request body"),
            ApiError::UnsupportedMedia => ("unsupported-media-type", "Unsupported media type"),
            ApiError::TooLarge => ("too-large", "Request body too large"),
            ApiError::MethodNotAllowed => ("method-not-allowed", "Method not allowed"),
            ApiError::NotAcceptable => ("not-acceptable", "Not acceptable"),
            ApiError::Database { .. } | ApiError::Unavailable(_) => {
                ("unavailable", "Service unavailable")
            }
        };
        let mut body = json!({
            "type": format!("https://pg-authaudit.invalid/problems/{kind}"),
            "title": title,
            "status": status.as_u16(),
        });
        match &self {
            ApiError::Invalid { field, reason } => {
                body["detail"] = json!(format!("{field}: {reason}"));
                body["field"] = json!(field);
            }
            ApiError::Database {
                sqlstate, detail, ..
            } => {
                body["detail"] = json!(detail);
                body["sqlstate"] = json!(sqlstate);
            }
            ApiError::Unavailable(_) => {
                body["detail"] = json!("the database is unavailable; retry later");
            }
            other => body["detail"] = json!(other.to_string()),
        }
        let mut response = (status, body.to_string()).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let ApiError::RateLimited { retry_after } = &self {
            if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"authaudit\""),
            );
        }
        response
    }
}
