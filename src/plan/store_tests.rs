//! The planner against in-memory stores: the diff (is the destination
//! current?) and the work graph (which blob is present, mounted or sent)
//! asked only through the store interface, with no registry and no files.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;

use super::graph::{self, How, NodeKey, StoredForm, WorkGraph};
use super::{diff_target, Action, PlanContext, PlannedTarget, Target};
use crate::error::Result;
use crate::filter::FilterChain;
use crate::image::config::ConfigBlob;
use crate::image::convert::MediaTypes;
use crate::image::{Digest, ImageData, ImageName, Manifest, RawManifest, ResolvedImage};
use crate::reference::Reference;
use crate::sink::store::{Capabilities, Current, Store, StoreId};
use crate::source::PlatformSelection;
use crate::spec::command_line::OneShot;

/// A store held in memory: tags, blobs, manifests, and what it can do.
struct MemStore {
    id: StoreId,
    caps: Capabilities,
    tags: Mutex<HashMap<String, Digest>>,
    blobs: Mutex<HashSet<Digest>>,
    manifests: Mutex<HashMap<Digest, RawManifest>>,
    /// Presence questions asked (blobs).
    asked: AtomicUsize,
}

impl MemStore {
    fn new(host: &str, repo: &str, caps: Capabilities) -> Arc<MemStore> {
        Arc::new(MemStore {
            id: StoreId::repository("registry", host, repo),
            caps,
            tags: Mutex::default(),
            blobs: Mutex::default(),
            manifests: Mutex::default(),
            asked: AtomicUsize::new(0),
        })
    }

    /// Holds `img` under `tag`: its layers, config and manifest.
    fn holds(&self, img: &ImageData, tag: &str) {
        let mut blobs = self.blobs.lock().unwrap();
        blobs.extend(img.manifest.layers.iter().map(|l| l.digest.clone()));
        blobs.insert(img.manifest.config.digest.clone());
        self.manifests
            .lock()
            .unwrap()
            .insert(img.raw_manifest.digest.clone(), img.raw_manifest.clone());
        self.tags
            .lock()
            .unwrap()
            .insert(tag.to_string(), img.raw_manifest.digest.clone());
    }
}

#[async_trait]
impl Store for MemStore {
    fn id(&self) -> &StoreId {
        &self.id
    }

    fn capabilities(&self) -> Capabilities {
        self.caps
    }

    fn reference_for(&self, name: &ImageName) -> String {
        name.tag.clone()
    }

    async fn current(&self, name: &ImageName) -> Result<Current> {
        Ok(Current::Tagged(self.tags.lock().unwrap().get(&name.tag).cloned()))
    }

    async fn present(&self, blobs: &[Digest]) -> Result<Vec<bool>> {
        self.asked.fetch_add(blobs.len(), Ordering::Relaxed);
        let held = self.blobs.lock().unwrap();
        Ok(blobs.iter().map(|b| held.contains(b)).collect())
    }

    async fn manifest(&self, reference: &str) -> Result<Option<RawManifest>> {
        let digest = match Digest::parse(reference) {
            Ok(d) => Some(d),
            Err(_) => self.tags.lock().unwrap().get(reference).cloned(),
        };
        Ok(digest.and_then(|d| self.manifests.lock().unwrap().get(&d).cloned()))
    }
}

/// A registry-like store: compressed blobs, indexes, mounts.
fn registry_like() -> Capabilities {
    Capabilities {
        stored_form: StoredForm::Compressed,
        keeps_index: true,
        holds_referrers: true,
        media_types: MediaTypes::Keep,
        wants_compressed: true,
        referrers_tag: true,
        can_mount: true,
        answers_presence: true,
    }
}

/// One platform image whose layers hold `layers` (their digests stand for
/// compressed blobs; the diff_ids are made up from them).
fn image(arch: &str, layers: &[&str]) -> ImageData {
    let digests: Vec<Digest> = layers.iter().map(|l| Digest::of(l.as_bytes())).collect();
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| Digest::of(format!("plain {l}").as_bytes()).to_string())
        .collect();
    let config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config_bytes = Bytes::from(serde_json::to_vec(&config).unwrap());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": Digest::of(&config_bytes).to_string(),
            "size": config_bytes.len(),
        },
        "layers": digests.iter().zip(layers).map(|(d, l)| serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": d.to_string(),
            "size": l.len(),
        })).collect::<Vec<_>>(),
    });
    let raw = RawManifest::new(Bytes::from(serde_json::to_vec(&manifest).unwrap()), None).unwrap();
    let Manifest::Image(parsed) = raw.parse().unwrap() else {
        panic!("an image manifest")
    };
    ImageData {
        raw_manifest: raw,
        manifest: parsed,
        config: ConfigBlob::parse(config_bytes, "config").unwrap(),
        platform: None,
    }
}

