//! The pieces of registry auth that do not touch the network: parsing
//! `WWW-Authenticate` challenges, token scopes, the token endpoint's answer,
//! and a per-scope token cache that lets one task fetch a token while the
//! others wait for it. The requests themselves are made by the client.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

use crate::error::{Error, Result};

/// What a registry asked for in a 401.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// Get a token from `realm` (with `service` and our scope), then send it
    /// as `Authorization: Bearer`.
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    /// Send `Authorization: Basic`.
    Basic { realm: Option<String> },
}

/// One challenge as written: a lowercased scheme and its parameters
/// (lowercased names, unquoted values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawChallenge {
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl RawChallenge {
    /// The value of parameter `name` (lowercase).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Parses a `WWW-Authenticate` value, which may hold several challenges:
/// `Bearer realm="https://auth",service="reg",scope="repository:a:pull,push", Basic realm="x"`.
pub fn parse_www_authenticate(value: &str) -> Vec<RawChallenge> {
    let s = value.as_bytes();
    let mut i = 0;
    let mut out: Vec<RawChallenge> = Vec::new();
    let skip_ws = |i: &mut usize| {
        while *i < s.len() && (s[*i] == b' ' || s[*i] == b'\t') {
            *i += 1;
        }
    };
    loop {
        while i < s.len() && (s[i] == b' ' || s[i] == b'\t' || s[i] == b',') {
            i += 1;
        }
        if i >= s.len() {
            break;
        }
        let start = i;
        while i < s.len() && !matches!(s[i], b' ' | b'\t' | b',' | b'=') {
            i += 1;
        }
        let token = &value[start..i];
        let mut j = i;
        skip_ws(&mut j);
        if j < s.len() && s[j] == b'=' && !token.is_empty() {
            // A parameter of the current challenge.
            i = j + 1;
            skip_ws(&mut i);
            let mut v = String::new();
            if i < s.len() && s[i] == b'"' {
                i += 1;
                let mut seg = i;
                while i < s.len() && s[i] != b'"' {
                    if s[i] == b'\\' && i + 1 < s.len() {
                        v.push_str(&value[seg..i]);
                        i += 1;
                        seg = i;
                    }
                    i += 1;
                }
                v.push_str(&value[seg..i.min(s.len())]);
                i = (i + 1).min(s.len());
            } else {
                let vs = i;
                while i < s.len() && !matches!(s[i], b' ' | b'\t' | b',') {
                    i += 1;
                }
                v.push_str(&value[vs..i]);
            }
            if let Some(c) = out.last_mut() {
                c.params.push((token.to_ascii_lowercase(), v));
            }
        } else if token.is_empty() {
            // A stray '=' (token68 padding): skip it.
            i += 1;
        } else {
            out.push(RawChallenge {
                scheme: token.to_ascii_lowercase(),
                params: Vec::new(),
            });
        }
    }
    out
}

/// Picks the challenge to answer from all `WWW-Authenticate` values of a
/// response: Bearer (with a realm) first, then Basic.
pub fn choose_challenge<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<Challenge> {
    let all: Vec<RawChallenge> = values.into_iter().flat_map(parse_www_authenticate).collect();
    if let Some(c) = all
        .iter()
        .find(|c| c.scheme == "bearer" && c.param("realm").is_some_and(|r| !r.is_empty()))
    {
        return Some(Challenge::Bearer {
            realm: c.param("realm").unwrap_or_default().to_string(),
            service: c.param("service").map(str::to_string),
            scope: c.param("scope").map(str::to_string),
        });
    }
    all.iter().find(|c| c.scheme == "basic").map(|c| Challenge::Basic {
        realm: c.param("realm").map(str::to_string),
    })
}

/// The `error` parameter of the bearer challenge among `values`:
/// `invalid_token` (expired or unknown: fetch a new one) or
/// `insufficient_scope` (the token does not grant what the request needs).
pub fn bearer_error<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<String> {
    values
        .into_iter()
        .flat_map(parse_www_authenticate)
        .find(|c| c.scheme == "bearer")
        .and_then(|c| c.param("error").map(str::to_string))
}

/// One scope split: `repository:NAME:pull,push` as (`repository`, `NAME`,
/// [`pull`, `push`]). The name may hold colons (a registry host with a port).
pub fn split_scope(scope: &str) -> Option<(&str, &str, Vec<&str>)> {
    let (typ, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    Some((typ, name, actions.split(',').filter(|a| !a.is_empty()).collect()))
}

/// What a token grants, as `TYPE:NAME:ACTION` entries, read from its
/// `access` claim when it is a JWT (Distribution's token format). Tokens
/// are opaque to clients by the spec: this is only used to explain a
/// refusal, never to decide what to send. None when it cannot be read.
pub fn granted_access(token: &str) -> Option<Vec<String>> {
    use base64::Engine as _;
    #[derive(Deserialize)]
    struct Claims {
        #[serde(default)]
        access: Vec<Access>,
    }
    #[derive(Deserialize)]
    struct Access {
        #[serde(rename = "type", default)]
        typ: String,
        #[serde(default)]
        name: String,
        #[serde(default)]
        actions: Vec<String>,
    }
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Claims = serde_json::from_slice(&bytes).ok()?;
    Some(
        claims
            .access
            .iter()
            .flat_map(|a| a.actions.iter().map(move |act| format!("{}:{}:{act}", a.typ, a.name)))
            .collect(),
    )
}

/// Whether the credentials of registry `registry_host` may go to a token
/// service on `realm_host` (hosts without ports): the same host; a parent
/// domain of the registry's host (`gitlab.com` for `registry.gitlab.com`);
/// Docker Hub's `auth.docker.io`; or a host the user listed
/// (`--token-realm`). Anything else gets no credentials, only an anonymous
/// token request: a registry cannot send them elsewhere by naming a realm.
pub fn realm_may_get_credentials(registry_host: &str, realm_host: &str, listed: &[String]) -> bool {
    let reg = registry_host.trim_end_matches('.').to_ascii_lowercase();
    let realm = realm_host.trim_end_matches('.').to_ascii_lowercase();
    if reg == realm
        || listed
            .iter()
            .any(|l| l.trim_end_matches('.').eq_ignore_ascii_case(&realm))
    {
        return true;
    }
    if realm == "auth.docker.io" && (reg == "registry-1.docker.io" || reg == "docker.io" || reg == "index.docker.io") {
        return true;
    }
    // A parent domain (with at least two labels), never for IP addresses.
    let is_ip = reg.parse::<std::net::IpAddr>().is_ok() || reg.starts_with('[');
    !is_ip && realm.contains('.') && reg.ends_with(&format!(".{realm}"))
}

/// The host (without port) of a `host[:port]` string.
pub fn host_without_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    }
}

