//! Entry points for fuzzing: each takes arbitrary bytes and runs one parser
//! or stream of occy over them. A finding is a panic, a hang or unbounded
//! memory; an `Err` is the expected answer to bad input. The `cargo fuzz`
//! targets in `fuzz/` call these, and `tests/it/fuzz_regressions.rs` replays
//! every saved input in `fuzz/regressions/` through them on each test run.

use std::path::Path;

use bytes::Bytes;

use occy::filter::FilterChain;
use occy::image::{Compression, ConfigBlob, Manifest, RawManifest};
use occy::reference::Reference;

/// A fuzz target: takes any bytes, may return, must not panic or hang.
pub type Target = fn(&[u8]);

/// The targets, by name (the file names under `fuzz/fuzz_targets/`).
pub const TARGETS: [(&str, Target); 6] = [
    ("sync_file", sync_file),
    ("reference", reference),
    ("manifest", manifest),
    ("config", config),
    ("tar_rewrite", tar_rewrite),
    ("extract", extract),
];

/// A sync file, read as YAML and as TOML.
pub fn sync_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = occy::spec::parse(Path::new("fuzz.yaml"), text.to_string());
    let _ = occy::spec::parse(Path::new("fuzz.toml"), text.to_string());
}

/// A reference; one that parses prints as text that parses to itself (a
/// quay.io token excepted: it is a secret, never printed).
pub fn reference(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(mut r) = Reference::parse(text) {
        if let Reference::Quay { token, .. } = &mut r {
            *token = None;
        }
        let again = Reference::parse(&r.to_string());
        assert!(
            again.as_ref().is_ok_and(|a| *a == r),
            "{text:?} parsed to {r:?}, printed as {:?}, which parses to {again:?}",
            r.to_string()
        );
    }
}

/// A manifest or index, with or without a declared media type.
pub fn manifest(data: &[u8]) {
    let bytes = Bytes::copy_from_slice(data);
    for declared in [None, Some("application/vnd.oci.image.manifest.v1+json")] {
        if let Ok(raw) = RawManifest::new(bytes.clone(), declared) {
            if let Ok(Manifest::Image(m)) = raw.parse() {
                let _ = m.to_bytes();
            }
        }
    }
}

/// An image config.
pub fn config(data: &[u8]) {
    let _ = ConfigBlob::parse(Bytes::copy_from_slice(data), "fuzz");
}

/// A layer tar through the rewriting filters (normalize, exclude, search).
pub fn tar_rewrite(data: &[u8]) {
    let texts = [
        "normalize-timestamps".to_string(),
        "exclude:pattern=**/b*".to_string(),
        "search:pattern=**/*".to_string(),
    ];
    let Ok(chain) = FilterChain::parse(&texts, None) else {
        return;
    };
    let _ = occy::filter::layer::rewrite_layer(data, &chain, Compression::None, None, std::io::sink(), "fuzz");
}

/// A layer tar extracted into an empty directory; nothing may appear
/// outside it.
pub fn extract(data: &[u8]) {
    let Ok(outer) = tempfile::tempdir() else { return };
    let root = outer.path().join("root");
    if std::fs::create_dir(&root).is_err() {
        return;
    }
    let mut ex = occy::sink::extract::Extractor::new(&root);
    if ex.apply_layer("fuzz", data).is_ok() {
        let _ = ex.finish();
    }
    let beside: Vec<_> = std::fs::read_dir(outer.path())
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert_eq!(
        beside,
        vec![std::ffi::OsString::from("root")],
        "extraction wrote outside its root"
    );
}
