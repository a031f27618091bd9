//! Extractors that validate what a request carries and reject bad input with the API error.
//!
//! Typed path parameters check their text before any database call (`DigestPath`, `RunId`,
//! `CommentaryId`); `ApiJson`, `ApiQuery`, `ApiPath` and `ApiMultipart` wrap axum's extractors
//! so their rejections get the JSON error shape instead of axum's plain text.

use std::fmt;
use std::ops::Deref;

use axum::extract::{FromRequest, FromRequestParts, Multipart, RawPathParams, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use bytesize::ByteSize;
use schema::Sha256;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::routes::BodyLimits;

/// A JSON body; bad JSON is 400, JSON of the wrong shape 422, a missing content type 415.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let limit = request.extensions().get::<BodyLimits>().map(|l| l.json);
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                let limit =
                    limit.map_or_else(|| "the limit".to_string(), |l| ByteSize::b(l).to_string());
                Err(ApiError::too_large(format!(
                    "the JSON body is larger than {limit} (--max-json-bytes, COMMENTARY_MAX_JSON_BYTES)"
                )))
            }
            Err(rejection) => Err(ApiError::rejection(rejection)),
        }
    }
}

/// A query string (`?a=b`); one that does not fit is 400.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::rejection(rejection)),
        }
    }
}

/// Path parameters other than ids and digests (a split name, an image file name).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::rejection(rejection)),
        }
    }
}

/// A `multipart/form-data` body; a missing or bad boundary is 400.
pub struct ApiMultipart(pub Multipart);

impl<S> FromRequest<S> for ApiMultipart
where
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match Multipart::from_request(request, state).await {
            Ok(form) => Ok(Self(form)),
            Err(rejection) => Err(ApiError::rejection(rejection)),
        }
    }
}

/// The path parameter `name`, percent-decoded.
async fn path_param<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
    name: &str,
) -> Result<String, ApiError> {
    let params = RawPathParams::from_request_parts(parts, state)
        .await
        .map_err(ApiError::rejection)?;
    params
        .iter()
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_string())
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("the route has no {{{name}}} parameter")))
}

/// `{digest}` in a path: `sha256:<hex>` or bare hex; anything else is 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestPath(pub Sha256);

impl DigestPath {
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        Sha256::parse(text)
            .map(Self)
            .map_err(|e| ApiError::bad_request(format!("bad digest {text:?}: {e}")))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for DigestPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Self::parse(&path_param(parts, state, "digest").await?)
    }
}

/// Declares an id newtype read from the path parameter `{id}`: a UUID (the registry makes its
/// ids with UUIDv7), kept in its canonical hyphenated lowercase form, so it matches stored ids.
macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl $name {
            pub fn parse(text: &str) -> Result<Self, ApiError> {
                uuid::Uuid::try_parse(text)
                    .map(|id| Self(id.hyphenated().to_string()))
                    .map_err(|_| {
                        ApiError::bad_request(format!(
                            concat!("bad ", $what, " id {:?}: ids are UUIDs such as 0190b3a2-7c1e-7d4f-9a6b-1c2d3e4f5a6b"),
                            text
                        ))
                    })
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<S: Send + Sync> FromRequestParts<S> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
                Self::parse(&path_param(parts, state, "id").await?)
            }
        }
    };
}

uuid_id!(
    /// `{id}` of a run.
    RunId,
    "run"
);
uuid_id!(
    /// `{id}` of a commentary.
    CommentaryId,
    "commentary"
);

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[test]
    fn ids_are_uuids_in_their_canonical_form() {
        let id = uuid::Uuid::now_v7();
        let upper = id.hyphenated().to_string().to_uppercase();
        assert_eq!(RunId::parse(&upper).ok().map(|r| r.0), Some(id.to_string()));
        assert_eq!(
            CommentaryId::parse(&id.simple().to_string())
                .ok()
                .map(|c| c.0),
            Some(id.to_string())
        );
        for bad in ["", "nope", "123", "0190b3a2-7c1e-7d4f-9a6b-1c2d3e4f5a6"] {
            let err = RunId::parse(bad).expect_err(bad);
            assert_eq!(err.status(), StatusCode::BAD_REQUEST);
            assert!(err.message.contains("run id"), "{}", err.message);
        }
    }

    #[test]
    fn digests_take_both_text_forms() {
        let digest = Sha256::of(b"x");
        assert_eq!(
            DigestPath::parse(&digest.hex()).ok(),
            Some(DigestPath(digest))
        );
        assert_eq!(
            DigestPath::parse(&digest.to_string()).ok(),
            Some(DigestPath(digest))
        );
        let err = DigestPath::parse("sha256:00").expect_err("short");
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    }
}
