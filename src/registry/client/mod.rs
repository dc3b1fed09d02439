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
//!
//! This module holds the client, its per-host shared state and the pool;
//! the work is split by job: `transport` (the request loop), `endpoints`
//! (the API calls), `body` (reading and streaming bodies), `errors` (what a
//! failure says), `referrers` (what refers to a manifest, by the API or
//! the referrers tag) and `tls` (building the HTTP client, the scheme probe).

mod api;
mod body;
mod endpoints;
mod errors;
mod referrers;
mod tls;
mod transport;

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock};

use reqwest::header::HeaderMap;
use url::Url;

use crate::error::{Error, Result};
use crate::image::{Digest, RawManifest};
use crate::registry::auth::{Challenge, TokenCache};
use crate::registry::credentials::{CredentialStore, Credentials};
use crate::registry::pace::{HostPace, PaceSummary};
use crate::registry::rate_limit::{PullQuota, QuotaTracker};
use crate::registry::retry::RetryPolicy;
use crate::registry::RegistryOptions;

pub use endpoints::{parse_link_next, CHUNKED_UPLOAD_MIN, UPLOAD_CHUNK};
pub use errors::{error_codes, summarize_error_body};
pub use tls::is_insecure;

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
    /// What an earlier run's probe found (insecure hosts, cache on).
    remembered_scheme: tls::SchemeMemory,
    /// How many requests of each kind at once, and how many a second.
    pace: Arc<HostPace>,
    retry: RetryPolicy,
    store: CredentialStore,
    creds: tokio::sync::OnceCell<Option<Credentials>>,
    challenge: Mutex<Option<Challenge>>,
    tokens: TokenCache,
    /// Token service hosts listed with `--token-realm`.
    token_realms: Vec<String>,
    /// The token service host the credentials were withheld from (it is
    /// not this registry's host), once that happened: said in errors.
    withheld_from: Mutex<Option<String>>,
    manifests: ManifestMemo,
    /// The pull quota the host announces, and the manifest GETs sent.
    quota: QuotaTracker,
    /// Whether the host offers the OCI referrers API, learned by the first
    /// lookup while the others wait (a registry without it costs one 404).
    referrers_api: tokio::sync::OnceCell<bool>,
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

    fn clear(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            *entries = MemoEntries::default();
        }
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

type Pool = Mutex<HashMap<(String, u64), Arc<HostState>>>;

/// The process-wide pool: one [`HostState`] per host and settings.
fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(Default::default)
}

/// Every host's shared state in the pool now (taken out of the lock).
fn pooled() -> Vec<Arc<HostState>> {
    match pool().lock() {
        Ok(g) => g.values().cloned().collect(),
        Err(p) => p.into_inner().values().cloned().collect(),
    }
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
    let mut realms = opts.token_realms.clone();
    realms.sort();
    realms.hash(&mut h);
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

    /// The pull quota the host's latest answer announced
    /// (`RateLimit-Limit` / `RateLimit-Remaining`), if it sends one.
    pub fn pull_quota(&self) -> Option<PullQuota> {
        self.inner.quota.latest()
    }

    /// What this host's pacing settled at (None: nothing was asked of it).
    pub fn pace_summary(&self) -> Option<PaceSummary> {
        self.inner.pace.summary()
    }

    /// What every host of this process settled at (for `-v`), each host
    /// once.
    pub fn pace_summaries() -> Vec<PaceSummary> {
        let map = match pool().lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let mut out: Vec<PaceSummary> = map.values().filter_map(|s| s.pace.summary()).collect();
        out.sort_by(|a, b| a.host.cmp(&b.host));
        out.dedup_by(|a, b| a.host == b.host);
        out
    }

    /// Remembers what every host of this process settled at, in the cache
    /// directory, for the next run to start from.
    pub fn remember_paces() {
        for s in pooled() {
            s.pace.remember();
        }
    }

    /// Lets go of the manifests every host of this process has read (a plan
    /// that is only shown reads none of them again: at 10,000 targets they
    /// held 8 of its 50 MiB of heap); later reads start a new memo.
    pub fn forget_manifests() {
        for s in pooled() {
            s.manifests.clear();
        }
    }

    /// Manifest GETs sent to the host by this process (what Docker Hub
    /// counts as pulls; HEADs are not counted).
    pub fn pulls(&self) -> u64 {
        self.inner.quota.pulls()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
