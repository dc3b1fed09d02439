//! Filters: a chain of named transformations applied to every layer of an
//! image while it streams (`-f NAME[:key=value[,key=value…]]`), in the order
//! given. One file per filter, plus [`tar_stream`], the tar rewriter they
//! share, and [`layer`], which decompresses a layer, runs the chain over its
//! entries, recompresses it and hashes everything in the same pass.

pub mod exclude;
pub mod inspect;
pub mod layer;
pub mod normalize_timestamps;
pub mod pgzip;
pub mod search;
pub mod tar_stream;

use std::path::PathBuf;

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};
use crate::image::Compression;

/// One filter as the user gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterSpec {
    NormalizeTimestamps { ts: u64, config: bool },
    Exclude { patterns: Vec<String> },
    Search { pattern: String, regex: bool },
    Inspect { file: PathBuf },
    Recompress { format: Compression, level: Option<i32> },
}

/// The filter names, for messages.
pub const FILTER_NAMES: &str = "normalize-timestamps, exclude, search, inspect, recompress";

fn parse_bool(filter: &str, key: &str, v: &str) -> Result<bool> {
    match v {
        "true" | "yes" | "1" => Ok(true),
        "false" | "no" | "0" => Ok(false),
        _ => Err(Error::usage(format!(
            "filter {filter}: {key}={v:?} is not a boolean (true or false)"
        ))),
    }
}

