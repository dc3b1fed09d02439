//! Where registry credentials come from, in this order: `--username` /
//! `--password`; a containers `auth.json` (`--authfile`, `$REGISTRY_AUTH_FILE`,
//! then podman's default locations); Docker's `config.json`
//! (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`). In each file a
//! host's `credHelpers` entry wins, then its `auths` entry (`auth` =
//! base64 `user:pass`, or `username`/`password`, or `identitytoken`), then the
//! file's `credsStore`; helpers run as `docker-credential-NAME get` with the
//! server on stdin. Secrets never reach logs, errors or `Debug` output.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use super::RegistryOptions;
use crate::error::{Error, Result};

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// A user name and password (or a personal access token used as one).
    Basic { username: String, password: String },
    /// An OAuth2 refresh token (Docker's `identitytoken`), exchanged at the
    /// token realm for access tokens.
    IdentityToken { username: Option<String>, token: String },
}

impl Credentials {
    /// The user name, for messages.
    pub fn username(&self) -> Option<&str> {
        match self {
            Credentials::Basic { username, .. } => Some(username),
            Credentials::IdentityToken { username, .. } => username.as_deref(),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Credentials::IdentityToken { username, .. } => f
                .debug_struct("IdentityToken")
                .field("username", username)
                .field("token", &"<redacted>")
                .finish(),
        }
    }
}

/// The places to look for credentials, resolved once from the options and
/// the environment.
#[derive(Clone)]
pub struct CredentialStore {
    explicit: Option<Credentials>,
    /// Config files in lookup order, each with whether it must exist.
    files: Vec<(PathBuf, bool)>,
    /// Prefix of credential helper programs (`docker-credential-`).
    helper_prefix: String,
}

impl fmt::Debug for CredentialStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialStore")
            .field("explicit", &self.explicit)
            .field("files", &self.files)
            .field("helper_prefix", &self.helper_prefix)
            .finish()
    }
}

/// Docker Hub's many names; credentials for one serve them all.
const DOCKER_HUB_HOSTS: [&str; 3] = ["docker.io", "index.docker.io", "registry-1.docker.io"];
/// The server URL `docker login` stores Docker Hub credentials under.
const DOCKER_HUB_SERVER: &str = "https://index.docker.io/v1/";

/// Whether `host` is one of Docker Hub's names.
pub fn is_docker_hub(host: &str) -> bool {
    DOCKER_HUB_HOSTS.contains(&host)
}

impl CredentialStore {
    /// A store with explicit credentials, config files to read in order
    /// (`(path, must_exist)`) and the credential-helper program prefix.
    pub fn new(explicit: Option<Credentials>, files: Vec<(PathBuf, bool)>, helper_prefix: impl Into<String>) -> Self {
        CredentialStore {
            explicit,
            files,
            helper_prefix: helper_prefix.into(),
        }
    }

