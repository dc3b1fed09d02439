//! Listing: the images a source reference names. A registry reference
//! lists its repository's tags (and, with a repository glob, the host's
//! `_catalog` first), `quay://` the organisation's repositories and tags
//! through quay.io's REST API, an OCI layout the tags of its `index.json`,
//! `archive://` the images its transfer archives record (checked and
//! unpacked), and any other reference its one image. The planner expands
//! `sync:` entries through [`list`] and never asks which kind it lists.

use globset::GlobBuilder;

use super::{image_name_for, open_source, quay, SourceOptions};
use crate::error::{Error, Result};
use crate::image::ImageName;
use crate::reference::{Reference, RegistryRef};
use crate::registry::{RegistryClient, RegistryOptions};

/// One image a source reference names, with the parts of its name that
/// destination templates use (`{registry}`, `{repo}`, `{name}`, `{tag}`).
#[derive(Debug, Clone)]
pub struct Listed {
    pub reference: Reference,
    pub registry: String,
    pub repo: String,
    pub name: String,
    pub tag: String,
}

/// What listing needs from the entry being expanded and from the caller.
pub trait ListContext: Sync {
    /// Registry settings for `host`.
    fn registry_options(&self, host: &str) -> RegistryOptions;
    /// How to open `reference` as a source.
    fn source_options(&self, reference: &Reference) -> SourceOptions;
    /// The quay.io API token, if the configuration has one.
    fn quay_token(&self) -> Option<String>;
    /// The tags the entry takes of `all` (all of them without a rule).
    fn choose_tags(&self, all: &[String]) -> Vec<String>;
    /// The tags the entry takes when its rule names them without a
    /// listing (a plain list); None when a listing is needed.
    fn tags_named(&self) -> Option<Vec<String>>;
    /// Whether tags holding referrers (`sha256-<hex>`, cosign's) are
    /// listed as images of their own (the entry says `referrers: none`).
    fn keeps_referrer_tags(&self) -> bool;
    /// Orders a registry's images (by repository, then tag as a version).
    fn order(&self, images: &mut [Listed]);
    /// Records the tags a listing of `host/repo` gave.
    fn remember_tags(&self, _host: &str, _repo: &str, _tags: &[String]) {}
}

/// The images `reference` names.
pub async fn list(reference: &Reference, cx: &dyn ListContext) -> Result<Vec<Listed>> {
    match reference {
        Reference::Registry(r) => registry_images(r, cx).await,
        Reference::Quay {
            org,
            repo_glob,
            tag,
            since,
            token,
        } => {
            let token = token.clone().or_else(|| cx.quay_token());
            let options = |host: &str| cx.registry_options(host);
            let found = quay::expand(
                &options,
                org,
                repo_glob.as_deref(),
                tag.as_deref(),
                since.as_deref(),
                token.as_deref(),
            )
            .await?;
            let mut out = Vec::new();
            for (repo, tags) in found {
                for t in cx.choose_tags(&tags) {
                    out.push(registry_image(RegistryRef {
                        host: quay::registry_host(),
                        repository: format!("{org}/{repo}"),
                        tag: Some(t),
                        digest: None,
                    }));
                }
            }
            Ok(out)
        }
        Reference::Archive { path, .. } => archive_images(path, cx).await,
        Reference::Oci {
            path,
            tag: None,
            oci_format: false,
        } => match layout_tags(path, cx)? {
            Some(tags) => {
                let repo = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().to_lowercase())
                    .unwrap_or_else(|| "image".to_string());
                Ok(tags
                    .into_iter()
                    .map(|tag| Listed {
                        reference: Reference::Oci {
                            path: path.clone(),
                            tag: Some(tag.clone()),
                            oci_format: false,
                        },
                        registry: String::new(),
                        name: repo.clone(),
                        repo: repo.clone(),
                        tag,
                    })
                    .collect())
            }
            None => one_image(reference, cx).await,
        },
        other => one_image(other, cx).await,
    }
}

