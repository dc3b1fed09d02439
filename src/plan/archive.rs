//! What the planner asks of transfer archives (`archive://`, see
//! `crate::archive`), kept in one place: what a directory of archives
//! holds now for a name, what the next archive of each destination
//! directory will carry (images, bytes, volumes, and what earlier archives
//! carried and it leaves out), and, for an import, whether the blobs an
//! incremental archive left out are at the destination already (else the
//! target fails before anything is written, naming the archive to import
//! first).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::Serialize;

use super::{Action, PlanContext, PlannedTarget};
use crate::error::{Error, Result};
use crate::image::{human_size, Digest, ImageName};
use crate::reference::Reference;
use crate::sink::{open_sink, SinkOptions};

/// What the digest `name` has in the directory of archives `dir` now.
pub async fn current(dir: &Path, name: &ImageName, full: bool) -> Result<Option<Digest>> {
    let (dir, name) = (dir.to_path_buf(), name.clone());
    tokio::task::spawn_blocking(move || crate::archive::current_digest(&dir, &name, full))
        .await
        .map_err(|e| Error::invalid(format!("archive history task failed: {e}")))?
}

/// How plans and reports show an image read from an archive (the OCI
/// layout its volumes were unpacked into is temporary):
/// `archive:///media/transfer (0002: registry.example.com/team/app:1.5.0)`.
pub fn shown_source(source: &Reference) -> Option<String> {
    let Reference::Oci {
        path, tag: Some(tag), ..
    } = source
    else {
        return None;
    };
    let imported = crate::archive::import::imported(path)?;
    let image = imported.images.iter().find(|i| &i.image.layout_ref == tag)?;
    Some(format!(
        "archive://{} ({}: {}:{})",
        imported.path.display(),
        image.archive,
        image.image.repository(),
        image.image.tag
    ))
}

/// Blobs an archive leaves out because an earlier one carried them.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LeftOut {
    pub archive: String,
    pub blobs: usize,
    pub bytes: u64,
}

/// What one `archive://` destination gets from this run.
#[derive(Debug, Clone, Serialize)]
pub struct ArchiveNote {
    pub destination: String,
    /// The archive the run writes (`/media/transfer/0002`); None when it
    /// has nothing to carry.
    pub writes: Option<String>,
    /// Images written into it.
    pub images: usize,
    /// About how many bytes it will hold (blobs, manifests, tar headers).
    pub bytes: u64,
    pub volumes: u64,
    pub volume_size: Option<u64>,
    pub full: bool,
    /// Earlier archives that carried blobs it needs, and how many.
    pub left_out: Vec<LeftOut>,
}

impl ArchiveNote {
    /// The plan's lines for it.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        match &self.writes {
            None => out.push(format!(
                "{}: nothing new to carry; no archive written",
                self.destination
            )),
            Some(path) => {
                let size = match self.volume_size {
                    Some(s) => format!(" of at most {}", human_size(s)),
                    None => String::new(),
                };
                let what = if self.full { "whole archive" } else { "archive" };
                out.push(format!(
                    "{}: writes {what} {path}: {} image(s), ~{} in {} volume(s){size}",
                    self.destination,
                    self.images,
                    human_size(self.bytes),
                    self.volumes
                ));
            }
        }
        for l in &self.left_out {
            out.push(format!(
                "    {} blob(s) ({}) already carried by archive {}, left out",
                l.blobs,
                human_size(l.bytes),
                l.archive
            ));
        }
        out
    }
}

/// The archive a target writes, if its destination is an `archive://`.
fn archive_path(t: &PlannedTarget) -> Option<&std::path::Path> {
    match &t.target.destination {
        Reference::Archive { path, .. } => Some(path),
        _ => None,
    }
}

/// Whether some target writes an `archive://` destination.
pub fn writes_archive(planned: &[PlannedTarget]) -> bool {
    planned.iter().any(|t| archive_path(t).is_some())
}

