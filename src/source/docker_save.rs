//! Source: docker-save archives (`tar://`) and occystrap's directory format
//! (`dir://`), which share one layout: `manifest.json` naming a config file
//! and layer files. Handles the classic `<id>/layer.tar`, the OCI-style
//! `blobs/sha256/<hex>` that newer Docker writes, and podman's layout where
//! `<id>/layer.tar` is a symlink to `<diffid>.tar`. Archives are indexed once
//! (headers only, seeking over data) and read by offset, never unpacked.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{BlobReader, Source};
use crate::error::{Error, Result};
use crate::filter::tar_stream::{EntryKind, TarReader};
use crate::image::config::MAX_CONFIG_SIZE;
use crate::image::{
    media_type, Compression, ConfigBlob, Descriptor, Digest, ImageManifest, ImageName, RawManifest, VerifyingReader,
};

/// One image entry of `manifest.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct SaveManifestEntry {
    #[serde(rename = "Config")]
    pub config: String,
    #[serde(rename = "RepoTags", default)]
    pub repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    pub layers: Vec<String>,
}

/// Where a named file's bytes live in an archive.
#[derive(Debug, Clone)]
enum TarEntry {
    Data { offset: u64, size: u64 },
    Symlink(String),
    Hardlink(String),
}

/// The storage under the layout: a tar archive read by offset, or a directory.
enum Backend {
    Tar {
        path: PathBuf,
        entries: HashMap<String, TarEntry>,
    },
    Dir {
        root: PathBuf,
    },
}

/// A file located in the backend.
struct Located {
    /// For tar: the archive path and offset; for dir: the file path and 0.
    path: PathBuf,
    offset: u64,
    size: u64,
}

impl Backend {
    fn describe(&self) -> String {
        match self {
            Backend::Tar { path, .. } => format!("tar://{}", path.display()),
            Backend::Dir { root } => format!("dir://{}", root.display()),
        }
    }

    /// Finds a file by its name in the layout, following links.
    async fn locate(&self, name: &str) -> Result<Located> {
        let clean = clean_name(name).ok_or_else(|| {
            Error::invalid(format!(
                "{}: unsafe file name {name:?} in manifest.json",
                self.describe()
            ))
        })?;
        match self {
            Backend::Tar { path, entries } => {
                let mut current = clean;
                for _ in 0..16 {
                    match entries.get(&current) {
                        Some(TarEntry::Data { offset, size }) => {
                            return Ok(Located {
                                path: path.clone(),
                                offset: *offset,
                                size: *size,
                            })
                        }
                        Some(TarEntry::Hardlink(target)) => {
                            current = clean_name(target).ok_or_else(|| {
                                Error::invalid(format!("{}: unsafe link target {target:?}", self.describe()))
                            })?;
                        }
                        Some(TarEntry::Symlink(target)) => {
                            let joined = if target.starts_with('/') {
                                target.clone()
                            } else {
                                match current.rfind('/') {
                                    Some(i) => format!("{}/{}", &current[..i], target),
                                    None => target.clone(),
                                }
                            };
                            current = clean_name(&joined).ok_or_else(|| {
                                Error::invalid(format!(
                                    "{}: link {current:?} points outside the archive",
                                    self.describe()
                                ))
                            })?;
                        }
                        None => {
                            return Err(Error::NotFound(format!(
                                "{}: no file {name:?} in the archive",
                                self.describe()
                            )));
                        }
                    }
                }
                Err(Error::invalid(format!(
                    "{}: too many links resolving {name:?}",
                    self.describe()
                )))
            }
            Backend::Dir { root } => {
                let p = root.join(&clean);
                let canon_root = tokio::fs::canonicalize(root)
                    .await
                    .map_err(|e| Error::io("open", root, e))?;
                let canon = tokio::fs::canonicalize(&p).await.map_err(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        Error::NotFound(format!("{}: no file {name:?}", self.describe()))
                    } else {
                        Error::io("open", &p, e)
                    }
                })?;
                if !canon.starts_with(&canon_root) {
                    return Err(Error::invalid(format!(
                        "{}: {name:?} points outside the directory",
                        self.describe()
                    )));
                }
                let meta = tokio::fs::metadata(&canon)
                    .await
                    .map_err(|e| Error::io("stat", &canon, e))?;
                Ok(Located {
                    path: canon,
                    offset: 0,
                    size: meta.len(),
                })
            }
        }
    }

    async fn read_small(&self, name: &str, limit: u64) -> Result<Vec<u8>> {
        let loc = self.locate(name).await?;
        if loc.size > limit {
            return Err(Error::invalid(format!(
                "{}: {name} is {} bytes, over the {limit} byte limit",
                self.describe(),
                loc.size
            )));
        }
        let mut r = open_located(&loc).await?;
        let mut buf = Vec::with_capacity(loc.size as usize);
        r.read_to_end(&mut buf)
            .await
            .map_err(|e| Error::io("read", &loc.path, e))?;
        Ok(buf)
    }
}

