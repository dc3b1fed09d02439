//! From a parsed sync file to a [`SyncSpec`] occy can plan: references
//! parsed, tag rules compiled, filter chains built, templates checked,
//! credentials looked up in the environment. Every problem found is reported
//! at once, each pointing at its place in the file.
//!
//! This module holds the validator; the validated types are in `validated`,
//! tag selection (names, globs, semver, `latest`) in `tags`.

mod tags;
mod validated;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};
use crate::filter::{parse_compression, FilterChain, FilterSpec};
use crate::image::cosign::PublicKey;
use crate::image::notation::NotationPolicy;
use crate::image::sigstore::{Identity, KeylessPolicy, TrustedRoot};
use crate::image::{Compression, Platform};
use crate::reference::Reference;
use crate::source::PlatformSelection;
use crate::spec::diagnostic::{closest, SpecProblem, SpecSource};
use crate::spec::located::{self, path_text, Node, Step, Value};
use crate::spec::model::{
    Destinations, FilterChoice, FilterStep, Keyless, Notation, OptionValue, Platforms, Referrers, SyncFile,
    TagSelection, Verify,
};
use std::sync::Arc;

pub use tags::{tag_version, TagFilter};
pub(crate) use validated::template_fields;
pub use validated::{
    DestTemplate, Entry, HostAccess, ReferrerPolicy, Settings, SyncSpec, TemplateFields, VerifyKeys, TEMPLATE_FIELDS,
};

/// Reads, parses and validates a sync file.
pub fn load(path: &Path) -> Result<SyncSpec> {
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::usage(format!(
            "sync file {} does not exist: check the path, or start from one in examples/ (docs/sync.md describes every key)",
            path.display()
        )),
        _ => Error::io("read the sync file", path, e),
    })?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::usage(format!("{}: the sync file is not UTF-8 text", path.display())))?;
    parse(path, text)
}

/// Whether the file is TOML (by its extension; everything else is YAML,
/// which also reads JSON).
fn is_toml(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("toml"))
}

/// Parses and validates sync-file text; `path` names it in messages and
/// chooses the format.
pub fn parse(path: &Path, text: String) -> Result<SyncSpec> {
    let source = SpecSource::new(path, text);
    let parsed = if is_toml(path) {
        located::parse_toml(&source.text)
    } else {
        located::parse_yaml(&source.text)
    };
    let root = match parsed {
        Ok(root) => root,
        Err(e) => {
            let format = if is_toml(path) { "TOML" } else { "YAML" };
            let problem = match e.span {
                Some(span) => SpecProblem::new(format!("invalid {format}: {}", e.message), span, "here"),
                None => SpecProblem {
                    message: format!("invalid {format}: {}", e.message),
                    span: None,
                    label: String::new(),
                    help: None,
                    related: Vec::new(),
                },
            };
            return Err(source.error(problem));
        }
    };
    if !matches!(root.value, Value::Map(_)) {
        return Err(source.error(
            SpecProblem::new(
                "a sync file is a map",
                root.span.clone(),
                "expected `version:` and `sync:` here",
            )
            .help("start with:\nversion: 1\nsync:\n  - from: registry://HOST/REPO:TAG\n    to: oci:///PATH"),
        ));
    }
    let file: SyncFile = match serde_path_to_error::deserialize(root.to_json()) {
        Ok(f) => f,
        Err(e) => return Err(source.error(model_problem(&root, &e))),
    };
    let hash = hex::encode(Sha256::digest(source.text.as_bytes()));
    let base_dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut v = Validator {
        root: &root,
        text: &source.text,
        base_dir: &base_dir,
        problems: Vec::new(),
    };
    let spec = v.validate(&file);
    if !v.problems.is_empty() {
        return Err(source.errors(v.problems));
    }
    let mut entries = spec.2;
    for e in &mut entries {
        e.from = rebase(&e.from, &base_dir);
    }
    Ok(SyncSpec {
        source,
        root,
        hash,
        base_dir,
        settings: spec.0,
        registries: spec.1,
        entries,
    })
}

/// Turns a serde error at a path into a problem at that place.
fn model_problem(root: &Node, e: &serde_path_to_error::Error<serde_json::Error>) -> SpecProblem {
    let path: Vec<Step> = e
        .path()
        .iter()
        .filter_map(|seg| match seg {
            serde_path_to_error::Segment::Map { key } => Some(Step::Key(key.clone())),
            serde_path_to_error::Segment::Seq { index } => Some(Step::Index(*index)),
            _ => None,
        })
        .collect();
    let inner = e.inner().to_string();
    let inner = inner.split(" at line ").next().unwrap_or(&inner).to_string();
    // Unknown key: point at the key, suggest the closest known one.
    if let Some(rest) = inner.strip_prefix("unknown field `") {
        let key = rest.split('`').next().unwrap_or_default().to_string();
        let known: Vec<&str> = rest.split('`').skip(2).step_by(2).collect();
        let parent = if path.last() == Some(&Step::Key(key.clone())) {
            &path[..path.len() - 1]
        } else {
            &path[..]
        };
        let mut full = parent.to_vec();
        full.push(Step::Key(key.clone()));
        let span = root.key_span(&full);
        let where_ = if parent.is_empty() {
            "at the top level".to_string()
        } else {
            format!("in `{}`", path_text(parent))
        };
        let help = match closest(&key, known.iter().copied()) {
            Some(k) => format!("did you mean `{k}`?"),
            None => format!("known keys here: {}", known.join(", ")),
        };
        return SpecProblem::new(format!("unknown key `{key}` {where_}"), span, "unknown key").help(help);
    }
    if let Some(rest) = inner.strip_prefix("missing field `") {
        let key = rest.split('`').next().unwrap_or_default();
        let node = root.at(&path);
        let span = node.span.start..node.span.start + 1;
        let where_ = if path.is_empty() {
            "the sync file".to_string()
        } else {
            format!("`{}`", path_text(&path))
        };
        return SpecProblem::new(format!("{where_} needs `{key}`"), span, format!("`{key}` missing here"))
            .help(missing_help(key));
    }
    let node = root.at(&path);
    let at = if path.is_empty() {
        String::new()
    } else {
        format!("`{}`: ", path_text(&path))
    };
    SpecProblem::new(format!("{at}{inner}"), node.span.clone(), "wrong value").help(type_help(&path))
}

