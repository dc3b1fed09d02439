//! `occy check`: validates an image the way the tools that run it will read
//! it, and catches what image manipulation breaks. Each rule has a stable id
//! and a severity; a finding names the manifest, layer or entry concerned.
//!
//! The fast mode reads manifests and configs only and checks that every
//! blob exists. The full mode also reads each layer once: the compressed
//! bytes are hashed against the descriptor, decompressed (the compression
//! detected from the bytes and compared with the media type), hashed against
//! the diff_id and scanned entry by entry ([`crate::filter::tar_stream`]) in
//! the same pass, with fixed buffers.

pub mod layer_scan;
pub mod referrers;
/// The merged view of layers lives beside extraction, below both `sink` and
/// `check` (`bundle://` writes it, the check reads it).
pub use crate::sink::tree;

use std::collections::HashMap;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::image::config::ImageConfig;
use crate::image::ImageName;
use crate::image::{media_type, ConfigBlob, Descriptor, Digest, Manifest, RawManifest};
use crate::reference::Reference;
use crate::sink::kind::ReadBack;
use crate::source::{open_source, read_small_blob, Source, SourceOptions};

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    Info,
}

/// One thing a rule found.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// The rule's stable id, e.g. `diff-id`.
    pub check: &'static str,
    pub message: String,
}

/// Every finding for one image (all platforms of an index).
#[derive(Debug, Clone, Default)]
pub struct Findings {
    pub results: Vec<Finding>,
}

impl Findings {
    pub fn add(&mut self, severity: Severity, check: &'static str, message: impl Into<String>) {
        self.results.push(Finding {
            severity,
            check,
            message: message.into(),
        });
    }

    pub fn error(&mut self, check: &'static str, message: impl Into<String>) {
        self.add(Severity::Error, check, message)
    }

    pub fn warning(&mut self, check: &'static str, message: impl Into<String>) {
        self.add(Severity::Warning, check, message)
    }

    pub fn info(&mut self, check: &'static str, message: impl Into<String>) {
        self.add(Severity::Info, check, message)
    }

    pub fn count(&self, severity: Severity) -> usize {
        self.results.iter().filter(|f| f.severity == severity).count()
    }

    /// The ids of the rules that fired with `severity`, sorted and unique.
    pub fn ids(&self, severity: Severity) -> Vec<&'static str> {
        let mut ids: Vec<&'static str> = self
            .results
            .iter()
            .filter(|f| f.severity == severity)
            .map(|f| f.check)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// How deep to look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Manifests, configs and blob existence.
    Fast,
    /// Also every layer's bytes, uncompressed content and tar entries.
    Full,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Fast => "fast",
            Mode::Full => "full",
        }
    }
}

/// A compressed layer bigger than this draws a warning.
pub const LARGE_LAYER: u64 = 1 << 30;

/// Layer sizes the fast check asks for at once.
const FAST_CHECK_CONCURRENCY: usize = 8;

/// Checks what `source` names: an image, or an index and every image in it.
pub async fn check_source(source: &dyn Source, mode: Mode) -> Result<Findings> {
    let mut f = Findings::default();
    let root = source.root_manifest().await?;
    match root.parse() {
        Err(e) => f.error(
            "schema-version",
            format!("manifest {} cannot be read: {e}", root.digest),
        ),
        Ok(Manifest::Image(_)) => check_image(source, &root, None, mode, &mut f).await?,
        Ok(Manifest::Index(index)) => {
            if index.schema_version != 2 {
                f.error(
                    "schema-version",
                    format!(
                        "index {} has schemaVersion {}, expected 2",
                        root.digest, index.schema_version
                    ),
                );
            }
            let mut seen: HashMap<String, Digest> = HashMap::new();
            for entry in &index.manifests {
                if !media_type::is_image_manifest(&entry.media_type) && !entry.media_type.is_empty() {
                    // Attestations and other artifacts are not images.
                    continue;
                }
                if let Some(p) = entry.platform() {
                    if let Some(first) = seen.insert(p.to_string(), entry.digest.clone()) {
                        f.warning(
                            "index-duplicate-platform",
                            format!("index {} lists {p} twice ({first} and {})", root.digest, entry.digest),
                        );
                    }
                }
                let raw = match source.manifest(&entry.digest).await {
                    Ok(raw) => raw,
                    Err(e) => {
                        f.error(
                            "index-entry",
                            format!("index entry {} cannot be read: {e}", entry.digest),
                        );
                        continue;
                    }
                };
                if !matches!(raw.parse(), Ok(Manifest::Image(_))) {
                    f.error(
                        "index-entry",
                        format!("index entry {} is not an image manifest", entry.digest),
                    );
                    continue;
                }
                check_image(source, &raw, Some(entry), mode, &mut f).await?;
            }
        }
    }
    Ok(f)
}

