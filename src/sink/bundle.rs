//! Sink: an OCI runtime bundle for runc (`bundle:///path`): `rootfs/`, the
//! merged filesystem of all layers (extracted safely, see [`super::extract`]),
//! and `config.json`, a runtime-spec configuration generated from the image
//! config (args from entrypoint + cmd, env, cwd, user), and
//! `occy-rootfs.mtree.json`, the merged view of the layers (type, mode,
//! owner, size, link target and sha256 of every path) that the post-run
//! check and `occy check bundle://` compare the rootfs with, as umoci keeps
//! an mtree beside its bundles. Built under a temp name beside the target and
//! renamed into place when complete.

use std::fs;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use super::atomic::HeldTempDir;
use async_trait::async_trait;
use serde_json::{json, Value};

use super::atomic::stream_file_atomic;
use super::extract::Extractor;
use super::kind::{BlobLookup, CurrentDigest, DestinationKind, OutputMarker, ReadBack, RecordPlace, StoredForm};
use super::tree::{MergedView, VIEW_FILE};
use super::Sink;
use crate::error::{Error, Result};
use crate::image::{Compression, Descriptor, Digest, ImageConfig, ImageData, RawManifest};
use crate::source::BlobReader;

/// A runtime bundle: one platform's tree, extracted from compressed blobs,
/// known by the record beside it, checked against its tree listing.
pub const KIND: DestinationKind = DestinationKind {
    scheme: "bundle",
    keeps_index: false,
    stored_form: StoredForm::Compressed,
    current: CurrentDigest::Record,
    blob_lookup: BlobLookup::None,
    record: Some(RecordPlace::Beside),
    output: Some(OutputMarker::FileInside("config.json")),
    read_back: ReadBack::Tree,
    holds_referrers: false,
    one_image: Some("one bundle"),
    open_store: |dest, _| super::store::RecordStore::open(dest, &KIND),
};

/// Writes an OCI runtime bundle.
pub struct BundleSink {
    target: PathBuf,
    work: std::sync::Mutex<Option<HeldTempDir>>,
    /// Directories above `target` this sink created (after `work`: the
    /// temporary bundle goes first when the sink is dropped).
    made_dirs: super::atomic::MadeDirs,
}

impl BundleSink {
    /// A bundle at `target`, built in a temp directory beside it.
    pub async fn create(target: &Path) -> Result<Self> {
        let parent = target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if target.exists()
            && fs::read_dir(target).map(|mut d| d.next().is_some()).unwrap_or(true)
            && !target.join("config.json").exists()
        {
            return Err(Error::usage(format!(
                "{} exists and is not an OCI bundle; refusing to replace it",
                target.display()
            )));
        }
        let base = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let made_dirs = super::atomic::make_parent_dirs(target)?;
        let work = HeldTempDir::create(parent, &base)?;
        fs::create_dir(work.path().join("blobs")).map_err(|e| Error::io("create directory", work.path(), e))?;
        Ok(BundleSink {
            target: target.to_path_buf(),
            work: std::sync::Mutex::new(Some(work)),
            made_dirs,
        })
    }

    fn work_path(&self) -> Result<PathBuf> {
        self.work
            .lock()
            .map_err(|_| Error::invalid("bundle lock poisoned"))?
            .as_ref()
            .map(|w| w.path().to_path_buf())
            .ok_or_else(|| Error::invalid("bundle already finished"))
    }
}

/// Opens a spooled layer as its uncompressed tar (compression read from the bytes).
pub fn open_uncompressed(path: &Path) -> Result<Box<dyn Read + Send>> {
    let f = fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut r = BufReader::with_capacity(256 * 1024, f);
    let head = {
        use std::io::BufRead;
        r.fill_buf().map_err(|e| Error::io("read", path, e))?.to_vec()
    };
    Ok(match Compression::sniff(&head) {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::with_buffer(r).map_err(|e| Error::io("read", path, e))?)
        }
    })
}

/// Looks a user or group name up in the image's /etc/passwd or /etc/group.
fn lookup_id(rootfs: &Path, file: &str, name: &str) -> Option<(u32, Option<u32>)> {
    let text = fs::read_to_string(rootfs.join("etc").join(file)).ok()?;
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 3 && f[0] == name {
            let id = f[2].parse().ok()?;
            let gid = f.get(3).and_then(|g| g.parse().ok());
            Some((id, gid))
        } else {
            None
        }
    })
}

/// uid and gid for the config's `User` (`name`, `uid`, `uid:gid`, `name:group`).
fn resolve_user(rootfs: &Path, user: &str) -> Result<(u32, u32)> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let (uid, primary_gid) = match u.parse::<u32>() {
        Ok(n) => (n, lookup_passwd_gid(rootfs, n)),
        Err(_) => lookup_id(rootfs, "passwd", u)
            .ok_or_else(|| Error::invalid(format!("image user {u:?} is not in the image's /etc/passwd")))?,
    };
    let gid = match g {
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => lookup_id(rootfs, "group", g)
                .map(|(id, _)| id)
                .ok_or_else(|| Error::invalid(format!("image group {g:?} is not in the image's /etc/group")))?,
        },
        None => primary_gid.unwrap_or(0),
    };
    Ok((uid, gid))
}

fn lookup_passwd_gid(rootfs: &Path, uid: u32) -> Option<u32> {
    let text = fs::read_to_string(rootfs.join("etc/passwd")).ok()?;
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 4 && f[2].parse::<u32>().ok() == Some(uid))
            .then(|| f[3].parse().ok())
            .flatten()
    })
}

