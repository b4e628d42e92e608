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
        }
    }
}

/// The status of a database error's SQLSTATE, and what to tell the caller.
pub fn from_database(e: &tokio_postgres::Error) -> ApiError {
    let Some(db) = e.as_db_error() else {
        return ApiError::Unavailable("the connection failed".into());
    };
    let code = db.code().code().to_string();
    let (status, detail) = match code.as_str() {
        "42501" => (
            StatusCode::FORBIDDEN,
            "the role of this token may not do this for this tenant",
        ),
        "22023" | "22P02" | "22007" | "22008" | "23514" => (
            StatusCode::BAD_REQUEST,
            "the database refused a value of this request",
        ),
        "57014" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the request took longer than the statement timeout",
        ),
        "40001" | "40P01" | "55P03" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "a concurrent change: retry the request",
        ),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "the database failed"),
    };
    tracing::warn!(sqlstate = %code, message = %db.message(), "database error");
    ApiError::Database {
        sqlstate: code,
        status,
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
            ApiError::Database { .. } if status == StatusCode::BAD_REQUEST => {
                ("invalid-parameter", "Invalid parameter")
            }
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
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"authaudit\""),
            );
        }
        response
    }
}