/// The family (`oci` or `docker`) of a media type, if it has one.
fn family(mt: &str) -> Option<&'static str> {
    if media_type::is_oci(mt) {
        Some("oci")
    } else if media_type::is_docker(mt) {
        Some("docker")
    } else {
        None
    }
}

/// Runs every rule on one image manifest. `entry` is its index entry, if any.
async fn check_image(
    source: &dyn Source,
    raw: &RawManifest,
    entry: Option<&Descriptor>,
    mode: Mode,
    f: &mut Findings,
) -> Result<()> {
    let at = match entry.and_then(|e| e.platform()) {
        Some(p) => format!("manifest {} ({p})", raw.digest.short()),
        None => format!("manifest {}", raw.digest.short()),
    };
    let manifest = match raw.parse() {
        Ok(Manifest::Image(m)) => m,
        Ok(Manifest::Index(_)) => {
            f.error("index-entry", format!("{at} is an index inside an index"));
            return Ok(());
        }
        Err(e) => {
            f.error("schema-version", format!("{at} cannot be read: {e}"));
            return Ok(());
        }
    };
    if manifest.schema_version != 2 {
        f.error(
            "schema-version",
            format!("{at} has schemaVersion {}, expected 2", manifest.schema_version),
        );
    }

    // Media types: known, and of the manifest's family.
    let mt = &*raw.media_type;
    let fam = family(mt);
    if !media_type::is_image_manifest(mt) {
        f.error("media-type", format!("{at} has an unknown media type {mt:?}"));
    }
    let config_known = [media_type::OCI_CONFIG, media_type::DOCKER_CONFIG].contains(&&*manifest.config.media_type);
    if !config_known {
        f.error(
            "media-type",
            format!(
                "{at}: config media type {:?} is not an image config",
                manifest.config.media_type
            ),
        );
    } else if family(&manifest.config.media_type) != fam {
        f.error(
            "media-type",
            format!(
                "{at}: config media type {} does not belong in a {mt} manifest",
                manifest.config.media_type
            ),
        );
    }
    for (i, l) in manifest.layers.iter().enumerate() {
        match crate::image::Compression::from_media_type(&l.media_type) {
            None => f.error(
                "media-type",
                format!("{at}: layer {i} has an unknown media type {:?}", l.media_type),
            ),
            Some(_) if family(&l.media_type) != fam => f.error(
                "media-type",
                format!(
                    "{at}: layer {i} media type {} does not belong in a {mt} manifest",
                    l.media_type
                ),
            ),
            Some(c) => {
                if c == crate::image::Compression::Zstd {
                    f.warning(
                        "zstd-compat",
                        format!("{at}: layer {i} is zstd, which needs Docker Engine 20.10+ or containerd 1.5+"),
                    );
                }
            }
        }
        if l.size > LARGE_LAYER {
            f.warning(
                "large-layer",
                format!(
                    "{at}: layer {i} ({}) is {} bytes compressed, over 1 GiB",
                    l.digest, l.size
                ),
            );
        }
    }
    match fam {
        Some("oci") => f.info(
            "oci-media-type",
            format!("{at} uses OCI media types: Docker Engine before 20.10 cannot pull it"),
        ),
        Some(_) => f.info(
            "docker-media-type",
            format!("{at} uses Docker v2 media types: OCI-only tools may refuse it"),
        ),
        None => {}
    }

    // The config blob, read while the fast check asks for every layer's
    // size (the requests overlap: one round trip or two, not one a layer).
    let sizes = async {
        match mode {
            Mode::Fast => {
                let mut sizes = Vec::with_capacity(manifest.layers.len());
                for chunk in manifest.layers.chunks(FAST_CHECK_CONCURRENCY) {
                    sizes.extend(futures_util::future::join_all(chunk.iter().map(|l| source.blob_size(l))).await);
                }
                sizes
            }
            Mode::Full => Vec::new(),
        }
    };
    let (config, mut sizes) = tokio::join!(read_small_blob(source, &manifest.config), sizes);
    let config = match config {
        Ok(bytes) => match ConfigBlob::parse(bytes, &format!("config of {at}")) {
            Ok(c) => Some(c),
            Err(e) => {
                f.error("config-digest", format!("{at}: the config cannot be read: {e}"));
                None
            }
        },
        Err(e) => {
            record_blob_error(f, &at, "config", &manifest.config, e, "config-digest", "config-size");
            None
        }
    };
    if let Some(config) = &config {
        check_config(&config.parsed, &manifest.layers, entry, &at, f);
    }

    // The layers.
    let diff_ids: Vec<Option<Digest>> = (0..manifest.layers.len())
        .map(|i| config.as_ref().and_then(|c| c.parsed.rootfs.diff_ids.get(i).cloned()))
        .collect();
    let mut scans = Vec::new();
    for (i, l) in manifest.layers.iter().enumerate() {
        match mode {
            Mode::Fast => match std::mem::replace(&mut sizes[i], Ok(None)) {
                Ok(Some(size)) if size != l.size => f.error(
                    "layer-digest",
                    format!(
                        "{at}: layer {i} ({}) is {size} bytes, the manifest says {}",
                        l.digest, l.size
                    ),
                ),
                Ok(Some(_)) => {}
                Ok(None) => f.error("blob-exists", format!("{at}: layer {i} ({}) is missing", l.digest)),
                Err(e) => f.error(
                    "blob-exists",
                    format!("{at}: layer {i} ({}) cannot be read: {e}", l.digest),
                ),
            },
            Mode::Full => {
                let scan =
                    layer_scan::scan_layer(source, l, diff_ids[i].as_ref(), &format!("{at}: layer {i}"), f).await?;
                scans.push(scan);
            }
        }
    }
    if mode == Mode::Full {
        layer_scan::duplicates_across_layers(&scans, &at, f);
    }
    Ok(())
}

