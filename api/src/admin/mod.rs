//! The admin interface (docs/admin.md): the investigation in a browser,
//! served under `/admin` by the API's process, with the API's identity
//! and scope.
//!
//! A browser signs in with OpenID Connect (`oidc`); its session holds the
//! access token (`session`), and every page runs as that token's role:
//! reads and the reset go through the API's own handlers (the same
//! checks, limits, problems and records as a client of `/v1`), and the
//! live overview's counts run as the same role under row-level security,
//! from the rollup and the lockout state, never a scan of the log.
//!
//! Every response carries a strict Content-Security-Policy (scripts and
//! styles from `/admin/static` only, nothing inline), is not cached and
//! cannot be framed; every form that changes something carries the
//! session's CSRF token and must come from the interface's own origin.

pub mod chart;
pub mod html;
pub mod oidc;
mod pages;
pub mod session;
mod sign_in;

use crate::config::Admin as AdminConfig;
use crate::identity::Caller;
use crate::routes::AppState;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use session::{Session, Sessions, SignIns, LOGIN_COOKIE, LOGIN_LIFETIME, SESSION_COOKIE};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The Content-Security-Policy of every page.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const CSS: &str = include_str!("static/admin.css");
const JS: &str = include_str!("static/admin.js");

/// What the interface's handlers share.
pub struct Admin {
    pub cfg: AdminConfig,
    secret: Option<String>,
    pub sessions: Sessions,
    sign_ins: SignIns,
    pub st: Arc<AppState>,
    /// The API's router: pages read and reset through it.
    api: Router,
    /// `scheme://host[:port]` of `redirect_uri`: where forms must come from.
    origin: String,
}

impl Admin {
    /// `secret` is the client secret's file content, if any.
    pub fn new(cfg: AdminConfig, secret: Option<String>, st: Arc<AppState>, api: Router) -> Admin {
        let origin = cfg
            .redirect_uri
            .parse::<axum::http::Uri>()
            .ok()
            .and_then(|u| Some(format!("{}://{}", u.scheme_str()?, u.authority()?)))
            .unwrap_or_default();
        Admin {
            sessions: Sessions::new(cfg.max_sessions),
            sign_ins: SignIns::new(),
            cfg,
            secret: secret.map(|s| s.trim().to_string()),
            st,
            api,
            origin,
        }
    }
}

/// The interface's routes, to merge beside the API's.
pub fn router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/admin", get(|| async { redirect("/admin/") }))
        .route("/admin/", get(pages::index))
        .route("/admin/login", get(sign_in::login))
        .route("/admin/callback", get(sign_in::callback))
        .route("/admin/logout", post(sign_in::logout))
        .route("/admin/signed-out", get(sign_in::signed_out))
        .route(
            "/admin/static/admin.css",
            get(|| async { asset(CSS, "text/css") }),
        )
        .route(
            "/admin/static/admin.js",
            get(|| async { asset(JS, "text/javascript") }),
        )
        .route("/admin/t/{tenant}/", get(pages::overview))
        .route("/admin/t/{tenant}/live", get(pages::overview_live))
        .route("/admin/t/{tenant}/campaigns", get(pages::campaigns))
        .route("/admin/t/{tenant}/search", get(pages::search))
        .route("/admin/t/{tenant}/export", get(pages::export))
        .route("/admin/t/{tenant}/accounts/{user}", get(pages::account))
        .route(
            "/admin/t/{tenant}/accounts/{user}/reset",
            post(pages::reset),
        )
        .route("/admin/t/{tenant}/sources/{ip}", get(pages::source))
        .route("/admin/t/{tenant}/report", get(pages::report))
        .route("/admin/t/{tenant}/evidence", get(pages::evidence))
        .route(
            "/admin/t/{tenant}/evidence/{seq}",
            get(pages::evidence_bundle),
        )
        .route(
            "/admin/t/{tenant}",
            get(
                |axum::extract::Path(t): axum::extract::Path<String>| async move {
                    redirect(&format!("/admin/t/{}/", crate::query::encode(&t)))
                },
            ),
        )
        // Every other path under /admin: a page, with the headers.
        .route(
            "/admin/{*rest}",
            axum::routing::any(|| async {
                message(StatusCode::NOT_FOUND, "Not found", "No such page.")
            }),
        )
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(admin)
}

