//! [`RegistryClient`]: the Distribution-API client of one registry host.
//!
//! Why our own thin layer on reqwest rather than `oci-client`: every request
//! here goes through one loop that applies the host's rate limit (a real
//! token bucket shared by all tasks, token fetches included), retries
//! transient failures with backoff honouring `Retry-After`, and answers auth
//! challenges; clients are pooled per host with per-host TLS/insecure
//! settings (HTTPS without verification, then plain HTTP). We also need
//! `_catalog`, blob streams verified as they flow and resumed with `Range`
//! after a dropped connection, cross-repository mounts that fall back on
//! 202, and streamed uploads. oci-client exposes none of these hooks.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use futures_util::TryStreamExt;
use reqwest::header::{
    HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LINK, LOCATION, RANGE, RETRY_AFTER,
    WWW_AUTHENTICATE,
};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::Instant;
use url::Url;

use super::auth::{self, Challenge, Token, TokenCache};
use super::credentials::{CredentialStore, Credentials};
use super::rate_limit::TokenBucket;
use super::retry::{parse_retry_after, RetryPolicy};
use super::RegistryOptions;
use crate::error::{Error, ErrorCode, Result};
use crate::image::manifest::MAX_MANIFEST_SIZE;
use crate::image::media_type::MANIFEST_ACCEPT;
use crate::image::{Descriptor, Digest, RawManifest, VerifyingReader};
use crate::source::BlobReader;

/// The header registries name content digests in.
const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";
/// Page size asked for in tag lists and the catalog.
const DEFAULT_PAGE_SIZE: u32 = 1000;
/// Upper bound of a tag list or catalog page.
const MAX_LIST_PAGE: usize = 32 * 1024 * 1024;
/// How much of an error body we read to explain a failure.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Upper bound of a token endpoint answer.
const MAX_TOKEN_BODY: usize = 1024 * 1024;

/// A client for one registry host. Cheap to clone; clones share the
/// connection pool, the rate limit, the credentials and the tokens.
#[derive(Clone)]
pub struct RegistryClient {
    inner: Arc<HostState>,
    page_size: u32,
}

impl fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryClient")
            .field("host", &self.inner.host)
            .field("api_host", &self.inner.api_host)
            .field("insecure", &self.inner.insecure)
            .finish_non_exhaustive()
    }
}

/// Everything shared by the clients of one host.
struct HostState {
    /// The host as the user wrote it (`host[:port]`), for messages and credentials.
    host: String,
    /// The host requests go to (`registry-1.docker.io` for Docker Hub).
    api_host: String,
    /// Its name and explicit port as a parsed URL spells them.
    api_hostname: String,
    api_port: Option<u16>,
    insecure: bool,
    http: reqwest::Client,
    /// `https` or `http`, once known (decided by a probe for insecure hosts).
    scheme: tokio::sync::OnceCell<&'static str>,
    limiter: Option<TokenBucket>,
    retry: RetryPolicy,
    store: CredentialStore,
    creds: tokio::sync::OnceCell<Option<Credentials>>,
    challenge: Mutex<Option<Challenge>>,
    tokens: TokenCache,
    manifests: ManifestMemo,
}

/// Manifests this process has read from a host, by repository and digest.
/// A manifest's digest is the hash of its bytes, so a second read by digest
/// (the executor reading what the planner resolved) is answered from here.
/// Bounded by [`ManifestMemo::BUDGET`] bytes; past it nothing more is kept.
#[derive(Default)]
struct ManifestMemo {
    entries: Mutex<MemoEntries>,
}

/// The bytes kept, and the manifests by (repository, digest).
type MemoEntries = (usize, HashMap<(String, Digest), RawManifest>);

impl ManifestMemo {
    const BUDGET: usize = 16 * 1024 * 1024;

    fn get(&self, repo: &str, digest: &Digest) -> Option<RawManifest> {
        let entries = self.entries.lock().ok()?;
        entries.1.get(&(repo.to_string(), digest.clone())).cloned()
    }

    fn put(&self, repo: &str, manifest: &RawManifest) {
        if let Ok(mut entries) = self.entries.lock() {
            let size = manifest.bytes.len();
            if entries.0 + size <= Self::BUDGET {
                entries.0 += size;
                entries
                    .1
                    .insert((repo.to_string(), manifest.digest.clone()), manifest.clone());
            }
        }
    }
}

/// A request body: replayable bytes, or a stream that can be sent once.
enum ReqBody {
    Empty,
    Bytes(Bytes),
    Stream(Option<reqwest::Body>),
}

/// One logical request, possibly sent several times.
struct Req {
    method: Method,
    url: Url,
    headers: HeaderMap,
    body: ReqBody,
    /// Token scopes the request needs.
    scopes: Vec<String>,
    /// What the request is about, for messages (`library/alpine`, `the catalog`).
    subject: String,
    /// Whether the request may be repeated on a transient failure.
    idempotent: bool,
}

impl Req {
    fn new(method: Method, url: Url, scopes: Vec<String>, subject: impl Into<String>) -> Self {
        let idempotent = matches!(method, Method::GET | Method::HEAD | Method::PUT | Method::DELETE);
        Req {
            method,
            url,
            headers: HeaderMap::new(),
            body: ReqBody::Empty,
            scopes,
            subject: subject.into(),
            idempotent,
        }
    }

    fn header(mut self, name: reqwest::header::HeaderName, value: &str) -> Result<Self> {
        let v = HeaderValue::from_str(value)
            .map_err(|_| Error::invalid(format!("invalid value for HTTP header {name}: {value:?}")))?;
        self.headers.insert(name, v);
        Ok(self)
    }

