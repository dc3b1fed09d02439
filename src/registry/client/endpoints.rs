//! The Distribution API endpoints of [`RegistryClient`]: manifests (get,
//! head, put, delete), blobs (get, head), uploads (streamed and from bytes),
//! cross-repository mounts, tag lists and the catalog (with `Link`
//! pagination).

use std::io;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::TryStreamExt;
use reqwest::header::{HeaderMap, ACCEPT, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LINK, RANGE};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use url::Url;

use super::body::{hold_back_last_chunk, read_truncated, RawReader, ReaderState, ResumingReader};
use super::errors::{describe_reqwest, error_codes};
use super::transport::{Req, ReqBody};
use super::{
    header_str, manifest_name, with_query, RegistryClient, DOCKER_CONTENT_DIGEST, MAX_ERROR_BODY, MAX_LIST_PAGE,
};
use crate::error::{Error, ErrorCode, Result};
use crate::image::manifest::MAX_MANIFEST_SIZE;
use crate::image::media_type::MANIFEST_ACCEPT;
use crate::image::BlobReader;
use crate::image::{Descriptor, Digest, RawManifest, VerifyingReader};
use crate::registry::auth;

impl RegistryClient {
    /// The manifest `repo:reference` (a tag or a digest). The bytes are
    /// verified against the digest asked for or, for a tag, against the
    /// `Docker-Content-Digest` the registry sent; a mismatch is fetched
    /// again up to the retry limit, then is a [`Error::DigestMismatch`]
    /// naming both digests.
    pub async fn get_manifest(&self, repo: &str, reference: &str) -> Result<RawManifest> {
        if let Ok(d) = Digest::parse(reference) {
            if let Some(known) = self.inner.manifests.get(repo, &d) {
                return Ok(known);
            }
        }
        let manifest = self.fetch_manifest(repo, reference).await?;
        self.inner.manifests.put(repo, &manifest);
        Ok(manifest)
    }

