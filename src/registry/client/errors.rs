//! Registry failures as errors for people: typed Distribution error codes
//! parsed from error bodies, unexpected statuses, 401/403, and network
//! errors described without their URLs (with hints for TLS and plain HTTP).

use std::fmt;

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use url::Url;

use super::tls::{answered_plain_http, is_certificate_error};
use super::RegistryClient;
use crate::error::{Error, ErrorCode};
use crate::registry::auth;

impl RegistryClient {
    /// Who requests to this registry go as, for messages.
    pub(super) async fn who(&self) -> String {
        match self.credentials().await {
            Ok(Some(c)) if !self.credentials_withheld() => {
                c.username().unwrap_or("the stored identity token").to_string()
            }
            _ => "anonymous access".to_string(),
        }
    }

    /// The token service host the credentials were withheld from, if so.
    fn withheld_from(&self) -> Option<String> {
        self.inner.withheld_from.lock().ok().and_then(|g| g.clone())
    }

    fn credentials_withheld(&self) -> bool {
        self.withheld_from().is_some()
    }

    /// The error for a token that does not grant what a request needs
    /// (`scopes`): names the repository (or the catalog) and the action,
    /// says what the token service granted, and does not blame the password
    /// (the token service accepted it).
    pub(super) async fn scope_refused(&self, scopes: &[String], token: &str) -> Error {
        let granted = auth::granted_access(token);
        let detail = |typ: &str, name: &str, actions: &[&str]| -> String {
            let have: Vec<&str> = actions
                .iter()
                .copied()
                .filter(|a| {
                    granted
                        .as_ref()
                        .is_some_and(|g| g.contains(&format!("{typ}:{name}:{a}")))
                })
                .collect();
            if have.is_empty() {
                format!("the token service did not grant {typ}:{name}:{}", actions.join(","))
            } else {
                format!("the token service granted {typ}:{name}:{} only", have.join(","))
            }
        };
        // The first scope the token lacks (the first one when it cannot be read).
        let missing = scopes
            .iter()
            .filter_map(|s| auth::split_scope(s))
            .find(|(typ, name, actions)| {
                granted
                    .as_ref()
                    .is_none_or(|g| actions.iter().any(|a| !g.contains(&format!("{typ}:{name}:{a}"))))
            });
        self.refusal(missing, detail).await
    }

    /// The error for a token request the token service refused with 403.
    pub(super) async fn token_refused(&self, scopes: &[String]) -> Error {
        let first = scopes.iter().find_map(|s| auth::split_scope(s));
        self.refusal(first, |typ, name, actions| {
            format!("the token service refused {typ}:{name}:{} (403)", actions.join(","))
        })
        .await
    }

    async fn refusal(
        &self,
        scope: Option<(&str, &str, Vec<&str>)>,
        detail: impl Fn(&str, &str, &[&str]) -> String,
    ) -> Error {
        let who = self.who().await;
        let host = self.host();
        let hint = if let Some(realm) = self.withheld_from() {
            format!(
                ": the credentials for {host} were not sent to its token service on {realm}, another host; allow that with --token-realm {realm}"
            )
        } else if who == "anonymous access" {
            ": give --username/--password or run docker login".to_string()
        } else {
            String::new()
        };
        let Some((typ, name, actions)) = scope else {
            return Error::Unauthorized(format!(
                "{who} may not do this on {host}: the token does not grant it{hint}"
            ));
        };
        let why = detail(typ, name, &actions);
        if typ == "registry" && name == "catalog" {
            let hint = if hint.is_empty() {
                ": name the repositories in the sync file instead of a glob".to_string()
            } else {
                hint
            };
            return Error::Unauthorized(format!("{who} may not list the catalog of {host} ({why}){hint}"));
        }
        let what = if actions.contains(&"push") {
            format!("push to {host}/{name}")
        } else if actions.contains(&"delete") {
            format!("delete from {host}/{name}")
        } else if typ == "repository" {
            format!("pull {host}/{name}")
        } else {
            format!("use {typ} {name} of {host}")
        };
        Error::Unauthorized(format!("{who} may not {what} ({why}){hint}"))
    }

    pub(super) fn unauthorized(&self, subject: &str, had_creds: bool) -> Error {
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

    pub(super) fn network_error(&self, e: &reqwest::Error) -> Error {
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
    pub(super) fn status_error(
        &self,
        method: &Method,
        url: &Url,
        subject: &str,
        status: StatusCode,
        body: &[u8],
    ) -> Error {
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

/// A reqwest error's message and causes, without its URL.
pub(super) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
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

/// A reqwest error's kind and causes, without its URL (which may carry
/// query parameters we do not want in messages).
pub(super) fn describe_reqwest(e: &reqwest::Error) -> String {
    chain_of(e).to_string()
}

pub(super) fn chain_of(e: &reqwest::Error) -> ChainOnly {
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
pub(super) struct ChainOnly {
    pub(super) head: &'static str,
    pub(super) parts: Vec<String>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_are_summarised() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}},{"code":"DENIED","message":""}]}"#;
        assert_eq!(summarize_error_body(body), "MANIFEST_UNKNOWN: manifest unknown; DENIED");
        assert_eq!(summarize_error_body(b"  upstream\n timed out "), "upstream timed out");
        assert_eq!(summarize_error_body(b"<html>nope</html>"), "");
        assert_eq!(summarize_error_body(b""), "");
        assert!(summarize_error_body("x".repeat(500).as_bytes()).chars().count() <= 201);
    }
}
