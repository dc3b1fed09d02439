//! Source: an image in a Docker Engine (or podman) daemon, `docker://name[:tag]`,
//! over the Engine API on a unix socket (`?socket=`, else `DOCKER_HOST`, else
//! `/var/run/docker.sock`) through `bollard`.
//!
//! The daemon hands out images only as a docker-save archive
//! (`GET /images/{name}/get`) that names its layers at the end, so the export
//! is parsed while it streams and each member is written to a private
//! temporary directory (never the whole archive in memory), which is then
//! read as a docker-save layout — classic, OCI-style or podman's, whichever
//! the daemon wrote — and removed when the source is dropped. This is what
//! skopeo's `docker-daemon:` transport does too, with a temporary file.

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;
use bollard::{ClientVersion, Docker};
use futures_util::TryStreamExt;

use super::docker_save::DockerSaveSource;
use super::{BlobReader, Source};
use crate::error::{Error, Result};
use crate::filter::tar_stream::{EntryKind, TarReader};
use crate::image::{Descriptor, Digest, ImageName, RawManifest};

/// The Engine API version occy speaks: old enough for podman 4 and Docker 20,
/// and it has everything used here (export, load, inspect).
const API_VERSION: ClientVersion = ClientVersion {
    major_version: 1,
    minor_version: 41,
};

/// The socket a `docker://` reference means: its `?socket=`, else
/// `DOCKER_HOST` when it is a `unix://` address, else `/var/run/docker.sock`.
pub fn socket_path(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    match std::env::var("DOCKER_HOST") {
        Ok(host) if !host.is_empty() => match host.strip_prefix("unix://") {
            Some(path) => Ok(PathBuf::from(path)),
            None => Err(Error::usage(format!(
                "DOCKER_HOST={host} is not a unix:// socket; occy talks to the daemon over a unix socket (docker://NAME?socket=/path)"
            ))),
        },
        _ => Ok(PathBuf::from("/var/run/docker.sock")),
    }
}

/// A checked connection to a daemon: the socket exists, is a socket, and
/// answers `/_ping` like a Docker Engine API.
#[derive(Clone)]
pub struct DaemonConnection {
    pub docker: Docker,
    pub socket: PathBuf,
}

impl DaemonConnection {
    pub async fn open(explicit: Option<&Path>) -> Result<Self> {
        let socket = socket_path(explicit)?;
        let meta = std::fs::metadata(&socket).map_err(|e| {
            Error::NotFound(format!(
                "Docker socket {} cannot be used ({e}); is the daemon running? Point to it with DOCKER_HOST=unix:///path or docker://NAME?socket=/path",
                socket.display()
            ))
        })?;
        {
            use std::os::unix::fs::FileTypeExt;
            if !meta.file_type().is_socket() {
                return Err(Error::invalid(format!(
                    "{} is not a unix socket, so it is not a Docker Engine API",
                    socket.display()
                )));
            }
        }
        let path = socket.to_string_lossy().into_owned();
        // Exports and loads of big images take as long as they take; the
        // timeout is per request, so make it generous.
        let docker = Docker::connect_with_unix(&path, 3600, &API_VERSION)
            .map_err(|e| Error::Network(format!("cannot connect to the Docker socket {}: {e}", socket.display())))?;
        let ping = tokio::time::timeout(std::time::Duration::from_secs(30), docker.ping()).await;
        match ping {
            Ok(Ok(_)) => Ok(DaemonConnection { docker, socket }),
            Ok(Err(e)) => Err(Error::Network(format!(
                "{} does not answer as a Docker Engine API: {}",
                socket.display(),
                describe_error(&e)
            ))),
            Err(_) => Err(Error::Network(format!(
                "{} did not answer a Docker Engine API ping within 30 s",
                socket.display()
            ))),
        }
    }

