//! Building the work graph from the planned targets: one node per thing
//! produced (fetch, rewrite, blob, config, manifest, index, tag, check,
//! referrers, prunes), each blob present, mounted, uploaded or written as
//! the stores' answers say.

use super::*;

/// The compression of a layer as its media type says (gzip when unknown).
pub(super) fn layer_compression(desc: &Descriptor) -> Compression {
    Compression::from_media_type(&desc.media_type).unwrap_or(Compression::Gzip)
}

/// A blob of one target: the layer (or config) and its key in the store.
struct WantedBlob {
    /// The digest the store keeps it under (digest or diff_id), or the
    /// rewrite's output name.
    blob: Name,
    /// The digest to look for in the store (None: unknown until rewritten).
    lookup: Option<Digest>,
}

/// Builds the graph of every writing target of `planned`, asking each
/// store which blobs it holds.
/// With `let_go`, each target's resolved manifests are dropped once its
/// nodes are built (a plan that is only shown needs them no more).
pub async fn build(ctx: &PlanContext, planned: &mut [PlannedTarget], let_go: bool) -> WorkGraph {
    // Each destination's store: its id and what it can do.
    let mut stores = Stores::default();
    for t in planned.iter().filter(|t| t.action.writes()) {
        if stores.by_destination.contains_key(t.destination().as_ref()) {
            continue;
        }
        let view = match ctx.store(&t.target.destination) {
            Ok(s) => Store::new(s.id().clone(), s.capabilities()),
            Err(_) => Store::of(&t.target.destination),
        };
        stores.add(&t.destination(), view);
    }
    // Blobs each store holds now (asked once per store and blob).
    let presence = presence::presence(ctx, planned, &stores).await;
    // Where earlier runs saw blobs, when a store that mounts is written (read once).
    let writes_registry = stores.values().any(|s| s.can_mount);
    // A saved plan (`--apply`) mounts from exactly the repositories it
    // showed, whatever other runs have remembered since.
    let remembered = match (&ctx.pinned, &ctx.cache) {
        (Some(saved), _) => Arc::new(saved_candidates(&saved.nodes)),
        (None, Some(c)) if writes_registry => ctx.memo.remembered(Some(c)),
        _ => Arc::new(Remembered::default()),
    };
    // A shard of a saved plan: the blobs other shards write too.
    let cut = ctx
        .pinned
        .as_ref()
        .and_then(|s| s.shards.as_ref())
        .map(crate::plan::shard::SavedShards::cut_roles)
        .unwrap_or_default();
    let mut g = assemble(
        ctx.cache.as_ref(),
        planned,
        &presence,
        &remembered,
        &mut stores,
        let_go,
        &cut,
    );
    first_for_others(&mut g, &cut);
    g
}

/// The blobs a shard of a saved plan shares with others, by (host, digest).
pub(super) type CutRoles = HashMap<(String, Digest), CutRole>;

/// How a blob other shards write too gets to `store`: a blob another shard
/// uploads is mounted from that shard's repository once it is there (the
/// executor waits for it), instead of uploaded a second time. Only a blob
/// as the source has it, to a registry that mounts.
fn cut_how(how: How, store: &Store, wanted: &WantedBlob, rewritten: bool, cut: &CutRoles) -> How {
    if how != How::Upload || rewritten || !store.can_mount {
        return how;
    }
    let (Some(host), Some(d)) = (&store.host, &wanted.lookup) else {
        return how;
    };
    match cut.get(&(host.to_string(), d.clone())) {
        // (From its own repository: the owner writes other tags of it; the
        // blob is waited for there.)
        Some(CutRole::Mount { from, owner }) => How::mount_after(from.clone(), *owner),
        _ => how,
    }
}