/// The note of each `archive://` destination of the plan.
pub fn notes(planned: &[PlannedTarget]) -> Vec<ArchiveNote> {
    let mut groups: BTreeMap<String, Vec<&PlannedTarget>> = BTreeMap::new();
    // (A target that failed to expand names its source as its destination.)
    for t in planned.iter().filter(|t| !matches!(t.action, Action::Failed { .. })) {
        if let Some(path) = archive_path(t) {
            groups.entry(path.display().to_string()).or_default().push(t);
        }
    }
    let mut out = Vec::new();
    for targets in groups.values() {
        let Reference::Archive {
            path,
            volume_size,
            full,
        } = &targets[0].target.destination
        else {
            continue;
        };
        let history = crate::archive::history(path).ok();
        let writing: Vec<&&PlannedTarget> = targets
            .iter()
            .filter(|t| t.action.writes() || t.referrers.as_ref().is_some_and(|r| !r.copy.is_empty()))
            .collect();
        let staged_before = crate::archive::staging_started(path);
        let mut bytes = 0u64;
        let mut files = 2u64;
        let mut left: BTreeMap<String, (HashSet<Digest>, u64)> = BTreeMap::new();
        for t in &writing {
            bytes += t.blobs.bytes;
            files += t.blobs.upload as u64;
            let Some(resolved) = &t.resolved else { continue };
            if let Some(root) = resolved.root() {
                bytes += root.bytes.len() as u64;
                files += 1;
            }
            for img in &resolved.images {
                bytes += img.raw_manifest.bytes.len() as u64;
                files += 1;
                if *full {
                    continue;
                }
                let Some(h) = &history else { continue };
                for b in img.manifest.layers.iter().chain(std::iter::once(&img.manifest.config)) {
                    if crate::archive::staged_blob(path, &b.digest) {
                        continue;
                    }
                    if let Some(a) = h.carried_by(&b.digest) {
                        let e = left.entry(a.to_string()).or_default();
                        if e.0.insert(b.digest.clone()) {
                            e.1 += b.size;
                        }
                    }
                }
            }
        }
        // Tar headers and padding: at most a KiB a file, and the end blocks.
        bytes += files * 1024 + 1024;
        let carries = !writing.is_empty() || staged_before;
        let writes = match (&history, carries) {
            (Some(h), true) => Some(h.next_dir().display().to_string()),
            (None, true) => Some(path.join("(next)").display().to_string()),
            (_, false) => None,
        };
        out.push(ArchiveNote {
            destination: format!("archive://{}", path.display()),
            images: writing.iter().filter(|t| t.action.writes()).count(),
            volumes: if carries {
                volume_size.map(|s| bytes.div_ceil(s)).unwrap_or(1)
            } else {
                0
            },
            bytes: if carries { bytes } else { 0 },
            writes,
            volume_size: *volume_size,
            full: *full,
            left_out: left
                .into_iter()
                .map(|(archive, (blobs, bytes))| LeftOut {
                    archive,
                    blobs: blobs.len(),
                    bytes,
                })
                .collect(),
        });
    }
    out
}

/// Fails, before anything is written, each target importing an image from
/// an incremental archive whose left-out blobs its destination does not
/// hold, naming the archive that carried them.
pub async fn check_bases(ctx: &PlanContext, planned: &mut [PlannedTarget]) {
    for p in planned.iter_mut().filter(|p| p.action.writes()) {
        let Reference::Oci {
            path, tag: Some(tag), ..
        } = &p.target.source
        else {
            continue;
        };
        let Some(imported) = crate::archive::import::imported(path) else {
            continue;
        };
        let Some(image) = imported.images.iter().find(|i| &i.image.layout_ref == tag) else {
            continue;
        };
        let missing: Vec<(&Digest, &String)> = image
            .image
            .needs
            .iter()
            .filter_map(|d| imported.elsewhere.get(d).map(|w| (d, w)))
            .collect();
        if missing.is_empty() {
            continue;
        }
        let dest = &p.target.destination;
        let opts = SinkOptions {
            registry: ctx.source_options(dest).registry,
        };
        let sink = match open_sink(dest, &p.target.name, &opts).await {
            Ok(s) => s,
            Err(e) => {
                p.action = Action::Failed {
                    error: format!("cannot read the destination {dest}: {e}"),
                };
                continue;
            }
        };
        let mut absent: BTreeMap<&String, Vec<&Digest>> = BTreeMap::new();
        for (d, who) in missing {
            if !matches!(sink.has_blob(d).await, Ok(true)) {
                absent.entry(who).or_default().push(d);
            }
        }
        if absent.is_empty() {
            continue;
        }
        let each: Vec<String> = absent
            .iter()
            .map(|(who, ds)| format!("{} blob(s) carried by {who} (first {})", ds.len(), ds[0]))
            .collect();
        p.action = Action::Failed {
            error: format!(
                "archive {} of {} is incremental: {}:{} needs {}, which {dest} does not hold; import that archive first (nothing of this image was written)",
                image.archive,
                imported.path.display(),
                image.image.repository(),
                image.image.tag,
                each.join("; ")
            ),
        };
    }
}
