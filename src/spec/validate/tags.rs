//! Tag selection: [`TagFilter`] (names, globs, semver ranges, exclusions,
//! the latest N) applied to a repository's tags, `tag_version` reading a tag
//! as a version, and the validator's compiling of `tags:` into a filter.

use globset::{Glob, GlobSet, GlobSetBuilder};
use regex::Regex;

use super::{key, Validator};
use crate::spec::diagnostic::SpecProblem;
use crate::spec::located::{Step, Value};
use crate::spec::model::TagSelection;

/// Compiled tag rules.
#[derive(Debug, Clone, Default)]
pub struct TagFilter {
    /// Tags taken by name (a plain list, or `names:`).
    pub names: Vec<String>,
    /// Whether there are rules that need the repository's tag list.
    pub needs_listing: bool,
    glob: Option<GlobSet>,
    regex: Option<Regex>,
    semver: Option<semver::VersionReq>,
    exclude: Option<GlobSet>,
    latest: Option<usize>,
}

/// A tag read as a version: `v1.2.3`, `3.18` (as 3.18.0), `3` (as 3.0.0).
pub fn tag_version(tag: &str) -> Option<semver::Version> {
    let t = tag.strip_prefix('v').unwrap_or(tag);
    if let Ok(v) = semver::Version::parse(t) {
        return Some(v);
    }
    let (core, pre) = match t.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (t, None),
    };
    let parts: Vec<&str> = core.split('.').collect();
    if parts.is_empty()
        || parts.len() > 3
        || parts
            .iter()
            .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let mut padded = parts.join(".");
    for _ in parts.len()..3 {
        padded.push_str(".0");
    }
    if let Some(p) = pre {
        padded.push('-');
        padded.push_str(p);
    }
    semver::Version::parse(&padded).ok()
}

impl TagFilter {
    /// The tags of `all` this filter takes, newest first when `latest` is set.
    pub fn select(&self, all: &[String]) -> Vec<String> {
        let mut chosen: Vec<String> = if self.needs_listing {
            all.iter()
                .filter(|t| self.glob.as_ref().is_none_or(|g| g.is_match(t.as_str())))
                .filter(|t| self.regex.as_ref().is_none_or(|r| r.is_match(t)))
                .filter(|t| {
                    self.semver
                        .as_ref()
                        .is_none_or(|req| tag_version(t).is_some_and(|v| req.matches(&v)))
                })
                .filter(|t| !self.exclude.as_ref().is_some_and(|x| x.is_match(t.as_str())))
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        for n in &self.names {
            if !chosen.contains(n) {
                chosen.push(n.clone());
            }
        }
        if let Some(n) = self.latest {
            let all_versions = chosen.iter().all(|t| tag_version(t).is_some());
            if all_versions {
                chosen.sort_by_key(|t| std::cmp::Reverse(tag_version(t)));
            } else {
                chosen.sort_by(|a, b| b.cmp(a));
            }
            chosen.truncate(n);
        }
        chosen
    }
}

impl Validator<'_> {
    pub(super) fn tags(&mut self, t: &TagSelection, path: &[Step]) -> Option<TagFilter> {
        let mut f = TagFilter::default();
        match t {
            TagSelection::List(names) => {
                if names.is_empty() {
                    let span = self.span(path);
                    self.problem(
                        SpecProblem::new("`tags` is an empty list", span, "no tags").help(
                            "list tags, or give rules such as {glob: \"1.*\"}; leave `tags` out to take every tag",
                        ),
                    );
                }
                f.names = names.clone();
            }
            TagSelection::Rules(r) => {
                let sub = |k: &str| {
                    let mut p = path.to_vec();
                    p.push(key(k));
                    p
                };
                f.names = r.names.clone().unwrap_or_default();
                if let Some(globs) = &r.glob {
                    f.glob = self.globset(globs.as_slice(), &sub("glob"));
                }
                if let Some(re) = &r.regex {
                    match Regex::new(&format!("^(?:{re})$")) {
                        Ok(x) => f.regex = Some(x),
                        Err(e) => {
                            let span = self.span(&sub("regex"));
                            let detail = e.to_string();
                            let last = detail.lines().last().unwrap_or_default().trim().to_string();
                            self.problem(
                                SpecProblem::new(
                                    format!("invalid regex {re:?}: {last}"),
                                    span,
                                    "bad regular expression",
                                )
                                .help("the whole tag must match; for example ^v?[0-9]+\\.[0-9]+$"),
                            );
                        }
                    }
                }
                if let Some(range) = &r.semver {
                    match semver::VersionReq::parse(range) {
                        Ok(req) => f.semver = Some(req),
                        Err(e) => {
                            let span = self.span(&sub("semver"));
                            self.problem(
                                SpecProblem::new(format!("invalid semver range {range:?}: {e}"), span, "bad range")
                                    .help("for example \">=3.18\", \">=1.2, <2\", \"~1.4\" or \"^2\""),
                            );
                        }
                    }
                }
                if !r.exclude.is_empty() {
                    f.exclude = self.globset(&r.exclude, &sub("exclude"));
                }
                if r.latest == Some(0) {
                    let span = self.span(&sub("latest"));
                    self.problem(SpecProblem::new("`latest: 0` selects nothing", span, "0"));
                }
                f.latest = r.latest;
                f.needs_listing = r.glob.is_some() || r.regex.is_some() || r.semver.is_some() || r.latest.is_some();
                if r.names.is_none() && !f.needs_listing && r.exclude.is_empty() {
                    let span = self.span(path);
                    self.problem(
                        SpecProblem::new("`tags` has no rule", span, "empty rules")
                            .help("use names, glob, regex, semver, exclude or latest"),
                    );
                }
                if !r.exclude.is_empty() && r.names.is_none() {
                    f.needs_listing = true;
                }
            }
        }
        Some(f)
    }

    pub(super) fn globset(&mut self, patterns: &[String], path: &[Step]) -> Option<GlobSet> {
        let mut b = GlobSetBuilder::new();
        let mut ok = true;
        for (i, p) in patterns.iter().enumerate() {
            match Glob::new(p) {
                Ok(g) => {
                    b.add(g);
                }
                Err(e) => {
                    ok = false;
                    let node = self.root.at(path);
                    let span = match &node.value {
                        Value::Seq(items) => items.get(i).map(|n| n.span.clone()).unwrap_or(node.span.clone()),
                        _ => node.span.clone(),
                    };
                    let kind = e.kind().to_string();
                    self.problem(
                        SpecProblem::new(format!("invalid glob {p:?}: {kind}"), span, "bad glob")
                            .help("globs use *, ?, [abc] and {a,b}; for example \"3.*\" or \"*-rc*\""),
                    );
                }
            }
        }
        if !ok {
            return None;
        }
        b.build().ok()
    }
}
