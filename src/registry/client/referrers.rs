//! What refers to a manifest in a repository: the OCI referrers API where
//! the host offers it (learned once per host), else the referrers tag
//! `sha256-<hex>` of the OCI 1.1 fallback schema.

use std::collections::HashSet;

use super::RegistryClient;
use crate::error::{Error, Result};
use crate::image::referrers::fallback_tag;
use crate::image::{Descriptor, Digest, Manifest};

/// The referrers of a subject as a repository lists them.
#[derive(Debug, Clone, Default)]
pub struct ListedReferrers {
    pub descriptors: Vec<Descriptor>,
    /// Listed by the referrers API (the host keeps no referrers tag).
    pub by_api: bool,
}

impl RegistryClient {
    /// What refers to `subject` in `repo`: by the referrers API when the
    /// host offers it, else the entries of the referrers tag. `known_tags`,
    /// the repository's tags when the caller listed them, spares asking for
    /// a referrers tag that is not there.
    pub async fn listed_referrers(
        &self,
        repo: &str,
        subject: &Digest,
        known_tags: Option<&HashSet<String>>,
    ) -> Result<ListedReferrers> {
        let mut first: Option<Option<Vec<Descriptor>>> = None;
        let offered = *self
            .inner
            .referrers_api
            .get_or_try_init(|| async {
                let answer = self.referrers(repo, subject, None).await?;
                let offered = answer.is_some();
                first = Some(answer);
                Ok::<bool, Error>(offered)
            })
            .await?;
        let by_api = match first {
            Some(answer) => answer,
            None if offered => self.referrers(repo, subject, None).await?,
            None => None,
        };
        if let Some(descriptors) = by_api {
            return Ok(ListedReferrers {
                descriptors,
                by_api: true,
            });
        }
        let tag = fallback_tag(subject);
        if known_tags.is_some_and(|t| !t.contains(&tag)) {
            return Ok(ListedReferrers::default());
        }
        let descriptors = match self.get_manifest(repo, &tag).await {
            Ok(raw) => match raw.parse() {
                Ok(Manifest::Index(ix)) => ix.manifests,
                _ => {
                    return Err(Error::invalid(format!(
                        "{repo}:{tag} should hold an index of the referrers of {subject} (the OCI referrers tag schema), but holds {}",
                        raw.media_type
                    )))
                }
            },
            Err(Error::NotFound(_)) => Vec::new(),
            Err(e) => return Err(e),
        };
        Ok(ListedReferrers {
            descriptors,
            by_api: false,
        })
    }
}