/// Marks the work that puts each blob this shard owns into the repository
/// the other shards mount it from (and what that needs) to run first.
fn first_for_others(g: &mut WorkGraph, cut: &CutRoles) {
    let wanted: HashMap<(&str, &Digest), &str> = cut
        .iter()
        .filter_map(|((host, d), role)| match role {
            CutRole::Owner { from } => Some(((host.as_str(), d), from.as_str())),
            CutRole::Mount { .. } => None,
        })
        .collect();
    if wanted.is_empty() {
        return;
    }
    let mut stack: Vec<NodeIndex> = g
        .graph
        .node_indices()
        .filter(|&i| {
            let w = &g.graph[i];
            let (Some(store), Some(desc)) = (w.key.store(), &w.source_blob) else {
                return false;
            };
            if !matches!(w.key, NodeKey::Blob { .. } | NodeKey::Config { .. }) {
                return false;
            }
            let Some(id) = StoreId::parse(store) else { return false };
            match (id.host(), id.repository_name()) {
                (Some(h), Some(r)) => wanted.get(&(h, &desc.digest)) == Some(&r),
                _ => false,
            }
        })
        .collect();
    while let Some(i) = stack.pop() {
        if g.first.insert(i) {
            stack.extend(g.needs(i).into_iter().map(|(n, _)| n));
        }
    }
}

/// Each destination's store (by the destination as the plan spells it),
/// one view per store: the tags of a repository share it and the names
/// its nodes carry (a plan of 100,000 tags in 100 repositories has 100).
#[derive(Default)]
pub(super) struct Stores {
    by_destination: HashMap<String, Arc<Store>>,
    by_id: HashMap<(String, StoredForm, bool, bool), Arc<Store>>,
}

impl Stores {
    /// Records `view` as the store of `destination` (the one view already
    /// made of the same store, if there is one).
    fn add(&mut self, destination: &str, view: Store) -> Arc<Store> {
        let key = (view.key.to_string(), view.form, view.keeps_index, view.can_mount);
        let shared = self.by_id.entry(key).or_insert_with(|| Arc::new(view)).clone();
        self.by_destination.insert(destination.to_string(), shared.clone());
        shared
    }

    /// The store of `destination`, as [`Stores::add`] recorded it.
    pub(super) fn get(&self, destination: &str) -> Option<&Arc<Store>> {
        self.by_destination.get(destination)
    }

    fn values(&self) -> impl Iterator<Item = &Arc<Store>> {
        self.by_id.values()
    }
}

/// The remembered repositories a saved plan's mounts try, per host and blob.
fn saved_candidates(nodes: &[Work]) -> Remembered {
    let mut r = Remembered::default();
    for w in nodes {
        let (Some(How::Mount(m)), Some(store), Some(desc)) = (&w.how, w.key.store(), &w.source_blob) else {
            continue;
        };
        if !m.remembered {
            continue;
        }
        let Some(id) = StoreId::parse(store) else { continue };
        let Some(host) = id.host() else { continue };
        r.add(
            host,
            &desc.digest,
            std::iter::once(m.from.clone()).chain(m.or.iter().cloned()),
        );
    }
    r
}

/// About how many nodes and edges the graph of `planned` has: a fetch per
/// distinct source blob, a blob node per distinct (store, blob), and a
/// config, config read and manifest per image, a tag and a check per target
/// (an index where there is one); an edge into each, and one per layer into
/// its manifest.
fn room(planned: &[PlannedTarget], stores: &Stores) -> (usize, usize) {
    use std::hash::BuildHasher;
    let hasher = std::hash::RandomState::new();
    let mut fetched: HashSet<u64> = HashSet::new();
    let mut stored: HashSet<u64> = HashSet::new();
    let (mut nodes, mut edges) = (0, 0);
    for t in planned.iter().filter(|t| t.action.writes()) {
        let Some(r) = &t.resolved else { continue };
        let store: Name = stores
            .get(&t.destination())
            .map(|s| s.key.clone())
            .unwrap_or_else(|| t.destination().as_ref().into());
        for img in &r.images {
            for l in &img.manifest.layers {
                let fetch = fetched.insert(hasher.hash_one(&l.digest));
                let blob = stored.insert(hasher.hash_one((&store, &l.digest)));
                nodes += usize::from(fetch) + usize::from(blob);
                edges += 1 + usize::from(fetch || blob);
            }
            nodes += 3;
            edges += 3;
        }
        nodes += 2 + usize::from(r.index.is_some());
        edges += 2 + r.images.len() * usize::from(r.index.is_some());
    }
    (nodes, edges)
}

