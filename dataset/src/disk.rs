//! Free disk space: uploads stop while a margin is still free, so a large or
//! hostile dataset cannot fill the disk that the database and other uploads share.

use std::path::Path;

use super::DataError;

/// Bytes available to this process on the file system holding `path` (its nearest existing
/// ancestor); None where the platform cannot tell.
pub fn free_bytes(path: &Path) -> Option<u64> {
    let existing = path.ancestors().find(|p| p.exists())?;
    let stats = rustix::fs::statvfs(existing).ok()?;
    Some(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// `Err(NoSpace)` when less than `margin` bytes are free where `path` is written.
pub fn ensure_free(path: &Path, margin: u64) -> Result<(), DataError> {
    match free_bytes(path) {
        Some(free) if free < margin => Err(DataError::no_space(
            path,
            format!(
                "the disk is nearly full: {} free, and {} must stay free \
                 (--min-free-space); free some space or lower the margin",
                bytesize::ByteSize(free),
                bytesize::ByteSize(margin)
            ),
        )),
        _ => Ok(()),
    }
}

/// The error for a write the disk refused (`StorageFull`).
pub fn full(path: &Path) -> DataError {
    DataError::no_space(path, "the disk is full; free some space and try again")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_is_read_and_the_margin_enforced() {
        let dir = tempfile::tempdir().expect("tmp");
        let free = free_bytes(&dir.path().join("not/yet/made")).expect("statvfs");
        assert!(free > 0);
        assert!(ensure_free(dir.path(), 0).is_ok());
        let err = ensure_free(dir.path(), u64::MAX).expect_err("no disk is that large");
        assert!(matches!(err, DataError::NoSpace { .. }), "{err}");
        assert!(err.to_string().contains("--min-free-space"), "{err}");
    }
}