fn missing_help(key: &str) -> String {
    match key {
        "version" => "add `version: 1` at the top".to_string(),
        "sync" => "add a `sync:` list of entries, each with `from:` and `to:`".to_string(),
        "from" => "each entry copies `from:` a source, e.g. from: registry://HOST/REPO:TAG".to_string(),
        "to" => "each entry needs `to:`, a destination or a list of them".to_string(),
        other => format!("add `{other}`"),
    }
}

fn type_help(path: &[Step]) -> String {
    let last = path.iter().rev().find_map(|s| match s {
        Step::Key(k) => Some(k.as_str()),
        Step::Index(_) => None,
    });
    match last {
        Some("to") => {
            "write one destination, or a list: to: [registry://HOST/REPO, tar:///PATH/{name}-{tag}.tar]".into()
        }
        Some("tags") => "a list (tags: [\"1.0\", \"1.1\"]) or rules (tags: {semver: \">=1.0\", glob: \"1.*\"})".into(),
        Some("platforms") => "\"all\" or a list such as [linux/amd64, linux/arm64]".into(),
        Some("check") => "one of off, fast, full".into(),
        Some("parallel" | "image_parallel" | "retries" | "latest") => "a whole number".into(),
        Some("rate_limit") => "requests per second, a number".into(),
        _ => "see docs/sync.md for every key and its type".into(),
    }
}

struct Validator<'a> {
    root: &'a Node,
    /// The file's text (whether a value was quoted).
    text: &'a str,
    /// The sync file's directory: key paths start there.
    base_dir: &'a Path,
    problems: Vec<SpecProblem>,
}

fn key(k: &str) -> Step {
    Step::Key(k.to_string())
}

type Validated = (Settings, BTreeMap<String, HostAccess>, Vec<Entry>);