    fn replayable(&self) -> bool {
        !matches!(self.body, ReqBody::Stream(_))
    }
}

/// A response read to its end (manifests, lists, tokens, errors).
struct SmallResponse {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

type Pool = Mutex<HashMap<(String, u64), Arc<HostState>>>;

/// The process-wide pool: one [`HostState`] per host and settings.
fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(Default::default)
}

/// A hash of the settings that shape a host's client (so two option sets
/// never share credentials or TLS settings by accident).
fn fingerprint(opts: &RegistryOptions) -> u64 {
    let mut h = DefaultHasher::new();
    opts.username.hash(&mut h);
    opts.password.hash(&mut h);
    opts.authfile.hash(&mut h);
    let mut insecure = opts.insecure_hosts.clone();
    insecure.sort();
    insecure.hash(&mut h);
    opts.cert_dir.hash(&mut h);
    opts.retries.hash(&mut h);
    opts.rate_limit.map(f64::to_bits).hash(&mut h);
    h.finish()
}

/// The host API requests go to: Docker Hub's names map to its API host.
pub fn api_host(host: &str) -> &str {
    if host == "docker.io" || host == "index.docker.io" {
        "registry-1.docker.io"
    } else {
        host
    }
}

/// Whether `host` (`host[:port]`) is listed in `insecure` (entries
/// `host:port` match exactly, bare `host` entries match any port).
pub fn is_insecure(host: &str, insecure: &[String]) -> bool {
    let bare = host_without_port(host);
    insecure.iter().any(|entry| {
        let e = entry
            .trim()
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/');
        e == host || e == bare
    })
}

fn host_without_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => h,
        _ => host,
    }
}

impl RegistryClient {
    /// The client of `host` (`host[:port]` as written in a reference). Clients
    /// of the same host and options share one HTTP client (connection reuse,
    /// HTTP/2 when the server offers it), one rate limit and one token cache.
    pub fn for_host(host: &str, opts: &RegistryOptions) -> Result<RegistryClient> {
        if host.is_empty() || host.contains(['/', '@', ' ', '\t', '?', '#']) {
            return Err(Error::usage(format!(
                "invalid registry host {host:?}: expected HOST or HOST:PORT"
            )));
        }
        let key = (host.to_string(), fingerprint(opts));
        let mut map = match pool().lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some(state) = map.get(&key) {
            return Ok(RegistryClient {
                inner: state.clone(),
                page_size: DEFAULT_PAGE_SIZE,
            });
        }
        let state = Arc::new(HostState::new(host, opts)?);
        map.insert(key, state.clone());
        Ok(RegistryClient {
            inner: state,
            page_size: DEFAULT_PAGE_SIZE,
        })
    }

    /// The same client asking for `n` entries per tag-list or catalog page.
    pub fn with_page_size(mut self, n: u32) -> Self {
        self.page_size = n.max(1);
        self
    }

    /// Retries after a first attempt (`--retries`).
    pub fn retries(&self) -> u32 {
        self.inner.retry.retries
    }

