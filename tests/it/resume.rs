//! Cut transfers resume where they stopped: a 64 MiB layer upload cut past
//! half way goes on from what the registry acknowledged (chunked PATCHes,
//! the session's `Range`), and a download cut half way goes on with a
//! `Range` request; both counted by the fault proxy, the result read back
//! from the real registry.

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::support::fault_proxy::{Class, Fault, FaultProxy};
use crate::support::*;

const MIB: u64 = 1 << 20;

/// An OCI layout (`big`) whose second layer is an uncompressed 64 MiB blob
/// of random bytes, written once; returns the layout and that layer's
/// digest and size.
fn big_layout() -> &'static (PathBuf, String, u64) {
    static LAYOUT: OnceLock<(PathBuf, String, u64)> = OnceLock::new();
    LAYOUT.get_or_init(|| {
        use occy_testkit::generate::{big_image, write_layout, Content, LayerCompression};
        let dir = scratch().join("big-64mib");
        let generated = write_layout(&dir, &big_image(64 * MIB, LayerCompression::None, Content::Random)).unwrap();
        let layer = generated[0].images[0]
            .layers
            .iter()
            .max_by_key(|l| l.size)
            .unwrap()
            .clone();
        assert!(layer.size >= 64 * MIB, "{layer:?}");
        (dir, layer.digest.to_string(), layer.size)
    })
}

#[test]
fn an_upload_cut_past_half_way_resumes_from_what_the_registry_received() {
    let (layout, layer, size) = big_layout().clone();
    // A registry of its own, which has never seen the layer.
    let reg = Registry::start(Mode::Plain);
    // Cut the big layer's upload at 36 MiB (56 %), wherever its requests
    // split it: the proxy counts the body bytes of every upload request
    // larger than 1 MiB (the small layer and the config go as they are).
    let cut_at = 36 * MIB;
    let mut passed = 0u64;
    let proxy = FaultProxy::with_plan(
        &reg.host,
        Box::new(move |r| {
            let len = r.content_length.filter(|n| *n > MIB && r.class == Class::BlobUpload)?;
            if passed >= cut_at {
                return None;
            }
            if passed + len > cut_at {
                let n = cut_at - passed;
                passed = cut_at;
                return Some(Fault::CutBodyAfter(n));
            }
            passed += len;
            None
        }),
    );
    let dest = format!("registry://{}/resume/upload:1.0", proxy.host);
    let src = format!("oci://{}:big", layout.display());
    let args = [
        "--no-cache",
        "--insecure-registry",
        proxy.host.as_str(),
        "process",
        &src,
        &dest,
    ];
    let out = occy(&args);
    assert_ok(&args, out);

    let events = proxy.events();
    let big: Vec<_> = events
        .iter()
        .filter(|e| e.request.class == Class::BlobUpload && e.request.content_length.is_some_and(|n| n > MIB))
        .collect();
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e.fault, Some(Fault::CutBodyAfter(_))))
            .count(),
        1,
        "the upload was cut once"
    );
    let sent: u64 = big.iter().map(|e| e.body_in).sum();
    let again = sent - size;
    let chunk = occy::registry::client::UPLOAD_CHUNK as u64;
    eprintln!(
        "upload of a {size}-byte layer cut at {cut_at}: {sent} bytes sent in {} requests, {again} sent again \
         (bound: 10 % of the blob + one {chunk}-byte chunk)",
        big.len()
    );
    assert!(again <= size / 10 + chunk, "{again} bytes sent again");
    // The session went on: no second upload session for the big layer,
    // and its status was asked once.
    let status_gets = events
        .iter()
        .filter(|e| e.request.class == Class::BlobUpload && e.request.method == "GET")
        .count();
    assert_eq!(
        status_gets,
        1,
        "{:#?}",
        events.iter().map(|e| &e.request).collect::<Vec<_>>()
    );
    // The registry holds the layer, byte for byte.
    let stored = std::fs::read(reg.blob_path(&layer)).unwrap();
    assert_eq!(stored.len() as u64, size);
    assert_eq!(
        format!("sha256:{}", sha256_hex(&stored)),
        layer,
        "the registry's copy of the layer"
    );
    let info = reg.inspect("resume/upload:1.0", false);
    assert!(strings(&info["Layers"]).contains(&layer), "{info}");
}

