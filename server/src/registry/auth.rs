//! Who is calling, and may they: bearer tokens (stored as sha256, scopes read < write < admin),
//! the web login cookie (same token, HttpOnly + SameSite=Strict, writes must come from our own
//! Origin), anonymous access (reads public unless configured; writes only on a loopback bind),
//! and per-caller rate limits.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{Method, header};
use axum_extra::extract::CookieJar;
use chrono::Utc;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use rand::RngCore as _;
use schema::api::Scope;
use sea_orm::{ActiveModelTrait as _, ColumnTrait as _, EntityTrait as _, QueryFilter as _, Set};
use sha2::{Digest as _, Sha256};

use super::app::SharedState;
use super::db::entities::token;
use super::error::{ApiError, ApiResult, ErrorKind};

/// Name of the login cookie.
pub const COOKIE: &str = "commentary_token";
/// Prefix of every token, so a leaked one is easy to recognise.
const TOKEN_PREFIX: &str = "cmt_";

/// A fresh random token secret.
pub fn new_token_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", hex::encode(bytes))
}

/// What is stored: tokens are long random strings, so a plain sha256 is enough.
pub fn hash_token(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A created token: the secret is shown once.
#[derive(Debug)]
pub struct CreatedToken {
    pub id: String,
    pub secret: String,
}

/// Creates a token directly in the database (`commentary token create`).
pub async fn create_token(
    db: &sea_orm::DatabaseConnection,
    name: &str,
    scope: Scope,
) -> anyhow::Result<CreatedToken> {
    let secret = new_token_secret();
    let id = uuid::Uuid::now_v7().to_string();
    token::ActiveModel {
        id: Set(id.clone()),
        name: Set(name.to_string()),
        hash: Set(hash_token(&secret)),
        scope: Set(scope.as_str().to_string()),
        created_at: Set(Utc::now()),
        revoked_at: Set(None),
    }
    .insert(db)
    .await?;
    Ok(CreatedToken { id, secret })
}

/// The stored, unrevoked token with this secret.
pub async fn find_token(
    db: &sea_orm::DatabaseConnection,
    secret: &str,
) -> Result<Option<token::Model>, sea_orm::DbErr> {
    token::Entity::find()
        .filter(token::Column::Hash.eq(hash_token(secret)))
        .filter(token::Column::RevokedAt.is_null())
        .one(db)
        .await
}

/// How the caller proved who they are.
#[derive(Debug, Clone, PartialEq)]
pub enum Caller {
    Anonymous {
        ip: IpAddr,
    },
    Token {
        id: String,
        name: String,
        scope: Scope,
        via_cookie: bool,
    },
    /// This process's own workers.
    Internal,
}

impl Caller {
    /// The rate-limit key; also what a run records as its creator.
    pub fn key(&self) -> String {
        match self {
            Self::Anonymous { ip } => format!("ip:{ip}"),
            Self::Token { id, .. } => format!("token:{id}"),
            Self::Internal => "internal".into(),
        }
    }

    /// Display name for runs and logs.
    pub fn name(&self) -> String {
        match self {
            Self::Anonymous { ip } => format!("anonymous@{ip}"),
            Self::Token { name, .. } => name.clone(),
            Self::Internal => "internal".into(),
        }
    }
}

/// The authenticated caller of a request. Extracting it checks the credential (a bad or revoked
/// token is refused even for public reads) and the read policy and rate limit; handlers that
/// write call `require`.
#[derive(Debug, Clone)]
pub struct Auth {
    pub caller: Caller,
    anonymous_writes: bool,
}

impl Auth {
    /// Refuses callers below `scope`.
    pub fn require(&self, scope: Scope) -> ApiResult<()> {
        match &self.caller {
            Caller::Internal => Ok(()),
            Caller::Token { scope: have, .. } if *have >= scope => Ok(()),
            Caller::Token { scope: have, .. } => Err(ApiError::forbidden(format!(
                "this token has the {have} scope; this needs {scope}"
            ))),
            Caller::Anonymous { .. } if scope == Scope::Read => Ok(()),
            Caller::Anonymous { .. } if self.anonymous_writes => Ok(()),
            Caller::Anonymous { .. } => Err(ApiError::unauthorized(format!(
                "this needs a token with the {scope} scope (Authorization: Bearer <token>, or log in)"
            ))),
        }
    }
}

impl FromRequestParts<SharedState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &SharedState) -> ApiResult<Self> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.strip_prefix("Bearer ")
                    .map(str::trim)
                    .ok_or_else(|| ApiError::unauthorized("Authorization must be 'Bearer <token>'"))
            })
            .transpose()?;
        let cookie = CookieJar::from_headers(&parts.headers)
            .get(COOKIE)
            .map(|c| c.value().to_string());
        let caller = match (bearer, cookie) {
            (Some(secret), _) => resolve(state, secret, false).await?,
            (None, Some(secret)) => resolve(state, &secret, true).await?,
            (None, None) => Caller::Anonymous { ip },
        };
        let is_write = !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        if is_write
            && matches!(
                caller,
                Caller::Token {
                    via_cookie: true,
                    ..
                }
            )
        {
            check_origin(parts, state.config.public_url.as_ref())?;
        }
        if is_write && state.anonymous_writes && matches!(caller, Caller::Anonymous { .. }) {
            // Anonymous writes are the machine's own (curl, the CLI, our pages); refused before
            // the body is read when another page or another host name sent them.
            if let Some(why) = foreign(parts) {
                return Err(ApiError::forbidden(format!(
                    "anonymous writes are accepted only from this machine and this registry's own pages: {why}; \
                     send a token (Authorization: Bearer <token>) instead"
                )));
            }
        }
        if !is_write && state.config.private_reads && matches!(caller, Caller::Anonymous { .. }) {
            return Err(ApiError::unauthorized(
                "reads need a token on this registry (Authorization: Bearer <token>, or log in)",
            ));
        }
        state.limiter.check(&caller, is_write)?;
        Ok(Self {
            caller,
            anonymous_writes: state.anonymous_writes,
        })
    }
}