/// The graph's shape alone: every blob sent, nothing asked of the stores
/// nor of the layer cache (for partitioning targets into shards).
pub fn shape(planned: &mut [PlannedTarget]) -> WorkGraph {
    assemble(
        None,
        planned,
        &Presence::default(),
        &Remembered::default(),
        &mut Stores::default(),
        true,
        &CutRoles::new(),
    )
}

fn assemble(
    cache: Option<&LayerCache>,
    planned: &mut [PlannedTarget],
    presence: &Presence,
    remembered: &Remembered,
    stores: &mut Stores,
    let_go: bool,
    cut: &CutRoles,
) -> WorkGraph {
    let mut g = WorkGraph::default();
    // Room for the nodes and edges up front: growing by doubling would hold
    // the old and the new array at once, and room for layers that several
    // targets share (one node each) would be wasted.
    let (nodes, edges) = room(planned, stores);
    g.graph.reserve_nodes(nodes);
    g.graph.reserve_edges(edges);
    g.by_key.first.reserve(nodes);
    // (host, digest) → the upload node that first sends it there, and its repository.
    let mut uploaded_on: Uploads = HashMap::new();
    // Each source store's name, made once.
    let mut sources: HashMap<String, Name> = HashMap::new();
    for (ti, t) in planned.iter_mut().enumerate() {
        if !t.action.writes() {
            continue;
        }
        let resolved = if let_go { t.resolved.take() } else { t.resolved.clone() };
        let Some(resolved) = resolved else { continue };
        let t = &*t;
        let tt = &t.target;
        let store = match stores.get(&t.destination()) {
            Some(s) => s.clone(),
            None => stores.add(&t.destination(), Store::of(&tt.destination)),
        };
        let src_store: Name = {
            let name = source_store(&tt.source);
            sources.entry(name.clone()).or_insert_with(|| name.into()).clone()
        };
        let chain = &tt.chain;
        let filtered = !chain.is_empty();
        let rewrites_content = chain.changes_content();
        let observes = chain
            .filters
            .iter()
            .any(|f| matches!(f, FilterSpec::Search { .. } | FilterSpec::Inspect { .. }));
        let chain_hash: Name = chain.hash().into();
        let source_id = StoreId::of(&tt.source);
        let same_host_source = match (source_id.host(), source_id.repository_name(), &store.host) {
            (Some(sh), Some(sr), Some(h))
                if store.can_mount && sh == &**h && Some(sr) != store.repository.as_deref() =>
            {
                Some(sr.to_string())
            }
            _ => None,
        };
        let mut tw = TargetWork {
            in_place: t.current.is_some() && t.current == t.expected && t.referrers.is_some(),
            ..TargetWork::default()
        };
        // (Sized up front: a vector grown by a push holds room for four
        // images, and a plan of 100,000 targets has as many of them.)
        tw.images.reserve_exact(resolved.images.len());
        for img in &resolved.images {
            let mut layers = Vec::with_capacity(img.manifest.layers.len());
            let mut rewrites = Vec::with_capacity(if filtered { img.manifest.layers.len() } else { 0 });
            for (li, desc) in img.manifest.layers.iter().enumerate() {
                // One copy of the descriptor for the layer's blob and fetch nodes.
                let shared = Arc::new(desc.clone());
                let diff_id = img.diff_id(li).ok().cloned();
                let plain_key = match store.form {
                    StoredForm::Compressed => Some(desc.digest.clone()),
                    StoredForm::PlainTar => diff_id.clone(),
                };
                // A rewritten layer the cache knows, and the store holds.
                let cached = if rewrites_content && !observes {
                    cached_output(cache, chain, desc, store.form).filter(|d| presence.holds(&store, d))
                } else {
                    None
                };
                let wanted = match (&cached, rewrites_content) {
                    (Some(d), _) => WantedBlob {
                        blob: d.shared_text(),
                        lookup: Some(d.clone()),
                    },
                    (None, true) => WantedBlob {
                        blob: format!(
                            "rewrite:{}:{}:{}",
                            desc.digest.hex(),
                            &chain_hash[..16],
                            match store.form {
                                StoredForm::Compressed => "blob",
                                StoredForm::PlainTar => "tar",
                            }
                        )
                        .into(),
                        lookup: None,
                    },
                    (None, false) => WantedBlob {
                        blob: plain_key
                            .as_ref()
                            .map(Digest::shared_text)
                            .unwrap_or_else(|| desc.digest.shared_text()),
                        lookup: plain_key.clone(),
                    },
                };
                let how = blob_how(&store, &wanted, presence, &same_host_source, &uploaded_on, remembered);
                let how = cut_how(how, &store, &wanted, rewrites_content, cut);
                let sends = how.sends();
                // A mount from a remembered repository is fed by the fetch
                // too: the executor asks the registry before the blob is
                // read, and a decline makes it one more consumer of that
                // one read (an upload), never a second read. (Only a blob
                // as the source has it can be remembered; a rewritten one
                // is known only after its rewrite.)
                let fed = sends || (how.is_remembered_mount() && !rewrites_content);
                let (blob, created) = g.node(
                    NodeKey::Blob {
                        store: store.key.clone(),
                        blob: wanted.blob.clone(),
                    },
                    ti,
                    |w| {
                        w.how = Some(how.clone());
                        w.bytes = if sends { desc.size } else { 0 };
                        w.estimated = rewrites_content && cached.is_none();
                        w.source_blob = Some(Arc::clone(&shared));
                        w.diff_id = diff_id.clone();
                        w.form = Some(store.form);
                    },
                );
                // A rewrite runs for every layer of a filtered target, even
                // one the store holds, when the chain observes (search and
                // inspect must see every layer); a cached output skips it.
                let rewrite = if filtered && cached.is_none() && (sends || observes || !rewrites_content) {
                    let (r, _) = g.node(
                        NodeKey::Rewrite {
                            input: desc.digest.clone(),
                            chain: chain_hash.clone(),
                        },
                        ti,
                        |w| {
                            w.bytes = desc.size;
                            w.source_blob = Some(Arc::clone(&shared));
                            w.diff_id = diff_id.clone();
                            w.estimated = true;
                        },
                    );
                    // The output compression: the chain's for compressed
                    // stores; plain tar when only plain-tar stores need it.
                    if store.form == StoredForm::Compressed {
                        let (c, level) = chain.output_compression(layer_compression(desc));
                        g.graph[r].compression = Some(c);
                        g.graph[r].level = level;
                    } else if g.graph[r].compression.is_none() {
                        g.graph[r].compression = Some(Compression::None);
                    }
                    let f = fetch_node(&mut g, &src_store, &shared, diff_id.as_ref(), ti);
                    g.edge(f, r, Label::Feeds);
                    if rewrites_content && sends {
                        g.edge(r, blob, Label::RewrittenTo);
                    } else if fed {
                        g.edge(f, blob, Label::CopiedTo);
                    }
                    Some(r)
                } else {
                    if fed && created {
                        let f = fetch_node(&mut g, &src_store, &shared, diff_id.as_ref(), ti);
                        g.edge(f, blob, Label::CopiedTo);
                    }
                    None
                };
                note_upload(&mut g, &mut uploaded_on, &store, &how, &wanted, blob);
                layers.push(blob);
                // (Read for filtered targets only: the others keep none.)
                if filtered {
                    rewrites.push(rewrite);
                }
            }
            // The config: the source's, or the filtered one (unknown yet).
            let cfg = &img.manifest.config;
            let shared = Arc::new(cfg.clone());
            let changes_config = rewrites_content || chain.config_timestamp().is_some();
            let wanted = if changes_config {
                WantedBlob {
                    blob: format!("rewrite:{}:{}:config", cfg.digest.hex(), &chain_hash[..16]).into(),
                    lookup: None,
                }
            } else {
                WantedBlob {
                    blob: cfg.digest.shared_text(),
                    lookup: Some(cfg.digest.clone()),
                }
            };
            let how = blob_how(&store, &wanted, presence, &same_host_source, &uploaded_on, remembered);
            let how = cut_how(how, &store, &wanted, changes_config, cut);
            let (config, _) = g.node(
                NodeKey::Config {
                    store: store.key.clone(),
                    blob: wanted.blob.clone(),
                },
                ti,
                |w| {
                    w.bytes = if how.sends() { cfg.size } else { 0 };
                    w.how = Some(how.clone());
                    w.estimated = changes_config;
                    w.source_blob = Some(Arc::clone(&shared));
                },
            );
            note_upload(&mut g, &mut uploaded_on, &store, &how, &wanted, config);
            // A config planning did not read is read once for every store
            // that writes it (a registry that holds it needs none).
            if img.config.bytes.is_empty() && !changes_config && (store.host.is_none() || how != How::Present) {
                let f = fetch_node(&mut g, &src_store, &shared, None, ti);
                g.edge(f, config, Label::ConfigRead);
            }
            // (A copied manifest's name is its digest's own text, shared.)
            let manifest_name: Name = if changes_config || rewrites_content {
                format!("rewrite:{}:{}", img.raw_manifest.digest.hex(), &chain_hash[..16]).into()
            } else {
                img.raw_manifest.digest.shared_text()
            };
            let (manifest, _) = g.node(
                NodeKey::Manifest {
                    store: format!("{}#{}", store.key, t.destination()).into(),
                    manifest: manifest_name,
                },
                ti,
                |w| {
                    w.bytes = img.raw_manifest.size;
                    w.estimated = changes_config;
                },
            );
            // Only the real store name shows in the key's store field.
            if let NodeKey::Manifest { store: s, .. } = &mut g.graph[manifest].key {
                *s = store.key.clone();
            }
            for &l in &layers {
                g.edge(l, manifest, Label::Layer);
            }
            g.edge(config, manifest, Label::Config);
            tw.images.push(ImageWork {
                layers,
                rewrites,
                config,
                manifest,
            });
        }
        let writes_index = crate::image::writes_index(&resolved, &tt.platforms, store.keeps_index);
        let top = if writes_index {
            let name = match (&t.expected, rewrites_content) {
                (Some(d), false) => d.to_string(),
                _ => format!(
                    "rewrite:{}:{}",
                    resolved.root().map(|r| r.digest.hex().to_string()).unwrap_or_default(),
                    &chain_hash[..16]
                ),
            };
            let (ix, _) = g.node(
                NodeKey::Index {
                    store: format!("{}#{}", store.key, t.destination()).into(),
                    manifest: name.into(),
                },
                ti,
                |w| w.estimated = rewrites_content,
            );
            if let NodeKey::Index { store: s, .. } = &mut g.graph[ix].key {
                *s = store.key.clone();
            }
            for m in tw.images.iter().map(|i| i.manifest).collect::<Vec<_>>() {
                g.edge(m, ix, Label::Manifest);
            }
            tw.index = Some(ix);
            Some(ix)
        } else {
            tw.images.first().map(|i| i.manifest)
        };
        let (destination, image): (Name, Name) = (t.destination().as_ref().into(), t.name().as_ref().into());
        let (tag, _) = g.node(
            NodeKey::Tag {
                destination: destination.clone(),
                image: image.clone(),
            },
            ti,
            |_| {},
        );
        if let Some(top) = top {
            g.edge(top, tag, Label::Tagged);
        }
        let (check, _) = g.node(NodeKey::Check { destination, image }, ti, |_| {});
        g.edge(tag, check, Label::Checks);
        tw.tag = Some(tag);
        tw.check = Some(check);
        if let Some(r) = &t.referrers {
            let at = TargetAt {
                ti,
                store: &store,
                src_store: &src_store,
                same_host_source: &same_host_source,
                tag,
                check,
            };
            add_referrers(&mut g, &at, &tw, r, presence, &mut uploaded_on);
        }
        g.targets.insert(ti, tw);
    }
    // Keys were made with a per-destination store for manifests (so two
    // tags of one repository commit separately); rebuild the key map.
    // (Cleared in place: the old map's room is reused, not doubled.)
    g.by_key.clear();
    for i in g.graph.node_indices() {
        g.by_key.insert(&g.graph, &g.graph[i].key, i);
    }
    g.renumber();
    g
}