    /// The host as written (`host[:port]`).
    pub fn host(&self) -> &str {
        &self.inner.host
    }

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
    async fn fetch_manifest(&self, repo: &str, reference: &str) -> Result<RawManifest> {
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
    fn expected_manifest_digest(
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
                Ok(Some(Descriptor::new(mt, digest, size)))
            }
            _ => match self.get_manifest(repo, reference).await {
                Ok(m) => Ok(Some(m.descriptor())),
                Err(Error::NotFound(_)) => Ok(None),
                Err(e) => Err(e),
            },
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
    async fn open_blob_at(
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
        let resp = self.send_counted(req, attempt).await?;
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
    async fn paginate(
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
    /// (202: it opened an upload session instead, which is cancelled), so the
    /// caller uploads the blob.
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
                    Ok(r)
                },
                MAX_ERROR_BODY,
                &format!("blob {digest}"),
            )
            .await?;
        match resp.status {
            StatusCode::CREATED => Ok(true),
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

    /// Uploads blob `desc` to `repo`, streaming `reader` as the body of one
    /// PUT (POST to open the session, then PUT with the digest). The reader
    /// cannot be replayed, so a failure of the PUT is returned; the caller
    /// retries by opening its source again. An error the reader raises (a
    /// digest mismatch upstream) is returned as itself.
    pub async fn upload_blob(&self, repo: &str, desc: &Descriptor, reader: BlobReader) -> Result<()> {
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
    async fn start_upload(&self, repo: &str) -> Result<Url> {
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

    async fn finish_upload(&self, repo: &str, desc: &Descriptor, url: &Url, resp: reqwest::Response) -> Result<()> {
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

    // ---- the request machinery ----

    /// An absolute URL on this registry for `path` (without a leading `/`).
    async fn url(&self, path: &str) -> Result<Url> {
        let scheme = self.scheme().await?;
        Url::parse(&format!("{scheme}://{}/{path}", self.inner.api_host))
            .map_err(|e| Error::invalid(format!("cannot build a URL for {} /{path}: {e}", self.host())))
    }

    /// The `Location` of a response, resolved against the request URL.
    fn location(&self, base: &Url, headers: &HeaderMap) -> Result<Url> {
        let loc = header_str(headers, LOCATION.as_str())
            .ok_or_else(|| Error::invalid(format!("{} opened an upload session without a Location", self.host())))?;
        base.join(loc)
            .map_err(|_| Error::invalid(format!("{} sent an invalid upload Location", self.host())))
    }

    /// `https`, or for an insecure host HTTPS (unverified) when a TLS
    /// connection opens and plain HTTP when it does not; remembered once
    /// known.
    async fn scheme(&self) -> Result<&'static str> {
        if !self.inner.insecure {
            return Ok("https");
        }
        let s = self
            .inner
            .scheme
            .get_or_try_init(|| async {
                let https = format!("https://{}/v2/", self.inner.api_host);
                self.acquire().await;
                match self.inner.http.get(&https).send().await {
                    Ok(_) => Ok("https"),
                    // Nothing listens there at all: plain HTTP would be refused too.
                    Err(e) if connection_refused(&e) => Err(self.network_error(&e)),
                    Err(e) if e.is_connect() => {
                        tracing::debug!(
                            host = self.host(),
                            "HTTPS failed ({}); trying plain HTTP",
                            describe_reqwest(&e)
                        );
                        // No second probe: the first real request over
                        // plain HTTP says whether anything answers there.
                        tracing::debug!(host = self.host(), "using plain HTTP");
                        Ok("http")
                    }
                    Err(e) => Err(self.network_error(&e)),
                }
            })
            .await?;
        Ok(s)
    }

    async fn acquire(&self) {
        if let Some(l) = &self.inner.limiter {
            l.acquire().await;
        }
    }

    /// The credentials for this host, looked up once.
    async fn credentials(&self) -> Result<Option<Credentials>> {
        let c = self
            .inner
            .creds
            .get_or_try_init(|| self.inner.store.lookup(&self.inner.host))
            .await?;
        Ok(c.clone())
    }

    /// [`Self::fetch_counted`] with a budget of its own.
    async fn fetch(&self, make: impl Fn() -> Result<Req>, limit: usize, what: &str) -> Result<SmallResponse> {
        self.fetch_counted(make, limit, what, &mut 0).await
    }

    /// Sends a request built by `make`, then reads the whole body (at most
    /// `limit` bytes when successful); a connection lost while reading is
    /// retried like a failed request, from the same budget (`attempt`, see
    /// [`Self::send_counted`]).
    async fn fetch_counted(
        &self,
        make: impl Fn() -> Result<Req>,
        limit: usize,
        what: &str,
        attempt: &mut u32,
    ) -> Result<SmallResponse> {
        loop {
            let req = make()?;
            let retry = req.idempotent;
            let is_head = req.method == Method::HEAD;
            let resp = self.send_counted(req, attempt).await?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = if is_head {
                Ok(Bytes::new())
            } else if status.is_success() {
                read_limited(resp, limit, what, self.host()).await
            } else {
                Ok(read_truncated(resp, MAX_ERROR_BODY).await)
            };
            match body {
                Ok(body) => return Ok(SmallResponse { status, headers, body }),
                Err(e) if retry && e.is_transient() && *attempt < self.inner.retry.retries => {
                    let wait = self.inner.retry.delay(*attempt, None);
                    tracing::debug!(host = self.host(), "retrying in {} ms: {e}", wait.as_millis());
                    tokio::time::sleep(wait).await;
                    *attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// [`Self::send_counted`] with a budget of its own.
    async fn send(&self, req: Req) -> Result<reqwest::Response> {
        self.send_counted(req, &mut 0).await
    }

    /// Sends one logical request: rate limit, auth (answering one challenge
    /// per call), retries of transient failures — connection errors, 429
    /// and 5xx, waiting as `Retry-After` says. This is the one place such
    /// failures are retried. `attempt` counts the retries already spent on
    /// this logical request (by an earlier send whose body was cut, or a
    /// resume), so that it is never sent more than `--retries` + 1 times.
    /// Returns the response for any status but 401 and (after retries)
    /// 429/5xx, which become errors; a failure of a request whose streamed
    /// body cannot be sent again is [`Error::Cut`], for the caller to start
    /// over.
    async fn send_counted(&self, mut req: Req, attempt: &mut u32) -> Result<reqwest::Response> {
        let retry = self.inner.retry;
        let streamed = !req.replayable();
        let mut answered_challenge = false;
        loop {
            // Credentials go only to the registry itself, never to another
            // host named in a Location.
            let same_host =
                req.url.host_str() == Some(self.inner.api_hostname.as_str()) && req.url.port() == self.inner.api_port;
            let auth = if same_host {
                self.authorization(&req).await?
            } else {
                None
            };
            let mut rb = self
                .inner
                .http
                .request(req.method.clone(), req.url.clone())
                .headers(req.headers.clone());
            if let Some((value, _)) = &auth {
                rb = rb.header(AUTHORIZATION, value.clone());
            }
            match &mut req.body {
                ReqBody::Empty => {}
                ReqBody::Bytes(b) => rb = rb.body(b.clone()),
                ReqBody::Stream(s) => match s.take() {
                    Some(body) => rb = rb.body(body),
                    None => {
                        return Err(Error::Network(format!(
                            "{} {} on {} needs to be sent again, but its streamed body cannot be replayed",
                            req.method,
                            req.url.path(),
                            self.host()
                        )))
                    }
                },
            }
            self.acquire().await;
            let started = Instant::now();
            let result = rb.send().await;
            let elapsed_ms = started.elapsed().as_millis() as u64;
            let can_retry = req.idempotent && req.replayable() && *attempt < retry.retries;
            let resp = match result {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(method = %req.method, host = self.host(), path = req.url.path(), elapsed_ms, "request failed: {}", describe_reqwest(&e));
                    let err = self.network_error(&e);
                    if can_retry
                        && !e.is_builder()
                        && !e.is_redirect()
                        && !is_certificate_error(&e)
                        && !answered_plain_http(&e)
                    {
                        let wait = retry.delay(*attempt, None);
                        tracing::debug!(host = self.host(), "retrying in {} ms", wait.as_millis());
                        tokio::time::sleep(wait).await;
                        *attempt += 1;
                        continue;
                    }
                    if streamed {
                        return Err(Error::Cut(format!("{} {}: {err}", req.method, req.url.path())));
                    }
                    return Err(err);
                }
            };
            let status = resp.status();
            tracing::debug!(method = %req.method, host = self.host(), path = req.url.path(), status = status.as_u16(), elapsed_ms, "registry request");

            if status == StatusCode::UNAUTHORIZED {
                let challenge = auth::choose_challenge(
                    resp.headers()
                        .get_all(WWW_AUTHENTICATE)
                        .iter()
                        .filter_map(|v| v.to_str().ok()),
                );
                if let Some((_, Some(token))) = &auth {
                    self.inner.tokens.invalidate(&auth::scope_key(&req.scopes), token);
                }
                if !answered_challenge && req.replayable() {
                    if let Some(ch) = challenge {
                        answered_challenge = true;
                        if matches!(ch, Challenge::Basic { .. }) && self.credentials().await?.is_none() {
                            return Err(self.unauthorized(&req.subject, false));
                        }
                        if let Ok(mut g) = self.inner.challenge.lock() {
                            *g = Some(ch);
                        }
                        continue;
                    }
                }
                let had_creds = self.credentials().await?.is_some();
                return Err(self.unauthorized(&req.subject, had_creds));
            }

            if status == StatusCode::TOO_MANY_REQUESTS
                || (status.is_server_error()
                    && status != StatusCode::NOT_IMPLEMENTED
                    && status != StatusCode::HTTP_VERSION_NOT_SUPPORTED)
            {
                if can_retry {
                    let retry_after = header_str(resp.headers(), RETRY_AFTER.as_str())
                        .and_then(|v| parse_retry_after(v, SystemTime::now()));
                    let wait = retry.delay(*attempt, retry_after);
                    tracing::debug!(
                        host = self.host(),
                        status = status.as_u16(),
                        "retrying in {} ms",
                        wait.as_millis()
                    );
                    drop(resp);
                    tokio::time::sleep(wait).await;
                    *attempt += 1;
                    continue;
                }
                let method = req.method.clone();
                let url = req.url.clone();
                let body = read_truncated(resp, MAX_ERROR_BODY).await;
                let err = self.status_error(&method, &url, &req.subject, status, &body);
                if streamed {
                    return Err(Error::Cut(err.to_string()));
                }
                return Err(err);
            }
            return Ok(resp);
        }
    }

    /// The `Authorization` header for a request, when the host asked for one
    /// (with the bearer token sent, to invalidate it if refused).
    async fn authorization(&self, req: &Req) -> Result<Option<(HeaderValue, Option<String>)>> {
        let challenge = self.inner.challenge.lock().ok().and_then(|g| g.clone());
        match challenge {
            None => Ok(None),
            Some(Challenge::Basic { .. }) => match self.credentials().await? {
                Some(Credentials::Basic { username, password }) => Ok(Some((basic_header(&username, &password)?, None))),
                Some(Credentials::IdentityToken { .. }) => Err(Error::Unauthorized(format!(
                    "{} asks for a user name and password, but the stored credentials are an identity token: use --username/--password",
                    self.host()
                ))),
                None => Ok(None),
            },
            Some(Challenge::Bearer { realm, service, .. }) => {
                let token = self.token(&req.scopes, &req.subject, &realm, service.as_deref()).await?;
                let mut v = HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| Error::invalid(format!("the token service of {} sent a token that is not a valid header", self.host())))?;
                v.set_sensitive(true);
                Ok(Some((v, Some(token))))
            }
        }
    }

    /// A bearer token for `scopes`: cached, or fetched by one task while
    /// the others wait.
    async fn token(&self, scopes: &[String], subject: &str, realm: &str, service: Option<&str>) -> Result<String> {
        let key = auth::scope_key(scopes);
        let slot = self.inner.tokens.slot(&key);
        let mut guard = slot.lock().await;
        if let Some(t) = guard.as_ref().filter(|t| t.is_fresh()) {
            return Ok(t.value.clone());
        }
        let t = self.fetch_token(scopes, subject, realm, service).await?;
        let value = t.value.clone();
        *guard = Some(t);
        Ok(value)
    }

    /// Asks the token service at `realm` for a token.
    async fn fetch_token(&self, scopes: &[String], subject: &str, realm: &str, service: Option<&str>) -> Result<Token> {
        let realm_url = Url::parse(realm)
            .ok()
            .filter(|u| matches!(u.scheme(), "https" | "http"))
            .ok_or_else(|| Error::invalid(format!("{} sent an invalid token realm {realm:?}", self.host())))?;
        let creds = self.credentials().await?;
        if creds.is_some() && realm_url.scheme() == "http" && !self.inner.insecure {
            return Err(Error::Unauthorized(format!(
                "{} wants credentials sent to {} over plain HTTP; refusing (allow it with --insecure-registry {})",
                self.host(),
                realm_url.host_str().unwrap_or(realm),
                self.host()
            )));
        }
        let mut rb;
        let method;
        match &creds {
            Some(Credentials::IdentityToken { token, .. }) => {
                let mut form = url::form_urlencoded::Serializer::new(String::new());
                form.append_pair("grant_type", "refresh_token");
                form.append_pair("client_id", "occy");
                form.append_pair("refresh_token", token);
                if let Some(s) = service {
                    form.append_pair("service", s);
                }
                form.append_pair("scope", &scopes.join(" "));
                method = Method::POST;
                rb = self
                    .inner
                    .http
                    .post(realm_url.clone())
                    .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(form.finish());
            }
            other => {
                let mut u = realm_url.clone();
                {
                    let mut q = u.query_pairs_mut();
                    if let Some(s) = service {
                        q.append_pair("service", s);
                    }
                    for s in scopes {
                        q.append_pair("scope", s);
                    }
                }
                method = Method::GET;
                rb = self.inner.http.get(u);
                if let Some(Credentials::Basic { username, password }) = other {
                    rb = rb.header(AUTHORIZATION, basic_header(username, password)?);
                }
            }
        }
        rb = rb.header(ACCEPT, "application/json");
        let mut attempt = 0;
        loop {
            let Some(this) = rb.try_clone() else {
                return Err(Error::invalid("cannot repeat a token request"));
            };
            self.acquire().await;
            let started = Instant::now();
            let result = this.send().await;
            let elapsed_ms = started.elapsed().as_millis() as u64;
            let can_retry = attempt < self.inner.retry.retries;
            match result {
                Err(e) => {
                    tracing::debug!(%method, host = realm_url.host_str().unwrap_or(""), path = realm_url.path(), elapsed_ms, "token request failed");
                    if can_retry {
                        tokio::time::sleep(self.inner.retry.delay(attempt, None)).await;
                        attempt += 1;
                        continue;
                    }
                    let host = realm_url.host_str().unwrap_or(realm);
                    return Err(Error::Network(format!(
                        "cannot reach the token service {host} of {}: {}",
                        self.host(),
                        describe_reqwest(&e)
                    )));
                }
                Ok(resp) => {
                    let status = resp.status();
                    tracing::debug!(%method, host = realm_url.host_str().unwrap_or(""), path = realm_url.path(), status = status.as_u16(), elapsed_ms, "token request");
                    if (status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()) && can_retry {
                        let retry_after = header_str(resp.headers(), RETRY_AFTER.as_str())
                            .and_then(|v| parse_retry_after(v, SystemTime::now()));
                        tokio::time::sleep(self.inner.retry.delay(attempt, retry_after)).await;
                        attempt += 1;
                        continue;
                    }
                    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                        return Err(self.unauthorized(subject, creds.is_some()));
                    }
                    if !status.is_success() {
                        let body = read_truncated(resp, MAX_ERROR_BODY).await;
                        let summary = summarize_error_body(&body);
                        return Err(Error::Registry {
                            codes: error_codes(&body),
                            method: method.to_string(),
                            url: format!(
                                "{}://{}{}",
                                realm_url.scheme(),
                                realm_url.host_str().unwrap_or(""),
                                realm_url.path()
                            ),
                            status: status.as_u16(),
                            message: if summary.is_empty() {
                                format!("the token service of {} refused a token for {subject}", self.host())
                            } else {
                                summary
                            },
                        });
                    }
                    let body = read_limited(resp, MAX_TOKEN_BODY, "a token", self.host()).await?;
                    return auth::parse_token_response(&body, Instant::now());
                }
            }
        }
    }

    fn unauthorized(&self, subject: &str, had_creds: bool) -> Error {
        if had_creds {
            Error::Unauthorized(format!(
                "{} refused the credentials for {subject} (401): check --username/--password or docker login",
                self.host()
            ))
        } else {
            Error::Unauthorized(format!(
                "{} requires credentials for {subject} (401): give --username/--password or run docker login (a repository that does not exist may also answer this way)",
                self.host()
            ))
        }
    }

    fn network_error(&self, e: &reqwest::Error) -> Error {
        if !self.inner.insecure && answered_plain_http(e) {
            // The TLS handshake got an HTTP response back: the registry
            // speaks plain HTTP, which is allowed only for hosts named.
            return Error::Network(format!(
                "{host} answered plain HTTP: add --insecure-registry {host} (or insecure: true under registries: in the sync file)",
                host = self.host()
            ));
        }
        let chain = describe_reqwest(e);
        let hint = if is_certificate_error(e) {
            format!(
                " (for a private CA use --cert-dir DIR; to skip verification for this host only, --insecure-registry {})",
                self.host()
            )
        } else {
            String::new()
        };
        if e.is_timeout() {
            Error::Network(format!("{} did not answer in time: {chain}", self.host()))
        } else if e.is_connect() {
            let hint = if hint.is_empty() {
                " (is a registry running there, and are the host and port right?)".to_string()
            } else {
                hint
            };
            Error::Network(format!("cannot reach {}: {chain}{hint}", self.host()))
        } else {
            Error::Network(format!("error talking to {}: {chain}{hint}", self.host()))
        }
    }

    /// The error for an unexpected status, with the registry's own
    /// explanation when it sent one.
    fn status_error(&self, method: &Method, url: &Url, subject: &str, status: StatusCode, body: &[u8]) -> Error {
        let summary = summarize_error_body(body);
        let codes = error_codes(body);
        match status {
            StatusCode::UNAUTHORIZED => self.unauthorized(subject, false),
            StatusCode::FORBIDDEN => Error::Unauthorized(format!(
                "{} denied access to {subject} (403){}: the credentials lack permission for this operation",
                self.host(),
                if summary.is_empty() {
                    String::new()
                } else {
                    format!(": {summary}")
                }
            )),
            _ => Error::Registry {
                method: method.to_string(),
                url: format!(
                    "{}://{}{}",
                    url.scheme(),
                    url.host_str()
                        .map(|h| match url.port() {
                            Some(p) => format!("{h}:{p}"),
                            None => h.to_string(),
                        })
                        .unwrap_or_default(),
                    url.path()
                ),
                status: status.as_u16(),
                codes,
                message: summary,
            },
        }
    }
}

impl HostState {
    fn new(host: &str, opts: &RegistryOptions) -> Result<Self> {
        let insecure = is_insecure(host, &opts.insecure_hosts);
        let api = api_host(host).to_string();
        let parsed = Url::parse(&format!("https://{api}/"))
            .map_err(|_| Error::usage(format!("invalid registry host {host:?}: expected HOST or HOST:PORT")))?;
        let api_hostname = parsed
            .host_str()
            .ok_or_else(|| Error::usage(format!("invalid registry host {host:?}: expected HOST or HOST:PORT")))?
            .to_string();
        let api_port = parsed.port();
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("occy/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(300))
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_keepalive(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::limited(10));
        if insecure {
            builder = builder.danger_accept_invalid_certs(true);
        }
        for cert in extra_roots(host, opts.cert_dir.as_deref())? {
            builder = builder.add_root_certificate(cert);
        }
        let http = builder
            .build()
            .map_err(|e| Error::Network(format!("cannot set up HTTPS for {host}: {}", error_chain(&e))))?;
        let scheme = tokio::sync::OnceCell::new();
        Ok(HostState {
            host: host.to_string(),
            api_host: api,
            api_hostname,
            api_port,
            insecure,
            http,
            scheme,
            limiter: opts.rate_limit.and_then(TokenBucket::new),
            retry: RetryPolicy::new(opts.retries),
            store: CredentialStore::from_options(opts)?,
            creds: tokio::sync::OnceCell::new(),
            challenge: Mutex::new(None),
            tokens: TokenCache::default(),
            manifests: ManifestMemo::default(),
        })
    }
}

/// Extra CA certificates: every `*.crt`/`*.pem` of `cert_dir`, or when none
/// is given, of `/etc/containers/certs.d/HOST` and `/etc/docker/certs.d/HOST`
/// (skopeo's and Docker's per-host directories).
fn extra_roots(host: &str, cert_dir: Option<&Path>) -> Result<Vec<reqwest::Certificate>> {
    let (dirs, must_exist): (Vec<PathBuf>, bool) = match cert_dir {
        Some(d) => (vec![d.to_path_buf()], true),
        None => (
            vec![
                PathBuf::from("/etc/containers/certs.d").join(host),
                PathBuf::from("/etc/docker/certs.d").join(host),
            ],
            false,
        ),
    };
    let mut out = Vec::new();
    for dir in dirs {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if !must_exist && e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("read the certificate directory", &dir, e)),
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "crt" || x == "pem"))
            .collect();
        files.sort();
        for file in files {
            let pem = std::fs::read(&file).map_err(|e| Error::io("read the certificate", &file, e))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| Error::invalid(format!("{} holds no PEM certificate", file.display())))?;
            tracing::debug!(host, file = %file.display(), count = certs.len(), "adding CA certificates");
            out.extend(certs);
        }
    }
    Ok(out)
}

/// `Authorization: Basic …`, marked sensitive.
fn basic_header(username: &str, password: &str) -> Result<HeaderValue> {
    let enc = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    let mut v = HeaderValue::from_str(&format!("Basic {enc}"))
        .map_err(|_| Error::invalid("the credentials cannot be sent in an HTTP header"))?;
    v.set_sensitive(true);
    Ok(v)
}

/// `repo:tag` or `repo@digest`.
fn manifest_name(repo: &str, reference: &str) -> String {
    if reference.contains(':') {
        format!("{repo}@{reference}")
    } else {
        format!("{repo}:{reference}")
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `url` with `name=value` added to its query.
fn with_query(url: &Url, name: &str, value: &str) -> Url {
    let mut u = url.clone();
    u.query_pairs_mut().append_pair(name, value);
    u
}

/// A reqwest error's message and causes, without its URL.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// Whether a request failed on the server's certificate (retrying won't help).
fn is_certificate_error(e: &reqwest::Error) -> bool {
    let text = describe_reqwest(e);
    text.contains("certificate") || text.contains("Certificate")
}

/// Whether a TLS handshake failed because the server answered in plain
/// HTTP: rustls reads the first bytes of `HTTP/1.1 400 …` as a TLS record
/// of an invalid content type.
fn answered_plain_http(e: &reqwest::Error) -> bool {
    describe_reqwest(e).contains("InvalidContentType")
}

/// Whether a request failed because the host refused the connection.
fn connection_refused(e: &reqwest::Error) -> bool {
    let mut cur = std::error::Error::source(e);
    while let Some(s) = cur {
        if s.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        cur = s.source();
    }
    false
}

/// A reqwest error's kind and causes, without its URL (which may carry
/// query parameters we do not want in messages).
fn describe_reqwest(e: &reqwest::Error) -> String {
    chain_of(e).to_string()
}

fn chain_of(e: &reqwest::Error) -> ChainOnly {
    let mut parts = Vec::new();
    let mut cur = std::error::Error::source(e);
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    let head = if e.is_connect() {
        "connection failed"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_body() || e.is_decode() {
        "error reading the response"
    } else if e.is_redirect() {
        "too many redirects"
    } else {
        "request failed"
    };
    ChainOnly { head, parts }
}

#[derive(Debug)]
struct ChainOnly {
    head: &'static str,
    parts: Vec<String>,
}

impl fmt::Display for ChainOnly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.head)?;
        let mut shown: Vec<&str> = Vec::new();
        for p in &self.parts {
            if p.is_empty() || shown.iter().any(|s| s.contains(p.as_str())) {
                continue;
            }
            write!(f, ": {p}")?;
            shown.push(p);
        }
        Ok(())
    }
}

impl std::error::Error for ChainOnly {}

/// Reads a body of at most `limit` bytes.
async fn read_limited(mut resp: reqwest::Response, limit: usize, what: &str, host: &str) -> Result<Bytes> {
    if let Some(len) = resp.content_length() {
        if len > limit as u64 {
            return Err(Error::invalid(format!(
                "{what} from {host} is {len} bytes, over the {limit} byte limit"
            )));
        }
    }
    let mut buf = BytesMut::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > limit {
                    return Err(Error::invalid(format!(
                        "{what} from {host} is over the {limit} byte limit"
                    )));
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(buf.freeze()),
            Err(e) => {
                return Err(Error::Network(format!(
                    "connection to {host} lost while reading {what}: {}",
                    describe_reqwest(&e)
                )))
            }
        }
    }
}

/// Reads up to `limit` bytes of a body (to explain an error); never fails.
async fn read_truncated(mut resp: reqwest::Response, limit: usize) -> Bytes {
    let mut buf = BytesMut::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = limit.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if buf.len() >= limit {
            break;
        }
    }
    buf.freeze()
}