/// Opens a located file as a reader of exactly its bytes.
async fn open_located(loc: &Located) -> Result<tokio::io::Take<tokio::io::BufReader<tokio::fs::File>>> {
    let mut f = tokio::fs::File::open(&loc.path)
        .await
        .map_err(|e| Error::io("open", &loc.path, e))?;
    if loc.offset > 0 {
        f.seek(SeekFrom::Start(loc.offset))
            .await
            .map_err(|e| Error::io("seek in", &loc.path, e))?;
    }
    Ok(tokio::io::BufReader::with_capacity(256 * 1024, f).take(loc.size))
}

/// Normalises an archive member name (`./a//b` → `a/b`); None if it escapes
/// upwards or is empty.
fn clean_name(name: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in Path::new(name).components() {
        match c {
            Component::Normal(s) => parts.push(s.to_str()?),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::Prefix(_) => return None,
        }
    }
    if parts.is_empty() {
        None
    } else {
        Some(parts.join("/"))
    }
}

/// Reads every header of a tar archive, seeking over the data.
fn index_tar(path: &Path) -> Result<HashMap<String, TarEntry>> {
    let file = std::fs::File::open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound(format!(
                "archive {} does not exist: check the path (tar:///ABSOLUTE/PATH.tar, or tar://RELATIVE/PATH.tar)",
                path.display()
            ))
        } else {
            Error::io("open", path, e)
        }
    })?;
    let len = file
        .metadata()
        .map_err(|e| Error::io("read the size of", path, e))?
        .len();
    let bad = |e: Error| {
        let why = e.to_string();
        let why = why
            .lines()
            .next()
            .unwrap_or_default()
            .chars()
            .take(160)
            .collect::<String>();
        Error::invalid(format!(
            "{} is not a readable tar archive ({why}): tar:// expects a docker-save archive (docker save, podman save, occy)",
            path.display()
        ))
    };
    // occy's one tar reader (as for layers), seeking over member data.
    let mut archive = TarReader::new(std::io::BufReader::new(file), "the archive");
    let mut out = HashMap::new();
    while let Some(entry) = archive.next_entry().map_err(bad)? {
        let offset = archive.position();
        archive.seek_past_data().map_err(bad)?;
        if offset.saturating_add(entry.data_len) > len {
            return Err(bad(Error::invalid(format!(
                "member {} claims {} bytes of data at offset {offset}, past the end of the {len} byte file",
                entry.path, entry.data_len
            ))));
        }
        let raw_name = entry.written_path();
        let Some(name) = clean_name(&raw_name) else { continue };
        let link = entry.link.clone().unwrap_or_default();
        let e = match entry.kind {
            EntryKind::File => TarEntry::Data {
                offset,
                size: entry.data_len,
            },
            EntryKind::Symlink => TarEntry::Symlink(link),
            EntryKind::HardLink => TarEntry::Hardlink(link),
            _ => continue,
        };
        out.insert(name, e);
    }
    Ok(out)
}

