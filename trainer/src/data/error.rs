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

    /// Rewrites locations inside `extracted` (a temporary extraction folder) as
    /// `archive:relative/path`, so errors name what the user gave, not a temporary path.
    pub(crate) fn relocate(self, extracted: &Path, archive: &Path) -> Self {
        let rewrite = |location: String| {
            let prefix = extracted.display().to_string();
            match location.strip_prefix(&prefix) {
                Some(rest) => format!(
                    "{}:{}",
                    archive.display(),
                    rest.trim_start_matches(std::path::MAIN_SEPARATOR)
                ),
                None => location,
            }
        };
        match self {
            Self::Io { location, source } => Self::Io {
                location: rewrite(location),
                source,
            },
            Self::Invalid { location, problem } => Self::Invalid {
                location: rewrite(location),
                problem,
            },
            Self::LimitExceeded { location, problem } => Self::LimitExceeded {
                location: rewrite(location),
                problem,
            },
        }
    }
}