/// Summarises a registry error body: `{"errors":[{"code","message"}]}` as
/// `CODE: message; …`, or a short plain-text body as is.
pub fn summarize_error_body(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(Deserialize)]
    struct ErrorEntry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(e) = serde_json::from_slice::<Errors>(body) {
        return e
            .errors
            .iter()
            .map(|e| match (e.code.is_empty(), e.message.is_empty()) {
                (false, false) => format!("{}: {}", e.code, e.message),
                (false, true) => e.code.clone(),
                _ => e.message.clone(),
            })
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() || text.starts_with('<') || text.starts_with('{') {
        return String::new();
    }
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 200 {
        format!("{}…", one_line.chars().take(200).collect::<String>())
    } else {
        one_line
    }
}

/// The Distribution error codes of an error body (none when it is not one).
pub fn error_codes(body: &[u8]) -> Vec<ErrorCode> {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<Entry>,
    }
    #[derive(Deserialize)]
    struct Entry {
        #[serde(default)]
        code: String,
    }
    serde_json::from_slice::<Errors>(body)
        .map(|e| {
            e.errors
                .iter()
                .filter(|e| !e.code.is_empty())
                .map(|e| ErrorCode::parse(&e.code))
                .collect()
        })
        .unwrap_or_default()
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

// ---- resumable blob streams ----