/// Computes sha256 and compression of a located file (used only for
/// compressed layers whose digest the layout does not give).
fn hash_located(path: &Path, offset: u64, size: u64) -> Result<Digest> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    f.seek(SeekFrom::Start(offset))
        .map_err(|e| Error::io("seek in", path, e))?;
    let mut r = f.take(size);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = r.read(&mut buf).map_err(|e| Error::io("read", path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(Digest::from_hasher(h))
}

/// Reads one image from a docker-save layout.
pub struct DockerSaveSource {
    backend: Backend,
    /// The chosen `manifest.json` entry.
    pub entry: SaveManifestEntry,
    /// The file it was read from (`manifest.json`, or a dir's `manifest-….json`).
    pub manifest_name: String,
    raw: RawManifest,
    layer_files: HashMap<Digest, String>,
}

impl DockerSaveSource {
    /// Opens a docker-save tar archive.
    pub async fn open_tar(path: &Path) -> Result<Self> {
        let p = path.to_path_buf();
        let entries = tokio::task::spawn_blocking(move || index_tar(&p))
            .await
            .map_err(|e| Error::invalid(format!("indexing {} failed: {e}", path.display())))??;
        Self::from_backend(Backend::Tar {
            path: path.to_path_buf(),
            entries,
        })
        .await
    }

    /// Opens an occystrap-format directory. `image` picks an entry of
    /// `catalog.json` as (name, tag) when the directory holds several (a
    /// `unique_names` directory); without a tag, the name's only tag. A
    /// choice that is missing or ambiguous is an error listing the images
    /// the directory holds.
    pub async fn open_dir(root: &Path, image: Option<(&str, Option<&str>)>) -> Result<Self> {
        if tokio::fs::metadata(root).await.is_err() {
            return Err(Error::NotFound(format!("directory {} does not exist", root.display())));
        }
        let backend = Backend::Dir {
            root: root.to_path_buf(),
        };
        let catalog_path = root.join("catalog.json");
        let hint = || format!("name one with dir://{}?image=NAME:TAG", root.display());
        let (manifest_name, check_tags) = match tokio::fs::read(&catalog_path).await {
            Ok(bytes) => {
                let catalog: std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>> =
                    serde_json::from_slice(&bytes)
                        .map_err(|e| Error::invalid(format!("malformed {}: {e}", catalog_path.display())))?;
                let all: Vec<(String, String, String)> = catalog
                    .iter()
                    .flat_map(|(img, tags)| tags.iter().map(move |(t, f)| (img.clone(), t.clone(), f.clone())))
                    .collect();
                let held = || {
                    all.iter()
                        .map(|(i, t, _)| format!("{i}:{t}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let chosen = match image {
                    Some((name, tag)) => {
                        let matching: Vec<&(String, String, String)> = all
                            .iter()
                            .filter(|(i, t, _)| i == name && tag.is_none_or(|want| t == want))
                            .collect();
                        match matching.as_slice() {
                            [one] => one.2.clone(),
                            [] => {
                                let wanted = match tag {
                                    Some(t) => format!("{name}:{t}"),
                                    None => name.to_string(),
                                };
                                return Err(Error::NotFound(format!(
                                    "{} holds no image {wanted}: it holds {}; {}",
                                    root.display(),
                                    held(),
                                    hint()
                                )));
                            }
                            several => {
                                let tags: Vec<String> = several.iter().map(|(i, t, _)| format!("{i}:{t}")).collect();
                                return Err(Error::usage(format!(
                                    "{} holds several tags of {name} ({}): {}",
                                    root.display(),
                                    tags.join(", "),
                                    hint()
                                )));
                            }
                        }
                    }
                    None if all.len() == 1 => all[0].2.clone(),
                    None if tokio::fs::metadata(root.join("manifest.json")).await.is_ok() => {
                        "manifest.json".to_string()
                    }
                    None => {
                        return Err(Error::usage(format!(
                            "{} holds several images ({}): {}",
                            root.display(),
                            held(),
                            hint()
                        )));
                    }
                };
                (chosen, false)
            }
            Err(_) => ("manifest.json".to_string(), image.is_some()),
        };
        let source = Self::from_backend_with(backend, &manifest_name).await?;
        if let (true, Some((name, tag))) = (check_tags, image) {
            // No catalog: the one image must be the one asked for.
            let tags = source.entry.repo_tags.clone().unwrap_or_default();
            let found = tags.iter().any(|rt| {
                let (n, t) = crate::reference::split_name_tag(rt);
                n == name && tag.is_none_or(|want| t == Some(want))
            });
            if !found {
                return Err(Error::NotFound(format!(
                    "{} holds no image {name}{}: it holds {}",
                    root.display(),
                    tag.map(|t| format!(":{t}")).unwrap_or_default(),
                    if tags.is_empty() {
                        "one untagged image".to_string()
                    } else {
                        tags.join(", ")
                    }
                )));
            }
        }
        Ok(source)
    }

    async fn from_backend(backend: Backend) -> Result<Self> {
        Self::from_backend_with(backend, "manifest.json").await
    }

    async fn from_backend_with(backend: Backend, manifest_name: &str) -> Result<Self> {
        let bytes = backend
            .read_small(manifest_name, 64 * 1024 * 1024)
            .await
            .map_err(|e| match e {
                Error::NotFound(_) => Error::invalid(format!(
                    "{} is not a docker-save image: it has no {manifest_name}",
                    backend.describe()
                )),
                other => other,
            })?;
        let entries: Vec<SaveManifestEntry> = serde_json::from_slice(&bytes)
            .map_err(|e| Error::invalid(format!("{}: malformed {manifest_name}: {e}", backend.describe())))?;
        let Some(entry) = entries.into_iter().next() else {
            return Err(Error::invalid(format!(
                "{}: {manifest_name} lists no images",
                backend.describe()
            )));
        };
        let config_bytes = Bytes::from(backend.read_small(&entry.config, MAX_CONFIG_SIZE).await?);
        let config = ConfigBlob::parse(
            config_bytes.clone(),
            &format!("{} in {}", entry.config, backend.describe()),
        )?;
        let diff_ids = &config.parsed.rootfs.diff_ids;
        if diff_ids.len() != entry.layers.len() {
            return Err(Error::invalid(format!(
                "{}: {manifest_name} lists {} layers but the config has {} diff_ids",
                backend.describe(),
                entry.layers.len(),
                diff_ids.len()
            )));
        }

        let mut layers = Vec::with_capacity(entry.layers.len());
        let mut layer_files = HashMap::new();
        let mut any_zstd = false;
        for (i, name) in entry.layers.iter().enumerate() {
            let loc = backend.locate(name).await?;
            let mut head = [0u8; 4];
            let n = {
                let mut r = open_located(&loc).await?;
                let mut filled = 0;
                while filled < 4 {
                    let k = r
                        .read(&mut head[filled..])
                        .await
                        .map_err(|e| Error::io("read", &loc.path, e))?;
                    if k == 0 {
                        break;
                    }
                    filled += k;
                }
                filled
            };
            let compression = Compression::sniff(&head[..n]);
            let digest = match compression {
                Compression::None => diff_ids[i].clone(),
                _ => match name
                    .strip_prefix("blobs/sha256/")
                    .map(|h| Digest::parse(&format!("sha256:{h}")))
                {
                    Some(Ok(d)) => d,
                    _ => {
                        let (p, off, size) = (loc.path.clone(), loc.offset, loc.size);
                        tokio::task::spawn_blocking(move || hash_located(&p, off, size))
                            .await
                            .map_err(|e| Error::invalid(format!("hashing {name} failed: {e}")))??
                    }
                },
            };
            any_zstd |= compression == Compression::Zstd;
            layers.push((compression, digest.clone(), loc.size));
            layer_files.insert(digest, name.clone());
        }
        let oci = any_zstd;
        let manifest = ImageManifest {
            schema_version: 2,
            media_type: Some(
                if oci {
                    media_type::OCI_MANIFEST
                } else {
                    media_type::DOCKER_MANIFEST
                }
                .into(),
            ),
            artifact_type: None,
            config: Descriptor::new(
                if oci {
                    media_type::OCI_CONFIG
                } else {
                    media_type::DOCKER_CONFIG
                },
                config.digest.clone(),
                config.bytes.len() as u64,
            ),
            layers: layers
                .into_iter()
                .map(|(c, d, s)| Descriptor::new(c.layer_media_type(oci), d, s))
                .collect(),
            subject: None,
            annotations: None,
        };
        let raw = RawManifest::new(manifest.to_bytes()?, manifest.media_type.as_deref())?;
        layer_files.insert(config.digest.clone(), entry.config.clone());
        Ok(DockerSaveSource {
            backend,
            entry,
            manifest_name: manifest_name.to_string(),
            raw,
            layer_files,
        })
    }

    /// The repository tags the archive records for the chosen image.
    pub fn repo_tags(&self) -> Vec<String> {
        self.entry.repo_tags.clone().unwrap_or_default()
    }
}

#[async_trait]
impl Source for DockerSaveSource {
    fn describe(&self) -> String {
        self.backend.describe()
    }

    async fn root_manifest(&self) -> Result<RawManifest> {
        Ok(self.raw.clone())
    }

    fn recorded_name(&self) -> Option<ImageName> {
        self.repo_tags().first().map(|t| ImageName::parse(t))
    }

    fn synthesises_manifests(&self) -> bool {
        true
    }

    async fn manifest(&self, digest: &Digest) -> Result<RawManifest> {
        if *digest == self.raw.digest {
            Ok(self.raw.clone())
        } else {
            Err(Error::NotFound(format!("{}: no manifest {digest}", self.describe())))
        }
    }

    async fn open_blob(&self, desc: &Descriptor) -> Result<BlobReader> {
        let name = self
            .layer_files
            .get(&desc.digest)
            .ok_or_else(|| Error::NotFound(format!("{}: no blob {}", self.describe(), desc.digest)))?;
        let loc = self.backend.locate(name).await?;
        let r = open_located(&loc).await?;
        Ok(Box::pin(VerifyingReader::new(
            r,
            Some(desc.digest.clone()),
            Some(desc.size),
            format!("{name} in {}", self.describe()),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::clean_name;

    #[test]
    fn names_are_cleaned() {
        assert_eq!(clean_name("./a//b/layer.tar").as_deref(), Some("a/b/layer.tar"));
        assert_eq!(clean_name("/abs").as_deref(), Some("abs"));
        assert_eq!(clean_name("a/../b").as_deref(), Some("b"));
        assert_eq!(clean_name("../x"), None);
        assert_eq!(clean_name("."), None);
    }
}