impl FilterSpec {
    /// Parses `NAME[:key=value[,key=value…]]`. Unknown names, unknown keys
    /// and bad values are usage errors that quote them.
    pub fn parse(text: &str) -> Result<Self> {
        let (name, args) = match text.split_once(':') {
            Some((n, a)) => (n.trim(), a),
            None => (text.trim(), ""),
        };
        let mut pairs = Vec::new();
        for part in args.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| Error::usage(format!("filter {name}: {part:?} is not key=value (in {text:?})")))?;
            pairs.push((k.trim().to_string(), v.to_string()));
        }
        Self::from_options(name, &pairs, text)
    }

    /// Builds a filter from its name and `(key, value)` options (a key may
    /// repeat: `pattern` of `exclude`). `text` is what the user wrote, quoted
    /// in messages. The sync file's structured filters come here too.
    pub fn from_options(name: &str, pairs: &[(String, String)], text: &str) -> Result<Self> {
        let unknown =
            |k: &str, known: &str| Error::usage(format!("filter {name}: unknown option {k:?} (it takes {known})"));
        match name {
            "normalize-timestamps" => {
                let (mut ts, mut config) = (0u64, false);
                for (k, v) in pairs {
                    match k.as_str() {
                        "ts" => {
                            ts = v.parse().map_err(|_| {
                                Error::usage(format!("filter {name}: ts={v:?} is not a number of seconds since 1970"))
                            })?
                        }
                        "config" => config = parse_bool(name, k, v)?,
                        _ => return Err(unknown(k, "ts, config")),
                    }
                }
                Ok(FilterSpec::NormalizeTimestamps { ts, config })
            }
            "exclude" => {
                let mut patterns = Vec::new();
                for (k, v) in pairs {
                    match k.as_str() {
                        "pattern" => patterns.push(v.clone()),
                        _ => return Err(unknown(k, "pattern")),
                    }
                }
                if patterns.is_empty() {
                    return Err(Error::usage(format!(
                        "filter exclude needs at least one pattern=GLOB (in {text:?})"
                    )));
                }
                // Fail on a bad glob now, not in the middle of a copy.
                exclude::Exclude::new(&patterns)?;
                Ok(FilterSpec::Exclude { patterns })
            }
            "search" => {
                let (mut pattern, mut regex) = (None, false);
                for (k, v) in pairs {
                    match k.as_str() {
                        "pattern" => pattern = Some(v.clone()),
                        "regex" => regex = parse_bool(name, k, v)?,
                        _ => return Err(unknown(k, "pattern, regex")),
                    }
                }
                let pattern =
                    pattern.ok_or_else(|| Error::usage(format!("filter search needs pattern=P (in {text:?})")))?;
                search::PathMatcher::new(&pattern, regex)?;
                Ok(FilterSpec::Search { pattern, regex })
            }
            "inspect" => {
                let mut file = None;
                for (k, v) in pairs {
                    match k.as_str() {
                        "file" => file = Some(PathBuf::from(v)),
                        _ => return Err(unknown(k, "file")),
                    }
                }
                let file = file.ok_or_else(|| Error::usage(format!("filter inspect needs file=PATH (in {text:?})")))?;
                Ok(FilterSpec::Inspect { file })
            }
            "recompress" => {
                let (mut format, mut level) = (None, None);
                for (k, v) in pairs {
                    match k.as_str() {
                        "format" => format = Some(parse_compression(v)?),
                        "level" => {
                            level =
                                Some(v.parse::<i32>().map_err(|_| {
                                    Error::usage(format!("filter recompress: level={v:?} is not a number"))
                                })?)
                        }
                        _ => return Err(unknown(k, "format, level")),
                    }
                }
                let format = format
                    .ok_or_else(|| Error::usage(format!("filter recompress needs format=gzip|zstd (in {text:?})")))?;
                if let Some(l) = level {
                    let ok = match format {
                        Compression::Gzip => (0..=9).contains(&l),
                        Compression::Zstd => (1..=22).contains(&l),
                        Compression::None => true,
                    };
                    if !ok {
                        return Err(Error::usage(format!(
                            "filter recompress: level={l} is out of range for {format:?} (gzip 0-9, zstd 1-22)"
                        )));
                    }
                }
                Ok(FilterSpec::Recompress { format, level })
            }
            other => Err(Error::usage(format!(
                "unknown filter {other:?} in {text:?}; filters are {FILTER_NAMES}"
            ))),
        }
    }

    /// Whether the filter can change a layer's bytes.
    pub fn changes_content(&self) -> bool {
        matches!(
            self,
            FilterSpec::NormalizeTimestamps { .. } | FilterSpec::Exclude { .. } | FilterSpec::Recompress { .. }
        )
    }

    /// A stable text for the chain hash (cache key).
    pub fn canonical(&self) -> String {
        match self {
            FilterSpec::NormalizeTimestamps { ts, config } => format!("normalize-timestamps:ts={ts},config={config}"),
            FilterSpec::Exclude { patterns } => format!("exclude:{}", patterns.join("\u{0}")),
            FilterSpec::Search { pattern, regex } => format!("search:{pattern},{regex}"),
            FilterSpec::Inspect { file } => format!("inspect:{}", file.display()),
            FilterSpec::Recompress { format, level } => format!("recompress:{format:?},{level:?}"),
        }
    }
}

/// `gzip`, `zstd` (or `none`, for uncompressed layers).
pub fn parse_compression(v: &str) -> Result<Compression> {
    match v {
        "gzip" | "gz" => Ok(Compression::Gzip),
        "zstd" => Ok(Compression::Zstd),
        "none" | "uncompressed" => Ok(Compression::None),
        other => Err(Error::usage(format!(
            "compression {other:?} is not one of gzip, zstd, none"
        ))),
    }
}

/// A parsed chain with what the copy engine needs to know about it.
#[derive(Debug, Clone, Default)]
pub struct FilterChain {
    pub filters: Vec<FilterSpec>,
    /// `--compression`: the encoding of rewritten layers (else each keeps its own).
    pub compression: Option<Compression>,
}

