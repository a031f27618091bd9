//! HTTP routes: `/v1/...` (JSON, documented with utoipa; OpenAPI 3.1 at `/openapi.json`, Swagger
//! UI at `/docs`), ops endpoints, and the middleware every request passes through.

mod blobs;
mod commentaries;
mod datasets;
mod ops;
mod runs;

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse as _, Response};
use serde::Deserialize;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use super::app::SharedState;
use super::config::ServeConfig;
use super::error::{ApiError, ErrorKind};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Commentary registry",
        description = "Stores datasets and learned commentaries (Teaching with Commentaries, ICLR 2021) by content digest, runs learning jobs, and serves commentaries to new training runs. Errors always have the ErrorBody shape.",
    ),
    modifiers(&BearerAuth, &ErrorCodes),
    // Enums that query parameters refer to by name.
    components(schemas(
        schema::api::ErrorBody,
        crate::registry::commentaries::Sort,
        commentaries::ExampleOrder,
    )),
    tags(
        (name = "datasets", description = "Upload and browse datasets"),
        (name = "runs", description = "Learning runs and their progress"),
        (name = "workers", description = "The protocol learning workers use"),
        (name = "commentaries", description = "Learned commentaries"),
        (name = "ops", description = "Health and metrics"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Lists every `ErrorKind` in the schema of `ErrorDetail.code`.
struct ErrorCodes;

impl Modify for ErrorCodes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{RefOr, schema::Schema};
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        let Some(RefOr::T(Schema::Object(detail))) = components.schemas.get_mut("ErrorDetail")
        else {
            return;
        };
        let Some(RefOr::T(Schema::Object(code))) = detail.properties.get_mut("code") else {
            return;
        };
        let mut codes: Vec<&str> = Vec::new();
        let mut described = String::from("A stable machine-readable code (HTTP status: code):");
        for kind in ErrorKind::ALL {
            if !codes.contains(&kind.code()) {
                codes.push(kind.code());
            }
            described.push_str(&format!(
                "\n- {}: `{}`: {}",
                kind.status().as_u16(),
                kind.code(),
                kind.description()
            ));
        }
        code.enum_values = Some(codes.into_iter().map(Into::into).collect());
        code.description = Some(described);
    }
}

/// The OpenAPI document (also served at `/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_routes(BodyLimits::of(&ServeConfig::default()))
        .split_for_parts()
        .1
}

/// `?limit=&cursor=` of list routes.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Items per page (default 50, at most 500).
    pub limit: Option<u64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageParams {
    /// (offset, limit).
    fn resolve(&self) -> Result<(u64, u64), ApiError> {
        let limit = self.limit.unwrap_or(50).clamp(1, 500);
        let offset = match &self.cursor {
            None => 0,
            Some(c) => schema::wire::parse_cursor(c).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "bad cursor {c:?}: give the next_cursor of the previous page"
                ))
            })?,
        };
        Ok((offset, limit))
    }

    fn next(offset: u64, limit: u64, more: bool) -> Option<String> {
        more.then(|| schema::wire::next_cursor(offset, limit))
    }
}

/// Routes answered quickly (a request timeout applies) and streaming ones (uploads, downloads,
/// SSE: no timeout).
fn api_routes(limits: BodyLimits) -> OpenApiRouter<SharedState> {
    let quick = OpenApiRouter::new()
        .routes(routes!(datasets::list))
        .routes(routes!(datasets::get, datasets::head, datasets::delete))
        .routes(routes!(datasets::example))
        .routes(routes!(runs::create, runs::list))
        .routes(routes!(runs::get))
        .routes(routes!(runs::cancel))
        .routes(routes!(runs::worker::lease))
        .routes(routes!(runs::worker::heartbeat))
        .routes(routes!(runs::worker::events))
        .routes(routes!(runs::worker::fail))
        .routes(routes!(commentaries::list))
        .routes(routes!(commentaries::get, commentaries::delete))
        .routes(routes!(commentaries::insights))
        .routes(routes!(commentaries::examples))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz));
    let streaming = OpenApiRouter::new()
        .routes(routes!(datasets::upload))
        .routes(routes!(datasets::archive))
        .routes(routes!(runs::events))
        .routes(routes!(runs::worker::complete))
        .routes(routes!(commentaries::upload))
        .routes(routes!(commentaries::artifact));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(
            quick
                .layer(middleware::from_fn(with_timeout))
                .layer(DefaultBodyLimit::max(to_usize(limits.json))),
        )
        .merge(streaming.layer(DefaultBodyLimit::max(to_usize(limits.upload))))
}