    /// The ID (config digest) of image `name:tag` in the daemon, None when
    /// it holds no such image.
    pub async fn image_id(&self, name: &str, tag: &str) -> Result<Option<Digest>> {
        let image = format!("{name}:{tag}");
        match self.docker.inspect_image(&image).await {
            Ok(inspect) => match inspect.id {
                Some(id) if id.contains(':') => Digest::parse(&id).map(Some),
                Some(id) => Digest::parse(&format!("sha256:{id}")).map(Some),
                None => Ok(None),
            },
            Err(e) => match self.error(&format!("image {image}"), e) {
                Error::NotFound(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    /// The ID (config digest) and layers (diff_ids) the daemon reports for
    /// `name:tag`, None when it holds no such image.
    pub async fn image_layers(&self, name: &str, tag: &str) -> Result<Option<(Digest, Vec<Digest>)>> {
        let image = format!("{name}:{tag}");
        let inspect = match self.docker.inspect_image(&image).await {
            Ok(i) => i,
            Err(e) => {
                return match self.error(&format!("image {image}"), e) {
                    Error::NotFound(_) => Ok(None),
                    other => Err(other),
                }
            }
        };
        let parse = |d: &str| {
            let d = if d.contains(':') {
                d.to_string()
            } else {
                format!("sha256:{d}")
            };
            Digest::parse(&d).map_err(|e| {
                Error::invalid(format!(
                    "the daemon at {} reports {image} with {e}",
                    self.socket.display()
                ))
            })
        };
        let id = parse(inspect.id.as_deref().unwrap_or_default())?;
        let layers = inspect
            .root_fs
            .and_then(|r| r.layers)
            .unwrap_or_default()
            .iter()
            .map(|l| parse(l))
            .collect::<Result<Vec<_>>>()?;
        Ok(Some((id, layers)))
    }

    /// The error for something the daemon refused, with 404 as NotFound.
    pub fn error(&self, what: &str, e: bollard::errors::Error) -> Error {
        match &e {
            bollard::errors::Error::DockerResponseServerError { status_code: 404, .. } => {
                Error::NotFound(format!("{what}: not found in the daemon at {}", self.socket.display()))
            }
            _ => Error::Network(format!(
                "{what}: the daemon at {} said: {}",
                self.socket.display(),
                describe_error(&e)
            )),
        }
    }
}

/// bollard's message without its Debug wrapping.
pub fn describe_error(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, message } => {
            format!("HTTP {status_code}: {}", message.trim())
        }
        bollard::errors::Error::DockerStreamError { error } => error.trim().to_string(),
        other => other.to_string(),
    }
}

/// One image exported from a daemon, read from its unpacked export.
pub struct DockerDaemonSource {
    describe: String,
    inner: DockerSaveSource,
    /// Holds the unpacked export; removed on drop.
    _spool: tempfile::TempDir,
}

impl DockerDaemonSource {
    /// Opens `image` (`name:tag` or `name@digest`, as the daemon names it).
    pub async fn open(image: &str, socket: Option<&Path>) -> Result<Self> {
        let conn = DaemonConnection::open(socket).await?;
        let image = image.to_string();
        let describe = match socket {
            Some(s) => format!("docker://{image}?socket={}", s.display()),
            None => format!("docker://{image}"),
        };
        conn.docker
            .inspect_image(&image)
            .await
            .map_err(|e| conn.error(&format!("image {image}"), e))?;

        let spool = tempfile::Builder::new()
            .prefix("occy-docker-export-")
            .tempdir()
            .map_err(|e| Error::io("create a temporary directory in", std::env::temp_dir(), e))?;
        let stream = conn
            .docker
            .export_image(&image)
            .map_err(|e| std::io::Error::other(describe_error(&e)));
        let reader = tokio_util::io::StreamReader::new(stream);
        let root = spool.path().to_path_buf();
        let unpack_what = format!("the export of {image}");
        tokio::task::spawn_blocking(move || {
            let bridge = crate::interrupt::Bridge::new(reader);
            unpack_export(bridge, &root, &unpack_what)
        })
        .await
        .map_err(|e| Error::invalid(format!("unpacking the export of {image} failed: {e}")))??;

        let inner = DockerSaveSource::open_dir(spool.path(), None).await?;
        Ok(DockerDaemonSource {
            describe,
            inner,
            _spool: spool,
        })
    }
}

/// Writes each member of a docker-save stream under `root`: regular files
/// and directories, and symlinks that stay inside `root` (podman links
/// `<id>/layer.tar` to `../<diffid>.tar`). Anything else, or a name or link
/// that would leave `root`, is an error naming the member.
fn unpack_export(reader: impl Read, root: &Path, what: &str) -> Result<()> {
    // occy's one tar reader: the export parses as layers and `tar://` do.
    let mut archive = TarReader::new(reader, what);
    let mut buf = vec![0u8; 64 * 1024];
    while let Some(entry) = archive.next_entry()? {
        let shown = entry.written_path();
        let rel = (!entry.absolute)
            .then(|| inside(Path::new(&entry.path)))
            .flatten()
            .ok_or_else(|| Error::invalid(format!("{what}: member {shown} points outside the archive")))?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let target = root.join(&rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
        }
        match entry.kind {
            EntryKind::Directory => {
                std::fs::create_dir_all(&target).map_err(|e| Error::io("create", &target, e))?;
            }
            EntryKind::File => {
                let mut out = std::fs::File::create(&target).map_err(|e| Error::io("create", &target, e))?;
                loop {
                    let n = archive.read_data(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    out.write_all(&buf[..n]).map_err(|e| Error::io("write", &target, e))?;
                }
            }
            EntryKind::Symlink => {
                let link = entry
                    .link
                    .clone()
                    .filter(|l| !l.is_empty())
                    .ok_or_else(|| Error::invalid(format!("{what}: symlink {shown} has no target")))?;
                let link = PathBuf::from(link);
                let joined = rel.parent().unwrap_or(Path::new("")).join(&link);
                if link.is_absolute() || inside(&joined).is_none() {
                    return Err(Error::invalid(format!(
                        "{what}: symlink {shown} -> {} points outside the archive",
                        link.display()
                    )));
                }
                std::os::unix::fs::symlink(&link, &target).map_err(|e| Error::io("create symlink", &target, e))?;
            }
            other => {
                return Err(Error::invalid(format!(
                    "{what}: member {shown} is a {other:?}, not a file, directory or symlink"
                )))
            }
        }
    }
    Ok(())
}

/// `name` as a relative path that stays inside its root, or None.
fn inside(name: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in name.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

#[async_trait]
impl Source for DockerDaemonSource {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    async fn root_manifest(&self) -> Result<RawManifest> {
        self.inner.root_manifest().await
    }

    async fn manifest(&self, digest: &Digest) -> Result<RawManifest> {
        self.inner.manifest(digest).await
    }

    async fn open_blob(&self, desc: &Descriptor) -> Result<BlobReader> {
        self.inner.open_blob(desc).await
    }

    fn recorded_name(&self) -> Option<ImageName> {
        self.inner.recorded_name()
    }

    fn synthesises_manifests(&self) -> bool {
        self.inner.synthesises_manifests()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, link, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            if !link.is_empty() {
                h.set_link_name(link).unwrap();
            }
            // Raw name bytes: `set_path` refuses the `..` these tests need.
            let bytes = name.as_bytes();
            h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn unpacks_files_dirs_and_inner_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let data = tar_of(&[
            ("abc.tar", tar::EntryType::Regular, "", b"layer"),
            ("id/", tar::EntryType::Directory, "", b""),
            ("id/layer.tar", tar::EntryType::Symlink, "../abc.tar", b""),
            ("manifest.json", tar::EntryType::Regular, "", b"[]"),
        ]);
        unpack_export(&data[..], t.path(), "test").unwrap();
        assert_eq!(std::fs::read(t.path().join("id/layer.tar")).unwrap(), b"layer");
        assert_eq!(std::fs::read(t.path().join("manifest.json")).unwrap(), b"[]");
    }

    #[test]
    fn refuses_members_and_links_that_leave_the_root() {
        for entries in [
            vec![("../evil", tar::EntryType::Regular, "", &b"x"[..])],
            vec![("a/../../evil", tar::EntryType::Regular, "", &b"x"[..])],
            vec![("link", tar::EntryType::Symlink, "/etc/passwd", &b""[..])],
            vec![("d/link", tar::EntryType::Symlink, "../../etc", &b""[..])],
            vec![("dev", tar::EntryType::Char, "", &b""[..])],
        ] {
            let t = tempfile::tempdir().unwrap();
            let data = tar_of(&entries);
            let err = unpack_export(&data[..], &t.path().join("root"), "test").unwrap_err();
            assert!(err.to_string().contains("test"), "{err}");
            assert!(!t.path().join("evil").exists());
        }
    }

    #[test]
    fn socket_from_reference_then_docker_host_then_default() {
        assert_eq!(
            socket_path(Some(Path::new("/run/x.sock"))).unwrap(),
            PathBuf::from("/run/x.sock")
        );
    }
}
