//! The registry server (`commentary serve`): REST API, storage, learning runs and workers.
//!
//! - `app`: the state every handler shares; `config`: what the server is started with;
//!   `server`: start-up and shutdown; `listener`: accepting connections within bounds;
//! - `db`: sea-orm entities and migrations (SQLite by default, PostgreSQL by URL);
//! - `store`: blobs through object_store (local directory, S3, GCS, Azure); `sweep`: removes
//!   blobs a crash left without a row;
//! - `auth`: bearer tokens, the cookie login, rate limits;
//! - `error`: the API error (`ErrorKind` fixes status and code); `extract`: extractors that
//!   validate ids, digests, JSON, queries and forms and answer with that error;
//! - `datasets`, `runs`, `commentaries`: what the routes do, independent of HTTP;
//!   `row_cache`: published commentary rows kept briefly in memory;
//! - `routes`: the axum handlers and the OpenAPI document; `pages`: the web pages;
//! - `worker` / `client`: the learning worker and the HTTP client it (and the CLI) uses;
//!   `supervisor`: `serve --workers N` runs them as child processes and restarts them.

pub mod app;
pub mod auth;
pub mod client;
pub mod commentaries;
pub mod config;
pub mod datasets;
pub mod db;
pub mod error;
pub mod extract;
pub mod listener;
pub mod pages;
pub mod routes;
pub mod row_cache;
pub mod runs;
pub mod server;
pub mod store;
pub mod supervisor;
pub mod sweep;
pub mod worker;

pub use app::{AppState, Metrics, SharedState};
pub use config::ServeConfig;
pub use server::{Server, open_state, start};
