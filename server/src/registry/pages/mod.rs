//! The web pages (`/`, `/datasets/{digest}`, `/runs/{id}`, `/commentaries/{id}`, `/login`):
//! server-rendered HTML from `web/templates` (minijinja, auto-escaped), SVG charts drawn here
//! (`charts`), PNG images, and `web/static` (CSS, a little JavaScript), all embedded in the
//! binary. Writes go through the same REST routes as every client.

pub mod charts;
mod views;

use std::sync::OnceLock;

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use minijinja::Environment;
use serde::Deserialize;

use super::SharedState;
use super::auth::{COOKIE, find_token};
use super::error::ApiError;

/// Templates, parsed once.
fn templates() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        for (name, source) in [
            (
                "base.html",
                include_str!("../../../../web/templates/base.html"),
            ),
            (
                "home.html",
                include_str!("../../../../web/templates/home.html"),
            ),
            (
                "dataset.html",
                include_str!("../../../../web/templates/dataset.html"),
            ),
            (
                "run.html",
                include_str!("../../../../web/templates/run.html"),
            ),
            (
                "commentary.html",
                include_str!("../../../../web/templates/commentary.html"),
            ),
            (
                "login.html",
                include_str!("../../../../web/templates/login.html"),
            ),
            (
                "not_found.html",
                include_str!("../../../../web/templates/not_found.html"),
            ),
        ] {
            if let Err(err) = env.add_template(name, source) {
                tracing::error!("template {name} does not parse: {err}");
            }
        }
        env
    })
}

/// A page failure: a friendly page, never a JSON body or a stack trace.
pub enum PageError {
    NotFound(String),
    Internal,
}

impl From<ApiError> for PageError {
    fn from(err: ApiError) -> Self {
        if err.status == StatusCode::NOT_FOUND || err.status == StatusCode::BAD_REQUEST {
            Self::NotFound(err.message)
        } else {
            Self::Internal
        }
    }
}

impl From<minijinja::Error> for PageError {
    fn from(err: minijinja::Error) -> Self {
        tracing::error!("page rendering failed: {err:#}");
        Self::Internal
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Self::NotFound(message) => (StatusCode::NOT_FOUND, message),
            Self::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong on the server (it is logged).".to_string(),
            ),
        };
        let html = render(
            "not_found.html",
            minijinja::context! { title => "Not found", message, user => Option::<String>::None },
        )
        .unwrap_or_else(|_| Html("<h1>Not found</h1>".into()));
        (status, html).into_response()
    }
}

type PageResult = Result<Response, PageError>;

fn render(name: &str, context: minijinja::Value) -> Result<Html<String>, PageError> {
    Ok(Html(templates().get_template(name)?.render(context)?))
}

/// The signed-in user's token name, from the login cookie (a bad cookie is simply "not signed
/// in" on pages).
pub async fn signed_in(state: &SharedState, headers: &HeaderMap) -> Option<String> {
    let jar = axum_extra::extract::CookieJar::from_headers(headers);
    let secret = jar.get(COOKIE)?.value().to_string();
    find_token(&state.db, &secret)
        .await
        .ok()
        .flatten()
        .map(|t| t.name)
}

/// With `--private-reads`, pages (like the API) are for signed-in users only.
async fn private_reads(
    State(state): State<SharedState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path();
    let open = path == "/login" || path == "/logout" || path.starts_with("/static/");
    if state.config.private_reads && !open && signed_in(&state, request.headers()).await.is_none() {
        return Redirect::to("/login").into_response();
    }
    next.run(request).await
}

pub fn router(state: SharedState) -> Router<SharedState> {
    Router::new()
        .route("/", get(views::home))
        .route("/datasets/{digest}", get(views::dataset))
        .route("/runs/{id}", get(views::run))
        .route("/runs/{id}/chart.svg", get(views::run_chart))
        .route("/commentaries/{id}", get(views::commentary))
        .route("/commentaries/{id}/masks/{i}/{layer}", get(views::mask_png))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/static/{file}", get(asset))
        .layer(axum::middleware::from_fn_with_state(state, private_reads))
}

async fn login_page(State(state): State<SharedState>, headers: HeaderMap) -> PageResult {
    let user = signed_in(&state, &headers).await;
    Ok(render(
        "login.html",
        minijinja::context! { title => "Log in", user },
    )?
    .into_response())
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

/// Checks the token and keeps it in an HttpOnly, SameSite=Strict cookie.
async fn login(State(state): State<SharedState>, Form(form): Form<LoginForm>) -> PageResult {
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

async fn logout() -> Response {
    let mut response = Redirect::to("/").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("commentary_token=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}

/// Embedded CSS and JavaScript.
async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind): (&'static str, &'static str) = match file.as_str() {
        "app.css" => (
            include_str!("../../../../web/static/app.css"),
            "text/css; charset=utf-8",
        ),
        "app.js" => (
            include_str!("../../../../web/static/app.js"),
            "text/javascript; charset=utf-8",
        ),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// Unknown paths: JSON under `/v1`, a friendly page elsewhere.
pub async fn fallback(uri: Uri) -> Response {
    if uri.path().starts_with("/v1/") {
        return ApiError::not_found(format!("no route {}", uri.path())).into_response();
    }
    PageError::NotFound(format!("There is no page at {}.", uri.path())).into_response()
}

#[derive(Deserialize)]
pub struct SearchParams {
    #[serde(default)]
    pub q: String,
}

pub type Search = Query<SearchParams>;