/// Maps a failure to read a blob onto the rule it breaks.
fn record_blob_error(
    f: &mut Findings,
    at: &str,
    what: &str,
    desc: &Descriptor,
    e: Error,
    digest_rule: &'static str,
    size_rule: &'static str,
) {
    match e {
        Error::DigestMismatch { .. } => f.error(digest_rule, format!("{at}: {what} {}: {e}", desc.digest)),
        Error::SizeMismatch { .. } => f.error(size_rule, format!("{at}: {what} {}: {e}", desc.digest)),
        Error::NotFound(_) => f.error("blob-exists", format!("{at}: {what} {} is missing: {e}", desc.digest)),
        other => f.error(
            digest_rule,
            format!("{at}: {what} {} cannot be read: {other}", desc.digest),
        ),
    }
}

/// Rules on the config alone (and its index entry).
fn check_config(config: &ImageConfig, layers: &[Descriptor], entry: Option<&Descriptor>, at: &str, f: &mut Findings) {
    if config.rootfs.fs_type != "layers" {
        f.error(
            "rootfs-type",
            format!(
                "{at}: config rootfs.type is {:?}, expected \"layers\"",
                config.rootfs.fs_type
            ),
        );
    }
    if config.rootfs.diff_ids.len() != layers.len() {
        f.error(
            "layer-count",
            format!(
                "{at}: the manifest has {} layers but the config lists {} diff_ids",
                layers.len(),
                config.rootfs.diff_ids.len()
            ),
        );
    }
    if !config.history.is_empty() {
        let non_empty: Vec<(usize, &crate::image::config::History)> = config
            .history
            .iter()
            .enumerate()
            .filter(|(_, h)| !h.empty_layer)
            .collect();
        if non_empty.len() != layers.len() {
            f.error(
                "history-count",
                format!(
                    "{at}: {} history entries make layers but the manifest has {} layers",
                    non_empty.len(),
                    layers.len()
                ),
            );
        }
        // Layers are built in order, so their history times never go back.
        let mut last: Option<(&str, usize)> = None;
        for (idx, h) in config.history.iter().enumerate() {
            if h.created.is_empty() {
                continue;
            }
            if let Some((prev, prev_idx)) = last {
                if h.created.as_str() < prev {
                    f.error(
                        "history-order",
                        format!(
                            "{at}: history entry {idx} ({}) is older than entry {prev_idx} ({prev}): entries are not in layer order",
                            h.created
                        ),
                    );
                    break;
                }
            }
            last = Some((h.created.as_str(), idx));
        }
    }
    if config.config.args_escaped {
        f.warning(
            "args-escaped",
            format!("{at}: config sets ArgsEscaped, a Docker-only (Windows) setting deprecated in OCI"),
        );
    }
    if let Some(p) = entry.and_then(|e| e.platform()) {
        let declared = config.platform();
        let variant_differs = p.variant.is_some() && declared.variant.is_some() && p.variant != declared.variant;
        if p.os != declared.os || p.architecture != declared.architecture || variant_differs {
            f.error(
                "index-platform",
                format!("{at}: the index says {p} but the config says {declared}"),
            );
        }
    }
}
/// What a copy wrote, as a post-run check compares it: one image's config
/// digest (a daemon's image ID) and layer diff_ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenImage {
    pub config: Digest,
    pub diff_ids: Vec<Digest>,
}

