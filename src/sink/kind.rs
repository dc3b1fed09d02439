//! What each kind of destination is, said once: whether it keeps a
//! multi-platform index, the form its layers are stored in, how occy learns
//! what it holds now, where occy's record of a write lives, how the check
//! reads it back, whether it can hold referrers, and whether one path holds
//! one image. Each sink file declares its [`DestinationKind`]; [`of`] is
//! the one place that maps a reference to it. The planner, the check, the
//! sync-file validation and the state records read these answers instead of
//! matching on [`Reference`] variants.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::store::{Store, StoreOptions};
use crate::image::convert::MediaTypes;
use crate::reference::Reference;

/// The form in which a store keeps layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StoredForm {
    /// Compressed blobs keyed by digest (registries, OCI layouts, bundles'
    /// work area).
    Compressed,
    /// Plain tarballs keyed by diff_id (docker-save archives, `dir://`,
    /// the Docker daemon).
    PlainTar,
}

/// How the planner learns which image a destination holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CurrentDigest {
    /// The store says what its tag names (a registry's manifest HEAD, an
    /// OCI layout's `index.json`).
    Tagged,
    /// The daemon's image ID for the tag (a config digest).
    DaemonImageId,
    /// occy's record of its last write (see [`RecordPlace`]).
    Record,
}

/// Where occy keeps the record of what it wrote to a file destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordPlace {
    /// `.NAME.occy-state.json` beside the output (one image per path).
    Beside,
    /// `DIR/.occy-state/KEY.json`, one per image (a directory of many).
    PerImageInside,
}

/// What shows that the output a record speaks for is still there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputMarker {
    /// The path is a file.
    File,
    /// The path is a directory.
    Dir,
    /// The path holds this file.
    FileInside(&'static str),
}

/// How the planner sees whether a store holds a blob already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobLookup {
    /// A `HEAD` of the blob in the repository.
    Head,
    /// The file `blobs/ALG/HEX` of an OCI layout.
    LayoutFile,
    /// A directory of transfer archives: its staging layout's files, and
    /// the blobs its earlier archives carried (`crate::archive`).
    Archive,
    /// It cannot be asked before the write (file outputs are rewritten whole).
    None,
}

/// How the check after a write reads the destination back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadBack {
    /// Opened as a source and checked like any image (digests, diff_ids).
    AsImage,
    /// An extracted tree compared with the listing written beside it.
    Tree,
    /// The daemon's image ID and layers compared with what was loaded.
    Daemon,
    /// Not read back per image: a transfer archive's blobs are verified
    /// against their digests when it is sealed into checksummed volumes.
    Sealed,
}

/// Opens a kind's [`Store`] for a reference of that kind.
pub type OpenStore = fn(&Reference, &StoreOptions) -> crate::error::Result<Box<dyn Store>>;

/// The answers for one kind of destination.
#[derive(Clone, Copy)]
pub struct DestinationKind {
    /// The scheme, as in `registry://`.
    pub scheme: &'static str,
    /// It keeps a multi-platform index (else one platform is written).
    pub keeps_index: bool,
    /// The form its layers are stored in.
    pub stored_form: StoredForm,
    /// How the planner learns what it holds now.
    pub current: CurrentDigest,
    /// How the planner sees whether it holds a blob.
    pub blob_lookup: BlobLookup,
    /// Where occy's record of a write lives (with [`CurrentDigest::Record`]).
    pub record: Option<RecordPlace>,
    /// What shows the output is still there (with a record).
    pub output: Option<OutputMarker>,
    /// How the check reads it back.
    pub read_back: ReadBack,
    /// It can hold referrers (signatures, SBOMs) beside their subject.
    pub holds_referrers: bool,
    /// One path holds one image: what it is called (`one tarball`), for
    /// the error when many images would overwrite it.
    pub one_image: Option<&'static str>,
    /// Opens the kind's [`Store`] (its file implements it): what the
    /// planner asks.
    pub open_store: OpenStore,
}

impl std::fmt::Debug for DestinationKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DestinationKind")
            .field("scheme", &self.scheme)
            .finish_non_exhaustive()
    }
}

/// The kind of `dest`: the one registration line per destination kind.
/// (`quay://` is never a destination; it names registry repositories.)
pub fn of(dest: &Reference) -> &'static DestinationKind {
    match dest {
        Reference::Registry(_) | Reference::Quay { .. } => &super::registry::KIND,
        Reference::Oci { .. } => &super::oci_layout::KIND,
        Reference::Tar { .. } => &super::docker_save::TAR_KIND,
        Reference::Dir { .. } => &super::docker_save::DIR_KIND,
        Reference::Bundle { .. } => &super::bundle::KIND,
        Reference::Docker { .. } => &super::docker_daemon::KIND,
        Reference::Archive { .. } => &super::archive::KIND,
    }
}