impl Validator<'_> {
    fn span(&self, path: &[Step]) -> Range<usize> {
        self.root.at(path).span.clone()
    }

    fn problem(&mut self, p: SpecProblem) {
        self.problems.push(p);
    }

    fn validate(&mut self, file: &SyncFile) -> Validated {
        if file.version != 1 {
            let span = self.span(&[key("version")]);
            self.problem(
                SpecProblem::new(format!("unsupported version {}", file.version), span, "expected 1")
                    .help("this occy reads version 1 sync files"),
            );
        }
        let settings = self.settings(file);
        let registries = self.registries(file);
        let mut chains = BTreeMap::new();
        for (name, steps) in &file.filters {
            let path = vec![key("filters"), key(name)];
            if let Some(chain) = self.chain(steps, &path, settings.compression) {
                chains.insert(name.clone(), chain);
            }
        }
        if file.sync.is_empty() {
            let span = self.root.key_span(&[key("sync")]);
            self.problem(
                SpecProblem::new("`sync` is empty: nothing to do", span, "no entries")
                    .help("add entries such as:\n  - from: registry://HOST/REPO:TAG\n    to: oci:///PATH"),
            );
        }
        let mut entries = Vec::new();
        for (i, e) in file.sync.iter().enumerate() {
            if let Some(entry) = self.entry(i, e, &chains, &settings) {
                entries.push(entry);
            }
        }
        (settings, registries, entries)
    }

    fn settings(&mut self, file: &SyncFile) -> Settings {
        let d = &file.defaults;
        let platforms = d
            .platforms
            .as_ref()
            .and_then(|p| self.platforms(p, &[key("defaults"), key("platforms")]));
        let compression = d.compression.as_deref().and_then(|c| match parse_compression(c) {
            Ok(c) => Some(c),
            Err(e) => {
                let span = self.span(&[key("defaults"), key("compression")]);
                self.problem(SpecProblem::new(e.to_string(), span, "unknown compression").help("gzip or zstd"));
                None
            }
        });
        for (field, value) in [("parallel", d.parallel), ("image_parallel", d.image_parallel)] {
            if value == Some(0) {
                let span = self.span(&[key("defaults"), key(field)]);
                self.problem(SpecProblem::new(
                    format!("`{field}` must be at least 1"),
                    span,
                    "0 would do nothing",
                ));
            }
        }
        if let Some(r) = d.rate_limit {
            if r < 0.0 || !r.is_finite() {
                let span = self.span(&[key("defaults"), key("rate_limit")]);
                self.problem(
                    SpecProblem::new(format!("invalid rate_limit {r}"), span, "not a rate")
                        .help("requests per second per registry host; 0 for unlimited"),
                );
            }
        }
        let verify = d
            .verify
            .as_ref()
            .and_then(|v| self.verify(v, &[key("defaults"), key("verify")]));
        Settings {
            verify,
            platforms,
            parallel: d.parallel,
            image_parallel: d.image_parallel,
            rate_limit: d.rate_limit,
            retries: d.retries,
            check: d.check,
            compression,
            referrers: d
                .referrers
                .as_ref()
                .and_then(|r| self.referrers(r, &[key("defaults"), key("referrers")])),
        }
    }

    fn referrers(&mut self, r: &Referrers, path: &[Step]) -> Option<ReferrerPolicy> {
        match r {
            Referrers::Keyword(k) if k == "all" => Some(ReferrerPolicy::All),
            Referrers::Keyword(k) if k == "none" => Some(ReferrerPolicy::None),
            Referrers::Keyword(k) => {
                let span = self.span(path);
                self.problem(
                    SpecProblem::new(
                        format!("`referrers: {k}` is not understood"),
                        span,
                        "expected all, none or a list",
                    )
                    .help("referrers: all, referrers: none, or referrers: [signature, application/spdx+json]"),
                );
                None
            }
            Referrers::List(list) => {
                for (i, t) in list.iter().enumerate() {
                    let known_word = matches!(t.as_str(), "signature" | "attestation" | "sbom");
                    if !known_word && !looks_like_media_type(t) {
                        let mut at = path.to_vec();
                        at.push(Step::Index(i));
                        let span = self.span(&at);
                        self.problem(
                            SpecProblem::new(
                                format!("{t:?} is not an artifact type"),
                                span,
                                "expected TYPE/SUBTYPE, signature, attestation or sbom",
                            )
                            .help("for example application/spdx+json, application/vnd.cyclonedx+json or signature"),
                        );
                    }
                }
                Some(ReferrerPolicy::Types(list.clone()))
            }
        }
    }

    fn platforms(&mut self, p: &Platforms, path: &[Step]) -> Option<PlatformSelection> {
        match p {
            Platforms::Keyword(k) if k == "all" => Some(PlatformSelection::All),
            Platforms::Keyword(k) => {
                let span = self.span(path);
                self.problem(
                    SpecProblem::new(
                        format!("`platforms: {k}` is not understood"),
                        span,
                        "expected \"all\" or a list",
                    )
                    .help("platforms: all, or platforms: [linux/amd64, linux/arm64]"),
                );
                None
            }
            Platforms::List(list) => {
                let mut out = Vec::new();
                for (i, s) in list.iter().enumerate() {
                    match Platform::parse(s) {
                        Ok(p) => out.push(p),
                        Err(e) => {
                            let mut at = path.to_vec();
                            at.push(Step::Index(i));
                            let span = self.span(&at);
                            self.problem(
                                SpecProblem::new(e.to_string(), span, "not OS/ARCH[/VARIANT]")
                                    .help("for example linux/amd64 or linux/arm/v7"),
                            );
                        }
                    }
                }
                Some(PlatformSelection::List(out))
            }
        }
    }

    fn registries(&mut self, file: &SyncFile) -> BTreeMap<String, HostAccess> {
        let mut out = BTreeMap::new();
        for (host, r) in &file.registries {
            let base = vec![key("registries"), key(host)];
            let mut env = |field: &str, var: &Option<String>| -> Option<String> {
                let var = var.as_ref()?;
                match std::env::var(var) {
                    Ok(v) if !v.is_empty() => Some(v),
                    _ => {
                        let mut at = base.clone();
                        at.push(key(field));
                        let span = self.span(&at);
                        self.problem(
                            SpecProblem::new(
                                format!("the environment variable {var} is not set (credentials for {host})"),
                                span,
                                format!("{var} is empty or unset"),
                            )
                            .help(format!("export {var}=... before running occy, or remove `{field}`")),
                        );
                        None
                    }
                }
            };
            let username = env("username_env", &r.username_env);
            let password = env("password_env", &r.password_env);
            let token = env("token_env", &r.token_env);
            if r.password_env.is_some() && r.username_env.is_none() {
                let span = self.root.key_span(&[key("registries"), key(host), key("password_env")]);
                self.problem(
                    SpecProblem::new(
                        format!("{host}: password_env without username_env"),
                        span,
                        "no user name",
                    )
                    .help("add username_env, or use token_env for a token"),
                );
            }
            if let Some(dir) = &r.cert_dir {
                if !dir.is_dir() {
                    let span = self.span(&[key("registries"), key(host), key("cert_dir")]);
                    self.problem(SpecProblem::new(
                        format!("cert_dir {} is not a directory", dir.display()),
                        span,
                        "no such directory",
                    ));
                }
            }
            out.insert(
                host.clone(),
                HostAccess {
                    insecure: r.insecure,
                    username,
                    password,
                    token,
                    authfile: r.authfile.clone(),
                    cert_dir: r.cert_dir.clone(),
                },
            );
        }
        out
    }

    fn chain(&mut self, steps: &[FilterStep], path: &[Step], compression: Option<Compression>) -> Option<FilterChain> {
        let mut filters = Vec::new();
        let mut ok = true;
        for (i, step) in steps.iter().enumerate() {
            let mut at = path.to_vec();
            at.push(Step::Index(i));
            let result = match step {
                FilterStep::Name(text) => FilterSpec::parse(text),
                FilterStep::WithOptions(map) => {
                    if map.len() != 1 {
                        let span = self.span(&at);
                        self.problem(
                            SpecProblem::new("a filter map names exactly one filter", span, "here")
                                .help("write each filter as its own list item: - exclude: {patterns: [\"tmp/**\"]}"),
                        );
                        ok = false;
                        continue;
                    }
                    let Some((name, opts)) = map.iter().next() else {
                        continue;
                    };
                    let mut pairs = Vec::new();
                    for (k, v) in opts {
                        // `patterns: [...]` reads better than repeating `pattern`.
                        let k = if name == "exclude" && k == "patterns" {
                            "pattern"
                        } else {
                            k.as_str()
                        };
                        match v {
                            OptionValue::Bool(b) => pairs.push((k.to_string(), b.to_string())),
                            OptionValue::Int(n) => pairs.push((k.to_string(), n.to_string())),
                            OptionValue::Text(s) => pairs.push((k.to_string(), s.clone())),
                            OptionValue::List(l) => pairs.extend(l.iter().map(|s| (k.to_string(), s.clone()))),
                        }
                    }
                    FilterSpec::from_options(name, &pairs, name)
                }
            };
            match result {
                Ok(f) => filters.push(f),
                Err(e) => {
                    ok = false;
                    let span = self.span(&at);
                    let message = e.to_string();
                    let help = if message.contains("unknown filter") {
                        let name = match step {
                            FilterStep::Name(t) => t.split(':').next().unwrap_or_default().to_string(),
                            FilterStep::WithOptions(m) => m.keys().next().cloned().unwrap_or_default(),
                        };
                        match closest(
                            &name,
                            ["normalize-timestamps", "exclude", "search", "inspect", "recompress"],
                        ) {
                            Some(k) => format!("did you mean `{k}`?"),
                            None => format!("filters are {}", crate::filter::FILTER_NAMES),
                        }
                    } else {
                        "see docs/filters.md for each filter's options".to_string()
                    };
                    self.problem(SpecProblem::new(message, span, "this filter").help(help));
                }
            }
        }
        ok.then_some(FilterChain { filters, compression })
    }

    fn entry(
        &mut self,
        i: usize,
        e: &super::model::SyncEntry,
        chains: &BTreeMap<String, FilterChain>,
        settings: &Settings,
    ) -> Option<Entry> {
        let base = vec![key("sync"), Step::Index(i)];
        let at = |k: &str| {
            let mut p = base.clone();
            p.push(key(k));
            p
        };
        let from_span = self.span(&at("from"));
        let from = match Reference::parse(&e.from) {
            Ok(r) => r,
            Err(err) => {
                self.problem(SpecProblem::new(err.to_string(), from_span, "not a source reference"));
                return None;
            }
        };
        match &from {
            Reference::Bundle { .. } => {
                self.problem(
                    SpecProblem::new("bundle:// can only be a destination", from_span.clone(), "not a source")
                        .help("sources are registry://, quay://, oci://, tar://, dir:// and docker://"),
                );
                return None;
            }
            Reference::Oci { oci_format: true, .. } => {
                self.problem(
                    SpecProblem::new(
                        "?format=oci applies to a destination, not a source",
                        from_span.clone(),
                        "not a source option",
                    )
                    .help("format=oci converts what occy writes into an OCI layout; put it on the `to` reference"),
                );
                return None;
            }
            Reference::Registry(r) if r.tag.is_some() && e.tags.is_some() => {
                let span = self.root.key_span(&at("tags"));
                self.problem(
                    SpecProblem::new(
                        format!(
                            "`from` names the tag {:?} and `tags` selects tags too",
                            r.tag.as_deref().unwrap_or_default()
                        ),
                        span,
                        "tags given twice",
                    )
                    .also(from_span.clone(), "tag here")
                    .help("drop the tag from `from`, or drop `tags`"),
                );
            }
            Reference::Registry(r) if r.digest.is_some() && e.tags.is_some() => {
                let span = self.root.key_span(&at("tags"));
                self.problem(
                    SpecProblem::new(
                        "`from` is pinned to a digest; `tags` cannot apply",
                        span,
                        "tags with a digest",
                    )
                    .also(from_span.clone(), "digest here"),
                );
            }
            Reference::Registry(_)
            | Reference::Quay { .. }
            | Reference::Archive { .. }
            | Reference::Oci { tag: None, .. } => {}
            _ if e.tags.is_some() => {
                let span = self.root.key_span(&at("tags"));
                self.problem(
                    SpecProblem::new(
                        format!(
                            "`tags` applies to registry://, quay://, archive:// and oci:// (without a tag) sources, not {}",
                            from.scheme()
                        ),
                        span,
                        "no tags to choose",
                    )
                    .also(from_span.clone(), "this source holds one image"),
                );
            }
            _ => {}
        }
        let tags = e.tags.as_ref().and_then(|t| self.tags(t, &at("tags")));
        let platforms = e.platforms.as_ref().and_then(|p| self.platforms(p, &at("platforms")));
        let referrers = e
            .referrers
            .as_ref()
            .and_then(|r| self.referrers(r, &at("referrers")))
            .or_else(|| settings.referrers.clone());
        let (chain, chain_name) = match &e.filters {
            // No filters: `defaults.compression` still says how layers that
            // arrive uncompressed are compressed for a registry.
            None => (
                FilterChain {
                    filters: Vec::new(),
                    compression: settings.compression,
                },
                None,
            ),
            Some(FilterChoice::Named(name)) => match chains.get(name) {
                Some(c) => (c.clone(), Some(name.clone())),
                None => {
                    let span = self.span(&at("filters"));
                    let help = match closest(name, chains.keys().map(String::as_str)) {
                        Some(k) => format!("did you mean `{k}`?"),
                        None if chains.is_empty() => "define it under `filters:` at the top level".to_string(),
                        None => format!(
                            "chains defined under `filters:`: {}",
                            chains.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    };
                    self.problem(
                        SpecProblem::new(format!("unknown filter chain `{name}`"), span, "not defined").help(help),
                    );
                    (FilterChain::default(), None)
                }
            },
            Some(FilterChoice::Chain(steps)) => (
                self.chain(steps, &at("filters"), settings.compression)
                    .unwrap_or_default(),
                Some("inline".to_string()),
            ),
        };
        let verify = match &e.verify {
            Some(v) => self.verify(v, &at("verify")),
            None => settings.verify.clone(),
        };
        if verify.is_some()
            && !matches!(
                from,
                Reference::Registry(_) | Reference::Quay { .. } | Reference::Oci { .. } | Reference::Archive { .. }
            )
        {
            let (span, label) = match &e.verify {
                Some(_) => (self.root.key_span(&at("verify")), "verify here"),
                None => (
                    self.root.key_span(&[key("defaults"), key("verify")]),
                    "from defaults.verify",
                ),
            };
            self.problem(
                SpecProblem::new(
                    format!(
                        "`verify` needs a registry://, quay:// or oci:// source, not {}: signatures are kept beside the image (cosign tags, OCI referrers), which only registries and OCI layouts hold",
                        from.scheme()
                    ),
                    from_span.clone(),
                    "no signatures to read here",
                )
                .also(span, label)
                .help("verify the image where it comes from a registry or an OCI layout, or give this entry no verify (and no defaults.verify)"),
            );
        }
        let many = from_expands(&from, e.tags.as_ref());
        let mut to = Vec::new();
        let dests = e.to.as_slice();
        for (j, text) in dests.iter().enumerate() {
            let path = match &e.to {
                Destinations::One(_) => at("to"),
                Destinations::Many(_) => {
                    let mut p = at("to");
                    p.push(Step::Index(j));
                    p
                }
            };
            let span = self.span(&path);
            if let Some(d) = self.destination(text, span, many) {
                to.push(d);
            }
        }
        Some(Entry {
            index: i,
            from,
            from_span,
            tags,
            platforms,
            chain,
            chain_name,
            verify,
            referrers,
            to,
        })
    }

    /// Reads the public keys `verify:` names (relative to the sync file's
    /// directory); a key that cannot be read or is not a key is a problem
    /// at its place.
    fn verify(&mut self, v: &Verify, path: &[Step]) -> Option<VerifyKeys> {
        let mut named: Vec<(&PathBuf, Vec<Step>)> = Vec::new();
        if let Some(k) = &v.cosign_key {
            let mut at = path.to_vec();
            at.push(key("cosign_key"));
            named.push((k, at));
        }
        for (i, k) in v.cosign_keys.iter().flatten().enumerate() {
            let mut at = path.to_vec();
            at.push(key("cosign_keys"));
            at.push(Step::Index(i));
            named.push((k, at));
        }
        if named.is_empty() && v.keyless.is_none() && v.notation.is_none() {
            let span = self.span(path);
            self.problem(
                SpecProblem::new("`verify` names no key", span, "no cosign_key, cosign_keys, keyless nor notation")
                    .help("verify: {cosign_key: keys/cosign.pub}, cosign_keys: [keys/a.pub, keys/b.pub], keyless: {issuer: URL, identity: NAME, trusted_root: trusted_root.json} or notation: {trust_store: DIR, trust_policy: trustpolicy.json}"),
            );
            return None;
        }
        let mut ok = true;
        let keyless = match &v.keyless {
            None => None,
            Some(k) => {
                let mut at = path.to_vec();
                at.push(key("keyless"));
                let r = self.keyless(k, &at);
                ok &= r.is_some();
                r
            }
        };
        let notation = match &v.notation {
            None => None,
            Some(n) => {
                let mut at = path.to_vec();
                at.push(key("notation"));
                let r = self.notation(n, &at);
                ok &= r.is_some();
                r
            }
        };
        let wanted = named.len();
        let mut keys = Vec::new();
        for (written, at) in named {
            let span = self.span(&at);
            let name = written.display().to_string();
            let file = if written.is_relative() {
                normalize(&self.base_dir.join(written))
            } else {
                written.clone()
            };
            let text = match std::fs::read(&file) {
                Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                Err(e) => {
                    let why = match e.kind() {
                        std::io::ErrorKind::NotFound => "no such file".to_string(),
                        _ => e.to_string(),
                    };
                    self.problem(
                        SpecProblem::new(
                            format!("cannot read the cosign key {name} ({}): {why}", file.display()),
                            span,
                            "this key",
                        )
                        .help("key paths are relative to the sync file's directory; export a key with `cosign public-key --key cosign.key > cosign.pub`"),
                    );
                    continue;
                }
            };
            match PublicKey::from_pem(&name, &text) {
                Ok(k) => keys.push(k),
                Err(why) => self.problem(SpecProblem::new(why, span, "not a public key")),
            }
        }
        (ok && keys.len() == wanted).then_some(VerifyKeys {
            keys,
            keyless,
            notation,
        })
    }

    /// A path of `verify:` relative to the sync file's directory.
    fn verify_path(&self, written: &Path) -> PathBuf {
        if written.is_relative() {
            normalize(&self.base_dir.join(written))
        } else {
            written.to_path_buf()
        }
    }

    /// `verify: {keyless: …}`: the trusted root read, the identity or its
    /// regular expression compiled.
    fn keyless(&mut self, k: &Keyless, at: &[Step]) -> Option<Arc<KeylessPolicy>> {
        let step = |name: &str| {
            let mut p = at.to_vec();
            p.push(key(name));
            p
        };
        let identity = match (&k.identity, &k.identity_regexp) {
            (Some(i), None) => Some(Identity::Exact(i.clone())),
            (None, Some(r)) => match regex::Regex::new(r) {
                Ok(re) => Some(Identity::Regexp(re)),
                Err(e) => {
                    let span = self.span(&step("identity_regexp"));
                    self.problem(SpecProblem::new(
                        format!("identity_regexp {r:?} is not a regular expression: {e}"),
                        span,
                        "this expression",
                    ));
                    None
                }
            },
            _ => {
                let span = self.span(at);
                self.problem(
                    SpecProblem::new(
                        "`keyless` needs exactly one of identity and identity_regexp",
                        span,
                        "here",
                    )
                    .help("identity: alice@example.com, or identity_regexp: ^https://github.com/org/.*$"),
                );
                None
            }
        };
        let file = self.verify_path(&k.trusted_root);
        let name = k.trusted_root.display().to_string();
        let root = match std::fs::read(&file) {
            Ok(bytes) => match TrustedRoot::from_json(&name, &bytes) {
                Ok(r) => Some(r),
                Err(why) => {
                    let span = self.span(&step("trusted_root"));
                    self.problem(SpecProblem::new(why, span, "this trusted root"));
                    None
                }
            },
            Err(e) => {
                let span = self.span(&step("trusted_root"));
                self.problem(
                    SpecProblem::new(
                        format!("cannot read the trusted root {name} ({}): {e}", file.display()),
                        span,
                        "this file",
                    )
                    .help("paths are relative to the sync file's directory; get trusted_root.json from the sigstore TUF repository (see docs/sync.md, Verifying signatures)"),
                );
                None
            }
        };
        Some(Arc::new(KeylessPolicy {
            issuer: k.issuer.clone(),
            identity: identity?,
            root: Arc::new(root?),
        }))
    }

    /// `verify: {notation: …}`: the trust policy and the stores it names read.
    fn notation(&mut self, n: &Notation, at: &[Step]) -> Option<Arc<NotationPolicy>> {
        let mut policy_at = at.to_vec();
        policy_at.push(key("trust_policy"));
        let span = self.span(&policy_at);
        let file = self.verify_path(&n.trust_policy);
        let name = n.trust_policy.display().to_string();
        let bytes = match std::fs::read(&file) {
            Ok(b) => b,
            Err(e) => {
                self.problem(SpecProblem::new(
                    format!("cannot read the trust policy {name} ({}): {e}", file.display()),
                    span,
                    "this file",
                ));
                return None;
            }
        };
        let store = self.verify_path(&n.trust_store);
        match NotationPolicy::load(&name, &bytes, &store) {
            Ok(p) => Some(Arc::new(p)),
            Err(why) => {
                self.problem(SpecProblem::new(why, span, "this trust policy"));
                None
            }
        }
    }

    fn destination(&mut self, text: &str, span: Range<usize>, many: bool) -> Option<DestTemplate> {
        // Template fields must be known; point at the unknown one.
        let quoted = usize::from(matches!(self.source_byte(span.start), Some(b'"' | b'\'')));
        for (field, offset) in template_fields(text) {
            if !TEMPLATE_FIELDS.contains(&field.as_str()) {
                let start = span.start + quoted + offset;
                let help = match closest(&field, TEMPLATE_FIELDS) {
                    Some(k) => format!(
                        "did you mean {{{k}}}? Fields are {{registry}}, {{repo}}, {{name}}, {{tag}}, {{platform}}"
                    ),
                    None => "fields are {registry}, {repo}, {name}, {tag}, {platform}".to_string(),
                };
                self.problem(
                    SpecProblem::new(
                        format!("unknown template field {{{field}}} in {text:?}"),
                        start..start + field.len() + 2,
                        "unknown field",
                    )
                    .help(help),
                );
                return None;
            }
        }
        let sample = DestTemplate {
            text: text.to_string(),
            span: span.clone(),
        }
        .render(&TemplateFields {
            registry: "host".into(),
            repo: "repo".into(),
            name: "name".into(),
            tag: "tag".into(),
            platform: "linux/amd64".into(),
        });
        let reference = match Reference::parse(&sample) {
            Ok(r) => r,
            Err(e) => {
                self.problem(SpecProblem::new(e.to_string(), span, "not a destination reference"));
                return None;
            }
        };
        let templated = !template_fields(text).is_empty();
        match &reference {
            Reference::Quay { .. } => {
                self.problem(
                    SpecProblem::new("quay:// can only be a source", span, "not a destination")
                        .help("write to registry://quay.io/ORG/REPO instead"),
                );
                return None;
            }
            r if crate::sink::source_only_part(r).is_some() => {
                let e = crate::sink::source_only_part(r)
                    .map(|e| e.to_string())
                    .unwrap_or_default();
                self.problem(SpecProblem::new(e, span, "only for a source"));
                return None;
            }
            Reference::Registry(r) if r.is_glob() => {
                self.problem(
                    SpecProblem::new("a destination cannot be a pattern", span, "glob in a destination")
                        .help("use templates such as registry://mirror/{repo}:{tag}"),
                );
                return None;
            }
            _ if many && !templated && crate::sink::kind::of(&reference).one_image.is_some() => {
                self.problem(
                    SpecProblem::new(
                        format!("every image of this entry would overwrite {text}"),
                        span,
                        "one file for many images",
                    )
                    .help("name each image's output with a template, e.g. tar:///srv/airgap/{name}-{tag}.tar"),
                );
                return None;
            }
            Reference::Registry(r) if many && r.tag.is_some() && !templated => {
                self.problem(
                    SpecProblem::new(
                        format!("every image of this entry would be pushed to the one tag {text}"),
                        span,
                        "one tag for many images",
                    )
                    .help("leave the tag out to keep each source tag, or use {tag}"),
                );
                return None;
            }
            _ => {}
        }
        Some(DestTemplate {
            text: text.to_string(),
            span,
        })
    }

    fn source_byte(&self, offset: usize) -> Option<u8> {
        self.text.as_bytes().get(offset).copied()
    }
}