/// An index of `images`, each under its architecture.
fn indexed(images: Vec<ImageData>) -> ResolvedImage {
    let entries: Vec<_> = images
        .iter()
        .map(|i| {
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": i.raw_manifest.digest.to_string(),
                "size": i.raw_manifest.bytes.len(),
                "platform": {"architecture": i.config.parsed.architecture, "os": "linux"},
            })
        })
        .collect();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    });
    let raw = RawManifest::new(Bytes::from(serde_json::to_vec(&index).unwrap()), None).unwrap();
    let Manifest::Index(parsed) = raw.parse().unwrap() else {
        panic!("an index")
    };
    ResolvedImage {
        index: Some(Box::new((raw, parsed))),
        images,
        synthesised: false,
    }
}

fn single(img: ImageData) -> ResolvedImage {
    ResolvedImage {
        index: None,
        images: vec![img],
        synthesised: false,
    }
}

const SOURCE: &str = "registry://src.test/app:1";

/// A plan context whose destinations are the given in-memory stores.
fn context(stores: &[(&str, Arc<MemStore>)]) -> PlanContext {
    let spec = OneShot {
        command: "test",
        source: SOURCE,
        destination: Some(stores[0].0),
        chain: FilterChain::default(),
        filter_texts: &[],
        platforms: PlatformSelection::Default,
    }
    .spec()
    .unwrap();
    let ctx = PlanContext {
        spec: Arc::new(spec),
        base: Default::default(),
        cache: None,
        only: Vec::new(),
        pinned: None,
        write_all: false,
        prune: false,
        sharding: None,
        memo: Default::default(),
        shown_only: false,
    };
    for (dest, store) in stores {
        let store: Arc<dyn Store> = store.clone();
        ctx.memo.provide_store(&Reference::parse(dest).unwrap(), store);
    }
    ctx
}

fn target(dest: &str, platforms: PlatformSelection) -> Target {
    Target {
        entry: 0,
        source: Reference::parse(SOURCE).unwrap(),
        destination: Reference::parse(dest).unwrap(),
        name: ImageName::parse("src.test/app:1"),
        chain: FilterChain::default(),
        chain_name: None,
        platforms,
        dest_span: 0..0,
        pinned: None,
        compressed_for_store: false,
    }
}

/// Diffs each destination against `resolved`, then builds the graph.
fn plan(
    ctx: &PlanContext,
    dests: &[&str],
    resolved: &ResolvedImage,
    platforms: PlatformSelection,
) -> (Vec<PlannedTarget>, WorkGraph) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut planned = Vec::new();
        for d in dests {
            let t = target(d, platforms.clone());
            planned.push(diff_target(ctx, t, Some(Ok(Arc::new(resolved.clone())))).await);
        }
        let g = graph::build(ctx, &mut planned, false).await;
        (planned, g)
    })
}

/// How each layer blob gets to `store` (a repository's id).
fn layer_hows(g: &WorkGraph, store: &str) -> Vec<How> {
    g.graph
        .node_weights()
        .filter(|w| matches!(&w.key, NodeKey::Blob { store: s, .. } if **s == *store))
        .filter_map(|w| w.how.clone())
        .collect()
}

const A: &str = "registry://mem.test/team/a:1";
const B: &str = "registry://mem.test/team/b:1";

#[test]
fn cold_store_gets_everything_sent() {
    let a = MemStore::new("mem.test", "team/a", registry_like());
    let ctx = context(&[(A, a.clone())]);
    let img = image("amd64", &["base", "app"]);
    let (planned, g) = plan(&ctx, &[A], &single(img.clone()), PlatformSelection::Default);
    assert_eq!(planned[0].action, Action::Create);
    assert_eq!(planned[0].expected.as_ref(), Some(&img.raw_manifest.digest));
    assert_eq!(planned[0].current, None);
    assert_eq!(
        layer_hows(&g, "registry://mem.test/team/a"),
        vec![How::Upload, How::Upload]
    );
    // Two layers and a config asked about, once each.
    assert_eq!(a.asked.load(Ordering::Relaxed), 3);
}

#[test]
fn warm_store_is_unchanged_and_asked_nothing_more() {
    let a = MemStore::new("mem.test", "team/a", registry_like());
    let img = image("amd64", &["base", "app"]);
    a.holds(&img, "1");
    let ctx = context(&[(A, a.clone())]);
    let (planned, g) = plan(&ctx, &[A], &single(img.clone()), PlatformSelection::Default);
    assert_eq!(planned[0].action, Action::Unchanged);
    assert_eq!(planned[0].current.as_ref(), Some(&img.raw_manifest.digest));
    assert_eq!(g.graph.node_count(), 0);
    assert_eq!(a.asked.load(Ordering::Relaxed), 0);
}