/// Looks a secret up: the internal credential, or a stored, unrevoked token.
async fn resolve(state: &SharedState, secret: &str, via_cookie: bool) -> ApiResult<Caller> {
    if constant_time_eq::constant_time_eq(secret.as_bytes(), state.internal_token.as_bytes()) {
        return Ok(Caller::Internal);
    }
    let Some(found) = find_token(&state.db, secret).await? else {
        return Err(ApiError::unauthorized("unknown or revoked token"));
    };
    let scope = found
        .scope
        .parse()
        .map_err(|e: String| ApiError::internal(anyhow::anyhow!(e)))?;
    Ok(Caller::Token {
        id: found.id,
        name: found.name,
        scope,
        via_cookie,
    })
}

/// Why a request is not this machine's own, if it is not: its Host is not a loopback name or
/// address (DNS rebinding puts the attacker's name there), or its Origin, when a browser sent
/// one, is not this registry's (a cross-origin form or fetch).
fn foreign(parts: &Parts) -> Option<String> {
    let host = request_host(parts);
    if let Some(host) = &host
        && !is_loopback_host(host)
    {
        return Some(format!("Host {host:?} is not a loopback name or address"));
    }
    let origin = parts.headers.get(header::ORIGIN)?;
    let origin = origin.to_str().unwrap_or("<not text>");
    (!same_origin(origin, host.as_deref(), None))
        .then(|| format!("Origin {origin:?} is not this registry's"))
}

/// Why a form posted to our pages (login, logout) came from another site, if it did: a
/// browser's `Origin` that is not this registry's (login CSRF would sign the browser in as
/// someone else). Requests without an Origin are not a browser's cross-site form.
pub(crate) fn cross_site_form(parts: &Parts, public_url: Option<&reqwest::Url>) -> Option<String> {
    let origin = parts.headers.get(header::ORIGIN)?;
    let origin = origin.to_str().unwrap_or("<not text>");
    (!same_origin(origin, request_host(parts).as_deref(), public_url))
        .then(|| format!("Origin {origin:?} is not this registry's"))
}

/// The login cookie's `Set-Cookie` value: HttpOnly, SameSite=Strict, and Secure when people
/// reach the registry over https.
pub(crate) fn login_cookie(
    value: &str,
    max_age_s: u64,
    public_url: Option<&reqwest::Url>,
) -> String {
    let secure = if public_url.is_some_and(|u| u.scheme() == "https") {
        "; Secure"
    } else {
        ""
    };
    format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}")
}

/// The host the request names: its `Host` header, else the URI's authority (HTTP/2).
fn request_host(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get(header::HOST)
        .map(|v| v.to_str().unwrap_or("<not text>").to_string())
        .or_else(|| parts.uri.authority().map(|a| a.as_str().to_string()))
}

/// Whether a browser's `Origin` is this registry's pages: `http(s)://` and the request's host,
/// or the public URL's origin.
fn same_origin(origin: &str, host: Option<&str>, public_url: Option<&reqwest::Url>) -> bool {
    let own = host.is_some_and(|host| {
        origin
            .split_once("://")
            .is_some_and(|(scheme, rest)| matches!(scheme, "http" | "https") && rest == host)
    });
    own || public_url.is_some_and(|u| u.origin().ascii_serialization() == origin)
}