impl WrittenImage {
    pub fn of(image: &crate::image::ImageData) -> Self {
        WrittenImage {
            config: image.config.digest.clone(),
            diff_ids: image.config.parsed.rootfs.diff_ids.clone(),
        }
    }
}

/// What a check of a destination did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    /// It looked, and found no error.
    Checked,
    /// It could not look, for the reason given; nothing is claimed.
    Skipped(String),
}

/// Checks what was written to `dst` (fast or full), every kind of destination:
/// - registries, OCI layouts, tarballs, dirs: `occy check` of the image read back;
/// - an expanded `dir://` also compares each expanded tree with its layers
///   ([`tree`]);
/// - a `bundle://` compares its rootfs with the view of its layers kept
///   beside it;
/// - `docker://` asks the daemon for the image ID and layers of the tag and
///   compares them with `written`; the full check also exports the image and
///   checks it like any other.
///
/// Findings with severity error make an error naming the destination and
/// every path or blob concerned.
pub async fn verify_written(
    dst: &Reference,
    name: &ImageName,
    mode: Mode,
    opts: &SourceOptions,
    written: &[WrittenImage],
) -> Result<Verified> {
    let mut findings = Findings::default();
    let verified = match (crate::sink::kind::of(dst).read_back, dst) {
        (ReadBack::Sealed, _) => Verified::Skipped(
            "a transfer archive is checked when it is sealed: every blob against its digest, then a checksum per volume".into(),
        ),
        (ReadBack::Tree, _) => {
            let path = crate::sink::kind::path_of(dst)
                .ok_or_else(|| Error::invalid(format!("{dst}: a tree to read back has no path")))?;
            check_bundle(path, mode, &mut findings).await?
        }
        (
            ReadBack::Daemon,
            Reference::Docker {
                name: image,
                tag,
                socket,
                ..
            },
        ) => {
            let tag = tag.as_deref().unwrap_or("latest");
            check_daemon(image, tag, socket.as_deref(), mode, written, &mut findings).await?;
            Verified::Checked
        }
        (_, Reference::Dir { path, expand, .. }) => {
            let source =
                crate::source::docker_save::DockerSaveSource::open_dir(path, Some((&name.repository, Some(&name.tag))))
                    .await?;
            findings = check_source(&source, mode).await?;
            if *expand {
                check_expanded(path, &source, mode, &mut findings).await?;
            }
            Verified::Checked
        }
        // Read back as any OCI layout (`?format=` says how to write it).
        (_, Reference::Oci { path, tag, .. }) => {
            let layout = Reference::Oci {
                path: path.clone(),
                tag: tag.clone(),
                oci_format: false,
            };
            let source = open_source(&layout, opts).await?;
            findings = check_source(source.as_ref(), mode).await?;
            Verified::Checked
        }
        (_, other) => {
            let source = open_source(other, opts).await?;
            findings = check_source(source.as_ref(), mode).await?;
            Verified::Checked
        }
    };
    let errors: Vec<_> = findings
        .results
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .collect();
    if errors.is_empty() {
        match &verified {
            Verified::Checked => tracing::debug!("{dst}: {} check found no error", mode.as_str()),
            Verified::Skipped(why) => tracing::debug!("{dst}: {} check skipped: {why}", mode.as_str()),
        }
        return Ok(verified);
    }
    let lines: Vec<String> = errors
        .iter()
        .map(|f| format!("  [{}] {}", f.check, f.message))
        .collect();
    Err(Error::invalid(format!(
        "verification of {dst} ({} check) found {} error(s):\n{}",
        mode.as_str(),
        errors.len(),
        lines.join("\n")
    )))
}

