//! Filter `search:pattern=P[,regex=true]`: passes every layer through
//! unchanged and reports the entries whose path matches (layer, path), as
//! `occy search` does. The matcher is shared with that command.

use crate::error::{Error, Result};

/// A compiled path matcher.
pub enum PathMatcher {
    Glob(globset::GlobMatcher),
    Regex(regex::Regex),
}

impl PathMatcher {
    /// Compiles a pattern; errors quote it.
    pub fn new(pattern: &str, regex: bool) -> Result<Self> {
        if regex {
            regex::Regex::new(pattern)
                .map(PathMatcher::Regex)
                .map_err(|e| Error::usage(format!("invalid regular expression {pattern:?}: {e}")))
        } else {
            globset::GlobBuilder::new(pattern)
                .literal_separator(true)
                .build()
                .map(|g| PathMatcher::Glob(g.compile_matcher()))
                .map_err(|e| Error::usage(format!("invalid glob {pattern:?}: {e}")))
        }
    }

    /// Whether a layer path (without leading `./` or `/`) matches. A glob
    /// without `/` also matches the file name alone, as `find -name` does.
    pub fn is_match(&self, path: &str) -> bool {
        match self {
            PathMatcher::Regex(r) => r.is_match(path),
            PathMatcher::Glob(g) => {
                g.is_match(path)
                    || (!g.glob().glob().contains('/') && path.rsplit('/').next().is_some_and(|n| g.is_match(n)))
            }
        }
    }
}

/// Normalises a tar entry path for matching.
pub fn layer_path(raw: &str) -> String {
    raw.trim_start_matches("./")
        .trim_start_matches('/')
        .trim_end_matches('/')
        .to_string()
}