/// A registry image with its template fields.
pub fn registry_image(r: RegistryRef) -> Listed {
    Listed {
        registry: r.host.clone(),
        repo: r.repository.clone(),
        name: r.repository.rsplit('/').next().unwrap_or(&r.repository).to_string(),
        tag: r.tag.clone().unwrap_or_else(|| {
            r.digest
                .as_ref()
                .map(|d| d.hex().chars().take(12).collect())
                .unwrap_or_else(|| "latest".to_string())
        }),
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

/// Whether `tag` names referrers: `sha256-<hex>` or a cosign tag.
pub fn is_referrer_tag(tag: &str) -> bool {
    if crate::image::referrers::parse_cosign_tag(tag).is_some() {
        return true;
    }
    tag.split_once('-')
        .is_some_and(|(a, hex)| crate::image::Digest::parse(&format!("{a}:{hex}")).is_ok())
}

/// The tags of `repo`, remembered for the caller; the tags that hold
/// referrers are left out unless the entry keeps them: they travel with
/// their subject, not as images of their own.
async fn list_tags(client: &RegistryClient, cx: &dyn ListContext, repo: &str) -> Result<Vec<String>> {
    let tags = client.list_tags(repo).await?;
    cx.remember_tags(client.host(), repo, &tags);
    if cx.keeps_referrer_tags() {
        return Ok(tags);
    }
    Ok(tags.into_iter().filter(|t| !is_referrer_tag(t)).collect())
}

/// The images a registry reference names: its repository (or those of the
/// host's catalog its glob matches), at its digest, its tag, the tags its
/// glob matches, or the tags the entry's rule takes.
async fn registry_images(r: &RegistryRef, cx: &dyn ListContext) -> Result<Vec<Listed>> {
    let client = RegistryClient::for_host(&r.host, &cx.registry_options(&r.host))?;
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
            out.push(registry_image(RegistryRef {
                tag: r.tag.clone(),
                digest: Some(d.clone()),
                ..base
            }));
            continue;
        }
        let tags: Vec<String> = match &r.tag {
            Some(t) if !has_glob(t) => vec![t.clone()],
            Some(t) => {
                let m = glob_matcher(t, "tag")?;
                list_tags(&client, cx, &repo)
                    .await?
                    .into_iter()
                    .filter(|x| m.is_match(x))
                    .collect()
            }
            None => match cx.tags_named() {
                Some(named) => named,
                None => cx.choose_tags(&list_tags(&client, cx, &repo).await?),
            },
        };
        for tag in tags {
            out.push(registry_image(RegistryRef {
                tag: Some(tag),
                ..base.clone()
            }));
        }
    }
    cx.order(&mut out);
    Ok(out)
}

/// The images every archive at `path` records (`archive:///MEDIA` or
/// `archive:///MEDIA/0002`), checked and unpacked, each read from the
/// unpacked OCI layout under its archive name, with its source name's
/// `{registry}`, `{repo}`, `{name}` and `{tag}`; the entry's tag rule
/// chooses among each repository's recorded tags.
async fn archive_images(path: &std::path::Path, cx: &dyn ListContext) -> Result<Vec<Listed>> {
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
        .flat_map(|(repo, tags)| cx.choose_tags(&tags).into_iter().map(move |t| (repo.clone(), t)))
        .collect();
    Ok(imported
        .images
        .iter()
        .filter(|i| chosen.contains(&(i.image.repository(), i.image.tag.clone())))
        .map(|i| {
            let img = &i.image;
            Listed {
                reference: Reference::Oci {
                    path: imported.layout.clone(),
                    tag: Some(img.layout_ref.clone()),
                    oci_format: false,
                },
                registry: img.registry.clone(),
                name: img.repo.rsplit('/').next().unwrap_or(&img.repo).to_string(),
                repo: img.repo.clone(),
                tag: img.tag.clone(),
            }
        })
        .collect())
}

/// The tags of the OCI layout at `path` an entry takes (referrer tags left
/// out unless it keeps them), or None when it has no tags (its one
/// untagged image is read as before).
fn layout_tags(path: &std::path::Path, cx: &dyn ListContext) -> Result<Option<Vec<String>>> {
    let index = path.join("index.json");
    let bytes = match std::fs::read(&index) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", &index, e)),
    };
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| Error::invalid(format!("malformed {}: {e}", index.display())))?;
    let keep_referrers = cx.keeps_referrer_tags();
    let mut tags: Vec<String> = Vec::new();
    for m in value.get("manifests").and_then(|m| m.as_array()).into_iter().flatten() {
        let Some(name) = m
            .pointer(&format!(
                "/annotations/{}",
                super::oci_layout::REF_NAME.replace('/', "~1")
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
    Ok(Some(cx.choose_tags(&tags)))
}

/// A source that is one image: named as it records itself (a docker-save
/// archive's RepoTags), else by its file; a daemon's by the reference.
async fn one_image(reference: &Reference, cx: &dyn ListContext) -> Result<Vec<Listed>> {
    let name = match reference {
        Reference::Docker { name, .. } => ImageName {
            repository: name.clone(),
            tag: reference.tag().unwrap_or("latest").to_string(),
        },
        _ => {
            let source = open_source(reference, &cx.source_options(reference)).await?;
            image_name_for(reference, source.as_ref())
        }
    };
    let repo = name.repository;
    Ok(vec![Listed {
        reference: reference.clone(),
        registry: String::new(),
        name: repo.rsplit('/').next().unwrap_or(&repo).to_string(),
        repo,
        tag: name.tag,
    }])
}
