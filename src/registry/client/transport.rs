//! The request machinery of [`RegistryClient`]: one logical request (`Req`)
//! sent through the host's pacing (a slot of its kind, the request rate;
//! see [`crate::registry::pace`]), told how its answers went, answering auth challenges (basic, and
//! bearer tokens fetched and cached per scope) and retrying transient
//! failures with backoff honouring `Retry-After` — the one retry loop of the
//! transport.

use std::time::SystemTime;

use base64::Engine as _;
use bytes::Bytes;
use reqwest::header::{
    HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE,
};
use reqwest::{Method, StatusCode};
use tokio::time::Instant;
use url::Url;

use super::body::{read_limited, read_truncated};
use super::errors::{describe_reqwest, error_codes, summarize_error_body};
use super::tls::{answered_plain_http, is_certificate_error};
use super::{header_str, RegistryClient, MAX_ERROR_BODY, MAX_TOKEN_BODY};
use crate::error::{Error, Result};
use crate::registry::auth::{self, Challenge, Token};
use crate::registry::credentials::Credentials;
use crate::registry::pace::{Kind, Permit};
use crate::registry::rate_limit::PullQuota;
use crate::registry::retry::parse_retry_after;

/// A request body: replayable bytes, or a stream that can be sent once.
pub(super) enum ReqBody {
    Empty,
    Bytes(Bytes),
    Stream(Option<reqwest::Body>),
}

/// One logical request, possibly sent several times.
pub(super) struct Req {
    pub(super) method: Method,
    pub(super) url: Url,
    pub(super) headers: HeaderMap,
    pub(super) body: ReqBody,
    /// Token scopes the request needs.
    pub(super) scopes: Vec<String>,
    /// What the request is about, for messages (`library/alpine`, `the catalog`).
    pub(super) subject: String,
    /// Whether the request may be repeated on a transient failure.
    pub(super) idempotent: bool,
    /// Whether a 401 saying the token lacks a scope is returned as a
    /// response (a mount that falls back to an upload) rather than an error.
    pub(super) scope_refusal_is_answer: bool,
    /// Whether the registry counts it against a pull quota (a manifest
    /// GET): paced, and refused once the quota is spent.
    pub(super) pull: bool,
    /// The kind of slot it takes on the host (see [`Kind`]).
    pub(super) kind: Kind,
    /// Another API the host serves (quay.io's REST API): the request
    /// carries its own credentials, so the registry's are not added and a
    /// 401 is not taken for a registry challenge.
    pub(super) foreign: bool,
}

/// The kind of slot a request takes: uploads (sessions, mounts, chunks),
/// blob GETs, and everything else.
fn kind_of(method: &Method, url: &Url) -> Kind {
    let path = url.path();
    if path.contains("/blobs/uploads") {
        Kind::Upload
    } else if *method == Method::GET && path.contains("/blobs/") {
        Kind::BlobGet
    } else {
        Kind::Request
    }
}

/// A body larger than this makes a request's time say more about the
/// link than about how busy the registry is: not a latency sample.
const SAMPLE_BODY_MAX: usize = 256 * 1024;

/// A short window in a `RateLimit-*` answer is a request rate to keep
/// under, not a pull quota (Docker Hub's is hours long).
const RATE_WINDOW_MAX: std::time::Duration = std::time::Duration::from_secs(60);

impl Req {
    pub(super) fn new(method: Method, url: Url, scopes: Vec<String>, subject: impl Into<String>) -> Self {
        let idempotent = matches!(method, Method::GET | Method::HEAD | Method::PUT | Method::DELETE);
        let kind = kind_of(&method, &url);
        Req {
            kind,
            method,
            url,
            headers: HeaderMap::new(),
            body: ReqBody::Empty,
            scopes,
            subject: subject.into(),
            idempotent,
            scope_refusal_is_answer: false,
            pull: false,
            foreign: false,
        }
    }

    /// Marks the request as one a pull quota counts (see [`Req::pull`]).
    pub(super) fn counted_as_pull(mut self) -> Self {
        self.pull = true;
        self
    }

