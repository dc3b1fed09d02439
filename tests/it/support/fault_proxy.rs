//! A fault-injecting HTTP/1.1 proxy for the integration tests: it listens on
//! loopback in front of a real registry and, as a test's plan decides per
//! request (by class: blob GET, blob upload, manifest, other), answers with a
//! 5xx or a 429 with `Retry-After`, resets the connection mid-body, truncates
//! a body after correct headers, trickles it slowly, flips one byte of it, or
//! stalls the request (before forwarding it, half-way through its body, or
//! after the registry has acted on it) until released, so a test can kill
//! occy at that exact point, or drops the connection after a given number
//! of bytes of a request body. Every request, the fault it got and the body
//! bytes it carried each way are recorded.
//!
//! It can also add headers to the answers it passes on: [`docker_hub_quota`]
//! adds Docker Hub's `RateLimit-Limit` / `RateLimit-Remaining`, counting
//! manifest GETs (not HEADs) against a quota, as Docker Hub does.
//!
//! One request per connection (every answer says `Connection: close`);
//! bodies are read whole before being passed on, which suits the small
//! generated test images. The `Host` header is passed unchanged, so the
//! registry's `Location` headers point back at the proxy.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a request is, for a plan to choose faults by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// `GET /v2/`: the API probe (a plan normally leaves it alone).
    Ping,
    /// `GET …/blobs/sha256:…`.
    BlobGet,
    /// `POST`, `PATCH` or `PUT` under `…/blobs/uploads/` (mounts too).
    BlobUpload,
    /// Any request on `…/manifests/…` (GET, HEAD, PUT, DELETE).
    Manifest,
    /// Everything else: blob HEADs, tag lists, the catalog.
    Other,
}

/// What the proxy does to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answers this status itself, without passing the request on.
    Status(u16),
    /// Answers 429 Too Many Requests with `Retry-After: SECONDS`.
    TooMany(u64),
    /// Resets the connection (RST) half-way through the request body, or
    /// when there is none, half-way through the response body.
    Reset,
    /// Sends the response headers (with the right `Content-Length`) and
    /// half the body, then closes the connection.
    Truncate,
    /// Sends the response body in small pieces with pauses (about 1.5 s in all).
    Trickle,
    /// Flips one bit of one byte in the middle of the response body.
    FlipByte,
    /// Holds the request, not passed on, until released; then drops it.
    StallBefore,
    /// Holds the request half-way through its body (or, without one, half-way
    /// through the response body) until released; then drops it.
    StallMidBody,
    /// Passes the request on (the registry acts on it), then resets the
    /// connection without answering: the client never learns.
    DropAnswer,
    /// Passes the request on (the registry acts on it), then holds the
    /// answer until released and drops it: the client never learns.
    StallAfter,
    /// Reads this many bytes of the request body, then resets the
    /// connection; nothing of the request reaches the registry (the proxy
    /// passes bodies on whole, as a buffering front proxy does).
    CutBodyAfter(u64),
    /// Like [`Fault::CutBodyAfter`], but the bytes read are passed on to the
    /// registry first (with the request's own `Content-Length`), then both
    /// connections are closed: the registry holds part of the request, as
    /// when a link between client and registry drops.
    CutBodyAfterPassingOn(u64),
}

impl Fault {
    /// Whether the fault holds the request until [`FaultProxy::release`].
    pub fn stalls(self) -> bool {
        matches!(self, Fault::StallBefore | Fault::StallMidBody | Fault::StallAfter)
    }
}

/// One request as the plan sees it.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// The path and query.
    pub path: String,
    pub class: Class,
    /// The repository named in the path (`apps/web`), if any.
    pub repo: Option<String>,
    /// 0 for the first request of its class this proxy saw, then 1, 2…
    pub nth_of_class: u64,
    /// 0 for the first request this proxy saw (the probe excluded), then 1, 2…
    pub nth: u64,
    /// The request's `Content-Length`, when it has one.
    pub content_length: Option<u64>,
    /// Its `Range` header (a resumed GET), when it has one.
    pub range: Option<String>,
}

