//! Published commentary rows, with their detail JSON serialised once (on the first detail
//! request), kept in memory for a short while: a popular commentary's detail and artifact are then served without a database
//! round trip or a JSON re-encoding per request (the cost that kept metadata GETs at a third
//! of the router's speed).
//!
//! A commentary row never changes once published; it only disappears. Within this process a
//! delete takes effect at once (the entry is dropped, and a read that raced the delete cannot
//! put its stale row back). Another replica's delete is seen here within the time-to-live at
//! the latest (`--row-cache-ttl`, 0 turns the cache off).

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::db::entities::commentary;

/// A cached row and its `GET /v1/commentaries/{id}` body.
pub struct CachedCommentary {
    pub model: commentary::Model,
    /// `CommentaryDetail` as JSON, once a detail request has asked for it.
    detail_json: OnceLock<Bytes>,
    fetched: Instant,
}

impl CachedCommentary {
    /// The detail JSON, made by `encode` on the first call (downloads and pages never need it).
    pub fn detail_json<E>(
        &self,
        encode: impl FnOnce(&commentary::Model) -> Result<Bytes, E>,
    ) -> Result<Bytes, E> {
        if let Some(json) = self.detail_json.get() {
            return Ok(json.clone());
        }
        let json = encode(&self.model)?;
        Ok(self.detail_json.get_or_init(|| json).clone())
    }
}

impl std::ops::Deref for CachedCommentary {
    type Target = commentary::Model;

    fn deref(&self) -> &commentary::Model {
        &self.model
    }
}

#[derive(Clone)]
struct RowWeight;

/// What a detail JSON holds beside the manifest and report it re-encodes (the list entry).
const DETAIL_EXTRA_BYTES: usize = 1024;

impl quick_cache::Weighter<String, Arc<CachedCommentary>> for RowWeight {
    /// The row, and the detail JSON it may come to hold: the manifest and report once more,
    /// plus the list entry.
    fn weight(&self, key: &String, row: &Arc<CachedCommentary>) -> u64 {
        let m = &row.model;
        let texts = m.manifest.len() + m.report.as_ref().map_or(0, String::len);
        (key.len() + 2 * texts + DETAIL_EXTRA_BYTES + std::mem::size_of::<CachedCommentary>())
            as u64
    }
}

/// Memory the cached rows may take.
pub const ROW_CACHE_BYTES: u64 = 32 << 20;

pub struct RowCache {
    rows: quick_cache::sync::Cache<String, Arc<CachedCommentary>, RowWeight>,
    ttl: Duration,
    /// Counts deletes; a row read from the database is cached only if none happened since the
    /// read began (held while checking and inserting, and while deleting).
    deletes: Mutex<u64>,
}

/// Where a database read began, for [`RowCache::insert`].
#[derive(Clone, Copy)]
pub struct ReadTicket(u64);

impl RowCache {
    /// A cache whose entries live `ttl` (zero: nothing is cached).
    pub fn new(ttl: Duration) -> Self {
        Self {
            rows: quick_cache::sync::Cache::with_weighter(1024, ROW_CACHE_BYTES, RowWeight),
            ttl,
            deletes: Mutex::new(0),
        }
    }

    /// The row of `id` if it was read less than the time-to-live ago.
    pub fn get(&self, id: &str) -> Option<Arc<CachedCommentary>> {
        let row = self.rows.get(id)?;
        if row.fetched.elapsed() < self.ttl {
            Some(row)
        } else {
            self.rows.remove(id);
            None
        }
    }

    /// Taken before reading a row from the database.
    pub fn ticket(&self) -> ReadTicket {
        ReadTicket(*self.deletes.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Wraps a row read under `ticket`, and keeps it unless a delete happened since.
    pub fn insert(&self, ticket: ReadTicket, model: commentary::Model) -> Arc<CachedCommentary> {
        let row = Arc::new(CachedCommentary {
            model,
            detail_json: OnceLock::new(),
            fetched: Instant::now(),
        });
        if self.ttl.is_zero() {
            return row;
        }
        let deletes = self.deletes.lock().unwrap_or_else(PoisonError::into_inner);
        if *deletes == ticket.0 {
            self.rows.insert(row.model.id.clone(), row.clone());
        }
        row
    }

    /// Drops the rows of deleted commentaries (call after the delete has committed).
    pub fn forget<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let mut deletes = self.deletes.lock().unwrap_or_else(PoisonError::into_inner);
        *deletes += 1;
        for id in ids {
            self.rows.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str) -> commentary::Model {
        commentary::Model {
            id: id.into(),
            dataset_digest: "d".into(),
            kind: "example-weighting".into(),
            algorithm: "bptt".into(),
            manifest: "{}".into(),
            report: None,
            tensors_sha256: "s".into(),
            tensors_bytes: 1,
            improvement: None,
            run_id: None,
            created_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn rows_are_served_until_their_time_to_live_ends() {
        let cache = RowCache::new(Duration::from_millis(200));
        cache.insert(cache.ticket(), row("a"));
        assert!(cache.get("a").is_some());
        assert!(cache.get("b").is_none());
        std::thread::sleep(Duration::from_millis(250));
        assert!(cache.get("a").is_none(), "expired");
    }

    #[test]
    fn a_read_that_raced_a_delete_is_not_cached() {
        let cache = RowCache::new(Duration::from_secs(60));
        cache.insert(cache.ticket(), row("a"));
        // A reader starts, the row is deleted and forgotten, then the reader finishes.
        let ticket = cache.ticket();
        cache.forget(["a"]);
        assert!(cache.get("a").is_none());
        let served = cache.insert(ticket, row("a"));
        assert_eq!(served.id, "a", "the reader still answers with what it read");
        assert!(cache.get("a").is_none(), "but its stale row is not kept");
        // A read begun after the delete is kept.
        cache.insert(cache.ticket(), row("a"));
        assert!(cache.get("a").is_some());
    }

    #[test]
    fn the_detail_json_is_encoded_once() {
        let cache = RowCache::new(Duration::from_secs(60));
        let cached = cache.insert(cache.ticket(), row("a"));
        let mut encoded = 0;
        for _ in 0..3 {
            let json = cached
                .detail_json(|m| {
                    encoded += 1;
                    Ok::<_, ()>(Bytes::from(m.id.clone()))
                })
                .expect("encoded");
            assert_eq!(json, "a");
        }
        assert_eq!(encoded, 1);
        // A failed encoding is reported and not kept.
        let other = cache.insert(cache.ticket(), row("b"));
        assert_eq!(
            other.detail_json(|_| Err("bad manifest")),
            Err("bad manifest")
        );
        assert_eq!(
            other.detail_json(|m| Ok::<_, &str>(Bytes::from(m.id.clone()))),
            Ok(Bytes::from("b"))
        );
    }

    #[test]
    fn a_zero_time_to_live_caches_nothing() {
        let cache = RowCache::new(Duration::ZERO);
        cache.insert(cache.ticket(), row("a"));
        assert!(cache.get("a").is_none());
    }
}
