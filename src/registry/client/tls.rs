//! Building a host's HTTP client: TLS settings, the system CA store (read
//! once per process, and only for a host whose certificate is verified),
//! extra CA certificates from `--cert-dir` or the per-host `certs.d`
//! directories, insecure hosts, and the scheme probe that detects a registry
//! answering plain HTTP (its answer remembered in the cache directory, so a
//! warm run does not probe again).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use url::Url;

use super::errors::{describe_reqwest, error_chain};
use super::{api_host, HostState, ManifestMemo, RegistryClient};
use crate::error::{Error, Result};
use crate::registry::auth::TokenCache;
use crate::registry::credentials::CredentialStore;
use crate::registry::pace::HostPace;
use crate::registry::retry::RetryPolicy;
use crate::registry::RegistryOptions;

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

pub(super) fn host_without_port(host: &str) -> &str {
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
    /// `https`, or for an insecure host HTTPS (unverified) when a TLS
    /// connection opens and plain HTTP when it does not; remembered once
    /// known.
    pub(super) async fn scheme(&self) -> Result<&'static str> {
        if !self.inner.insecure {
            return Ok("https");
        }
        if let Some(s) = self.inner.remembered_scheme.current() {
            return Ok(s);
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
        self.inner.remembered_scheme.remember(s);
        Ok(s)
    }

    /// After a request to an insecure host failed on the connection: when
    /// its scheme came from an earlier run's memory, forget it and probe
    /// again (the host may have moved between HTTPS and plain HTTP since).
    /// Returns the scheme to send the request again with, or `None` when
    /// the scheme was this run's own probe (nothing to learn again).
    pub(super) async fn reprobe_after_failure(&self) -> Result<Option<&'static str>> {
        if !self.inner.insecure || !self.inner.remembered_scheme.forget() {
            return Ok(None);
        }
        tracing::debug!(host = self.host(), "the remembered scheme failed; probing again");
        self.scheme().await.map(Some)
    }
}

impl HostState {
    pub(super) fn new(host: &str, opts: &RegistryOptions) -> Result<Self> {
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
        // reqwest would read the system CA store for every client it
        // builds; it is read here once per process instead, and not at all
        // for an insecure host (its certificate is not verified).
        builder = builder.tls_built_in_root_certs(false);
        if insecure {
            builder = builder.danger_accept_invalid_certs(true);
        } else {
            for cert in system_roots() {
                builder = builder.add_root_certificate(cert.clone());
            }
        }
        for cert in extra_roots(host, opts.cert_dir.as_deref())? {
            builder = builder.add_root_certificate(cert);
        }
        let http = builder
            .build()
            .map_err(|e| Error::Network(format!("cannot set up HTTPS for {host}: {}", error_chain(&e))))?;
        let scheme = tokio::sync::OnceCell::new();
        let remembered_scheme = SchemeMemory::of(host, insecure, opts.scheme_memory.as_deref());
        Ok(HostState {
            host: host.to_string(),
            api_host: api,
            api_hostname,
            api_port,
            insecure,
            http,
            scheme,
            remembered_scheme,
            pace: HostPace::new(
                host,
                opts.rate_limit,
                opts.scheme_memory
                    .as_deref()
                    .map(|d| crate::registry::pace::memory_file(d, host)),
            ),
            retry: RetryPolicy::new(opts.retries),
            store: CredentialStore::from_options(opts)?,
            creds: tokio::sync::OnceCell::new(),
            challenge: Mutex::new(None),
            tokens: TokenCache::default(),
            token_realms: opts.token_realms.clone(),
            withheld_from: Mutex::new(None),
            manifests: ManifestMemo::default(),
            quota: Default::default(),
            referrers_api: tokio::sync::OnceCell::new(),
        })
    }
}