/// The runtime-spec `config.json` for an image config.
pub fn runtime_config(cfg: &ImageConfig, rootfs: &Path) -> Result<Value> {
    let rc = &cfg.config;
    let mut args: Vec<String> = rc.entrypoint.clone();
    args.extend(rc.cmd.iter().cloned());
    if args.is_empty() {
        args.push("sh".to_string());
    }
    let mut env = rc.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(
            0,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        );
    }
    let (uid, gid) = resolve_user(rootfs, &rc.user)?;
    let cwd = if rc.working_dir.is_empty() {
        "/".to_string()
    } else {
        rc.working_dir.clone()
    };
    let mut annotations = serde_json::Map::new();
    for (k, v) in &rc.labels {
        annotations.insert(k.clone(), Value::String(v.clone()));
    }
    Ok(json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": uid, "gid": gid },
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {
                "bounding": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "effective": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "permitted": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
            },
            "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
            "noNewPrivileges": true
        },
        "root": { "path": "rootfs", "readonly": false },
        "hostname": "occy",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"] },
            { "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"] }
        ],
        "annotations": annotations,
        "linux": {
            "resources": { "devices": [{ "allow": false, "access": "rwm" }] },
            "namespaces": [
                { "type": "pid" }, { "type": "network" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" }
            ],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    }))
}

/// Extracts spooled layers in order into `rootfs` (blocking).
pub fn extract_layers(rootfs: &Path, layers: &[(String, PathBuf)]) -> Result<()> {
    fs::create_dir_all(rootfs).map_err(|e| Error::io("create directory", rootfs, e))?;
    let mut ex = Extractor::new(rootfs);
    for (name, path) in layers {
        ex.apply_layer(name, open_uncompressed(path)?)?;
    }
    ex.finish()
}

/// Moves a finished directory to `target`, replacing an older bundle there.
pub fn replace_dir(work: &Path, target: &Path) -> Result<()> {
    if target.exists() {
        let old = target.with_file_name(format!(
            ".{}.occy-old-{}",
            target
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            std::process::id()
        ));
        fs::rename(target, &old).map_err(|e| Error::io("move aside", target, e))?;
        fs::rename(work, target).map_err(|e| Error::io("rename into place", target, e))?;
        let _ = make_writable_and_remove(&old);
    } else {
        fs::rename(work, target).map_err(|e| Error::io("rename into place", target, e))?;
    }
    Ok(())
}

/// Removes a tree even where extraction left read-only directories.
pub fn make_writable_and_remove(path: &Path) -> std::io::Result<()> {
    if fs::remove_dir_all(path).is_ok() {
        return Ok(());
    }
    for entry in walk_dirs(path) {
        let _ = fs::set_permissions(&entry, std::os::unix::fs::PermissionsExt::from_mode(0o755));
    }
    fs::remove_dir_all(path)
}

fn walk_dirs(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(rd) = fs::read_dir(&out[i]) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    out.push(e.path());
                }
            }
        }
        i += 1;
    }
    out
}

#[async_trait]
impl Sink for BundleSink {
    fn describe(&self) -> String {
        format!("bundle://{}", self.target.display())
    }

    async fn has_blob(&self, digest: &Digest) -> Result<bool> {
        Ok(self.work_path()?.join("blobs").join(digest.hex()).exists())
    }

    async fn put_blob(&self, desc: &Descriptor, reader: BlobReader) -> Result<()> {
        let path = self.work_path()?.join("blobs").join(desc.digest.hex());
        stream_file_atomic(&path, reader).await?;
        Ok(())
    }

    async fn put_image(&self, image: &ImageData, _tagged: bool) -> Result<()> {
        let work = self.work_path()?;
        let layers: Vec<(String, PathBuf)> = image
            .manifest
            .layers
            .iter()
            .map(|l| (l.digest.to_string(), work.join("blobs").join(l.digest.hex())))
            .collect();
        let config = image.config.parsed.clone();
        tokio::task::spawn_blocking(move || {
            let rootfs = work.join("rootfs");
            extract_layers(&rootfs, &layers)?;
            // What the rootfs must hold, from the layers themselves (not
            // from the disk), for the check after writing and `occy check`.
            let mut view = MergedView::new();
            for (name, path) in &layers {
                view.apply_layer(name, open_uncompressed(path)?)?;
            }
            view.save(&work.join(VIEW_FILE))?;
            let spec = runtime_config(&config, &rootfs)?;
            let bytes = serde_json::to_vec_pretty(&spec)?;
            fs::write(work.join("config.json"), bytes).map_err(|e| Error::io("write", work.join("config.json"), e))?;
            fs::remove_dir_all(work.join("blobs")).map_err(|e| Error::io("remove", work.join("blobs"), e))
        })
        .await
        .map_err(|e| Error::invalid(format!("extraction task failed: {e}")))?
    }

    async fn put_index(&self, index: &RawManifest, _images: &[ImageData]) -> Result<()> {
        Err(Error::usage(format!(
            "a bundle holds one platform; index {} cannot be unpacked as a whole: choose one with --platform",
            index.digest
        )))
    }

    async fn finish(&self) -> Result<()> {
        let work = self
            .work
            .lock()
            .map_err(|_| Error::invalid("bundle lock poisoned"))?
            .take()
            .ok_or_else(|| Error::invalid("bundle already finished"))?;
        let (path, lock) = work.keep();
        let target = self.target.clone();
        tokio::task::spawn_blocking(move || {
            let r = replace_dir(&path, &target);
            drop(lock);
            if r.is_err() {
                let _ = make_writable_and_remove(&path);
            }
            r
        })
        .await
        .map_err(|e| Error::invalid(format!("rename task failed: {e}")))?
    }

    async fn abort(&self) {
        if let Ok(mut w) = self.work.lock() {
            if let Some(dir) = w.take() {
                let (p, _lock) = dir.keep();
                let _ = make_writable_and_remove(&p);
            }
        }
        self.made_dirs.remove_empty();
    }
}