async fn security_headers(req: Request<Body>, next: axum::middleware::Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    for (name, value) in [
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        // Nothing leaves for another origin; same-origin form posts keep
        // their `Origin` (under `no-referrer` a browser sends `null`).
        ("referrer-policy", "same-origin"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cache-control", "no-store"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    r
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// A 303 to `to` (a path of this interface).
pub fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// An HTML response.
pub fn html(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

/// A page that only says what went wrong.
pub fn message(status: StatusCode, title: &str, text: &str) -> Response {
    let body = format!(
        r#"<p class="message">{}</p><p><a href="/admin/">Back to the interface</a></p>"#,
        html::esc(text)
    );
    html(
        status,
        html::page(
            &html::Frame {
                title,
                tenant: None,
                who: None,
                current: "",
            },
            &body,
        ),
    )
}

/// A signed-in request: its session's cookie value, the session, and the
/// caller its token verifies as now.
pub struct SignedIn {
    pub id: String,
    pub session: Session,
    pub caller: Caller,
}

impl Admin {
    /// The request's session, or the response that sends the browser to
    /// sign in (an expired token ends its session).
    pub async fn signed_in(&self, headers: &HeaderMap) -> Result<SignedIn, Response> {
        let cookies = headers.get(header::COOKIE).and_then(|v| v.to_str().ok());
        let Some(id) = session::cookie(cookies, SESSION_COOKIE) else {
            return Err(sign_in::sign_in_page(StatusCode::UNAUTHORIZED));
        };
        let Some(session) = self.sessions.get(id) else {
            return Err(sign_in::sign_in_page(StatusCode::UNAUTHORIZED));
        };
        match self
            .st
            .verifier
            .verify(Some(&format!("Bearer {}", session.token)))
            .await
        {
            Ok(caller) => Ok(SignedIn {
                id: id.to_string(),
                session,
                caller,
            }),
            Err(e) if e.is_unavailable() => Err(message(
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                "The identity provider's keys cannot be read; try again shortly.",
            )),
            Err(_) => {
                self.sessions.close(id);
                Err(sign_in::sign_in_page(StatusCode::UNAUTHORIZED))
            }
        }
    }

    /// Whether a form post comes from this interface with its session's
    /// CSRF token: the `Origin` (or `Sec-Fetch-Site`) must be this origin,
    /// and `csrf` must match.
    pub fn form_is_ours(&self, headers: &HeaderMap, s: &Session, csrf: Option<&str>) -> bool {
        let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
        let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
        // `Origin: null` (a form posted under a no-referrer policy, or from
        // an opaque origin) counts only with `Sec-Fetch-Site: same-origin`.
        let same_origin = match (origin, site) {
            (Some("null"), site) => site == Some("same-origin"),
            (Some(o), _) => o == self.origin,
            (None, Some(site)) => site == "same-origin",
            (None, None) => true,
        };
        same_origin && csrf.is_some_and(|c| session::same_token(c, &s.csrf))
    }

    /// Calls the API's handler for `path_and_query` as the session's
    /// token: its status, headers and body.
    pub async fn api(
        &self,
        s: &Session,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> Response {
        use tower::ServiceExt;
        let mut req = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(header::AUTHORIZATION, format!("Bearer {}", s.token));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let Ok(req) = req.body(body.map(Body::from).unwrap_or_else(Body::empty)) else {
            return StatusCode::BAD_REQUEST.into_response();
        };
        match self.api.clone().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        }
    }

    /// [`Admin::api`] for a GET of JSON: the status and the parsed body.
    pub async fn api_json(
        &self,
        s: &Session,
        path_and_query: &str,
    ) -> (StatusCode, serde_json::Value) {
        let r = self
            .api(
                s,
                Method::GET,
                path_and_query,
                &[("accept", "application/json")],
                None,
            )
            .await;
        let status = r.status();
        let bytes = axum::body::to_bytes(r.into_body(), 64 * 1024 * 1024)
            .await
            .unwrap_or_default();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }
}