/// Where a target's referrers go: its index, store, source and commit nodes.
struct TargetAt<'a> {
    ti: usize,
    store: &'a Store,
    src_store: &'a Name,
    same_host_source: &'a Option<String>,
    tag: NodeIndex,
    check: NodeIndex,
}

/// The nodes of a target's referrers: each referrer's blobs (fetched and
/// copied like layers), its manifest after its subject (the subject's
/// manifest or index, and the target's commit), the referrers tag of each
/// subject on a registry without the referrers API, all before the check.
fn add_referrers(
    g: &mut WorkGraph,
    at: &TargetAt<'_>,
    tw: &TargetWork,
    r: &crate::plan::referrers::TargetReferrers,
    presence: &Presence,
    uploaded_on: &mut Uploads,
) {
    let ti = at.ti;
    let store = at.store;
    for rf in &r.copy {
        let Some(raw) = &rf.manifest else { continue };
        let reference = rf.tag.clone().unwrap_or_else(|| rf.descriptor.digest.to_string());
        let (node, created) = g.node(
            NodeKey::Referrer {
                store: store.key.clone(),
                reference: reference.into(),
            },
            ti,
            |w| w.bytes = raw.bytes.len() as u64,
        );
        if created {
            g.referrers.insert(
                node,
                ReferrerWork {
                    manifest: raw.clone(),
                    descriptor: rf.descriptor.clone(),
                    tag: rf.tag.clone(),
                },
            );
        }
        for (bi, desc) in rf.blobs.iter().enumerate() {
            let shared = Arc::new(desc.clone());
            let wanted = WantedBlob {
                blob: desc.digest.shared_text(),
                lookup: Some(desc.digest.clone()),
            };
            // Referrer blobs are small and their own: no remembered mounts.
            let how = blob_how(
                store,
                &wanted,
                presence,
                at.same_host_source,
                uploaded_on,
                &Remembered::default(),
            );
            let sends = how.sends();
            let (blob, made) = g.node(
                NodeKey::Blob {
                    store: store.key.clone(),
                    blob: wanted.blob.clone(),
                },
                ti,
                |w| {
                    w.how = Some(how.clone());
                    w.bytes = if sends { desc.size } else { 0 };
                    w.source_blob = Some(Arc::clone(&shared));
                    w.form = Some(StoredForm::Compressed);
                },
            );
            if sends && made {
                let f = fetch_node(g, at.src_store, &shared, None, ti);
                g.edge(f, blob, Label::CopiedTo);
            }
            note_upload(g, uploaded_on, store, &how, &wanted, blob);
            g.edge(blob, node, if bi == 0 { Label::Config } else { Label::Layer });
        }
        // After its subject: the manifest (or index) it refers to, and the
        // commit that writes it.
        let subject = rf.subject.to_string();
        for m in tw.images.iter().map(|i| i.manifest).chain(tw.index) {
            let names_subject = matches!(&g.graph[m].key,
                NodeKey::Manifest { manifest, .. } | NodeKey::Index { manifest, .. } if **manifest == *subject);
            if names_subject {
                g.edge(m, node, Label::Subject);
            }
        }
        g.edge(at.tag, node, Label::AfterCommit);
        g.edge(node, at.check, Label::Referrer);
        if r.fallback_tag && rf.tag.is_none() {
            let (list, made) = g.node(
                NodeKey::ReferrersTag {
                    store: store.key.clone(),
                    subject: rf.subject.clone(),
                },
                ti,
                |_| {},
            );
            let entries = g
                .referrers_tags
                .entry(list)
                .or_insert_with(|| (rf.subject.clone(), Vec::new()));
            if !entries.1.iter().any(|d| d.digest == rf.descriptor.digest) {
                entries.1.push(rf.descriptor.clone());
            }
            let _ = made;
            g.edge(node, list, Label::ListedIn);
            g.edge(list, at.check, Label::ReferrersTag);
        }
    }
}

