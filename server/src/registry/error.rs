//! The API's one error type, `ApiError`: an `ErrorKind` and a message, sent as `ErrorBody` JSON.
//!
//! Handlers and the code they call return `ApiResult<T>`. The `ErrorKind` fixes the HTTP status
//! and the stable `code`; the message is for a person. Internal failures (`ErrorKind::Internal`:
//! database, store, I/O) are logged in full and answered with a generic message. Pages turn an
//! `ApiError` into an HTML page (`pages::PageError`); the CLI's client reads the body back.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use schema::api::{ErrorBody, ErrorDetail};

/// Declares `ErrorKind` with each variant's status and code; a variant's doc comment is its
/// description (what clients see in the docs and, for `Internal`, as the message).
macro_rules! error_kinds {
    ($( #[doc = $doc:literal] $variant:ident = ($status:ident, $code:literal), )*) => {
        /// What went wrong, as clients see it: each kind has one HTTP status and one stable
        /// `code` (listed in `docs/registry.md` and in the OpenAPI document).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ErrorKind {
            $( #[doc = $doc] $variant, )*
        }

        impl ErrorKind {
            /// Every kind, in the order of the docs.
            pub const ALL: &[ErrorKind] = &[$(Self::$variant),*];

            /// The HTTP status of this kind.
            pub fn status(self) -> StatusCode {
                match self { $(Self::$variant => StatusCode::$status,)* }
            }

            /// The stable machine-readable code of this kind.
            pub fn code(self) -> &'static str {
                match self { $(Self::$variant => $code,)* }
            }

            /// What this kind means (its doc comment).
            pub fn description(self) -> &'static str {
                match self { $(Self::$variant => $doc.trim(),)* }
            }
        }
    };
}