/// One request served, and what was done to it.
#[derive(Clone, Debug)]
pub struct Event {
    pub request: Request,
    pub fault: Option<Fault>,
    /// The status the client got (None when it got no complete answer head).
    pub status: Option<u16>,
    /// The upstream registry's status, when the request was passed on.
    pub upstream_status: Option<u16>,
    /// Bytes of the request body the proxy received from the client.
    pub body_in: u64,
    /// Bytes of the response body the proxy sent to the client.
    pub body_out: u64,
}

/// Decides the fault (if any) for each request.
pub type Plan = Box<dyn FnMut(&Request) -> Option<Fault> + Send>;

/// Headers to add to the answer of a request passed on.
pub type AddHeaders = Box<dyn FnMut(&Request) -> Vec<(String, String)> + Send>;

/// Docker Hub's pull quota in front of a registry: every manifest GET takes
/// one pull from `remaining` (HEADs take none) and every answer about a
/// manifest says `RateLimit-Limit: LIMIT;w=WINDOW` and
/// `RateLimit-Remaining: LEFT;w=WINDOW`. The test sets `remaining` and reads
/// it back.
pub fn docker_hub_quota(limit: u64, remaining: Arc<AtomicU64>, window_secs: u64) -> AddHeaders {
    Box::new(move |r: &Request| {
        if r.class != Class::Manifest {
            return Vec::new();
        }
        let left = if r.method == "GET" {
            let _ = remaining.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
            remaining.load(Ordering::SeqCst)
        } else {
            remaining.load(Ordering::SeqCst)
        };
        vec![
            ("RateLimit-Limit".into(), format!("{limit};w={window_secs}")),
            ("RateLimit-Remaining".into(), format!("{left};w={window_secs}")),
        ]
    })
}

struct Shared {
    upstream: String,
    plan: Mutex<Plan>,
    add_headers: Mutex<Option<AddHeaders>>,
    counters: Mutex<(u64, HashMap<Class, u64>)>,
    events: Mutex<Vec<Event>>,
    /// Requests currently held by a stall fault.
    stalled: Mutex<Vec<Request>>,
    /// Bumped by every release: a held request waits for it to change.
    releases: AtomicU64,
    stopped: AtomicBool,
}

/// A running proxy; stops accepting when dropped.
pub struct FaultProxy {
    /// `127.0.0.1:PORT`, to use in place of the registry's host.
    pub host: String,
    shared: Arc<Shared>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.release();
        let _ = TcpStream::connect(&self.host);
    }
}

impl FaultProxy {
    /// A proxy in front of `upstream` (`127.0.0.1:PORT`) that injects no fault yet.
    pub fn start(upstream: &str) -> FaultProxy {
        FaultProxy::with_plan(upstream, Box::new(|_| None))
    }

