//! Filter `exclude:pattern=GLOB[,pattern=GLOB…]`: drops the entries whose
//! path matches any pattern (`**` crosses directories, `*` does not); a
//! directory that matches drops everything below it. Whiteout entries
//! (`.wh.*`) are kept unless a pattern names the whiteout itself, so an
//! exclusion never resurrects a file a lower layer deleted.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use super::tar_stream::{TarEntry, Verdict};
use crate::error::{Error, Result};

/// Compiled exclude patterns.
#[derive(Debug, Clone)]
pub struct Exclude {
    set: GlobSet,
    /// The patterns that name whiteouts (contain `.wh.`): only these drop one.
    whiteout_set: GlobSet,
}

impl Exclude {
    pub fn new(patterns: &[String]) -> Result<Self> {
        let mut b = GlobSetBuilder::new();
        let mut w = GlobSetBuilder::new();
        for p in patterns {
            let clean = p.trim_start_matches("./").trim_start_matches('/');
            let glob = GlobBuilder::new(clean)
                .literal_separator(true)
                .build()
                .map_err(|e| Error::usage(format!("exclude pattern {p:?}: {e}")))?;
            if clean.contains(".wh.") {
                w.add(glob.clone());
            }
            b.add(glob);
        }
        let build = |b: GlobSetBuilder| b.build().map_err(|e| Error::usage(format!("exclude patterns: {e}")));
        Ok(Exclude {
            set: build(b)?,
            whiteout_set: build(w)?,
        })
    }

    /// Whether `path` or one of its parent directories matches.
    pub fn matches(&self, path: &str) -> bool {
        let path = path.trim_end_matches('/');
        if path.is_empty() {
            return false;
        }
        let is_whiteout = path.rsplit('/').next().is_some_and(|n| n.starts_with(".wh."));
        if is_whiteout {
            // Only a pattern that names whiteouts (`.wh.`) removes one.
            return self.whiteout_set.is_match(path);
        }
        let mut prefix = String::with_capacity(path.len());
        for (i, part) in path.split('/').enumerate() {
            if i > 0 {
                prefix.push('/');
            }
            prefix.push_str(part);
            if self.set.is_match(&prefix) {
                return true;
            }
        }
        false
    }

    pub fn entry(&self, entry: &TarEntry) -> Verdict {
        if self.matches(&entry.path) {
            Verdict::Drop
        } else {
            Verdict::Keep
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(p: &[&str]) -> Exclude {
        Exclude::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn star_stays_in_a_directory_and_double_star_crosses() {
        let e = ex(&["*.log"]);
        assert!(e.matches("a.log"));
        assert!(!e.matches("var/a.log"));
        let e = ex(&["**/*.log"]);
        assert!(e.matches("var/log/a.log"));
        assert!(e.matches("a.log"));
    }

    #[test]
    fn a_matching_directory_takes_its_contents() {
        let e = ex(&["usr/share/doc", "var/cache/*"]);
        assert!(e.matches("usr/share/doc"));
        assert!(e.matches("usr/share/doc/x/y.txt"));
        assert!(!e.matches("usr/share/docs"));
        assert!(e.matches("var/cache/apt/archives/x.deb"));
        assert!(!e.matches("var/cache"));
    }

    #[test]
    fn two_patterns_both_apply() {
        let e = ex(&["**/*.pyc", "tmp"]);
        assert!(e.matches("app/x.pyc"));
        assert!(e.matches("tmp/x"));
        assert!(!e.matches("app/x.py"));
    }

    #[test]
    fn whiteouts_go_only_when_named() {
        let e = ex(&["etc", "usr/share/doc/*"]);
        assert!(!e.matches("etc/.wh.passwd"));
        assert!(!e.matches("usr/share/doc/.wh..wh..opq"));
        assert!(e.matches("usr/share/doc/README"));
        assert!(e.matches("etc/passwd"));
        let e = ex(&["etc/.wh.*"]);
        assert!(e.matches("etc/.wh.passwd"));
    }

    #[test]
    fn bad_patterns_are_usage_errors() {
        let err = Exclude::new(&["a[".to_string()]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }
}