error_kinds! {
    /// The request is malformed: a bad digest, id, cursor, query string, header, JSON or form.
    BadRequest = (BAD_REQUEST, "bad_request"),
    /// The request needs a valid token (`Authorization: Bearer <token>`, or the login cookie).
    Unauthorized = (UNAUTHORIZED, "unauthorized"),
    /// The token's scope does not allow this, or a write with the login cookie came from another origin.
    Forbidden = (FORBIDDEN, "forbidden"),
    /// No such dataset, run, commentary or route is here.
    NotFound = (NOT_FOUND, "not_found"),
    /// The route does not answer this HTTP method.
    MethodNotAllowed = (METHOD_NOT_ALLOWED, "method_not_allowed"),
    /// The request conflicts with what is stored (a dataset that still has commentaries, a run that has ended).
    Conflict = (CONFLICT, "conflict"),
    /// The worker's lease expired or the run was cancelled: stop working on the run.
    LeaseLost = (CONFLICT, "lease_lost"),
    /// The body is larger than this registry accepts.
    PayloadTooLarge = (PAYLOAD_TOO_LARGE, "payload_too_large"),
    /// The body's content type is not what the route takes (JSON needs `Content-Type: application/json`).
    UnsupportedMediaType = (UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
    /// The request target (path and query) is longer than this registry reads.
    UriTooLong = (URI_TOO_LONG, "uri_too_long"),
    /// The request has more headers, or larger ones, than this registry reads.
    HeadersTooLarge = (REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large"),
    /// The `Range` header asks for bytes the blob does not have.
    RangeNotSatisfiable = (RANGE_NOT_SATISFIABLE, "range_not_satisfiable"),
    /// The JSON body is well-formed but does not fit the route's schema (an unknown field, a wrong type).
    InvalidBody = (UNPROCESSABLE_ENTITY, "bad_request"),
    /// The upload is not a usable dataset (empty, an unknown format, beyond the decoding caps).
    InvalidDataset = (UNPROCESSABLE_ENTITY, "invalid_dataset"),
    /// The artifact does not verify, or is not the one its run learns.
    InvalidArtifact = (UNPROCESSABLE_ENTITY, "invalid_artifact"),
    /// The run request cannot work (a kind and algorithm that do not go together, a bound out of range).
    InvalidRun = (UNPROCESSABLE_ENTITY, "invalid_run"),
    /// The run's training diverged (a loss beyond the divergence rule): the run failed with the reason instead of publishing.
    Diverged = (UNPROCESSABLE_ENTITY, "diverged"),
    /// The commentary's dataset is not stored here; push the dataset first.
    UnknownDataset = (UNPROCESSABLE_ENTITY, "unknown_dataset"),
    /// The stored data cannot be drawn this way (images with neither 1 nor 3 channels).
    Unsupported = (UNPROCESSABLE_ENTITY, "unsupported"),
    /// Too many requests from this caller; slow down and retry.
    RateLimited = (TOO_MANY_REQUESTS, "rate_limited"),
    /// This caller already has as many runs waiting in the queue as the registry allows; wait for some to start, or cancel some.
    TooManyQueuedRuns = (TOO_MANY_REQUESTS, "too_many_queued_runs"),
    /// The registry's disk is (nearly) full: it keeps a free-space margin rather than fill up; retry later.
    InsufficientStorage = (INSUFFICIENT_STORAGE, "insufficient_storage"),
    /// internal error (logged on the server)
    Internal = (INTERNAL_SERVER_ERROR, "internal"),
    /// The database or the blob store does not answer.
    NotReady = (SERVICE_UNAVAILABLE, "not_ready"),
    /// The request took longer than the request timeout.
    Timeout = (SERVICE_UNAVAILABLE, "timeout"),
}

impl ErrorKind {
    /// The kind of one of axum's own rejections (bad JSON, bad query, body too large), by the
    /// status axum gives it.
    pub fn of_rejection(status: StatusCode) -> Self {
        match status {
            StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::UnsupportedMediaType,
            StatusCode::UNPROCESSABLE_ENTITY => Self::InvalidBody,
            StatusCode::NOT_FOUND => Self::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => Self::MethodNotAllowed,
            s if s.is_server_error() => Self::Internal,
            _ => Self::BadRequest,
        }
    }
}

/// An API error: its kind and a message for a person.
#[derive(Debug)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthorized, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::PayloadTooLarge, message)
    }

    /// Logs the full cause chain; the client sees only that something failed inside.
    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        let err = err.into();
        tracing::error!("internal error: {err:#}");
        Self::new(ErrorKind::Internal, ErrorKind::Internal.description())
    }

    /// A write the blob store did not take: 507 when the disk under it is full, otherwise 503
    /// `not_ready` (the store is down or refuses). The caller makes nothing visible, so the
    /// request can simply be retried.
    pub fn store_write(err: anyhow::Error) -> Self {
        tracing::error!("blob store: {err:#}");
        let full = err.chain().any(|cause| {
            cause
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::StorageFull)
        });
        if full {
            return Self::disk_full();
        }
        Self::new(
            ErrorKind::NotReady,
            "the blob store did not take the write; nothing was stored. Retry later",
        )
    }

    /// 507: a write found the disk full (nothing of the request is kept).
    pub fn disk_full() -> Self {
        Self::new(
            ErrorKind::InsufficientStorage,
            "the registry's disk is full; nothing was written. Retry once space is freed",
        )
    }

    /// A write to a local staging file that failed: 507 when the disk is full, else internal.
    pub fn staging_write(err: std::io::Error) -> Self {
        if err.kind() == std::io::ErrorKind::StorageFull {
            Self::disk_full()
        } else {
            Self::internal(anyhow::Error::from(err).context("cannot write to staging"))
        }
    }

    /// One of axum's rejections, with axum's text (which names the problem) as the message.
    pub fn rejection(rejection: impl IntoResponse + std::fmt::Display) -> Self {
        let text = rejection.to_string();
        let kind = ErrorKind::of_rejection(rejection.into_response().status());
        if kind == ErrorKind::Internal {
            return Self::internal(anyhow::anyhow!(text));
        }
        Self::new(kind, text)
    }

    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.kind.code().to_string(),
                message: self.message.clone(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status(), Json(self.body())).into_response()
    }
}