/// A file reference with a relative path, made relative to `base` (the sync
/// file's directory), so a sync file means the same from any working directory.
pub fn rebase(r: &Reference, base: &Path) -> Reference {
    let fix = |p: &PathBuf| {
        if p.is_relative() {
            normalize(&base.join(p))
        } else {
            p.clone()
        }
    };
    match r {
        Reference::Tar { path } => Reference::Tar { path: fix(path) },
        Reference::Oci { path, tag, oci_format } => Reference::Oci {
            path: fix(path),
            tag: tag.clone(),
            oci_format: *oci_format,
        },
        Reference::Dir {
            path,
            unique_names,
            expand,
            image,
        } => Reference::Dir {
            path: fix(path),
            unique_names: *unique_names,
            expand: *expand,
            image: image.clone(),
        },
        Reference::Bundle { path } => Reference::Bundle { path: fix(path) },
        Reference::Archive {
            path,
            volume_size,
            full,
        } => Reference::Archive {
            path: fix(path),
            volume_size: *volume_size,
            full: *full,
        },
        other => other.clone(),
    }
}

/// `a/./b/../c` as `a/c`, without touching the file system.
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// Whether an entry's source stands for more than one image.
fn from_expands(from: &Reference, tags: Option<&TagSelection>) -> bool {
    match from {
        Reference::Quay { .. } | Reference::Archive { .. } => true,
        Reference::Registry(r) => {
            r.is_glob()
                || match tags {
                    Some(TagSelection::List(l)) => l.len() > 1,
                    Some(TagSelection::Rules(_)) => true,
                    None => r.tag.is_none() && r.digest.is_none(),
                }
        }
        _ => false,
    }
}