/// Passes a body stream on one chunk behind, so its last bytes go out only
/// once the stream has ended cleanly. The reader's verification fails at
/// the end of the stream; without this, a body of the announced length
/// would be sent whole before that error, and the request could not be
/// aborted.
fn hold_back_last_chunk<S>(inner: S) -> impl futures_util::Stream<Item = io::Result<Bytes>>
where
    S: futures_util::Stream<Item = io::Result<Bytes>> + Unpin,
{
    use futures_util::StreamExt;
    futures_util::stream::unfold(Some((inner, None::<Bytes>)), |state| async move {
        let (mut inner, mut held) = state?;
        loop {
            match inner.next().await {
                Some(Ok(chunk)) if chunk.is_empty() => {}
                Some(Ok(chunk)) => {
                    if let Some(previous) = held.replace(chunk) {
                        return Some((Ok(previous), Some((inner, held))));
                    }
                }
                Some(Err(e)) => return Some((Err(e), None)),
                None => return held.map(|last| (Ok(last), None)),
            }
        }
    })
}

type RawReader = Pin<Box<dyn AsyncRead + Send>>;
type OpenFuture = Pin<Box<dyn Future<Output = Result<(RawReader, u32)>> + Send>>;

enum ReaderState {
    Reading(RawReader),
    Opening(OpenFuture),
    Failed,
}