/// Adds prune nodes (one per tag to delete).
pub fn add_prunes(g: &mut WorkGraph, prunes: &[crate::plan::prune::PruneTag]) {
    for p in prunes {
        g.node(
            NodeKey::Prune {
                destination: p.destination.as_str().into(),
            },
            usize::MAX,
            |w| w.targets.clear(),
        );
    }
    g.renumber();
}

fn fetch_node(
    g: &mut WorkGraph,
    src_store: &Name,
    desc: &Arc<Descriptor>,
    diff_id: Option<&Digest>,
    ti: usize,
) -> NodeIndex {
    g.node(
        NodeKey::Fetch {
            source: src_store.clone(),
            digest: desc.digest.clone(),
        },
        ti,
        |w| {
            w.bytes = desc.size;
            w.source_blob = Some(Arc::clone(desc));
            w.diff_id = diff_id.cloned();
        },
    )
    .0
}

/// The output digest the layer cache remembers for a layer through `chain`
/// in the form `form` stores it.
pub(super) fn cached_output(
    cache: Option<&LayerCache>,
    chain: &crate::filter::FilterChain,
    desc: &Descriptor,
    form: StoredForm,
) -> Option<Digest> {
    let cache = cache?;
    let (compression, level) = match form {
        StoredForm::Compressed => chain.output_compression(layer_compression(desc)),
        StoredForm::PlainTar => (Compression::None, None),
    };
    let entry = cache.get(&LayerCache::rewrite_key(
        &desc.digest,
        &chain.hash(),
        compression,
        level,
    ))?;
    Some(match form {
        StoredForm::Compressed => entry.digest,
        StoredForm::PlainTar => entry.diff_id,
    })
}