/// `type/subtype` as media types are spelled (RFC 6838 characters).
fn looks_like_media_type(t: &str) -> bool {
    let ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "!#$&-^_.+".contains(c));
    matches!(t.split_once('/'), Some((a, b)) if ok(a) && ok(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(name: &str, text: &str) -> String {
        match parse(Path::new(name), text.to_string()) {
            Ok(_) => panic!("{name} should not parse:\n{text}"),
            Err(e) => {
                assert_eq!(e.exit_code(), 2);
                e.to_string()
            }
        }
    }

    #[test]
    fn archives_are_relative_to_the_sync_file_and_take_tags() {
        let r = Reference::parse("archive://transfer?volume_size=4GiB").unwrap();
        assert_eq!(
            rebase(&r, Path::new("/etc/occy")),
            Reference::parse("archive:///etc/occy/transfer?volume_size=4GiB").unwrap()
        );
        let yaml = "version: 1\nsync:\n  - from: archive:///media/transfer\n    tags: [\"1.0\"]\n    to: registry://m:5000/{repo}\n";
        let spec = parse(Path::new("inside.yaml"), yaml.to_string()).unwrap();
        assert!(spec.entries[0].tags.is_some());
    }

    #[test]
    fn a_good_file_reads_in_both_formats() {
        let yaml = "version: 1\nfilters:\n  repro:\n    - normalize-timestamps: {ts: 0, config: true}\n    - exclude: {patterns: [\"**/.git/**\"]}\nsync:\n  - from: registry://h:5000/app\n    tags: {semver: \">=1.2\", exclude: [\"*-rc*\"], latest: 2}\n    filters: repro\n    to: [\"registry://m:5000/{repo}\", \"tar:///t/{name}-{tag}.tar\"]\n";
        let toml = "version = 1\n[filters]\nrepro = [{normalize-timestamps = {ts = 0, config = true}}, {exclude = {patterns = [\"**/.git/**\"]}}]\n[[sync]]\nfrom = \"registry://h:5000/app\"\ntags = {semver = \">=1.2\", exclude = [\"*-rc*\"], latest = 2}\nfilters = \"repro\"\nto = [\"registry://m:5000/{repo}\", \"tar:///t/{name}-{tag}.tar\"]\n";
        let a = parse(Path::new("m.yaml"), yaml.into()).unwrap();
        let b = parse(Path::new("m.toml"), toml.into()).unwrap();
        for s in [&a, &b] {
            let e = &s.entries[0];
            assert_eq!(e.chain.filters.len(), 2);
            assert_eq!(e.chain.hash(), a.entries[0].chain.hash());
            assert_eq!(e.to.len(), 2);
            let tags: Vec<String> = ["1.0", "1.2.0", "1.3", "1.4-rc1", "v1.5.0", "latest"]
                .map(String::from)
                .into();
            assert_eq!(e.tags.as_ref().unwrap().select(&tags), ["v1.5.0", "1.3"]);
        }
    }

    #[test]
    fn unknown_keys_point_at_the_key_with_a_suggestion() {
        let e = err(
            "m.yaml",
            "version: 1\nsync:\n  - from: oci:///a\n    tag: [x]\n    to: oci:///b\n",
        );
        assert!(e.starts_with("m.yaml:4:5: unknown key `tag`"), "{e}");
        assert!(e.contains("did you mean `tags`?"), "{e}");
        let e = err(
            "m.toml",
            "version = 1\n[[sync]]\nfrom = \"oci:///a\"\nto = \"oci:///b\"\nplatfroms = \"all\"\n",
        );
        assert!(e.starts_with("m.toml:5:1: unknown key `platfroms`"), "{e}");
    }

    #[test]
    fn wrong_types_and_bad_values_point_at_the_value() {
        let e = err(
            "m.yaml",
            "version: 1\ndefaults:\n  parallel: lots\nsync:\n  - from: oci:///a\n    to: oci:///b\n",
        );
        assert!(e.starts_with("m.yaml:3:13: `defaults.parallel`"), "{e}");
        let e = err(
            "m.yaml",
            "version: 1\nsync:\n  - from: registry://h/a\n    tags: {glob: \"[x\"}\n    to: oci:///b\n",
        );
        assert!(e.starts_with("m.yaml:4:18: invalid glob"), "{e}");
        let e = err(
            "m.yaml",
            "version: 1\nsync:\n  - from: registry://h/a\n    tags: {regex: \"(x\"}\n    to: oci:///b\n",
        );
        assert!(e.starts_with("m.yaml:4:19: invalid regex"), "{e}");
        let e = err(
            "m.yaml",
            "version: 1\nsync:\n  - from: registry://h/a\n    tags: {semver: \">>1\"}\n    to: oci:///b\n",
        );
        assert!(e.starts_with("m.yaml:4:20: invalid semver range"), "{e}");
    }

    #[test]
    fn filters_templates_and_credentials_are_checked() {
        let e = err(
            "m.yaml",
            "version: 1\nsync:\n  - from: oci:///a\n    filters: [normalise-timestamps]\n    to: oci:///b\n",
        );
        assert!(e.starts_with("m.yaml:4:15: unknown filter"), "{e}");
        assert!(e.contains("did you mean `normalize-timestamps`?"), "{e}");
        let e = err("m.yaml", "version: 1\nsync:\n  - from: oci:///a\n    filters:\n      - exclude: {pattern: x, depth: 2}\n    to: oci:///b\n");
        assert!(
            e.starts_with("m.yaml:5:9: filter exclude: unknown option \"depth\""),
            "{e}"
        );
        let e = err(
            "m.yaml",
            "version: 1\nsync:\n  - from: registry://h/a\n    to: \"tar:///x/{nam}.tar\"\n",
        );
        assert!(e.starts_with("m.yaml:4:19: unknown template field {nam}"), "{e}");
        assert!(e.contains("did you mean {name}?"), "{e}");
        let e = err("m.yaml", "version: 1\nregistries:\n  h:\n    username_env: OCCY_TEST_SURELY_UNSET_USER\nsync:\n  - from: oci:///a\n    to: oci:///b\n");
        assert!(
            e.starts_with("m.yaml:4:19: the environment variable OCCY_TEST_SURELY_UNSET_USER is not set"),
            "{e}"
        );
        let e = err(
            "m.yaml",
            "version: 1\nsync:\n  - from: registry://h/a\n    to: tar:///x/all.tar\n",
        );
        assert!(
            e.starts_with("m.yaml:4:9: every image of this entry would overwrite"),
            "{e}"
        );
    }

    #[test]
    fn syntax_errors_and_missing_keys() {
        let e = err("m.yaml", "version: 1\nsync: [\n");
        assert!(e.starts_with("m.yaml:"), "{e}");
        let e = err("m.yaml", "version: 1\nsync:\n  - to: oci:///b\n");
        assert!(e.starts_with("m.yaml:3:5: `sync[0]` needs `from`"), "{e}");
        let e = err("m.toml", "version = 1\nsync = [\n");
        assert!(e.starts_with("m.toml:"), "{e}");
    }
}
