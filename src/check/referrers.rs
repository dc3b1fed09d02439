//! The `referrer-subject` rule: a referrer whose subject is not in the
//! repository (a cosign `sha256-<hex>.sig/.att/.sbom` tag or a
//! `sha256-<hex>` referrers tag naming a manifest the registry does not
//! hold, an OCI layout entry whose `subject` is not in the layout). Such a
//! signature or SBOM is left over from an image that was deleted or
//! re-pushed, and no policy will find it.

use std::collections::BTreeMap;

use super::Findings;
use crate::error::{Error, Result};
use crate::image::referrers::parse_cosign_tag;
use crate::image::{Descriptor, Digest};
use crate::reference::Reference;
use crate::registry::{RegistryClient, RegistryOptions};

/// The subject a referrer tag names: `sha256-<hex>` or a cosign tag.
fn subject_of_tag(tag: &str) -> Option<Digest> {
    if let Some((d, _)) = parse_cosign_tag(tag) {
        return Some(d);
    }
    let (algorithm, hex) = tag.split_once('-')?;
    Digest::parse(&format!("{algorithm}:{hex}")).ok()
}

/// Checks the referrers of the repository or layout `reference` names.
pub async fn check_referrer_subjects(reference: &Reference, opts: &RegistryOptions, f: &mut Findings) -> Result<()> {
    match reference {
        Reference::Registry(r) => {
            let client = RegistryClient::for_host(&r.host, opts)?;
            let tags = match client.list_tags(&r.repository).await {
                Ok(t) => t,
                Err(Error::NotFound(_)) => return Ok(()),
                Err(e) => {
                    f.info(
                        "referrer-subject",
                        format!("skipped: the tags of {} cannot be listed: {e}", r.repository),
                    );
                    return Ok(());
                }
            };
            let mut by_subject: BTreeMap<Digest, Vec<String>> = BTreeMap::new();
            for t in tags {
                if let Some(d) = subject_of_tag(&t) {
                    by_subject.entry(d).or_default().push(t);
                }
            }
            for (subject, tags) in by_subject {
                if client.head_manifest(&r.repository, subject.as_str()).await?.is_none() {
                    f.warning(
                        "referrer-subject",
                        format!(
                            "{} refer{} to {subject}, which is not in {}",
                            tags.join(", "),
                            if tags.len() == 1 { "s" } else { "" },
                            r.repository
                        ),
                    );
                }
            }
        }
        Reference::Oci { path, .. } => {
            #[derive(serde::Deserialize)]
            struct Index {
                #[serde(default)]
                manifests: Vec<Descriptor>,
            }
            #[derive(serde::Deserialize)]
            struct WithSubject {
                #[serde(default)]
                subject: Option<Descriptor>,
            }
            let Ok(bytes) = std::fs::read(path.join("index.json")) else {
                return Ok(());
            };
            let Ok(index) = serde_json::from_slice::<Index>(&bytes) else {
                return Ok(());
            };
            let blob = |d: &Digest| {
                path.join("blobs")
                    .join(d.as_str().split_once(':').map(|x| x.0).unwrap_or("sha256"))
                    .join(d.hex())
            };
            for m in &index.manifests {
                let Ok(raw) = std::fs::read(blob(&m.digest)) else {
                    continue;
                };
                let Ok(WithSubject { subject: Some(s) }) = serde_json::from_slice::<WithSubject>(&raw) else {
                    continue;
                };
                if !blob(&s.digest).is_file() {
                    f.warning(
                        "referrer-subject",
                        format!(
                            "{} refers to {}, which is not in {}",
                            m.digest,
                            s.digest,
                            path.display()
                        ),
                    );
                }
            }
        }
        _ => {}
    }
    Ok(())
}