/// (registry host, digest) → the node that uploads it there first in this
/// run, and its repository.
type Uploads = HashMap<(Name, Digest), (NodeIndex, Name)>;

/// Records an upload (later targets mount from it), or links a mount to
/// the upload it copies.
fn note_upload(
    g: &mut WorkGraph,
    uploads: &mut Uploads,
    store: &Store,
    how: &How,
    wanted: &WantedBlob,
    node: NodeIndex,
) {
    let (Some(host), Some(repo), Some(d)) = (&store.host, &store.repository, &wanted.lookup) else {
        return;
    };
    let key = (host.clone(), d.clone());
    match how {
        // A mount from a remembered repository brings the blob here too
        // (mounted, or uploaded when declined): later targets mount from here.
        How::Upload => {
            uploads.entry(key).or_insert((node, repo.clone()));
        }
        How::Mount(m) if m.remembered => {
            uploads.entry(key).or_insert((node, repo.clone()));
        }
        How::Mount(m) => {
            if let Some((up, up_repo)) = uploads.get(&key) {
                if *up != node && **up_repo == *m.from {
                    g.edge(*up, node, Label::MountedFrom);
                }
            }
        }
        _ => {}
    }
}

/// How a blob gets into a store: present if the store holds it; else for a
/// registry, mounted from a repository of the same host that this run
/// uploads it to first, that holds it already, or that is the source's, or
/// else that earlier runs saw it in (remembered: the registry's answer to
/// the mount decides, an upload when it declines); else sent.
fn blob_how(
    store: &Store,
    wanted: &WantedBlob,
    presence: &Presence,
    same_host_source: &Option<String>,
    uploads: &Uploads,
    remembered: &Remembered,
) -> How {
    let Some(d) = &wanted.lookup else {
        return if store.host.is_some() { How::Upload } else { How::Write };
    };
    if presence.holds(store, d) {
        return How::Present;
    }
    let Some(host) = &store.host else { return How::Write };
    if !store.can_mount {
        return How::Upload;
    }
    let mount = |from: &str| How::mount(from.to_string(), Vec::new(), false);
    if let Some((_, repo)) = uploads.get(&(host.clone(), d.clone())) {
        if Some(repo) != store.repository.as_ref() {
            return mount(repo);
        }
    }
    if let Some(repo) = presence.on_host.get(&(host.to_string(), d.clone())) {
        if Some(repo.as_str()) != store.repository.as_deref() {
            return mount(repo);
        }
    }
    if let Some(repo) = same_host_source {
        return mount(repo);
    }
    let mut candidates = remembered.candidates(host, d, store.repository.as_deref().unwrap_or_default());
    if candidates.is_empty() {
        return How::Upload;
    }
    let from = candidates.remove(0);
    How::mount(from, candidates, true)
}