/// A blob stream that reopens the blob at the current offset (a `Range`
/// request) when the connection drops or ends early, within the GET's retry
/// budget (shared with the transport's retries of the same GET, so the blob
/// is requested at most `--retries` + 1 times). Verification is done by the
/// [`VerifyingReader`] around it.
struct ResumingReader {
    client: RegistryClient,
    repo: String,
    digest: Digest,
    size: u64,
    offset: u64,
    /// Retries of this GET spent so far.
    attempt: u32,
    state: ReaderState,
}

impl ResumingReader {
    /// Starts reopening the blob; false when the budget is spent.
    fn start_resume(&mut self, why: &str) -> bool {
        if self.attempt >= self.client.inner.retry.retries || self.offset >= self.size {
            return false;
        }
        let attempt = self.attempt;
        self.attempt += 1;
        tracing::warn!(
            "blob {} from {}/{}: {why} at byte {} of {}; resuming",
            self.digest,
            self.client.host(),
            self.repo,
            self.offset,
            self.size
        );
        let client = self.client.clone();
        let repo = self.repo.clone();
        let digest = self.digest.clone();
        let (size, offset) = (self.size, self.offset);
        let wait = client.inner.retry.delay(attempt, None);
        let mut spent = attempt + 1;
        self.state = ReaderState::Opening(Box::pin(async move {
            tokio::time::sleep(wait).await;
            let r = client.open_blob_at(&repo, &digest, size, offset, &mut spent).await?;
            Ok((r, spent))
        }));
        true
    }
}