    pub(super) fn header(mut self, name: reqwest::header::HeaderName, value: &str) -> Result<Self> {
        let v = HeaderValue::from_str(value)
            .map_err(|_| Error::invalid(format!("invalid value for HTTP header {name}: {value:?}")))?;
        self.headers.insert(name, v);
        Ok(self)
    }

    pub(super) fn replayable(&self) -> bool {
        !matches!(self.body, ReqBody::Stream(_))
    }
}

/// A response read to its end (manifests, lists, tokens, errors).
pub(super) struct SmallResponse {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
}

impl RegistryClient {
    /// An absolute URL on this registry for `path` (without a leading `/`).
    pub(super) async fn url(&self, path: &str) -> Result<Url> {
        let scheme = self.scheme().await?;
        Url::parse(&format!("{scheme}://{}/{path}", self.inner.api_host))
            .map_err(|e| Error::invalid(format!("cannot build a URL for {} /{path}: {e}", self.host())))
    }

    /// The `Location` of a response, resolved against the request URL.
    pub(super) fn location(&self, base: &Url, headers: &HeaderMap) -> Result<Url> {
        let loc = header_str(headers, LOCATION.as_str())
            .ok_or_else(|| Error::invalid(format!("{} opened an upload session without a Location", self.host())))?;
        base.join(loc)
            .map_err(|_| Error::invalid(format!("{} sent an invalid upload Location", self.host())))
    }

    /// Waits until the host's request rate lets a request leave.
    pub(super) async fn acquire(&self) {
        self.inner.pace.depart().await;
    }

    /// The credentials for this host, looked up once.
    pub(super) async fn credentials(&self) -> Result<Option<Credentials>> {
        let c = self
            .inner
            .creds
            .get_or_try_init(|| self.inner.store.lookup(&self.inner.host))
            .await?;
        Ok(c.clone())
    }

