//! Learning runs as database rows: queued -> running (leased) -> succeeded | failed | cancelled.
//! A lease has a secret and an expiry; heartbeats extend it; an expired lease re-queues the run
//! until `max_attempts` leases were taken, then fails it with the last error kept. Every state
//! change and progress report is stored as an event, so any replica can stream them.
//!
//! - `queue`: creating runs (with request validation), finding and listing them;
//! - `leases`: leasing, heartbeats and the lease reaper;
//! - `lifecycle`: state transitions, complete / fail / cancel;
//! - `events`: appending and reading progress events, following them for SSE.

mod events;
mod leases;
mod lifecycle;
mod queue;

pub use events::{events_after, follow, post_events};
pub use leases::{expired_leases, heartbeat, lease, reap, reap_forever, requeue_expired};
pub use lifecycle::{cancel, complete, fail};
pub use queue::{create, find, info, list};
