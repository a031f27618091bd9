//! `DataError`: every way a dataset can fail to decode. Each message names the file (or the
//! archive entry, as `archive:entry`) and the problem, so a user can fix the input.

use std::path::Path;

/// Why a dataset could not be opened or decoded.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Reading a file failed (missing, unreadable, or cut short).
    #[error("{location}: {source}")]
    Io {
        location: String,
        #[source]
        source: std::io::Error,
    },
    /// The content is not what its format requires.
    #[error("{location}: {problem}")]
    Invalid { location: String, problem: String },
    /// The input would exceed a configured limit (a decompression bomb, or simply too large).
    #[error("{location}: {problem}")]
    LimitExceeded { location: String, problem: String },
    /// The disk it is written to is (nearly) full: not the input's fault.
    #[error("{location}: {problem}")]
    NoSpace { location: String, problem: String },
    /// Decoding was stopped by a [`crate::Cancel`] (nobody waits for the result any more).
    #[error("{location}: decoding was cancelled")]
    Cancelled { location: String },
}

impl DataError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            location: path.display().to_string(),
            source,
        }
    }

    pub fn invalid(path: &Path, problem: impl Into<String>) -> Self {
        Self::Invalid {
            location: path.display().to_string(),
            problem: problem.into(),
        }
    }

    pub fn limit(path: &Path, problem: impl Into<String>) -> Self {
        Self::LimitExceeded {
            location: path.display().to_string(),
            problem: problem.into(),
        }
    }

    pub fn no_space(path: &Path, problem: impl Into<String>) -> Self {
        Self::NoSpace {
            location: path.display().to_string(),
            problem: problem.into(),
        }
    }

    /// Rewrites paths of entries inside `archive` (`archive/relative/path`, which reads as a
    /// folder that is not there), in the location and in the problem text, as
    /// `archive:relative/path`.
    pub(crate) fn relocate(self, archive: &Path) -> Self {
        let prefix = archive.display().to_string();
        let rewrite = |text: String| {
            let inside = format!("{prefix}{}", std::path::MAIN_SEPARATOR);
            text.replace(&inside, &format!("{prefix}:"))
        };
        match self {
            Self::Io { location, source } => Self::Io {
                location: rewrite(location),
                source,
            },
            Self::Invalid { location, problem } => Self::Invalid {
                location: rewrite(location),
                problem: rewrite(problem),
            },
            Self::LimitExceeded { location, problem } => Self::LimitExceeded {
                location: rewrite(location),
                problem: rewrite(problem),
            },
            Self::NoSpace { location, problem } => Self::NoSpace {
                location: rewrite(location),
                problem: rewrite(problem),
            },
            Self::Cancelled { location } => Self::Cancelled {
                location: rewrite(location),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relocated_errors_name_archive_entries() {
        let archive = Path::new("/srv/staging/upload.tar");
        let err = DataError::invalid(
            &archive.join("train/b.png"),
            format!(
                "both {} and {} hold it",
                archive.join("x").display(),
                archive.join("y.gz").display()
            ),
        )
        .relocate(archive);
        assert_eq!(
            err.to_string(),
            "/srv/staging/upload.tar:train/b.png: both /srv/staging/upload.tar:x and \
             /srv/staging/upload.tar:y.gz hold it"
        );
        let io = DataError::io(archive, std::io::Error::other("full")).relocate(archive);
        assert_eq!(io.to_string(), "/srv/staging/upload.tar: full");
    }
}