    /// A 400 to a plain-HTTP request: when it says the host speaks HTTPS
    /// and the plain scheme was remembered from an earlier run, the scheme
    /// to send it again with (`Ok`); else the same answer, to be handled as
    /// any other (`Err`).
    async fn after_plain_http_refused(
        &self,
        resp: reqwest::Response,
    ) -> Result<std::result::Result<&'static str, reqwest::Response>> {
        if !self.inner.insecure {
            return Ok(Err(resp));
        }
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = read_truncated(resp, MAX_ERROR_BODY).await;
        if String::from_utf8_lossy(&body).contains("HTTPS server") {
            if let Some(scheme) = self.reprobe_after_failure().await? {
                return Ok(Ok(scheme));
            }
        }
        let mut rebuilt = http::Response::new(reqwest::Body::from(body));
        *rebuilt.status_mut() = status;
        *rebuilt.headers_mut() = headers;
        Ok(Err(reqwest::Response::from(rebuilt)))
    }

    /// [`Self::fetch_counted`] with a budget of its own.
    pub(super) async fn fetch(
        &self,
        make: impl Fn() -> Result<Req>,
        limit: usize,
        what: &str,
    ) -> Result<SmallResponse> {
        self.fetch_counted(make, limit, what, &mut 0).await
    }

    /// Sends a request built by `make`, then reads the whole body (at most
    /// `limit` bytes when successful); a connection lost while reading is
    /// retried like a failed request, from the same budget (`attempt`, see
    /// [`Self::send_counted`]).
    pub(super) async fn fetch_counted(
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
    pub(super) async fn send(&self, req: Req) -> Result<reqwest::Response> {
        self.send_counted(req, &mut 0).await
    }

    /// [`Self::send_paced`], the slot freed as the answer's head arrives.
    pub(super) async fn send_counted(&self, req: Req, attempt: &mut u32) -> Result<reqwest::Response> {
        Ok(self.send_paced(req, attempt).await?.0)
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
    /// over. Each attempt takes a slot of the request's kind on the host
    /// (returned with the answer: a blob GET holds it while its body is
    /// read) and tells it how the answer went.
    pub(super) async fn send_paced(&self, mut req: Req, attempt: &mut u32) -> Result<(reqwest::Response, Permit)> {
        let retry = self.inner.retry;
        let streamed = !req.replayable();
        let mut answered_challenge = false;
        loop {
            // Credentials go only to the registry itself, never to another
            // host named in a Location.
            let same_host =
                req.url.host_str() == Some(self.inner.api_hostname.as_str()) && req.url.port() == self.inner.api_port;
            // Wait for the pull quota's pace and the rate limit first, so
            // the token is checked for freshness when the request leaves,
            // not before the wait.
            let _paced = if req.pull {
                Some(
                    self.inner
                        .quota
                        .before_pull()
                        .await
                        .map_err(|q| self.quota_spent(&q, &req.subject))?,
                )
            } else {
                None
            };
            let mut permit = self.inner.pace.acquire(req.kind).await;
            self.acquire().await;
            permit.sending();
            let sample = match &req.body {
                ReqBody::Empty => true,
                ReqBody::Bytes(b) => b.len() <= SAMPLE_BODY_MAX,
                ReqBody::Stream(_) => false,
            };
            let auth = if same_host && !req.foreign {
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
            let started = Instant::now();
            let result = rb.send().await;
            let elapsed_ms = started.elapsed().as_millis() as u64;
            let can_retry = req.idempotent && req.replayable() && *attempt < retry.retries;
            let resp = match result {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(method = %req.method, host = self.host(), path = req.url.path(), elapsed_ms, "request failed: {}", describe_reqwest(&e));
                    crate::registry::stats::record_request(self.host(), None);
                    // A scheme remembered from an earlier run that no longer
                    // holds: probe again and send it the new way.
                    if same_host && (e.is_connect() || answered_plain_http(&e)) && req.replayable() {
                        if let Some(scheme) = self.reprobe_after_failure().await? {
                            if req.url.set_scheme(scheme).is_ok() {
                                continue;
                            }
                        }
                    }
                    let err = self.network_error(&e);
                    if !is_certificate_error(&e) && !answered_plain_http(&e) && !e.is_builder() {
                        permit.trouble();
                    }
                    drop(permit);
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
            crate::registry::stats::record_request(self.host(), Some(status.as_u16()));
            // Plain HTTP sent to a host that speaks HTTPS now (Go's servers
            // answer 400 and say so), by a scheme remembered from an
            // earlier run: probe again and send it the new way.
            let resp =
                if status == StatusCode::BAD_REQUEST && same_host && req.url.scheme() == "http" && req.replayable() {
                    match self.after_plain_http_refused(resp).await? {
                        Ok(scheme) => {
                            if req.url.set_scheme(scheme).is_ok() {
                                continue;
                            }
                            return Err(Error::invalid(format!("cannot send {} over {scheme}", req.url)));
                        }
                        Err(resp) => resp,
                    }
                } else {
                    resp
                };
            let quota = PullQuota::from_headers(|name| header_str(resp.headers(), name));
            match quota {
                // A rate over seconds: paced, not counted as pulls.
                Some(q) if q.window.is_some_and(|w| w <= RATE_WINDOW_MAX) => {
                    if let Some(w) = q.window {
                        self.inner.pace.announced(q.limit, w, q.remaining, q.reset);
                    }
                }
                quota => {
                    if let Some(q) = &quota {
                        crate::registry::stats::record_quota(self.host(), q);
                    }
                    self.inner.quota.observe(quota);
                }
            }
            let throttled = status == StatusCode::TOO_MANY_REQUESTS;
            let busy = status == StatusCode::SERVICE_UNAVAILABLE;
            let retry_after = if throttled || busy {
                header_str(resp.headers(), RETRY_AFTER.as_str()).and_then(|v| parse_retry_after(v, SystemTime::now()))
            } else {
                None
            };
            if throttled {
                permit.too_many(retry_after);
            } else if busy {
                permit.trouble();
            } else {
                permit.answered(sample);
            }

            if status == StatusCode::UNAUTHORIZED {
                let values: Vec<&str> = resp
                    .headers()
                    .get_all(WWW_AUTHENTICATE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect();
                let challenge = auth::choose_challenge(values.iter().copied());
                let bearer_error = auth::bearer_error(values.iter().copied());
                if let Some((_, Some(token))) = &auth {
                    if bearer_error.as_deref() == Some("insufficient_scope") {
                        // The token is good but does not grant what this
                        // request needs: asking again gets the same answer.
                        if req.scope_refusal_is_answer {
                            return Ok((resp, permit));
                        }
                        return Err(self.scope_refused(&req.scopes, token).await);
                    }
                    // Expired (or revoked): fetch a new one, send again once.
                    self.inner.tokens.invalidate(&auth::scope_key(&req.scopes), token);
                    if !answered_challenge && !req.replayable() {
                        // A streamed body cannot be sent again from here:
                        // the copy starts over, with a new token.
                        return Err(Error::Cut(format!(
                            "{} refused the token for {} {} as expired; starting the transfer again with a new one",
                            self.host(),
                            req.method,
                            req.url.path()
                        )));
                    }
                }
                if !answered_challenge && req.replayable() && !req.foreign {
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
                drop(permit);
                if can_retry {
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
            return Ok((resp, permit));
        }
    }

    /// The error of a pull refused because the host announced no pulls left.
    fn quota_spent(&self, quota: &PullQuota, subject: &str) -> Error {
        Error::PullQuota(format!(
            "{} has no pulls left ({}): stopped before pulling a manifest of {subject} rather than failing on 429; {}. \
             Run again once the window resets, or log in for a larger quota",
            self.host(),
            quota.describe(),
            quota.when_reset()
        ))
    }

    /// The `Authorization` header for a request, when the host asked for one
    /// (with the bearer token sent, to invalidate it if refused).
    pub(super) async fn authorization(&self, req: &Req) -> Result<Option<(HeaderValue, Option<String>)>> {
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
    pub(super) async fn token(
        &self,
        scopes: &[String],
        subject: &str,
        realm: &str,
        service: Option<&str>,
    ) -> Result<String> {
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
    pub(super) async fn fetch_token(
        &self,
        scopes: &[String],
        subject: &str,
        realm: &str,
        service: Option<&str>,
    ) -> Result<Token> {
        let realm_url = Url::parse(realm)
            .ok()
            .filter(|u| matches!(u.scheme(), "https" | "http"))
            .ok_or_else(|| Error::invalid(format!("{} sent an invalid token realm {realm:?}", self.host())))?;
        let mut creds = self.credentials().await?;
        let realm_host = realm_url.host_str().unwrap_or_default().to_string();
        if creds.is_some()
            && !auth::realm_may_get_credentials(
                auth::host_without_port(&self.inner.api_host),
                &realm_host,
                &self.inner.token_realms,
            )
        {
            // A registry cannot send our credentials to another host by
            // naming it as its realm: ask for an anonymous token there.
            if let Ok(mut g) = self.inner.withheld_from.lock() {
                if g.is_none() {
                    tracing::warn!(
                        "{} names a token service on {realm_host}, another host: its credentials are not sent there, \
                         only anonymous tokens are asked for (allow it with --token-realm {realm_host})",
                        self.host()
                    );
                    *g = Some(realm_host.clone());
                }
            }
            creds = None;
        }
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
                    if status == StatusCode::FORBIDDEN && creds.is_some() {
                        // The credentials are good; the scope is not granted.
                        return Err(self.token_refused(scopes).await);
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
}

/// `Authorization: Basic …`, marked sensitive.
pub(super) fn basic_header(username: &str, password: &str) -> Result<HeaderValue> {
    let enc = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    let mut v = HeaderValue::from_str(&format!("Basic {enc}"))
        .map_err(|_| Error::invalid("the credentials cannot be sent in an HTTP header"))?;
    v.set_sensitive(true);
    Ok(v)
}
