//! The diff: each target's destination compared with what its resolved
//! source gives, asking the destination's store (through the store
//! interface) what it holds and what it can keep.

use super::*;

/// The images as `p`'s destination will hold them: with OCI media types
/// where it wants them (see [`MediaTypes`]), so that the expected digest,
/// the work graph and the walk all see the manifests that are written.
pub(super) fn for_destination(
    p: &mut PlannedTarget,
    resolved: Arc<ResolvedImage>,
    rule: MediaTypes,
) -> Result<Arc<ResolvedImage>> {
    if keeps_docker_in_oci_layout(&resolved, rule) {
        p.media = MediaNote::DockerKept;
    }
    match adapt_media_types(&resolved, rule).map_err(|e| {
        Error::invalid(format!(
            "cannot convert to OCI media types for {}: {e}",
            p.target.destination
        ))
    })? {
        Some(converted) => {
            p.media = if converted.synthesised {
                MediaNote::SynthesisedOci
            } else {
                MediaNote::Converted
            };
            Ok(Arc::new(converted))
        }
        None => Ok(resolved),
    }
}

/// Layers that arrive uncompressed (from a docker-save archive, a
/// directory or a daemon) are compressed for a registry, as skopeo does:
/// the target's chain becomes `recompress` to `--compression` (or
/// `defaults.compression`; gzip when neither says), so the layers are
/// compressed once, block-parallel, remembered in the layer cache, and a
/// second run finds the output without compressing again. A target with
/// filters of its own writes its rewritten layers gzip-compressed unless
/// `--compression` says otherwise; one whose layers are not all plain tar is
/// left as it is; `--compression none` keeps them uncompressed.
pub(super) fn compress_for_store(t: &mut Target, resolved: &ResolvedImage, caps: &Capabilities) {
    if !caps.wants_compressed {
        return;
    }
    let plain = |mt: &str| crate::image::Compression::from_media_type(mt) == Some(crate::image::Compression::None);
    let all_plain = resolved
        .images
        .iter()
        .all(|i| !i.manifest.layers.is_empty() && i.manifest.layers.iter().all(|l| plain(&l.media_type)));
    if !t.chain.is_empty() {
        // Filters of its own rewrite the layers anyway: their output is
        // compressed (gzip unless --compression says), not left plain.
        if all_plain && t.chain.changes_content() && t.chain.compression.is_none() {
            t.chain.compression = Some(crate::image::Compression::Gzip);
        }
        return;
    }
    let format = t.chain.compression.unwrap_or(crate::image::Compression::Gzip);
    if !all_plain || format == crate::image::Compression::None {
        return;
    }
    t.chain
        .filters
        .push(crate::filter::FilterSpec::Recompress { format, level: None });
    t.compressed_for_store = true;
}

/// Why a filtered target is rebuilt.
pub(super) fn rebuild_reason(t: &Target) -> String {
    let first = "the output digest is known after the first run";
    if t.compressed_for_store {
        let c = t.chain.output_compression(crate::image::Compression::None).0;
        format!(
            "its uncompressed layers are compressed ({}) for the registry; {first}",
            c.as_str()
        )
    } else {
        format!("filters rewrite the layers; {first}")
    }
}

/// Compares one target's destination with what the plan would write.
/// A target not yet resolved nor compared: to be created.
pub(super) fn planned_target(t: Target) -> PlannedTarget {
    let shown = archive::shown_source(&t.source).map(|source| {
        Box::new(Shown {
            source,
            destination: t.destination.to_string(),
            name: t.name.to_string(),
        })
    });
    PlannedTarget {
        entry: t.entry,
        source_digest: None,
        platforms: 0,
        expected: None,
        current: None,
        action: Action::Create,
        blobs: BlobCounts::default(),
        target: t,
        resolved: None,
        media: MediaNote::None,
        referrers: None,
        verification: None,
        shown,
    }
}

/// Compares each target's destination with what its resolved source gives.
pub(super) async fn diff_all(ctx: &PlanContext, targets: Vec<Target>, resolutions: &Resolutions) -> Vec<PlannedTarget> {
    concurrently_in_order(targets, |t| {
        let key = (t.source.to_string(), platforms_key(&t.platforms));
        let resolved = resolutions.get(&key).cloned();
        diff_target(ctx, t, resolved)
    })
    .await
}

/// What the destination of `t` holds under its name now, asked of its
/// store: the one "is it current" path of plan and apply. A registry's
/// answer may already be known from a tag listing or an earlier HEAD.
pub(super) async fn current_of(ctx: &PlanContext, t: &Target) -> Result<Current> {
    let store = ctx.store(&t.destination)?;
    let (Some(host), Some(repo)) = (store.id().host(), store.id().repository_name()) else {
        return store.current(&t.name).await;
    };
    let reference = store.reference_for(&t.name);
    if Digest::parse(&reference).is_err() && ctx.memo.tag_missing(host, repo, &reference) {
        return Ok(Current::Tagged(None));
    }
    let key = format!("{host}/{repo}:{reference}");
    if let Some(known) = ctx.memo.head(&key) {
        return Ok(Current::Tagged(known));
    }
    let current = store.current(&t.name).await?;
    if let Current::Tagged(digest) = &current {
        ctx.memo.remember_head(&key, digest);
    }
    Ok(current)
}

