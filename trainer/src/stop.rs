//! Stopping long computations on request. A cancelled run must free its worker within seconds,
//! and one meta-step (K inner steps, or a block of online steps) or one student's training can
//! take minutes, so the loops check between inner steps, not only between meta-steps.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A stop request shared between whoever may ask (a cancelled or lost run, a shutdown) and the
/// loops that honour it. The default never stops.
#[derive(Debug, Clone, Default)]
pub struct Stop(Option<Arc<AtomicBool>>);

/// A computation ended early because a stop was requested; it produced nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stopped on request")]
pub struct Stopped;

impl Stop {
    /// A stop that is never requested.
    pub fn never() -> Self {
        Self(None)
    }

    /// Stops once `flag` turns true.
    pub fn on(flag: Arc<AtomicBool>) -> Self {
        Self(Some(flag))
    }

    /// Whether a stop was requested.
    pub fn requested(&self) -> bool {
        self.0.as_ref().is_some_and(|f| f.load(Ordering::Relaxed))
    }

    /// `Err(Stopped)` once a stop was requested.
    pub fn check(&self) -> Result<(), Stopped> {
        if self.requested() {
            Err(Stopped)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_is_seen_by_every_clone() {
        assert_eq!(Stop::never().check(), Ok(()));
        let flag = Arc::new(AtomicBool::new(false));
        let stop = Stop::on(flag.clone());
        let seen = stop.clone();
        assert_eq!(seen.check(), Ok(()));
        flag.store(true, Ordering::Relaxed);
        assert_eq!(seen.check(), Err(Stopped));
        assert!(stop.requested());
    }
}