/// The system's CA certificates (the bundle and directory OpenSSL would
/// use, `SSL_CERT_FILE`/`SSL_CERT_DIR` honoured), read on the first call
/// and kept for the process. Certificates rustls cannot use as trust
/// anchors are left out, as reqwest itself does; a machine without a CA
/// store gets none, and a TLS connection then fails on the certificate.
fn system_roots() -> &'static [reqwest::Certificate] {
    static ROOTS: OnceLock<Vec<reqwest::Certificate>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let loaded = rustls_native_certs::load_native_certs();
        for e in &loaded.errors {
            tracing::debug!("reading the system CA store: {e}");
        }
        let mut usable = rustls::RootCertStore::empty();
        let roots: Vec<reqwest::Certificate> = loaded
            .certs
            .into_iter()
            .filter(|der| usable.add(der.clone()).is_ok())
            .filter_map(|der| reqwest::Certificate::from_der(der.as_ref()).ok())
            .collect();
        tracing::debug!(count = roots.len(), "system CA certificates");
        roots
    })
}

/// What an insecure host speaks (`https` or plain `http`), remembered
/// across runs in a small file per host under the cache directory's
/// `hosts/`, so that a warm run sends no probe. Forgotten when a request
/// over the remembered scheme fails on the connection, then probed again.
pub(super) struct SchemeMemory {
    /// The file, when the cache is on and the host insecure.
    file: Option<PathBuf>,
    /// What the file said at start-up.
    known: Option<&'static str>,
    /// Set once the remembered scheme failed: probe instead.
    stale: AtomicBool,
}

impl SchemeMemory {
    pub(super) fn of(host: &str, insecure: bool, dir: Option<&Path>) -> Self {
        let file = dir.filter(|_| insecure).map(|d| d.join(scheme_file_name(host)));
        let known = file.as_deref().and_then(|f| {
            let text = std::fs::read_to_string(f).ok()?;
            match text.trim() {
                "http" => Some("http"),
                "https" => Some("https"),
                _ => None,
            }
        });
        SchemeMemory {
            file,
            known,
            stale: AtomicBool::new(false),
        }
    }

    /// The remembered scheme, unless it failed in this run.
    fn current(&self) -> Option<&'static str> {
        self.known.filter(|_| !self.stale.load(Ordering::Relaxed))
    }

    /// Stops using the remembered scheme and deletes it; whether there was
    /// one in use.
    fn forget(&self) -> bool {
        if self.current().is_none() {
            return false;
        }
        self.stale.store(true, Ordering::Relaxed);
        if let Some(f) = &self.file {
            let _ = std::fs::remove_file(f);
        }
        true
    }

    /// Writes what a probe found, when it differs from the file (temp name
    /// and rename; a cache that cannot be written is only a missed saving).
    fn remember(&self, scheme: &'static str) {
        let Some(file) = &self.file else { return };
        if self.known == Some(scheme) && !self.stale.load(Ordering::Relaxed) {
            return;
        }
        let write = || -> io::Result<()> {
            let dir = file.parent().unwrap_or(Path::new("."));
            std::fs::create_dir_all(dir)?;
            let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
            io::Write::write_all(&mut tmp, format!("{scheme}\n").as_bytes())?;
            tmp.persist(file).map_err(|e| e.error)?;
            Ok(())
        };
        if let Err(e) = write() {
            tracing::debug!(file = %file.display(), "cannot remember the scheme: {e}");
        }
    }
}

/// A file name for `host` (`host:port`, `[v6]:port`) that every file
/// system accepts.
fn scheme_file_name(host: &str) -> String {
    host.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Extra CA certificates: every `*.crt`/`*.pem` of `cert_dir`, or when none
/// is given, of `/etc/containers/certs.d/HOST` and `/etc/docker/certs.d/HOST`
/// (skopeo's and Docker's per-host directories).
pub(super) fn extra_roots(host: &str, cert_dir: Option<&Path>) -> Result<Vec<reqwest::Certificate>> {
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

/// Whether a request failed on the server's certificate (retrying won't help).
pub(super) fn is_certificate_error(e: &reqwest::Error) -> bool {
    let text = describe_reqwest(e);
    text.contains("certificate") || text.contains("Certificate")
}

/// Whether a TLS handshake failed because the server answered in plain
/// HTTP: rustls reads the first bytes of `HTTP/1.1 400 …` as a TLS record
/// of an invalid content type.
pub(super) fn answered_plain_http(e: &reqwest::Error) -> bool {
    describe_reqwest(e).contains("InvalidContentType")
}

/// Whether a request failed because the host refused the connection.
pub(super) fn connection_refused(e: &reqwest::Error) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
