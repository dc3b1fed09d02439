//! Source: a Distribution-API registry. Manifests come from the registry,
//! verified against the digest asked for or, when read by tag, against the
//! `Docker-Content-Digest` the registry sent (a sync reads the digest its
//! plan resolved, so that is checked too); blobs stream through the registry
//! client, verified against their digest and size as they flow.

use async_trait::async_trait;

use super::{BlobReader, Source};
use crate::error::Result;
use crate::image::{Descriptor, Digest, RawManifest};
use crate::reference::RegistryRef;
use crate::registry::{RegistryClient, RegistryOptions};

/// Reads images from a registry.
#[derive(Debug, Clone)]
pub struct RegistrySource {
    reference: RegistryRef,
    client: RegistryClient,
}

impl RegistrySource {
    /// A source for `reference`, using the shared client of its host.
    pub fn new(reference: RegistryRef, opts: &RegistryOptions) -> Result<Self> {
        let client = RegistryClient::for_host(&reference.host, opts)?;
        Ok(RegistrySource { reference, client })
    }

    /// The reference this source reads.
    pub fn reference(&self) -> &RegistryRef {
        &self.reference
    }

    /// The registry client, for operations beyond the [`Source`] trait.
    pub fn client(&self) -> &RegistryClient {
        &self.client
    }
}

#[async_trait]
impl Source for RegistrySource {
    fn describe(&self) -> String {
        format!("registry://{}", self.reference)
    }

    async fn root_manifest(&self) -> Result<RawManifest> {
        // get_manifest verifies the bytes against the digest in the reference
        // or, for a tag, against the registry's Docker-Content-Digest.
        self.client
            .get_manifest(&self.reference.repository, &self.reference.reference())
            .await
    }

    async fn manifest(&self, digest: &Digest) -> Result<RawManifest> {
        self.client
            .get_manifest(&self.reference.repository, digest.as_str())
            .await
    }

    async fn open_blob(&self, desc: &Descriptor) -> Result<BlobReader> {
        self.client.get_blob(&self.reference.repository, desc).await
    }

    fn retries(&self) -> u32 {
        self.client.retries()
    }

    /// A HEAD, not a download.
    async fn blob_size(&self, desc: &Descriptor) -> Result<Option<u64>> {
        self.client.head_blob(&self.reference.repository, &desc.digest).await
    }
}
