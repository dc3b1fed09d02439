//! Expand: every `sync:` entry becomes the concrete source images it names,
//! as the source listing (`source::list`) gives them for the entry's tag
//! rule, with the fields its destination templates use. An entry that
//! expands to nothing is a warning; one whose listing fails is a failed
//! source, reported and not fatal to the others.

use crate::error::{Error, Result};
use crate::reference::{Reference, RegistryRef};
use crate::registry::RegistryOptions;
use crate::source::list::{list, ListContext, Listed};
use crate::source::SourceOptions;
use crate::spec::{Entry, SyncSpec, TemplateFields};

/// One source image an entry names.
#[derive(Debug, Clone)]
pub struct SourceImage {
    /// The entry (index under `sync:`) it came from.
    pub entry: usize,
    pub reference: Reference,
    /// Values for the entry's destination templates.
    pub fields: TemplateFields,
}

/// What expanding one entry gave.
#[derive(Debug)]
pub enum Expansion {
    Images(Vec<SourceImage>),
    /// The listing failed (the source does not exist, a registry refused).
    Failed {
        entry: usize,
        source: String,
        error: Error,
    },
}

/// How expansion reaches registries and sources.
pub trait RegistryAccess: Sync {
    /// Registry settings for `host`, with that host's settings from the
    /// sync file.
    fn registry_options(&self, host: &str) -> RegistryOptions;
    /// The quay.io API token for the entry, if the registries section has one.
    fn quay_token(&self) -> Option<String>;
    /// How to open `reference` as a source.
    fn source_options(&self, reference: &Reference) -> SourceOptions;
    /// Records the tags a listing of `host/repo` gave (the planner finds
    /// referrer tags there without asking again).
    fn remember_tags(&self, _host: &str, _repo: &str, _tags: &[String]) {}
}

/// One entry as the source listing asks it: its tag rule, whether it keeps
/// referrer tags, and the caller's registry access.
struct EntryListing<'a> {
    entry: &'a Entry,
    access: &'a dyn RegistryAccess,
}

impl ListContext for EntryListing<'_> {
    fn registry_options(&self, host: &str) -> RegistryOptions {
        self.access.registry_options(host)
    }

    fn source_options(&self, reference: &Reference) -> SourceOptions {
        self.access.source_options(reference)
    }

    fn quay_token(&self) -> Option<String> {
        self.access.quay_token()
    }

    fn choose_tags(&self, all: &[String]) -> Vec<String> {
        match &self.entry.tags {
            Some(f) => f.select(all),
            None => all.to_vec(),
        }
    }

    fn tags_named(&self) -> Option<Vec<String>> {
        self.entry
            .tags
            .as_ref()
            .filter(|f| !f.needs_listing)
            .map(|f| f.select(&[]))
    }

    fn keeps_referrer_tags(&self) -> bool {
        self.entry.referrers == Some(crate::spec::ReferrerPolicy::None)
    }

    fn order(&self, images: &mut [Listed]) {
        images.sort_by(|a, b| {
            let key = |s: &Listed| {
                (
                    s.repo.clone(),
                    crate::spec::validate::tag_version(&s.tag),
                    s.tag.clone(),
                )
            };
            key(a).cmp(&key(b))
        });
    }

    fn remember_tags(&self, host: &str, repo: &str, tags: &[String]) {
        self.access.remember_tags(host, repo, tags);
    }
}

/// Expands every entry of the spec.
pub async fn expand_all(spec: &SyncSpec, access: &dyn RegistryAccess) -> Vec<Expansion> {
    let mut out = Vec::new();
    for entry in &spec.entries {
        out.push(match expand_entry(entry, access).await {
            Ok(images) => Expansion::Images(images),
            Err(error) => Expansion::Failed {
                entry: entry.index,
                source: entry.from.to_string(),
                error,
            },
        });
    }
    out
}

/// Template fields of a registry image.
pub fn registry_fields(r: &RegistryRef) -> TemplateFields {
    fields(&crate::source::list::registry_image(r.clone()))
}

/// The template fields of a listed image.
fn fields(l: &Listed) -> TemplateFields {
    TemplateFields {
        registry: l.registry.clone(),
        repo: l.repo.clone(),
        name: l.name.clone(),
        tag: l.tag.clone(),
        platform: String::new(),
    }
}

async fn expand_entry(entry: &Entry, access: &dyn RegistryAccess) -> Result<Vec<SourceImage>> {
    let listed = list(&entry.from, &EntryListing { entry, access }).await?;
    Ok(listed
        .into_iter()
        .map(|l| SourceImage {
            entry: entry.index,
            fields: fields(&l),
            reference: l.reference,
        })
        .collect())
}