/// `localhost`, `127.0.0.1`, `[::1]` or another loopback address, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((inside, after)) if after.is_empty() || after.starts_with(':') => inside,
            _ => return false,
        },
        None => match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        },
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A cookie-authenticated write must come from a page of this server (CSRF defence on top of
/// SameSite=Strict).
fn check_origin(parts: &Parts, public_url: Option<&reqwest::Url>) -> ApiResult<()> {
    let origin = parts
        .headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    match origin {
        Some(origin) if same_origin(origin, request_host(parts).as_deref(), public_url) => Ok(()),
        _ => Err(ApiError::forbidden(
            "a write with the login cookie must come from this registry's own pages (Origin check)",
        )),
    }
}

/// Per-caller token buckets for writes and reads.
pub struct RateLimits {
    writes: Option<DefaultKeyedRateLimiter<String>>,
    reads: Option<DefaultKeyedRateLimiter<String>>,
}

impl RateLimits {
    /// `per_second` requests per second with a burst of twice that; 0 disables.
    pub fn new(writes_per_second: u32, reads_per_second: u32) -> Self {
        let limiter = |n: u32| {
            NonZeroU32::new(n).map(|n| {
                let burst = n.saturating_mul(NonZeroU32::MIN.saturating_add(1));
                RateLimiter::keyed(Quota::per_second(n).allow_burst(burst))
            })
        };
        Self {
            writes: limiter(writes_per_second),
            reads: limiter(reads_per_second),
        }
    }

    /// Forgets callers whose bucket is full again (they are as good as new), so the table
    /// does not grow with every address that ever called.
    pub fn prune(&self) {
        for limiter in [&self.writes, &self.reads].into_iter().flatten() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Callers currently tracked (writes and reads).
    pub fn tracked(&self) -> usize {
        [&self.writes, &self.reads]
            .into_iter()
            .flatten()
            .map(|l| l.len())
            .sum()
    }

    fn check(&self, caller: &Caller, is_write: bool) -> ApiResult<()> {
        if *caller == Caller::Internal {
            return Ok(());
        }
        let limiter = if is_write { &self.writes } else { &self.reads };
        match limiter {
            Some(limiter) if limiter.check_key(&caller.key()).is_err() => Err(ApiError::new(
                ErrorKind::RateLimited,
                "too many requests from this caller; slow down and retry",
            )),
            _ => Ok(()),
        }
    }
}

/// Prunes the rate limiters every minute until shutdown.
pub async fn prune_forever(state: SharedState, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(std::time::Duration::from_secs(60)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        state.limiter.prune();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_whose_bucket_refilled_are_forgotten() {
        let limits = RateLimits::new(1000, 0);
        for n in 0..50u8 {
            let caller = Caller::Anonymous {
                ip: IpAddr::from([10, 0, 0, n]),
            };
            limits.check(&caller, true).expect("within the rate");
        }
        assert_eq!(limits.tracked(), 50);
        limits.prune();
        assert_eq!(limits.tracked(), 50, "their buckets are not full again yet");
        // A burst of twice the rate refills in two seconds.
        std::thread::sleep(std::time::Duration::from_millis(2100));
        limits.prune();
        assert_eq!(limits.tracked(), 0);
    }

    #[test]
    fn loopback_hosts_are_names_and_addresses_of_this_machine_only() {
        for host in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1",
            "127.0.0.1:0",
            "127.8.9.1:80",
            "[::1]",
            "[::1]:8080",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "attacker.example",
            "localhost.attacker.example:8080",
            "127.0.0.1.nip.io",
            "10.0.0.1:8080",
            "[::1]x",
            "[::2]:80",
            "",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn scopes_are_ordered() {
        assert!(Scope::Admin > Scope::Write && Scope::Write > Scope::Read);
    }

    #[test]
    fn token_secrets_are_random_and_hashed() {
        let (a, b) = (new_token_secret(), new_token_secret());
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(hash_token(&a).len(), 64);
        assert_ne!(hash_token(&a), hash_token(&b));
    }

    #[test]
    fn rate_limits_refuse_bursts_per_caller() {
        let limits = RateLimits::new(1, 0);
        let a = Caller::Anonymous {
            ip: IpAddr::from([10, 0, 0, 1]),
        };
        let b = Caller::Anonymous {
            ip: IpAddr::from([10, 0, 0, 2]),
        };
        assert!(limits.check(&a, true).is_ok());
        assert!(limits.check(&a, true).is_ok());
        let refused = limits
            .check(&a, true)
            .expect_err("third write in a burst of 2");
        assert_eq!(refused.status(), axum::http::StatusCode::TOO_MANY_REQUESTS);
        assert!(
            limits.check(&b, true).is_ok(),
            "another caller has its own bucket"
        );
        assert!(limits.check(&a, false).is_ok(), "reads are not limited");
    }
}
