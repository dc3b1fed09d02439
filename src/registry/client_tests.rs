//! Tests of the client's request machinery (retries, `Retry-After`, bearer
//! and basic auth, pagination, blob resume, redirects, rate limit) against
//! a tiny scripted HTTP server on 127.0.0.1, so each behaviour can be forced.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use super::{RegistryClient, RegistryOptions};
use crate::error::Error;
use crate::image::{Descriptor, Digest};

/// A request as the fake server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
}

impl Seen {
    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A scripted answer.
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Send only this many body bytes, then drop the connection.
    truncate_at: Option<usize>,
    /// Drop the connection without answering at all.
    hang_up: bool,
}

impl Resp {
    fn new(status: u16) -> Self {
        Resp {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            truncate_at: None,
            hang_up: false,
        }
    }
    fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
    fn body(mut self, b: impl Into<Vec<u8>>) -> Self {
        self.body = b.into();
        self
    }
}

type Handler = Arc<dyn Fn(&Seen, &[Seen]) -> Resp + Send + Sync>;

struct Fake {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Fake {
    async fn start(handler: impl Fn(&Seen, &[Seen]) -> Resp + Send + Sync + 'static) -> Fake {
        let handler: Handler = Arc::new(handler);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let seen2 = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let handler = handler.clone();
                let seen = seen2.clone();
                tokio::spawn(async move {
                    let mut r = BufReader::new(sock);
                    let mut line = String::new();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let mut parts = line.split_whitespace();
                    let method = parts.next().unwrap_or("").to_string();
                    let target = parts.next().unwrap_or("").to_string();
                    if !target.starts_with('/') {
                        return; // a TLS ClientHello, not HTTP
                    }
                    let mut headers = Vec::new();
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let h = h.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':') {
                            headers.push((k.trim().to_string(), v.trim().to_string()));
                        }
                    }
                    let req = Seen {
                        method,
                        target,
                        headers,
                    };
                    let len: usize = req.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
                    let mut body = vec![0; len];
                    let _ = r.read_exact(&mut body).await;
                    let resp = {
                        let mut all = seen.lock().unwrap();
                        let resp = handler(&req, &all);
                        all.push(req.clone());
                        resp
                    };
                    let mut out = format!(
                        "HTTP/1.1 {} X\r\ncontent-length: {}\r\nconnection: close\r\n",
                        resp.status,
                        resp.body.len()
                    );
                    for (k, v) in &resp.headers {
                        out.push_str(&format!("{k}: {v}\r\n"));
                    }
                    out.push_str("\r\n");
                    let mut sock = r.into_inner();
                    if resp.hang_up {
                        return;
                    }
                    let _ = sock.write_all(out.as_bytes()).await;
                    if req.method != "HEAD" {
                        let n = resp.truncate_at.unwrap_or(resp.body.len());
                        let _ = sock.write_all(&resp.body[..n]).await;
                    }
                    let _ = sock.flush().await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        Fake { port, seen }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn opts(&self) -> RegistryOptions {
        RegistryOptions {
            insecure_hosts: vec![self.host()],
            retries: 3,
            ..Default::default()
        }
    }

    /// Requests other than the /v2/ probes.
    fn requests(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path() != "/v2/")
            .cloned()
            .collect()
    }
}

fn tags_json(tags: &[&str]) -> String {
    serde_json::json!({"name": "r", "tags": tags}).to_string()
}

#[tokio::test]
async fn retries_5xx_and_429_honouring_retry_after() {
    let fake = Fake::start(|req, seen| {
        if req.path() == "/v2/" {
            return Resp::new(200);
        }
        match seen.iter().filter(|s| s.path() != "/v2/").count() {
            0 => Resp::new(503),
            1 => Resp::new(429).header("Retry-After", "1"),
            _ => Resp::new(200).body(tags_json(&["a"])),
        }
    })
    .await;
    let client = RegistryClient::for_host(&fake.host(), &fake.opts()).unwrap();
    let start = Instant::now();
    assert_eq!(client.list_tags("r").await.unwrap(), vec!["a"]);
    assert!(start.elapsed() >= Duration::from_secs(1), "Retry-After ignored");
    assert_eq!(fake.requests().len(), 3);
}

#[tokio::test]
async fn gives_up_after_the_retries_with_the_registry_message() {
    let fake = Fake::start(|req, _| {
        if req.path() == "/v2/" {
            return Resp::new(200);
        }
        Resp::new(500)
            .header("Retry-After", "0")
            .body(r#"{"errors":[{"code":"UNKNOWN","message":"storage is on fire"}]}"#)
    })
    .await;
    let mut opts = fake.opts();
    opts.retries = 2;
    let client = RegistryClient::for_host(&fake.host(), &opts).unwrap();
    let err = client.list_tags("r").await.unwrap_err();
    match &err {
        Error::Registry {
            status, message, codes, ..
        } => {
            assert_eq!(*status, 500);
            assert_eq!(codes, &[crate::error::ErrorCode::Unknown], "parsed once, typed");
            assert!(message.contains("storage is on fire"), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(fake.requests().len(), 3);
    // Not-transient statuses are not retried.
    let fake = Fake::start(|req, _| {
        if req.path() == "/v2/" {
            return Resp::new(200);
        }
        Resp::new(400).body(r#"{"errors":[{"code":"NAME_INVALID","message":"bad name"}]}"#)
    })
    .await;
    let client = RegistryClient::for_host(&fake.host(), &fake.opts()).unwrap();
    let err = client.list_tags("r").await.unwrap_err().to_string();
    assert!(err.contains("400") && err.contains("NAME_INVALID: bad name"), "{err}");
    assert_eq!(fake.requests().len(), 1);
}

fn bearer_registry(port_cell: Arc<Mutex<u16>>) -> impl Fn(&Seen, &[Seen]) -> Resp + Send + Sync {
    move |req, _| {
        let port = *port_cell.lock().unwrap();
        let good_basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:s3cret")
        );
        match req.path() {
            "/v2/" => Resp::new(200),
            "/token" => {
                if req.header("authorization") != Some(good_basic.as_str()) {
                    return Resp::new(401).body(r#"{"details":"bad creds"}"#);
                }
                let scope_ok =
                    req.target.contains("scope=repository%3Ar%3Apull") && req.target.contains("service=fake");
                if !scope_ok {
                    return Resp::new(400);
                }
                Resp::new(200).body(r#"{"access_token":"tok-1","expires_in":300}"#)
            }
            "/v2/r/tags/list" => {
                if req.header("authorization") == Some("Bearer tok-1") {
                    Resp::new(200).body(tags_json(&["v1", "v2"]))
                } else {
                    Resp::new(401).header(
                        "WWW-Authenticate",
                        &format!(
                            r#"Bearer realm="http://127.0.0.1:{port}/token",service="fake",scope="repository:r:pull""#
                        ),
                    )
                }
            }
            _ => Resp::new(404),
        }
    }
}

#[tokio::test]
async fn bearer_tokens_are_fetched_with_basic_credentials_and_cached() {
    let port = Arc::new(Mutex::new(0));
    let fake = Fake::start(bearer_registry(port.clone())).await;
    *port.lock().unwrap() = fake.port;
    let mut opts = fake.opts();
    opts.username = Some("alice".into());
    opts.password = Some("s3cret".into());
    let client = RegistryClient::for_host(&fake.host(), &opts).unwrap();
    assert_eq!(client.list_tags("r").await.unwrap(), vec!["v1", "v2"]);
    assert_eq!(client.list_tags("r").await.unwrap(), vec!["v1", "v2"]);
    let reqs = fake.requests();
    let tokens = reqs.iter().filter(|r| r.path() == "/token").count();
    assert_eq!(tokens, 1, "{reqs:#?}");
    // 401, retry with token, then the second call straight with the token.
    assert_eq!(reqs.iter().filter(|r| r.path() == "/v2/r/tags/list").count(), 3);
}

#[tokio::test]
async fn refused_credentials_give_a_clear_error_without_the_password() {
    let port = Arc::new(Mutex::new(0));
    let fake = Fake::start(bearer_registry(port.clone())).await;
    *port.lock().unwrap() = fake.port;
    let mut opts = fake.opts();
    opts.username = Some("alice".into());
    opts.password = Some("wrong-pass-xyz".into());
    let client = RegistryClient::for_host(&fake.host(), &opts).unwrap();
    let err = client.list_tags("r").await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("refused the credentials for r"), "{text}");
    assert!(!text.contains("wrong-pass-xyz"), "{text}");
    assert!(!format!("{err:?}").contains("wrong-pass-xyz"));

    // Anonymous: the message says credentials are needed.
    let client = RegistryClient::for_host(&fake.host(), &fake.opts()).unwrap();
    let err = client.list_tags("r").await.unwrap_err().to_string();
    assert!(err.contains("requires credentials"), "{err}");
}

#[tokio::test]
async fn pagination_follows_link_headers() {
    let fake = Fake::start(|req, _| match req.target.as_str() {
        "/v2/" => Resp::new(200),
        "/v2/_catalog?n=2" => Resp::new(200)
            .header("Link", r#"</v2/_catalog?last=b&n=2>; rel="next""#)
            .body(r#"{"repositories":["a","b"]}"#),
        "/v2/_catalog?last=b&n=2" => Resp::new(200)
            .header("Link", r#"</v2/_catalog?last=d&n=2>; rel="next""#)
            .body(r#"{"repositories":["c","d"]}"#),
        "/v2/_catalog?last=d&n=2" => Resp::new(200).body(r#"{"repositories":["e"]}"#),
        "/v2/loop/tags/list?n=2" => Resp::new(200)
            .header("Link", r#"</v2/loop/tags/list?n=2>; rel="next""#)
            .body(tags_json(&["x"])),
        "/v2/evil/tags/list?n=2" => Resp::new(200)
            .header("Link", r#"<http://elsewhere.example/v2/x>; rel="next""#)
            .body(tags_json(&["x"])),
        _ => Resp::new(404)
            .body(r#"{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}"#),
    })
    .await;
    let client = RegistryClient::for_host(&fake.host(), &fake.opts())
        .unwrap()
        .with_page_size(2);
    assert_eq!(client.catalog().await.unwrap(), vec!["a", "b", "c", "d", "e"]);
    assert!(matches!(client.list_tags("loop").await, Err(Error::Invalid(_))));
    assert!(matches!(client.list_tags("evil").await, Err(Error::Invalid(_))));
    let err = client.list_tags("missing").await.unwrap_err();
    assert!(
        matches!(&err, Error::NotFound(m) if m.contains("repository missing not found")),
        "{err:?}"
    );
}

#[tokio::test]
async fn rate_limit_applies_to_every_request() {
    let fake = Fake::start(|req, _| match req.path() {
        "/v2/" => Resp::new(200),
        _ => Resp::new(404),
    })
    .await;
    let mut opts = fake.opts();
    opts.rate_limit = Some(20.0);
    let client = RegistryClient::for_host(&fake.host(), &opts).unwrap();
    let start = Instant::now();
    let d = Digest::of(b"nothing");
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let c = client.clone();
        let d = d.clone();
        tasks.push(tokio::spawn(async move { c.head_blob("r", &d).await }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), None);
    }
    // 10 HEADs plus the HTTPS probe: 10 intervals of 50 ms at least.
    let e = start.elapsed();
    assert!(e >= Duration::from_millis(490), "{e:?}");
}

#[tokio::test]
async fn blob_streams_resume_after_a_dropped_connection_and_are_verified() {
    let blob: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let digest = Digest::of(&blob);
    let blob2 = blob.clone();
    let path = format!("/v2/r/blobs/{digest}");
    let fake = Fake::start(move |req, _| {
        if req.path() == "/v2/" {
            return Resp::new(200);
        }
        if req.path() != path {
            return Resp::new(404);
        }
        match req.header("range") {
            None => {
                let mut r = Resp::new(200).body(blob2.clone());
                r.truncate_at = Some(70_000);
                r
            }
            Some(range) => {
                let start: usize = range
                    .trim_start_matches("bytes=")
                    .trim_end_matches('-')
                    .parse()
                    .unwrap();
                Resp::new(206)
                    .header(
                        "Content-Range",
                        &format!("bytes {start}-{}/{}", blob2.len() - 1, blob2.len()),
                    )
                    .body(blob2[start..].to_vec())
            }
        }
    })
    .await;
    let client = RegistryClient::for_host(&fake.host(), &fake.opts()).unwrap();
    let desc = Descriptor::new("application/octet-stream", digest.clone(), blob.len() as u64);
    let mut r = client.get_blob("r", &desc).await.unwrap();
    let mut out = Vec::new();
    r.read_to_end(&mut out).await.unwrap();
    assert_eq!(out, blob);
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 2);
    let range = reqs[1].header("range").unwrap();
    let offset: usize = range
        .trim_start_matches("bytes=")
        .trim_end_matches('-')
        .parse()
        .unwrap();
    assert!(offset > 0 && offset <= 70_000, "{range}");

    // Wrong content: a digest mismatch at the end of the stream.
    let wrong = Descriptor::new("application/octet-stream", Digest::of(b"other"), blob.len() as u64);
    let fake2 = {
        let blob = blob.clone();
        Fake::start(move |req, _| match req.path() {
            "/v2/" => Resp::new(200),
            _ => Resp::new(200).body(blob.clone()),
        })
        .await
    };
    let client = RegistryClient::for_host(&fake2.host(), &fake2.opts()).unwrap();
    let mut r = client.get_blob("r", &wrong).await.unwrap();
    let err = r.read_to_end(&mut Vec::new()).await.unwrap_err();
    assert!(matches!(Error::stream("blob", err), Error::DigestMismatch { .. }));
    // Wrong size announced: refused before streaming.
    let short = Descriptor::new("application/octet-stream", digest.clone(), 5);
    assert!(matches!(
        client.get_blob("r", &short).await,
        Err(Error::SizeMismatch { .. })
    ));
    // Missing blob: NotFound naming it.
    let fake3 = Fake::start(|req, _| match req.path() {
        "/v2/" => Resp::new(200),
        _ => Resp::new(404),
    })
    .await;
    let client = RegistryClient::for_host(&fake3.host(), &fake3.opts()).unwrap();
    match client.get_blob("r", &desc).await {
        Err(Error::NotFound(m)) => assert!(m.contains(digest.as_str()), "{m}"),
        Err(other) => panic!("unexpected {other:?}"),
        Ok(_) => panic!("a missing blob opened"),
    }
}

#[tokio::test]
async fn redirects_to_storage_do_not_carry_our_credentials() {
    let blob = Bytes::from_static(b"layer bytes from storage");
    let digest = Digest::of(&blob);
    let storage = {
        let blob = blob.clone();
        Fake::start(move |_, _| Resp::new(200).body(blob.to_vec())).await
    };
    let storage_port = storage.port;
    let good = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("bob:pw"));
    let registry = Fake::start(move |req, _| {
        if req.header("authorization") != Some(good.as_str()) {
            return Resp::new(401).header("WWW-Authenticate", r#"Basic realm="fake""#);
        }
        match req.path() {
            "/v2/" => Resp::new(200),
            _ => Resp::new(307).header("Location", &format!("http://127.0.0.1:{storage_port}/blob?sig=abc")),
        }
    })
    .await;
    let mut opts = registry.opts();
    opts.username = Some("bob".into());
    opts.password = Some("pw".into());
    let client = RegistryClient::for_host(&registry.host(), &opts).unwrap();
    let desc = Descriptor::new("application/octet-stream", digest, blob.len() as u64);
    let mut r = client.get_blob("r", &desc).await.unwrap();
    let mut out = Vec::new();
    r.read_to_end(&mut out).await.unwrap();
    assert_eq!(out, blob);
    let at_storage = storage.seen.lock().unwrap().clone();
    assert_eq!(at_storage.len(), 1);
    assert_eq!(at_storage[0].header("authorization"), None);
    // The registry got the credentials after its challenge.
    assert!(registry.requests().iter().any(|r| r.header("authorization").is_some()));
}

#[tokio::test]
async fn manifests_by_tag_and_digest() {
    let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;
    let digest = Digest::of(manifest);
    let d2 = digest.clone();
    let fake = Fake::start(move |req, _| {
        let mt = "application/vnd.oci.image.manifest.v1+json";
        match req.path() {
            "/v2/" => Resp::new(200),
            "/v2/r/manifests/good" => Resp::new(200)
                .header("Content-Type", mt)
                .header("Docker-Content-Digest", d2.as_str())
                .body(manifest.to_vec()),
            p if p == format!("/v2/r/manifests/{d2}") => Resp::new(200)
                .header("Content-Type", mt)
                .body(b"{\"tampered\":true}".to_vec()),
            "/v2/r/manifests/big" => Resp::new(200).body(vec![b' '; 5 * 1024 * 1024]),
            "/v2/gone/manifests/1.0" => Resp::new(404)
                .body(r#"{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}"#),
            _ => Resp::new(404).body(r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#),
        }
    })
    .await;
    let client = RegistryClient::for_host(&fake.host(), &fake.opts()).unwrap();
    // Asked by digest, the bytes are verified (the fake tampers with them).
    assert!(matches!(
        client.get_manifest("r", digest.as_str()).await,
        Err(Error::DigestMismatch { .. })
    ));
    let by_digest = |s: &&Seen| s.path() == format!("/v2/r/manifests/{digest}");
    assert_eq!(fake.requests().iter().filter(by_digest).count(), 4, "1 + 3 retries");
    let m = client.get_manifest("r", "good").await.unwrap();
    assert_eq!(m.digest, digest);
    assert_eq!(m.media_type, "application/vnd.oci.image.manifest.v1+json");
    let head = client.head_manifest("r", "good").await.unwrap().unwrap();
    assert_eq!(head.digest, digest);
    assert_eq!(head.size, manifest.len() as u64);
    // Once read by tag, the same manifest asked by digest is known: the bytes
    // hash to that digest, so no request is sent.
    let again = client.get_manifest("r", digest.as_str()).await.unwrap();
    assert_eq!(again.bytes, m.bytes);
    assert_eq!(fake.requests().iter().filter(by_digest).count(), 4);
    let err = client.get_manifest("r", "nope").await.unwrap_err();
    assert!(
        matches!(&err, Error::NotFound(m) if m == &format!("tag r:nope not found on {}", fake.host())),
        "{err:?}"
    );
    let err = client.get_manifest("gone", "1.0").await.unwrap_err();
    assert!(
        matches!(&err, Error::NotFound(m) if m == &format!("repository gone not found on {}", fake.host())),
        "{err:?}"
    );
    assert_eq!(client.head_manifest("r", "nope").await.unwrap(), None);
    assert!(matches!(client.get_manifest("r", "big").await, Err(Error::Invalid(_))));
}

#[tokio::test]
async fn unreachable_hosts_are_named() {
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let host = format!("127.0.0.1:{port}");
    let opts = RegistryOptions {
        retries: 1,
        ..Default::default()
    };
    let client = RegistryClient::for_host(&host, &opts).unwrap();
    let err = client.list_tags("r").await.unwrap_err();
    assert!(
        matches!(&err, Error::Network(m) if m.starts_with(&format!("cannot reach {host}"))),
        "{err:?}"
    );
    assert!(err.is_transient());
}

#[tokio::test]
async fn a_manifest_whose_blob_the_registry_does_not_see_yet_is_put_again() {
    let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;
    let raw = crate::image::RawManifest::new(Bytes::from_static(manifest), None).unwrap();
    let unknown = r#"{"errors":[{"code":"DIGEST_INVALID","message":"provided digest did not match uploaded content"},{"code":"MANIFEST_BLOB_UNKNOWN","message":"blob unknown to registry"}]}"#;
    // The first PUT meets another writer re-linking a blob; the next one succeeds.
    let fake = Fake::start(move |req, seen| {
        if req.path() == "/v2/" {
            return Resp::new(200);
        }
        match seen.iter().filter(|s| s.method == "PUT").count() {
            0 => Resp::new(400).body(unknown),
            _ => Resp::new(201),
        }
    })
    .await;
    let client = RegistryClient::for_host(&fake.host(), &fake.opts()).unwrap();
    assert_eq!(client.put_manifest("r", "1.0", &raw).await.unwrap(), raw.digest);
    assert_eq!(fake.requests().len(), 2);

    // A blob that stays unknown is an error once the retries are spent.
    let fake = Fake::start(move |req, _| {
        if req.path() == "/v2/" {
            return Resp::new(200);
        }
        Resp::new(400).body(unknown)
    })
    .await;
    let client = RegistryClient::for_host(&fake.host(), &fake.opts()).unwrap();
    let err = client.put_manifest("r", "1.0", &raw).await.unwrap_err();
    assert!(err.to_string().contains("MANIFEST_BLOB_UNKNOWN"), "{err}");
    assert_eq!(fake.requests().len(), 4, "1 + 3 retries");
}

#[tokio::test]
async fn a_config_stored_whose_answer_was_lost_is_not_an_error() {
    let config = Bytes::from_static(b"{}");
    let desc = Descriptor::new("application/vnd.oci.image.config.v1+json", Digest::of(&config), 2);
    let d = desc.digest.to_string();
    // The registry stores the blob at the first PUT but the answer is lost;
    // the PUT sent again finds the session closed.
    let fake = Fake::start(move |req, seen| {
        let puts = seen.iter().filter(|s| s.method == "PUT").count();
        match (req.method.as_str(), req.path()) {
            (_, "/v2/") => Resp::new(200),
            ("POST", _) => Resp::new(202).header("Location", "/v2/r/blobs/uploads/u1"),
            ("PUT", _) if puts == 0 => Resp {
                hang_up: true,
                ..Resp::new(201)
            },
            ("PUT", _) => Resp::new(404)
                .body(r#"{"errors":[{"code":"BLOB_UPLOAD_UNKNOWN","message":"blob upload unknown to registry"}]}"#),
            ("HEAD", p) if p == format!("/v2/r/blobs/{d}") && puts > 0 => {
                Resp::new(200).header("Docker-Content-Digest", &d)
            }
            _ => Resp::new(404),
        }
    })
    .await;
    let client = RegistryClient::for_host(&fake.host(), &fake.opts()).unwrap();
    client.upload_blob_bytes("r", &desc, config).await.unwrap();
    let methods: Vec<String> = fake.requests().iter().map(|s| s.method.clone()).collect();
    assert_eq!(methods, ["POST", "PUT", "PUT", "HEAD"]);
}

#[tokio::test]
async fn a_manifest_corrupted_on_the_way_is_fetched_again() {
    let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;
    let digest = Digest::of(manifest);
    let fake = Fake::start(move |req, seen| {
        if req.path() == "/v2/" {
            return Resp::new(200);
        }
        let mut body = manifest.to_vec();
        if seen.iter().filter(|s| s.path() != "/v2/").count() == 0 {
            body[40] ^= 1;
        }
        Resp::new(200)
            .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            .body(body)
    })
    .await;
    let client = RegistryClient::for_host(&fake.host(), &fake.opts()).unwrap();
    let m = client.get_manifest("r", digest.as_str()).await.unwrap();
    assert_eq!(m.digest, digest);
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn a_manifest_fetched_by_tag_is_checked_against_the_registry_digest() {
    let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;
    let digest = Digest::of(manifest);
    let mut flipped = manifest.to_vec();
    // A hex digit of the config digest: still valid JSON, another digest.
    flipped[150] ^= 1;
    let flipped_digest = Digest::of(&flipped);
    let d = digest.to_string();
    // `once`: the first answer is corrupted; `always`: every answer is;
    // `bare`: corrupted and sent without a Docker-Content-Digest.
    let fake = Fake::start(move |req, seen| {
        let mt = "application/vnd.oci.image.manifest.v1+json";
        let earlier = seen.iter().filter(|s| s.path() == req.path()).count();
        let corrupt = match req.path() {
            "/v2/" => return Resp::new(200),
            "/v2/r/manifests/once" => earlier == 0,
            "/v2/r/manifests/always" | "/v2/r/manifests/bare" => true,
            _ => return Resp::new(404),
        };
        let body = if corrupt { flipped.clone() } else { manifest.to_vec() };
        let resp = Resp::new(200).header("Content-Type", mt).body(body);
        if req.path() == "/v2/r/manifests/bare" {
            resp
        } else {
            resp.header("Docker-Content-Digest", &d)
        }
    })
    .await;
    let client = RegistryClient::for_host(&fake.host(), &fake.opts()).unwrap();
    let count = |tag: &str| {
        let path = format!("/v2/r/manifests/{tag}");
        fake.requests().iter().filter(|s| s.path() == path).count()
    };

    // Corrupted once: refused, fetched again, the registry's bytes kept.
    let m = client.get_manifest("r", "once").await.unwrap();
    assert_eq!(m.digest, digest);
    assert_eq!(count("once"), 2);

    // Corrupted every time: an error naming both digests once the retries
    // are spent, and nothing remembered under the corrupted digest.
    let err = client.get_manifest("r", "always").await.unwrap_err();
    match &err {
        Error::DigestMismatch { what, expected, actual } => {
            assert_eq!(expected, digest.as_str());
            assert_eq!(actual, flipped_digest.as_str());
            assert!(
                what.contains("r:always") && what.contains("Docker-Content-Digest"),
                "{what}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains(digest.as_str()) && err.to_string().contains(flipped_digest.as_str()));
    assert_eq!(count("always"), 4, "1 + 3 retries");

    // Without the header there is nothing to check against here: the bytes
    // are taken as they came (the plan's digest is the check then).
    let bare = client.get_manifest("r", "bare").await.unwrap();
    assert_eq!(bare.digest, flipped_digest);
    assert_eq!(count("bare"), 1);
}

/// A registry whose token service numbers its tokens (`tok-1`, `tok-2`…)
/// and whose upload PUT refuses `tok-1` as expired, as Distribution does
/// once a token is past its `exp`.
fn expiring_registry(port_cell: Arc<Mutex<u16>>) -> impl Fn(&Seen, &[Seen]) -> Resp + Send + Sync {
    move |req, seen| {
        let port = *port_cell.lock().unwrap();
        let challenge = |error: Option<&str>| {
            let mut v = format!(
                r#"Bearer realm="http://127.0.0.1:{port}/token",service="fake",scope="repository:r:pull,push""#
            );
            if let Some(e) = error {
                v.push_str(&format!(r#",error="{e}""#));
            }
            Resp::new(401).header("WWW-Authenticate", &v)
        };
        let token = req.header("authorization").and_then(|h| h.strip_prefix("Bearer "));
        match (req.method.as_str(), req.path()) {
            (_, "/v2/") => Resp::new(200),
            (_, "/token") => {
                let n = seen.iter().filter(|s| s.path() == "/token").count() + 1;
                Resp::new(200).body(format!(r#"{{"token":"tok-{n}","expires_in":300}}"#))
            }
            ("POST", "/v2/r/blobs/uploads/") => match token {
                Some(_) => Resp::new(202).header("Location", "/upload/1"),
                None => challenge(None),
            },
            ("PUT", "/upload/1") => match token {
                Some("tok-1") => challenge(Some("invalid_token")),
                Some(_) => Resp::new(201),
                None => challenge(None),
            },
            _ => Resp::new(404),
        }
    }
}

#[tokio::test]
async fn a_streamed_upload_refused_as_expired_starts_over_with_a_new_token() {
    let port = Arc::new(Mutex::new(0));
    let fake = Fake::start(expiring_registry(port.clone())).await;
    *port.lock().unwrap() = fake.port;
    let client = RegistryClient::for_host(&fake.host(), &fake.opts()).unwrap();
    let data = Bytes::from_static(b"layer bytes");
    let desc = Descriptor::new("application/octet-stream", Digest::of(&data), data.len() as u64);
    let reader = || -> crate::image::BlobReader { Box::pin(std::io::Cursor::new(data.to_vec())) };
    // The PUT meets the expired token: a cut, which the copy starts again.
    let err = client.upload_blob("r", &desc, reader()).await.unwrap_err();
    assert!(matches!(err, Error::Cut(_)), "{err:?}");
    assert!(err.restarts_copy());
    assert!(err.to_string().contains("expired"), "{err}");
    // Started again, it gets a new token and succeeds.
    client.upload_blob("r", &desc, reader()).await.unwrap();
    let reqs = fake.requests();
    assert_eq!(reqs.iter().filter(|r| r.path() == "/token").count(), 2, "{reqs:#?}");
    let puts: Vec<_> = reqs
        .iter()
        .filter(|r| r.method == "PUT")
        .map(|r| r.header("authorization").unwrap_or(""))
        .collect();
    assert_eq!(puts, ["Bearer tok-1", "Bearer tok-2"]);
}

#[tokio::test]
async fn a_scope_the_token_lacks_is_named_without_blaming_the_password() {
    let port = Arc::new(Mutex::new(0u16));
    let p = port.clone();
    let fake = Fake::start(move |req, _| {
        let port = *p.lock().unwrap();
        match req.path() {
            "/v2/" => Resp::new(200),
            "/token" => Resp::new(200).body(r#"{"token":"opaque","expires_in":300}"#),
            _ => {
                let mut v = format!(
                    r#"Bearer realm="http://127.0.0.1:{port}/token",service="fake",scope="registry:catalog:*""#
                );
                if req.header("authorization").is_some() {
                    v.push_str(r#",error="insufficient_scope""#);
                }
                Resp::new(401).header("WWW-Authenticate", &v)
            }
        }
    })
    .await;
    *port.lock().unwrap() = fake.port;
    let mut opts = fake.opts();
    opts.username = Some("carol".into());
    opts.password = Some("right-pass".into());
    let client = RegistryClient::for_host(&fake.host(), &opts).unwrap();
    let err = client.catalog().await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized(_)), "{err:?}");
    let text = err.to_string();
    assert_eq!(
        text,
        format!(
            "carol may not list the catalog of {} (the token service did not grant registry:catalog:*): name the repositories in the sync file instead of a glob",
            fake.host()
        )
    );
    // Asked once for the token, sent once with it: no retry of a refusal.
    let reqs = fake.requests();
    assert_eq!(reqs.iter().filter(|r| r.path() == "/token").count(), 1, "{reqs:#?}");
    assert_eq!(
        reqs.iter().filter(|r| r.path() == "/v2/_catalog").count(),
        2,
        "{reqs:#?}"
    );
}

/// A registry for chunked uploads: the PATCH of bytes `cut_at`… the first
/// time is answered by hanging up, after which the session's status says
/// it holds `kept` bytes (or, with `kept` None, that the session is gone).
fn chunked_registry(cut_from: u64, kept: Option<u64>) -> impl Fn(&Seen, &[Seen]) -> Resp + Send + Sync {
    move |req, seen| {
        let range_of = |r: &Seen| r.header("content-range").unwrap_or("").to_string();
        match (req.method.as_str(), req.path()) {
            (_, "/v2/") => Resp::new(200),
            ("POST", "/v2/r/blobs/uploads/") => Resp::new(202).header("Location", "/up/1?_state=0"),
            ("PATCH", "/up/1") => {
                let range = range_of(req);
                let (start, end) = range.split_once('-').unwrap();
                let (start, end): (u64, u64) = (start.parse().unwrap(), end.parse().unwrap());
                let first_try = !seen.iter().any(|s| s.method == "PATCH" && range_of(s) == range);
                if start == cut_from && first_try {
                    let mut r = Resp::new(0);
                    r.hang_up = true;
                    return r;
                }
                Resp::new(202)
                    .header("Location", &format!("/up/1?_state={}", end + 1))
                    .header("Range", &format!("0-{end}"))
            }
            ("GET", "/up/1") => match kept {
                Some(k) => Resp::new(204)
                    .header("Location", &format!("/up/1?_state={k}"))
                    .header("Range", &format!("0-{}", k - 1)),
                None => Resp::new(404)
                    .body(r#"{"errors":[{"code":"BLOB_UPLOAD_INVALID","message":"blob upload invalid"}]}"#),
            },
            ("PUT", "/up/1") => Resp::new(201),
            _ => Resp::new(404),
        }
    }
}

fn big_blob() -> (Descriptor, Vec<u8>) {
    let size = super::client::CHUNKED_UPLOAD_MIN as usize + 1;
    let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let desc = Descriptor::new("application/octet-stream", Digest::of(&data), size as u64);
    (desc, data)
}

#[tokio::test]
async fn a_cut_chunk_resumes_from_the_offset_the_registry_reports() {
    let chunk = super::client::UPLOAD_CHUNK as u64;
    // The second chunk is cut; the registry kept 1000 bytes of it.
    let fake = Fake::start(chunked_registry(chunk, Some(chunk + 1000))).await;
    let client = RegistryClient::for_host(&fake.host(), &fake.opts()).unwrap();
    let (desc, data) = big_blob();
    client
        .upload_blob("r", &desc, Box::pin(std::io::Cursor::new(data)))
        .await
        .unwrap();
    let reqs = fake.requests();
    let patches: Vec<(String, String)> = reqs
        .iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| {
            (
                r.header("content-range").unwrap_or("").to_string(),
                r.header("content-length").unwrap_or("").to_string(),
            )
        })
        .collect();
    let size = desc.size;
    assert_eq!(
        patches,
        [
            (format!("0-{}", chunk - 1), chunk.to_string()),
            (format!("{chunk}-{}", 2 * chunk - 1), chunk.to_string()),
            // Only what the registry did not keep is sent again…
            (
                format!("{}-{}", chunk + 1000, 2 * chunk - 1),
                (chunk - 1000).to_string()
            ),
            (format!("{}-{}", 2 * chunk, size - 1), "1".to_string()),
        ],
        "{reqs:#?}"
    );
    // …to the location the status gave, and the PUT carries the digest.
    let resent = reqs.iter().filter(|r| r.method == "PATCH").nth(2).unwrap();
    assert_eq!(resent.target, format!("/up/1?_state={}", chunk + 1000));
    let put = reqs.iter().find(|r| r.method == "PUT").unwrap();
    assert!(
        put.target
            .contains(&format!("digest={}", desc.digest.as_str().replace(':', "%3A"))),
        "{}",
        put.target
    );
    assert_eq!(reqs.iter().filter(|r| r.method == "GET").count(), 1);
}

#[tokio::test]
async fn a_cut_chunk_whose_session_is_gone_starts_the_blob_again() {
    let chunk = super::client::UPLOAD_CHUNK as u64;
    let fake = Fake::start(chunked_registry(chunk, None)).await;
    let client = RegistryClient::for_host(&fake.host(), &fake.opts()).unwrap();
    let (desc, data) = big_blob();
    let err = client
        .upload_blob("r", &desc, Box::pin(std::io::Cursor::new(data)))
        .await
        .unwrap_err();
    assert!(err.restarts_copy(), "{err:?}");
    assert!(err.to_string().contains("no longer knows the upload"), "{err}");
    assert!(!fake.requests().iter().any(|r| r.method == "PUT"));
}

#[tokio::test]
async fn a_blob_up_to_the_chunking_size_is_one_put() {
    let fake = Fake::start(chunked_registry(u64::MAX, None)).await;
    let client = RegistryClient::for_host(&fake.host(), &fake.opts()).unwrap();
    let data = vec![7u8; 1 << 20];
    let desc = Descriptor::new("application/octet-stream", Digest::of(&data), data.len() as u64);
    client
        .upload_blob("r", &desc, Box::pin(std::io::Cursor::new(data)))
        .await
        .unwrap();
    let methods: Vec<String> = fake.requests().iter().map(|r| r.method.clone()).collect();
    assert_eq!(methods, ["POST", "PUT"]);
}