    /// One GET of a manifest (retried, and verified as [`Self::get_manifest`] says).
    pub(super) async fn fetch_manifest(&self, repo: &str, reference: &str) -> Result<RawManifest> {
        let url = self.url(&format!("v2/{repo}/manifests/{reference}")).await?;
        let what = manifest_name(repo, reference);
        // One budget for the request: transport retries and fetches again
        // of corrupted bytes alike.
        let mut attempt = 0;
        loop {
            let resp = self
                .fetch_counted(
                    || {
                        Req::new(Method::GET, url.clone(), vec![auth::pull_scope(repo)], repo)
                            .counted_as_pull()
                            .header(ACCEPT, MANIFEST_ACCEPT)
                    },
                    MAX_MANIFEST_SIZE,
                    &format!("manifest {what}"),
                    &mut attempt,
                )
                .await?;
            match resp.status {
                StatusCode::OK => {}
                StatusCode::NOT_FOUND => {
                    let codes = error_codes(&resp.body);
                    let missing = if codes.contains(&ErrorCode::NameUnknown) {
                        format!("repository {repo}")
                    } else if Digest::parse(reference).is_ok() {
                        format!("manifest {what}")
                    } else {
                        format!("tag {what}")
                    };
                    return Err(Error::NotFound(format!("{missing} not found on {}", self.host())));
                }
                _ => return Err(self.status_error(&Method::GET, &url, repo, resp.status, &resp.body)),
            }
            let media_type = header_str(&resp.headers, CONTENT_TYPE.as_str());
            let Some((d, whose)) = self.expected_manifest_digest(reference, &resp.headers, &what) else {
                return RawManifest::new(resp.body, media_type);
            };
            match RawManifest::verified(
                resp.body,
                media_type,
                &d,
                &format!("manifest {what} from {}, checked against {whose}", self.host()),
            ) {
                // Corrupted on the way: ask again, as for blobs.
                Err(e @ Error::DigestMismatch { .. }) if attempt < self.inner.retry.retries => {
                    let wait = self.inner.retry.delay(attempt, None);
                    tracing::warn!("{e}; retrying in {} ms", wait.as_millis());
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    /// The digest a manifest fetched as `reference` must hash to, and whose
    /// word it is: the digest asked for, or for a tag the
    /// `Docker-Content-Digest` the registry sent with the answer (a byte
    /// flipped on the way then shows as a mismatch, as with blobs). None
    /// when a tag's answer names no digest: said at `-v`, and the caller
    /// relies on the digest its plan resolved.
    pub(super) fn expected_manifest_digest(
        &self,
        reference: &str,
        headers: &HeaderMap,
        what: &str,
    ) -> Option<(Digest, &'static str)> {
        if let Ok(d) = Digest::parse(reference) {
            return Some((d, "the digest asked for"));
        }
        match header_str(headers, DOCKER_CONTENT_DIGEST).map(Digest::parse) {
            Some(Ok(d)) => Some((d, "the registry's Docker-Content-Digest")),
            Some(Err(e)) => {
                tracing::debug!(
                    "{} sent an unusable Docker-Content-Digest with manifest {what} ({e}); \
                     its bytes cannot be checked here, relying on the digest the plan resolved",
                    self.host()
                );
                None
            }
            None => {
                tracing::debug!(
                    "{} sent no Docker-Content-Digest with manifest {what}; \
                     its bytes cannot be checked here, relying on the digest the plan resolved",
                    self.host()
                );
                None
            }
        }
    }

    /// The descriptor of manifest `repo:reference` from a HEAD request, or
    /// None when it does not exist. Falls back to a GET when the registry
    /// does not say the digest or the size.
    pub async fn head_manifest(&self, repo: &str, reference: &str) -> Result<Option<Descriptor>> {
        Ok(self
            .resolve_manifest(repo, reference)
            .await?
            .map(|(descriptor, _)| descriptor))
    }

    /// What `repo:reference` names, asked with a HEAD (which pull quotas
    /// such as Docker Hub's do not count): its descriptor, None when it
    /// does not exist. When the registry's answer does not say the digest,
    /// the size or the media type, the manifest is fetched instead (a GET,
    /// verified as [`Self::get_manifest`] says) and returned too.
    pub async fn resolve_manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<(Descriptor, Option<RawManifest>)>> {
        let url = self.url(&format!("v2/{repo}/manifests/{reference}")).await?;
        let resp = self
            .fetch(
                || {
                    Req::new(Method::HEAD, url.clone(), vec![auth::pull_scope(repo)], repo)
                        .header(ACCEPT, MANIFEST_ACCEPT)
                },
                MAX_ERROR_BODY,
                &format!("manifest {}", manifest_name(repo, reference)),
            )
            .await?;
        match resp.status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            _ => return Err(self.status_error(&Method::HEAD, &url, repo, resp.status, &resp.body)),
        }
        let digest = header_str(&resp.headers, DOCKER_CONTENT_DIGEST).and_then(|d| Digest::parse(d).ok());
        let size = header_str(&resp.headers, CONTENT_LENGTH.as_str()).and_then(|s| s.parse::<u64>().ok());
        let media_type = header_str(&resp.headers, CONTENT_TYPE.as_str())
            .map(|m| m.split(';').next().unwrap_or(m).trim().to_string())
            .filter(|m| !m.is_empty() && m != "application/json" && m != "text/plain");
        match (digest, size, media_type) {
            (Some(digest), Some(size), Some(mt)) => {
                if let Ok(asked) = Digest::parse(reference) {
                    if asked != digest {
                        return Err(Error::DigestMismatch {
                            what: format!("manifest {} on {}", manifest_name(repo, reference), self.host()),
                            expected: asked.to_string(),
                            actual: digest.to_string(),
                        });
                    }
                }
                Ok(Some((Descriptor::new(mt, digest, size), None)))
            }
            _ => {
                tracing::debug!(
                    "{} did not say the digest, size and media type of manifest {} on a HEAD; fetching it",
                    self.host(),
                    manifest_name(repo, reference)
                );
                match self.get_manifest(repo, reference).await {
                    Ok(m) => Ok(Some((m.descriptor(), Some(m)))),
                    Err(Error::NotFound(_)) => Ok(None),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// A stream of blob `desc` from `repo`, verified against its digest and
    /// size as it flows. Redirects to storage are followed (without our
    /// credentials when the host changes); a connection that drops mid-way is
    /// resumed with a `Range` request up to the retry limit.
    pub async fn get_blob(&self, repo: &str, desc: &Descriptor) -> Result<BlobReader> {
        // One budget for the GET: its transport retries and its resumes.
        let mut attempt = 0;
        let first = self
            .open_blob_at(repo, &desc.digest, desc.size, 0, &mut attempt)
            .await?;
        let reader = ResumingReader {
            client: self.clone(),
            repo: repo.to_string(),
            digest: desc.digest.clone(),
            size: desc.size,
            offset: 0,
            attempt,
            state: ReaderState::Reading(first),
        };
        let what = format!("blob {} from {}/{repo}", desc.digest, self.host());
        Ok(Box::pin(VerifyingReader::new(
            reader,
            Some(desc.digest.clone()),
            Some(desc.size),
            what,
        )))
    }

    /// Opens blob `digest` (of `size` bytes) at byte `offset`, as raw bytes.
    /// `attempt` is the request's retry budget spent so far (see [`Self::send_counted`]).
    pub(super) async fn open_blob_at(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        offset: u64,
        attempt: &mut u32,
    ) -> Result<RawReader> {
        let url = self.url(&format!("v2/{repo}/blobs/{digest}")).await?;
        let mut req = Req::new(Method::GET, url.clone(), vec![auth::pull_scope(repo)], repo);
        if offset > 0 {
            req = req.header(RANGE, &format!("bytes={offset}-"))?;
        }
        // The slot is held while the body is read (freed with the stream).
        let (resp, permit) = self.send_paced(req, attempt).await?;
        let status = resp.status();
        let skip = match status {
            StatusCode::OK => {
                if let Some(len) = resp.content_length().filter(|l| *l != size) {
                    return Err(Error::SizeMismatch {
                        what: format!("blob {digest} from {}/{repo}", self.host()),
                        expected: size,
                        actual: len,
                    });
                }
                offset
            }
            StatusCode::PARTIAL_CONTENT if offset > 0 => {
                let start = header_str(resp.headers(), "content-range")
                    .and_then(|v| v.trim().strip_prefix("bytes "))
                    .and_then(|v| v.split('-').next())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                if start != Some(offset) {
                    return Err(Error::Network(format!(
                        "{} answered a request to resume blob {digest} at byte {offset} with another range",
                        self.host()
                    )));
                }
                0
            }
            StatusCode::NOT_FOUND => {
                return Err(Error::NotFound(format!(
                    "blob {digest} not found in {}/{repo}",
                    self.host()
                )));
            }
            _ => {
                let body = read_truncated(resp, MAX_ERROR_BODY).await;
                return Err(self.status_error(&Method::GET, &url, repo, status, &body));
            }
        };
        let host = self.host().to_string();
        let mut to_skip = skip;
        let stream = resp
            .bytes_stream()
            .map_err(move |e| io::Error::other(format!("while receiving from {host}: {}", describe_reqwest(&e))))
            .map_ok(move |mut chunk: Bytes| {
                permit.progress(chunk.len() as u64);
                if to_skip > 0 {
                    let n = (to_skip.min(chunk.len() as u64)) as usize;
                    chunk = chunk.slice(n..);
                    to_skip -= n as u64;
                }
                chunk
            });
        Ok(Box::pin(tokio_util::io::StreamReader::new(stream)))
    }

    /// The size of blob `digest` in `repo`, or None when it is not there.
    pub async fn head_blob(&self, repo: &str, digest: &Digest) -> Result<Option<u64>> {
        let url = self.url(&format!("v2/{repo}/blobs/{digest}")).await?;
        let resp = self
            .fetch(
                || Ok(Req::new(Method::HEAD, url.clone(), vec![auth::pull_scope(repo)], repo)),
                MAX_ERROR_BODY,
                &format!("blob {digest}"),
            )
            .await?;
        match resp.status {
            StatusCode::OK => Ok(Some(
                header_str(&resp.headers, CONTENT_LENGTH.as_str())
                    .and_then(|s| s.parse::<u64>().ok())
                    .unwrap_or(0),
            )),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(self.status_error(&Method::HEAD, &url, repo, s, &resp.body)),
        }
    }

    /// The referrers of `subject` in `repo` through the OCI 1.1 referrers
    /// API (`GET /v2/REPO/referrers/DIGEST`, narrowed to `artifact_type` when
    /// given): their descriptors, or None when the registry does not offer
    /// the API (a 404, or an answer that is not an image index; Distribution
    /// 2.8 answers 404), so the caller falls back to the referrers tag.
    pub async fn referrers(
        &self,
        repo: &str,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Option<Vec<Descriptor>>> {
        let mut url = self.url(&format!("v2/{repo}/referrers/{subject}")).await?;
        if let Some(t) = artifact_type {
            url = with_query(&url, "artifactType", t);
        }
        let resp = self
            .fetch(
                || {
                    Req::new(Method::GET, url.clone(), vec![auth::pull_scope(repo)], repo)
                        .header(ACCEPT, crate::image::media_type::OCI_INDEX)
                },
                MAX_MANIFEST_SIZE,
                &format!("the referrers of {subject} in {repo}"),
            )
            .await?;
        match resp.status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED | StatusCode::BAD_REQUEST => return Ok(None),
            s => return Err(self.status_error(&Method::GET, &url, repo, s, &resp.body)),
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Listing {
            #[serde(default)]
            media_type: Option<String>,
            #[serde(default)]
            manifests: Option<Vec<Descriptor>>,
        }
        match serde_json::from_slice::<Listing>(&resp.body) {
            Ok(Listing {
                media_type,
                manifests: Some(list),
            }) if media_type
                .as_deref()
                .is_none_or(|m| m == crate::image::media_type::OCI_INDEX) =>
            {
                Ok(Some(list))
            }
            _ => Ok(None),
        }
    }

    /// Every tag of `repo`, following `Link` pagination.
    pub async fn list_tags(&self, repo: &str) -> Result<Vec<String>> {
        #[derive(Deserialize)]
        struct TagList {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let first = self.url(&format!("v2/{repo}/tags/list?n={}", self.page_size)).await?;
        let pages = self
            .paginate(
                first,
                vec![auth::pull_scope(repo)],
                repo,
                &format!("the tags of {repo}"),
                |status| {
                    (status == StatusCode::NOT_FOUND)
                        .then(|| Error::NotFound(format!("repository {repo} not found on {}", self.host())))
                },
            )
            .await?;
        let mut tags = Vec::new();
        for body in pages {
            let page: TagList = serde_json::from_slice(&body)
                .map_err(|e| Error::invalid(format!("{} sent a malformed tag list for {repo}: {e}", self.host())))?;
            tags.extend(page.tags.unwrap_or_default());
        }
        Ok(tags)
    }

    /// Every repository the registry lists in `_catalog`, following `Link`
    /// pagination.
    pub async fn catalog(&self) -> Result<Vec<String>> {
        #[derive(Deserialize)]
        struct Catalog {
            #[serde(default)]
            repositories: Option<Vec<String>>,
        }
        let first = self.url(&format!("v2/_catalog?n={}", self.page_size)).await?;
        let pages = self
            .paginate(
                first,
                vec![auth::CATALOG_SCOPE.to_string()],
                "the catalog",
                "the catalog",
                |status| {
                    matches!(
                        status,
                        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED
                    )
                    .then(|| {
                        Error::Unsupported(format!("{} does not offer the catalog API (/v2/_catalog)", self.host()))
                    })
                },
            )
            .await?;
        let mut repos = Vec::new();
        for body in pages {
            let page: Catalog = serde_json::from_slice(&body)
                .map_err(|e| Error::invalid(format!("{} sent a malformed catalog: {e}", self.host())))?;
            repos.extend(page.repositories.unwrap_or_default());
        }
        Ok(repos)
    }

    /// Fetches `first` and every page its `Link: <…>; rel="next"` headers
    /// lead to; returns the bodies. `special` maps statuses to errors.
    pub(super) async fn paginate(
        &self,
        first: Url,
        scopes: Vec<String>,
        subject: &str,
        what: &str,
        special: impl Fn(StatusCode) -> Option<Error>,
    ) -> Result<Vec<Bytes>> {
        let mut url = first;
        let mut seen = std::collections::HashSet::new();
        let mut pages = Vec::new();
        loop {
            if !seen.insert(url.to_string()) {
                return Err(Error::invalid(format!(
                    "{} sent a pagination loop while listing {what}",
                    self.host()
                )));
            }
            let resp = self
                .fetch(
                    || Ok(Req::new(Method::GET, url.clone(), scopes.clone(), subject)),
                    MAX_LIST_PAGE,
                    what,
                )
                .await?;
            if resp.status != StatusCode::OK {
                return Err(special(resp.status)
                    .unwrap_or_else(|| self.status_error(&Method::GET, &url, subject, resp.status, &resp.body)));
            }
            pages.push(resp.body);
            let next = resp
                .headers
                .get_all(LINK)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(parse_link_next);
            let Some(next) = next else {
                return Ok(pages);
            };
            let next_url = url.join(&next).map_err(|_| {
                Error::invalid(format!(
                    "{} sent an invalid pagination link while listing {what}",
                    self.host()
                ))
            })?;
            if next_url.host_str() != url.host_str() || next_url.port_or_known_default() != url.port_or_known_default()
            {
                return Err(Error::invalid(format!(
                    "{} sent a pagination link to another host while listing {what}",
                    self.host()
                )));
            }
            url = next_url;
        }
    }

    /// Mounts blob `digest` from repository `from` into `repo` on this
    /// registry: true when mounted (201); false when the registry declined
    /// (202: it opened an upload session instead, which is cancelled) or
    /// the token service did not grant `repository:FROM:pull` with the push
    /// scope (401 `insufficient_scope`), so the caller uploads the blob.
    pub async fn mount_blob(&self, repo: &str, digest: &Digest, from: &str) -> Result<bool> {
        let url = self
            .url(&format!(
                "v2/{repo}/blobs/uploads/?mount={}&from={}",
                digest,
                url::form_urlencoded::byte_serialize(from.as_bytes()).collect::<String>()
            ))
            .await?;
        let scopes = vec![auth::push_scope(repo), auth::pull_scope(from)];
        let resp = self
            .fetch(
                || {
                    let mut r = Req::new(Method::POST, url.clone(), scopes.clone(), repo);
                    r.body = ReqBody::Bytes(Bytes::new());
                    r.idempotent = true;
                    r.scope_refusal_is_answer = true;
                    Ok(r)
                },
                MAX_ERROR_BODY,
                &format!("blob {digest}"),
            )
            .await?;
        match resp.status {
            StatusCode::CREATED => Ok(true),
            StatusCode::UNAUTHORIZED => {
                tracing::debug!(
                    blob = %digest,
                    "the token service of {} did not grant {} with {}: uploading instead of mounting",
                    self.host(),
                    auth::pull_scope(from),
                    auth::push_scope(repo)
                );
                Ok(false)
            }
            StatusCode::ACCEPTED => {
                if let Ok(loc) = self.location(&url, &resp.headers) {
                    let cancel = Req::new(Method::DELETE, loc, vec![auth::push_scope(repo)], repo);
                    if let Err(e) = self.send(cancel).await {
                        tracing::debug!(
                            host = self.host(),
                            repo,
                            "could not cancel an unused upload session: {e}"
                        );
                    }
                }
                Ok(false)
            }
            s => Err(self.status_error(&Method::POST, &url, repo, s, &resp.body)),
        }
    }

    /// Uploads blob `desc` to `repo` from `reader`. A blob of at most
    /// [`CHUNKED_UPLOAD_MIN`] bytes is streamed as the body of one PUT (POST
    /// to open the session, then PUT with the digest); the reader cannot be
    /// replayed, so a failure of the PUT is returned and the caller retries
    /// by opening its source again. A larger blob goes in chunks that resume
    /// where the registry stopped ([`Self::upload_blob_chunked`]). An error
    /// the reader raises (a digest mismatch upstream) is returned as itself.
    pub async fn upload_blob(&self, repo: &str, desc: &Descriptor, reader: BlobReader) -> Result<()> {
        if desc.size > CHUNKED_UPLOAD_MIN {
            return self.upload_blob_chunked(repo, desc, reader).await;
        }
        let location = self.start_upload(repo).await?;
        let failure: Arc<Mutex<Option<io::Error>>> = Arc::default();
        let slot = failure.clone();
        let stream = hold_back_last_chunk(tokio_util::io::ReaderStream::new(reader)).map_err(move |e| {
            let text = e.to_string();
            if let Ok(mut g) = slot.lock() {
                g.get_or_insert(e);
            }
            io::Error::other(text)
        });
        let put_url = with_query(&location, "digest", desc.digest.as_str());
        let mut req = Req::new(Method::PUT, put_url.clone(), vec![auth::push_scope(repo)], repo)
            .header(CONTENT_TYPE, "application/octet-stream")?
            .header(CONTENT_LENGTH, &desc.size.to_string())?;
        req.body = ReqBody::Stream(Some(reqwest::Body::wrap_stream(stream)));
        let result = self.send(req).await;
        let upstream = failure.lock().ok().and_then(|mut g| g.take());
        if let Some(e) = upstream {
            return Err(Error::stream(
                &format!("blob {} for {}/{repo}", desc.digest, self.host()),
                e,
            ));
        }
        let resp = result?;
        self.finish_upload(repo, desc, &put_url, resp).await
    }

    /// Uploads a large blob in chunks of [`UPLOAD_CHUNK`] bytes: a PATCH
    /// per chunk (`Content-Range`), the next chunk read from `reader` while
    /// the current one is sent (two chunks in memory at most), then a PUT
    /// with the digest. A chunk whose PATCH fails asks the registry how far
    /// the upload got (`GET` on the session: its `Range`) and sends the
    /// rest of the chunk from there, so a cut costs at most one chunk sent
    /// again. The one retry layer's backoff and `--retries` budget apply:
    /// a resume that made progress since the last one starts the budget
    /// again. When the registry no longer knows the session (Distribution
    /// drops one whose last PATCH reached it in part), the error is a
    /// [`Error::Cut`]: the caller starts the blob again from its source.
    pub async fn upload_blob_chunked(&self, repo: &str, desc: &Descriptor, mut reader: BlobReader) -> Result<()> {
        let what = format!("blob {} for {}/{repo}", desc.digest, self.host());
        let mut location = self.start_upload(repo).await?;
        let mut offset = 0u64;
        let mut chunk = read_chunk(&mut reader, desc.size, &what).await?;
        loop {
            let end = offset + chunk.len() as u64;
            let last = end >= desc.size;
            let (sent, next) = if last {
                (self.send_chunk(repo, &location, offset, chunk).await, Ok(Bytes::new()))
            } else {
                let remaining = desc.size - end;
                tokio::join!(
                    self.send_chunk(repo, &location, offset, chunk),
                    read_chunk(&mut reader, remaining, &what)
                )
            };
            location = sent?;
            offset = end;
            if last {
                break;
            }
            chunk = next?;
            if chunk.is_empty() {
                return Err(Error::SizeMismatch {
                    what,
                    expected: desc.size,
                    actual: offset,
                });
            }
        }
        // The reader must end here: its verification runs at its end.
        let mut probe = [0u8; 1];
        match tokio::io::AsyncReadExt::read(&mut reader, &mut probe).await {
            Ok(0) => {}
            Ok(_) => {
                return Err(Error::SizeMismatch {
                    what,
                    expected: desc.size,
                    actual: desc.size + 1,
                })
            }
            Err(e) => return Err(Error::stream(&what, e)),
        }
        let put_url = with_query(&location, "digest", desc.digest.as_str());
        let result = match self
            .send(
                Req::new(Method::PUT, put_url.clone(), vec![auth::push_scope(repo)], repo)
                    .header(CONTENT_LENGTH, "0")?,
            )
            .await
        {
            Ok(resp) => self.finish_upload(repo, desc, &put_url, resp).await,
            Err(e) => Err(e),
        };
        match result {
            // The registry committed the blob but its answer was lost: the
            // PUT sent again met a closed session.
            Err(e) if matches!(self.head_blob(repo, &desc.digest).await, Ok(Some(_))) => {
                tracing::debug!(host = self.host(), blob = %desc.digest, "the upload's PUT failed ({e}), but the blob is there");
                Ok(())
            }
            other => other,
        }
    }

    /// Sends `chunk`, the bytes from `start` on, to the upload session at
    /// `location`, resuming from what the registry reports it received
    /// when a PATCH fails; returns the session's next location.
    async fn send_chunk(&self, repo: &str, location: &Url, start: u64, chunk: Bytes) -> Result<Url> {
        let end = start + chunk.len() as u64;
        let mut location = location.clone();
        let mut from = start;
        let mut attempt = 0u32;
        loop {
            let part = chunk.slice((from - start) as usize..);
            let mut req = Req::new(Method::PATCH, location.clone(), vec![auth::push_scope(repo)], repo)
                .header(CONTENT_TYPE, "application/octet-stream")?
                .header(CONTENT_RANGE, &format!("{from}-{}", end - 1))?;
            req.body = ReqBody::Bytes(part);
            // Not replayed by the transport: what the registry kept of a
            // failed PATCH decides where to go on from.
            let failure = match self.send_counted(req, &mut attempt).await {
                Ok(resp) if resp.status() == StatusCode::ACCEPTED || resp.status() == StatusCode::NO_CONTENT => {
                    let next = self.location(&location, resp.headers()).unwrap_or(location.clone());
                    match received(resp.headers()) {
                        Some(got) if got == end => return Ok(next),
                        // A registry that took less than it was sent: send the rest.
                        Some(got) if (from..end).contains(&got) => {
                            from = got;
                            location = next;
                            continue;
                        }
                        Some(got) => {
                            return Err(Error::Cut(format!(
                                "{} says it holds {got} bytes of an upload to {repo} after taking bytes {from}-{}; \
                                 starting the blob again",
                                self.host(),
                                end - 1
                            )))
                        }
                        // No Range: the 202 says the chunk was taken.
                        None => return Ok(next),
                    }
                }
                Ok(resp) => {
                    let status = resp.status();
                    let body = read_truncated(resp, MAX_ERROR_BODY).await;
                    self.status_error(&Method::PATCH, &location, repo, status, &body)
                }
                Err(e) => e,
            };
            if !failure.is_transient() {
                return Err(failure);
            }
            if attempt >= self.inner.retry.retries {
                // Spent: the target fails (starting the blob over would only
                // send more through the same failing link).
                return Err(Error::Network(format!(
                    "uploading bytes {from}-{} of blob to {}/{repo}: {failure} (after {attempt} resumes without progress)",
                    end - 1,
                    self.host()
                )));
            }
            let wait = self.inner.retry.delay(attempt, None);
            attempt += 1;
            tokio::time::sleep(wait).await;
            // Where did the registry get to?
            let status = self
                .fetch(
                    || {
                        Ok(Req::new(
                            Method::GET,
                            location.clone(),
                            vec![auth::push_scope(repo)],
                            repo,
                        ))
                    },
                    MAX_ERROR_BODY,
                    &format!("the status of an upload to {repo}"),
                )
                .await?;
            let got = match status.status {
                StatusCode::NO_CONTENT | StatusCode::OK | StatusCode::ACCEPTED => {
                    received(&status.headers).unwrap_or(0)
                }
                s => {
                    let err = self.status_error(&Method::GET, &location, repo, s, &status.body);
                    return Err(Error::Cut(format!(
                        "{} no longer knows the upload of bytes {from}-{} to {repo} after {failure} ({err}); \
                         starting the blob again",
                        self.host(),
                        end - 1
                    )));
                }
            };
            if !(start..=end).contains(&got) {
                return Err(Error::Cut(format!(
                    "{} reports {got} bytes of an upload to {repo} that had {start} before this chunk; starting the blob again",
                    self.host()
                )));
            }
            tracing::warn!(
                "upload to {}/{repo}: {failure}; the registry has {got} bytes, resuming from there ({} of this chunk sent again)",
                self.host(),
                end - got
            );
            if got > from {
                // Progress since the last failure: a fresh budget.
                attempt = 0;
            }
            location = self.location(&location, &status.headers).unwrap_or(location.clone());
            if got == end {
                return Ok(location);
            }
            from = got;
        }
    }

    /// Uploads a small blob held in memory (a config), retrying as needed.
    pub async fn upload_blob_bytes(&self, repo: &str, desc: &Descriptor, bytes: Bytes) -> Result<()> {
        if bytes.len() as u64 != desc.size {
            return Err(Error::SizeMismatch {
                what: format!("blob {}", desc.digest),
                expected: desc.size,
                actual: bytes.len() as u64,
            });
        }
        let actual = Digest::of(&bytes);
        if actual != desc.digest {
            return Err(Error::DigestMismatch {
                what: format!("blob {}", desc.digest),
                expected: desc.digest.to_string(),
                actual: actual.to_string(),
            });
        }
        let location = self.start_upload(repo).await?;
        let put_url = with_query(&location, "digest", desc.digest.as_str());
        let mut req = Req::new(Method::PUT, put_url.clone(), vec![auth::push_scope(repo)], repo)
            .header(CONTENT_TYPE, "application/octet-stream")?;
        req.body = ReqBody::Bytes(bytes);
        let result = match self.send(req).await {
            Ok(resp) => self.finish_upload(repo, desc, &put_url, resp).await,
            Err(e) => Err(e),
        };
        match result {
            // When the registry stored the blob but its answer was lost, the
            // PUT sent again meets a closed session: the blob is there all
            // the same.
            Err(e) if matches!(self.head_blob(repo, &desc.digest).await, Ok(Some(_))) => {
                tracing::debug!(host = self.host(), blob = %desc.digest, "the upload failed ({e}), but the blob is there");
                Ok(())
            }
            other => other,
        }
    }

    /// Opens an upload session; returns its location.
    pub(super) async fn start_upload(&self, repo: &str) -> Result<Url> {
        let url = self.url(&format!("v2/{repo}/blobs/uploads/")).await?;
        let resp = self
            .fetch(
                || {
                    let mut r = Req::new(Method::POST, url.clone(), vec![auth::push_scope(repo)], repo);
                    r.body = ReqBody::Bytes(Bytes::new());
                    // A repeated POST at worst leaves an unused session behind.
                    r.idempotent = true;
                    Ok(r)
                },
                MAX_ERROR_BODY,
                &format!("an upload to {repo}"),
            )
            .await?;
        if resp.status != StatusCode::ACCEPTED {
            return Err(self.status_error(&Method::POST, &url, repo, resp.status, &resp.body));
        }
        self.location(&url, &resp.headers)
    }

    pub(super) async fn finish_upload(
        &self,
        repo: &str,
        desc: &Descriptor,
        url: &Url,
        resp: reqwest::Response,
    ) -> Result<()> {
        let status = resp.status();
        if status == StatusCode::CREATED || status == StatusCode::NO_CONTENT || status == StatusCode::OK {
            if let Some(d) = header_str(resp.headers(), DOCKER_CONTENT_DIGEST).and_then(|d| Digest::parse(d).ok()) {
                if d != desc.digest {
                    return Err(Error::DigestMismatch {
                        what: format!("blob uploaded to {}/{repo}", self.host()),
                        expected: desc.digest.to_string(),
                        actual: d.to_string(),
                    });
                }
            }
            return Ok(());
        }
        let body = read_truncated(resp, MAX_ERROR_BODY).await;
        Err(self.status_error(&Method::PUT, url, repo, status, &body))
    }

    /// Stores manifest `raw` under `reference` (a tag or its digest), sending
    /// its exact bytes. Returns the digest the registry reports, which must
    /// be the manifest's own.
    pub async fn put_manifest(&self, repo: &str, reference: &str, raw: &RawManifest) -> Result<Digest> {
        let url = self.url(&format!("v2/{repo}/manifests/{reference}")).await?;
        // One budget for the request: transport retries and the waits for a
        // blob to become visible alike.
        let mut attempt = 0u32;
        let resp = loop {
            let resp = self
                .fetch_counted(
                    || {
                        let mut r = Req::new(Method::PUT, url.clone(), vec![auth::push_scope(repo)], repo)
                            .header(CONTENT_TYPE, &raw.media_type)?;
                        r.body = ReqBody::Bytes(raw.bytes.clone());
                        Ok(r)
                    },
                    MAX_ERROR_BODY,
                    &format!("manifest {}", manifest_name(repo, reference)),
                    &mut attempt,
                )
                .await?;
            if resp.status == StatusCode::CREATED
                || resp.status == StatusCode::OK
                || resp.status == StatusCode::ACCEPTED
            {
                break resp;
            }
            let err = self.status_error(&Method::PUT, &url, repo, resp.status, &resp.body);
            // Every blob is in place before its manifest is put, so "blob
            // unknown" means the registry has not yet made visible a blob
            // another writer of this repository just linked (Distribution
            // rewrites the link file in place): ask again shortly.
            if err.has_code(&ErrorCode::ManifestBlobUnknown) && attempt < self.inner.retry.retries {
                let wait = self.inner.retry.delay(attempt, None);
                attempt += 1;
                tracing::debug!(
                    repo,
                    reference,
                    attempt,
                    "manifest put: a blob is not visible yet; retrying in {} ms",
                    wait.as_millis()
                );
                tokio::time::sleep(wait).await;
                continue;
            }
            return Err(err);
        };
        match header_str(&resp.headers, DOCKER_CONTENT_DIGEST).and_then(|d| Digest::parse(d).ok()) {
            Some(d) if d != raw.digest => Err(Error::DigestMismatch {
                what: format!(
                    "manifest {} as stored by {}",
                    manifest_name(repo, reference),
                    self.host()
                ),
                expected: raw.digest.to_string(),
                actual: d.to_string(),
            }),
            _ => Ok(raw.digest.clone()),
        }
    }

    /// Deletes the manifest `reference` (a digest, or a tag where the
    /// registry deletes tags alone) names in `repo`; the registry must allow
    /// deletes. A registry that refuses the method answers `Unsupported`.
    pub async fn delete_manifest(&self, repo: &str, reference: &str) -> Result<()> {
        let url = self.url(&format!("v2/{repo}/manifests/{reference}")).await?;
        let resp = self
            .fetch(
                || {
                    Ok(Req::new(
                        Method::DELETE,
                        url.clone(),
                        vec![format!("repository:{repo}:delete")],
                        repo,
                    ))
                },
                MAX_ERROR_BODY,
                &format!("manifest {reference} of {repo}"),
            )
            .await?;
        match resp.status {
            StatusCode::ACCEPTED | StatusCode::OK | StatusCode::NO_CONTENT => Ok(()),
            StatusCode::NOT_FOUND => Err(Error::NotFound(format!(
                "manifest {reference} of {repo} not found on {}",
                self.host()
            ))),
            StatusCode::METHOD_NOT_ALLOWED => Err(Error::Unsupported(format!(
                "{} does not allow deleting {repo}:{reference}",
                self.host()
            ))),
            s => Err(self.status_error(&Method::DELETE, &url, repo, s, &resp.body)),
        }
    }
}

/// Blobs larger than this are uploaded in resumable chunks; smaller ones
/// go as one streamed PUT (one request, nothing held in memory).
pub const CHUNKED_UPLOAD_MIN: u64 = 16 * 1024 * 1024;

/// The size of one PATCH of a chunked upload: at most this much is sent
/// again after a cut, and two of them are held in memory per upload.
pub const UPLOAD_CHUNK: usize = 8 * 1024 * 1024;

/// Reads the next chunk of an upload (at most [`UPLOAD_CHUNK`] and `left` bytes).
async fn read_chunk(reader: &mut BlobReader, left: u64, what: &str) -> Result<Bytes> {
    use tokio::io::AsyncReadExt;
    let want = (UPLOAD_CHUNK as u64).min(left) as usize;
    let mut buf = bytes::BytesMut::with_capacity(want);
    while buf.len() < want {
        let n = (&mut *reader)
            .take((want - buf.len()) as u64)
            .read_buf(&mut buf)
            .await
            .map_err(|e| Error::stream(what, e))?;
        if n == 0 {
            break;
        }
    }
    Ok(buf.freeze())
}

/// How many bytes an upload session holds, from its `Range: 0-LAST`
/// header (`0-0` is read as none: Distribution says it for an empty session).
fn received(headers: &HeaderMap) -> Option<u64> {
    let v = header_str(headers, RANGE.as_str())?;
    let v = v.trim();
    let v = v.strip_prefix("bytes=").unwrap_or(v);
    let (first, last) = v.split_once('-')?;
    if first.trim() != "0" {
        return None;
    }
    match last.trim().parse::<u64>().ok()? {
        0 => Some(0),
        n => Some(n + 1),
    }
}

/// The target of the `rel="next"` link of a `Link` header value, if any:
/// `</v2/_catalog?last=b&n=2>; rel="next"`.
pub fn parse_link_next(value: &str) -> Option<String> {
    let mut rest = value;
    while let Some(open) = rest.find('<') {
        let after = &rest[open + 1..];
        let close = after.find('>')?;
        let target = &after[..close];
        let params_and_more = &after[close + 1..];
        let params = match params_and_more.find('<') {
            Some(next) => &params_and_more[..next],
            None => params_and_more,
        };
        let is_next = params.split([';', ',']).any(|p| {
            let Some((k, v)) = p.split_once('=') else {
                return false;
            };
            k.trim().eq_ignore_ascii_case("rel")
                && v.trim()
                    .trim_matches('"')
                    .split_ascii_whitespace()
                    .any(|r| r.eq_ignore_ascii_case("next"))
        });
        if is_next && !target.is_empty() {
            return Some(target.to_string());
        }
        rest = params_and_more;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_header_forms() {
        assert_eq!(
            parse_link_next(r#"</v2/_catalog?last=b&n=2>; rel="next""#),
            Some("/v2/_catalog?last=b&n=2".into())
        );
        assert_eq!(
            parse_link_next(r#"<https://r.example/v2/x/tags/list?n=1&last=a,b>;rel=next"#),
            Some("https://r.example/v2/x/tags/list?n=1&last=a,b".into())
        );
        assert_eq!(
            parse_link_next(r#"</first>; rel="prev", </second>; title="x"; REL="Next""#),
            Some("/second".into())
        );
        assert_eq!(parse_link_next(r#"</a>; rel="prev""#), None);
        assert_eq!(parse_link_next("garbage"), None);
        assert_eq!(parse_link_next("<unterminated; rel=next"), None);
        assert_eq!(parse_link_next(""), None);
    }
}
