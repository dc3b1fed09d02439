//! `occy mirror-config`: the runtime mirror configuration a sync file
//! implies. Each entry whose source stands for upstream registry names and
//! whose destination is a registry becomes a [`Mapping`] (upstream prefix →
//! mirror prefix, worked out from the destination template); each output
//! format ([`render`]) writes the mappings it can express and says why it
//! leaves out the others — a mapping is never written wrong.

pub mod render;

use std::collections::BTreeSet;

use crate::error::Result;
use crate::reference::Reference;
use crate::spec::{Entry, SyncSpec};

pub use render::{render, Format, Output};

/// What an upstream registry name maps to on a mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// The sync-file entry it comes from (`sync[N]`).
    pub entry: usize,
    /// The entry as the user wrote it, for messages: `registry://a/b → registry://m/{repo}`.
    pub describe: String,
    /// The upstream registry host (`host` or `host:port`).
    pub source_host: String,
    /// The upstream repository path the mapping covers (a repository or a
    /// namespace; empty: the whole host).
    pub source_path: String,
    /// The mirror's host (`host` or `host:port`).
    pub mirror_host: String,
    /// Where `source_path` lands on the mirror (empty: the root).
    pub mirror_path: String,
    /// The mirror is reached over plain HTTP or unverified TLS (`insecure: true`).
    pub insecure: bool,
    /// Tags keep their names on the mirror, so a pull by tag may use it.
    /// False for a tag rename: only pulls by digest may.
    pub tags: bool,
    /// Why a pull by digest may miss on the mirror (a platform subset: the
    /// upstream index digest is not there); None when every digest is there.
    pub digest_gap: Option<String>,
}

impl Mapping {
    /// `host/path` of the upstream side.
    pub fn source(&self) -> String {
        join(&self.source_host, &self.source_path)
    }

    /// `host/path` of the mirror side.
    pub fn mirror(&self) -> String {
        join(&self.mirror_host, &self.mirror_path)
    }
}

fn join(host: &str, path: &str) -> String {
    if path.is_empty() {
        host.to_string()
    } else {
        format!("{host}/{path}")
    }
}

/// An entry (or one of its destinations) that no format can mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftOut {
    /// `sync[N] (FROM → TO)`.
    pub what: String,
    pub why: String,
}

/// The upstream names a source stands for: a registry repository or a
/// pattern of them. A source that records the names it was made from (a
/// transfer archive's record) contributes those as literal repositories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub host: String,
    /// A repository path, possibly a glob (`team/*`, `*` within a path
    /// segment, `**` across).
    pub repository: String,
}

/// The upstream names `entry`'s source stands for; None for a source that
/// names no registry image (a file, a layout, a daemon). A source that
/// records the names it was made from answers them here (reading its
/// record may fail: that is an error for the whole command).
pub fn upstreams(entry: &Entry) -> Result<Option<Vec<Upstream>>> {
    Ok(match &entry.from {
        Reference::Registry(r) => Some(vec![Upstream {
            host: r.host.clone(),
            repository: r.repository.clone(),
        }]),
        Reference::Quay { org, repo_glob, .. } => Some(vec![Upstream {
            host: "quay.io".to_string(),
            repository: format!("{org}/{}", repo_glob.as_deref().unwrap_or("*")),
        }]),
        // A transfer archive stands for the registry images its records
        // name (images it got from files name no registry: left out).
        Reference::Archive { path, .. } => {
            let mut seen = BTreeSet::new();
            let names: Vec<Upstream> = crate::archive::import::recorded_images(path)?
                .into_iter()
                .filter(|i| !i.image.registry.is_empty())
                .filter(|i| seen.insert((i.image.registry.clone(), i.image.repo.clone())))
                .map(|i| Upstream {
                    host: i.image.registry.clone(),
                    repository: i.image.repo.clone(),
                })
                .collect();
            (!names.is_empty()).then_some(names)
        }
        _ => None,
    })
}

/// The mappings of a sync file and what was left out of all of them.
/// `insecure_hosts` are hosts marked insecure besides the sync file's
/// `registries:` (`--insecure-registry`).
pub fn mappings(spec: &SyncSpec, insecure_hosts: &[String]) -> Result<(Vec<Mapping>, Vec<LeftOut>)> {
    let insecure: BTreeSet<&str> = spec
        .registries
        .iter()
        .filter(|(_, a)| a.insecure)
        .map(|(h, _)| h.as_str())
        .chain(insecure_hosts.iter().map(String::as_str))
        .collect();
    let mut out = Vec::new();
    let mut left = Vec::new();
    for entry in &spec.entries {
        for dest in &entry.to {
            let what = format!("sync[{}] ({} → {})", entry.index, entry.from, dest.text);
            let Some(sources) = upstreams(entry)? else {
                left.push(LeftOut {
                    what,
                    why: format!(
                        "its source {} names no upstream registry image for a runtime to pull",
                        entry.from.scheme()
                    ),
                });
                continue;
            };
            if entry.chain.changes_content() {
                left.push(LeftOut {
                    what,
                    why: "its filters rewrite layers, so the mirror's digests differ from the upstream's".into(),
                });
                continue;
            }
            let platforms_all = matches!(
                entry.platforms.as_ref().or(spec.settings.platforms.as_ref()),
                Some(crate::source::PlatformSelection::All)
            );
            for up in sources {
                match map_one(entry, &up, &dest.text, platforms_all) {
                    Ok(mut m) => {
                        m.insecure = insecure.contains(m.mirror_host.as_str());
                        m.describe = what.clone();
                        if !out.contains(&m) {
                            out.push(m);
                        }
                    }
                    Err(why) => left.push(LeftOut {
                        what: what.clone(),
                        why,
                    }),
                }
            }
        }
    }
    Ok((out, left))
}

