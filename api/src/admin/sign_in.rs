//! Signing in and out: the OpenID Connect authorization code flow with
//! PKCE (`oidc`), sign-ins that hold nothing on the server until the
//! provider has authenticated someone (`session::SignIns`), and the
//! session that the callback opens.

use super::*;

pub(super) fn sign_in_page(status: StatusCode) -> Response {
    html(
        status,
        html::page(
            &html::Frame {
                title: "Sign in",
                tenant: None,
                who: None,
                current: "",
            },
            r#"<p>The authentication log of your organisation, for investigators and the help desk.</p><p><a class="button" href="/admin/login">Sign in with your identity provider</a></p>"#,
        ),
    )
}

pub(super) async fn login(State(admin): State<Arc<Admin>>) -> Response {
    let sign_in = admin.sign_ins.start();
    let url = oidc::authorize_url(
        &admin.cfg,
        &sign_in.state,
        &sign_in.nonce,
        &sign_in.verifier,
    );
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(&url) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(
        LOGIN_COOKIE,
        &sign_in.state,
        LOGIN_LIFETIME,
    )) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

pub(super) async fn callback(
    State(admin): State<Arc<Admin>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    match finish_sign_in(&admin, raw.as_deref(), &headers).await {
        Ok(id) => {
            let mut r = redirect("/admin/");
            let max_age = Duration::from_secs(admin.cfg.session_minutes * 60);
            for c in [
                session::set_cookie(SESSION_COOKIE, &id, max_age),
                session::clear_cookie(LOGIN_COOKIE),
            ] {
                if let Ok(v) = HeaderValue::from_str(&c) {
                    r.headers_mut().append(header::SET_COOKIE, v);
                }
            }
            r
        }
        Err(e) => {
            tracing::warn!(error = %e, "admin sign-in refused");
            let status = match e {
                oidc::SignInError::Full => StatusCode::SERVICE_UNAVAILABLE,
                oidc::SignInError::TokenEndpoint(_) => StatusCode::BAD_GATEWAY,
                oidc::SignInError::AccessToken(ref i) if i.is_forbidden() => StatusCode::FORBIDDEN,
                _ => StatusCode::BAD_REQUEST,
            };
            message(status, "Sign-in failed", &e.to_string())
        }
    }
}

async fn finish_sign_in(
    admin: &Admin,
    raw: Option<&str>,
    headers: &HeaderMap,
) -> Result<String, oidc::SignInError> {
    use oidc::SignInError as E;
    let pairs = crate::query::pairs(raw.unwrap_or("")).map_err(|_| E::UnknownState)?;
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let state = get("state").ok_or(E::UnknownState)?;
    let cookies = headers.get(header::COOKIE).and_then(|v| v.to_str().ok());
    // The browser that comes back must be the one that started the sign-in.
    if !session::cookie(cookies, LOGIN_COOKIE).is_some_and(|c| session::same_token(c, state)) {
        return Err(E::UnknownState);
    }
    let pending = admin.sign_ins.finish(state).ok_or(E::UnknownState)?;
    if let Some(error) = get("error") {
        let error = error
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(64)
            .collect();
        return Err(E::Refused(error));
    }
    let code = get("code").ok_or(E::Incomplete("an authorization code"))?;
    let tokens =
        oidc::exchange(&admin.cfg, admin.secret.as_deref(), code, &pending.verifier).await?;
    let id_token = tokens.id_token.ok_or(E::Incomplete("an ID token"))?;
    admin
        .st
        .verifier
        .verify_id_token(&id_token, &admin.cfg.client_id, &pending.nonce)
        .await
        .map_err(E::IdToken)?;
    let token = tokens
        .access_token
        .ok_or(E::Incomplete("an access token"))?;
    let caller = admin
        .st
        .verifier
        .verify(Some(&format!("Bearer {token}")))
        .await
        .map_err(E::AccessToken)?;
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let token_left = caller
        .claims
        .get("exp")
        .and_then(serde_json::Value::as_u64)
        .map_or(0, |exp| exp.saturating_sub(now_unix));
    let lifetime = Duration::from_secs(token_left.min(admin.cfg.session_minutes * 60));
    tracing::info!(role = %caller.role, "admin signed in");
    admin
        .sessions
        .open(Session {
            token,
            role: caller.role.clone(),
            subject: caller.subject.clone().unwrap_or_default(),
            csrf: session::random_token(),
            expires: Instant::now() + lifetime,
        })
        .ok_or(E::Full)
}

pub(super) async fn logout(
    State(admin): State<Arc<Admin>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let form = pages::form(&body);
    let cookies = headers.get(header::COOKIE).and_then(|v| v.to_str().ok());
    if let Some(id) = session::cookie(cookies, SESSION_COOKIE) {
        if let Some(s) = admin.sessions.get(id) {
            if !admin.form_is_ours(&headers, &s, pages::field(&form, "csrf")) {
                return message(
                    StatusCode::FORBIDDEN,
                    "Refused",
                    "This form did not come from this interface.",
                );
            }
            admin.sessions.close(id);
        }
    }
    let mut r = redirect("/admin/signed-out");
    if let Ok(v) = HeaderValue::from_str(&session::clear_cookie(SESSION_COOKIE)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

pub(super) async fn signed_out() -> Response {
    html(
        StatusCode::OK,
        html::page(
            &html::Frame {
                title: "Signed out",
                tenant: None,
                who: None,
                current: "",
            },
            r#"<p>You are signed out of this interface.</p><p><a class="button" href="/admin/login">Sign in again</a></p>"#,
        ),
    )
}
