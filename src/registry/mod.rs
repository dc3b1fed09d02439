//! The Distribution-API client: auth (anonymous, basic, bearer; docker
//! config.json, credential helpers, containers auth.json), TLS and insecure
//! hosts, retries with backoff honouring `Retry-After`, per-host pacing (adaptive
//! concurrency per kind of request, a rate learned from 429s, `--rate-limit`),
//! manifests, streamed blobs, tag listing and the catalog.

pub mod auth;
pub mod client;
pub mod credentials;
pub mod pace;
pub mod rate_limit;
pub mod retry;
pub mod stats;

#[cfg(test)]
mod client_tests;

pub use client::RegistryClient;
pub use credentials::{CredentialStore, Credentials};

use std::fmt;
use std::path::PathBuf;

/// Settings for talking to registries, shared by every client.
#[derive(Clone, Default)]
pub struct RegistryOptions {
    /// `--username` / `OCCY_USERNAME`.
    pub username: Option<String>,
    /// `--password` / `OCCY_PASSWORD`. Never printed.
    pub password: Option<String>,
    /// `--authfile` / `REGISTRY_AUTH_FILE`: a containers auth.json.
    pub authfile: Option<PathBuf>,
    /// Hosts (`host` or `host:port`) allowed plain HTTP or an unverified certificate.
    pub insecure_hosts: Vec<String>,
    /// A directory of extra CA certificates (`*.crt`, `*.pem`).
    pub cert_dir: Option<PathBuf>,
    /// Retries after the first attempt for transient failures.
    pub retries: u32,
    /// Requests per second per registry host (None: unlimited).
    pub rate_limit: Option<f64>,
    /// `--token-realm`: token service hosts that may get a registry's
    /// credentials though they are not its host (see
    /// [`auth::realm_may_get_credentials`]).
    pub token_realms: Vec<String>,
    /// Where what insecure hosts speak (HTTPS or plain HTTP) is remembered
    /// between runs (the cache directory's `hosts/`; None: probe each run).
    pub scheme_memory: Option<PathBuf>,
}

impl fmt::Debug for RegistryOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryOptions")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("authfile", &self.authfile)
            .field("insecure_hosts", &self.insecure_hosts)
            .field("cert_dir", &self.cert_dir)
            .field("retries", &self.retries)
            .field("rate_limit", &self.rate_limit)
            .field("token_realms", &self.token_realms)
            .field("scheme_memory", &self.scheme_memory)
            .finish()
    }
}