/// The token scope for reading a repository.
pub fn pull_scope(repo: &str) -> String {
    format!("repository:{repo}:pull")
}

/// The token scope for writing a repository.
pub fn push_scope(repo: &str) -> String {
    format!("repository:{repo}:pull,push")
}

/// The token scope for listing the catalog.
pub const CATALOG_SCOPE: &str = "registry:catalog:*";

/// A bearer token and when to stop using it. Never printed.
#[derive(Clone)]
pub struct Token {
    pub value: String,
    pub expires: Instant,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("value", &"<redacted>")
            .field("expires", &self.expires)
            .finish()
    }
}

impl Token {
    /// Whether the token is still good to send.
    pub fn is_fresh(&self) -> bool {
        Instant::now() < self.expires
    }
}

/// Parses the token endpoint's JSON: `token` or `access_token`, and
/// `expires_in` seconds (60 when absent, per the spec). The token is used
/// until a little before it expires.
pub fn parse_token_response(body: &[u8], now: Instant) -> Result<Token> {
    #[derive(Deserialize)]
    struct Answer {
        #[serde(default)]
        token: Option<String>,
        #[serde(default)]
        access_token: Option<String>,
        #[serde(default)]
        expires_in: Option<u64>,
    }
    // serde_json's messages may quote values (a token): give the position only.
    let a: Answer = serde_json::from_slice(body).map_err(|e| {
        Error::invalid(format!(
            "the token service answered with malformed JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let value = a
        .token
        .filter(|t| !t.is_empty())
        .or(a.access_token.filter(|t| !t.is_empty()))
        .ok_or_else(|| Error::invalid("the token service answered without a token"))?;
    let expires_in = a.expires_in.unwrap_or(60).max(1);
    let margin = (expires_in / 10).clamp(1, 30).min(expires_in - 1);
    Ok(Token {
        value,
        expires: now + Duration::from_secs(expires_in - margin),
    })
}

/// The scopes of one request, as a cache key.
pub fn scope_key(scopes: &[String]) -> String {
    scopes.join(" ")
}

/// Tokens of one host by scope. Each scope has its own async lock, so one
/// task fetches a missing token while the others wait and then reuse it.
#[derive(Debug, Default)]
pub struct TokenCache {
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Token>>>>>,
}

impl TokenCache {
    /// The slot for a scope key (created empty on first use).
    pub fn slot(&self, key: &str) -> Arc<tokio::sync::Mutex<Option<Token>>> {
        let mut map = match self.slots.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        map.entry(key.to_string()).or_default().clone()
    }

    /// A fresh cached token for a scope key, without waiting for a fetch.
    pub fn fresh(&self, key: &str) -> Option<Token> {
        let slot = self.slot(key);
        let guard = slot.try_lock().ok()?;
        guard.as_ref().filter(|t| t.is_fresh()).cloned()
    }

    /// Forgets the token of a scope key (after the registry refused it).
    pub fn invalidate(&self, key: &str, value: &str) {
        let slot = self.slot(key);
        if let Ok(mut guard) = slot.try_lock() {
            if guard.as_ref().is_some_and(|t| t.value == value) {
                *guard = None;
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_with_comma_in_scope() {
        let v = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull,push""#;
        let cs = parse_www_authenticate(v);
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].scheme, "bearer");
        assert_eq!(cs[0].param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(cs[0].param("service"), Some("registry.docker.io"));
        assert_eq!(cs[0].param("scope"), Some("repository:library/alpine:pull,push"));
        assert_eq!(
            choose_challenge([v]),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/alpine:pull,push".into()),
            })
        );
    }

    #[test]
    fn parses_basic_spacing_escapes_and_several_challenges() {
        let cs = parse_www_authenticate(r#"Basic realm="basic-realm""#);
        assert_eq!(cs[0].scheme, "basic");
        assert_eq!(cs[0].param("realm"), Some("basic-realm"));

        let cs = parse_www_authenticate(
            r#"  bEaReR  Realm = "a \"quoted\" realm" , service=plain , Basic realm="r2", Negotiate abc=="#,
        );
        assert_eq!(cs.len(), 3);
        assert_eq!(cs[0].scheme, "bearer");
        assert_eq!(cs[0].param("realm"), Some(r#"a "quoted" realm"#));
        assert_eq!(cs[0].param("service"), Some("plain"));
        assert_eq!(cs[1].scheme, "basic");
        assert_eq!(cs[1].param("realm"), Some("r2"));
        assert_eq!(cs[2].scheme, "negotiate");
    }

    #[test]
    fn chooses_bearer_over_basic_and_ignores_junk() {
        let c = choose_challenge([r#"Basic realm="x""#, r#"Bearer realm="https://t/token""#]);
        assert!(
            matches!(c, Some(Challenge::Bearer { realm, service: None, scope: None }) if realm == "https://t/token")
        );
        assert_eq!(
            choose_challenge([r#"Basic realm="x""#]),
            Some(Challenge::Basic {
                realm: Some("x".into())
            })
        );
        // A bearer challenge without a realm is useless.
        assert_eq!(choose_challenge([r#"Bearer service="x""#]), None);
        assert_eq!(choose_challenge(["", "=", "\"", ","]), None);
        // Unterminated quotes do not panic.
        let cs = parse_www_authenticate(r#"Bearer realm="https://x"#);
        assert_eq!(cs[0].param("realm"), Some("https://x"));
    }

    #[test]
    fn token_response_forms() {
        let now = Instant::now();
        let t = parse_token_response(br#"{"token":"abc","expires_in":300}"#, now).unwrap();
        assert_eq!(t.value, "abc");
        assert_eq!(t.expires, now + Duration::from_secs(270));
        let t = parse_token_response(br#"{"access_token":"xyz"}"#, now).unwrap();
        assert_eq!(t.value, "xyz");
        assert_eq!(t.expires, now + Duration::from_secs(54));
        let t = parse_token_response(br#"{"token":"","access_token":"xyz","expires_in":1}"#, now).unwrap();
        assert_eq!(t.value, "xyz");
        assert!(parse_token_response(br#"{"expires_in":3}"#, now).is_err());
        let err = parse_token_response(br#"{"token": 12345678}"#, now)
            .unwrap_err()
            .to_string();
        assert!(!err.contains("12345678"), "{err}");
        assert!(!format!("{t:?}").contains("xyz"));
    }

    #[tokio::test]
    async fn cache_per_scope() {
        let cache = TokenCache::default();
        let key = scope_key(&[pull_scope("a/b")]);
        assert_eq!(key, "repository:a/b:pull");
        assert!(cache.fresh(&key).is_none());
        *cache.slot(&key).lock().await = Some(Token {
            value: "t1".into(),
            expires: Instant::now() + Duration::from_secs(60),
        });
        assert_eq!(cache.fresh(&key).map(|t| t.value), Some("t1".into()));
        assert!(cache.fresh(&scope_key(&[push_scope("a/b")])).is_none());
        cache.invalidate(&key, "other");
        assert!(cache.fresh(&key).is_some());
        cache.invalidate(&key, "t1");
        assert!(cache.fresh(&key).is_none());
        *cache.slot(&key).lock().await = Some(Token {
            value: "old".into(),
            expires: Instant::now(),
        });
        assert!(cache.fresh(&key).is_none());
    }

    #[test]
    fn bearer_errors_and_scopes() {
        let v =
            r#"Bearer realm="http://t/token",service="s",scope="repository:a:pull,push",error="insufficient_scope""#;
        assert_eq!(bearer_error([v]).as_deref(), Some("insufficient_scope"));
        assert_eq!(bearer_error([r#"Bearer realm="x""#]), None);
        assert_eq!(
            split_scope("repository:reg:5000/a/b:pull,push"),
            Some(("repository", "reg:5000/a/b", vec!["pull", "push"]))
        );
        assert_eq!(
            split_scope("registry:catalog:*"),
            Some(("registry", "catalog", vec!["*"]))
        );
        assert_eq!(split_scope("junk"), None);
    }

    #[test]
    fn granted_access_reads_a_jwt_and_nothing_else() {
        use base64::Engine as _;
        let enc = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let token = format!(
            "{}.{}.sig",
            enc(r#"{"alg":"RS256"}"#),
            enc(r#"{"access":[{"type":"repository","name":"m/a","actions":["pull"]}]}"#)
        );
        assert_eq!(granted_access(&token), Some(vec!["repository:m/a:pull".to_string()]));
        let empty = format!("{}.{}.sig", enc("{}"), enc(r#"{"sub":"x"}"#));
        assert_eq!(granted_access(&empty), Some(vec![]));
        assert_eq!(granted_access("opaque-token"), None);
        assert_eq!(granted_access("a.!!!.c"), None);
    }

    #[test]
    fn credentials_go_to_the_same_host_a_parent_domain_or_a_listed_realm() {
        assert!(realm_may_get_credentials("reg.example.com", "reg.example.com", &[]));
        assert!(realm_may_get_credentials("registry.gitlab.com", "gitlab.com", &[]));
        assert!(realm_may_get_credentials("registry-1.docker.io", "auth.docker.io", &[]));
        assert!(realm_may_get_credentials("127.0.0.1", "127.0.0.1", &[]));
        assert!(!realm_may_get_credentials("127.0.0.1", "127.0.0.2", &[]));
        assert!(!realm_may_get_credentials("reg.example.com", "evil.example.net", &[]));
        assert!(!realm_may_get_credentials("reg.example.com", "com", &[]));
        assert!(!realm_may_get_credentials(
            "gitlab.example.com",
            "registry.example.com",
            &[]
        ));
        assert!(realm_may_get_credentials(
            "127.0.0.1",
            "127.0.0.2",
            &["127.0.0.2".into()]
        ));
        assert_eq!(host_without_port("127.0.0.1:5000"), "127.0.0.1");
        assert_eq!(host_without_port("reg.example.com"), "reg.example.com");
        assert_eq!(host_without_port("[::1]:5000"), "::1");
    }
}