    /// The store the options and the environment describe.
    pub fn from_options(opts: &RegistryOptions) -> Result<Self> {
        let explicit = match (&opts.username, &opts.password) {
            (Some(u), Some(p)) => Some(Credentials::Basic {
                username: u.clone(),
                password: p.clone(),
            }),
            (None, None) => None,
            (Some(u), None) => {
                return Err(Error::usage(format!(
                    "--username {u} was given without a password: add --password (or set OCCY_PASSWORD)"
                )))
            }
            (None, Some(_)) => {
                return Err(Error::usage(
                    "a password was given without a user name: add --username (or set OCCY_USERNAME)",
                ))
            }
        };
        let mut files = Vec::new();
        let authfile = opts.authfile.clone().or_else(|| {
            std::env::var_os("REGISTRY_AUTH_FILE")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        });
        match authfile {
            Some(p) => files.push((p, true)),
            None => {
                if let Some(run) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
                    files.push((PathBuf::from(run).join("containers/auth.json"), false));
                }
                if let Some(home) = home_dir() {
                    files.push((home.join(".config/containers/auth.json"), false));
                }
            }
        }
        match std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
            Some(dir) => files.push((PathBuf::from(dir).join("config.json"), false)),
            None => {
                if let Some(home) = home_dir() {
                    files.push((home.join(".docker/config.json"), false));
                }
            }
        }
        Ok(Self::new(explicit, files, "docker-credential-"))
    }

    /// Finds credentials for `host` (as the user wrote it, `host[:port]`).
    /// `Ok(None)` means "go anonymous".
    pub async fn lookup(&self, host: &str) -> Result<Option<Credentials>> {
        if let Some(c) = &self.explicit {
            tracing::debug!(host, "using the credentials given on the command line");
            return Ok(Some(c.clone()));
        }
        for (path, must_exist) in &self.files {
            let Some(file) = read_config(path, *must_exist)? else {
                continue;
            };
            if let Some(c) = self.lookup_in(&file, path, host).await? {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }

    /// Looks `host` up in one parsed config file.
    async fn lookup_in(&self, file: &ConfigFile, path: &Path, host: &str) -> Result<Option<Credentials>> {
        let hosts: Vec<&str> = if is_docker_hub(host) {
            DOCKER_HUB_HOSTS.to_vec()
        } else {
            vec![host]
        };
        let server = if is_docker_hub(host) { DOCKER_HUB_SERVER } else { host };
        // 1. A helper for this host.
        if let Some(helper) = file
            .cred_helpers
            .iter()
            .find(|(k, _)| key_host(k).is_some_and(|h| hosts.contains(&h)))
            .map(|(_, v)| v)
        {
            if let Some(c) = self.run_helper(helper, server).await {
                tracing::debug!(host, helper, "using credentials from a credential helper");
                return Ok(Some(c));
            }
        }
        // 2. An inline entry, preferring an exact key over a normalised one.
        let mut entries: Vec<(&String, &AuthEntry)> = file
            .auths
            .iter()
            .filter(|(k, _)| key_host(k).is_some_and(|h| hosts.contains(&h)))
            .collect();
        entries.sort_by_key(|(k, _)| !hosts.contains(&k.as_str()));
        for (key, entry) in entries {
            if let Some(c) = entry.credentials(path, key)? {
                tracing::debug!(host, file = %path.display(), "using credentials from a config file");
                return Ok(Some(c));
            }
        }
        // 3. The file's default store.
        if let Some(store) = file.creds_store.as_deref().filter(|s| !s.is_empty()) {
            if let Some(c) = self.run_helper(store, server).await {
                tracing::debug!(host, helper = store, "using credentials from the credentials store");
                return Ok(Some(c));
            }
        }
        Ok(None)
    }

    /// Runs `docker-credential-NAME get` for `server`. A helper that is
    /// missing, fails or knows nothing yields None (with a warning for the
    /// first two), so a stale `credsStore` does not stop anonymous pulls.
    async fn run_helper(&self, name: &str, server: &str) -> Option<Credentials> {
        if name.is_empty() || name.contains('/') || name.contains(std::path::MAIN_SEPARATOR) {
            tracing::warn!("ignoring credential helper {name:?}: not a helper name");
            return None;
        }
        let program = format!("{}{}", self.helper_prefix, name);
        let child = tokio::process::Command::new(&program)
            .arg("get")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(
                    "cannot run credential helper {program} for {server}: {e}; continuing without its credentials"
                );
                return None;
            }
        };
        if let Some(mut stdin) = child.stdin.take() {
            // A helper that exits early closes its stdin; its exit status tells.
            let _ = stdin.write_all(server.as_bytes()).await;
            drop(stdin);
        }
        let out = match tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => {
                tracing::warn!("credential helper {program} for {server} failed: {e}");
                return None;
            }
            Err(_) => {
                tracing::warn!("credential helper {program} for {server} did not answer within 60 s");
                return None;
            }
        };
        if !out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout).to_lowercase()
                + &String::from_utf8_lossy(&out.stderr).to_lowercase();
            if !text.contains("not found") {
                tracing::warn!("credential helper {program} for {server} exited with {}", out.status);
            }
            return None;
        }
        parse_helper_output(&out.stdout, &program, server)
    }
}