/// The digest the destination's tag names now, for stores that name
/// images by tag (registries, OCI layouts); None for the others.
pub(super) async fn tagged_digest(ctx: &PlanContext, t: &Target) -> Result<Option<Digest>> {
    match current_of(ctx, t).await? {
        Current::Tagged(d) => Ok(d),
        Current::ImageId(_) | Current::Record(_) => Ok(None),
    }
}

pub(super) async fn diff_target(
    ctx: &PlanContext,
    t: Target,
    resolved: Option<std::result::Result<Arc<ResolvedImage>, String>>,
) -> PlannedTarget {
    let mut p = planned_target(t);
    let resolved = match resolved {
        Some(Ok(r)) => r,
        Some(Err(e)) => {
            p.action = Action::Failed { error: e };
            return p;
        }
        None => {
            p.action = Action::Failed {
                error: "the source was not resolved".into(),
            };
            return p;
        }
    };
    let caps = match ctx.store(&p.target.destination) {
        Ok(s) => s.capabilities(),
        Err(e) => {
            p.action = Action::Failed {
                error: format!("cannot read the destination {}: {e}", p.target.destination),
            };
            return p;
        }
    };
    compress_for_store(&mut p.target, &resolved, &caps);
    let t = &p.target;
    let source_digest = resolved.root().map(|r| r.digest.clone());
    if let (Some(pin), Some(got)) = (&t.pinned, &source_digest) {
        if pin != got {
            p.action = Action::Failed {
                error: format!("the source changed since the plan: it names {got}, the plan pinned {pin}"),
            };
            return p;
        }
    }
    p.source_digest = source_digest.clone();
    p.platforms = resolved.images.len();
    let supports_index = caps.keeps_index;
    if let Err(e) = check_fits(
        &resolved,
        &t.platforms,
        supports_index,
        &t.destination.to_string(),
        &t.source.to_string(),
    ) {
        p.action = Action::Failed { error: e.to_string() };
        return p;
    }
    let resolved = match for_destination(&mut p, resolved, caps.media_types) {
        Ok(r) => r,
        Err(e) => {
            p.action = Action::Failed { error: e.to_string() };
            return p;
        }
    };
    let t = &p.target;
    let filtered = t.chain.changes_content();
    let output_key = source_digest.as_ref().map(|d| output_key(t, d));
    p.expected = if filtered {
        match (&ctx.cache, &output_key) {
            (Some(c), Some(k)) => c.output(k),
            _ => None,
        }
    } else {
        expected_digest(&resolved, &t.platforms, supports_index).ok()
    };
    let mut by_image_id = false;
    let current: Result<Option<Digest>> = match current_of(ctx, t).await {
        Err(e) => Err(e),
        Ok(Current::Tagged(d)) => Ok(d),
        Ok(Current::ImageId(d)) => {
            // A daemon knows an image by its ID, the config digest, which
            // a copy without filters keeps; a filtered one is rebuilt.
            by_image_id = true;
            p.expected = match (filtered, resolved.images.as_slice()) {
                (false, [one]) => Some(one.manifest.config.digest.clone()),
                _ => None,
            };
            Ok(d)
        }
        Ok(Current::Record(record)) => {
            // File destinations: occy's record beside them (kept only
            // while the output it speaks for is there).
            let same = record.as_ref().is_some_and(|r| {
                Some(&r.source_digest) == source_digest.as_ref()
                    && r.chain == chain_record(&t.chain)
                    && r.platforms == platforms_key(&t.platforms)
            });
            p.current = record.map(|r| r.output);
            if same {
                p.expected = p.current.clone();
                p.action = Action::Unchanged;
            } else if p.current.is_some() {
                p.action = Action::Update;
            } else {
                p.action = Action::Create;
            }
            if filtered && p.action != Action::Unchanged && p.expected.is_none() {
                p.action = Action::Rebuild {
                    reason: rebuild_reason(&p.target),
                };
            }
            p.resolved = Some(resolved);
            return p;
        }
    };
    match current {
        Err(e) => {
            p.action = Action::Failed {
                error: format!("cannot read the destination {}: {e}", t.destination),
            };
            return p;
        }
        Ok(c) => p.current = c,
    }
    p.action = match (&p.expected, &p.current) {
        (Some(e), Some(c)) if e == c => Action::Unchanged,
        (None, _) if by_image_id => Action::Rebuild {
            reason: "filters rewrite the layers; a daemon's image is compared only for copies without filters".into(),
        },
        (None, _) => Action::Rebuild {
            reason: rebuild_reason(&p.target),
        },
        (Some(_), None) => Action::Create,
        (Some(_), Some(_)) => Action::Update,
    };
    p.resolved = Some(resolved);
    p
}
