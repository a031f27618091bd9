//! `Cancel`: a flag another thread sets to stop decoding early. The registry sets it when an
//! upload's client goes away, so an abandoned upload stops taking CPU and staging disk instead
//! of being read and digested for nobody.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::DataError;

/// A shared stop flag; clones share it. The default is never set.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks every decoder holding a clone to stop at its next check.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// `Err(DataError::Cancelled)` once cancelled; decoders call it as they go.
    pub(crate) fn check(&self, path: &Path) -> Result<(), DataError> {
        if self.is_cancelled() {
            return Err(DataError::Cancelled {
                location: path.display().to_string(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use schema::ImageShape;

    use super::*;
    use crate::Dataset;

    fn small_dataset(dir: &Path) {
        let shape = ImageShape {
            height: 2,
            width: 2,
            channels: 1,
        };
        crate::testing::write_splits(dir, &[("train", shape, vec![0, 1, 0, 1])]);
    }

    #[test]
    fn decoding_stops_at_the_example_after_a_cancel() {
        let dir = tempfile::tempdir().expect("tmp");
        small_dataset(dir.path());
        let cancel = Cancel::new();
        let dataset =
            Dataset::open_cancellable(dir.path(), crate::Limits::default(), cancel.clone())
                .expect("open");
        let mut seen = 0;
        let err = dataset
            .for_each_example("train", &mut |_| {
                seen += 1;
                cancel.cancel();
                Ok(())
            })
            .expect_err("cancelled");
        assert_eq!(seen, 1);
        assert!(matches!(err, DataError::Cancelled { .. }), "{err}");
        assert!(err.to_string().contains("cancelled"), "{err}");
    }

    #[test]
    fn a_cancelled_archive_is_not_indexed() {
        let dir = tempfile::tempdir().expect("tmp");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("mkdir");
        small_dataset(&data);
        let archive = dir.path().join("data.tar");
        let mut builder = tar::Builder::new(std::fs::File::create(&archive).expect("create"));
        builder.append_dir_all(".", &data).expect("tar");
        builder.finish().expect("finish");

        let cancel = Cancel::new();
        cancel.cancel();
        let err = Dataset::open_cancellable(&archive, crate::Limits::default(), cancel)
            .expect_err("cancelled");
        assert!(matches!(err, DataError::Cancelled { .. }), "{err}");
        // Uncancelled, the same archive opens.
        Dataset::open(&archive, crate::Limits::default()).expect("open");
    }
}