/// A row that is not there (sea-orm's "record not found" / "not updated", e.g. a row deleted
/// between a read and an update) is a 404; every other database error is internal.
impl From<sea_orm::DbErr> for ApiError {
    fn from(err: sea_orm::DbErr) -> Self {
        if let Some(sea_orm::SqlErr::ForeignKeyConstraintViolation(detail)) = err.sql_err() {
            // A row would point at a dataset or run deleted meanwhile (the foreign keys).
            tracing::debug!("database: {detail}");
            return Self::conflict(
                "what this refers to was deleted meanwhile, or something still refers to what \
                 is being deleted; look again and retry",
            );
        }
        if is_disk_full(&err) {
            tracing::error!("database: {err}");
            return Self::disk_full();
        }
        match err {
            sea_orm::DbErr::RecordNotFound(_) | sea_orm::DbErr::RecordNotUpdated => {
                tracing::debug!("database: {err}");
                Self::not_found("the record is not stored here (it may have just been deleted)")
            }
            other => Self::internal(other),
        }
    }
}

/// Whether the database refused a write for want of disk space (SQLite's SQLITE_FULL, code 13;
/// PostgreSQL's `disk_full`, 53100).
fn is_disk_full(err: &sea_orm::DbErr) -> bool {
    use sea_orm::{DbErr, RuntimeErr};
    let (DbErr::Exec(RuntimeErr::SqlxError(e))
    | DbErr::Query(RuntimeErr::SqlxError(e))
    | DbErr::Conn(RuntimeErr::SqlxError(e))) = err
    else {
        return false;
    };
    e.as_database_error()
        .and_then(|db| db.code())
        .is_some_and(|code| code == "13" || code == "53100")
}

impl From<anyhow::Error> for ApiError {
    fn from(err: anyhow::Error) -> Self {
        Self::internal(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table in `docs/registry.md` ("## Errors"), as the enum says it should read.
    fn docs_table() -> String {
        let mut table = String::from("| status | code | meaning |\n|---|---|---|\n");
        for kind in ErrorKind::ALL {
            table.push_str(&format!(
                "| {} | `{}` | {} |\n",
                kind.status().as_u16(),
                kind.code(),
                kind.description()
            ));
        }
        table
    }

    #[test]
    fn the_docs_list_every_error_code_and_no_other() {
        let docs = include_str!("../../../docs/registry.md");
        let expected = docs_table();
        assert!(
            docs.contains(&expected),
            "the error table in docs/registry.md is out of date; it should read:\n\n{expected}"
        );
        // Any other row naming a code is stale.
        let rows = docs
            .lines()
            .filter(|l| l.starts_with("| ") && l.contains(" | `"))
            .filter(|l| {
                l.split('|')
                    .nth(1)
                    .is_some_and(|s| s.trim().parse::<u16>().is_ok())
            })
            .count();
        assert_eq!(
            rows,
            ErrorKind::ALL.len(),
            "stale error rows in docs/registry.md"
        );
    }

    #[test]
    fn kinds_agree_with_their_statuses() {
        for kind in ErrorKind::ALL {
            assert!(
                kind.status().is_client_error() || kind.status().is_server_error(),
                "{kind:?}"
            );
            assert!(!kind.description().is_empty(), "{kind:?} has no doc");
        }
        let internal = ApiError::internal(anyhow::anyhow!("secret path /var/x"));
        assert_eq!(internal.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!internal.message.contains("secret"));
    }

    #[test]
    fn missing_rows_are_404_and_other_database_errors_500() {
        let gone = ApiError::from(sea_orm::DbErr::RecordNotFound("x".into()));
        assert_eq!(gone.status(), StatusCode::NOT_FOUND);
        let broken = ApiError::from(sea_orm::DbErr::Custom("password=hunter2".into()));
        assert_eq!(broken.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!broken.message.contains("hunter2"));
    }
}