    /// A proxy in front of `upstream` following `plan`.
    pub fn with_plan(upstream: &str, plan: Plan) -> FaultProxy {
        let listener = super::local_listener();
        let host = listener.local_addr().unwrap().to_string();
        let shared = Arc::new(Shared {
            upstream: upstream.to_string(),
            plan: Mutex::new(plan),
            add_headers: Mutex::new(None),
            counters: Mutex::new((0, HashMap::new())),
            events: Mutex::new(Vec::new()),
            stalled: Mutex::new(Vec::new()),
            releases: AtomicU64::new(0),
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
        FaultProxy { host, shared }
    }

    /// Replaces the plan; request counters start again at 0.
    pub fn set_plan(&self, plan: Plan) {
        *self.shared.plan.lock().unwrap() = plan;
        *self.shared.counters.lock().unwrap() = (0, HashMap::new());
    }

    /// Adds the headers `add` gives to every answer passed on from now.
    pub fn add_headers(&self, add: AddHeaders) {
        *self.shared.add_headers.lock().unwrap() = Some(add);
    }

    /// Lets every request held so far go (each is dropped, unanswered).
    pub fn release(&self) {
        self.shared.releases.fetch_add(1, Ordering::SeqCst);
        self.shared.stalled.lock().unwrap().clear();
    }

    /// Waits until a request is held by a stall fault; returns it, or None after `timeout`.
    pub fn wait_for_stall(&self, timeout: Duration) -> Option<Request> {
        self.wait_for_stalls(1, timeout).into_iter().next()
    }

    /// Waits until `n` requests are held at once; returns those held then
    /// (fewer than `n` after `timeout`).
    pub fn wait_for_stalls(&self, n: usize, timeout: Duration) -> Vec<Request> {
        let deadline = Instant::now() + timeout;
        loop {
            let held = self.shared.stalled.lock().unwrap().clone();
            if held.len() >= n || Instant::now() >= deadline {
                return held;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Every request served so far.
    pub fn events(&self) -> Vec<Event> {
        self.shared.events.lock().unwrap().clone()
    }

    /// Forgets the events recorded so far.
    pub fn clear_events(&self) {
        self.shared.events.lock().unwrap().clear();
        self.shared.stalled.lock().unwrap().clear();
    }

    /// How many requests got a fault, by fault.
    pub fn faults(&self) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for e in self.events() {
            if let Some(f) = e.fault {
                *out.entry(format!("{f:?}")).or_default() += 1;
            }
        }
        out
    }
}

/// A plan injecting faults into about one request in `every` (the probe
/// excepted): every `every`-th request owes the next kind of `rotation`,
/// and an owed fault goes to the first request it applies to (a flipped
/// byte only to blob and manifest GETs, truncations and trickles only to GETs).
pub fn every_nth(every: u64, rotation: Vec<Fault>) -> Plan {
    let mut turn = 0usize;
    let mut owed: Vec<Fault> = Vec::new();
    Box::new(move |r: &Request| {
        if r.class == Class::Ping {
            return None;
        }
        if r.nth % every == every / 2 {
            owed.push(rotation[turn % rotation.len()]);
            turn += 1;
        }
        let i = owed.iter().position(|f| applies(*f, r))?;
        Some(owed.remove(i))
    })
}

/// A registry that throttles: past `per_second` requests passed on in the
/// last second (the probe included), it answers 429 with `Retry-After: 1`
/// without passing the request on. Refused requests do not count.
pub fn throttled(per_second: usize) -> Plan {
    let mut passed: std::collections::VecDeque<Instant> = std::collections::VecDeque::new();
    Box::new(move |_r: &Request| {
        let now = Instant::now();
        while passed
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            passed.pop_front();
        }
        if passed.len() >= per_second {
            return Some(Fault::TooMany(1));
        }
        passed.push_back(now);
        None
    })
}

/// A plan injecting a fault into about `percent` % of the requests (the
/// probe excepted), drawn from `kinds` (those that apply to the request) by
/// a generator seeded with `seed`. Requests race, so a seed fixes the
/// sequence of draws, not which request gets which.
pub fn seeded(seed: u64, percent: u64, kinds: Vec<Fault>) -> Plan {
    let mut state = seed;
    Box::new(move |r: &Request| {
        if r.class == Class::Ping {
            return None;
        }
        // splitmix64
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        if z % 100 >= percent {
            return None;
        }
        let fitting: Vec<Fault> = kinds.iter().copied().filter(|f| applies(*f, r)).collect();
        (!fitting.is_empty()).then(|| fitting[((z >> 32) as usize) % fitting.len()])
    })
}

/// Whether `r` is a GET of a manifest by tag (not by digest).
pub fn manifest_by_tag(r: &Request) -> bool {
    r.method == "GET" && r.class == Class::Manifest && !r.path.contains("/manifests/sha256:")
}

/// Whether `fault` makes sense for request `r`.
pub fn applies(fault: Fault, r: &Request) -> bool {
    let get = r.method == "GET";
    match fault {
        // Blobs, and manifests by digest or by tag.
        Fault::FlipByte => get && matches!(r.class, Class::BlobGet | Class::Manifest),
        Fault::Truncate | Fault::Trickle => get && r.class != Class::Ping,
        _ => true,
    }
}

fn classify(method: &str, path: &str) -> (Class, Option<String>) {
    let bare = path.split('?').next().unwrap_or("");
    if bare == "/v2/" || bare == "/v2" {
        return (Class::Ping, None);
    }
    let rest = bare.strip_prefix("/v2/").unwrap_or(bare);
    let repo_before = |marker: &str| rest.find(marker).map(|i| rest[..i].to_string());
    if let Some(repo) = repo_before("/blobs/uploads") {
        return (Class::BlobUpload, Some(repo));
    }
    if let Some(repo) = repo_before("/blobs/") {
        let class = if method == "GET" { Class::BlobGet } else { Class::Other };
        return (class, Some(repo));
    }
    if let Some(repo) = repo_before("/manifests/") {
        return (Class::Manifest, Some(repo));
    }
    (Class::Other, repo_before("/tags/"))
}

/// A parsed HTTP/1.1 message head.
pub struct Head {
    pub first_line: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    }

    fn chunked(&self) -> bool {
        self.get("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }

    fn content_length(&self) -> Option<usize> {
        self.get("content-length").and_then(|v| v.parse().ok())
    }

    /// The head with framing headers replaced: `Content-Length: len` (when
    /// given) and `Connection: close`.
    pub fn render(&self, len: Option<usize>) -> Vec<u8> {
        let mut out = format!("{}\r\n", self.first_line);
        for (k, v) in &self.headers {
            let k_l = k.to_ascii_lowercase();
            let framing = ["connection", "keep-alive", "transfer-encoding", "proxy-connection"].contains(&k_l.as_str())
                || (k_l == "content-length" && len.is_some());
            if !framing {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        if let Some(n) = len {
            out.push_str(&format!("Content-Length: {n}\r\n"));
        }
        out.push_str("Connection: close\r\n\r\n");
        out.into_bytes()
    }
}

/// Reads a message head; None at the end of the stream or for something not HTTP.
pub fn read_head(r: &mut impl BufRead) -> Option<Head> {
    let mut first_line = String::new();
    r.read_line(&mut first_line).ok()?;
    let first_line = first_line.trim_end().to_string();
    // A TLS ClientHello (occy probing HTTPS) or garbage: not HTTP.
    if first_line.is_empty() || !first_line.is_ascii() || !first_line.contains(" ") {
        return None;
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    Some(Head { first_line, headers })
}

/// Reads a body framed as `head` says (`to_eof` when neither length nor chunks are given).
pub fn read_body(r: &mut impl BufRead, head: &Head, to_eof: bool) -> Option<Vec<u8>> {
    if head.chunked() {
        let mut body = Vec::new();
        loop {
            let mut size = String::new();
            r.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim().split(';').next()?.trim(), 16).ok()?;
            if n == 0 {
                // Trailers, then the blank line.
                loop {
                    let mut l = String::new();
                    if r.read_line(&mut l).ok()? == 0 || l.trim().is_empty() {
                        return Some(body);
                    }
                }
            }
            let start = body.len();
            body.resize(start + n, 0);
            r.read_exact(&mut body[start..]).ok()?;
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf).ok()?;
        }
    }
    if let Some(n) = head.content_length() {
        let mut body = vec![0u8; n];
        r.read_exact(&mut body).ok()?;
        return Some(body);
    }
    let mut body = Vec::new();
    if to_eof {
        r.read_to_end(&mut body).ok()?;
    }
    Some(body)
}

/// Closes `conn` with a TCP reset rather than an orderly close.
fn reset(conn: TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a correctly sized option value.
    unsafe {
        libc::setsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(conn);
}

fn hold(s: &Shared, req: &Request) {
    let generation = s.releases.load(Ordering::SeqCst);
    s.stalled.lock().unwrap().push(req.clone());
    let deadline = Instant::now() + Duration::from_secs(120);
    while s.releases.load(Ordering::SeqCst) == generation && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    s.stalled
        .lock()
        .unwrap()
        .retain(|r| r.nth != req.nth || r.path != req.path);
}

fn status_answer(code: u16, extra: &str) -> Vec<u8> {
    let reason = match code {
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Injected",
    };
    let body = format!(r#"{{"errors":[{{"code":"UNAVAILABLE","message":"injected fault {code}"}}]}}"#);
    format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn serve(s: &Shared, client: TcpStream) {
    let _ = client.set_read_timeout(Some(Duration::from_secs(60)));
    let Ok(reader_side) = client.try_clone() else { return };
    let mut reader = BufReader::new(reader_side);
    let Some(head) = read_head(&mut reader) else { return };
    let mut parts = head.first_line.split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let (class, repo) = classify(&method, &path);
    let req = {
        let mut c = s.counters.lock().unwrap();
        let nth = c.0;
        if class != Class::Ping {
            c.0 += 1;
        }
        let k = c.1.entry(class).or_insert(0);
        let nth_of_class = *k;
        *k += 1;
        Request {
            method: method.clone(),
            path: path.clone(),
            class,
            repo,
            nth_of_class,
            nth,
            content_length: head.get("content-length").and_then(|v| v.parse().ok()),
            range: head.get("range").map(str::to_string),
        }
    };
    let fault = (s.plan.lock().unwrap())(&req);
    let mut event = Event {
        request: req.clone(),
        fault,
        status: None,
        upstream_status: None,
        body_in: 0,
        body_out: 0,
    };
    handle(s, client, &mut reader, &head, &req, fault, &mut event);
    s.events.lock().unwrap().push(event);
}

fn handle(
    s: &Shared,
    mut client: TcpStream,
    reader: &mut BufReader<TcpStream>,
    head: &Head,
    req: &Request,
    fault: Option<Fault>,
    event: &mut Event,
) {
    let has_body = head.chunked() || head.content_length().is_some_and(|n| n > 0);
    if let (true, Some(Fault::CutBodyAfter(n))) = (has_body, fault) {
        let want = (head.content_length().unwrap_or(usize::MAX) as u64).min(n);
        let got = std::io::copy(&mut reader.by_ref().take(want), &mut std::io::sink()).unwrap_or(0);
        event.body_in = got;
        reset(client);
        return;
    }
    if let (true, Some(Fault::CutBodyAfterPassingOn(n))) = (has_body, fault) {
        let want = (head.content_length().unwrap_or(usize::MAX) as u64).min(n);
        let mut part = Vec::new();
        let _ = reader.by_ref().take(want).read_to_end(&mut part);
        event.body_in = part.len() as u64;
        if let Ok(mut up) = TcpStream::connect(&s.upstream) {
            let _ = up.write_all(&head.render(head.content_length()));
            let _ = up.write_all(&part);
            let _ = up.flush();
            // Let the registry take the bytes in before the link drops.
            std::thread::sleep(Duration::from_millis(200));
            reset(up);
        }
        reset(client);
        return;
    }
    // Faults that act on the request body, before anything is passed on.
    if has_body && matches!(fault, Some(Fault::Reset | Fault::StallMidBody)) {
        let half = head.content_length().unwrap_or(2) / 2;
        let mut buf = vec![0u8; half];
        let _ = reader.read_exact(&mut buf);
        if fault == Some(Fault::StallMidBody) {
            hold(s, req);
        }
        reset(client);
        return;
    }
    let Some(body) = read_body(reader, head, false) else {
        return;
    };
    event.body_in = body.len() as u64;
    match fault {
        Some(Fault::Status(code)) => {
            event.status = Some(code);
            let _ = client.write_all(&status_answer(code, ""));
            return;
        }
        Some(Fault::TooMany(secs)) => {
            event.status = Some(429);
            let _ = client.write_all(&status_answer(429, &format!("Retry-After: {secs}\r\n")));
            return;
        }
        Some(Fault::StallBefore) => {
            hold(s, req);
            return;
        }
        _ => {}
    }

    // Pass the request on.
    let Ok(mut up) = TcpStream::connect(&s.upstream) else {
        event.status = Some(502);
        let _ = client.write_all(&status_answer(502, ""));
        return;
    };
    let _ = up.set_read_timeout(Some(Duration::from_secs(60)));
    let send_len = if has_body || ["POST", "PUT", "PATCH"].contains(&req.method.as_str()) {
        Some(body.len())
    } else {
        None
    };
    if up.write_all(&head.render(send_len)).is_err() || up.write_all(&body).is_err() {
        return;
    }
    let mut up_reader = BufReader::new(up);
    let Some(mut resp_head) = read_head(&mut up_reader) else {
        return;
    };
    if let Some(add) = s.add_headers.lock().unwrap().as_mut() {
        resp_head.headers.extend(add(req));
    }
    let status: u16 = resp_head
        .first_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    event.upstream_status = Some(status);
    let no_body = req.method == "HEAD" || status == 204 || status == 304 || (100..200).contains(&status);
    let mut resp_body = if no_body {
        Vec::new()
    } else {
        match read_body(&mut up_reader, &resp_head, true) {
            Some(b) => b,
            None => return,
        }
    };
    if fault == Some(Fault::StallAfter) {
        hold(s, req);
        return;
    }
    if fault == Some(Fault::DropAnswer) {
        reset(client);
        return;
    }
    // A HEAD answer keeps the length the registry gave.
    let rendered = if no_body {
        resp_head.render(None)
    } else {
        resp_head.render(Some(resp_body.len()))
    };
    let half = resp_body.len() / 2;
    match fault {
        // Without a body to cut, the answer is lost whole: the registry
        // acted, the client never hears.
        Some(Fault::Reset) if resp_body.is_empty() => {
            reset(client);
            return;
        }
        Some(Fault::Reset) => {
            let _ = client.write_all(&rendered);
            let _ = client.write_all(&resp_body[..half]);
            event.body_out = half as u64;
            let _ = client.flush();
            std::thread::sleep(Duration::from_millis(20));
            reset(client);
            return;
        }
        Some(Fault::StallMidBody) => {
            let _ = client.write_all(&rendered);
            let _ = client.write_all(&resp_body[..half]);
            let _ = client.flush();
            hold(s, req);
            reset(client);
            return;
        }
        Some(Fault::Truncate) => {
            event.status = Some(status);
            if resp_body.is_empty() {
                let _ = client.write_all(&rendered[..rendered.len() / 2]);
            } else {
                let _ = client.write_all(&rendered);
                let _ = client.write_all(&resp_body[..half]);
            }
            let _ = client.flush();
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
        Some(Fault::FlipByte) if !resp_body.is_empty() => {
            resp_body[half] ^= 0x01;
        }
        _ => {}
    }
    event.status = Some(status);
    if client.write_all(&rendered).is_err() {
        return;
    }
    if fault == Some(Fault::Trickle) {
        let pieces = 100usize;
        let piece = resp_body.len().div_ceil(pieces).max(64);
        for c in resp_body.chunks(piece) {
            if client.write_all(c).is_err() {
                return;
            }
            let _ = client.flush();
            std::thread::sleep(Duration::from_millis(15));
        }
    } else if client.write_all(&resp_body).is_ok() {
        event.body_out = resp_body.len() as u64;
    }
    let _ = client.flush();
    let _ = client.shutdown(Shutdown::Write);
}
