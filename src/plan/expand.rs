//! Expand: every `sync:` entry becomes the concrete source images it names.
//! Repository globs go through the registry's `_catalog`, tag rules through
//! `tags/list` (both paginated), `quay://` through quay.io's REST API. An
//! entry that expands to nothing is a warning; one whose listing fails is a
//! failed source, reported and not fatal to the others.

use globset::GlobBuilder;

use super::quay;
use crate::error::{Error, Result};
use crate::reference::{Reference, RegistryRef};
use crate::registry::RegistryClient;
use crate::source::{image_name_for, open_source, SourceOptions};
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

/// How expansion reaches registries.
pub trait RegistryAccess: Sync {
    /// The client of `host`, with that host's settings from the sync file.
    fn client(&self, host: &str) -> Result<RegistryClient>;
    /// The quay.io API token for the entry, if the registries section has one.
    fn quay_token(&self) -> Option<String>;
    /// How to open `reference` as a source.
    fn source_options(&self, reference: &Reference) -> SourceOptions;
    /// Records the tags a listing of `host/repo` gave (the planner finds
    /// referrer tags there without asking again).
    fn remember_tags(&self, _host: &str, _repo: &str, _tags: &[String]) {}
}

/// The tags of `repo`, remembered for the planner. Unless the entry says
/// `referrers: none`, the tags that hold referrers (`sha256-<hex>` and
/// cosign's `.sig`, `.att`, `.sbom`) are left out: they travel with their
/// subject, not as images of their own.
async fn list_tags(
    client: &RegistryClient,
    access: &dyn RegistryAccess,
    entry: &Entry,
    repo: &str,
) -> Result<Vec<String>> {
    let tags = client.list_tags(repo).await?;
    access.remember_tags(client.host(), repo, &tags);
    if entry.referrers == Some(crate::spec::ReferrerPolicy::None) {
        return Ok(tags);
    }
    Ok(tags.into_iter().filter(|t| !is_referrer_tag(t)).collect())
}

/// Whether `tag` names referrers: `sha256-<hex>` or a cosign tag.
pub fn is_referrer_tag(tag: &str) -> bool {
    if crate::image::referrers::parse_cosign_tag(tag).is_some() {
        return true;
    }
    tag.split_once('-')
        .is_some_and(|(a, hex)| crate::image::Digest::parse(&format!("{a}:{hex}")).is_ok())
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
    TemplateFields {
        registry: r.host.clone(),
        repo: r.repository.clone(),
        name: r.repository.rsplit('/').next().unwrap_or(&r.repository).to_string(),
        tag: r.tag.clone().unwrap_or_else(|| {
            r.digest
                .as_ref()
                .map(|d| d.hex().chars().take(12).collect())
                .unwrap_or_else(|| "latest".to_string())
        }),
        platform: String::new(),
    }
}

/// Orders images by repository, then tag as a version where it is one.
fn sort_by_version(images: &mut [SourceImage]) {
    images.sort_by(|a, b| {
        let key = |s: &SourceImage| {
            (
                s.fields.repo.clone(),
                crate::spec::validate::tag_version(&s.fields.tag),
                s.fields.tag.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
}

fn image(entry: usize, r: RegistryRef) -> SourceImage {
    SourceImage {
        entry,
        fields: registry_fields(&r),
        reference: Reference::Registry(r),
    }
}

fn glob_matcher(pattern: &str, what: &str) -> Result<globset::GlobMatcher> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| Error::usage(format!("invalid {what} pattern {pattern:?}: {}", e.kind())))
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '[', '{'])
}

async fn expand_entry(entry: &Entry, access: &dyn RegistryAccess) -> Result<Vec<SourceImage>> {
    match &entry.from {
        Reference::Registry(r) => {
            let client = access.client(&r.host)?;
            let repos = if has_glob(&r.repository) {
                let m = glob_matcher(&r.repository, "repository")?;
                let all = client.catalog().await.map_err(|e| {
                    Error::NotFound(format!(
                        "cannot list the repositories of {} to expand {}: {e}",
                        r.host, r.repository
                    ))
                })?;
                all.into_iter().filter(|repo| m.is_match(repo)).collect()
            } else {
                vec![r.repository.clone()]
            };
            let mut out = Vec::new();
            for repo in repos {
                let base = RegistryRef {
                    host: r.host.clone(),
                    repository: repo.clone(),
                    tag: None,
                    digest: None,
                };
                if let Some(d) = &r.digest {
                    out.push(image(
                        entry.index,
                        RegistryRef {
                            tag: r.tag.clone(),
                            digest: Some(d.clone()),
                            ..base
                        },
                    ));
                    continue;
                }
                let tags: Vec<String> = match (&r.tag, &entry.tags) {
                    (Some(t), _) if !has_glob(t) => vec![t.clone()],
                    (Some(t), _) => {
                        let m = glob_matcher(t, "tag")?;
                        list_tags(&client, access, entry, &repo)
                            .await?
                            .into_iter()
                            .filter(|x| m.is_match(x))
                            .collect()
                    }
                    (None, Some(filter)) if !filter.needs_listing => filter.select(&[]),
                    (None, Some(filter)) => filter.select(&list_tags(&client, access, entry, &repo).await?),
                    (None, None) => list_tags(&client, access, entry, &repo).await?,
                };
                for tag in tags {
                    out.push(image(
                        entry.index,
                        RegistryRef {
                            tag: Some(tag),
                            ..base.clone()
                        },
                    ));
                }
            }
            sort_by_version(&mut out);
            Ok(out)
        }
        Reference::Quay {
            org,
            repo_glob,
            tag,
            since,
            token,
        } => {
            let token = token.clone().or_else(|| access.quay_token());
            let found = quay::expand(
                access,
                org,
                repo_glob.as_deref(),
                tag.as_deref(),
                since.as_deref(),
                token.as_deref(),
            )
            .await?;
            let mut out = Vec::new();
            for (repo, tags) in found {
                let tags = match &entry.tags {
                    Some(f) => f.select(&tags),
                    None => tags,
                };
                for t in tags {
                    out.push(image(
                        entry.index,
                        RegistryRef {
                            host: quay::registry_host(),
                            repository: format!("{org}/{repo}"),
                            tag: Some(t),
                            digest: None,
                        },
                    ));
                }
            }
            Ok(out)
        }
        Reference::Archive { path, .. } => archive_images(entry, path).await,
        Reference::Oci {
            path,
            tag: None,
            oci_format: false,
        } => match layout_tags(path, entry)? {
            Some(tags) => Ok(tags
                .into_iter()
                .map(|tag| {
                    let repo = path
                        .file_stem()
                        .map(|s| s.to_string_lossy().to_lowercase())
                        .unwrap_or_else(|| "image".to_string());
                    SourceImage {
                        entry: entry.index,
                        reference: Reference::Oci {
                            path: path.clone(),
                            tag: Some(tag.clone()),
                            oci_format: false,
                        },
                        fields: TemplateFields {
                            registry: String::new(),
                            name: repo.clone(),
                            repo,
                            tag,
                            platform: String::new(),
                        },
                    }
                })
                .collect()),
            None => one_file_image(entry, &entry.from, access).await,
        },
        other => one_file_image(entry, other, access).await,
    }
}