/// Parses a helper's `{"Username": …, "Secret": …}` answer.
fn parse_helper_output(stdout: &[u8], program: &str, server: &str) -> Option<Credentials> {
    #[derive(Deserialize)]
    struct HelperAnswer {
        #[serde(rename = "Username", default)]
        username: String,
        #[serde(rename = "Secret", default)]
        secret: String,
    }
    let answer: HelperAnswer = match serde_json::from_slice(stdout) {
        Ok(a) => a,
        Err(_) => {
            // Never echo the output: it may hold the secret.
            tracing::warn!("credential helper {program} for {server} gave an answer that is not the expected JSON");
            return None;
        }
    };
    if answer.secret.is_empty() {
        return None;
    }
    if answer.username == "<token>" {
        return Some(Credentials::IdentityToken {
            username: None,
            token: answer.secret,
        });
    }
    Some(Credentials::Basic {
        username: answer.username,
        password: answer.secret,
    })
}

/// A Docker `config.json` or containers `auth.json` (same shape).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigFile {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, AuthEntry>,
    #[serde(default)]
    cred_helpers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    creds_store: Option<String>,
}

#[derive(Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

impl fmt::Debug for AuthEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthEntry")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl AuthEntry {
    fn credentials(&self, path: &Path, key: &str) -> Result<Option<Credentials>> {
        let non_empty = |s: &Option<String>| s.clone().filter(|v| !v.is_empty());
        let (mut username, mut password) = (non_empty(&self.username), non_empty(&self.password));
        if let Some(auth) = non_empty(&self.auth) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "{}: the \"auth\" entry for {key} is not base64 of user:password",
                        path.display()
                    ))
                })?;
            let Some((u, p)) = decoded.split_once(':') else {
                return Err(Error::invalid(format!(
                    "{}: the \"auth\" entry for {key} is not base64 of user:password (no colon)",
                    path.display()
                )));
            };
            username = Some(u.to_string()).filter(|u| !u.is_empty()).or(username);
            password = Some(p.to_string()).filter(|p| !p.is_empty()).or(password);
        }
        if let Some(token) = non_empty(&self.identitytoken) {
            return Ok(Some(Credentials::IdentityToken { username, token }));
        }
        match (username, password) {
            (Some(username), Some(password)) => Ok(Some(Credentials::Basic { username, password })),
            _ => Ok(None),
        }
    }
}

/// Reads and parses a config file; a missing optional file is `None`.
fn read_config(path: &Path, must_exist: bool) -> Result<Option<ConfigFile>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => return Ok(None),
        Err(e) => return Err(Error::io("read the registry credentials file", path, e)),
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Some(ConfigFile::default()));
    }
    // serde_json's messages may quote values (a secret): give the position only.
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        Error::invalid(format!(
            "{} is not a valid credentials file: malformed JSON or unexpected value at line {}, column {}",
            path.display(),
            e.line(),
            e.column()
        ))
    })
}

/// The host a key of `auths`/`credHelpers` stands for: `host`,
/// `https://host`, `http://host`, `https://host/v1/`. Keys naming a
/// namespace (`host/org`) are not matched.
fn key_host(key: &str) -> Option<&str> {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let (host, path) = match rest.split_once('/') {
        Some((h, p)) => (h, p),
        None => (rest, ""),
    };
    let path = path.trim_end_matches('/');
    (path.is_empty() || path == "v1" || path == "v2").then_some(host)
}

fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME").filter(|v| !v.is_empty()).map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap();
        p
    }

    /// A freshly written script can briefly fail to run with ETXTBSY while
    /// another test thread forks; wait until it runs.
    fn wait_executable(path: &Path) {
        for _ in 0..100 {
            match std::process::Command::new(path).arg("probe").output() {
                Err(e) if e.raw_os_error() == Some(26) => std::thread::sleep(Duration::from_millis(20)),
                _ => return,
            }
        }
    }

    fn basic(u: &str, p: &str) -> Credentials {
        Credentials::Basic {
            username: u.into(),
            password: p.into(),
        }
    }

    #[test]
    fn key_forms() {
        assert_eq!(key_host("quay.io"), Some("quay.io"));
        assert_eq!(key_host("https://quay.io"), Some("quay.io"));
        assert_eq!(key_host("http://localhost:5000/"), Some("localhost:5000"));
        assert_eq!(key_host("https://index.docker.io/v1/"), Some("index.docker.io"));
        assert_eq!(key_host("quay.io/org"), None);
    }

    #[tokio::test]
    async fn docker_config_auths() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = write(
            dir.path(),
            "config.json",
            &format!(
                r#"{{"auths": {{
                    "https://index.docker.io/v1/": {{"auth": "{}"}},
                    "registry.example:5000": {{"username": "bob", "password": "s3cret"}},
                    "https://ghcr.io": {{"auth": "{}"}},
                    "token.example": {{"auth": "{}", "identitytoken": "refresh-me"}},
                    "empty.example": {{}}
                }}}}"#,
                b64("hubuser:hubpass"),
                b64("gh:pat:with:colons"),
                b64("tok:")
            ),
        );
        let store = CredentialStore::new(None, vec![(cfg, true)], "no-such-helper-");
        assert_eq!(
            store.lookup("docker.io").await.unwrap(),
            Some(basic("hubuser", "hubpass"))
        );
        assert_eq!(
            store.lookup("registry-1.docker.io").await.unwrap(),
            Some(basic("hubuser", "hubpass"))
        );
        assert_eq!(
            store.lookup("registry.example:5000").await.unwrap(),
            Some(basic("bob", "s3cret"))
        );
        assert_eq!(store.lookup("registry.example").await.unwrap(), None);
        assert_eq!(
            store.lookup("ghcr.io").await.unwrap(),
            Some(basic("gh", "pat:with:colons"))
        );
        assert_eq!(
            store.lookup("token.example").await.unwrap(),
            Some(Credentials::IdentityToken {
                username: Some("tok".into()),
                token: "refresh-me".into()
            })
        );
        assert_eq!(store.lookup("empty.example").await.unwrap(), None);
        assert_eq!(store.lookup("elsewhere.example").await.unwrap(), None);
    }

    #[tokio::test]
    async fn order_explicit_then_authfile_then_docker_config() {
        let dir = tempfile::tempdir().unwrap();
        let authfile = write(
            dir.path(),
            "auth.json",
            &format!(
                r#"{{"auths": {{"a.example": {{"auth": "{}"}}}}}}"#,
                b64("from:authfile")
            ),
        );
        let docker = write(
            dir.path(),
            "config.json",
            &format!(
                r#"{{"auths": {{"a.example": {{"auth": "{}"}}, "b.example": {{"auth": "{}"}}}}}}"#,
                b64("from:docker"),
                b64("b:docker")
            ),
        );
        let files = vec![(authfile, true), (docker, false)];
        let store = CredentialStore::new(None, files.clone(), "x-");
        assert_eq!(
            store.lookup("a.example").await.unwrap(),
            Some(basic("from", "authfile"))
        );
        assert_eq!(store.lookup("b.example").await.unwrap(), Some(basic("b", "docker")));
        let store = CredentialStore::new(Some(basic("cli", "pw")), files, "x-");
        assert_eq!(store.lookup("a.example").await.unwrap(), Some(basic("cli", "pw")));
    }

    #[tokio::test]
    async fn missing_and_malformed_files() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.json");
        let store = CredentialStore::new(None, vec![(missing.clone(), false)], "x-");
        assert_eq!(store.lookup("a.example").await.unwrap(), None);
        let store = CredentialStore::new(None, vec![(missing, true)], "x-");
        let err = store.lookup("a.example").await.unwrap_err().to_string();
        assert!(err.contains("nope.json"), "{err}");

        let bad = write(
            dir.path(),
            "bad.json",
            r#"{"auths": {"a.example": {"auth": "!!notbase64!!"}}}"#,
        );
        let store = CredentialStore::new(None, vec![(bad, true)], "x-");
        let err = store.lookup("a.example").await.unwrap_err().to_string();
        assert!(err.contains("bad.json") && err.contains("a.example"), "{err}");
        assert!(!err.contains("notbase64"), "{err}");

        let leaky = write(dir.path(), "leaky.json", r#"{"auths": {"a.example": "sup3rsecret"}}"#);
        let store = CredentialStore::new(None, vec![(leaky, true)], "x-");
        let err = store.lookup("a.example").await.unwrap_err().to_string();
        assert!(err.contains("leaky.json") && !err.contains("sup3rsecret"), "{err}");

        let garbage = write(dir.path(), "garbage.json", "{not json");
        let store = CredentialStore::new(None, vec![(garbage, true)], "x-");
        assert!(store.lookup("a.example").await.is_err());
    }

    #[tokio::test]
    async fn credential_helpers_and_store() {
        let dir = tempfile::tempdir().unwrap();
        // A fake helper: answers for hosts it knows, "not found" otherwise.
        let helper = write(
            dir.path(),
            "docker-credential-fake",
            r#"#!/bin/sh
[ "$1" = get ] || exit 2
read server
case "$server" in
  helped.example) echo '{"ServerURL":"helped.example","Username":"helper-user","Secret":"helper-secret"}' ;;
  https://index.docker.io/v1/) echo '{"ServerURL":"x","Username":"<token>","Secret":"hub-refresh"}' ;;
  stored.example) echo '{"Username":"store-user","Secret":"store-secret"}' ;;
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac
"#,
        );
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        wait_executable(&helper);
        let cfg = write(
            dir.path(),
            "config.json",
            &format!(
                r#"{{"credHelpers": {{"helped.example": "fake", "docker.io": "fake", "broken.example": "missing"}},
                    "credsStore": "fake",
                    "auths": {{"stored.example": {{}}, "inline.example": {{"auth": "{}"}}}}}}"#,
                b64("in:line")
            ),
        );
        let prefix = format!("{}/docker-credential-", dir.path().display());
        let store = CredentialStore::new(None, vec![(cfg, true)], prefix);
        assert_eq!(
            store.lookup("helped.example").await.unwrap(),
            Some(basic("helper-user", "helper-secret"))
        );
        assert_eq!(
            store.lookup("docker.io").await.unwrap(),
            Some(Credentials::IdentityToken {
                username: None,
                token: "hub-refresh".into()
            })
        );
        // credsStore serves hosts without a helper or inline entry.
        assert_eq!(
            store.lookup("stored.example").await.unwrap(),
            Some(basic("store-user", "store-secret"))
        );
        // An inline entry is used before the store.
        assert_eq!(store.lookup("inline.example").await.unwrap(), Some(basic("in", "line")));
        // A missing helper or one that knows nothing means anonymous.
        assert_eq!(store.lookup("broken.example").await.unwrap(), None);
        assert_eq!(store.lookup("unknown.example").await.unwrap(), None);
    }

    #[test]
    fn debug_never_shows_secrets() {
        let c = basic("alice", "hunter2");
        let t = Credentials::IdentityToken {
            username: None,
            token: "tok-secret".into(),
        };
        let store = CredentialStore::new(Some(c.clone()), vec![], "x-");
        let text = format!("{c:?} {t:?} {store:?}");
        assert!(text.contains("alice"));
        assert!(!text.contains("hunter2") && !text.contains("tok-secret"), "{text}");
        let entry = AuthEntry {
            auth: Some(b64("u:p4ss")),
            username: None,
            password: Some("p4ss".into()),
            identitytoken: Some("idt".into()),
        };
        let text = format!("{entry:?}");
        assert!(
            !text.contains("p4ss") && !text.contains("idt") && !text.contains(&b64("u:p4ss")),
            "{text}"
        );
    }

    #[test]
    fn username_without_password_is_a_usage_error() {
        let opts = RegistryOptions {
            username: Some("alice".into()),
            ..Default::default()
        };
        assert!(matches!(CredentialStore::from_options(&opts), Err(Error::Usage(_))));
    }
}