#[test]
fn a_moved_tag_is_an_update_that_sends_only_what_is_missing() {
    let a = MemStore::new("mem.test", "team/a", registry_like());
    let old = image("amd64", &["base", "old app"]);
    a.holds(&old, "1");
    let ctx = context(&[(A, a.clone())]);
    let new = image("amd64", &["base", "new app"]);
    let (planned, g) = plan(&ctx, &[A], &single(new.clone()), PlatformSelection::Default);
    assert_eq!(planned[0].action, Action::Update);
    assert_eq!(planned[0].current.as_ref(), Some(&old.raw_manifest.digest));
    assert_eq!(planned[0].expected.as_ref(), Some(&new.raw_manifest.digest));
    assert_eq!(
        layer_hows(&g, "registry://mem.test/team/a"),
        vec![How::Present, How::Upload]
    );
}

#[test]
fn blobs_shared_by_two_stores_of_one_host_are_mounted_not_sent_twice() {
    let a = MemStore::new("mem.test", "team/a", registry_like());
    let b = MemStore::new("mem.test", "team/b", registry_like());
    a.holds(&image("amd64", &["base", "old app"]), "1");
    let ctx = context(&[(A, a.clone()), (B, b.clone())]);
    let img = image("amd64", &["base", "app"]);
    let (planned, g) = plan(&ctx, &[A, B], &single(img), PlatformSelection::Default);
    assert_eq!(planned[0].action, Action::Update);
    assert_eq!(planned[1].action, Action::Create);
    assert_eq!(
        layer_hows(&g, "registry://mem.test/team/a"),
        vec![How::Present, How::Upload]
    );
    // b mounts the base from a (which holds it) and the app layer from a
    // (which this run uploads it to first).
    let from: Vec<String> = layer_hows(&g, "registry://mem.test/team/b")
        .into_iter()
        .map(|h| match h {
            How::Mount(m) => m.from.clone(),
            other => panic!("expected a mount, got {other:?}"),
        })
        .collect();
    assert_eq!(from, vec!["team/a".to_string(), "team/a".to_string()]);
}

#[test]
fn a_store_that_cannot_mount_is_sent_every_blob() {
    let no_mount = Capabilities {
        can_mount: false,
        ..registry_like()
    };
    let a = MemStore::new("mem.test", "team/a", no_mount);
    let b = MemStore::new("mem.test", "team/b", no_mount);
    a.holds(&image("amd64", &["base", "old app"]), "1");
    let ctx = context(&[(A, a.clone()), (B, b.clone())]);
    let img = image("amd64", &["base", "app"]);
    let (_, g) = plan(&ctx, &[A, B], &single(img), PlatformSelection::Default);
    assert_eq!(
        layer_hows(&g, "registry://mem.test/team/a"),
        vec![How::Present, How::Upload]
    );
    assert_eq!(
        layer_hows(&g, "registry://mem.test/team/b"),
        vec![How::Upload, How::Upload]
    );
}

#[test]
fn a_store_that_cannot_keep_indexes_gets_one_platform_or_a_clear_failure() {
    let flat = Capabilities {
        keeps_index: false,
        ..registry_like()
    };
    let a = MemStore::new("mem.test", "team/a", registry_like());
    let b = MemStore::new("mem.test", "team/b", flat);
    let ctx = context(&[(A, a.clone()), (B, b.clone())]);
    // One platform in an index, all platforms asked for: the store that
    // keeps indexes gets the index, the other the platform's manifest.
    let amd = image("amd64", &["base", "app"]);
    let one = indexed(vec![amd.clone()]);
    let (planned, g) = plan(&ctx, &[A, B], &one, PlatformSelection::All);
    let index_digest = one.index.as_deref().map(|(raw, _)| raw.digest.clone());
    assert_eq!(planned[0].expected, index_digest);
    assert_eq!(planned[1].expected.as_ref(), Some(&amd.raw_manifest.digest));
    let indexes: Vec<&str> = g
        .graph
        .node_weights()
        .filter_map(|w| match &w.key {
            NodeKey::Index { store, .. } => Some(&**store),
            _ => None,
        })
        .collect();
    assert_eq!(indexes.len(), 1, "{indexes:?}");
    assert!(indexes[0].starts_with("registry://mem.test/team/a"), "{indexes:?}");
    // Two platforms: the store without indexes cannot hold them.
    let two = indexed(vec![amd, image("arm64", &["base", "arm app"])]);
    let (planned, _) = plan(&ctx, &[A, B], &two, PlatformSelection::All);
    assert_eq!(planned[0].action, Action::Create);
    match &planned[1].action {
        Action::Failed { error } => assert!(error.contains("holds one platform per image"), "{error}"),
        other => panic!("expected a failure, got {other:?}"),
    }
}