/// The mapping of upstream `up` through destination template `dest`, or why
/// there is none.
fn map_one(entry: &Entry, up: &Upstream, dest: &str, platforms_all: bool) -> std::result::Result<Mapping, String> {
    let Some(rest) = dest.strip_prefix("registry://") else {
        return Err(format!(
            "its destination is not a registry ({}), which no runtime pulls through",
            dest.split("://").next().unwrap_or(dest)
        ));
    };
    if rest.contains("{platform}") {
        return Err("its destination names {platform}: each platform lands under its own name".into());
    }
    let (host_t, path_and_tag) = rest.split_once('/').unwrap_or((rest, ""));
    let mirror_host = host_t.replace("{registry}", &up.host);
    if mirror_host.contains(['{', '}']) {
        return Err(format!(
            "its destination host {host_t:?} depends on the image, not only on the upstream host"
        ));
    }
    if path_and_tag.contains('@') {
        return Err("its destination pins a digest".into());
    }
    // The tag part: after the last ':' that follows the last '/'.
    let last_slash = path_and_tag.rfind('/').map_or(0, |i| i + 1);
    let (path_t, tag_t) = match path_and_tag[last_slash..].rfind(':') {
        Some(i) => (
            &path_and_tag[..last_slash + i],
            Some(&path_and_tag[last_slash + i + 1..]),
        ),
        None => (path_and_tag, None),
    };
    let tags = match tag_t {
        None | Some("{tag}") => true,
        Some(_) => false,
    };
    if path_t.contains("{tag}") {
        return Err("its destination repository names {tag}: each tag lands in its own repository".into());
    }
    let path_t = path_t.replace("{registry}", &up.host);
    let mirror_of = |source_path: String, mirror_path: String| Mapping {
        entry: entry.index,
        describe: String::new(),
        source_host: up.host.clone(),
        source_path,
        mirror_host: mirror_host.clone(),
        mirror_path: mirror_path.trim_matches('/').to_string(),
        insecure: false,
        tags,
        digest_gap: (!platforms_all).then(|| {
            "it takes a subset of a multi-arch index's platforms (`platforms` is not `all`), \
             so a pull by the upstream index digest would miss on the mirror"
                .to_string()
        }),
    };
    if !has_glob(&up.repository) {
        let name = up.repository.rsplit('/').next().unwrap_or(&up.repository);
        let mirror_path = path_t.replace("{repo}", &up.repository).replace("{name}", name);
        if mirror_path.is_empty() {
            return Err("its destination has no repository".into());
        }
        return Ok(mirror_of(up.repository.clone(), mirror_path));
    }
    // A pattern: the literal namespace before the first glob character
    // must map to one mirror namespace, the rest kept as it is.
    let first_glob = up.repository.find(['*', '?', '[', '{']).unwrap_or(up.repository.len());
    let namespace = up.repository[..first_glob]
        .rfind('/')
        .map_or("", |i| &up.repository[..i]);
    let tail = &up.repository[namespace.len()..].trim_start_matches('/');
    let fields = path_t.matches('{').count();
    if let Some(prefix) = path_t
        .strip_suffix("{repo}")
        .filter(|p| !p.contains('{') && fields == 1)
    {
        let mirror_path = format!("{prefix}{namespace}");
        return Ok(mirror_of(namespace.to_string(), mirror_path));
    }
    if let Some(prefix) = path_t
        .strip_suffix("{name}")
        .filter(|p| !p.contains('{') && fields == 1)
    {
        // {name} keeps the last segment only: the same as a namespace
        // rewrite when the pattern matches exactly one segment under it.
        if !tail.contains('/') && !tail.contains("**") {
            return Ok(mirror_of(namespace.to_string(), prefix.to_string()));
        }
    }
    Err(format!(
        "the repositories {} match become {path_t:?} on {mirror_host}, which is not a rewrite of one \
         namespace prefix into another (write the destination as PREFIX/{{repo}}, or list the repositories)",
        up.repository
    ))
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '[', '{'])
}

#[cfg(test)]
mod tests;