/// Which manifests `dest` converts to OCI media types: an OCI layout the
/// ones occy made up (all of them with `?format=oci`), every other kind none.
pub fn media_types(dest: &Reference) -> MediaTypes {
    match dest {
        Reference::Oci { oci_format: true, .. } => MediaTypes::Oci,
        Reference::Oci { .. } | Reference::Archive { .. } => MediaTypes::OciWhenSynthesised,
        _ => MediaTypes::Keep,
    }
}

/// The path of a file destination (tarball, layout, directory, bundle).
pub fn path_of(dest: &Reference) -> Option<&Path> {
    match dest {
        Reference::Tar { path }
        | Reference::Oci { path, .. }
        | Reference::Dir { path, .. }
        | Reference::Bundle { path }
        | Reference::Archive { path, .. } => Some(path),
        Reference::Registry(_) | Reference::Docker { .. } | Reference::Quay { .. } => None,
    }
}

impl OutputMarker {
    /// Whether the output at `path` is there.
    pub fn present(self, path: &Path) -> bool {
        match self {
            OutputMarker::File => path.is_file(),
            OutputMarker::Dir => path.is_dir(),
            OutputMarker::FileInside(name) => path.join(name).is_file(),
        }
    }
}

impl RecordPlace {
    /// The record's path for the output at `path`; `image_key` names the
    /// image within a directory of many.
    pub fn path(self, path: &Path, image_key: &str) -> Option<PathBuf> {
        match self {
            RecordPlace::Beside => {
                let file = path.file_name()?.to_string_lossy().to_string();
                Some(path.with_file_name(format!(".{file}.occy-state.json")))
            }
            RecordPlace::PerImageInside => Some(path.join(".occy-state").join(format!("{image_key}.json"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(s: &str) -> &'static DestinationKind {
        of(&Reference::parse(s).unwrap())
    }

    #[test]
    fn each_destination_kind_answers_once() {
        for (uri, index, form, current) in [
            (
                "registry://h:5000/a/b:1",
                true,
                StoredForm::Compressed,
                CurrentDigest::Tagged,
            ),
            ("oci:///x/layout:1", true, StoredForm::Compressed, CurrentDigest::Tagged),
            ("tar:///x/a.tar", false, StoredForm::PlainTar, CurrentDigest::Record),
            ("dir:///x/d", false, StoredForm::PlainTar, CurrentDigest::Record),
            ("bundle:///x/b", false, StoredForm::Compressed, CurrentDigest::Record),
            (
                "docker://app:1",
                false,
                StoredForm::PlainTar,
                CurrentDigest::DaemonImageId,
            ),
        ] {
            let k = kind(uri);
            assert_eq!(uri.split("://").next(), Some(k.scheme), "{uri}");
            assert_eq!(
                (k.keeps_index, k.stored_form, k.current),
                (index, form, current),
                "{uri}"
            );
            assert_eq!(k.record.is_some(), current == CurrentDigest::Record, "{uri}");
            assert_eq!(k.output.is_some(), k.record.is_some(), "{uri}");
            assert_eq!(
                k.blob_lookup != BlobLookup::None,
                current == CurrentDigest::Tagged,
                "{uri}"
            );
        }
        assert!(kind("registry://h/a:1").holds_referrers && kind("oci:///l").holds_referrers);
        assert!(!kind("tar:///a.tar").holds_referrers && !kind("docker://a").holds_referrers);
        assert_eq!(kind("tar:///a.tar").one_image, Some("one tarball"));
        assert_eq!(kind("dir:///d").one_image, None);
        let a = kind("archive:///media/transfer?volume_size=700MiB");
        assert_eq!(a.scheme, "archive");
        assert!(a.keeps_index && a.holds_referrers && a.current == CurrentDigest::Tagged);
        assert_eq!(
            crate::archive::staging_layout(Path::new("/m")),
            PathBuf::from("/m/.occy-partial/layout")
        );
    }

    #[test]
    fn records_live_beside_one_image_or_inside_a_directory_of_many() {
        assert_eq!(
            RecordPlace::Beside.path(Path::new("/o/app.tar"), "k"),
            Some(PathBuf::from("/o/.app.tar.occy-state.json"))
        );
        assert_eq!(
            RecordPlace::PerImageInside.path(Path::new("/o/d"), "k"),
            Some(PathBuf::from("/o/d/.occy-state/k.json"))
        );
    }
}