/// Rule `tree`: the bundle's rootfs against the view of its layers kept in
/// [`tree::VIEW_FILE`]. Skipped (saying why) for a bundle without one,
/// written by another tool or an older occy.
pub async fn check_bundle(path: &std::path::Path, mode: Mode, f: &mut Findings) -> Result<Verified> {
    let path = path.to_path_buf();
    let found: Result<Option<Vec<String>>> = tokio::task::spawn_blocking(move || {
        let Some(view) = tree::MergedView::load(&path.join(tree::VIEW_FILE))? else {
            return Ok(None);
        };
        view.compare(&path.join("rootfs"), mode == Mode::Full).map(Some)
    })
    .await
    .map_err(|e| Error::invalid(format!("bundle check task failed: {e}")))?;
    match found? {
        None => Ok(Verified::Skipped(format!(
            "the bundle has no {}, so its rootfs cannot be compared with its layers",
            tree::VIEW_FILE
        ))),
        Some(diffs) => {
            for d in diffs {
                f.error("tree", format!("rootfs{d}"));
            }
            Ok(Verified::Checked)
        }
    }
}

/// Rule `tree` for an expanded `dir://`: the tree beside the manifest file
/// against the view of the layers the directory holds.
pub async fn check_expanded(
    root: &std::path::Path,
    source: &crate::source::docker_save::DockerSaveSource,
    mode: Mode,
    f: &mut Findings,
) -> Result<()> {
    let tree_name = source.manifest_name.trim_end_matches(".json").to_string();
    let layers: Vec<(String, std::path::PathBuf)> =
        source.entry.layers.iter().map(|l| (l.clone(), root.join(l))).collect();
    let tree_dir = root.join(&tree_name);
    let diffs = tokio::task::spawn_blocking(move || -> Result<Vec<String>> {
        let mut view = tree::MergedView::new();
        for (name, path) in &layers {
            view.apply_layer(name, crate::sink::bundle::open_uncompressed(path)?)?;
        }
        view.compare(&tree_dir, mode == Mode::Full)
    })
    .await
    .map_err(|e| Error::invalid(format!("tree check task failed: {e}")))??;
    for d in diffs {
        f.error("tree", format!("{tree_name}{d}"));
    }
    Ok(())
}

/// Rules `daemon-image` and `daemon-layers`: the image ID and layers the
/// daemon reports for `image:tag` against what was written; in full mode
/// the image is also exported and checked like any other.
async fn check_daemon(
    image: &str,
    tag: &str,
    socket: Option<&std::path::Path>,
    mode: Mode,
    written: &[WrittenImage],
    f: &mut Findings,
) -> Result<()> {
    use crate::source::docker_daemon::{DaemonConnection, DockerDaemonSource};
    let conn = DaemonConnection::open(socket).await?;
    let at = format!("docker://{image}:{tag}");
    let Some((id, layers)) = conn.image_layers(image, tag).await? else {
        f.error("daemon-image", format!("{at}: the daemon holds no such image"));
        return Ok(());
    };
    match written {
        [want] => {
            if id != want.config {
                f.error(
                    "daemon-image",
                    format!(
                        "{at}: the daemon holds image ID {id}, occy wrote {} (the tag names another image)",
                        want.config
                    ),
                );
            } else if layers != want.diff_ids {
                let i = layers
                    .iter()
                    .zip(&want.diff_ids)
                    .position(|(a, b)| a != b)
                    .unwrap_or(layers.len().min(want.diff_ids.len()));
                f.error(
                    "daemon-layers",
                    format!(
                        "{at}: the daemon reports {} layers, occy wrote {}; they differ from layer {i}",
                        layers.len(),
                        want.diff_ids.len()
                    ),
                );
            }
        }
        _ => {
            return Err(Error::invalid(format!(
                "{at}: a daemon holds one image, but {} were written",
                written.len()
            )))
        }
    }
    if mode == Mode::Full {
        let source = DockerDaemonSource::open(&format!("{image}:{tag}"), socket).await?;
        let exported = check_source(&source, Mode::Full).await?;
        f.results.extend(exported.results);
    }
    Ok(())
}