impl FilterChain {
    pub fn parse(texts: &[String], compression: Option<Compression>) -> Result<Self> {
        Ok(FilterChain {
            filters: texts.iter().map(|t| FilterSpec::parse(t)).collect::<Result<_>>()?,
            compression,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// Whether layers are rewritten (otherwise they are only observed).
    pub fn changes_content(&self) -> bool {
        self.filters.iter().any(FilterSpec::changes_content)
    }

    /// The timestamp `normalize-timestamps:config=true` sets in the config.
    pub fn config_timestamp(&self) -> Option<u64> {
        self.filters.iter().rev().find_map(|f| match f {
            FilterSpec::NormalizeTimestamps { ts, config: true } => Some(*ts),
            _ => None,
        })
    }

    /// The compression and level for a rewritten layer that came in as `input`.
    pub fn output_compression(&self, input: Compression) -> (Compression, Option<i32>) {
        let last = self.filters.iter().rev().find_map(|f| match f {
            FilterSpec::Recompress { format, level } => Some((*format, *level)),
            _ => None,
        });
        match (last, self.compression) {
            (Some(x), _) => x,
            (None, Some(c)) => (c, None),
            (None, None) => (input, None),
        }
    }

    /// A hash of everything that decides a rewritten layer's bytes.
    pub fn hash(&self) -> String {
        let mut h = Sha256::new();
        for f in &self.filters {
            h.update(f.canonical().as_bytes());
            h.update([0u8]);
        }
        h.update(format!("{:?}", self.compression).as_bytes());
        hex::encode(h.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_filter() {
        assert_eq!(
            FilterSpec::parse("normalize-timestamps").unwrap(),
            FilterSpec::NormalizeTimestamps { ts: 0, config: false }
        );
        assert_eq!(
            FilterSpec::parse("normalize-timestamps:ts=42,config=true").unwrap(),
            FilterSpec::NormalizeTimestamps { ts: 42, config: true }
        );
        assert_eq!(
            FilterSpec::parse("exclude:pattern=**/*.pyc,pattern=tmp/*").unwrap(),
            FilterSpec::Exclude {
                patterns: vec!["**/*.pyc".into(), "tmp/*".into()]
            }
        );
        assert_eq!(
            FilterSpec::parse("search:pattern=^etc/.*,regex=true").unwrap(),
            FilterSpec::Search {
                pattern: "^etc/.*".into(),
                regex: true
            }
        );
        assert_eq!(
            FilterSpec::parse("recompress:format=zstd,level=19").unwrap(),
            FilterSpec::Recompress {
                format: Compression::Zstd,
                level: Some(19)
            }
        );
    }

    #[test]
    fn bad_filters_are_usage_errors_that_quote_the_part() {
        for (text, needle) in [
            ("squash", "\"squash\""),
            ("exclude", "pattern=GLOB"),
            ("exclude:patern=x", "\"patern\""),
            ("normalize-timestamps:ts=yesterday", "\"yesterday\""),
            ("recompress:format=brotli", "\"brotli\""),
            ("recompress:format=gzip,level=12", "level=12"),
            ("search:pattern=[", "\"[\""),
            ("inspect", "file=PATH"),
            ("exclude:pattern", "\"pattern\""),
        ] {
            let err = FilterSpec::parse(text).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{text}");
            assert!(err.to_string().contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn output_compression_follows_recompress_then_the_flag_then_the_input() {
        let c = FilterChain::parse(&["normalize-timestamps".into()], None).unwrap();
        assert_eq!(c.output_compression(Compression::Zstd), (Compression::Zstd, None));
        let c = FilterChain::parse(&["normalize-timestamps".into()], Some(Compression::Gzip)).unwrap();
        assert_eq!(c.output_compression(Compression::Zstd), (Compression::Gzip, None));
        let c = FilterChain::parse(&["recompress:format=zstd,level=5".into()], Some(Compression::Gzip)).unwrap();
        assert_eq!(c.output_compression(Compression::Gzip), (Compression::Zstd, Some(5)));
        assert_ne!(
            FilterChain::parse(&["normalize-timestamps:ts=1".into()], None)
                .unwrap()
                .hash(),
            FilterChain::parse(&["normalize-timestamps:ts=2".into()], None)
                .unwrap()
                .hash()
        );
    }
}