fn to_usize(bytes: u64) -> usize {
    usize::try_from(bytes).unwrap_or(usize::MAX)
}

/// The whole application: the API, its OpenAPI document and explorer, `/metrics` and the pages.
pub fn router(state: SharedState) -> Router {
    let (api, openapi) = api_routes(BodyLimits::of(&state.config)).split_for_parts();
    let api = api.method_not_allowed_fallback(method_not_allowed);
    Router::new()
        .merge(api)
        .merge(SwaggerUi::new("/docs").url("/openapi.json", openapi))
        .route("/metrics", axum::routing::get(ops::metrics))
        .merge(crate::registry::pages::router(state.clone()))
        .fallback(crate::registry::pages::fallback)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            request_settings,
        ))
        .layer(middleware::from_fn(limit_request_head))
        // A handler that panics answers 500 with the error shape; the connection and the
        // process carry on.
        .layer(CatchPanicLayer::custom(|_: Box<dyn std::any::Any + Send>| {
            ApiError::internal(anyhow::anyhow!("a request handler panicked")).into_response()
        }))
        // The access log (`-v`), each request under its `x-request-id` (sent back too).
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    let id = request
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), id)
                })
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// A known API path asked with a method it does not answer (axum adds the `Allow` header).
async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        ErrorKind::MethodNotAllowed,
        format!(
            "{} does not answer {}",
            request.uri().path(),
            request.method()
        ),
    )
}

/// The configured request timeout, handed to `with_timeout` through an extension (by
/// `request_settings`, with the body limits).
#[derive(Clone, Copy)]
struct Timeout(Duration);

/// The body limits of the routes (also handed to `ApiJson` through an extension, for its
/// message).
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// JSON bodies (every route but uploads).
    pub json: u64,
    /// The multipart artifact form (streamed into staging, at most this in all; dataset
    /// archives stream under `max_upload_bytes` on their own).
    pub upload: u64,
}

impl BodyLimits {
    fn of(config: &ServeConfig) -> Self {
        Self {
            json: config.max_json_bytes,
            upload: config.max_upload_bytes.min(512 << 20),
        }
    }
}

async fn request_settings(
    State(state): State<SharedState>,
    mut request: Request,
    next: Next,
) -> Response {
    request
        .extensions_mut()
        .insert(Timeout(state.config.request_timeout));
    request
        .extensions_mut()
        .insert(BodyLimits::of(&state.config));
    next.run(request).await
}

async fn with_timeout(request: Request, next: Next) -> Response {
    let limit = request
        .extensions()
        .get::<Timeout>()
        .map_or(Duration::from_secs(30), |t| t.0);
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => axum::response::IntoResponse::into_response(ApiError::new(
            ErrorKind::Timeout,
            format!("the request took longer than {}s", limit.as_secs()),
        )),
    }
}

/// Longest request target (path and query) the registry reads; 414 beyond.
pub const MAX_URI_BYTES: usize = 8 << 10;
/// Most request headers, and their total size; 431 beyond.
pub const MAX_HEADERS: usize = 100;
pub const MAX_HEADER_BYTES: usize = 32 << 10;

/// Oversized request heads answer with the error shape (hyper's own limits, set well above
/// these in `listener`, would answer with an empty body).
async fn limit_request_head(request: Request, next: Next) -> Response {
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    if target > MAX_URI_BYTES {
        return ApiError::new(
            ErrorKind::UriTooLong,
            format!("the request target is {target} bytes; at most {MAX_URI_BYTES} are read"),
        )
        .into_response();
    }
    let headers = request.headers();
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
        return ApiError::new(
            ErrorKind::HeadersTooLarge,
            format!(
                "the request has {} headers of {bytes} bytes; at most {MAX_HEADERS} headers of \
                 {MAX_HEADER_BYTES} bytes are read",
                headers.len()
            ),
        )
        .into_response();
    }
    next.run(request).await
}

async fn count_requests(
    State(state): State<SharedState>,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    state.metrics.count(response.status().as_u16());
    response
}
