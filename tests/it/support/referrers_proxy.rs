//! A proxy that adds the OCI 1.1 referrers API in front of the real
//! Distribution registry (2.8 has none; the one stand-in the brief allows
//! for it). It answers `GET /v2/NAME/referrers/DIGEST` (with the optional
//! `artifactType` filter) from the manifests with a `subject` that were PUT
//! through it, answers such PUTs with `OCI-Subject` as a registry with the
//! API does, and passes everything else on unchanged. Every request is
//! recorded (`METHOD PATH`).
//!
//! One request per connection (`Connection: close`), bodies read whole:
//! enough for the small test images.

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::fault_proxy::{read_body, read_head};

struct Shared {
    upstream: String,
    /// (repository, subject digest) → descriptors of its referrers.
    referrers: Mutex<HashMap<(String, String), Vec<Value>>>,
    requests: Mutex<Vec<String>>,
    stopped: AtomicBool,
}

/// A running proxy; stops accepting when dropped.
pub struct ReferrersProxy {
    /// `127.0.0.1:PORT`, to use in place of the registry's host.
    pub host: String,
    shared: Arc<Shared>,
}

impl Drop for ReferrersProxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.host);
    }
}

impl ReferrersProxy {
    /// A proxy in front of `upstream` (`127.0.0.1:PORT`).
    pub fn start(upstream: &str) -> ReferrersProxy {
        let listener = super::local_listener();
        let host = listener.local_addr().unwrap().to_string();
        let shared = Arc::new(Shared {
            upstream: upstream.to_string(),
            referrers: Mutex::new(HashMap::new()),
            requests: Mutex::new(Vec::new()),
            stopped: AtomicBool::new(false),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || serve(&s, conn));
            }
        });
        ReferrersProxy { host, shared }
    }

    /// Every request served so far, `METHOD PATH` each.
    pub fn requests(&self) -> Vec<String> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// The digests the API lists for `subject` in `repo`.
    pub fn listed(&self, repo: &str, subject: &str) -> Vec<String> {
        self.shared
            .referrers
            .lock()
            .unwrap()
            .get(&(repo.to_string(), subject.to_string()))
            .map(|v| v.iter().map(|d| d["digest"].as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    }
}

fn answer(status: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

fn serve(s: &Shared, mut client: TcpStream) {
    let _ = client.set_read_timeout(Some(Duration::from_secs(60)));
    let Ok(reader_side) = client.try_clone() else { return };
    let mut reader = BufReader::new(reader_side);
    let Some(head) = read_head(&mut reader) else { return };
    let mut parts = head.first_line.split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    s.requests.lock().unwrap().push(format!("{method} {path}"));
    let Some(body) = read_body(&mut reader, &head, false) else {
        return;
    };

    // The referrers API.
    if let Some((repo, rest)) = path.strip_prefix("/v2/").and_then(|p| p.split_once("/referrers/")) {
        let (digest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let wanted = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("artifactType="))
            .map(|t| t.replace("%2F", "/").replace("%2B", "+"));
        let all = s
            .referrers
            .lock()
            .unwrap()
            .get(&(repo.to_string(), digest.to_string()))
            .cloned()
            .unwrap_or_default();
        let list: Vec<Value> = all
            .into_iter()
            .filter(|d| wanted.as_deref().is_none_or(|t| d["artifactType"].as_str() == Some(t)))
            .collect();
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": list,
        });
        let filtered = if wanted.is_some() {
            "OCI-Filters-Applied: artifactType\r\n"
        } else {
            ""
        };
        let headers = format!("Content-Type: application/vnd.oci.image.index.v1+json\r\n{filtered}");
        let body = if method == "HEAD" {
            Vec::new()
        } else {
            serde_json::to_vec(&index).unwrap()
        };
        let _ = client.write_all(&answer("200 OK", &headers, &body));
        return;
    }

    // Everything else goes to the registry.
    let Ok(mut up) = TcpStream::connect(&s.upstream) else {
        let _ = client.write_all(&answer("502 Bad Gateway", "", b""));
        return;
    };
    let _ = up.set_read_timeout(Some(Duration::from_secs(60)));
    let send_len = (!body.is_empty() || ["POST", "PUT", "PATCH"].contains(&method.as_str())).then_some(body.len());
    if up.write_all(&head.render(send_len)).is_err() || up.write_all(&body).is_err() {
        return;
    }
    let mut up_reader = BufReader::new(up);
    let Some(resp_head) = read_head(&mut up_reader) else {
        return;
    };
    let status: u16 = resp_head
        .first_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let no_body = method == "HEAD" || status == 204 || status == 304;
    let resp_body = if no_body {
        Vec::new()
    } else {
        read_body(&mut up_reader, &resp_head, true).unwrap_or_default()
    };
    // A manifest with a subject, stored: remember it, and say so.
    let mut extra = String::new();
    if method == "PUT" && status == 201 {
        if let Some((repo, _)) = path.strip_prefix("/v2/").and_then(|p| p.split_once("/manifests/")) {
            if let Ok(m) = serde_json::from_slice::<Value>(&body) {
                if let Some(subject) = m["subject"]["digest"].as_str() {
                    let digest = format!("sha256:{}", sha256_hex(&body));
                    let media_type = head.get("content-type").unwrap_or_default().to_string();
                    let artifact_type = m["artifactType"]
                        .as_str()
                        .or(m["config"]["mediaType"].as_str())
                        .unwrap_or_default()
                        .to_string();
                    let mut d = json!({
                        "mediaType": media_type,
                        "digest": digest,
                        "size": body.len(),
                        "artifactType": artifact_type,
                    });
                    if m.get("annotations").is_some() {
                        d["annotations"] = m["annotations"].clone();
                    }
                    let mut refs = s.referrers.lock().unwrap();
                    let list = refs.entry((repo.to_string(), subject.to_string())).or_default();
                    if !list.iter().any(|x| x["digest"] == d["digest"]) {
                        list.push(d);
                    }
                    extra = format!("OCI-Subject: {subject}\r\n");
                }
            }
        }
    }
    let mut rendered = resp_head.render(if no_body { None } else { Some(resp_body.len()) });
    if !extra.is_empty() {
        // Before the blank line that ends the head.
        let at = rendered.len() - 2;
        rendered.splice(at..at, extra.into_bytes());
    }
    let _ = client.write_all(&rendered);
    let _ = client.write_all(&resp_body);
}

/// The sha256 of `bytes` in hex (occy's own digest type, as the registry computes it).
fn sha256_hex(bytes: &[u8]) -> String {
    occy::image::Digest::of(bytes).hex().to_string()
}
