//! `/login` and `/logout`: signing in with a bearer token kept in a cookie, and signing out.

use axum::extract::{Form, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Redirect, Response};
use serde::Deserialize;

use super::{PageError, PageResult, render, signed_in};
use crate::registry::app::SharedState;
use crate::registry::auth::{cross_site_form, find_token, login_cookie};

pub(super) async fn login_page(State(state): State<SharedState>, headers: HeaderMap) -> PageResult {
    let user = signed_in(&state, &headers).await;
    Ok(render(
        "login.html",
        minijinja::context! { title => "Log in", user },
    )?
    .into_response())
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    token: String,
}

/// Checks the token and keeps it in an HttpOnly, SameSite=Strict cookie. Refused when posted
/// from another site (login CSRF).
pub(super) async fn login(
    State(state): State<SharedState>,
    parts: Parts,
    Form(form): Form<LoginForm>,
) -> PageResult {
    let public_url = state.config.public_url.as_ref();
    if let Some(why) = cross_site_form(&parts, public_url) {
        return Ok(refused(&why));
    }
    let secret = form.token.trim().to_string();
    let known = find_token(&state.db, &secret)
        .await
        .map_err(|_| PageError::Internal)?;
    if known.is_none() {
        let page = render(
            "login.html",
            minijinja::context! { title => "Log in", error => "That token is unknown or revoked.", user => Option::<String>::None },
        )?;
        return Ok((StatusCode::UNAUTHORIZED, page).into_response());
    }
    Ok(with_cookie(login_cookie(
        &secret,
        LOGIN_MAX_AGE_S,
        public_url,
    )))
}

/// How long a login lasts: 30 days.
const LOGIN_MAX_AGE_S: u64 = 30 * 24 * 3600;

/// Clears the cookie; refused when posted from another site.
pub(super) async fn logout(State(state): State<SharedState>, parts: Parts) -> Response {
    let public_url = state.config.public_url.as_ref();
    if let Some(why) = cross_site_form(&parts, public_url) {
        return refused(&why);
    }
    with_cookie(login_cookie("", 0, public_url))
}

/// A redirect home that sets `cookie`.
fn with_cookie(cookie: String) -> Response {
    let mut response = Redirect::to("/").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// 403 for a form another site posted.
fn refused(why: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        format!("refused: {why}; sign in from this registry's own /login page"),
    )
        .into_response()
}
