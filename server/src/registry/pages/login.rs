//! `/login` and `/logout`: signing in with a bearer token kept in a cookie, and signing out.

use axum::extract::{Form, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Redirect, Response};
use serde::Deserialize;

use super::{PageError, PageResult, render, signed_in};
use crate::registry::app::SharedState;
use crate::registry::auth::{COOKIE, find_token};

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

/// Checks the token and keeps it in an HttpOnly, SameSite=Strict cookie.
pub(super) async fn login(
    State(state): State<SharedState>,
    Form(form): Form<LoginForm>,
) -> PageResult {
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
    let cookie = format!("{COOKIE}={secret}; Path=/; HttpOnly; SameSite=Strict; Max-Age=2592000");
    let mut response = Redirect::to("/").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}

pub(super) async fn logout() -> Response {
    let mut response = Redirect::to("/").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("commentary_token=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}