/// The images every archive at `path` records (`archive:///MEDIA` or
/// `archive:///MEDIA/0002`), checked and unpacked, each read from the
/// unpacked OCI layout under its archive name, with its source name's
/// `{registry}`, `{repo}`, `{name}` and `{tag}`; `tags:` chooses among
/// each repository's recorded tags.
async fn archive_images(entry: &Entry, path: &std::path::Path) -> Result<Vec<SourceImage>> {
    let p = path.to_path_buf();
    let imported = tokio::task::spawn_blocking(move || crate::archive::import::open(&p))
        .await
        .map_err(|e| Error::invalid(format!("archive import task failed: {e}")))??;
    let mut by_repo: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for i in &imported.images {
        by_repo
            .entry(i.image.repository())
            .or_default()
            .push(i.image.tag.clone());
    }
    let chosen: std::collections::HashSet<(String, String)> = by_repo
        .into_iter()
        .flat_map(|(repo, tags)| {
            let tags = match &entry.tags {
                Some(f) => f.select(&tags),
                None => tags,
            };
            tags.into_iter().map(move |t| (repo.clone(), t))
        })
        .collect();
    Ok(imported
        .images
        .iter()
        .filter(|i| chosen.contains(&(i.image.repository(), i.image.tag.clone())))
        .map(|i| {
            let img = &i.image;
            SourceImage {
                entry: entry.index,
                reference: Reference::Oci {
                    path: imported.layout.clone(),
                    tag: Some(img.layout_ref.clone()),
                    oci_format: false,
                },
                fields: TemplateFields {
                    registry: img.registry.clone(),
                    name: img.repo.rsplit('/').next().unwrap_or(&img.repo).to_string(),
                    repo: img.repo.clone(),
                    tag: img.tag.clone(),
                    platform: String::new(),
                },
            }
        })
        .collect())
}

/// The tags of the OCI layout at `path` an entry takes (referrer tags left
/// out unless `referrers: none`), or None when it has no tags (its one
/// untagged image is read as before).
fn layout_tags(path: &std::path::Path, entry: &Entry) -> Result<Option<Vec<String>>> {
    let index = path.join("index.json");
    let bytes = match std::fs::read(&index) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", &index, e)),
    };
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| Error::invalid(format!("malformed {}: {e}", index.display())))?;
    let keep_referrers = entry.referrers == Some(crate::spec::ReferrerPolicy::None);
    let mut tags: Vec<String> = Vec::new();
    for m in value.get("manifests").and_then(|m| m.as_array()).into_iter().flatten() {
        let Some(name) = m
            .pointer(&format!(
                "/annotations/{}",
                crate::source::oci_layout::REF_NAME.replace('/', "~1")
            ))
            .and_then(|n| n.as_str())
        else {
            continue;
        };
        if (keep_referrers || !is_referrer_tag(name)) && !tags.iter().any(|t| t == name) {
            tags.push(name.to_string());
        }
    }
    if tags.is_empty() {
        return Ok(None);
    }
    Ok(Some(match &entry.tags {
        Some(f) => f.select(&tags),
        None => tags,
    }))
}

/// A source that is one image: named as it records itself (a docker-save
/// archive's RepoTags), else by its file; a daemon's by the reference.
async fn one_file_image(entry: &Entry, other: &Reference, access: &dyn RegistryAccess) -> Result<Vec<SourceImage>> {
    // The name a file source records (a docker-save archive's
    // RepoTags), else the file's; a daemon's is in the reference.
    let name = match other {
        Reference::Docker { name, .. } => crate::image::ImageName {
            repository: name.clone(),
            tag: other.tag().unwrap_or("latest").to_string(),
        },
        _ => {
            let source = open_source(other, &access.source_options(other)).await?;
            image_name_for(other, source.as_ref())
        }
    };
    let repo = name.repository;
    Ok(vec![SourceImage {
        entry: entry.index,
        reference: other.clone(),
        fields: TemplateFields {
            registry: String::new(),
            name: repo.rsplit('/').next().unwrap_or(&repo).to_string(),
            repo,
            tag: name.tag,
            platform: String::new(),
        },
    }])
}