impl AsyncRead for ResumingReader {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                ReaderState::Reading(r) => {
                    let before = buf.filled().len();
                    match r.as_mut().poll_read(cx, buf) {
                        Poll::Ready(Ok(())) => {
                            let n = (buf.filled().len() - before) as u64;
                            if n == 0 && this.offset < this.size && buf.remaining() > 0 {
                                // Ended early: resume, or fail as a cut (not a
                                // short blob, which would be read again).
                                if this.start_resume("the stream ended early") {
                                    continue;
                                }
                                this.state = ReaderState::Failed;
                                return Poll::Ready(Err(io::Error::other(format!(
                                    "blob {} from {}/{}: the stream ended at byte {} of {} and the retries are spent",
                                    this.digest,
                                    this.client.host(),
                                    this.repo,
                                    this.offset,
                                    this.size
                                ))));
                            }
                            this.offset += n;
                            return Poll::Ready(Ok(()));
                        }
                        Poll::Ready(Err(e)) => {
                            if this.start_resume(&e.to_string()) {
                                continue;
                            }
                            this.state = ReaderState::Failed;
                            return Poll::Ready(Err(e));
                        }
                        Poll::Pending => return Poll::Pending,
                    }
                }
                ReaderState::Opening(fut) => match fut.as_mut().poll(cx) {
                    Poll::Ready(Ok((r, spent))) => {
                        this.attempt = spent;
                        this.state = ReaderState::Reading(r);
                    }
                    Poll::Ready(Err(e)) => {
                        this.state = ReaderState::Failed;
                        return Poll::Ready(Err(e.into_io()));
                    }
                    Poll::Pending => return Poll::Pending,
                },
                ReaderState::Failed => {
                    return Poll::Ready(Err(io::Error::other(format!(
                        "blob {} stream already failed",
                        this.digest
                    ))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_upload_body_keeps_its_last_bytes_until_the_stream_ends_cleanly() {
        use futures_util::StreamExt;
        let chunks = |end: io::Result<Bytes>| {
            futures_util::stream::iter(vec![Ok(Bytes::from_static(b"ab")), Ok(Bytes::from_static(b"cd")), end])
        };
        // A stream whose verification fails at its end: the last chunk never goes out.
        let failing: Vec<io::Result<Bytes>> = hold_back_last_chunk(chunks(Err(io::Error::other("digest mismatch"))))
            .collect()
            .await;
        assert_eq!(failing.len(), 2);
        assert_eq!(failing[0].as_ref().unwrap(), &Bytes::from_static(b"ab"));
        assert!(failing[1].is_err());
        // A clean stream is passed on whole.
        let clean: Vec<Bytes> = hold_back_last_chunk(chunks(Ok(Bytes::from_static(b"ef"))))
            .map(|c| c.unwrap())
            .collect()
            .await;
        assert_eq!(clean, [&b"ab"[..], b"cd", b"ef"]);
    }

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

    #[test]
    fn host_mapping_and_insecure_matching() {
        assert_eq!(api_host("docker.io"), "registry-1.docker.io");
        assert_eq!(api_host("index.docker.io"), "registry-1.docker.io");
        assert_eq!(api_host("quay.io"), "quay.io");
        let list = vec!["127.0.0.1:5000".to_string(), "reg.local".to_string()];
        assert!(is_insecure("127.0.0.1:5000", &list));
        assert!(!is_insecure("127.0.0.1:5001", &list));
        assert!(!is_insecure("127.0.0.1", &list));
        assert!(is_insecure("reg.local", &list));
        assert!(is_insecure("reg.local:8443", &list));
        assert!(!is_insecure("other.local", &list));
        assert!(is_insecure("x:1", &["http://x:1/".to_string()]));
        assert_eq!(host_without_port("[::1]:5000"), "::1");
        assert_eq!(host_without_port("a.b:80"), "a.b");
    }

    #[test]
    fn error_bodies_are_summarised() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}},{"code":"DENIED","message":""}]}"#;
        assert_eq!(summarize_error_body(body), "MANIFEST_UNKNOWN: manifest unknown; DENIED");
        assert_eq!(summarize_error_body(b"  upstream\n timed out "), "upstream timed out");
        assert_eq!(summarize_error_body(b"<html>nope</html>"), "");
        assert_eq!(summarize_error_body(b""), "");
        assert!(summarize_error_body("x".repeat(500).as_bytes()).chars().count() <= 201);
    }

    #[test]
    fn manifest_names() {
        assert_eq!(manifest_name("a/b", "v1"), "a/b:v1");
        let d = Digest::of(b"x");
        assert_eq!(manifest_name("a/b", d.as_str()), format!("a/b@{d}"));
    }

    #[test]
    fn pool_shares_per_host_and_options() {
        let opts = RegistryOptions::default();
        let a = RegistryClient::for_host("pool-test.example:5000", &opts).unwrap();
        let b = RegistryClient::for_host("pool-test.example:5000", &opts).unwrap();
        assert!(Arc::ptr_eq(&a.inner, &b.inner));
        let other = RegistryOptions {
            retries: 7,
            ..Default::default()
        };
        let c = RegistryClient::for_host("pool-test.example:5000", &other).unwrap();
        assert!(!Arc::ptr_eq(&a.inner, &c.inner));
        assert!(RegistryClient::for_host("bad/host", &opts).is_err());
        assert!(RegistryClient::for_host("", &opts).is_err());
        let with_pw = RegistryOptions {
            username: Some("u".into()),
            password: Some("topsecret".into()),
            ..Default::default()
        };
        let d = RegistryClient::for_host("pool-test.example:5000", &with_pw).unwrap();
        assert!(!format!("{d:?}").contains("topsecret"));
    }
}