#[test]
fn a_download_cut_half_way_resumes_with_a_range_request() {
    let (layout, layer, size) = big_layout().clone();
    let reg = Registry::shared(Mode::Plain);
    reg.push_layout(&layout, "big", "resume/download:1.0");
    let wanted = layer.clone();
    let mut cut = false;
    let proxy = FaultProxy::with_plan(
        &reg.host,
        Box::new(move |r| {
            if cut || r.class != Class::BlobGet || !r.path.ends_with(&wanted) {
                return None;
            }
            cut = true;
            Some(Fault::Reset)
        }),
    );
    let out_dir = scratch_dir("resume-download");
    let src = format!("registry://{}/resume/download:1.0", proxy.host);
    let dest = format!("oci://{}:1.0", out_dir.join("layout").display());
    let args = ["--insecure-registry", proxy.host.as_str(), "process", &src, &dest];
    assert_ok(&args, occy(&args));

    let gets: Vec<_> = proxy
        .events()
        .into_iter()
        .filter(|e| e.request.class == Class::BlobGet && e.request.path.ends_with(&layer))
        .collect();
    let received: u64 = gets.iter().map(|e| e.body_out).sum();
    eprintln!(
        "download of a {size}-byte layer reset half way: {received} bytes in {} requests ({:?})",
        gets.len(),
        gets.iter()
            .map(|e| (e.request.range.clone(), e.upstream_status))
            .collect::<Vec<_>>()
    );
    assert!(gets.len() >= 2, "resumed: {gets:#?}");
    assert_eq!(gets[0].fault, Some(Fault::Reset));
    let resumed = &gets[1];
    assert_eq!(resumed.upstream_status, Some(206), "{resumed:#?}");
    assert!(
        resumed.request.range.as_deref().is_some_and(|r| r != "bytes=0-"),
        "{resumed:#?}"
    );
    assert!(received <= size + size / 10, "{received} bytes received for {size}");
    // What was written is the layer, verified (skopeo reads the layout).
    let info = skopeo_inspect_local(&format!("oci:{}:1.0", out_dir.join("layout").display()), false);
    assert!(strings(&info["Layers"]).contains(&layer), "{info}");
    let stored = std::fs::read(
        out_dir
            .join("layout/blobs/sha256")
            .join(layer.trim_start_matches("sha256:")),
    )
    .unwrap();
    assert_eq!(format!("sha256:{}", sha256_hex(&stored)), layer);
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
fn an_upload_cut_after_part_of_a_chunk_reached_distribution_starts_that_blob_again() {
    // Distribution refuses a session whose last PATCH reached it in part
    // ("upload resumed at wrong offset"): occy learns it from the status
    // (404 BLOB_UPLOAD_INVALID) and sends the blob again from its source,
    // ending with the right blob, not a corrupt one.
    let (layout, layer, size) = big_layout().clone();
    let reg = Registry::start(Mode::Plain);
    let cut_at = 36 * MIB;
    let mut passed = 0u64;
    let proxy = FaultProxy::with_plan(
        &reg.host,
        Box::new(move |r| {
            let len = r.content_length.filter(|n| *n > MIB && r.class == Class::BlobUpload)?;
            if passed >= cut_at {
                return None;
            }
            if passed + len > cut_at {
                let n = cut_at - passed;
                passed = cut_at;
                return Some(Fault::CutBodyAfterPassingOn(n));
            }
            passed += len;
            None
        }),
    );
    let dest = format!("registry://{}/resume/partial:1.0", proxy.host);
    let src = format!("oci://{}:big", layout.display());
    let args = [
        "--no-cache",
        "--insecure-registry",
        proxy.host.as_str(),
        "process",
        &src,
        &dest,
    ];
    let out = assert_ok(&args, occy(&args));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let events = proxy.events();
    let status: Vec<_> = events
        .iter()
        .filter(|e| e.request.class == Class::BlobUpload && e.request.method == "GET")
        .map(|e| e.status)
        .collect();
    assert_eq!(status, [Some(404)], "the session was gone: {stderr}");
    let sent: u64 = events
        .iter()
        .filter(|e| e.request.class == Class::BlobUpload && e.request.content_length.is_some_and(|n| n > MIB))
        .map(|e| e.body_in)
        .sum();
    eprintln!("upload cut with part of a chunk at the registry: {sent} bytes sent for a {size}-byte layer");
    assert!(sent > size + cut_at / 2, "the blob was sent again: {sent}");
    let stored = std::fs::read(reg.blob_path(&layer)).unwrap();
    assert_eq!(format!("sha256:{}", sha256_hex(&stored)), layer);
}
