//! The web pages (`/`, `/datasets/{digest}`, `/runs/{id}`, `/commentaries/{id}`, `/login`):
//! server-rendered HTML from `web/templates` (minijinja, auto-escaped), SVG charts drawn here
//! (`charts`), PNG images, and `web/static` (CSS, a little JavaScript), all embedded in the
//! binary. Writes go through the same REST routes as every client.

pub mod charts;
mod commentary;
mod dataset;
mod home;
pub mod images;
mod insights;
mod login;
mod run;

use std::sync::OnceLock;

use axum::Router;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use minijinja::{Environment, Value};
use schema::api::{Phase, RunInfo};
use serde::Deserialize;

use super::app::SharedState;
use super::auth::{COOKIE, find_token};
use super::error::{ApiError, ErrorKind};

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
        if matches!(err.kind, ErrorKind::NotFound | ErrorKind::BadRequest) {
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

/// A typed path parameter of a page (`DigestPath`, `RunId`, `CommentaryId`), checked before any
/// database call. A malformed one gets the friendly not-found page (with why), not JSON: for a
/// person, an address that cannot name anything names nothing.
pub struct PagePath<T>(pub T);

impl<S, T> FromRequestParts<S> for PagePath<T>
where
    S: Send + Sync,
    T: FromRequestParts<S, Rejection = ApiError>,
{
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, PageError> {
        T::from_request_parts(parts, state)
            .await
            .map(Self)
            .map_err(PageError::from)
    }
}

fn render(name: &str, context: minijinja::Value) -> Result<Html<String>, PageError> {
    Ok(Html(templates().get_template(name)?.render(context)?))
}

/// Markup the page's own code drew (charts), inserted unescaped.
fn svg(text: String) -> Value {
    Value::from_safe_string(text)
}

/// The last 12 characters of an id (UUIDv7s share their first ones).
fn short(id: &str) -> String {
    id.chars()
        .rev()
        .take(12)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect()
}

/// A run's progress in words.
fn progress_text(run: &RunInfo) -> String {
    match &run.progress {
        None => "—".into(),
        Some(p) => {
            let phase = match p.phase {
                Phase::Learning => "learning",
                Phase::Evaluating => "evaluating",
                Phase::Done => "done",
            };
            match p.val_loss {
                Some(loss) => format!(
                    "{phase} {} / {}, validation loss {loss:.4}",
                    p.step, p.total
                ),
                None => format!("{phase} {} / {}", p.step, p.total),
            }
        }
    }
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
        .route("/", get(home::home))
        .route("/datasets/{digest}", get(dataset::dataset))
        .route("/runs/{id}", get(run::run))
        .route("/runs/{id}/chart.svg", get(run::run_chart))
        .route("/commentaries/{id}", get(commentary::commentary))
        .route(
            "/commentaries/{id}/masks/{i}/{layer}",
            get(images::mask_png),
        )
        .route("/login", get(login::login_page).post(login::login))
        .route("/logout", post(login::logout))
        .route("/static/{file}", get(asset))
        .layer(axum::middleware::from_fn_with_state(state, private_reads))
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
